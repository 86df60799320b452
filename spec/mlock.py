"""Locking memory: ``mlock``, ``mlock2``, ``munlock``, ``mlockall``, ``munlockall``
(mm/mlock.c: ``do_mlock``, ``apply_vma_lock_flags``, ``mlock_fixup``, ``apply_mlockall_flags``;
mm/mmap.c: ``mlock_future_ok``).

Part of :mod:`spec.vma`, which re-exports every public name here.

**What locking does to VMAs.**  ``mlock`` sets ``VM_LOCKED`` (and ``VM_LOCKONFAULT`` for
``mlock2(MLOCK_ONFAULT)``) on every VMA piece of the range, splitting and merging as
``mprotect`` does, and counts the pages in ``mm->locked_vm``.  Without CAP_IPC_LOCK the total
must fit RLIMIT_MEMLOCK (``EPERM`` when the limit is 0, ``ENOMEM`` above it, pages already
locked in the range not counted twice); ``mmap(MAP_LOCKED)``, ``brk``, ``mremap`` and stack
growth ask the same question (:func:`_mlock_future_ok`).  ``mlockall(MCL_FUTURE)`` puts
``VM_LOCKED`` into ``def_flags`` so later mappings are born locked; ``MCL_CURRENT`` locks every
VMA now.  ``VM_SPECIAL`` and hugetlb VMAs are left alone.

**How this model simplifies Linux, and why.**  Only the VMA side: population (faulting every
page in, ``__mm_populate``) is the fault layer's work.  Its one visible effect on the system
call, the ``ENOMEM`` for a PROT_NONE VMA in the range that GUP cannot populate, is reported
here with the locked VMAs attached as ``error.partial``.

>>> from spec.vma import new_mm, mmap, maps
>>> from spec.mman import PROT_READ, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED
>>> mm, a = mmap(new_mm(), 0x200000000000, 4 << 12, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
>>> mm, _ = mlock(mm, a + 0x1000, 0x1000)
>>> len(mm.vmas), mm.locked_vm
(3, 1)
"""

from __future__ import annotations

from dataclasses import replace

from spec.errors import EINVAL, ENOMEM, EPERM
from spec.mman import MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT
from spec.overcommit import total_vm
from spec.vm_area import (
    VM_ACCESS_FLAGS, VM_HUGETLB, VM_IO, VM_LOCKED, VM_LOCKED_MASK, VM_LOCKONFAULT, VM_PFNMAP, VM_SPECIAL,
    _check_ints, _fail, _first_ending_after, page_align, page_down,
)
from spec.vma_merge import _vma_modify, _walk, _with
from spec.zone import PAGE_SHIFT, PAGE_SIZE


# ---------------------------------------------------------------------------------------------
# The limit (mm/mmap.c).


def _mlock_future_ok(mm, flags, nbytes):
    """``mlock_future_ok()``: a locked mapping must fit RLIMIT_MEMLOCK without CAP_IPC_LOCK."""
    if not flags & VM_LOCKED or mm.cap_ipc_lock:
        return True
    return (nbytes >> PAGE_SHIFT) + mm.locked_vm <= mm.rlimit_memlock >> PAGE_SHIFT


# ---------------------------------------------------------------------------------------------
# The system calls (mm/mlock.c).


def _mlock_range(mm, start, end, to_add):
    """``apply_vma_lock_flags()`` with ``mlock_fixup()``: special VMAs are left alone."""

    def newflags(v):
        if v.flags & (VM_SPECIAL | VM_HUGETLB):
            return v.flags
        return (v.flags & ~VM_LOCKED_MASK) | to_add

    return _walk(mm, start, end, newflags)


