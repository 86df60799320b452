"""Virtual memory areas: the layout of one address space and the system calls that change it
(mm/mmap.c, mm/vma.c, mm/mprotect.c, mm/madvise.c, mm/mremap.c, mm/mlock.c, mm/util.c).

**The problem.**  A process's address space is 128 TiB of virtual addresses of which it uses a
few hundred scattered ranges: the program, its heap, shared libraries, thread stacks, anonymous
arenas, mapped files.  The kernel describes each range by a *virtual memory area*; the system
calls ``mmap``, ``munmap``, ``mprotect``, ``madvise``, ``mremap``, ``mlock`` and ``brk`` create,
cut, change and glue VMAs, and the page-fault handler finds the VMA of an address to decide what
an access may do.  This module is the chapter's table of contents and its system calls; the
sections live in their own modules, and every public name of each is re-exported here:

- :mod:`spec.vm_area` — the types (:class:`Vma`, :class:`Mm`, :class:`FileRef`), the
  ``VM_*`` flags with Linux's values, the settings' defaults and :func:`find_vma`;
- :mod:`spec.vma_merge` — when two VMAs merge, splits, and the range walk of
  mprotect/madvise/mlock;
- :mod:`spec.mmap_layout` — where a mapping goes (:func:`get_unmapped_area`, hints, the stack
  guard gap, 2 MiB alignment);
- :mod:`spec.overcommit` — ``Committed_AS``, ``CommitLimit`` and the three overcommit modes;
- :mod:`spec.mlock` and :mod:`spec.mremap` — the locking calls and ``mremap``;
- :mod:`spec.vma_views` — ``/proc/PID/maps`` and ``VmFlags``.

**The system calls here.**  :func:`mmap` checks its arguments in Linux's order (zero length,
MAP_FIXED alignment, MAP_FIXED_NOREPLACE's ``EEXIST`` before the type checks, MAP_LOCKED against
RLIMIT_MEMLOCK, the type, accounting), places the mapping, unmaps what was there, charges it and
merges it with its neighbours.  :func:`munmap` cuts; :func:`mprotect` and :func:`madvise` walk
the range changing flags piece by piece; :func:`brk` moves the break and answers with the break,
never an errno.  :func:`anon_vma_prepare` (on the first write fault: reuse a neighbour's
anon_vma when ``find_mergeable_anon_vma`` allows, else a new one), :func:`expand_stack` and
:func:`fork` (the child's VMAs and anon_vma chains; ``VM_DONTCOPY`` VMAs stay behind,
``VM_WIPEONFORK`` ones come without an anon_vma) are the hooks the fault layer calls.
:func:`apply_step` runs one step of the program format the kernel oracle shares.

**How this model simplifies Linux, and why.**

- One ``mm``; other processes appear only through ``committed_base`` (their share of
  ``Committed_AS``).
- No mempolicies, userfaultfd contexts, anon VMA names (``CONFIG_ANON_VMA_NAME=n`` on the
  oracle host), ``vm_ops->close`` hooks, hugetlb (``MAP_HUGETLB`` is refused with ``EINVAL``),
  PKEYs, sealing, ``MAP_DROPPABLE``, shadow stacks, ``MAP_SYNC``, or ``PROT_GROWSDOWN``.
- ``anon_vma_clone``'s reuse of an ancestor anon_vma that no VMA uses any more is not
  modelled: a fork child always gets a fresh anon_vma at the end of its chain.
- Linux's ``mprotect``, ``madvise`` and ``mlock`` are not atomic: when they fail part way the
  VMAs before the failure are already changed.  A spec transition still returns no new state
  on failure; the state Linux leaves is attached to the error as ``error.partial`` (the oracle
  compares with it).

>>> from spec.mman import PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE
>>> mm = new_mm()
>>> mm, a = mmap(mm, 0x200000000000, 8 << 12, PROT_READ | PROT_WRITE,
...              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
>>> mm, _ = mprotect(mm, a + (3 << 12), 2 << 12, PROT_READ)
>>> print(maps(mm), end="")
200000000000-200000003000 rw-p 00000000 00:00 0 
200000003000-200000005000 r--p 00000000 00:00 0 
200000005000-200000008000 rw-p 00000000 00:00 0 
>>> mm, _ = mprotect(mm, a + (3 << 12), 2 << 12, PROT_READ | PROT_WRITE)
>>> print(maps(mm), end="")
200000000000-200000008000 rw-p 00000000 00:00 0 
"""

from __future__ import annotations

from dataclasses import replace

