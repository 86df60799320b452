"""Merging and splitting VMAs (mm/vma.c: ``vma_merge_new_range``,
``vma_merge_existing_range``, ``is_mergeable_vma``, ``is_mergeable_anon_vma``, ``split_vma``,
``do_vmi_align_munmap``; mm/rmap.c: ``anon_vma_compatible``).

Part of :mod:`spec.vma`, which re-exports every public name here.

**Why merge.**  Every ``mmap``, ``mprotect``, ``madvise`` or ``mlock`` may cut a VMA into
pieces (``split_vma``), and Linux works hard to glue compatible neighbours back together so the
tree stays small.  Two adjacent VMAs merge iff (:func:`can_merge_after` /
:func:`can_merge_before`)

1. their flags are equal ignoring ``VM_SOFTDIRTY``, and neither is ``VM_SPECIAL``;
2. they map the same file, or both are anonymous (each ``MAP_SHARED|MAP_ANONYMOUS`` mapping is
   its own shmem file, so those never merge);
3. their ``vm_pgoff`` is contiguous;
4. their anon_vmas are compatible (:func:`anon_compatible`): equal, or one of them NULL and the
   other's ``anon_vma_chain`` a single entry.  A VMA a child inherited with an anon_vma has a
   longer chain, so it never absorbs an anon_vma-less neighbour: this is why a forked child's
   ``brk`` makes a second ``[heap]`` VMA.

When both neighbours could take a range but their anon_vmas differ from each other
(:func:`anon_vmas_compatible`), the range merges with the previous VMA ("prev first"), and
failing that with the next (:func:`_merge_new` for a new range, :func:`_vma_modify` for a
changed part of an existing VMA).  A split refuses with ``ENOMEM`` once the mm holds
``max_map_count`` VMAs; an unmap that would cut one VMA in three likewise.

**How this model simplifies Linux, and why.**  The VMA list is a tuple; a transition copies it
into a list, edits it with these helpers and freezes it again (:func:`_with`, which also
recounts ``locked_vm``).  A call that Linux leaves half done (``mprotect`` over a hole) raises
with the state Linux leaves attached as ``error.partial`` (:func:`_walk`).

>>> from spec.vm_area import VM_READ, VM_WRITE, VM_MAYREAD, VM_MAYWRITE, Vma
>>> rw = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE
>>> a, b = Vma(0x1000, 0x3000, rw, pgoff=1), Vma(0x3000, 0x4000, rw, pgoff=3)
>>> mergeable(a, b), mergeable(a, Vma(0x3000, 0x4000, rw, pgoff=3, anon_vma=7, chain=(5, 7)))
(True, False)
"""

from __future__ import annotations

from dataclasses import replace

from spec.errors import EACCES, EAGAIN, EINVAL, ENOMEM
from spec.vm_area import VM_ACCESS_FLAGS, VM_LOCKED, VM_SOFTDIRTY, VM_SPECIAL, _fail, _first_ending_after
from spec.zone import PAGE_SHIFT


# ---------------------------------------------------------------------------------------------
# The merge predicates (mm/vma.c, mm/rmap.c).


def _fork_child(anon, chain):
    """``vma_had_uncowed_parents()``: an anon_vma whose chain is not a single entry."""
    return anon is not None and chain is not None and len(chain) != 1


def anon_compatible(src_anon, src_chain, tgt_anon, tgt_chain):
    """``is_mergeable_anon_vma()``: may a range with anon_vma ``src_anon`` (chain ``src_chain``,
    None when the range is not an existing VMA) merge into a VMA with ``tgt_anon``?"""
    if tgt_anon is None and src_anon is not None:
        return not _fork_child(src_anon, src_chain)
    if tgt_anon is not None and src_anon is None:
        return not _fork_child(tgt_anon, tgt_chain)
    return src_anon == tgt_anon


def _same_kind(a_flags, a_file, b_flags, b_file):
    """``is_mergeable_vma()``: flags equal ignoring soft-dirty, same file, nothing special."""
    return ((a_flags ^ b_flags) & ~VM_SOFTDIRTY) == 0 and a_file == b_file and not a_flags & VM_SPECIAL


def can_merge_after(prev, src, src_is_vma=True):
    """``can_vma_merge_left``: ``src`` (a range with flags, file, pgoff, anon_vma) may join
    ``prev`` directly below it."""
    return (
        prev.end == src.start
        and _same_kind(prev.flags, prev.file, src.flags, src.file)
        and anon_compatible(src.anon_vma, src.chain if src_is_vma else None, prev.anon_vma, prev.chain)
        and prev.pgoff + prev.pages == src.pgoff
    )