def mlock(mm, addr, length, flags=0):
    """``do_mlock()`` (mlock and mlock2): lock ``[addr & PAGE_MASK, ...)``.

    EINVAL for unknown flags; EPERM with RLIMIT_MEMLOCK 0 and no CAP_IPC_LOCK; ENOMEM above the
    limit (pages already locked in the range not counted twice), for a hole, or (after locking,
    ``error.partial``) when the range holds a PROT_NONE VMA that is not lock-on-fault, because
    ``__mm_populate`` cannot fault it in.  Population itself is the fault layer's job.
    """
    _check_ints(addr, length, flags)
    if flags & ~MLOCK_ONFAULT or addr < 0 or length < 0:
        raise EINVAL("mlock2: unknown flags")
    if mm.rlimit_memlock == 0 and not mm.cap_ipc_lock:
        raise EPERM("mlock: RLIMIT_MEMLOCK is 0")
    length = page_align(length + (addr & (PAGE_SIZE - 1)))
    start = page_down(addr)
    end = start + length
    limit = mm.rlimit_memlock >> PAGE_SHIFT
    locked = (length >> PAGE_SHIFT) + mm.locked_vm
    if locked > limit and not mm.cap_ipc_lock:
        locked -= sum((min(end, v.end) - max(start, v.start)) >> PAGE_SHIFT
                      for v in mm.vmas if v.flags & VM_LOCKED and v.start < end and v.end > start)
        if locked > limit:
            raise ENOMEM("mlock: above RLIMIT_MEMLOCK")
    if end == start:
        return mm, 0
    add = VM_LOCKED | (VM_LOCKONFAULT if flags & MLOCK_ONFAULT else 0)
    new = _with(mm, _mlock_range(mm, start, end, add))
    for v in new.vmas:
        if v.start < end and v.end > start and _unpopulatable(v):
            # __mm_populate: GUP refuses a PROT_NONE VMA (EFAULT), which mlock reports as ENOMEM
            # (__mlock_posix_error_return); the VMAs stay locked
            raise _fail(ENOMEM("mlock: cannot populate a PROT_NONE range"), new)
    return new, 0


def _unpopulatable(v):
    """``populate_vma_page_range`` fails: an inaccessible VMA that is not lock-on-fault (VM_IO
    and VM_PFNMAP VMAs are skipped)."""
    return not v.flags & (VM_ACCESS_FLAGS | VM_LOCKONFAULT | VM_IO | VM_PFNMAP)


def munlock(mm, addr, length):
    """``munlock()``: clear VM_LOCKED/VM_LOCKONFAULT over the range (ENOMEM for a hole)."""
    _check_ints(addr, length)
    if addr < 0 or length < 0:
        raise EINVAL("munlock: bad range")
    length = page_align(length + (addr & (PAGE_SIZE - 1)))
    start = page_down(addr)
    if length == 0:
        return mm, 0
    return _with(mm, _mlock_range(mm, start, start + length, 0)), 0


def mlockall(mm, flags):
    """``mlockall()``: MCL_FUTURE sets ``def_flags``; MCL_CURRENT locks every VMA (ENOMEM if
    the whole mm exceeds RLIMIT_MEMLOCK without CAP_IPC_LOCK)."""
    _check_ints(flags)
    if not flags or flags & ~(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) or flags == MCL_ONFAULT:
        raise EINVAL("mlockall: bad flags")
    if mm.rlimit_memlock == 0 and not mm.cap_ipc_lock:
        raise EPERM("mlockall: RLIMIT_MEMLOCK is 0")
    if flags & MCL_CURRENT and total_vm(mm) > mm.rlimit_memlock >> PAGE_SHIFT and not mm.cap_ipc_lock:
        raise ENOMEM("mlockall: above RLIMIT_MEMLOCK")
    return _apply_mlockall(mm, flags), 0


def _apply_mlockall(mm, flags):
    def_flags = mm.def_flags & ~VM_LOCKED_MASK
    onfault = VM_LOCKONFAULT if flags & MCL_ONFAULT else 0
    if flags & MCL_FUTURE:
        def_flags |= VM_LOCKED | onfault
    to_add = VM_LOCKED | onfault if flags & MCL_CURRENT else 0
    if not flags & MCL_CURRENT and flags & MCL_FUTURE:
        return replace(mm, def_flags=def_flags)
    vmas = list(mm.vmas)
    i = 0
    while i < len(vmas):
        v = vmas[i]
        new = v.flags if v.flags & (VM_SPECIAL | VM_HUGETLB) else (v.flags & ~VM_LOCKED_MASK) | to_add
        if new != v.flags:
            try:
                _vma_modify(mm, vmas, i, v.start, v.end, new)
            except ENOMEM:
                pass  # apply_mlockall_flags ignores errors
        i = _first_ending_after(vmas, v.end)
    return _with(mm, vmas, def_flags=def_flags)


def munlockall(mm):
    """``munlockall()``: clear def_flags' lock bits and unlock every VMA."""
    return _apply_mlockall(mm, 0), 0
