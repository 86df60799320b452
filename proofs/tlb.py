"""Theorems about TLBs and shootdowns (spec/tlb.py, spec/tlbflush.py).

The instruction theorems run the spec's own removal predicates
(:func:`spec.tlb.invlpg_removes`, :func:`~spec.tlb.invpcid_removes`,
:func:`~spec.tlb.cr3_write_removes`) and :func:`~spec.tlb.covers` on z3 values: every PCID,
every global bit, every address, and check them against the Intel SDM's sentences one at a
time.  The protocol theorems are bounded and exhaustive: from a small machine where the CPUs
already cache translations of an mm, every interleaving of page-table changes (munmap,
mprotect), the steps of the flushes, IPI deliveries and acknowledgements, context switches,
lazy periods and TLB fills, up to a depth, is explored through the spec's own transitions, and
every invariant of :mod:`spec.tlb` (coherence once a flush returns, no usable entry to a free
frame ...) is checked in every state reached.  One exploration does the same for reclaim's
deferred, batched flush and the writeback of dirty pages.
"""

from __future__ import annotations

import z3

from proofs._z3 import ProofResult, explore, prove, registry
from spec import pte, tlb, tlbflush
from spec.errors import MMError
from spec.tlb import PAGE_2M, PAGE_4K, TlbConfig

THEOREMS, theorem = registry()

e_pcid, cur, pcid = z3.BitVecs("e_pcid cur pcid", 12)
e_glob, e_hit, pcide, noflush = z3.Bools("e_glob e_hit pcide noflush")
kind = z3.BitVec("kind", 4)


def _all(results) -> ProofResult:
    results = list(results)
    bad = [r for r in results if not r.proved]
    return bad[0] if bad else ProofResult(True, "; ".join(r.detail for r in results[:3]) + f" ({len(results)} claims)")


@theorem("INVLPG (SDM 4.10.4.1) removes an entry only if it covers the address; it removes every global entry for the address and every entry for it in the current PCID, and keeps non-global entries of other PCIDs.")
def thm_invlpg_semantics() -> ProofResult:
    r = tlb.invlpg_removes(e_pcid, e_glob, e_hit, cur)
    return _all([prove(z3.Implies(r, e_hit)), prove(z3.Implies(z3.And(e_hit, e_glob), r)),
                 prove(z3.Implies(z3.And(e_hit, e_pcid == cur), r)),
                 prove(z3.Implies(z3.And(z3.Not(e_glob), e_pcid != cur), z3.Not(r)))])


@theorem("INVPCID (SDM vol. 2A): type 0 removes only the given PCID's non-global entries for the address; type 1 exactly the non-global entries of the PCID; type 2 every entry; type 3 exactly the non-global entries; no other type removes anything.")
def thm_invpcid_semantics() -> ProofResult:
    def r(k):
        return tlb.invpcid_removes(k if isinstance(k, z3.ExprRef) else z3.BitVecVal(k, 4), e_pcid, e_glob, e_hit, pcid)

    return _all([
        prove(r(0) == z3.And(e_hit, e_pcid == pcid, z3.Not(e_glob))),
        prove(r(1) == z3.And(e_pcid == pcid, z3.Not(e_glob))),
        prove(r(2)),
        prove(r(3) == z3.Not(e_glob)),
        prove(z3.Implies(z3.UGT(kind, 3), z3.Not(r(kind)))),
    ])


@theorem("MOV to CR3 (SDM 4.10.4.1): global entries always survive; without CR4.PCIDE every non-global entry goes; with PCIDE and bit 63 set nothing goes; with PCIDE and bit 63 clear exactly the non-global entries of the new PCID go.")
def thm_cr3_write_semantics() -> ProofResult:
    r = tlb.cr3_write_removes(pcide, noflush, e_pcid, e_glob, pcid)
    return _all([
        prove(z3.Implies(e_glob, z3.Not(r))),
        prove(z3.Implies(z3.Not(pcide), r == z3.Not(e_glob))),
        prove(z3.Implies(z3.And(pcide, noflush), z3.Not(r))),
        prove(z3.Implies(z3.And(pcide, z3.Not(noflush)), r == z3.And(z3.Not(e_glob), e_pcid == pcid))),
    ])


@theorem("An entry of 4 KiB or 2 MiB at an aligned base covers exactly the addresses from its base to base + size - 1 (the lookup and INVLPG's address match), for every 48-bit address.")
def thm_covers_is_the_page() -> ProofResult:
    vbase, vaddr = z3.BitVecs("vbase vaddr", 64)
    out = []
    for size in (PAGE_4K, PAGE_2M):
        pre = (z3.URem(vbase, size) == 0, z3.ULT(vbase, 1 << 48), z3.ULT(vaddr, 1 << 48))
        inside = z3.And(z3.ULE(vbase, vaddr), z3.ULT(vaddr, vbase + size))
        out.append(prove(tlb.covers(vbase, size, vaddr) == inside, pre))
    return _all(out)


