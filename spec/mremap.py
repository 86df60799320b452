"""Resizing and moving a mapping: ``mremap`` (mm/mremap.c: ``do_mremap``, ``mremap_to``,
``move_vma``, ``vma_expandable``; mm/vma.c: ``vma_merge_extend``, ``copy_vma``).

Part of :mod:`spec.vma`, which re-exports every public name here.

**The cases.**  Shrinking unmaps the tail in place.  Growing extends the VMA in place when
nothing is mapped above it up to the new end (:func:`_expandable`), merging with the next VMA if
that one could take the extension.  Otherwise, with ``MREMAP_MAYMOVE``, the range moves to a
place :func:`spec.mmap_layout.get_unmapped_area` picks; with ``MREMAP_FIXED`` to ``new_addr``,
unmapping what was there; with ``MREMAP_DONTUNMAP`` the old VMA stays, unlocked and without its
anon_vma.  A moved VMA keeps its pgoff if it has an anon_vma (its pages' ``index`` must not
change) and gets ``new_addr >> PAGE_SHIFT`` otherwise, so an untouched mapping can merge at its
new place.  The errors follow ``do_mremap``'s order: ``EINVAL`` for bad flags or alignment,
``EFAULT`` when the old range is not one VMA, ``EAGAIN`` above RLIMIT_MEMLOCK, ``ENOMEM`` for a
growth that cannot stay in place without MAYMOVE or would come too close to max_map_count.

**How this model simplifies Linux, and why.**  Only the VMA side: the fault layer moves the
page-table entries of the first ``min(old_len, new_len)`` bytes to the returned address.

>>> from spec.vma import new_mm, mmap
>>> from spec.mman import PROT_READ, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED, MREMAP_MAYMOVE
>>> mm, a = mmap(new_mm(), 0x200000000000, 2 << 12, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
>>> mm, b = mremap(mm, a, 2 << 12, 4 << 12, MREMAP_MAYMOVE)      # nothing above: grows in place
>>> b == a, mm.vmas[0].pages
(True, 4)
"""

from __future__ import annotations

from dataclasses import replace

from spec.errors import EAGAIN, EFAULT, EINVAL, ENOMEM
from spec.mlock import _mlock_future_ok
from spec.mman import MAP_SHARED, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE
from spec.mmap_layout import get_unmapped_area
from spec.overcommit import _charge
from spec.vm_area import (
    VM_ACCOUNT, VM_DONTEXPAND, VM_LOCKED, VM_LOCKED_MASK, VM_MAYSHARE, VM_PFNMAP, Vma, _check_ints, _get,
    _overlaps, page_align, vma_at,
)
from spec.vma_merge import (
    _absorb, _merge_new, _unmap, _vma_modify, _with, anon_vmas_compatible, can_merge_before,
)
from spec.zone import PAGE_SHIFT, PAGE_SIZE


# ---------------------------------------------------------------------------------------------
# The system call (mm/mremap.c).


def mremap(mm, old_addr, old_len, new_len, flags, new_addr=0):
    """``do_mremap()``: shrink in place, grow in place (merging with the next VMA when it can),
    or with MREMAP_MAYMOVE move to a new place (MREMAP_FIXED: at ``new_addr``, unmapping what
    was there; MREMAP_DONTUNMAP: keep the old VMA, unlocked and without its anon_vma).  A moved
    VMA keeps its pgoff if it has an anon_vma and gets ``new_addr >> PAGE_SHIFT`` otherwise.
    Returns the address; the fault layer moves the PTEs of the first ``min(old, new)`` bytes.
    """
    _check_ints(old_addr, old_len, new_len, flags, new_addr)
    if flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP):
        raise EINVAL("mremap: unknown flags")
    if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
        raise EINVAL("MREMAP_FIXED without MREMAP_MAYMOVE")
    if flags & MREMAP_DONTUNMAP and (not flags & MREMAP_MAYMOVE or old_len != new_len):
        raise EINVAL("MREMAP_DONTUNMAP needs MAYMOVE and equal lengths")
    if old_addr & (PAGE_SIZE - 1) or old_addr < 0 or old_len < 0 or new_len < 0:
        raise EINVAL("mremap: unaligned address")
    old_len, new_len = page_align(old_len), page_align(new_len)
    if new_len == 0:
        raise EINVAL("mremap: zero new length")
    if flags & MREMAP_FIXED:
        if new_addr & (PAGE_SIZE - 1) or new_addr < 0:
            raise EINVAL("mremap: unaligned new address")
        if new_len > mm.task_size or new_addr > mm.task_size - new_len:
            raise EINVAL("mremap: new range beyond TASK_SIZE")
        if new_addr < old_addr + old_len and old_addr < new_addr + new_len:
            raise EINVAL("mremap: ranges overlap")
    v = vma_at(mm, old_addr)
    if v is None:
        raise EFAULT("mremap: no VMA at the old address")
    if not flags & (MREMAP_FIXED | MREMAP_DONTUNMAP) and new_len <= old_len:
        # mremap_at(): no resize and shrink need only a VMA at the address
        vmas = list(mm.vmas)
        _unmap(mm, vmas, old_addr + new_len, old_addr + old_len)
        return _with(mm, vmas), old_addr
    if old_len == 0:
        if not v.flags & VM_MAYSHARE:
            raise EINVAL("mremap: old_len 0 on a private mapping")
    elif old_len > v.end - old_addr and not (flags & MREMAP_FIXED and new_len <= old_len):
        raise EFAULT("mremap: old range spans VMAs")
    if v.flags & (VM_DONTEXPAND | VM_PFNMAP) and new_len > old_len:
        raise EFAULT("mremap: cannot expand a special mapping")
    if v.flags & VM_LOCKED and not _mlock_future_ok(mm, v.flags, new_len - old_len):
        raise EAGAIN("mremap: above RLIMIT_MEMLOCK")
    if flags & MREMAP_FIXED:
        return _mremap_to(mm, v, old_addr, old_len, new_len, flags, new_addr)
    if old_len >= new_len and not flags & MREMAP_DONTUNMAP:
        vmas = list(mm.vmas)
        _unmap(mm, vmas, old_addr + new_len, old_addr + old_len)
        return _with(mm, vmas), old_addr
    delta = new_len - old_len
    if not flags & MREMAP_DONTUNMAP and old_addr + old_len == v.end and _expandable(mm, v, delta):
        if v.flags & VM_ACCOUNT:
            _charge(mm, delta >> PAGE_SHIFT)
        return _with(mm, _merge_extend(list(mm.vmas), v, delta)), old_addr
    if not flags & MREMAP_MAYMOVE:
        raise ENOMEM("mremap: cannot grow in place")
    shared = MAP_SHARED if v.flags & VM_MAYSHARE else 0
    target = get_unmapped_area(mm, 0, new_len, shared, v.file is None and not shared)
    return _move_vma(mm, v, old_addr, old_len, new_len, flags, target)


