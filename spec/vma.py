"""Virtual memory areas: the layout of one address space (mm/vma.c, mm/mmap.c, mm/mprotect.c,
mm/mremap.c, mm/madvise.c, mm/mlock.c, mm/util.c).

**The problem.**  A process's address space is 128 TiB of virtual addresses of which it uses a
few hundred scattered ranges: the program, its heap, shared libraries, thread stacks, anonymous
arenas, mapped files.  The kernel describes each range by a *virtual memory area*
(``struct vm_area_struct``): ``[vm_start, vm_end)``, the access rights and behaviour flags
(``vm_flags``), the backing file and the offset into it (``vm_file``, ``vm_pgoff``), and for
anonymous pages the ``anon_vma`` through which reverse mapping finds them.  The VMAs of an ``mm``
never overlap, are page aligned and are kept sorted in the maple tree, so that a page fault
finds the VMA of an address in O(log n) (:func:`find_vma`).

**Merging.**  Every ``mmap``, ``mprotect``, ``madvise`` or ``mlock`` may cut a VMA into pieces
(``split_vma``), and Linux works hard to glue compatible neighbours back together so the tree
stays small (``vma_merge_new_range`` for a new range, ``vma_merge_existing_range`` for a
modified one).  Two adjacent VMAs merge iff (:func:`can_merge_after` / :func:`can_merge_before`)

1. their flags are equal ignoring ``VM_SOFTDIRTY``, and neither is ``VM_SPECIAL``;
2. they map the same file, or both are anonymous (each ``MAP_SHARED|MAP_ANONYMOUS`` mapping is
   its own shmem file, so those never merge);
3. their ``vm_pgoff`` is contiguous (anonymous private VMAs get ``addr >> PAGE_SHIFT`` at birth);
4. their anon_vmas are compatible (:func:`anon_compatible`, ``is_mergeable_anon_vma``): equal,
   or one of them NULL and the other's ``anon_vma_chain`` a single entry.  A VMA a child
   inherited with an anon_vma has a longer chain (its own anon_vma and its parent's), so it
   never absorbs an anon_vma-less neighbour: this is why a forked child's ``brk`` makes a second
   ``[heap]`` VMA.

When both neighbours could merge but their anon_vmas differ from each other, the range merges
with the previous VMA ("prev first"), and failing that with the next.  On the first write fault
a VMA gets an anon_vma (:func:`anon_vma_prepare`): it reuses that of the next, else the
previous, neighbour if that neighbour differs only in R/W/X, is adjacent with contiguous pgoff
and has a single-entry chain (``find_mergeable_anon_vma``), else a new one.

**Placement.**  Without ``MAP_FIXED`` the kernel picks the address (:func:`get_unmapped_area`):
a page-rounded-down hint if ``[hint, hint+len)`` is free and ends below the next VMA's stack
guard gap; otherwise the *top* of the highest free gap below ``mmap_base`` that fits (top-down
first fit, ``unmapped_area_topdown``), where a gap below a ``VM_GROWSDOWN`` VMA ends
``stack_guard_gap`` (256 pages) below it.  An anonymous private request without a hint whose
length is a multiple of 2 MiB is placed 2 MiB aligned (``thp_get_unmapped_area``: it searches
for ``len + 2 MiB`` and aligns inside that).  If nothing fits, a bottom-up search from
``TASK_SIZE / 3`` follows, then ``ENOMEM``.

**Overcommit.**  A private writable mapping is *accountable*: its pages are charged to
``Committed_AS`` (``VM_ACCOUNT``) unless ``MAP_NORESERVE`` (ignored in mode 2).
``__vm_enough_memory`` refuses in mode 0 only a single request larger than RAM + swap, in mode 1
never, and in mode 2 once ``Committed_AS`` would reach ``CommitLimit`` (:func:`commit_limit`)
minus the admin and user reserves (:func:`vm_enough_memory`).

**How this model simplifies Linux, and why.**

- One ``mm``; other processes appear only through ``committed_base`` (their share of
  ``Committed_AS``).  Identities are ints ``pid << 20 | serial`` (:func:`fresh_id`): an
  anon_vma id, a shmem inode number; a fork child allocates from its own pid, so ids stay unique
  across ``fork`` without a global counter.
- No mempolicies, userfaultfd contexts, anon VMA names (``CONFIG_ANON_VMA_NAME=n`` on the
  oracle host), ``vm_ops->close`` hooks, hugetlb (``MAP_HUGETLB`` is refused with ``EINVAL``),
  PKEYs, sealing, ``MAP_DROPPABLE``, shadow stacks, ``MAP_SYNC``, or ``PROT_GROWSDOWN``.
- ``anon_vma_clone``'s reuse of an ancestor anon_vma that no VMA uses any more is not
  modelled: a fork child always gets a fresh anon_vma at the end of its chain.
- ``[heap]`` and ``[stack]`` are not stored names: as in ``show_map_vma`` the heap label goes to
  an anonymous VMA overlapping ``[start_brk, brk]`` and the stack label to the VMA containing
  ``start_stack``; :attr:`Vma.name` holds other labels (``[vdso]`` …).
- The shared-anonymous shmem charge stays with this ``mm`` while one of its VMAs maps the file
  (Linux keeps it with the file until the last mapping in any process goes).
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

from bisect import bisect_right
from dataclasses import dataclass, replace
from typing import NamedTuple

from spec.errors import EACCES, EAGAIN, EEXIST, EFAULT, EINVAL, ENOMEM, EOPNOTSUPP, EPERM, SIGSEGV
from spec.mman import (
    MADV_COLD, MADV_COLLAPSE, MADV_DODUMP, MADV_DOFORK, MADV_DONTDUMP, MADV_DONTFORK,
    MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE, MADV_HUGEPAGE, MADV_KEEPONFORK,
    MADV_MERGEABLE, MADV_NOHUGEPAGE, MADV_NORMAL, MADV_PAGEOUT, MADV_POPULATE_READ,
    MADV_POPULATE_WRITE, MADV_RANDOM, MADV_REMOVE, MADV_SEQUENTIAL, MADV_UNMERGEABLE,
    MADV_WILLNEED, MADV_WIPEONFORK, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN, MAP_HUGETLB, MAP_LOCKED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED,
    MAP_SHARED_VALIDATE, MAP_STACK, MAP_TYPE, MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT,
    MLOCK_ONFAULT, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, PROT_EXEC, PROT_READ,
    PROT_SEM, PROT_WRITE, LEGACY_MAP_MASK,
)
from spec.zone import PAGE_SHIFT, PAGE_SIZE

# --- vm_flags (include/linux/mm.h) -----------------------------------------------------------
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

# fs/proc/task_mmu.c: show_smap_vma_flags(), mnemonics by bit number
VMFLAG_MNEMONICS = {
    0: "rd", 1: "wr", 2: "ex", 3: "sh", 4: "mr", 5: "mw", 6: "me", 7: "ms", 8: "gd", 10: "pf",
    13: "lo", 14: "io", 15: "sr", 16: "rr", 17: "dc", 18: "de", 19: "lf", 20: "ac", 21: "nr",
    22: "ht", 23: "sf", 24: "ar", 25: "wf", 26: "dd", 27: "sd", 28: "mm", 29: "hg", 30: "nh",
    31: "mg",
}

# --- layout constants ------------------------------------------------------------------------
TASK_SIZE = 0x7FFFFFFFF000  # arch/x86/include/asm/page_64_types.h: (1 << 47) - PAGE_SIZE
MMAP_BASE_NORANDOM = 0x7FFFF7FFF000  # kernel-oracle.md §8: 128 MiB below the stack, no ASLR
PMD_SIZE = 1 << 21  # 2 MiB: THP alignment of large anonymous mappings (mm/huge_memory.c)
STACK_GUARD_GAP = 256 << PAGE_SHIFT  # mm/mmap.c: stack_guard_gap = 256UL << PAGE_SHIFT
DEFAULT_MAX_MAP_COUNT = 65530  # include/linux/mm.h: DEFAULT_MAX_MAP_COUNT (USHRT_MAX - 5)
DEFAULT_MMAP_MIN_ADDR = 4096  # mm/Kconfig: DEFAULT_MMAP_MIN_ADDR (the oracle host's value)
RLIMIT_MEMLOCK_DEFAULT = 8 << 20  # include/uapi/linux/resource.h: MLOCK_LIMIT (8 MiB)
RLIMIT_STACK_DEFAULT = 8 << 20  # include/asm-generic/resource.h: _STK_LIM
OVERCOMMIT_GUESS, OVERCOMMIT_ALWAYS, OVERCOMMIT_NEVER = 0, 1, 2  # include/uapi/linux/mman.h
ADMIN_RESERVE_KBYTES = 1 << 13  # mm/util.c: sysctl_admin_reserve_kbytes (8 MiB)
USER_RESERVE_KBYTES = 1 << 17  # mm/util.c: sysctl_user_reserve_kbytes (128 MiB)
ID_SHIFT = 20  # ids are pid << ID_SHIFT | serial (see fresh_id)


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


def calc_vm_prot_bits(prot):
    """``calc_vm_prot_bits()``: PROT_READ/WRITE/EXEC are VM_READ/WRITE/EXEC bit for bit."""
    return prot & (PROT_READ | PROT_WRITE | PROT_EXEC)


# ---------------------------------------------------------------------------------------------
# The merge predicates (mm/vma.c).


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


# ---------------------------------------------------------------------------------------------
# Helpers on the VMA list.  Lists are copied, edited and frozen back into tuples.


def fresh_id(mm):
    """A new anon_vma id or shmem inode number: ``pid << 20 | serial``."""
    return replace(mm, next_id=mm.next_id + 1), (mm.pid << ID_SHIFT) | mm.next_id


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


def _locked_pages(vmas):
    return sum(v.pages for v in vmas if v.flags & VM_LOCKED)


def _charge(mm, pages):
    """``security_vm_enough_memory_mm()``: ENOMEM when the policy refuses ``pages`` more."""
    if pages <= 0:
        return
    limit = commit_limit(mm.totalram_pages, mm.total_swap_pages, mm.overcommit_ratio, mm.overcommit_kbytes)
    if not vm_enough_memory(mm.overcommit_memory, pages, committed_as(mm), limit, total_vm(mm),
                            mm.totalram_pages, mm.total_swap_pages, mm.cap_sys_admin):
        raise ENOMEM(f"__vm_enough_memory: {pages} pages refused (mode {mm.overcommit_memory})")


def _mlock_future_ok(mm, flags, nbytes):
    """``mlock_future_ok()``: a locked mapping must fit RLIMIT_MEMLOCK without CAP_IPC_LOCK."""
    if not flags & VM_LOCKED or mm.cap_ipc_lock:
        return True
    return (nbytes >> PAGE_SHIFT) + mm.locked_vm <= mm.rlimit_memlock >> PAGE_SHIFT


def _fail(error, partial):
    error.partial = partial
    return error


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


def _check_ints(*values):
    for v in values:
        if type(v) is not int:
            raise EINVAL(f"not an integer: {v!r}")


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


# ---------------------------------------------------------------------------------------------
# Placement (mm/mmap.c, arch/x86/kernel/sys_x86_64.c).


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
    addr, i = page_align(mm.task_size // 3), 0
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


# ---------------------------------------------------------------------------------------------
# Transitions.


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


def _get(vmas, i):
    return vmas[i] if 0 <= i < len(vmas) else None


def _anon_vma_compatible(a, b):
    """``anon_vma_compatible()`` (mm/rmap.c): ``a`` directly below ``b``, flags equal but for
    R/W/X and soft-dirty, same file, contiguous pgoff."""
    return (
        a is not None and b is not None and a.end == b.start and a.file == b.file
        and not (a.flags ^ b.flags) & ~(VM_ACCESS_FLAGS | VM_SOFTDIRTY)
        and b.pgoff == a.pgoff + ((b.start - a.start) >> PAGE_SHIFT)
    )


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
# Views.


def perms(vma):
    """The ``rwxp`` column of maps."""
    f = vma.flags
    return (("r" if f & VM_READ else "-") + ("w" if f & VM_WRITE else "-")
            + ("x" if f & VM_EXEC else "-") + ("s" if f & VM_MAYSHARE else "p"))


def _label(mm, v):
    if v.file is not None:
        return v.file.path
    if v.name:
        return v.name
    if v.start <= mm.brk and v.end >= mm.start_brk:
        return "[heap]"
    if mm.start_stack and v.start <= mm.start_stack <= v.end:
        return "[stack]"
    return ""


def maps_line(mm, v):
    """One ``/proc/PID/maps`` line (``show_map_vma``), without the newline."""
    if v.file is not None:
        dev, ino, off = v.file.dev, v.file.ino, v.pgoff << PAGE_SHIFT
    else:
        dev, ino, off = "00:00", 0, 0
    head = f"{v.start:08x}-{v.end:08x} {perms(v)} {off:08x} {dev} {ino} "
    name = _label(mm, v)
    return head + " " * (max(72 - len(head), 0) + 1) + name if name else head


def maps(mm):
    """``/proc/PID/maps`` of this mm, byte for byte."""
    return "".join(maps_line(mm, v) + "\n" for v in mm.vmas)


def vmflags(flags):
    """The smaps ``VmFlags:`` mnemonics of ``flags``, in bit order (``show_smap_vma_flags``)."""
    return " ".join(VMFLAG_MNEMONICS[b] for b in range(32) if flags >> b & 1 and b in VMFLAG_MNEMONICS)


def smaps_vmflags_line(flags):
    """The whole smaps line: ``VmFlags: rd wr mr mw me ac \\n`` (each mnemonic followed by a
    space)."""
    return "VmFlags: " + "".join(m + " " for m in vmflags(flags).split()) + "\n"


def meminfo(mm):
    """The ``/proc/meminfo`` lines this mechanism owns: CommitLimit and Committed_AS."""
    limit = commit_limit(mm.totalram_pages, mm.total_swap_pages, mm.overcommit_ratio, mm.overcommit_kbytes)
    kb = PAGE_SIZE >> 10
    return f"CommitLimit:    {limit * kb:8d} kB\nCommitted_AS:   {committed_as(mm) * kb:8d} kB\n"


def render(mm):
    """maps, plus what maps does not show: the anon_vma and flags of each VMA."""
    lines = [maps_line(mm, v) + f"  # av={v.anon_vma} chain={len(v.chain)} {vmflags(v.flags)}" for v in mm.vmas]
    return "\n".join(lines) + f"\nlocked_vm={mm.locked_vm} brk={mm.brk:#x}\n"


# ---------------------------------------------------------------------------------------------
# Programs: the step format shared with the kernel oracle (offsets and lengths in pages).

#: where the oracle's guarded windows live (kernel-oracle.md pitfall 1): far below mmap_base
WINDOW_BASE = 0x200000000000


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


def window_maps(mm, base=WINDOW_BASE, npages=512):
    """The VMAs inside ``[base, base + npages pages)`` as the oracle records them:
    ``(start_page, end_page, perms, kind)`` with kind ``anon``, ``shmem`` or ``file``."""
    end = base + (npages << PAGE_SHIFT)
    out = []
    for v in mm.vmas:
        if v.end <= base or v.start >= end:
            continue
        kind = "anon" if v.file is None else ("shmem" if v.file.path == "/dev/zero (deleted)" else "file")
        s, e = max(v.start, base), min(v.end, end)
        out.append(((s - base) >> PAGE_SHIFT, (e - base) >> PAGE_SHIFT, perms(v), kind))
    return out
