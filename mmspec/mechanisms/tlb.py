"""TLBs and shootdowns: the registration, and how tests drive them.

``config`` draws two or three CPUs, one or two user mms, with or without PCID.
``steps(state)`` draws what CPUs do, biased toward the races that matter: faults that map the
same few pages (4 KiB ones inside one 2 MiB region and one 2 MiB THP beside it), accesses to
them from every CPU, context switches and lazy (kernel-thread) periods, munmap and mprotect of
one page, two pages, a 2 MiB page and 40 pages (over the 33-page ceiling), reclaim unmapping
pages of any mm into its deferred batch, the batch flush and the writeback of dirty frames
(drawn too early on purpose), the steps of the flushes in progress, IPI deliveries and
acknowledgements in any order, and the hardware's own evictions and invalidations.
Operations that cannot run in a state (an ``advance`` with no flush, an access on a lazy
CPU ...) are drawn now and then on purpose.

The lockstep machine is the shared one plus one step: the spec evicts what the impl's
replacement evicted.  ``catch()`` hunts defects by random walks of the impl alone (two CPUs,
one mm, two pages: the races that matter), checking the spec's invariants on
``impl.abstract()`` after every step; the first violation is shrunk by delta debugging to a
sequence from which no step can be dropped, and shown with the stale entry marked.  Walks are
seeded, so the same defect gives the same witness.
"""

from __future__ import annotations

from hypothesis import strategies as st

from mmspec.registry import Mechanism
from spec import pte, tlb
from spec.tlb import PAGE_2M, PAGE_4K, TlbConfig

MECHANISM = Mechanism(
    name="tlb",
    title="TLBs and shootdowns (arch/x86/mm/tlb.c, mm/mmu_gather.c)",
    spec="spec.tlb",
    impl="impl.tlb",
    proofs="proofs.tlb",
    explain="mmspec.explain.tlb:explain",
    topics=("shootdown",),
    doctest_modules=("spec.tlb", "spec.tlbflush", "impl.tlb"),
    contracts=("spec.tlb",),
)

BASE = 0x7F0000000000
HUGE = BASE + PAGE_2M
VAS = [BASE, BASE + PAGE_4K, BASE + 2 * PAGE_4K, BASE + 3 * PAGE_4K]
ACCESS_VAS = VAS + [HUGE, HUGE + 0x12345, BASE + 0x123]

config = st.builds(TlbConfig, ncpus=st.integers(2, 3), nr_mm=st.integers(1, 2), pcid=st.sampled_from([True, True, False]),
                   machine=st.just(tlb.TLB_MACHINE))


def _weighted(choices):
    """Pick one strategy with probability proportional to its weight (``st.one_of`` would
    collapse repeated strategies into one)."""
    strategies = [s for _, s in choices]
    index = st.sampled_from([i for i, (w, _) in enumerate(choices) for _ in range(w)])
    return index.flatmap(lambda i: strategies[i])


def _mapped(state: tlb.TlbState, mm: int) -> list[int]:
    """The addresses of ACCESS_VAS that ``mm`` maps now."""
    from spec import paging

    root = state.mms[mm].root
    return [va for va in ACCESS_VAS if paging.walk(state.paging, root, va).paddr is not None]