def can_merge_before(src, nxt, src_is_vma=True):
    """``can_vma_merge_right`` without the 3-way check: ``src`` may join ``nxt`` directly above."""
    return (
        src.end == nxt.start
        and _same_kind(src.flags, src.file, nxt.flags, nxt.file)
        and anon_compatible(src.anon_vma, src.chain if src_is_vma else None, nxt.anon_vma, nxt.chain)
        and src.pgoff + src.pages == nxt.pgoff
    )


def anon_vmas_compatible(a, b):
    """``are_anon_vmas_compatible()``: a 3-way merge also needs prev's and next's anon_vmas to
    agree (or one to be NULL)."""
    return a.anon_vma is None or b.anon_vma is None or a.anon_vma == b.anon_vma


def mergeable(a, b):
    """Would Linux merge the adjacent VMAs ``a`` (below) and ``b``?"""
    return can_merge_after(a, b) and can_merge_before(a, b)


def _anon_vma_compatible(a, b):
    """``anon_vma_compatible()`` (mm/rmap.c): ``a`` directly below ``b``, flags equal but for
    R/W/X and soft-dirty, same file, contiguous pgoff."""
    return (
        a is not None and b is not None and a.end == b.start and a.file == b.file
        and not (a.flags ^ b.flags) & ~(VM_ACCESS_FLAGS | VM_SOFTDIRTY)
        and b.pgoff == a.pgoff + ((b.start - a.start) >> PAGE_SHIFT)
    )


# ---------------------------------------------------------------------------------------------
# Editing the VMA list.  Lists are copied, edited and frozen back into tuples.


def _cut(v, start, end):
    """The part ``[start, end)`` of ``v``, pgoff moved along (``__split_vma``)."""
    return replace(v, start=start, end=end, pgoff=v.pgoff + ((start - v.start) >> PAGE_SHIFT))


def _absorb(target, start, end, *sources):
    """``target`` grown to ``[start, end)``, taking the anon_vma of a source if it has none
    (``dup_anon_vma``)."""
    out = replace(target, start=start, end=end)
    if out.anon_vma is None:
        for s in sources:
            if s is not None and s.anon_vma is not None:
                return replace(out, anon_vma=s.anon_vma, chain=s.chain)
    return out


def _locked_pages(vmas):
    return sum(v.pages for v in vmas if v.flags & VM_LOCKED)


def _with(mm, vmas, **changes):
    vmas = tuple(vmas)
    seams = _keep_seams(mm.vmas, vmas, mm.seams)
    return replace(mm, vmas=vmas, locked_vm=_locked_pages(vmas), seams=seams, **changes)


def _keep_seams(old, new, seams):
    """The fork seams that are still boundaries (a VMA ends there and the next one starts
    there): Linux re-merges across a boundary only by removing it."""
    if not seams:
        return seams
    keep = set()
    for s in seams:
        i = _first_ending_after(new, s - 1)
        if i + 1 < len(new) and new[i].end == s and new[i + 1].start == s:
            keep.add(s)
    return frozenset(keep)


# ---------------------------------------------------------------------------------------------
# Merging and splitting (mm/vma.c).


def _merge_new(vmas, new, src_is_vma=False, just_expand=False):
    """``vma_merge_new_range()`` then, if nothing merged, insertion of ``new``: ``vmas`` is a
    list without anything in ``[new.start, new.end)``; it is edited in place."""
    i = _first_ending_after(vmas, new.start)
    prev = vmas[i - 1] if i > 0 and vmas[i - 1].end == new.start else None
    nxt = vmas[i] if i < len(vmas) and vmas[i].start == new.end else None
    if new.flags & VM_SPECIAL:
        prev = nxt = None
    left = prev is not None and can_merge_after(prev, new, src_is_vma)
    right = (not just_expand and nxt is not None and can_merge_before(new, nxt, src_is_vma)
             and (not left or anon_vmas_compatible(prev, nxt)))
    if left and right:
        vmas[i - 1:i + 1] = [_absorb(prev, prev.start, nxt.end, new, nxt)]
    elif left:
        vmas[i - 1] = _absorb(prev, prev.start, new.end, new)
    elif right:
        vmas[i] = replace(_absorb(nxt, new.start, nxt.end, new), pgoff=new.pgoff)
    else:
        vmas.insert(i, new)