from spec.errors import (  # noqa: F401
    EACCES, EAGAIN, EEXIST, EFAULT, EINVAL, ENOMEM, EOPNOTSUPP, EPERM, SIGSEGV,
)
from spec.mlock import _mlock_future_ok, mlock, mlockall, munlock, munlockall  # noqa: F401
from spec.mman import (  # noqa: F401
    LEGACY_MAP_MASK, MADV_COLD, MADV_COLLAPSE, MADV_DODUMP, MADV_DOFORK, MADV_DONTDUMP, MADV_DONTFORK,
    MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE, MADV_HUGEPAGE, MADV_KEEPONFORK, MADV_MERGEABLE,
    MADV_NOHUGEPAGE, MADV_NORMAL, MADV_PAGEOUT, MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_RANDOM,
    MADV_REMOVE, MADV_SEQUENTIAL, MADV_UNMERGEABLE, MADV_WILLNEED, MADV_WIPEONFORK, MAP_ANONYMOUS, MAP_FIXED,
    MAP_FIXED_NOREPLACE, MAP_GROWSDOWN, MAP_HUGETLB, MAP_LOCKED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED,
    MAP_SHARED_VALIDATE, MAP_STACK, MAP_TYPE, MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT,
    MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, PROT_EXEC, PROT_READ, PROT_SEM, PROT_WRITE,
)
from spec.mmap_layout import (  # noqa: F401
    PMD_SIZE, get_unmapped_area, hint_fits, pmd_align_up, stack_gap_ok, thp_aligned_start, vm_start_gap,
)
from spec.mremap import mremap  # noqa: F401
from spec.overcommit import (  # noqa: F401
    _accountable, _charge, _shmem_charge, commit_limit, committed_as, meminfo, total_vm, vm_enough_memory,
)
from spec.vm_area import (  # noqa: F401
    ADMIN_RESERVE_KBYTES, DEFAULT_MAX_MAP_COUNT, DEFAULT_MMAP_MIN_ADDR, ID_SHIFT, MMAP_BASE_NORANDOM,
    OVERCOMMIT_ALWAYS, OVERCOMMIT_GUESS, OVERCOMMIT_NEVER, RLIMIT_MEMLOCK_DEFAULT, RLIMIT_STACK_DEFAULT,
    STACK_GUARD_GAP, TASK_SIZE, USER_RESERVE_KBYTES, VM_ACCESS_FLAGS, VM_ACCOUNT, VM_ARCH_1,
    VM_DATA_DEFAULT_FLAGS, VM_DONTCOPY, VM_DONTDUMP, VM_DONTEXPAND, VM_EXEC, VM_GROWSDOWN, VM_HUGEPAGE,
    VM_HUGETLB, VM_IO, VM_LOCKED, VM_LOCKED_MASK, VM_LOCKONFAULT, VM_MAYEXEC, VM_MAYREAD, VM_MAYSHARE,
    VM_MAYWRITE, VM_MERGEABLE, VM_MIXEDMAP, VM_NOHUGEPAGE, VM_NONE, VM_NORESERVE, VM_PFNMAP, VM_RAND_READ,
    VM_READ, VM_SEQ_READ, VM_SHARED, VM_SOFTDIRTY, VM_SPECIAL, VM_SYNC, VM_WIPEONFORK, VM_WRITE,
    VMFLAG_MNEMONICS, WINDOW_BASE, FileRef, Mm, Vma, _check_ints, _fail, _first_ending_after, _get, _overlaps,
    calc_vm_prot_bits, find_vma, fresh_id, init, new_mm, page_align, page_down, vma_at,
)
from spec.vma_merge import (  # noqa: F401
    _absorb, _anon_vma_compatible, _locked_pages, _merge_new, _unmap, _walk, _with, anon_compatible,
    anon_vmas_compatible, can_merge_after, can_merge_before, mergeable,
)
from spec.vma_views import (  # noqa: F401
    maps, maps_line, perms, render, smaps_vmflags_line, vmflags, window_maps,
)
from spec.zone import PAGE_SHIFT, PAGE_SIZE


# ---------------------------------------------------------------------------------------------
# Building an mm from a maps snapshot (the oracle seeds the spec with one).


_PERM_FLAGS = {"r": VM_READ | VM_MAYREAD, "w": VM_WRITE | VM_MAYWRITE, "x": VM_EXEC | VM_MAYEXEC}