def steps(state: tlb.TlbState):
    n, nmm = len(state.cpus), len(state.mms) - 1
    cpu = st.integers(0, n - 1)
    idle = [c for c in range(n) if state.flushes[c] is None]
    running = [c for c in idle if state.cpus[c].loaded_mm != tlb.INIT_MM and not state.cpus[c].is_lazy]
    user_mm = st.integers(1, nmm)
    choices = []
    if running:
        rc = st.sampled_from(running)
        size = st.sampled_from([PAGE_4K, PAGE_4K, 2 * PAGE_4K, 40 * PAGE_4K])
        mapped = sorted({va for c in running for va in _mapped(state, state.cpus[c].loaded_mm)})
        if mapped:
            choices.append((12, st.tuples(st.just("access"), st.tuples(rc, st.sampled_from(mapped), st.sampled_from("rrrww")))))
        choices += [
            (4, st.tuples(st.just("access"), st.tuples(rc, st.sampled_from(ACCESS_VAS), st.sampled_from("rrwx")))),
            (2, st.tuples(st.just("munmap"), st.tuples(rc, st.sampled_from(VAS), size))),
            (1, st.tuples(st.just("munmap"), st.tuples(rc, st.just(HUGE), st.just(PAGE_2M)))),
            (1, st.tuples(st.just("mprotect"), st.tuples(rc, st.sampled_from(VAS + [HUGE]), st.sampled_from([PAGE_4K, PAGE_2M]),
                                                          st.sampled_from([pte.PAGE_READONLY, pte.PAGE_SHARED])))),
        ]
    busy = [c for c in range(n) if state.flushes[c] is not None]
    if busy:
        choices.append((6, st.tuples(st.just("advance"), st.tuples(st.sampled_from(busy)))))
    queued = [c for c in range(n) if state.queues[c]]
    if queued:
        choices.append((5, st.tuples(st.just("deliver_ipi"), st.tuples(st.sampled_from(queued)))))
    handled = [c for c in range(n) if state.handled[c]]
    if handled:
        choices.append((5, st.tuples(st.just("ack_ipi"), st.tuples(st.sampled_from(handled)))))
    choices += [
        (2, st.tuples(st.just("populate"), st.tuples(user_mm, st.sampled_from(VAS), st.just(PAGE_4K)))),
        (1, st.tuples(st.just("populate"), st.tuples(user_mm, st.just(HUGE), st.just(PAGE_2M)))),
        (3 if running else 10, st.tuples(st.just("switch_mm"), st.tuples(st.sampled_from(idle or [0]), st.integers(0, nmm)))),
        (1, st.tuples(st.just("enter_lazy"), st.tuples(st.sampled_from(idle or [0])))),
        (1, st.one_of(
            st.tuples(st.just("toggle_pge"), st.tuples(cpu)),
            st.tuples(st.just("invlpg"), st.tuples(cpu, st.sampled_from(ACCESS_VAS))),
            st.tuples(st.just("invpcid"), st.tuples(cpu, st.integers(0, 3), st.integers(0, 3), st.sampled_from(ACCESS_VAS))),
            st.tuples(st.sampled_from(["advance", "deliver_ipi", "ack_ipi"]), st.tuples(cpu)),
            st.tuples(st.just("access"), st.tuples(cpu, st.sampled_from(ACCESS_VAS), st.sampled_from("rw"))),
        )),
    ]
    # Reclaim's deferred flush: any idle CPU (kswapd is a kernel thread) unmaps pages of any mm
    # into its batch, flushes the batch (or only if dirty), and writes back dirty frames.
    choices.append((3, st.tuples(st.just("reclaim_unmap"), st.tuples(st.sampled_from(idle or [0]), user_mm,
                                                                     st.sampled_from(VAS)))))
    batched = [c for c in range(n) if state.batches[c].frames]
    if batched:
        choices.append((3, st.tuples(st.just("reclaim_flush"), st.tuples(st.sampled_from(batched), st.booleans()))))
    dirty = [(c, pfn) for c in range(n) for pfn, _ in state.batches[c].ready + state.batches[c].flushing]
    dirty += [(c, pfn) for c in range(n) for pfn, _, d in state.batches[c].frames if d]
    if dirty:
        choices.append((3, st.sampled_from(dirty).map(lambda cp: ("reclaim_pageout", cp))))
    held = [(c, e) for c in range(n) for e in sorted(state.cpus[c].tlb)]
    if held:
        choices.append((1, st.sampled_from(held).map(lambda ce: ("evict", ce))))
    return _weighted(choices)


def render(state: tlb.TlbState) -> str:
    return tlb.render(state)


GEOMETRIES = st.sampled_from([
    ((0, 0), (0, 0), (2, 1)),
    ((2, 1), (2, 2), (4, 2)),
    ((2, 2), (0, 0), (3, 3)),
    ((4, 2), (2, 1), (8, 4)),
    ((64, 4), (32, 4), (1536, 12)),
])


def impl_factory(cfg: TlbConfig, geometry=None):
    from impl.tlb import Geometry, TlbMachine

    return TlbMachine(cfg, Geometry(*geometry) if geometry else Geometry())