def _merge_extend(vmas, v, delta):
    """``vma_merge_extend()``: grow ``v`` by ``delta`` and merge it with the next VMA if that
    one could take the extension (the extension carries v's anon_vma, not its chain)."""
    i = vmas.index(v)
    grown = replace(v, end=v.end + delta)
    ext = Vma(v.end, grown.end, v.flags, v.file, v.pgoff + v.pages, v.anon_vma, v.chain, v.name)
    nxt = _get(vmas, i + 1)
    if nxt is not None and can_merge_before(ext, nxt, src_is_vma=False) and anon_vmas_compatible(v, nxt):
        vmas[i:i + 2] = [_absorb(grown, v.start, nxt.end, nxt)]
    else:
        vmas[i] = grown
    return vmas


def _expandable(mm, v, delta):
    """``vma_expandable()``: nothing mapped in ``[v.end, v.end + delta)`` and below TASK_SIZE."""
    end = v.end + delta
    return end <= mm.task_size and not _overlaps(mm.vmas, v.end, end)


def _mremap_to(mm, v, old_addr, old_len, new_len, flags, new_addr):
    """``mremap_to()``: unmap the target range, trim the old range to ``new_len``, then move."""
    vmas = list(mm.vmas)
    _unmap(mm, vmas, new_addr, new_addr + new_len)
    mm1 = _with(mm, vmas)
    if old_len > new_len:
        _unmap(mm1, vmas, old_addr + new_len, old_addr + old_len)
        old_len = new_len
        mm1 = _with(mm1, vmas)
    v = vma_at(mm1, old_addr)
    if v is None:
        raise EFAULT("mremap: the old range went away")
    if old_addr + old_len > v.end:
        # since 6.17 a move without resize may take several VMAs, gaps kept
        pieces = [(max(x.start, old_addr), min(x.end, old_addr + old_len))
                  for x in mm1.vmas if x.start < old_addr + old_len and x.end > old_addr]
        for s, e in pieces:
            mm1, _ = _move_vma(mm1, vma_at(mm1, s), s, e - s, e - s, flags, new_addr + (s - old_addr))
        return mm1, new_addr
    return _move_vma(mm1, v, old_addr, old_len, new_len, flags, new_addr)


def _move_vma(mm, v, old_addr, old_len, new_len, flags, new_addr):
    """``move_vma()``: ``copy_vma`` the range to ``new_addr`` (merging there if it can), then
    unmap the old range unless MREMAP_DONTUNMAP."""
    if len(mm.vmas) >= mm.max_map_count - 3:
        raise ENOMEM("mremap: too close to max_map_count")
    if v.flags & VM_ACCOUNT and (flags & MREMAP_DONTUNMAP or new_len > old_len):
        _charge(mm, (new_len if flags & MREMAP_DONTUNMAP else new_len - old_len) >> PAGE_SHIFT)
    pgoff = v.pgoff + ((old_addr - v.start) >> PAGE_SHIFT)
    if v.file is None and v.anon_vma is None:
        pgoff = new_addr >> PAGE_SHIFT
    moved = Vma(new_addr, new_addr + new_len, v.flags, v.file, pgoff, v.anon_vma, v.chain, v.name)
    vmas = list(mm.vmas)
    if flags & MREMAP_DONTUNMAP:
        # the old VMA loses its lock and anon_vma but is not merged with its neighbours
        mm = replace(mm, seams=mm.seams | {old_addr, old_addr + old_len})
        i = vmas.index(v)
        if old_addr == v.start and old_len == v.pages << PAGE_SHIFT:
            vmas[i] = replace(v, flags=v.flags & ~VM_LOCKED_MASK, anon_vma=None, chain=())
        else:
            _vma_modify(mm, vmas, i, old_addr, old_addr + old_len, v.flags & ~VM_LOCKED_MASK)
    elif old_len:
        _unmap(mm, vmas, old_addr, old_addr + old_len)
    _merge_new(vmas, moved, src_is_vma=False)
    return _with(mm, vmas), new_addr
