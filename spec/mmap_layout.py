"""Placement: where ``mmap`` puts a mapping when the caller does not say
(mm/mmap.c: ``__get_unmapped_area``, ``unmapped_area_topdown``, ``vm_start_gap``;
arch/x86/kernel/sys_x86_64.c: ``arch_get_unmapped_area_topdown``; mm/huge_memory.c:
``thp_get_unmapped_area``).

Part of :mod:`spec.vma`, which re-exports every public name here.

**The rule.**  Without ``MAP_FIXED`` the kernel picks the address (:func:`get_unmapped_area`):

1. a hint, rounded down to a page, if ``[hint, hint + len)`` is free and ends at or below the
   next VMA's :func:`vm_start_gap` (:func:`hint_fits`);
2. otherwise the *top* of the highest free gap below ``mmap_base`` that fits (top-down first
   fit), where a gap below a ``VM_GROWSDOWN`` VMA ends ``stack_guard_gap`` (256 pages) below it;
3. an anonymous private request without a hint whose length is a multiple of 2 MiB is placed
   2 MiB aligned: the search asks for ``len + 2 MiB`` and aligns inside the gap found
   (:func:`thp_aligned_start`);
4. if nothing fits below ``mmap_base``, a bottom-up first fit from ``TASK_SIZE / 3``; then
   ``ENOMEM``.  A result below ``mmap_min_addr`` is refused with ``EPERM`` unless the caller has
   CAP_SYS_RAWIO.

The same guard gap decides whether a stack may grow (:func:`stack_gap_ok`, used by
``expand_stack``): not to within ``stack_guard_gap`` of an accessible VMA below it.

**How this model simplifies Linux, and why.**  Linux finds the gap in O(log n) by walking the
maple tree's per-node gap summaries; the spec walks the gaps from the top, one VMA at a time —
the same answer, stated as the definition (the impl keeps a gap index).  No randomisation
(``mmap_base`` is a setting), no ``MAP_32BIT`` and no file ``get_unmapped_area`` hooks.  The
arithmetic uses plain operators so the proofs run it on z3 values.

>>> hex(thp_aligned_start(gap_top=0x7ffff7fff000, length=4 << 20))
'0x7ffff7a00000'
>>> hint_fits(0x1000, 0x1000, next_start=0x102000, next_flags=0x100, guard=0x100000)
True
"""

from __future__ import annotations


from spec.errors import EINVAL, ENOMEM, EPERM
from spec.mman import MAP_FIXED
from spec.vm_area import (
    VM_ACCESS_FLAGS, VM_GROWSDOWN, _first_ending_after, _if, find_vma, page_align, page_down,
)
from spec.zone import PAGE_SIZE


# ---------------------------------------------------------------------------------------------
# Arithmetic: plain operators, so the proofs run these very functions on z3 values.


PMD_SIZE = 1 << 21  # 2 MiB: THP alignment of large anonymous mappings (mm/huge_memory.c)


def pmd_align_up(x):
    """Round up to a multiple of 2 MiB."""
    return (x + PMD_SIZE - 1) & ~(PMD_SIZE - 1)


def thp_aligned_start(gap_top, length):
    """Where ``__thp_get_unmapped_area`` puts a 2 MiB-multiple anonymous request when the
    top-down search for ``length + 2 MiB`` returned the gap ending at ``gap_top``: the padded
    start ``ret`` rounded up to 2 MiB, or ``ret + 2 MiB`` when it is already aligned (the
    MMF_TOPDOWN rule), i.e. the highest 2 MiB-aligned start that still ends below ``gap_top``.

    ```text
    pre: 4096 <= length < 2 ** 40
    pre: length % 2097152 == 0
    pre: length + 2097152 <= gap_top < 2 ** 47
    pre: gap_top % 4096 == 0
    post: __return__ % 2097152 == 0
    post: __return__ + length <= gap_top
    post: __return__ > gap_top - length - 2097152
    ```
    """
    ret = gap_top - length - PMD_SIZE
    # Linux: off_sub = -ret & (PMD_SIZE - 1); ret + (off_sub ? off_sub : PMD_SIZE), branch-free
    return ret + ((-ret - 1) & (PMD_SIZE - 1)) + 1