def from_maps(entries, **config) -> Mm:
    """An mm seeded from a maps snapshot: ``(start, end, perms, kind)`` with perms like ``rw-p``
    and kind ``anon``/``shmem``/``file``/a label such as ``[heap]``.

    Every VMA gets all ``VM_MAY*`` bits (what mmap gives), private writable ones ``VM_ACCOUNT``,
    and a fresh shmem or file identity; none has an anon_vma.
    """
    mm = new_mm(**config)
    vmas = []
    for start, end, perm, kind in sorted(entries):
        flags = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
        for ch in perm[:3]:
            flags |= _PERM_FLAGS.get(ch, 0)
        file, name = None, ""
        if perm[3] == "s":
            flags |= VM_SHARED | VM_MAYSHARE
        if kind in ("shmem", "file") or perm[3] == "s":
            mm, ino = fresh_id(mm)
            path = "/dev/zero (deleted)" if kind != "file" else f"/file{ino}"
            file = FileRef(ino, path, "00:01", kind != "file", (end - start) >> PAGE_SHIFT)
        elif kind not in ("anon", ""):
            name = kind
        if file is None and _accountable(None, flags):
            flags |= VM_ACCOUNT
        pgoff = 0 if file else start >> PAGE_SHIFT
        vmas.append(Vma(start, end, flags, file, pgoff, None, (), name))
    return replace(mm, vmas=tuple(vmas))


# ---------------------------------------------------------------------------------------------
# mmap and munmap (mm/mmap.c, mm/vma.c).


def _mmap_flags(mm, prot, flags):
    """``calc_vm_prot_bits | calc_vm_flag_bits | def_flags | VM_MAY*`` (do_mmap)."""
    vm = calc_vm_prot_bits(prot) | mm.def_flags | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    if flags & MAP_GROWSDOWN:
        vm |= VM_GROWSDOWN
    if flags & MAP_LOCKED:
        vm |= VM_LOCKED
    if flags & MAP_STACK:
        vm |= VM_NOHUGEPAGE  # since 6.7: MAP_STACK implies VM_NOHUGEPAGE
    return vm


def mmap(mm, addr, length, prot, flags, file=None, pgoff=0):
    """``do_mmap()`` + ``mmap_region()``: map ``length`` bytes; returns the address.

    Errors in Linux's order (kernel-oracle "Further observations"): zero length EINVAL;
    MAP_FIXED at an unaligned address EINVAL; MAP_FIXED_NOREPLACE over a mapping EEXIST (before
    the SHARED/PRIVATE type checks); MAP_LOCKED without rlimit or capability EPERM, above the
    limit EAGAIN; a bad type EINVAL; accounting ENOMEM.  ``file=None`` is anonymous memory;
    MAP_SHARED|MAP_ANONYMOUS creates a fresh shmem object.  Pages are not populated here.
    """
    _check_ints(addr, length, prot, flags, pgoff)
    if file is not None and not isinstance(file, FileRef):
        raise EINVAL(f"not a file: {file!r}")
    if flags & MAP_ANONYMOUS:
        file = None
    if flags & MAP_FIXED_NOREPLACE:
        flags |= MAP_FIXED
    if length == 0 or addr < 0 or pgoff < 0:
        raise EINVAL("mmap: zero length or bad argument")
    if length < 0 or page_align(length) > mm.task_size:
        raise ENOMEM("mmap: length beyond TASK_SIZE")
    if flags & MAP_HUGETLB:
        raise EINVAL("mmap: hugetlb is not modelled")
    if not flags & MAP_FIXED and addr and page_down(addr) < mm.mmap_min_addr:
        addr = page_align(mm.mmap_min_addr)  # round_hint_to_min
    length = page_align(length)
    if len(mm.vmas) > mm.max_map_count:
        raise ENOMEM("mmap: map_count above max_map_count")
    vm = _mmap_flags(mm, prot, flags)
    shared = flags & MAP_TYPE in (MAP_SHARED, MAP_SHARED_VALIDATE)
    addr = get_unmapped_area(mm, addr, length, flags, file is None and not shared)
    if flags & MAP_FIXED_NOREPLACE and _overlaps(mm.vmas, addr, addr + length):
        raise EEXIST("MAP_FIXED_NOREPLACE: the range is mapped")
    if flags & MAP_LOCKED and mm.rlimit_memlock == 0 and not mm.cap_ipc_lock:
        raise EPERM("MAP_LOCKED: RLIMIT_MEMLOCK is 0")
    if not _mlock_future_ok(mm, vm, length):
        raise EAGAIN("MAP_LOCKED: above RLIMIT_MEMLOCK")
    kind = flags & MAP_TYPE
    if file is not None and kind == MAP_SHARED_VALIDATE and flags & ~LEGACY_MAP_MASK:
        raise EOPNOTSUPP("MAP_SHARED_VALIDATE: a flag the file does not support")
    if kind not in (MAP_SHARED, MAP_PRIVATE) and not (file is not None and kind == MAP_SHARED_VALIDATE):
        raise EINVAL("mmap: neither MAP_SHARED nor MAP_PRIVATE")
    if shared and vm & VM_GROWSDOWN and file is None:
        raise EINVAL("MAP_GROWSDOWN|MAP_SHARED")
    if shared:
        vm |= VM_SHARED | VM_MAYSHARE
    if file is None:
        pgoff = 0 if shared else addr >> PAGE_SHIFT
    if flags & MAP_NORESERVE and mm.overcommit_memory != OVERCOMMIT_NEVER:
        vm |= VM_NORESERVE
    return _mmap_region(mm, addr, length, vm, file, pgoff, shared)


