"""Persistent memory's registration: its modules, and how tests drive it.

Four spec modules share the mechanism: :mod:`spec.pmem` (the persistency model and crash
images), :mod:`spec.pmemcheck` (the trace checker), :mod:`spec.pmemtx` (the undo-log
transaction library) and :mod:`spec.dax` (DAX mappings); :mod:`impl.pmem` and :mod:`impl.dax`
are their fast twins.  The strategies bias toward what makes persistency interesting: few cache lines
(so stores share lines), both kinds of flush on the same and on other lines, fences, NT stores,
two CPUs with loads between them, both persistence domains and both fence readings.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from mmspec.registry import Mechanism
from spec import dax, pmem, pmemtx

MECHANISM = Mechanism(
    name="pmem",
    title="Persistent memory: Px86 persistency, crash images, undo-log transactions, DAX",
    spec="spec.pmem",
    impl="impl.pmem",
    proofs="proofs.pmem",
    explain="mmspec.explain.pmem:explain",
    topics=("dax", "pmemtx", "persistency"),
    doctest_modules=("spec.pmem", "spec.pmemcheck", "spec.pmemtx", "spec.dax", "spec.pmem_litmus", "impl.pmem",
                     "impl.dax"),
    contracts=("spec.pmem", "spec.pmemtx"),
)

ADDRS = (0, 8, 56, 64, 72, 128)  # lines 0, 0, 0, 1, 1, 2: collisions on a line are the point

config = st.builds(
    pmem.PmemConfig,
    words=st.sampled_from([24, 32]),
    threads=st.integers(1, 2),
    domain=st.sampled_from(pmem.DOMAINS),
    synchronous=st.booleans(),
)


class Consistent:
    """A user's consistency predicate: "if word ``then`` is set, word ``first`` is set"."""

    def __init__(self, first: int, then: int) -> None:
        self.first, self.then = first, then

    def __call__(self, mem) -> bool:
        return mem[self.then] == 0 or mem[self.first] != 0

    def __repr__(self) -> str:
        return f"<[{self.then * 8}] set implies [{self.first * 8}] set>"


def steps(state: pmem.PmemState):
    """Instructions for the trace at hand, and sometimes a crash or a checker run."""
    tids = st.integers(0, state.config.threads - 1)
    addr = st.sampled_from(ADDRS)
    val = st.integers(1, 3)
    writes = st.tuples(st.sampled_from(["store", "store", "nt_store", "rmw"]), st.tuples(tids, addr, val))
    flushes = st.tuples(st.sampled_from(["clflush", "clflushopt", "clwb", "clwb"]), st.tuples(tids, st.sampled_from(ADDRS + (5, 100))))
    fences = st.tuples(st.sampled_from(["sfence", "mfence"]), st.tuples(tids))
    loads = st.tuples(st.just("load"), st.tuples(tids, addr))
    libpmem = st.one_of(
        st.tuples(st.just("pmem_persist"), st.tuples(tids, addr, st.sampled_from([8, 64, 72]))),
        st.tuples(st.just("pmem_memcpy_persist"), st.tuples(tids, addr, st.lists(val, min_size=1, max_size=3).map(tuple))),
    )
    queries = st.one_of(
        st.tuples(st.just("crash"), st.just(())),
        st.tuples(st.just("crash_at"), st.tuples(st.integers(0, len(state.events)))),
        st.tuples(st.just("violating_points"), st.tuples(st.just(None), st.builds(Consistent, st.sampled_from([0, 1, 8]), st.sampled_from([8, 9, 16])))),
    )
    bad = st.one_of(
        st.tuples(st.just("store"), st.tuples(st.sampled_from([0, 5, -1]), st.sampled_from([3, -8, 10**6, "0"]), val)),
        st.tuples(st.just("clwb"), st.tuples(tids, st.sampled_from([-1, 10**6, None]))),
        st.tuples(st.just("sfence"), st.tuples(st.sampled_from([7, -1, True]))),
        st.tuples(st.just("crash_at"), st.tuples(st.sampled_from([-1, len(state.events) + 1]))),
        st.tuples(st.just("pmem_persist"), st.tuples(tids, st.just(0), st.sampled_from([0, 10**6]))),
    )
    choices = [writes] * 6 + [flushes] * 4 + [fences] * 2 + [loads, libpmem, queries, bad]
    return st.one_of(*choices)


def render(state) -> str:
    return state.render() if hasattr(state, "render") else pmem.render(state)


def impl_factory(cfg: pmem.PmemConfig):
    from impl.pmem import PmemMachine

    return PmemMachine(cfg)


# ---------------------------------------------------------------------------------------------
# The transaction library

tx_config = st.builds(
    pmemtx.TxConfig,
    entries=st.integers(1, 3),
    heap_words=st.sampled_from([4, 12]),
    domain=st.sampled_from(pmem.DOMAINS),
    synchronous=st.just(True),
)


def tx_steps(state: pmemtx.TxState):
    """Transactions (cached or non-temporal data), bad ones, and crashes."""
    cfg = state.config
    word = st.integers(0, cfg.heap_words - 1)
    writes = st.lists(st.tuples(word, st.integers(1, 9)), min_size=1, max_size=cfg.entries, unique_by=lambda p: p[0])
    good = st.tuples(st.just("tx_write"), st.tuples(writes.map(tuple), st.booleans()))
    bad = st.tuples(st.just("tx_write"), st.tuples(st.sampled_from([(), ((0, 1), (0, 2)), ((cfg.heap_words, 1),), ((0, "x"),), 5]), st.just(False)))
    crash = st.tuples(st.just("crash_outcomes"), st.just(()))
    return st.one_of(good, good, good, bad, crash)


def tx_render(state: pmemtx.TxState) -> str:
    return pmemtx.render(state)


