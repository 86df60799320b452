"""The VMA and the mm: ``struct vm_area_struct``, ``struct mm_struct`` and their flags
(include/linux/mm.h, include/linux/mm_types.h, mm/mmap.c: ``find_vma``, ``vma_lookup``).

Part of :mod:`spec.vma`, which re-exports every public name here.

**What a VMA is.**  A process's address space is 128 TiB of virtual addresses of which it uses
a few hundred scattered ranges.  The kernel describes each range by a *virtual memory area*
(:class:`Vma`): ``[vm_start, vm_end)`` in bytes, page aligned, end exclusive; the access rights
and behaviour flags ``vm_flags`` (the ``VM_*`` constants below, with Linux's bit values); the
backing file and the offset into it in pages (``vm_file``, ``vm_pgoff``; an anonymous private
VMA is born with ``pgoff = start >> PAGE_SHIFT`` so that its neighbours' offsets stay
contiguous); and for anonymous pages the ``anon_vma`` through which reverse mapping finds them,
with the ``anon_vma_chain`` of every anon_vma the VMA's pages may belong to (a fork child's VMA
chains its parent's anon_vma and its own).  ``VM_MAY*`` are the rights ``mprotect`` may turn on:
each sits four bits above its ``VM_*`` right.

**The mm.**  :class:`Mm` is the ``mm_struct``: the VMAs, sorted and disjoint (Linux keeps them in
the maple tree, here a tuple searched by bisection, :func:`find_vma`), and the settings the
system calls read: ``mmap_base`` and ``TASK_SIZE``, ``mmap_min_addr``, the break, the locked
page count and RLIMIT_MEMLOCK, ``max_map_count``, the stack guard gap, the overcommit policy.

**How this model simplifies Linux, and why.**  Identities are ints ``pid << 20 | serial``
(:func:`fresh_id`): an anon_vma id, a shmem inode number.  A fork child allocates from its own
pid, so ids stay unique across ``fork`` without a global counter the fault layer would have to
thread through every process.  The helpers here use plain operators (:func:`page_align`,
:func:`_if`) so the proofs run these very functions on z3 values.

>>> v = Vma(0x1000, 0x5000, VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE, pgoff=1)
>>> v.pages, hex(page_align(0x1001)), vma_at(Mm(vmas=(v,)), 0x4fff) is v
(4, '0x2000', True)
>>> find_vma(Mm(vmas=(v,)), 0x5000) is None                 # nothing ends above 0x5000
True
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from spec.errors import EINVAL
from spec.mman import PROT_EXEC, PROT_READ, PROT_WRITE
from spec.zone import PAGE_SHIFT, PAGE_SIZE


# ---------------------------------------------------------------------------------------------
# vm_flags (include/linux/mm.h)


VM_NONE = 0x0
VM_READ = 0x1
VM_WRITE = 0x2
VM_EXEC = 0x4
VM_SHARED = 0x8
VM_MAYREAD = 0x10
VM_MAYWRITE = 0x20
VM_MAYEXEC = 0x40
VM_MAYSHARE = 0x80
VM_GROWSDOWN = 0x100
VM_PFNMAP = 0x400
VM_LOCKED = 0x2000
VM_IO = 0x4000
VM_SEQ_READ = 0x8000
VM_RAND_READ = 0x10000
VM_DONTCOPY = 0x20000
VM_DONTEXPAND = 0x40000
VM_LOCKONFAULT = 0x80000
VM_ACCOUNT = 0x100000
VM_NORESERVE = 0x200000
VM_HUGETLB = 0x400000
VM_SYNC = 0x800000
VM_ARCH_1 = 0x1000000
VM_WIPEONFORK = 0x2000000
VM_DONTDUMP = 0x4000000
VM_SOFTDIRTY = 0x8000000  # 0 when CONFIG_MEM_SOFT_DIRTY=n (the oracle host); kept for the rule
VM_MIXEDMAP = 0x10000000
VM_HUGEPAGE = 0x20000000
VM_NOHUGEPAGE = 0x40000000
VM_MERGEABLE = 0x80000000
VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP  # include/linux/mm.h
VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC  # include/linux/mm.h
VM_LOCKED_MASK = VM_LOCKED | VM_LOCKONFAULT  # include/linux/mm.h
#: VM_DATA_DEFAULT_FLAGS on x86-64 (arch/x86/include/asm/page_types.h): the brk VMA's flags
VM_DATA_DEFAULT_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
VMFLAG_MNEMONICS = {
    0: "rd", 1: "wr", 2: "ex", 3: "sh", 4: "mr", 5: "mw", 6: "me", 7: "ms", 8: "gd", 10: "pf",
    13: "lo", 14: "io", 15: "sr", 16: "rr", 17: "dc", 18: "de", 19: "lf", 20: "ac", 21: "nr",
    22: "ht", 23: "sf", 24: "ar", 25: "wf", 26: "dd", 27: "sd", 28: "mm", 29: "hg", 30: "nh",
    31: "mg",
}


# ---------------------------------------------------------------------------------------------
# Layout constants and defaults


TASK_SIZE = 0x7FFFFFFFF000  # arch/x86/include/asm/page_64_types.h: (1 << 47) - PAGE_SIZE
MMAP_BASE_NORANDOM = 0x7FFFF7FFF000  # kernel-oracle.md §8: 128 MiB below the stack, no ASLR
STACK_GUARD_GAP = 256 << PAGE_SHIFT  # mm/mmap.c: stack_guard_gap = 256UL << PAGE_SHIFT
DEFAULT_MAX_MAP_COUNT = 65530  # include/linux/mm.h: DEFAULT_MAX_MAP_COUNT (USHRT_MAX - 5)
DEFAULT_MMAP_MIN_ADDR = 4096  # mm/Kconfig: DEFAULT_MMAP_MIN_ADDR (the oracle host's value)
RLIMIT_MEMLOCK_DEFAULT = 8 << 20  # include/uapi/linux/resource.h: MLOCK_LIMIT (8 MiB)
RLIMIT_STACK_DEFAULT = 8 << 20  # include/asm-generic/resource.h: _STK_LIM
OVERCOMMIT_GUESS, OVERCOMMIT_ALWAYS, OVERCOMMIT_NEVER = 0, 1, 2  # include/uapi/linux/mman.h
ADMIN_RESERVE_KBYTES = 1 << 13  # mm/util.c: sysctl_admin_reserve_kbytes (8 MiB)
USER_RESERVE_KBYTES = 1 << 17  # mm/util.c: sysctl_user_reserve_kbytes (128 MiB)
ID_SHIFT = 20  # ids are pid << ID_SHIFT | serial (see fresh_id)
#: where the oracle's guarded windows live (kernel-oracle.md pitfall 1): far below mmap_base
WINDOW_BASE = 0x200000000000


# ---------------------------------------------------------------------------------------------
# The types


class FileRef(NamedTuple):
    """The identity of a mapped file: what ``vm_file`` points to.

    ``size`` is the file's length in pages (a shmem object created by a shared anonymous mapping
    has the mapping's length; the fault layer raises SIGBUS beyond it).
    """

    ino: int
    path: str
    dev: str = "00:00"
    shmem: bool = False
    size: int = 0


@dataclass(frozen=True)
class Vma:
    """One ``vm_area_struct``: ``[start, end)`` in bytes, ``flags`` (VM_*), the file (None for
    private anonymous memory), ``pgoff`` in pages, the anon_vma id and the ids on its
    anon_vma_chain (``len(chain) == 1`` is Linux's "singular chain")."""

    start: int
    end: int
    flags: int
    file: FileRef | None = None
    pgoff: int = 0
    anon_vma: int | None = None
    chain: tuple[int, ...] = ()
    name: str = ""

    @property
    def pages(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT


@dataclass(frozen=True)
class Mm:
    """An ``mm_struct``: the sorted VMAs and the per-process settings the system calls read.

    Defaults are the oracle host's (root with CAP_IPC_LOCK, CAP_SYS_RAWIO and CAP_SYS_ADMIN,
    no ASLR, overcommit mode 0, 4 GiB of RAM, no swap).
    """

    vmas: tuple[Vma, ...] = ()
    pid: int = 1
    next_id: int = 1
    mmap_base: int = MMAP_BASE_NORANDOM
    task_size: int = TASK_SIZE
    mmap_min_addr: int = DEFAULT_MMAP_MIN_ADDR
    start_brk: int = 0x555555559000
    brk: int = 0x555555559000
    start_stack: int = 0
    locked_vm: int = 0
    def_flags: int = 0
    rlimit_memlock: int = RLIMIT_MEMLOCK_DEFAULT
    rlimit_stack: int = RLIMIT_STACK_DEFAULT
    cap_ipc_lock: bool = True
    cap_sys_rawio: bool = True
    cap_sys_admin: bool = True
    max_map_count: int = DEFAULT_MAX_MAP_COUNT
    stack_guard_gap: int = STACK_GUARD_GAP
    overcommit_memory: int = OVERCOMMIT_GUESS
    overcommit_ratio: int = 50
    overcommit_kbytes: int = 0
    totalram_pages: int = 1 << 20
    total_swap_pages: int = 0
    committed_base: int = 0
    seams: frozenset = frozenset()  # boundaries fork or MREMAP_DONTUNMAP left unmerged


def new_mm(**config) -> Mm:
    """An empty address space with the given settings (any :class:`Mm` field but ``vmas``)."""
    mm = Mm(**config)
    if mm.vmas:
        raise EINVAL("new_mm builds an empty address space; use from_maps")
    return mm


def init(config=None) -> Mm:
    """The state machines' constructor: :func:`new_mm` from a dict of settings."""
    return new_mm(**dict(config or {}))


def fresh_id(mm):
    """A new anon_vma id or shmem inode number: ``pid << 20 | serial``."""
    return replace(mm, next_id=mm.next_id + 1), (mm.pid << ID_SHIFT) | mm.next_id


# ---------------------------------------------------------------------------------------------
# Arithmetic: plain operators, so the proofs run these very functions on z3 values.


def _if(cond, a, b):
    """``cond ? a : b``; on z3 values, ``z3.If``."""
    if isinstance(cond, bool):
        return a if cond else b
    import z3  # only reached with symbolic values

    return z3.If(cond, a, b)


def _div(a, b):
    """Floor division of non-negative values, on ints or z3 integers."""
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    return a / b


def page_align(x):
    """``PAGE_ALIGN(x)``: round up to a multiple of PAGE_SIZE.

    ```text
    pre: 0 <= x < 2 ** 62
    post: __return__ % 4096 == 0
    post: x <= __return__ < x + 4096
    ```
    """
    return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def page_down(x):
    """``x & PAGE_MASK``: round down to a multiple of PAGE_SIZE."""
    return x & ~(PAGE_SIZE - 1)


def calc_vm_prot_bits(prot):
    """``calc_vm_prot_bits()``: PROT_READ/WRITE/EXEC are VM_READ/WRITE/EXEC bit for bit."""
    return prot & (PROT_READ | PROT_WRITE | PROT_EXEC)


# ---------------------------------------------------------------------------------------------
# Lookup (find_vma, vma_lookup) and small helpers on the sorted VMA tuple.


def _first_ending_after(vmas, addr):
    """Index of the first VMA with ``end > addr`` (``find_vma``), len(vmas) if none."""
    lo, hi = 0, len(vmas)
    while lo < hi:
        mid = (lo + hi) // 2
        if vmas[mid].end > addr:
            hi = mid
        else:
            lo = mid + 1
    return lo


def find_vma(mm, addr):
    """``find_vma()``: the first VMA with ``end > addr``, or None."""
    i = _first_ending_after(mm.vmas, addr)
    return mm.vmas[i] if i < len(mm.vmas) else None


def vma_at(mm, addr):
    """``vma_lookup()``: the VMA containing ``addr``, or None."""
    v = find_vma(mm, addr)
    return v if v is not None and v.start <= addr else None


def _overlaps(vmas, start, end):
    i = _first_ending_after(vmas, start)
    return i < len(vmas) and vmas[i].start < end


def _get(vmas, i):
    return vmas[i] if 0 <= i < len(vmas) else None


def _check_ints(*values):
    for v in values:
        if type(v) is not int:
            raise EINVAL(f"not an integer: {v!r}")


def _fail(error, partial):
    error.partial = partial
    return error