def _mmap_region(mm, addr, length, vm, file, pgoff, shared):
    """``__mmap_region()``: unmap what was there, charge, create or merge, count locked pages."""
    vmas = list(mm.vmas)
    _unmap(mm, vmas, addr, addr + length)
    after = replace(mm, vmas=tuple(vmas))
    if _accountable(file, vm):
        _charge(after, length >> PAGE_SHIFT)
        vm |= VM_ACCOUNT
    if file is None and shared:
        after, ino = fresh_id(after)
        file = FileRef(ino, "/dev/zero (deleted)", "00:01", True, length >> PAGE_SHIFT)
        if not vm & VM_NORESERVE:
            _charge(after, length >> PAGE_SHIFT)
    _merge_new(vmas, Vma(addr, addr + length, vm, file, pgoff))
    return _with(after, vmas), addr


def munmap(mm, addr, length):
    """``__vm_munmap()``: unmap ``[addr, addr + PAGE_ALIGN(length))``; EINVAL for an unaligned
    address or a zero length, nothing mapped is fine.  Neighbours are not merged."""
    _check_ints(addr, length)
    if addr & (PAGE_SIZE - 1) or addr > mm.task_size or length > mm.task_size - addr or length <= 0:
        raise EINVAL("munmap: unaligned address or bad length")
    vmas = list(mm.vmas)
    _unmap(mm, vmas, addr, addr + page_align(length))
    return _with(mm, vmas), 0


# ---------------------------------------------------------------------------------------------
# mprotect (mm/mprotect.c) and madvise (mm/madvise.c).


def mprotect(mm, addr, length, prot):
    """``do_mprotect_pkey()``: change R/W/X of ``[addr, addr+len)``, splitting and merging.

    EINVAL for an unaligned address or unknown bits; ENOMEM for an unmapped start or a hole
    (with the VMAs before it already changed); EACCES when the VMA's ``VM_MAY*`` forbid it.
    Making a private VMA writable charges it (VM_ACCOUNT); making an untouched anonymous one
    read-only uncharges it.
    """
    _check_ints(addr, length, prot)
    if addr & (PAGE_SIZE - 1) or prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM):
        raise EINVAL("mprotect: unaligned address or unknown protection")
    if length == 0:
        return mm, 0
    end = addr + page_align(length)
    if length < 0 or end <= addr:
        raise ENOMEM("mprotect: range wraps")

    def check(v):
        new = calc_vm_prot_bits(prot) | (v.flags & ~VM_ACCESS_FLAGS)
        if (new & ~(new >> 4)) & VM_ACCESS_FLAGS:
            raise EACCES("mprotect: beyond VM_MAY*")

    vmas = list(mm.vmas)

    def newflags(v):
        old = v.flags
        new = calc_vm_prot_bits(prot) | (old & ~VM_ACCESS_FLAGS)
        if new == old:
            return old
        if new & VM_WRITE:
            if not old & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE):
                pages = (min(end, v.end) - max(addr, v.start)) >> PAGE_SHIFT
                _charge(replace(mm, vmas=tuple(vmas)), pages)
                new |= VM_ACCOUNT
        elif old & VM_ACCOUNT and v.file is None and v.anon_vma is None:
            new &= ~VM_ACCOUNT
        return new

    return _with(mm, _walk(mm, addr, end, newflags, check, vmas=vmas)), 0


