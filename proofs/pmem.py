"""Theorems about persistent memory (spec/pmem.py, spec/pmemtx.py).

The arithmetic theorems run the spec's cache-line helpers on 64-bit z3 bit-vectors.

The central theorem checks :func:`spec.pmem.crash` against a *second*, operational encoding of
Px86 in z3, written without the closure the spec computes: every event gets a propagation time
(or stays in the store buffer), every store a persistence time (or never persists), and the
constraints are the machine's rules -- propagation respects the spec's preserved program order
(:func:`spec.pmem.ordered`, and ``rfe``/``fre``/``coe`` across CPUs); a store persists after it
propagates; stores to one line persist in propagation order (the persistence buffer's per-line
FIFO); a store that propagates after a flush persists after every store the flush covers (a
flush blocks the persistence buffer until its line is written back); an NT store is a store
plus a flush of its line; with eADR a store persists when it propagates; a retired CLFLUSH or
fence has completed what it covers.  For every trace up to the bound, the persisted sets z3
finds are exactly the spec's: each spec set is satisfiable, and z3 proves there is no other.

The litmus theorem decides every vector of :mod:`spec.pmem_litmus` with the same z3 encoding
(Px86's asynchronous reading, a crash at the end) and compares with the paper's verdict.
"""

from __future__ import annotations

import itertools
import time

import z3

from proofs._z3 import ProofResult, prove, registry
from spec import pmem, pmemtx
from spec.pmem_litmus import LITMUS, run

THEOREMS, theorem = registry()

a, b = z3.BitVecs("a b", 64)
SMALL = z3.ULT(a, 1 << 48)


@theorem("line_base(a) is 64-byte aligned, at most a, and within 63 bytes of it; same_line(a, line_base(a)).")
def thm_line_base() -> ProofResult:
    base = pmem.line_base(a)
    claim = z3.And(base & 63 == 0, z3.ULE(base, a), z3.ULT(a - base, 64), pmem.same_line(a, base))
    return prove(claim, (SMALL,))


@theorem("Two addresses share a cache line iff their line bases are equal.")
def thm_same_line_iff_same_base() -> ProofResult:
    return prove(pmem.same_line(a, b) == (pmem.line_base(a) == pmem.line_base(b)), (SMALL, z3.ULT(b, 1 << 48)))


@theorem("lines_spanned(a, n) CLWBs cover [a, a+n): n <= 64 * lines and lines <= n / 64 + 2.")
def thm_lines_spanned() -> ProofResult:
    n = z3.BitVec("n", 64)
    k = pmem.lines_spanned(a, n)
    claim = z3.And(z3.ULE(n, k * 64), z3.ULE(k, z3.UDiv(n, 64) + 2), z3.ULE(1, k))
    return prove(claim, (z3.ULT(a, 1 << 40), z3.ULE(1, n), z3.ULT(n, 1 << 20)))


# ---------------------------------------------------------------------------------------------
# The operational encoding


def _flush_like(e: pmem.Event) -> bool:
    return e.kind in pmem.FLUSHES or e.kind == "nt_store"


