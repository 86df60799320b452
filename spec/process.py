"""Processes, frames and what they hold: the state the fault handler works on.

This is the first half of :mod:`spec.fault` (read that module's docstring first): the constants
and the arithmetic of faults (``access_error``, the PTE protection, the reuse predicate, the
pagemap entry), the :class:`System` of processes with their page tables, the frames with their
reference and map counts, the long-term pins, the content model (what each process must read
back), the invariants over all of it, and the views Linux prints (``maps``, ``smaps``,
``pagemap``, ``status``, ``meminfo``).  Every name here is also reachable as ``spec.fault.X``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from immutables import Map

from spec import paging, pte
from spec import vma as vmas
from spec.errors import EINVAL
from spec.paging import Access, PagingConfig
from spec.vma import VM_EXEC, VM_LOCKED, VM_MAYWRITE, VM_READ, VM_SHARED, VM_WRITE
from spec.zone import PAGE_SHIFT, PAGE_SIZE

# --- constants -------------------------------------------------------------------------------
# include/uapi/asm-generic/siginfo.h
SEGV_MAPERR = 1  # address not mapped to object
SEGV_ACCERR = 2  # invalid permissions for mapped object
BUS_ADRERR = 2  # non-existent physical address (a file page beyond EOF)
# mm/memory.c: fault_around_bytes = rounddown_pow_of_two(65536)
FAULT_AROUND_PAGES = 65536 // PAGE_SIZE
# arch/x86/include/asm/pgtable_types.h: PTRS_PER_PTE
PTRS_PER_PTE = 512
# fs/proc/task_mmu.c: PSS_SHIFT (fixed-point Pss)
PSS_SHIFT = 12
# fs/proc/task_mmu.c: PM_* bits of a pagemap entry
PM_PFRAME_MASK = paging.PM_PFRAME_MASK
PM_MMAP_EXCLUSIVE = paging.PM_MMAP_EXCLUSIVE
PM_FILE = paging.PM_FILE
PM_PRESENT = paging.PM_PRESENT
#: where the configured files' inode numbers start, far above the ``pid << 20 | serial``
#: numbers :func:`spec.vma.fresh_id` gives the shmem files of shared anonymous mappings
FILE_INO_BASE = 1 << 40
#: the kernel-only access the model uses to look at a PTE (pagemap and the fault handler read
#: entries as the kernel does, not as the CPU would for user space)
KERNEL_LOOK = Access("r", user=False, smap=False)


# --- arithmetic: plain operators, so the proofs run these on z3 values -------------------------


def _z3(*xs) -> bool:
    """Is any of ``xs`` a z3 expression (only the proofs pass one)?"""
    return any(type(x).__module__.startswith("z3") for x in xs)


def _ite(cond, a, b):
    """``a if cond else b``; for a symbolic (z3) condition, ``z3.If``."""
    if not _z3(cond):
        return a if cond else b
    import z3  # noqa: PLC0415 - a symbolic condition comes only from the proofs

    return z3.If(cond, a, b)


def _and(a, b):
    """``a and b`` for Python and z3 booleans."""
    if not _z3(a, b):
        return bool(a and b)
    import z3  # noqa: PLC0415

    return z3.And(a, b)


def _or(a, b):
    """``a or b`` for Python and z3 booleans."""
    if not _z3(a, b):
        return bool(a or b)
    import z3  # noqa: PLC0415

    return z3.Or(a, b)


def access_error(write: bool, flags: int):
    """``access_error()`` (arch/x86/mm/fault.c) for a fault on a present VMA: a write needs
    ``VM_WRITE``; a read needs any of ``VM_READ | VM_WRITE | VM_EXEC`` (x86 cannot map a page
    writable or executable without making it readable).

    Contract:

    ```text
    pre: 0 <= flags < 2 ** 32
    post: __return__ == ((flags & 2 == 0) if write else (flags & 7 == 0))
    ```

    >>> access_error(True, VM_READ), access_error(False, VM_WRITE), access_error(False, 0)
    (True, False, True)
    """
    return _ite(write, flags & VM_WRITE == 0, flags & (VM_READ | VM_WRITE | VM_EXEC) == 0)


def pgprot(flags: int, writable: bool):
    """The x86 ``pgprot`` bits of a PTE in a VMA with ``flags`` (``vm_get_page_prot`` and
    ``protection_map``), writable or not: user-accessible unless the VMA has no access at all
    (the model's ``PAGE_NONE``), NX unless ``VM_EXEC``, RW when ``writable``.

    Contract:

    ```text
    pre: 0 <= flags < 2 ** 32
    post: ((__return__ & 2) != 0) == writable
    post: ((__return__ & 4) != 0) == (flags & 7 != 0)
    post: __return__ >= 0
    ```

    >>> hex(pgprot(VM_READ | VM_WRITE, True)), hex(pgprot(VM_READ | VM_EXEC, False)), hex(pgprot(0, False))
    ('0x8000000000000006', '0x4', '0x8000000000000000')
    """
    access = (flags | (flags >> 1) | (flags >> 2)) & 1  # VM_READ, VM_WRITE, VM_EXEC: bits 0..2
    no_exec = ((flags >> 2) & 1) ^ 1
    return access * pte._PAGE_USER | no_exec * pte._PAGE_NX | _ite(writable, pte._PAGE_RW, 0)


def can_reuse_anon(exclusive: bool, refcount: int):
    """``wp_can_reuse_anon_folio()`` with the ``PageAnonExclusive`` shortcut of
    ``do_wp_page()``: a write fault on a write-protected anonymous page reuses it iff the page
    is marked exclusive, or nothing but this one mapping holds a reference to it (no other PTE,
    no pin).

    Contract:

    ```text
    pre: refcount >= 1
    post: __return__ == (exclusive or refcount == 1)
    ```
    """
    return _or(exclusive, refcount == 1)


def needs_cow_for_dma(pinned: bool, cow_mapping: bool):
    """``folio_needs_cow_for_dma()``: at fork, an anonymous page in a COW mapping that may be
    pinned must be copied for the child instead of shared."""
    return _and(pinned, cow_mapping)


def is_cow_mapping(flags):
    """``is_cow_mapping()``: private and possibly writable."""
    return flags & (VM_SHARED | VM_MAYWRITE) == VM_MAYWRITE


def encode_pagemap(present: int, exclusive: int, file: int, pfn: int):
    """A ``/proc/PID/pagemap`` entry (``make_pme``): PFN in bits 0..54, exclusive bit 56,
    file/shared-anon bit 61, present bit 63.

    Contract:

    ```text
    pre: 0 <= present <= 1 and 0 <= exclusive <= 1 and 0 <= file <= 1
    pre: 0 <= pfn < 2 ** 55
    post: decode_pagemap(__return__) == (present, exclusive, file, pfn)
    post: 0 <= __return__ < 2 ** 64
    ```

    >>> hex(encode_pagemap(1, 1, 0, 0x1234))
    '0x8100000000001234'
    """
    return (present << 63) | (exclusive << 56) | (file << 61) | (pfn & PM_PFRAME_MASK)


def decode_pagemap(entry):
    """(present, exclusive, file, pfn) of a pagemap entry."""
    return (entry >> 63) & 1, (entry >> 56) & 1, (entry >> 61) & 1, entry & PM_PFRAME_MASK


# --- state ---------------------------------------------------------------------------------


class File(NamedTuple):
    """A file that can be mapped: its inode, its name in maps, its size in pages, whether it
    lives in shmem (memfd, shared anonymous memory), and whether it is the shmem file of a
    shared anonymous mapping (dropped with its last mapping)."""

    ino: int
    path: str
    pages: int
    shmem: bool = True
    anon: bool = False

    def ref(self) -> vmas.FileRef:
        return vmas.FileRef(self.ino, self.path, "00:01" if self.shmem else "08:01", self.shmem, self.pages)


class Frame(NamedTuple):
    """A data frame in use: anonymous or page cache, its counts and flags, and its contents."""

    kind: str  # "anon" or "file"
    refcount: int  # page_ref_count: PTEs + pins (+ 1 for the page cache)
    mapcount: int  # PTEs mapping it
    exclusive: bool = False  # PageAnonExclusive
    dirty: bool = True
    data: int = 0
    ino: int = 0  # page-cache pages: the file and the index in it
    index: int = 0
    cached: bool = False  # held by the page cache
    lazyfree: bool = False  # MADV_FREE'd and clean


class Pin(NamedTuple):
    """A long-term GUP pin (``FOLL_PIN | FOLL_LONGTERM``) of the page at ``addr`` of ``pid``.
    ``coherent`` stays true until the pinner itself unmaps or zaps that page: until then the
    pin must refer to the very page the pinner maps there."""

    pid: int
    addr: int
    pfn: int
    write: bool
    coherent: bool = True


class Proc(NamedTuple):
    """A process: its address space (VMAs), its page-table root and its fault counters."""

    mm: vmas.Mm
    root: int
    minflt: int = 0
    majflt: int = 0


class FaultConfig(NamedTuple):
    """A machine of ``pages`` frames, the files that exist ((pages, shmem) each), and the
    settings of every process's address space (passed to :func:`spec.vma.new_mm`)."""

    pages: int = 256
    files: tuple = ((8, True), (8, False))
    mm: tuple = ()


@dataclass(frozen=True)
class System:
    """Processes with pages: see the module docstring."""

    paging: paging.PagingState
    procs: Map  # pid -> Proc
    frames: Map  # pfn -> Frame (the zero page is not in it)
    cache: Map  # (ino, index) -> pfn
    files: Map  # ino -> File
    zero_pfn: int
    pins: tuple  # Pin, oldest first
    mem: Map  # (pid, vpn) -> value: what the process last wrote to its private page
    filedata: Map  # (ino, index) -> value: what the file page holds (absent: 0)
    next_pid: int
    config: FaultConfig


def _machine(pages: int):
    return paging.toy_machine(pages)


def init(config: FaultConfig = FaultConfig()) -> System:  # noqa: B008 - an immutable default
    """Boot: the buddy allocator and page tables of a ``config.pages``-frame machine, the zero
    page, the files, and process 1 with an empty address space."""
    if not isinstance(config, FaultConfig):
        raise EINVAL(f"not a FaultConfig: {config!r}")
    pg = paging.init(PagingConfig("x86-64-4level", _machine(config.pages), 0))
    pg, zero = paging.alloc_data(pg, 0)  # the zero page: reserved at boot, never freed
    pg, root = paging.new_mm(pg)
    files = Map()
    for i, (pages, shmem) in enumerate(config.files):
        ino = FILE_INO_BASE + i
        path = f"/memfd:f{i} (deleted)" if shmem else f"/data/f{i}"
        files = files.set(ino, File(ino, path, pages, shmem))
    mm = vmas.new_mm(pid=1, **dict(config.mm))
    return System(pg, Map({1: Proc(mm, root)}), Map(), Map(), files, zero, (), Map(), Map(), 2, config)


# --- small helpers -------------------------------------------------------------------------


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _proc(s: System, pid) -> Proc:
    if not _int(pid) or pid not in s.procs:
        raise EINVAL(f"no process {pid!r}")
    return s.procs[pid]


def _set_proc(s: System, pid: int, **kw) -> System:
    return replace(s, procs=s.procs.set(pid, s.procs[pid]._replace(**kw)))


def _count_fault(s: System, pid: int, major: bool) -> System:
    p = s.procs[pid]
    return _set_proc(s, pid, majflt=p.majflt + 1) if major else _set_proc(s, pid, minflt=p.minflt + 1)


def _page(addr: int) -> int:
    return addr & ~(PAGE_SIZE - 1)


def pte_at(s: System, pid: int, addr: int):
    """The PTE of ``addr`` in ``pid``'s page table: ``(pfn, writable, raw)``, or None."""
    w = paging.walk(s.paging, s.procs[pid].root, _page(addr), KERNEL_LOOK)
    if w.fault:
        return None
    raw = w.steps[-1].raw
    return w.paddr >> PAGE_SHIFT, bool(raw & pte._PAGE_RW), raw


def _ptes(s: System, pid: int, start: int, end: int):
    """Every present PTE of ``pid`` in [start, end): (addr, pfn, raw), ascending."""
    if end <= start:
        return []
    found = paging._overlapping_leaves(s.paging, s.procs[pid].root, start, end - start)
    return sorted((va, raw >> 12 & ((1 << 40) - 1), raw) for _, _, _, raw, va in found)


def _install(s: System, pid: int, addr: int, pfn: int, prot: int) -> System:
    pg, _ = paging.map(s.paging, s.procs[pid].root, addr, pfn, PAGE_SIZE, prot)
    return replace(s, paging=pg)


def _clear(s: System, pid: int, addr: int) -> System:
    pg, _ = paging.unmap(s.paging, s.procs[pid].root, addr, PAGE_SIZE)
    return replace(s, paging=pg)


def _get_frame(s: System, pfn: int, delta_ref: int, delta_map: int, **kw) -> System:
    """Adjust a frame's counts (the zero page has none); free it when nothing holds it."""
    if pfn == s.zero_pfn:
        return s
    f = s.frames[pfn]
    f = f._replace(refcount=f.refcount + delta_ref, mapcount=f.mapcount + delta_map, **kw)
    if f.refcount == 0:
        pg, _ = paging.free_data(s.paging, pfn, 0)
        return replace(s, paging=pg, frames=s.frames.delete(pfn))
    return replace(s, frames=s.frames.set(pfn, f))


def _alloc(s: System, frame: Frame) -> tuple[System, int]:
    pg, pfn = paging.alloc_data(s.paging, 0)
    return replace(s, paging=pg, frames=s.frames.set(pfn, frame)), pfn


def _vma_file(s: System, v: vmas.Vma) -> File | None:
    return None if v.file is None else s.files.get(v.file.ino)


def _file_index(v: vmas.Vma, addr: int) -> int:
    return v.pgoff + ((addr - v.start) >> PAGE_SHIFT)


def pte_writable(flags, shmem, write_fault, anon_exclusive):
    """Is a PTE installed in a VMA with ``flags`` writable?  Private: only an exclusive
    anonymous page (``maybe_mkwrite`` after a write fault, ``can_change_pte_writable`` on
    mprotect); shared: shmem always (no dirty tracking), a regular file only once written
    (``wp_page_shared`` after the write-notify fault).  Never without ``VM_WRITE``."""
    shared = flags & VM_SHARED != 0
    return _and(flags & VM_WRITE != 0, _ite(shared, _or(shmem, write_fault), anon_exclusive))


# --- the content model -----------------------------------------------------------------------


def expected(s: System, pid: int, addr: int) -> int:
    """What ``pid`` must read at ``addr`` by the meaning of the writes so far: its own last
    private write there, else the file's contents (a file mapping), else 0."""
    key = (pid, addr >> PAGE_SHIFT)
    if key in s.mem:
        return s.mem[key]
    v = vmas.vma_at(s.procs[pid].mm, addr)
    if v is not None and v.file is not None:
        return s.filedata.get((v.file.ino, _file_index(v, addr)), 0)
    return 0


def _model_write(s: System, pid: int, v: vmas.Vma, addr: int, value: int) -> System:
    if v.flags & VM_SHARED:
        return replace(s, filedata=s.filedata.set((v.file.ino, _file_index(v, addr)), value))
    return replace(s, mem=s.mem.set((pid, addr >> PAGE_SHIFT), value))


def _model_drop(s: System, pid: int, start: int, end: int) -> System:
    mem = s.mem
    for key in [k for k in mem if k[0] == pid and start >> PAGE_SHIFT <= k[1] < end >> PAGE_SHIFT]:
        mem = mem.delete(key)
    return replace(s, mem=mem) if mem is not s.mem else s


def _align_up(x: int) -> int:
    return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


# --- invariants ------------------------------------------------------------------------------


def _all_ptes(s: System):
    for pid in s.procs:
        for va, pfn, raw in _ptes(s, pid, 0, 1 << 47):
            yield pid, va, pfn, raw


def inv_ptes_inside_vmas(s: System) -> bool:
    """Every present PTE lies inside a VMA of its process and grants no more than the VMA allows."""
    for pid, va, _, raw in _all_ptes(s):
        v = vmas.vma_at(s.procs[pid].mm, va)
        if v is None:
            return False
        if raw & pte._PAGE_RW and v.flags & VM_WRITE == 0:
            return False
        if raw & pte._PAGE_USER and v.flags & (VM_READ | VM_WRITE | VM_EXEC) == 0:
            return False
    return True


def inv_counts_exact(s: System) -> bool:
    """Each frame's mapcount equals the PTEs mapping it and its refcount the PTEs, pins and page-cache reference holding it."""
    maps: dict[int, int] = {}
    for _, _, pfn, _ in _all_ptes(s):
        maps[pfn] = maps.get(pfn, 0) + 1
    pins: dict[int, int] = {}
    for p in s.pins:
        pins[p.pfn] = pins.get(p.pfn, 0) + 1
    for pfn, f in s.frames.items():
        if f.mapcount != maps.get(pfn, 0) or f.refcount != f.mapcount + pins.get(pfn, 0) + f.cached or f.refcount < 1:
            return False
    return all(pfn == s.zero_pfn or pfn in s.frames for pfn in list(maps) + list(pins))


def inv_frames_allocated(s: System) -> bool:
    """Every frame in use, and the zero page, is an order-0 allocation of the buddy allocator."""
    alloc = s.paging.buddy.allocated
    return all(pfn in alloc and alloc[pfn].order == 0 for pfn in [*s.frames, s.zero_pfn])


def inv_page_cache(s: System) -> bool:
    """The page cache maps (file, index) to a cached file frame of that index, inside the file."""
    cached = [pfn for pfn, f in s.frames.items() if f.cached]
    return len(cached) == len(s.cache) and all(
        s.frames.get(pfn, Frame("anon", 0, 0))[6:8] == key and key[1] < s.files[key[0]].pages and s.frames[pfn].cached
        for key, pfn in s.cache.items())


def inv_writable_means_exclusive(s: System) -> bool:
    """A writable PTE of a private mapping maps an anonymous page marked exclusive and mapped once; the zero page is never writable."""
    for pid, va, pfn, raw in _all_ptes(s):
        if not raw & pte._PAGE_RW:
            continue
        if pfn == s.zero_pfn:
            return False
        v = vmas.vma_at(s.procs[pid].mm, va)
        f = s.frames[pfn]
        if not v.flags & VM_SHARED and not (f.kind == "anon" and f.exclusive and f.mapcount == 1):
            return False
    return True


def inv_exclusive_mapped_once(s: System) -> bool:
    """A page marked PageAnonExclusive is mapped by at most one PTE."""
    return all(f.mapcount <= 1 for f in s.frames.values() if f.kind == "anon" and f.exclusive)


def inv_cow_isolation(s: System) -> bool:
    """Every mapped page holds what the content model says its process must read there: private writes stay private, shared writes reach every sharer."""
    for pid, va, pfn, _ in _all_ptes(s):
        data = 0 if pfn == s.zero_pfn else s.frames[pfn].data
        if data != expected(s, pid, va):
            return False
    return all(s.frames[pfn].data == s.filedata.get(key, 0) for key, pfn in s.cache.items())


def inv_pins_coherent(s: System) -> bool:
    """A coherent pin refers to the very page its process maps at the pinned address."""
    for p in s.pins:
        if p.pid not in s.procs:
            return False
        cur = pte_at(s, p.pid, p.addr)
        if p.coherent and (cur is None or cur[0] != p.pfn):
            return False
    return True


#: spec.vma's invariants that hold for every address space; ``inv_no_mergeable_neighbours``
#: does not survive fork, which clears VM_LOCKED in the child without merging the VMAs that
#: become alike (``dup_mmap`` copies VMAs one by one and never merges)
_VMA_INVARIANTS = tuple(f for n, f in vars(vmas).items()
                        if n.startswith("inv_") and callable(f) and n != "inv_no_mergeable_neighbours")


def inv_vmas(s: System) -> bool:
    """Every process's VMA list satisfies the invariants of spec.vma that fork preserves."""
    checks = _VMA_INVARIANTS
    return all(f(p.mm) for p in s.procs.values() for f in checks)


# --- views -----------------------------------------------------------------------------------


def maps(s: System, pid: int) -> str:
    """``/proc/PID/maps`` of ``pid``."""
    return vmas.maps(_proc(s, pid).mm)


def pfn_class(s: System, pid: int, addr: int) -> str:
    """``none``, ``zero`` or ``P<pfn>`` for the page at ``addr``."""
    cur = pte_at(s, pid, addr)
    if cur is None:
        return "none"
    return "zero" if cur[0] == s.zero_pfn else f"P{cur[0]}"


def pagemap_entry(s: System, pid: int, addr: int) -> int:
    """The 64-bit ``/proc/PID/pagemap`` entry of ``addr`` (read with CAP_SYS_ADMIN): from the
    real PTE through :func:`spec.paging.pagemap_entry`, with the file bit for file and shared
    anonymous (shmem) pages."""
    p = _proc(s, pid)
    cur = pte_at(s, pid, addr)
    f = None if cur is None else s.frames.get(cur[0])
    return paging.pagemap_entry(s.paging, p.root, _page(addr), file=f is not None and f.kind == "file")


def pagemap(s: System, pid: int, start: int, pages: int) -> list[tuple[int, int, int, str]]:
    """(present, exclusive, file, pfn class) for ``pages`` pages from ``start``: the program
    format's pagemap observation (pfn classes as concrete ``P<pfn>``; the oracle renames
    them in first-seen order)."""
    out = []
    for i in range(pages):
        va = start + i * PAGE_SIZE
        present, excl, file, _ = decode_pagemap(pagemap_entry(s, pid, va))
        out.append((present, excl, file, pfn_class(s, pid, va)))
    return out


def _kb_line(name: str, kb: int) -> str:
    return f"{name:<16}{kb:8d} kB\n"


def smaps_pss(mapcount):
    """``smaps_account``: a page's share of Pss in ``PSS_SHIFT`` fixed point.  A page mapped
    once (refcount 1, or a precise mapcount below 2) counts whole and as *private*; a page
    mapped ``mapcount >= 2`` times counts ``PAGE_SIZE / mapcount`` and as *shared*.

    Contract:

    ```text
    pre: 1 <= mapcount <= 1024
    post: __return__ * mapcount <= 4096 << 12
    post: __return__ * mapcount > (4096 << 12) - mapcount
    ```

    >>> smaps_pss(1) >> PSS_SHIFT, smaps_pss(3), (smaps_pss(3) * 3) >> PSS_SHIFT
    (4096, 5592405, 4095)
    """
    return _ite(mapcount >= 2, (PAGE_SIZE << PSS_SHIFT) // mapcount, PAGE_SIZE << PSS_SHIFT)


def _vma_usage(s: System, pid: int, v: vmas.Vma) -> dict[str, int]:
    """``smaps_pte_entry`` -> ``smaps_account`` over a VMA, in bytes (Pss in ``PSS_SHIFT``
    fixed point): the zero page is not counted (``vm_normal_page`` is NULL for it); Pss
    divides by the mapcount (:func:`smaps_pss`); a page is *shared* when its mapcount is 2 or
    more, else *private*; it is *dirty* when its PTE's Dirty bit or the page's own dirty flag
    is set (``pte_dirty(ptent) || folio_test_dirty(folio)``); an anonymous page is *lazily
    free* after ``MADV_FREE`` while neither is set (Linux clears the page's swapbacked flag,
    which LazyFree tests, from a per-CPU batch that drains later: the model is the drained state)."""
    u = dict(rss=0, pss=0, pss_dirty=0, sc=0, sd=0, pc=0, pd=0, anon=0, lazy=0, locked=0)
    for _, pfn, raw in _ptes(s, pid, v.start, v.end):
        f = s.frames.get(pfn)
        if f is None:  # the zero page is not a normal page: not counted at all
            continue
        u["rss"] += PAGE_SIZE
        pss = smaps_pss(f.mapcount)
        u["pss"] += pss
        dirty = raw & pte._PAGE_DIRTY != 0 or f.dirty
        if dirty:
            u["pss_dirty"] += pss
        if f.mapcount >= 2:
            u["sd" if dirty else "sc"] += PAGE_SIZE
        else:
            u["pd" if dirty else "pc"] += PAGE_SIZE
        if f.kind == "anon":
            u["anon"] += PAGE_SIZE
            if f.lazyfree and not dirty:
                u["lazy"] += PAGE_SIZE
        if v.flags & VM_LOCKED:
            u["locked"] += pss
    return u


def smaps(s: System, pid: int) -> str:
    """``/proc/PID/smaps`` of ``pid`` (``show_smap``), field for field as 6.18 prints it on a
    machine without protection keys."""
    out = []
    mm = _proc(s, pid).mm
    lines = vmas.maps(mm).splitlines(keepends=True)
    for line, v in zip(lines, mm.vmas, strict=True):
        u = _vma_usage(s, pid, v)
        out.append(line)
        for name, value in (("Size:", v.end - v.start), ("KernelPageSize:", PAGE_SIZE), ("MMUPageSize:", PAGE_SIZE),
                            ("Rss:", u["rss"]), ("Pss:", u["pss"] >> PSS_SHIFT),
                            ("Pss_Dirty:", u["pss_dirty"] >> PSS_SHIFT), ("Shared_Clean:", u["sc"]),
                            ("Shared_Dirty:", u["sd"]), ("Private_Clean:", u["pc"]), ("Private_Dirty:", u["pd"]),
                            ("Referenced:", u["rss"]), ("Anonymous:", u["anon"]), ("KSM:", 0),
                            ("LazyFree:", u["lazy"]), ("AnonHugePages:", 0), ("ShmemPmdMapped:", 0),
                            ("FilePmdMapped:", 0), ("Shared_Hugetlb:", 0), ("Private_Hugetlb:", 0), ("Swap:", 0),
                            ("SwapPss:", 0), ("Locked:", u["locked"] >> PSS_SHIFT)):
            out.append(_kb_line(name, value >> 10))
        out.append(f"THPeligible:    {0:8d}\n")
        out.append(vmas.smaps_vmflags_line(v.flags))
    return "".join(out)


def _rss(s: System, pid: int) -> tuple[int, int, int]:
    """``MM_ANONPAGES``, ``MM_FILEPAGES``, ``MM_SHMEMPAGES`` of ``pid`` (zero page not counted)."""
    anon = file = shmem = 0
    for _, pfn, _ in _ptes(s, pid, 0, 1 << 47):
        f = s.frames.get(pfn)
        if f is None:
            continue
        if f.kind == "anon":
            anon += 1
        elif s.files[f.ino].shmem:
            shmem += 1
        else:
            file += 1
    return anon, file, shmem


def status(s: System, pid: int) -> str:
    """The ``VmLck``, ``VmRSS``, ``RssAnon``, ``RssFile`` and ``RssShmem`` lines of
    ``/proc/PID/status`` (``task_mem``)."""
    p = _proc(s, pid)
    anon, file, shmem = _rss(s, pid)
    k = PAGE_SIZE >> 10
    rows = (("VmLck:", p.mm.locked_vm * k), ("VmRSS:", (anon + file + shmem) * k), ("RssAnon:", anon * k),
            ("RssFile:", file * k), ("RssShmem:", shmem * k))
    return "".join(f"{name}\t{kb:8d} kB\n" for name, kb in rows)


def meminfo(s: System) -> str:
    """The ``/proc/meminfo`` lines these pages own: ``AnonPages`` (mapped anonymous pages),
    ``Mapped`` (mapped page-cache pages), ``Shmem`` (shmem pages in the cache)."""
    k = PAGE_SIZE >> 10
    anon = sum(1 for f in s.frames.values() if f.kind == "anon" and f.mapcount)
    mapped = sum(1 for f in s.frames.values() if f.kind == "file" and f.mapcount)
    shmem = sum(1 for f in s.frames.values() if f.kind == "file" and f.cached and s.files[f.ino].shmem)
    return _kb_line("AnonPages:", anon * k) + _kb_line("Mapped:", mapped * k) + _kb_line("Shmem:", shmem * k)


def render(s: System) -> str:
    """A counterexample: each process's maps with the pfn class and value of each mapped page,
    its fault counts, then the pins."""
    out = []
    for pid, p in sorted(s.procs.items()):
        out.append(f"pid {pid}: minflt {p.minflt} majflt {p.majflt}\n")
        out.append(vmas.maps(p.mm))
        for va, pfn, raw in _ptes(s, pid, 0, 1 << 47):
            data = 0 if pfn == s.zero_pfn else s.frames[pfn].data
            f = s.frames.get(pfn)
            extra = "" if f is None else f" ref {f.refcount} map {f.mapcount}{' excl' if f.exclusive else ''}"
            rw = "rw" if raw & pte._PAGE_RW else "ro"
            out.append(f"  {va:#x} {pfn_class(s, pid, va)} {rw} = {data} (expect {expected(s, pid, va)}){extra}\n")
    for p in s.pins:
        out.append(f"pin pid {p.pid} {p.addr:#x} -> P{p.pfn}{' write' if p.write else ''}"
                   f"{'' if p.coherent else ' (detached)'}\n")
    return "".join(out)