_MADV_FLAG_EFFECTS = {
    MADV_NORMAL: (VM_SEQ_READ | VM_RAND_READ, 0),
    MADV_SEQUENTIAL: (VM_RAND_READ, VM_SEQ_READ),
    MADV_RANDOM: (VM_SEQ_READ, VM_RAND_READ),
    MADV_DONTFORK: (0, VM_DONTCOPY),
    MADV_DOFORK: (VM_DONTCOPY, 0),
    MADV_WIPEONFORK: (0, VM_WIPEONFORK),
    MADV_KEEPONFORK: (VM_WIPEONFORK, 0),
    MADV_DONTDUMP: (0, VM_DONTDUMP),
    MADV_DODUMP: (VM_DONTDUMP, 0),
    MADV_HUGEPAGE: (VM_NOHUGEPAGE, VM_HUGEPAGE),
    MADV_NOHUGEPAGE: (VM_HUGEPAGE, VM_NOHUGEPAGE),
    MADV_MERGEABLE: (0, VM_MERGEABLE),
    MADV_UNMERGEABLE: (VM_MERGEABLE, 0),
}
_MADV_PAGE_ADVICE = frozenset({
    MADV_WILLNEED, MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE, MADV_REMOVE, MADV_COLD,
    MADV_PAGEOUT, MADV_COLLAPSE,
})
_KSM_EXCLUDED = VM_MERGEABLE | VM_SHARED | VM_MAYSHARE | VM_SPECIAL | VM_HUGETLB


def _madvise_check(advice, v):
    """The per-VMA refusals of madvise_vma_behavior and friends."""
    if advice == MADV_DOFORK and v.flags & VM_IO:
        raise EINVAL("MADV_DOFORK on VM_IO")
    if advice == MADV_WIPEONFORK and (v.file is not None or v.flags & VM_SHARED):
        raise EINVAL("MADV_WIPEONFORK on a file or shared mapping")
    if advice == MADV_DODUMP and v.flags & VM_SPECIAL:
        raise EINVAL("MADV_DODUMP on a special mapping")
    if advice in (MADV_DONTNEED, MADV_FREE) and v.flags & (VM_LOCKED | VM_PFNMAP):
        raise EINVAL("MADV_DONTNEED/FREE on a locked mapping")
    if advice == MADV_DONTNEED_LOCKED and v.flags & VM_PFNMAP:
        raise EINVAL("MADV_DONTNEED_LOCKED on a PFN mapping")
    if advice == MADV_FREE and v.file is not None:
        raise EINVAL("MADV_FREE on a file or shared mapping")
    if advice in (MADV_COLD, MADV_PAGEOUT) and v.flags & (VM_LOCKED | VM_PFNMAP | VM_HUGETLB):
        raise EINVAL("MADV_COLD/PAGEOUT on a locked mapping")
    if advice == MADV_REMOVE:
        if v.flags & VM_LOCKED or v.file is None:
            raise EINVAL("MADV_REMOVE needs an unlocked file mapping")
        if not v.flags & VM_SHARED or not v.flags & VM_WRITE:
            raise EACCES("MADV_REMOVE needs a shared writable mapping")


def madvise(mm, addr, length, advice):
    """``do_madvise()``: validate, then apply the VMA-flag advice (splitting and merging).

    EINVAL for unknown advice, an unaligned start or a negative length; ENOMEM when part of the
    range is unmapped (the advice still applies to the mapped parts, except POPULATE which stops
    at the hole); EAGAIN when a split hits max_map_count.  DONTNEED, FREE, WILLNEED, COLD,
    PAGEOUT, POPULATE_* change no VMA: the fault layer does their page work after this returns.
    """
    _check_ints(addr, length, advice)
    if advice not in _MADV_FLAG_EFFECTS and advice not in _MADV_PAGE_ADVICE and advice not in (
            MADV_POPULATE_READ, MADV_POPULATE_WRITE):
        raise EINVAL(f"madvise: unknown advice {advice}")
    if addr & (PAGE_SIZE - 1) or length < 0:
        raise EINVAL("madvise: unaligned start or negative length")
    end = addr + page_align(length)
    if length and end == addr:
        raise EINVAL("madvise: length overflows")
    if end == addr:
        return mm, 0
    if advice in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
        need = VM_WRITE if advice == MADV_POPULATE_WRITE else VM_READ

        def check(v):
            if v.flags & (VM_IO | VM_PFNMAP) or not v.flags & need:
                raise EINVAL("MADV_POPULATE: VMA lacks the permission")

        _walk(mm, addr, end, lambda v: v.flags, check, holes="break")
        return mm, 0
    clear, add = _MADV_FLAG_EFFECTS.get(advice, (0, 0))

    def newflags(v):
        if advice == MADV_MERGEABLE and v.flags & _KSM_EXCLUDED:
            return v.flags
        return (v.flags & ~clear) | add

    try:
        vmas = _walk(mm, addr, end, newflags, lambda v: _madvise_check(advice, v), holes="skip")
    except ENOMEM as err:
        if "max_map_count" in str(err):
            raise _fail(EAGAIN("madvise: split failed"), err.partial) from None
        raise
    return _with(mm, vmas), 0