def encode(state: pmem.PmemState, upto: int | None = None):
    """z3 constraints of Px86's machine for a crash after the first ``upto`` events; returns
    ``(solver, persisted booleans by store index)``."""
    events = state.events[: len(state.events) if upto is None else upto]
    cfg, n = state.config, len(events)
    s = z3.Solver()
    on = [z3.Bool(f"prop{i}") for i in range(n)]  # left the store buffer
    t = [z3.Int(f"t{i}") for i in range(n)]  # when
    stores = [i for i, e in enumerate(events) if e.kind in pmem.STORES]
    per = {i: z3.Bool(f"per{i}") for i in stores}
    pt = {i: z3.Int(f"pt{i}") for i in stores}
    edges = [(j, i) for i in range(n) for j in range(i) if pmem._direct_edge(events, j, i)]
    for j, i in edges:
        s.add(z3.Implies(on[i], z3.And(on[j], t[j] < t[i])))
    for i in stores:
        s.add(z3.Implies(per[i], z3.And(on[i], pt[i] > t[i])))
        if cfg.domain == "eadr":
            s.add(per[i] == on[i], z3.Implies(on[i], pt[i] == t[i] + n + 1))
    line = lambda i: pmem.line_of(events[i].addr)  # noqa: E731
    for i in stores:
        for j in stores:
            if j != i and line(j) == line(i):  # per-line FIFO in propagation order
                s.add(z3.Implies(z3.And(per[i], on[j], t[j] < t[i]), z3.And(per[j], pt[j] < pt[i])))
        for f in range(n):
            if _flush_like(events[f]) and cfg.domain == "adr":
                for j in stores:
                    if line(j) == line(f):
                        before_f = z3.BoolVal(True) if j == f else z3.And(on[j], t[j] < t[f])
                        s.add(z3.Implies(z3.And(per[i], on[f], t[f] < t[i], before_f), z3.And(per[j], pt[j] < pt[i])))
    if cfg.synchronous:  # retired instructions have completed what they cover
        preds = pmem.prop_before(events)
        for m, e in enumerate(events):
            covered = []
            if e.kind == "clflush":
                s.add(on[m])
                covered = [(m, j) for j in stores if line(j) == line(m)]
            if e.kind in pmem.FENCES or e.kind == "clflush" and cfg.domain == "eadr":
                s.add(on[m])
                for f in preds[m]:
                    if cfg.domain == "eadr" and events[f].kind in pmem.STORES:
                        s.add(per[f])
                    if cfg.domain == "adr" and _flush_like(events[f]):
                        covered += [(f, j) for j in stores if line(j) == line(f)]
                if cfg.domain == "eadr" and e.kind == "rmw":
                    s.add(per[m])
            for f, j in covered:
                s.add(z3.Implies(z3.BoolVal(True) if j == f else z3.And(on[j], t[j] < t[f]), per[j]))
    return s, per


def z3_persisted_sets(state: pmem.PmemState, upto: int | None = None) -> set[frozenset[int]] | None:
    """Every persisted set the z3 encoding allows (None if z3 gave up)."""
    s, per = encode(state, upto)
    found: set[frozenset[int]] = set()
    while True:
        verdict = s.check()
        if verdict == z3.unsat:
            return found
        if verdict != z3.sat:
            return None
        model = s.model()
        got = frozenset(i for i, p in per.items() if z3.is_true(model.eval(p, model_completion=True)))
        found.add(got)
        s.add(z3.Or([per[i] != (i in got) for i in per]) if per else z3.BoolVal(False))


ALPHABET = (
    ("store", (0, 1)), ("store", (8, 2)), ("store", (64, 3)), ("nt_store", (64, 4)),
    ("clflush", (0,)), ("clflushopt", (0,)), ("clwb", (64,)), ("sfence", ()), ("mfence", ()),
)


def traces(length: int, domain: str, synchronous: bool):
    cfg = pmem.PmemConfig(words=16, domain=domain, synchronous=synchronous)
    for ops in itertools.product(ALPHABET, repeat=length):
        s = pmem.init(cfg)
        for op, args in ops:
            s, _ = getattr(pmem, op)(s, 0, *args)
        yield s


def _bound() -> int:
    from mmspec.profiles import by_profile

    return by_profile(3, 3, 4)


@theorem("Bounded: for every one-CPU trace of N instructions over two lines (stores, NT stores, "
         "CLFLUSH, CLFLUSHOPT, CLWB, SFENCE, MFENCE; N = 3, 4 with the thorough profile), ADR and "
         "eADR, both fence readings, the spec's persisted sets are exactly those of z3's "
         "operational Px86 encoding.")