def _vma_modify(mm, vmas, i, start, end, flags):
    """``vma_modify_flags()``: give ``[start, end)`` of ``vmas[i]`` the flags ``flags``, merging
    it into a neighbour (``vma_merge_existing_range``) or splitting it out (``split_vma``, ENOMEM
    at max_map_count).  Edits ``vmas`` in place; raises with ``vmas`` holding Linux's partial
    result."""
    mid = vmas[i]
    left_side, right_side = start == mid.start, end == mid.end
    prev = vmas[i - 1] if left_side and i > 0 and vmas[i - 1].end == start else None
    nxt = vmas[i + 1] if right_side and i + 1 < len(vmas) and vmas[i + 1].start == end else None
    src = replace(_cut(mid, start, end), flags=flags)
    if flags & VM_SPECIAL:
        prev = nxt = None
    left = prev is not None and can_merge_after(prev, src)
    right = nxt is not None and can_merge_before(src, nxt) and (not left or anon_vmas_compatible(prev, nxt))
    if left and right:
        vmas[i - 1:i + 2] = [_absorb(prev, prev.start, nxt.end, mid, nxt)]
    elif left:
        rest = [] if right_side else [_cut(mid, end, mid.end)]
        vmas[i - 1:i + 1] = [_absorb(prev, prev.start, end, mid), *rest]
    elif right:
        head = [] if left_side else [_cut(mid, mid.start, start)]
        vmas[i:i + 2] = [*head, replace(_absorb(nxt, start, nxt.end, mid), pgoff=src.pgoff)]
    else:
        if not left_side:
            if len(vmas) >= mm.max_map_count:
                raise ENOMEM("split_vma: max_map_count reached")
            vmas[i:i + 1] = [_cut(mid, mid.start, start), _cut(mid, start, mid.end)]
            i, mid = i + 1, vmas[i + 1]
        if not right_side:
            if len(vmas) >= mm.max_map_count:
                raise ENOMEM("split_vma: max_map_count reached")
            vmas[i:i + 1] = [_cut(mid, mid.start, end), _cut(mid, end, mid.end)]
        vmas[i] = replace(vmas[i], flags=flags)


def _unmap(mm, vmas, start, end):
    """``do_vmi_align_munmap()``: remove ``[start, end)`` from the list ``vmas`` in place,
    splitting partly covered VMAs (ENOMEM when a VMA would be cut in three at max_map_count)."""
    if end <= start:
        return
    i = _first_ending_after(vmas, start)
    if i < len(vmas) and vmas[i].start < start < vmas[i].end:
        if end < vmas[i].end and len(vmas) >= mm.max_map_count:
            raise ENOMEM("munmap: splitting would exceed max_map_count")
    j = i
    while j < len(vmas) and vmas[j].start < end:
        j += 1
    pieces = []
    if i < j and vmas[i].start < start:
        pieces.append(_cut(vmas[i], vmas[i].start, start))
    if i < j and vmas[j - 1].end > end:
        pieces.append(_cut(vmas[j - 1], end, vmas[j - 1].end))
    vmas[i:j] = pieces


def _walk(mm, start, end, newflags, check=None, holes="break", vmas=None):
    """The loop of mprotect/mlock/madvise: each VMA piece in ``[start, end)`` gets
    ``newflags(vma)`` via :func:`_vma_modify`.  ``holes``: "break" (ENOMEM at the first hole,
    after the pieces before it) or "skip" (ENOMEM at the end).  Returns the new VMA list."""
    vmas = list(mm.vmas) if vmas is None else vmas
    i = _first_ending_after(vmas, start)
    if i >= len(vmas) or (holes == "break" and vmas[i].start > start):
        raise _fail(ENOMEM("no VMA at the start of the range"), mm)
    pos, hole = start, False
    while pos < end and i < len(vmas) and vmas[i].start < end:
        v = vmas[i]
        if v.start > pos:
            hole = True
            if holes == "break":
                raise _fail(ENOMEM("hole in the range"), _with(mm, vmas))
        s, e = max(pos, v.start), min(end, v.end)
        try:
            if check is not None:
                check(v)
            flags = newflags(v)
            if flags != v.flags:
                _vma_modify(mm, vmas, i, s, e, flags)
        except (ENOMEM, EACCES, EINVAL, EAGAIN) as err:
            raise _fail(err, _with(mm, vmas)) from None
        pos = e
        i = _first_ending_after(vmas, e)
    if pos < end or hole:
        raise _fail(ENOMEM("range not fully mapped"), _with(mm, vmas))
    return vmas