def vm_start_gap(start, flags, guard):
    """``vm_start_gap()``: a ``VM_GROWSDOWN`` VMA's start minus the stack guard gap (floored at
    0), else its start: the lowest address a new mapping below it may end at."""
    grows = (flags & VM_GROWSDOWN) != 0
    return _if(grows, _if(start > guard, start - guard, start - start), start)


def hint_fits(hint, length, next_start, next_flags, guard):
    """x86 ``arch_get_unmapped_area_topdown``: a free hint is taken iff it ends at or below the
    next VMA's ``vm_start_gap`` (kernel-oracle §1 N: 256 pages of gap honoured, 255 refused)."""
    return hint + length <= vm_start_gap(next_start, next_flags, guard)


def stack_gap_ok(address, prev_end, prev_flags, guard):
    """``expand_downwards``: a stack may grow down to ``address`` unless the VMA below is an
    accessible non-GROWSDOWN VMA closer than the guard gap."""
    exempt = bool(prev_flags & VM_GROWSDOWN) or not prev_flags & VM_ACCESS_FLAGS
    return _if(exempt, True, address - prev_end >= guard)


# ---------------------------------------------------------------------------------------------
# The search (mm/mmap.c, arch/x86/kernel/sys_x86_64.c).


def _gaps_topdown(mm, vmas, low, high):
    """Free gaps ``[lo, hi)`` between ``low`` and ``high``, highest first; ``hi`` already lowered
    by the guard gap of a GROWSDOWN VMA above it."""
    i = _first_ending_after(vmas, high)
    while True:
        nxt = vmas[i] if i < len(vmas) else None
        prev = vmas[i - 1] if i > 0 else None
        hi = min(high, vm_start_gap(nxt.start, nxt.flags, mm.stack_guard_gap)) if nxt else high
        lo = max(low, prev.end) if prev else low
        if hi > lo:
            yield lo, hi
        if prev is None or prev.end <= low:
            return
        i -= 1


def _unmapped_area_topdown(mm, length):
    for lo, hi in _gaps_topdown(mm, mm.vmas, PAGE_SIZE, mm.mmap_base):
        if hi - lo >= length:
            return hi - length
    return None


def _unmapped_area_bottomup(mm, length):
    """The fallback ``arch_get_unmapped_area``: first fit upwards from ``TASK_SIZE / 3``."""
    addr = page_align(mm.task_size // 3)
    for v in mm.vmas:
        limit = vm_start_gap(v.start, v.flags, mm.stack_guard_gap)
        if v.end <= addr:
            continue
        if addr + length <= limit:
            return addr
        addr = max(addr, v.end)
    return addr if addr + length <= mm.task_size else None


def _topdown_area(mm, hint, length):
    """``arch_get_unmapped_area_topdown()``: the hint if it fits, else top-down, else bottom-up."""
    if hint:
        hint = page_down(hint)
        if length <= mm.task_size and hint <= mm.task_size - length:
            nxt = find_vma(mm, hint)
            if nxt is None or hint_fits(hint, length, nxt.start, nxt.flags, mm.stack_guard_gap):
                return hint
    addr = _unmapped_area_topdown(mm, length)
    if addr is None:
        addr = _unmapped_area_bottomup(mm, length)
    if addr is None:
        raise ENOMEM("get_unmapped_area: no gap fits")
    return addr


def get_unmapped_area(mm, addr, length, flags, anonymous_private=True):
    """``__get_unmapped_area()``: where a mapping of ``length`` bytes (page aligned) goes."""
    if length > mm.task_size:
        raise ENOMEM("get_unmapped_area: longer than TASK_SIZE")
    if flags & MAP_FIXED:
        found = addr
    elif anonymous_private and not addr and length % PMD_SIZE == 0:
        found = None  # thp_get_unmapped_area: search len + 2 MiB, align inside it
        top = _unmapped_area_topdown(mm, length + PMD_SIZE)
        if top is not None:
            found = thp_aligned_start(top + length + PMD_SIZE, length)
        if found is None:
            found = _topdown_area(mm, 0, length)
    else:
        found = _topdown_area(mm, addr, length)
    if found > mm.task_size - length:
        raise ENOMEM("get_unmapped_area: beyond TASK_SIZE")
    if found & (PAGE_SIZE - 1):
        raise EINVAL("get_unmapped_area: unaligned address")
    if found < mm.mmap_min_addr and not mm.cap_sys_rawio:
        raise EPERM("below mmap_min_addr without CAP_SYS_RAWIO")
    return found