def thm_crash_sets_equal_operational_model() -> ProofResult:
    start, checked = time.perf_counter(), 0
    n = _bound()
    for domain in pmem.DOMAINS:
        for sync in (True, False):
            for st in traces(n, domain, sync):
                spec_sets = set(pmem.persisted_sets(st))
                z3_sets = z3_persisted_sets(st)
                checked += 1
                if z3_sets != spec_sets:
                    return ProofResult(False, "the spec and the operational model disagree",
                                       pmem.render(st) + f"spec {sorted(map(sorted, spec_sets))} z3 {z3_sets}")
    return ProofResult(True, f"{checked} traces of {n} instructions, {time.perf_counter() - start:.1f} s")


@theorem("Every litmus vector's verdict (spec/pmem_litmus.py, Raad et al. POPL 2020/2022) is what "
         "z3's operational encoding decides, with asynchronous flushes and a crash at the end.")
def thm_litmus_vectors_z3() -> ProofResult:
    for v in LITMUS:
        state, _ = run(v, synchronous=False)
        s, per = encode(state)
        for addr, val in v.outcome:
            writers = [i for i in per if state.events[i].addr == addr]
            if val == 0:
                s.add(z3.And([z3.Not(per[i]) for i in writers]) if writers else z3.BoolVal(True))
            else:  # the last persisted store to addr wrote val: some writer of val persisted, no later one
                opts = [z3.And(per[i], *[z3.Not(per[j]) for j in writers if j > i]) for i in writers if state.events[i].value == val]
                s.add(z3.Or(opts) if opts else z3.BoolVal(False))
        allowed = s.check() == z3.sat
        if allowed != v.allowed:
            return ProofResult(False, f"{v.name}: z3 says {'allowed' if allowed else 'forbidden'}, {v.source} says otherwise")
    return ProofResult(True, f"{len(LITMUS)} vectors agree")


@theorem("Bounded: for every one-CPU trace of N instructions without NT stores (N = 4, 5 thorough) "
         "the union of the crash images over all crash points is the same whether fences and "
         "CLFLUSH complete synchronously or (Px86) asynchronously.")
def thm_sync_async_union_equal() -> ProofResult:
    n = _bound() + 1
    checked = 0
    for domain in pmem.DOMAINS:
        for st in traces(n, domain, True):
            if any(e.kind == "nt_store" for e in st.events):
                continue
            asy = pmem.PmemState(st.config._replace(synchronous=False), st.initial, st.events)
            u1 = set().union(*(pmem.crash_at(st, k)[1] for k in range(n + 1)))
            u2 = set().union(*(pmem.crash_at(asy, k)[1] for k in range(n + 1)))
            checked += 1
            if u1 != u2:
                return ProofResult(False, "unions differ", pmem.render(st))
    return ProofResult(True, f"{checked} traces of {n} instructions")


@theorem("Bounded: every transaction of 1..2 writes to a 4-word heap (values 1..2), cached or NT, "
         "after 0 or 1 earlier transaction, on ADR and eADR, recovers to the heap before or after "
         "it at every crash point, and to the heap after it once it returned.")
def thm_tx_atomic_exhaustive() -> ProofResult:
    checked = 0
    for domain in pmem.DOMAINS:
        cfg = pmemtx.TxConfig(entries=2, heap_words=4, domain=domain)
        singles = [((w, v),) for w in range(4) for v in (1, 2)]
        pairs = [((w1, 1), (w2, 2)) for w1 in range(4) for w2 in range(4) if w1 != w2]
        for pre in [None, ((1, 2),)]:
            base = pmemtx.init(cfg)
            if pre:
                base, _ = pmemtx.tx_write(base, pre)
            for writes in singles + pairs:
                for nt in (False, True):
                    s, _ = pmemtx.tx_write(base, writes, nt)
                    checked += 1
                    if not pmemtx.inv_tx_atomicity(s) or not pmemtx.inv_committed_is_durable(s):
                        return ProofResult(False, "a transaction is not atomic", pmemtx.render(s))
    return ProofResult(True, f"{checked} transactions, every crash point")