def lockstep_machine(name: str, config=config, steps=steps, geometries=GEOMETRIES):
    """The lockstep machine of :mod:`mmspec.machines`, with one addition: after every step the
    spec is told to evict what the impl's replacement evicted (``impl.evicted``), so that the
    abstract states can be compared although the spec's TLBs have no capacity."""
    import hypothesis
    from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

    from mmspec.machines import _apply_spec, _call, _equal, _outcome
    from mmspec.tally import tally
    from spec.errors import MMError

    def mismatch(what, spec_side, impl_side, spec_state, impl_state):
        return (f"lockstep mismatch {what}\n  spec: {spec_side}\n  impl: {impl_side}\n"
                f"spec state:\n{render(spec_state)}\nimpl state (abstract):\n{render(impl_state)}")

    class Machine(RuleBasedStateMachine):
        @initialize(cfg=config, geometry=geometries)
        def init(self, cfg, geometry):
            tally("examples")
            self.state, self.impl = tlb.init(cfg), impl_factory(cfg, geometry)
            hypothesis.note(f"  geometry (l1 4K, l1 2M, stlb) = {geometry}")
            assert _equal(self.impl.abstract(), self.state), mismatch("after init", "init", "init", self.state,
                                                                        self.impl.abstract())

        @rule(data=st.data())
        def step(self, data):
            op, args = data.draw(steps(self.state), label="step")
            args = tuple(args)
            tally("steps")
            call = _call(op, args)
            new_state, result, error = _apply_spec(tlb, self.state, op, args, MMError)
            impl_result, impl_error = None, None
            try:
                impl_result = getattr(self.impl, op)(*args)
            except Exception as exc:
                impl_error = exc
            spec_side, impl_side = _outcome(result, error), _outcome(impl_result, impl_error)
            hypothesis.note(f"  {call} {spec_side}")
            same = (impl_error is not None and type(impl_error) is type(error)) if error is not None else (
                impl_error is None and _equal(impl_result, result))
            abstract = self.impl.abstract()
            if not same:
                raise AssertionError(mismatch(f"at {call}", spec_side, impl_side, new_state, abstract)) from impl_error
            for cpu, entry in self.impl.evicted:
                hypothesis.note(f"  evict({cpu}, {entry!r})  (the impl's replacement)")
                new_state, _ = tlb.evict(new_state, cpu, entry)
            assert _equal(abstract, new_state), mismatch(f"in state after {call}", spec_side, impl_side, new_state,
                                                         abstract)
            self.state = new_state

    Machine.__name__ = Machine.__qualname__ = name
    return Machine


HUNT_CONFIG = st.just(TlbConfig(ncpus=2, nr_mm=1))


HUNT_VAS = (BASE, BASE + PAGE_4K)
_HUNT_CACHE: dict = {}


def hunt_steps(state: tlb.TlbState):
    """The defect hunt's operations on two CPUs and one mm with two pages: fault them in, run
    the mm (or go lazy, or switch away) on either CPU, touch the pages, unmap one, and take
    the steps of the flushes and IPIs in any order.  Strategies are cached by the shape of the
    state, so drawing a step costs little."""
    n = len(state.cpus)
    running = tuple(c for c in range(n) if state.flushes[c] is None and state.cpus[c].loaded_mm == 1
                    and not state.cpus[c].is_lazy)
    key = (running, tuple(f is not None for f in state.flushes), tuple(map(bool, state.queues)),
           tuple(map(bool, state.handled)))
    if key not in _HUNT_CACHE:
        va = st.sampled_from(HUNT_VAS)
        idle = [c for c in range(n) if state.flushes[c] is None] or [0]
        choices = [(2, st.tuples(st.just("populate"), st.tuples(st.just(1), va, st.just(PAGE_4K)))),
                   (3, st.tuples(st.just("switch_mm"), st.tuples(st.sampled_from(idle), st.sampled_from([1, 1, 0])))),
                   (1, st.tuples(st.just("enter_lazy"), st.tuples(st.sampled_from(idle))))]
        if running:
            rc = st.sampled_from(running)
            choices += [(6, st.tuples(st.just("access"), st.tuples(rc, va, st.sampled_from("rw")))),
                        (3, st.tuples(st.just("munmap"), st.tuples(rc, va, st.just(PAGE_4K))))]
        for weight, op, which in ((6, "advance", key[1]), (4, "deliver_ipi", key[2]), (4, "ack_ipi", key[3])):
            cpus = [c for c in range(n) if which[c]]
            if cpus:
                choices.append((weight, st.tuples(st.just(op), st.tuples(st.sampled_from(cpus)))))
        _HUNT_CACHE[key] = _weighted(choices)
    return _HUNT_CACHE[key]