def tx_factory(cfg: pmemtx.TxConfig):
    from impl.pmem import TxPool

    return TxPool(cfg)


# ---------------------------------------------------------------------------------------------
# DAX

dax_config = st.builds(dax.DaxConfig, pages=st.integers(1, 3), domain=st.sampled_from(pmem.DOMAINS), synchronous=st.booleans())


def dax_steps(state: dax.DaxState):
    """File creation, mappings (valid and refused flags), stores that fault pages in, flushes,
    fsync, crashes, and bad arguments."""
    names = sorted(state.files.keys())
    ops = [st.tuples(st.just("creat"), st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 2))),
           st.tuples(st.just("crash"), st.just(())),
           st.tuples(st.just("creat"), st.tuples(st.sampled_from([None, 3]), st.just(1))),
           st.tuples(st.just("creat"), st.tuples(st.just("c"), st.sampled_from([0, -1, "1"]))),
           st.tuples(st.just("fsync"), st.tuples(st.just("nope"))),
           st.tuples(st.just("mmap"), st.tuples(st.just("nope"), st.just(dax.MAP_SHARED)))]
    if names:
        name = st.sampled_from(names)
        flags = st.sampled_from([dax.MAP_SHARED, dax.MAP_SHARED_VALIDATE | dax.MAP_SYNC,
                                 dax.MAP_SHARED | dax.MAP_SYNC, dax.MAP_PRIVATE,
                                 dax.MAP_SHARED_VALIDATE | dax.MAP_FIXED_NOREPLACE])
        ops += [st.tuples(st.just("mmap"), st.tuples(name, flags)),
                st.tuples(st.just("fsync"), st.tuples(name))]
    if state.mappings:
        m = st.integers(0, len(state.mappings) - 1)
        off = st.sampled_from([0, 8, 64, 4096, 4104, 8192])
        ops += [st.tuples(st.just("store"), st.tuples(m, off, st.integers(1, 3)))] * 3
        ops += [st.tuples(st.just("flush"), st.tuples(m, st.sampled_from([0, 4096]), st.sampled_from([8, 64])))]
        no_mapping = st.sampled_from([-1, len(state.mappings), True])
        ops += [st.tuples(st.just("store"), st.tuples(no_mapping, st.just(0), st.just(1))),
                st.tuples(st.just("store"), st.tuples(m, st.sampled_from([3, -8, 1 << 20]), st.just(1))),
                st.tuples(st.just("flush"), st.tuples(m, st.sampled_from([-8, 0]), st.sampled_from([0, 1 << 20])))]
    return st.one_of(*ops)


def dax_factory(cfg: dax.DaxConfig):
    from impl.dax import DaxDevice

    return DaxDevice(cfg)


def dax_render(state: dax.DaxState) -> str:
    files = ", ".join(f"{n}: frames {list(f.frames)} durable {list(f.durable)}" for n, f in sorted(state.files.items()))
    return f"DAX device of {state.config.pages} pages; {files}; mappings {list(state.mappings)}\n" + pmem.render(state.pmem)


# ---------------------------------------------------------------------------------------------
# The defect hunt


def witness(pool, tx: int) -> str:
    """The trace of a transaction, the crash point, the image and what recovery made of it."""
    s = pool.abstract()
    rec = s.txs[tx]
    lines = [f"transaction {tx}: heap {list(rec.before)} -> {list(rec.after)}"]
    lines += [f"  {i:3d}  {e}" for i, e in enumerate(s.pmem.events) if rec.start <= i < rec.end]
    bad = pool.violations(tx)
    if bad:
        k, img = bad[0]
        heap = pmemtx.heap(s.pmem, s.config, pmem.recovered(img, pmemtx.recovery_for(s.config)))
        lines.append(f"crash after event {k - 1}: image {list(img)}")
        lines.append(f"recovery gives heap {list(heap)}: neither before nor after")
    else:
        lines.append(f"after it returned, a crash recovers to {sorted(pool.crash_outcomes())}, not only the committed heap")
    return "\n".join(lines)


class TxDefectHunt(RuleBasedStateMachine):
    """Run transactions on the impl's library; after each, every crash point must be atomic and
    the committed heap durable (the impl's lazy checker, which the lockstep layer holds equal
    to the spec's crash semantics)."""

    @initialize(cfg=st.builds(pmemtx.TxConfig, entries=st.integers(1, 3), heap_words=st.just(12),
                              domain=st.sampled_from(pmem.DOMAINS), synchronous=st.just(True)))
    def init(self, cfg):
        from mmspec.tally import tally

        tally("examples")
        self.pool = tx_factory(cfg)

    @rule(data=st.data())
    def transaction(self, data):
        from mmspec.tally import tally

        tally("steps")
        cfg = self.pool.config
        writes = data.draw(st.lists(st.tuples(st.integers(0, cfg.heap_words - 1), st.integers(1, 9)), min_size=1,
                                    max_size=cfg.entries, unique_by=lambda p: p[0]).map(tuple), label="writes")
        nt = data.draw(st.booleans(), label="nt")
        self.pool.tx_write(writes, nt)

    @invariant()
    def atomic_and_durable(self):
        if not getattr(self, "pool", None) or not self.pool.txs:
            return
        ok = not self.pool.violations() and self.pool.crash_outcomes() == {self.pool.txs[-1].after}
        assert ok, "\n" + witness(self.pool, len(self.pool.txs) - 1)


def catch() -> str | None:
    """Run the defect hunt with whatever defect is enabled; the shrunk witness, or None."""
    from hypothesis import settings

    from mmspec.machines import catch_witness

    return catch_witness(TxDefectHunt, settings(stateful_step_count=min(6, settings().stateful_step_count)))