# ---------------------------------------------------------------------------------------------
# brk (mm/mmap.c), and the hooks of the fault layer: anon_vma_prepare, expand_stack, fork.


def brk(mm, new):
    """``SYSCALL_DEFINE1(brk)``: move the program break; returns the new break, or the old one
    when the request is refused (never an errno).  The heap VMA ends at ``PAGE_ALIGN(brk)``; a
    grown heap merges into the heap VMA only if that VMA could absorb it (not in a fork child,
    whose heap VMA's anon_vma chain is not singular)."""
    _check_ints(new)
    old = mm.brk
    if new < mm.start_brk:
        return mm, old
    newbrk, oldbrk = page_align(new), page_align(old)
    if newbrk == oldbrk:
        return replace(mm, brk=new), new
    vmas = list(mm.vmas)
    if new <= old:
        i = _first_ending_after(vmas, newbrk)
        if i >= len(vmas) or vmas[i].start >= oldbrk:
            return mm, old
        try:
            _unmap(mm, vmas, newbrk, oldbrk)
        except ENOMEM:
            return mm, old
        return _with(mm, vmas, brk=new), new
    length = newbrk - oldbrk
    if newbrk > mm.task_size or not _mlock_future_ok(mm, mm.def_flags, length):
        return mm, old
    nxt = find_vma(mm, oldbrk)
    if nxt is not None and newbrk + PAGE_SIZE > vm_start_gap(nxt.start, nxt.flags, mm.stack_guard_gap):
        return mm, old
    if len(vmas) > mm.max_map_count:
        return mm, old
    try:
        _charge(mm, length >> PAGE_SHIFT)
    except ENOMEM:
        return mm, old
    flags = VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT | mm.def_flags
    i = _first_ending_after(vmas, oldbrk - 1) if oldbrk else 0
    brkvma = vmas[i] if i < len(vmas) and vmas[i].end > mm.start_brk and vmas[i].end == oldbrk else None
    new_vma = Vma(oldbrk, newbrk, flags, None, oldbrk >> PAGE_SHIFT)
    if brkvma is not None and can_merge_after(brkvma, new_vma, src_is_vma=False) and not flags & VM_SPECIAL:
        vmas[i] = _absorb(brkvma, brkvma.start, newbrk)
    else:
        vmas.insert(_first_ending_after(vmas, oldbrk), new_vma)
    return _with(mm, vmas, brk=new), new


def anon_vma_prepare(mm, addr):
    """``__anon_vma_prepare()`` on the first write fault in the VMA containing ``addr``: reuse
    the anon_vma of the next, else the previous, neighbour when ``anon_vma_compatible`` (adjacent,
    same file, flags equal but for R/W/X, contiguous pgoff) and its chain is singular; otherwise
    allocate a new one.  A VMA that has one is left alone."""
    _check_ints(addr)
    i = _first_ending_after(mm.vmas, addr)
    if i >= len(mm.vmas) or mm.vmas[i].start > addr:
        raise EFAULT("anon_vma_prepare: no VMA at the address")
    v = mm.vmas[i]
    if v.anon_vma is not None:
        return mm
    reuse = None
    for a, b, old in ((v, _get(mm.vmas, i + 1), _get(mm.vmas, i + 1)), (_get(mm.vmas, i - 1), v, _get(mm.vmas, i - 1))):
        if old is not None and _anon_vma_compatible(a, b) and old.anon_vma is not None and len(old.chain) == 1:
            reuse = old.anon_vma
            break
    if reuse is None:
        mm, reuse = fresh_id(mm)
    vmas = list(mm.vmas)
    vmas[i] = replace(v, anon_vma=reuse, chain=(reuse,))
    return _with(mm, vmas)


