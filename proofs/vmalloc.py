"""Theorems about vmalloc's arithmetic and its reuse protocol (spec/vmalloc.py).

The arithmetic theorems run the spec's own :func:`spec.vmalloc.align_up`,
:func:`~spec.vmalloc.vm_area_size`, :func:`~spec.vmalloc.fits_in_block` and
:func:`~spec.vmalloc.lazy_max_pages` on z3 bit-vectors.  The protocol theorem explores every
history of vmalloc / vfree / purge up to a bound on a small window and checks the invariants
after each step, and that no range is handed out again before the flush that follows its vfree.
"""

from __future__ import annotations

import z3

from proofs._z3 import ProofResult, prove, registry
from spec import vmalloc
from spec.paging import PagingConfig
from spec.zone import PAGE_SIZE

THEOREMS, theorem = registry()

x, size, align, bs, be, vstart, cpus = z3.BitVecs("x size align bs be vstart cpus", 64)
ALIGNS = z3.Or(*[align == (1 << k) for k in range(0, 31)])
SANE = (z3.ULT(x, 1 << 62), z3.ULT(size, 1 << 50), z3.ULT(bs, 1 << 62), z3.ULT(be, 1 << 62), z3.ULT(vstart, 1 << 62))


@theorem("ALIGN(x, a) is the least multiple of a at or above x, for every power of two a up to 1 GiB.")
def thm_align_up() -> ProofResult:
    r = vmalloc.align_up(x, align)
    return prove(z3.And(z3.UGE(r, x), z3.URem(r, align) == 0, z3.ULT(r - x, align)), SANE + (ALIGNS,))


@theorem("The reserved size is the page-aligned request plus exactly one guard page (none with VM_NO_GUARD): the guard page is never part of the usable pages.")
def thm_guard_page() -> ProofResult:
    with_guard = vmalloc.vm_area_size(size, True)
    without = vmalloc.vm_area_size(size, False)
    claim = z3.And(with_guard == without + PAGE_SIZE, z3.URem(without, PAGE_SIZE) == 0, z3.UGE(without, size),
                   z3.ULT(without - size, PAGE_SIZE))
    return prove(claim, SANE + (z3.UGE(size, 1),))


@theorem("is_within_this_va(): a start it returns is aligned, inside the block and at or above vstart, and the area ends inside the block.")
def thm_fit_in_block() -> ProofResult:
    start = vmalloc.fits_in_block(bs, be, size, align, vstart)
    ok = z3.Or(start == -1, z3.And(z3.UGE(start, bs), z3.UGE(start, vstart), z3.URem(start, align) == 0,
                                   z3.ULE(start + size, be)))
    return prove(ok, SANE + (ALIGNS,))


@theorem("is_within_this_va() finds a block that holds the area exactly (start aligned, start + size == end).")
def thm_exact_fit_accepted() -> ProofResult:
    start = vmalloc.fits_in_block(bs, be, size, align, vstart)
    return prove(start == bs, SANE + (ALIGNS, z3.URem(bs, align) == 0, z3.UGE(bs, vstart), be == bs + size, z3.UGE(size, 1)))


@theorem("lazy_max_pages() grows with the CPU count and is a multiple of 32 MiB worth of pages, at least one.")
def thm_lazy_max_monotone() -> ProofResult:
    other = z3.BitVec("other", 64)
    a, b = vmalloc.lazy_max_pages(cpus), vmalloc.lazy_max_pages(other)
    pre = (z3.ULE(1, cpus), z3.ULE(cpus, other), z3.ULE(other, 8192))
    return prove(z3.And(z3.ULE(a, b), z3.URem(a, vmalloc.LAZY_PAGES_PER_LOG) == 0, z3.UGE(a, vmalloc.LAZY_PAGES_PER_LOG)), pre)


@theorem("Every history of up to 6 vmalloc (1, 2 or 3 pages) / vfree / purge steps on a 10-page window keeps every invariant, and never returns a range freed since the last purge.")
def thm_no_reuse_before_flush() -> ProofResult:
    cfg = vmalloc.VmallocConfig(PagingConfig("x86-64-4level", "toy-64"), 1, 10, 3)
    invs = [getattr(vmalloc, n) for n in dir(vmalloc) if n.startswith("inv_")]
    seen, frontier, histories = set(), [(vmalloc.init(cfg), frozenset(), ())], 0
    for _ in range(6):
        nxt = []
        for s, dirty, hist in frontier:
            ops = [("vmalloc", (n * PAGE_SIZE,)) for n in (1, 2, 3)] + [("vfree", (a,)) for a in sorted(s.busy)]
            ops.append(("purge_vmap_area_lazy", ()))
            for op, args in ops:
                try:
                    t, r = getattr(vmalloc, op)(s, *args)
                except vmalloc.ENOMEM:
                    continue
                histories += 1
                h = hist + ((op, args),)
                bad = next((f.__name__ for f in invs if not f(t)), None)
                if bad:
                    return ProofResult(False, f"{histories} histories", f"{bad} after {h}")
                d = dirty
                if op == "vfree":
                    d = d | {(s.busy[args[0]].va_start, s.busy[args[0]].va_end)}
                if t.nr_purges != s.nr_purges:
                    d = frozenset()
                if op == "vmalloc" and any(r < e and s0 < t.busy[r].va_end for s0, e in d):
                    return ProofResult(False, f"{histories} histories", f"range reused before the flush: {h}")
                key = (tuple(sorted((a.va_start, a.va_end) for a in t.busy.values())), tuple(sorted(t.lazy.items())), d)
                if key not in seen:
                    seen.add(key)
                    nxt.append((t, d, h))
        frontier = nxt
    return ProofResult(True, f"bounded exhaustive: {histories} transitions, {len(seen)} distinct layouts")
