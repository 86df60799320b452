"""Overcommit accounting: ``Committed_AS``, ``CommitLimit`` and ``__vm_enough_memory``
(mm/util.c, mm/mmap.c: ``accountable_mapping``, include/linux/mman.h).

Part of :mod:`spec.vma`, which re-exports every public name here.

**The problem.**  Anonymous memory is promised at ``mmap`` time and delivered at fault time.
Linux counts the promises in ``vm_committed_as`` (``Committed_AS`` in ``/proc/meminfo``) so that
in strict mode it can refuse a mapping before the pages run out.  A private writable mapping is
*accountable* (:func:`_accountable`): its pages are charged when it is created or made
writable and carry ``VM_ACCOUNT``, unless ``MAP_NORESERVE`` (ignored in mode 2).  A shared
anonymous mapping charges its shmem object once.

**The policy** (``vm.overcommit_memory``, :func:`vm_enough_memory`): mode 0 (guess) refuses
only a single request larger than RAM + swap; mode 1 (always) never refuses; mode 2 (never)
refuses once ``Committed_AS`` would reach :func:`commit_limit` (``overcommit_kbytes`` or
``overcommit_ratio`` percent of RAM, plus swap) minus the admin reserve (for a caller without
CAP_SYS_ADMIN) and the user reserve (the smaller of 128 MiB and 1/32 of the caller's size).

**How this model simplifies Linux, and why.**  One mm: the rest of the system is the number
``committed_base``.  No hugetlb pool, so the limit is RAM and swap only.  The shmem charge
stays with this mm while one of its VMAs maps the object (Linux keeps it with the object until
its last mapping in any process goes).  :func:`commit_limit` and :func:`vm_enough_memory` use
plain operators, so the proofs run them on z3 integers.

>>> commit_limit(totalram_pages=1 << 20, total_swap_pages=0, overcommit_ratio=50,
...              overcommit_kbytes=0)                            # half of 4 GiB, in pages
524288
>>> from spec.vm_area import OVERCOMMIT_NEVER
>>> vm_enough_memory(OVERCOMMIT_NEVER, 10, committed=524000, limit=524288, total_vm=0,
...                  totalram=1 << 20, swap=0, cap_sys_admin=True)
True
"""

from __future__ import annotations


from spec.errors import ENOMEM
from spec.vm_area import (
    ADMIN_RESERVE_KBYTES, OVERCOMMIT_ALWAYS, OVERCOMMIT_GUESS, USER_RESERVE_KBYTES, VM_ACCOUNT, VM_NORESERVE,
    VM_SHARED, VM_WRITE, _div, _if,
)
from spec.zone import PAGE_SHIFT, PAGE_SIZE


# ---------------------------------------------------------------------------------------------
# The policy (mm/util.c): plain operators, so the proofs run these on z3 integers.


def commit_limit(totalram_pages, total_swap_pages, overcommit_ratio, overcommit_kbytes):
    """``vm_commit_limit()`` in pages: ``overcommit_kbytes`` if set, else ``ratio`` percent of
    RAM, plus swap (no hugetlb pool here).

    ```text
    pre: 0 <= totalram_pages < 2 ** 40 and 0 <= total_swap_pages < 2 ** 40
    pre: 0 <= overcommit_ratio <= 100 and overcommit_kbytes == 0
    post: total_swap_pages <= __return__ <= totalram_pages + total_swap_pages
    ```
    """
    allowed = _if(overcommit_kbytes != 0, _div(overcommit_kbytes, PAGE_SIZE >> 10),
                  _div(totalram_pages * overcommit_ratio, 100))
    return allowed + total_swap_pages


def vm_enough_memory(mode, pages, committed, limit, total_vm, totalram, swap, cap_sys_admin):
    """``__vm_enough_memory()``: may ``pages`` more be committed on top of ``committed``?
    (``mode`` and ``cap_sys_admin`` are concrete; the counts may be z3 integers.)"""
    if mode == OVERCOMMIT_ALWAYS:
        return True
    if mode == OVERCOMMIT_GUESS:
        return pages <= totalram + swap
    allowed = limit
    if not cap_sys_admin:
        allowed = allowed - (ADMIN_RESERVE_KBYTES >> (PAGE_SHIFT - 10))
    reserve = USER_RESERVE_KBYTES >> (PAGE_SHIFT - 10)
    allowed = allowed - _if(_div(total_vm, 32) < reserve, _div(total_vm, 32), reserve)
    return committed + pages < allowed


# ---------------------------------------------------------------------------------------------
# What an mm has committed, and charging more.


def _accountable(file, flags):
    """``accountable_mapping()``: private writable, not NORESERVE."""
    return (flags & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE


def total_vm(mm):
    """``mm->total_vm``: pages mapped."""
    return sum(v.pages for v in mm.vmas)


def _shmem_charge(vmas):
    files = {v.file for v in vmas if v.file is not None and v.file.shmem and not v.flags & VM_NORESERVE}
    return sum(f.size for f in files)


def committed_as(mm):
    """``vm_committed_as`` in pages: the base plus this mm's VM_ACCOUNT VMAs and shmem objects."""
    own = sum(v.pages for v in mm.vmas if v.flags & VM_ACCOUNT)
    return mm.committed_base + own + _shmem_charge(mm.vmas)


def _charge(mm, pages):
    """``security_vm_enough_memory_mm()``: ENOMEM when the policy refuses ``pages`` more."""
    if pages <= 0:
        return
    limit = commit_limit(mm.totalram_pages, mm.total_swap_pages, mm.overcommit_ratio, mm.overcommit_kbytes)
    if not vm_enough_memory(mm.overcommit_memory, pages, committed_as(mm), limit, total_vm(mm),
                            mm.totalram_pages, mm.total_swap_pages, mm.cap_sys_admin):
        raise ENOMEM(f"__vm_enough_memory: {pages} pages refused (mode {mm.overcommit_memory})")


def meminfo(mm):
    """The ``/proc/meminfo`` lines this mechanism owns: CommitLimit and Committed_AS."""
    limit = commit_limit(mm.totalram_pages, mm.total_swap_pages, mm.overcommit_ratio, mm.overcommit_kbytes)
    kb = PAGE_SIZE >> 10
    return f"CommitLimit:    {limit * kb:8d} kB\nCommitted_AS:   {committed_as(mm) * kb:8d} kB\n"