def expand_stack(mm, addr):
    """``expand_stack()``: grow the ``VM_GROWSDOWN`` VMA above ``addr`` down to its page.

    SIGSEGV when there is no VMA above, it is not GROWSDOWN, the address is below
    mmap_min_addr, an accessible non-GROWSDOWN VMA lies within the guard gap below, the stack
    would exceed RLIMIT_STACK, or the growth cannot be charged.  The grown VMA gets an anon_vma
    (``anon_vma_prepare``) and is not merged with anything.
    """
    _check_ints(addr)
    addr = page_down(addr)
    i = _first_ending_after(mm.vmas, addr)
    v = _get(mm.vmas, i)
    if v is not None and v.start <= addr:
        return mm
    if v is None or not v.flags & VM_GROWSDOWN:
        raise SIGSEGV(f"no stack above {addr:#x}")
    if addr < mm.mmap_min_addr:
        raise SIGSEGV("stack growth below mmap_min_addr")
    prev = _get(mm.vmas, i - 1)
    if prev is not None and not stack_gap_ok(addr, prev.end, prev.flags, mm.stack_guard_gap):
        raise SIGSEGV("stack growth into the guard gap")
    grow = (v.start - addr) >> PAGE_SHIFT
    if grow > v.pgoff or v.end - addr > mm.rlimit_stack or not _mlock_future_ok(mm, v.flags, grow << PAGE_SHIFT):
        raise SIGSEGV("stack growth beyond its limits")
    mm = anon_vma_prepare(mm, v.start)
    v = mm.vmas[i]
    if v.flags & VM_ACCOUNT:
        try:
            _charge(mm, grow)
        except ENOMEM:
            raise SIGSEGV("stack growth not chargeable") from None
    vmas = list(mm.vmas)
    vmas[i] = replace(v, start=addr, pgoff=v.pgoff - grow)
    return _with(mm, vmas)


def fork(mm, child_pid):
    """``dup_mmap()``: the child gets every VMA but VM_DONTCOPY ones, unlocked; a VMA with an
    anon_vma gets a new one at the end of a copy of the parent's chain (``anon_vma_fork``), a
    VM_WIPEONFORK VMA none.  Returns ``(parent, child)``; both see the child's commit charge."""
    _check_ints(child_pid)
    if child_pid == mm.pid or child_pid <= 0:
        raise EINVAL("fork: the child needs its own pid")
    child = replace(mm, pid=child_pid, next_id=1, locked_vm=0, def_flags=mm.def_flags & VM_NOHUGEPAGE)
    vmas = []
    for v in mm.vmas:
        if v.flags & VM_DONTCOPY:
            continue
        c = replace(v, flags=v.flags & ~VM_LOCKED_MASK)
        if v.flags & VM_WIPEONFORK or v.anon_vma is None:
            c = replace(c, anon_vma=None, chain=())
        else:
            child, new = fresh_id(child)
            c = replace(c, anon_vma=new, chain=(*v.chain, new))
        vmas.append(c)
    charge = sum(v.pages for v in vmas if v.flags & VM_ACCOUNT)
    seams = frozenset(a.end for a, b in zip(vmas, vmas[1:]) if a.end == b.start and mergeable(a, b))
    child = replace(child, vmas=tuple(vmas), committed_base=committed_as(mm) - _shmem_charge(vmas), seams=seams)
    _charge(mm, charge)
    parent = replace(mm, committed_base=mm.committed_base + charge)
    return parent, child


# ---------------------------------------------------------------------------------------------
# Invariants.


def inv_sorted_disjoint(mm):
    """VMAs are sorted by address and do not overlap."""
    return all(a.end <= b.start for a, b in zip(mm.vmas, mm.vmas[1:]))


def inv_page_aligned_nonempty(mm):
    """Every VMA is page aligned, non-empty and inside [0, TASK_SIZE)."""
    return all(v.start % PAGE_SIZE == 0 and v.end % PAGE_SIZE == 0 and 0 <= v.start < v.end <= mm.task_size
               for v in mm.vmas)


def inv_no_mergeable_neighbours(mm):
    """No two adjacent VMAs that Linux would have merged, except where Linux leaves them: next
    to a VM_GROWSDOWN VMA (stack growth does not merge) and at a seam, a boundary whose VMAs
    became mergeable through a call that does not merge (fork's dup_mmap drops VM_LOCKED and
    WIPEONFORK anon_vmas; MREMAP_DONTUNMAP strips the old VMA) and that no later call removed."""
    for a, b in zip(mm.vmas, mm.vmas[1:]):
        if a.end == b.start and mergeable(a, b):
            if (a.flags | b.flags) & VM_GROWSDOWN or a.end in mm.seams:
                continue
            return False
    return True


def inv_locked_vm(mm):
    """``locked_vm`` is the number of pages in VM_LOCKED VMAs."""
    return mm.locked_vm == _locked_pages(mm.vmas)


def inv_map_count(mm):
    """The number of VMAs never exceeds max_map_count + 1 (do_mmap and brk refuse only when
    map_count is already above the limit, splits when it has reached it)."""
    return len(mm.vmas) <= mm.max_map_count + 1