def invariant_hunt(name: str, config=HUNT_CONFIG, steps=hunt_steps):
    """A machine that drives the impl alone and checks every ``inv_*`` of the spec on
    ``impl.abstract()`` after every step: a defect shows as the stale entry (or the freed frame
    still mapped) it leaves behind, with the state rendered and the stale entry marked."""
    import hypothesis
    from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

    from mmspec.machines import _call, spec_invariants
    from mmspec.tally import tally
    from spec.errors import MMError

    class Machine(RuleBasedStateMachine):
        @initialize(cfg=config)
        def init(self, cfg):
            tally("examples")
            self.impl = impl_factory(cfg)
            self.state = self.impl.abstract()

        @rule(data=st.data())
        def step(self, data):
            op, args = data.draw(steps(self.state), label="step")
            tally("steps")
            try:
                out = f"returns {getattr(self.impl, op)(*args)!r}"
            except MMError as exc:
                out = f"raises {type(exc).__name__}"
            hypothesis.note(f"  impl.{_call(op, tuple(args))} {out}")
            self.state = self.impl.abstract()

        @invariant()
        def spec_invariants_hold(self):
            for inv_name, predicate, doc in spec_invariants(tlb):
                assert predicate(self.state), f"{inv_name}: {doc}\n{render(self.state)}"

    Machine.__name__ = Machine.__qualname__ = name
    return Machine


def _candidates(state: tlb.TlbState) -> list:
    """Every hunt operation worth trying in ``state``, with repeats as weights."""
    n, out = len(state.cpus), []
    for c in range(n):
        cpu = state.cpus[c]
        idle = state.flushes[c] is None
        if idle:
            out += [("switch_mm", (c, 1))] * 2 + [("switch_mm", (c, 0)), ("enter_lazy", (c,))]
            if cpu.loaded_mm == 1 and not cpu.is_lazy:
                out += [("access", (c, va, op)) for va in HUNT_VAS for op in "rw"] * 2
                out += [("munmap", (c, va, PAGE_4K)) for va in HUNT_VAS]
        else:
            out += [("advance", (c,))] * 4
        out += [("deliver_ipi", (c,))] * 3 * bool(state.queues[c]) + [("ack_ipi", (c,))] * 3 * bool(state.handled[c])
    return out + [("populate", (1, va, PAGE_4K)) for va in HUNT_VAS]


def _violation(cfg: TlbConfig, ops: list):
    """Replay ``ops`` on a fresh impl (failing operations change nothing); the first broken
    invariant as ``(step index, message)``, or None."""
    from mmspec.machines import spec_invariants
    from spec.errors import MMError

    impl = impl_factory(cfg)
    for i, (op, args) in enumerate(ops):
        try:
            getattr(impl, op)(*args)
        except MMError:
            pass
        state = impl.abstract()
        for inv_name, predicate, doc in spec_invariants(tlb):
            if not predicate(state):
                return i, f"{inv_name}: {doc}", state
    return None


def _shrink(cfg: TlbConfig, ops: list) -> list:
    """Delta debugging (Zeller's ddmin): drop chunks of steps while the replay still breaks an
    invariant, down to a sequence from which no single step can be removed."""
    chunk = max(1, len(ops) // 2)
    while chunk >= 1:
        i, shrunk = 0, False
        while i < len(ops):
            trial = ops[:i] + ops[i + chunk:]
            if trial and _violation(cfg, trial):
                ops, shrunk = trial, True
            else:
                i += chunk
        if not shrunk:
            chunk //= 2
    return ops


def _arg(a) -> str:
    return hex(a) if isinstance(a, int) and not isinstance(a, bool) and a > 0xFFFF else repr(a)


def hunt(seeds: int = 400, length: int = 30, cfg: TlbConfig = TlbConfig(ncpus=2, nr_mm=1)) -> str | None:
    """Random walks of the impl from ``seeds`` fixed seeds, checking the spec's invariants on
    its abstract state after every step; the first violation, shrunk, as a witness."""
    import random

    from mmspec.machines import spec_invariants
    from mmspec.tally import tally
    from spec.errors import MMError

    invariants = spec_invariants(tlb)
    for seed in range(seeds):
        rng, impl, ops = random.Random(seed), impl_factory(cfg), []
        tally("examples")
        for _ in range(length):
            state = impl.abstract()
            op, args = rng.choice(_candidates(state))
            ops.append((op, args))
            tally("steps")
            try:
                getattr(impl, op)(*args)
            except MMError:
                pass
            after = impl.abstract()
            if not all(predicate(after) for _, predicate, _ in invariants):
                found = len(ops)
                ops = _shrink(cfg, ops)
                i, message, bad = _violation(cfg, ops)
                steps = "\n".join(f"  impl.{op}({', '.join(_arg(a) for a in args)})" for op, args in ops)
                return (f"seed {seed}: a random walk broke an invariant after {found} steps; shrunk to {len(ops)}:\n"
                        f"{steps}\n{message}\n{render(bad)}")
    return None


def catch() -> str | None:
    """Hunt for a violation of the spec's invariants by the impl with whatever defect is
    enabled: the shrunk witness (it marks the stale entry), or None."""
    return hunt()