# ---------------------------------------------------------------------------------------------
# Bounded exploration of the protocol

A, B = 0x7F0000000000, 0x7F0000001000


def _machine(ncpus: int, pcid: bool = True, lazy_cpu: int | None = None):
    """One mm with pages A and B mapped, every CPU running it with both cached (``lazy_cpu``,
    if given, then goes lazy)."""
    s = tlb.init(TlbConfig(ncpus=ncpus, nr_mm=1, pcid=pcid))
    s = tlbflush.populated(tlbflush.populated(s, 1, A), 1, B)
    for c in range(ncpus):
        s, _ = tlbflush.switch_mm(s, c, 1)
        for va in (A, B):
            s, _ = tlb.access(s, c, va)
    if lazy_cpu is not None:
        s, _ = tlbflush.enter_lazy(s, lazy_cpu)
    return s


def _successors(ops):
    def successors(state):
        for op, args in ops(state):
            try:
                yield getattr(tlb, op)(state, *args)[0]
            except MMError:
                continue
    return successors


def _ops(state):
    n = len(state.cpus)
    for c in range(n):
        yield from (("advance", (c,)), ("deliver_ipi", (c,)), ("ack_ipi", (c,)), ("access", (c, A, "r")),
                    ("access", (c, B, "w")), ("munmap", (c, A, PAGE_4K)))
        yield ("mprotect", (c, B, PAGE_4K, pte.PAGE_READONLY))
        yield ("switch_mm", (c, 0))
        yield ("switch_mm", (c, 1))
        yield ("enter_lazy", (c,))


INVARIANTS = [fn for name, fn in vars(tlb).items() if name.startswith("inv_")]


def _explore(state, depth: int) -> ProofResult:
    return explore(state, _successors(_ops), INVARIANTS, tlb.render, depth)


@theorem("Two CPUs with PCID, both running an mm and caching its pages: every interleaving of up to 9 steps (munmap, mprotect, the flush steps, IPI delivery and acknowledgement, context switches, lazy periods, TLB fills) keeps every invariant, so coherence holds whenever a flush has returned and no usable entry maps a freed frame.")
def thm_protocol_two_cpus_pcid() -> ProofResult:
    return _explore(_machine(2), 9)


@theorem("The same exploration without PCID (every context switch flushes), to depth 8.")
def thm_protocol_two_cpus_no_pcid() -> ProofResult:
    return _explore(_machine(2, pcid=False), 8)


@theorem("Two CPUs, the second lazy at the start (flush IPIs skip it; it must catch up when it returns to the mm): every interleaving of up to 8 steps keeps every invariant.")
def thm_protocol_lazy_cpu() -> ProofResult:
    return _explore(_machine(2, lazy_cpu=1), 8)


@theorem("Three CPUs with PCID: every interleaving of up to 6 steps keeps every invariant.")
def thm_protocol_three_cpus() -> ProofResult:
    return _explore(_machine(3), 6)


def _reclaim_ops(state):
    n = len(state.cpus)
    for c in range(n):
        yield from (("advance", (c,)), ("deliver_ipi", (c,)), ("ack_ipi", (c,)), ("access", (c, A, "r")),
                    ("access", (c, B, "w")), ("switch_mm", (c, 0)), ("switch_mm", (c, 1)), ("enter_lazy", (c,)),
                    ("reclaim_unmap", (c, 1, A)), ("reclaim_unmap", (c, 1, B)), ("reclaim_flush", (c, True)),
                    ("reclaim_flush", (c, False)))
        b = state.batches[c]
        for pfn in sorted({p for p, _ in b.ready + b.flushing} | {p for p, _, d in b.frames if d}):
            yield ("reclaim_pageout", (c, pfn))


@theorem("Reclaim's deferred flush, two CPUs with PCID running an mm with both pages cached (B dirty): every interleaving of up to 8 steps of reclaim unmapping pages into its batch, try_to_unmap_flush and try_to_unmap_flush_dirty, the batch flush's steps, IPI delivery and acknowledgement, writeback of dirty frames, accesses, context switches and lazy periods keeps every invariant: no frame is freed or written back while a CPU may still use an entry for it, and every such CPU is in the batch's mask.")
def thm_protocol_reclaim_batch() -> ProofResult:
    s = _machine(2)
    s, _ = tlb.access(s, 0, B, "w")
    return explore(s, _successors(_reclaim_ops), INVARIANTS, tlb.render, 8)


@theorem("The ceiling: flush_tlb_mm_range flushes 33 pages with INVLPG and 34 with a full flush (tlb_single_page_flush_ceiling = 33), for 4 KiB strides and for 2 MiB strides.")
def thm_ceiling_flips_at_34() -> ProofResult:
    ok = all(tlbflush.flush_cost(4, p * s, stride_pages=s).full == (p > 33) for s in (1, 512) for p in range(0, 200))
    return ProofResult(ok, "exhaustive over 0..199 strides of each size", None if ok else "ceiling decision differs")