def inv_anon_chain(mm):
    """A VMA's anon_vma is the last entry of its chain; a VMA without one has an empty chain;
    anonymous pgoff never goes negative."""
    for v in mm.vmas:
        if v.anon_vma is None and v.chain:
            return False
        if v.anon_vma is not None and (not v.chain or v.chain[-1] != v.anon_vma and v.anon_vma not in v.chain):
            return False
        if v.pgoff < 0:
            return False
    return True


def inv_flags_consistent(mm):
    """Every VMA's access bits are within its VM_MAY* bits, VM_SHARED implies VM_MAYSHARE, and
    VM_LOCKONFAULT only comes with VM_LOCKED."""
    for v in mm.vmas:
        if (v.flags & ~(v.flags >> 4)) & VM_ACCESS_FLAGS:
            return False
        if v.flags & VM_SHARED and not v.flags & VM_MAYSHARE:
            return False
        if v.flags & VM_LOCKONFAULT and not v.flags & VM_LOCKED:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Programs: the step format shared with the kernel oracle (offsets and lengths in pages).


def memfd(file_id, size_pages=1 << 20):
    """The FileRef of the program's memfd number ``file_id`` (a shmem file, ``/memfd:f<id>``)."""
    return FileRef(0x4000 + file_id, f"/memfd:f{file_id} (deleted)", "00:01", True, size_pages)


def touch(mm, addr, write):
    """The VMA side of a user access to ``addr``: stack growth below a GROWSDOWN VMA, SIGSEGV
    for an unmapped or forbidden access, and on a write to a private mapping the anon_vma
    (``anon_vma_prepare``).  Returns the new mm; the page work is the fault layer's."""
    v = vma_at(mm, addr)
    if v is None:
        mm = expand_stack(mm, addr)
        v = vma_at(mm, addr)
    if not v.flags & (VM_WRITE if write else VM_READ):
        raise SIGSEGV(f"{'write' if write else 'read'} at {addr:#x}: access error")
    if write and not v.flags & VM_SHARED:
        mm = anon_vma_prepare(mm, addr)
    return mm


def fault(mm, addr, write):
    """:func:`touch` as a transition ``(mm, 0)``, for the state machines."""
    _check_ints(addr)
    return touch(mm, addr, bool(write)), 0


def fork_child(mm, child_pid):
    """:func:`fork`, continuing as the child: ``(child, 0)``."""
    return fork(mm, child_pid)[1], 0


def apply_step(mm, step, base=WINDOW_BASE):
    """Run one program step on the spec: ``(new_mm, ret)`` where ``ret`` is the system call's
    return value (an address as a page offset from ``base`` for mmap/mremap) or the errno name;
    after a failure ``new_mm`` is the state Linux leaves (``error.partial``)."""
    op, *a = step
    pg = lambda n: n << PAGE_SHIFT  # noqa: E731
    try:
        if op == "mmap":
            mm, r = mmap(mm, base + pg(a[0]), pg(a[1]), a[2], a[3])
            return mm, (r - base) >> PAGE_SHIFT
        if op == "mmap_file":
            mm, r = mmap(mm, base + pg(a[0]), pg(a[1]), a[2], a[3], memfd(a[4]), a[5])
            return mm, (r - base) >> PAGE_SHIFT
        if op == "munmap":
            return munmap(mm, base + pg(a[0]), pg(a[1]))
        if op == "mprotect":
            return mprotect(mm, base + pg(a[0]), pg(a[1]), a[2])
        if op == "mremap":
            mm, r = mremap(mm, base + pg(a[0]), pg(a[1]), pg(a[2]), a[3], base + pg(a[4]) if a[3] & MREMAP_FIXED else 0)
            return mm, (r - base) >> PAGE_SHIFT
        if op == "madvise":
            return madvise(mm, base + pg(a[0]), pg(a[1]), a[2])
        if op in ("mlock", "mlock2"):
            return mlock(mm, base + pg(a[0]), pg(a[1]), a[2] if op == "mlock2" else 0)
        if op == "munlock":
            return munlock(mm, base + pg(a[0]), pg(a[1]))
        if op == "touch":
            for p in range(a[0], a[0] + a[1]):
                mm = touch(mm, base + pg(p), a[2])
            return mm, 0
        if op == "brk":
            return brk(mm, mm.brk + a[0])
        raise EINVAL(f"unknown step {op!r}")
    except (EINVAL, ENOMEM, EEXIST, EFAULT, EACCES, EAGAIN, EPERM, EOPNOTSUPP, SIGSEGV) as err:
        partial = getattr(err, "partial", None)
        if op == "touch":
            partial = mm
        return (partial if partial is not None else mm), type(err).__name__
