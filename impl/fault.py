"""Processes with pages on arrays: the fast twin of :mod:`spec.fault`.

:class:`FaultSystem` keeps the per-frame state in numpy arrays indexed by pfn (``refcount``,
``mapcount``, a flag byte with the frame's kind, ``PageAnonExclusive``, dirty, page-cache and
lazy-free bits, the contents, the file and index of a page-cache page), the PTEs in
:class:`impl.paging.PageTables` (whose buddy allocator hands out every frame, so pfns are the
spec's), and the VMAs of each process as :class:`spec.vma.Mm` values driven by
:mod:`spec.vma`'s own transitions (the VMA layer is the vma mechanism's; this module owns
pages).  Every operation is the spec's, with the same results and typed errors; a failed
operation restores a snapshot, so it changes nothing.  Where Linux fails part way and leaves
the work before the failure done (``MADV_POPULATE_*``, ``mlock``, ``mprotect`` and
``madvise`` over a hole …: see :mod:`spec.fault`), the error carries that state as
``error.partial``, a :class:`spec.fault.System`, exactly as the spec's error does, and the
object is still put back.  :meth:`FaultSystem.run` runs a whole program in the kernel oracle's
step format and, like the kernel, goes on from the state a failure part way leaves.

:meth:`FaultSystem.touch_many` faults a batch of addresses: it asks the page-table walk (one
numba kernel over the whole batch) which addresses need a fault, then serves runs of
first-touch faults on private anonymous memory in bulk (frames from the buddy's
``alloc_many``, PTEs with ``map_many``, allocated in the order the page-by-page loop would),
and everything else through the single-fault path.

>>> from spec.mman import MAP_ANONYMOUS, MAP_PRIVATE
>>> fs = FaultSystem()
>>> a = fs.mmap(1, 0, 8192, 3, MAP_PRIVATE | MAP_ANONYMOUS)
>>> fs.touch(1, a, True), fs.procs[1].minflt
('anon', 1)
"""

from __future__ import annotations

import numpy as np
from immutables import Map

from impl import bugs
from impl.bugs import Defect
from impl.paging import PageTables
from spec import pte
from spec import vma as vmas
from spec.errors import EFAULT, EINVAL, ENOMEM, SIGBUS, SIGSEGV, MMError
from spec.fault import (
    BUS_ADRERR,
    FAULT_AROUND_PAGES,
    FILE_INO_BASE,
    GONE,
    PTRS_PER_PTE,
    SEGV_ACCERR,
    SEGV_MAPERR,
    WINDOW_BASE,
    FaultConfig,
    File,
    Frame,
    Pin,
    Proc,
    System,
    access_error,
    can_reuse_anon,
    gup_write,
    is_cow_mapping,
    locked_throughout,
    mlock_posix_error,
    needs_cow_for_dma,
    pgprot,
    populate_refused,
    pte_writable,
)
from spec.mman import (
    MADV_DONTNEED,
    MADV_DONTNEED_LOCKED,
    MADV_FREE,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_NONBLOCK,
    MAP_POPULATE,
    MCL_CURRENT,
    MCL_ONFAULT,
    MREMAP_DONTUNMAP,
)
from spec.paging import Access, PagingConfig, toy_machine
from spec.vma import (
    VM_EXEC,
    VM_GROWSDOWN,
    VM_IO,
    VM_LOCKED,
    VM_LOCKONFAULT,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_WIPEONFORK,
    VM_WRITE,
)
from spec.zone import PAGE_SHIFT, PAGE_SIZE

__all__ = ["FaultSystem", "DEFECTS"]

_CATCH = "mmspec.mechanisms.fault:catch"


def _align_up(x: int) -> int:
    return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
DEFECTS = (
    Defect(
        "fault-dirty-cow",
        "fault",
        "Dirty COW: a FOLL_FORCE write to a private read-only file mapping, retried after the COW "
        "fault without FOLL_WRITE (while MADV_DONTNEED zapped the fresh copy), finds the page-cache "
        "page and writes into it: the file changes for every process that maps or reads it.",
        "CVE-2016-5195; fixed by Linux commit 19be0eaffa3a 'mm: remove gup_flags FOLL_WRITE games "
        "from __get_user_pages()' (v4.9)",
        _CATCH,
    ),
    Defect(
        "fault-fork-shares-pinned-page",
        "fault",
        "The CVE-2020-29374 shape: fork shares a long-term-pinned anonymous page with the child "
        "instead of copying it (no folio_needs_cow_for_dma()); the parent's next write copies, so "
        "the pin (and the device behind it) keeps the old page, which the child still maps: the "
        "child reads what the parent later writes through the pin.",
        "CVE-2020-29374; fixed by Linux commits 70e806e4e645 'mm: Do early cow for pinned pages "
        "during fork() for ptes' (v5.9) and the PageAnonExclusive series (v5.19)",
        _CATCH,
    ),
    Defect(
        "fault-fork-no-wrprotect",
        "fault",
        "copy_present_pte() forgets ptep_set_wrprotect(): after fork the parent's PTE of a private "
        "page stays writable while the child maps the same page, so the parent's next write lands "
        "in the child's memory without a COW fault.",
        "teaching defect (the rule of copy_present_pte() in mm/memory.c)",
        _CATCH,
    ),
)

# flag bits of a frame
F_USED, F_FILE, F_EXCL, F_DIRTY, F_CACHED, F_LAZY = 1, 2, 4, 8, 16, 32
KERNEL_LOOK = Access("r", user=False, smap=False)
#: marks an error raised part way: the object holds the state Linux leaves (see _atomic)
_HERE = object()


def _here(err: MMError) -> MMError:
    err.partial = _HERE
    return err


class _Proc:
    __slots__ = ("mm", "root", "minflt", "majflt")

    def __init__(self, mm, root, minflt=0, majflt=0):
        self.mm, self.root, self.minflt, self.majflt = mm, root, minflt, majflt

    def copy(self):
        return _Proc(self.mm, self.root, self.minflt, self.majflt)


class FaultSystem:
    """The processes, frames and page cache of :mod:`spec.fault`, mutable and on arrays."""

    def __init__(self, config: FaultConfig = FaultConfig()):  # noqa: B008 - an immutable default
        if not isinstance(config, FaultConfig):
            raise EINVAL(f"not a FaultConfig: {config!r}")
        self.config = config
        self.pt = PageTables(PagingConfig("x86-64-4level", toy_machine(config.pages), 0))
        n = self.pt.end_pfn
        self.refcount = np.zeros(n, dtype=np.int64)
        self.mapcount = np.zeros(n, dtype=np.int64)
        self.flags = np.zeros(n, dtype=np.uint8)
        self.data = np.zeros(n, dtype=np.int64)
        self.ino = np.zeros(n, dtype=np.int64)
        self.index = np.zeros(n, dtype=np.int64)
        self.zero_pfn = self.pt.alloc_data(0)
        root = self.pt.new_mm()
        self.files: dict[int, File] = {}
        for i, (pages, shmem) in enumerate(config.files):
            ino = FILE_INO_BASE + i
            self.files[ino] = File(ino, f"/memfd:f{i} (deleted)" if shmem else f"/data/f{i}", pages, shmem)
        self.procs: dict[int, _Proc] = {1: _Proc(vmas.new_mm(pid=1, **dict(config.mm)), root)}
        self.cache: dict[tuple[int, int], int] = {}
        self.pins: list[Pin] = []
        self.mem: dict[tuple[int, int], int] = {}
        self.filedata: dict[tuple[int, int], int] = {}
        self.next_pid = 2
        self._keep_partial = False

    # -- snapshots: a failed operation changes nothing ------------------------------------------

    def _snapshot(self):
        return (self.pt._snapshot(), list(self.pt.mms), self.refcount.copy(), self.mapcount.copy(), self.flags.copy(),
                self.data.copy(), self.ino.copy(), self.index.copy(), dict(self.files),
                {p: q.copy() for p, q in self.procs.items()}, dict(self.cache), list(self.pins), dict(self.mem),
                dict(self.filedata), self.next_pid)

    def _restore(self, snap) -> None:
        (pts, mms, self.refcount, self.mapcount, self.flags, self.data, self.ino, self.index, self.files, self.procs,
         self.cache, self.pins, self.mem, self.filedata, self.next_pid) = snap
        self.pt._restore(pts)
        self.pt.mms = mms

    def _room(self) -> int:
        from impl.buddy import Z_FREE

        return int(self.pt.buddy.zone_table[:, Z_FREE].sum())

    def _atomic(self, fn, *args, need: int | None = None):
        """Run ``fn``; on an error put everything back.  A fault (``need`` = the most frames
        it may take) on a machine with room to spare can fail only before it changes a page
        (SIGSEGV, SIGBUS, EFAULT), after at most growing a stack VMA: then only the processes
        are saved, not the arrays.  An error raised part way (:func:`_here`: the object now
        holds the state Linux leaves) gets that state as ``error.partial`` (a
        :class:`spec.fault.System`) before the object is put back -- or, inside :meth:`run`,
        the object keeps it."""
        light = need is not None and self._room() > need + 64
        snap = ({p: q.copy() for p, q in self.procs.items()}, list(self.pins)) if light else self._snapshot()
        try:
            return fn(*args)
        except BaseException as err:
            if getattr(err, "partial", None) is _HERE:
                if self._keep_partial:
                    err.partial = None
                    raise
                err.partial = self.abstract()
            if light:
                self.procs, self.pins = snap
            else:
                self._restore(snap)
            raise

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _int(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    def _proc(self, pid) -> _Proc:
        if not self._int(pid) or pid not in self.procs:
            raise EINVAL(f"no process {pid!r}")
        return self.procs[pid]

    def _pte(self, pid: int, addr: int):
        """(pfn, writable, raw) of the PTE at ``addr``, or None."""
        entry, _ = self.pt._entry_at(self.procs[pid].root, addr & ~(PAGE_SIZE - 1), 1)
        if entry is None:
            return None
        raw = self.pt._get(*entry)
        if not raw & pte._PAGE_PRESENT:
            return None
        return (raw >> 12) & ((1 << 40) - 1), bool(raw & pte._PAGE_RW), raw

    def _ptes(self, pid: int, start: int, end: int):
        if end <= start:
            return []
        found = self.pt._overlapping_leaves(self.procs[pid].root, start, end - start)
        return sorted((va, (raw >> 12) & ((1 << 40) - 1), raw) for _, _, _, raw, va in found)

    def _install(self, pid: int, addr: int, pfn: int, prot: int) -> None:
        self.pt.map(self.procs[pid].root, addr, pfn, PAGE_SIZE, prot)

    def _clear(self, pid: int, addr: int) -> None:
        self.pt.unmap(self.procs[pid].root, addr, PAGE_SIZE)

    def _put_frame(self, pfn: int, dref: int, dmap: int) -> None:
        if pfn == self.zero_pfn:
            return
        self.refcount[pfn] += dref
        self.mapcount[pfn] += dmap
        if self.refcount[pfn] == 0:
            self.flags[pfn] = 0
            self.data[pfn] = self.ino[pfn] = self.index[pfn] = 0
            self.pt.buddy.free_pages(pfn, 0)

    def _alloc(self, flags: int, data: int, refcount: int, mapcount: int, ino: int = 0, index: int = 0) -> int:
        pfn = self.pt.alloc_data(0)
        self.flags[pfn] = F_USED | flags
        self.data[pfn], self.refcount[pfn], self.mapcount[pfn] = data, refcount, mapcount
        self.ino[pfn], self.index[pfn] = ino, index
        return pfn

    def _is_anon(self, pfn: int) -> bool:
        return pfn != self.zero_pfn and self.flags[pfn] & (F_USED | F_FILE) == F_USED

    def _set_flag(self, pfn: int, bit: int, on: bool) -> None:
        self.flags[pfn] = (self.flags[pfn] | bit) if on else (self.flags[pfn] & (0xFF ^ bit))

    def _file_of(self, v) -> File | None:
        return None if v.file is None else self.files.get(v.file.ino)

    @staticmethod
    def _index_in(v, addr: int) -> int:
        return v.pgoff + ((addr - v.start) >> PAGE_SHIFT)

    def _count(self, pid: int, major: bool) -> None:
        p = self.procs[pid]
        if major:
            p.majflt += 1
        else:
            p.minflt += 1

    def _register_files(self, mm) -> None:
        for v in mm.vmas:
            if v.file is not None and v.file.ino not in self.files:
                pages = v.file.size or (v.end - v.start) >> PAGE_SHIFT
                self.files[v.file.ino] = File(v.file.ino, v.file.path, pages, True, True)

    def _model_write(self, pid: int, v, addr: int, value: int) -> None:
        if v.flags & VM_SHARED:
            self.filedata[(v.file.ino, self._index_in(v, addr))] = value
        else:
            self.mem[(pid, addr >> PAGE_SHIFT)] = value

    def _model_drop(self, pid: int, start: int, end: int) -> None:
        lo, hi = start >> PAGE_SHIFT, end >> PAGE_SHIFT
        if hi - lo < len(self.mem):
            for vpn in range(lo, hi):
                self.mem.pop((pid, vpn), None)
        else:
            for k in [k for k in self.mem if k[0] == pid and lo <= k[1] < hi]:
                del self.mem[k]

    @staticmethod
    def _signal(kind, code: int, addr: int, why: str) -> MMError:
        err = kind(f"{why} at {addr:#x}")
        err.si_code, err.si_addr = code, addr
        return err

    # -- the fault handler ----------------------------------------------------------------------

    def _find_vma(self, pid: int, addr: int):
        p = self.procs[pid]
        v = vmas.find_vma(p.mm, addr)
        if v is None or (v.start > addr and not v.flags & VM_GROWSDOWN):
            raise self._signal(SIGSEGV, SEGV_MAPERR, addr, "no VMA")
        if v.start > addr:
            try:
                mm = vmas.expand_stack(p.mm, addr)
            except MMError as exc:
                raise self._signal(SIGSEGV, SEGV_MAPERR, addr, "stack cannot grow") from exc
            p.mm = mm
            v = vmas.vma_at(mm, addr)
        return v

    def _anon_vma(self, pid: int, addr: int):
        p = self.procs[pid]
        v = vmas.vma_at(p.mm, addr)
        if v.anon_vma is None:
            p.mm = vmas.anon_vma_prepare(p.mm, addr)
            v = vmas.vma_at(p.mm, addr)
        return v

    def _new_anon(self, pid: int, addr: int, data: int, vflags: int, mkwrite: bool, dirty: bool = True) -> None:
        pfn = self._alloc(F_EXCL | (F_DIRTY if dirty else 0), data, 1, 1)
        self._install(pid, addr, pfn, pgprot(vflags, mkwrite and vflags & VM_WRITE != 0))

    def _cache_page(self, f: File, index: int):
        key = (f.ino, index)
        if key in self.cache:
            return self.cache[key], False
        pfn = self._alloc(F_FILE | F_CACHED, self.filedata.get(key, 0), 1, 0, f.ino, index)
        self.cache[key] = pfn
        return pfn, not f.shmem

    def _map_cached(self, pid: int, v, f: File, addr: int, pfn: int, write: bool) -> None:
        self._install(pid, addr, pfn, pgprot(v.flags, pte_writable(v.flags, f.shmem, write, False)))
        self._put_frame(pfn, 1, 1)
        if write and v.flags & VM_SHARED:
            self._set_flag(pfn, F_DIRTY, True)

    def _fault_around(self, pid: int, v, f: File, addr: int) -> None:
        pte_off = (addr >> PAGE_SHIFT) % PTRS_PER_PTE
        vma_off = (addr - v.start) >> PAGE_SHIFT
        start = max(pte_off - pte_off % FAULT_AROUND_PAGES, pte_off - min(pte_off, vma_off))
        end = min(start + FAULT_AROUND_PAGES, PTRS_PER_PTE, pte_off + ((v.end - v.start) >> PAGE_SHIFT) - vma_off)
        for off in range(start, end):
            va = addr + ((off - pte_off) << PAGE_SHIFT)
            index = self._index_in(v, va)
            if index >= f.pages or (f.ino, index) not in self.cache or self._pte(pid, va) is not None:
                continue
            self._map_cached(pid, v, f, va, self.cache[(f.ino, index)], False)

    def _do_fault(self, pid: int, v, addr: int, write: bool, forced: bool):
        f = self._file_of(v)
        index = self._index_in(v, addr)
        if index >= f.pages:
            raise self._signal(SIGBUS, BUS_ADRERR, addr, f"page {index} is beyond the end of {f.path}")
        if not write:
            self._fault_around(pid, v, f, addr)
            if self._pte(pid, addr) is not None:
                return "fault-around", False
            pfn, major = self._cache_page(f, index)
            self._map_cached(pid, v, f, addr, pfn, False)
            return "file", major
        if v.flags & VM_SHARED:
            pfn, major = self._cache_page(f, index)
            self._map_cached(pid, v, f, addr, pfn, True)
            return "shared", major
        pfn, major = self._cache_page(f, index)
        v = self._anon_vma(pid, addr)
        if forced and "fault-dirty-cow" in bugs.active_names():
            # the retry without FOLL_WRITE found the page-cache page: map it and write there
            self._map_cached(pid, v, f, addr, pfn, False)
            return "file", major
        self._new_anon(pid, addr, int(self.data[pfn]), v.flags, True)
        return "file-cow", major

    def _do_wp_page(self, pid: int, v, addr: int, pfn: int, forced: bool, unshare: bool):
        if v.flags & VM_SHARED:
            self._clear(pid, addr)
            self._install(pid, addr, pfn, pgprot(v.flags, True))
            self._set_flag(pfn, F_DIRTY, True)
            return "shared"
        anon = self._is_anon(pfn)
        mkwrite = not unshare and v.flags & VM_WRITE != 0
        if anon and can_reuse_anon(bool(self.flags[pfn] & F_EXCL), int(self.refcount[pfn])):
            self._clear(pid, addr)
            self._install(pid, addr, pfn, pgprot(v.flags, mkwrite))
            self._set_flag(pfn, F_EXCL, True)
            return "reuse"
        zero = pfn == self.zero_pfn
        data = 0 if zero else int(self.data[pfn])
        v = self._anon_vma(pid, addr)
        self._clear(pid, addr)
        self._put_frame(pfn, -1, -1)
        self._new_anon(pid, addr, data, v.flags, mkwrite, dirty=not unshare)
        return "unshare" if unshare else "cow-zero" if zero else "cow-copy"

    def _handle(self, pid: int, addr: int, write: bool, forced: bool = False, unshare: bool = False) -> str:
        v = self._find_vma(pid, addr)
        if forced:
            if write and v.flags & VM_WRITE == 0 and not is_cow_mapping(v.flags):
                raise EFAULT(f"forced write to a shared read-only mapping at {addr:#x}")
        elif access_error(write, v.flags):
            raise self._signal(SIGSEGV, SEGV_ACCERR, addr, "access not allowed by the VMA")
        addr &= ~(PAGE_SIZE - 1)
        cur = self._pte(pid, addr)
        major = False
        if cur is None and v.file is None:
            if not write:
                self._install(pid, addr, self.zero_pfn, pgprot(v.flags, False) | pte._PAGE_SPECIAL)
                kind = "zero-page"
            else:
                v = self._anon_vma(pid, addr)
                self._new_anon(pid, addr, 0, v.flags, True)
                kind = "anon"
        elif cur is None:
            kind, major = self._do_fault(pid, v, addr, write, forced)
        elif write or unshare:
            kind = self._do_wp_page(pid, v, addr, cur[0], forced, unshare)
        else:
            return "none"
        self._count(pid, major)
        return kind

    def handle_mm_fault(self, pid: int, addr: int, write: bool, forced: bool = False, unshare: bool = False) -> str:
        """One page fault: see :func:`spec.fault.handle_mm_fault`."""
        self._proc(pid)
        return self._atomic(self._handle, pid, addr, write, forced, unshare, need=4)

    def _access(self, pid: int, addr, write: bool) -> str:
        self._proc(pid)
        if not self._int(addr) or not 0 <= addr < 1 << 47:
            raise self._signal(SIGSEGV, SEGV_MAPERR, addr if self._int(addr) else 0, "bad address")
        access = Access("w" if write else "r")
        root = self.procs[pid].root
        if self.pt.touch(root, addr, access).fault is None:
            return ""
        kind = self._atomic(self._handle, pid, addr, write, need=4)
        assert self.pt.touch(self.procs[pid].root, addr, access).fault is None, "the access still faults"
        return kind

    # -- accesses -------------------------------------------------------------------------------

    def touch(self, pid: int, addr: int, write: bool) -> str:
        """An access that stores nothing new; the kind of fault taken."""
        if not isinstance(write, bool):
            raise EINVAL(f"write must be a bool, not {write!r}")
        return self._access(pid, addr, write)

    def read(self, pid: int, addr: int) -> int:
        """A load: the page's value."""
        self._access(pid, addr, False)
        pfn = self._pte(pid, addr)[0]
        return 0 if pfn == self.zero_pfn else int(self.data[pfn])

    def _store(self, pid: int, addr: int, value: int) -> None:
        pfn = self._pte(pid, addr)[0]
        self.data[pfn] = value
        self._set_flag(pfn, F_DIRTY, True)
        self._set_flag(pfn, F_LAZY, False)
        self._model_write(pid, vmas.vma_at(self.procs[pid].mm, addr), addr & ~(PAGE_SIZE - 1), value)

    def write(self, pid: int, addr: int, value: int) -> str:
        """A store of ``value``; the kind of fault taken."""
        if not self._int(value):
            raise EINVAL(f"value must be an int, not {value!r}")
        kind = self._access(pid, addr, True)
        self._store(pid, addr, value)
        return kind

    def write_forced(self, pid: int, addr: int, value: int) -> str:
        """A FOLL_FORCE write: see :func:`spec.fault.write_forced`."""
        self._proc(pid)
        if not self._int(value) or not self._int(addr) or not 0 <= addr < 1 << 47:
            raise EINVAL("bad address or value")
        return self._atomic(self._write_forced, pid, addr, value, need=8)

    def _write_forced(self, pid: int, addr: int, value: int) -> str:
        v = vmas.vma_at(self.procs[pid].mm, addr)
        if v is None:
            raise EFAULT(f"no VMA at {addr:#x}")
        kind = ""
        dirty_cow = "fault-dirty-cow" in bugs.active_names()
        for _ in range(2):
            cur = self._pte(pid, addr)
            if cur is not None and (cur[1] or self._follow_write_ok(v, cur[0]) or (dirty_cow and kind == "file")):
                if dirty_cow and kind == "file":  # the page cache is written: the file changes
                    pfn = cur[0]
                    self.data[pfn] = value
                    self.filedata[(int(self.ino[pfn]), int(self.index[pfn]))] = value
                    return kind
                self._store(pid, addr, value)
                return kind
            try:
                kind = self._handle(pid, addr, True, forced=True)
            except (SIGSEGV, SIGBUS) as exc:
                raise EFAULT(str(exc)) from exc
        raise AssertionError("a forced write fault always leaves a page it may write")

    def _follow_write_ok(self, v, pfn: int) -> bool:
        return (v.flags & VM_SHARED == 0 and v.flags & VM_WRITE == 0 and self._is_anon(pfn)
                and bool(self.flags[pfn] & F_EXCL))

    def touch_many(self, pid: int, addrs, write: bool) -> np.ndarray:
        """Touch every address in order (as repeated :meth:`touch`); returns, per address,
        1 if it faulted and 0 if not.  Runs of first touches of private anonymous memory are
        served in bulk."""
        p = self._proc(pid)
        if not isinstance(write, bool):
            raise EINVAL(f"write must be a bool, not {write!r}")
        addrs = np.asarray(addrs, dtype=np.int64)
        out = np.zeros(len(addrs), dtype=np.int8)
        if len(addrs) == 0:
            return out
        if (addrs < 0).any() or (addrs >= 1 << 47).any():
            raise EINVAL("address outside the user address space")
        pages = addrs & ~np.int64(PAGE_SIZE - 1)
        access = Access("w" if write else "r")
        codes = np.asarray(self.pt.translate_many(p.root, pages.astype(np.uint64), access).codes)
        i, n = 0, len(addrs)
        while i < n:
            if codes[i] == -1:
                i += 1
                continue
            j = self._bulk_run(pid, pages, i, write)
            if j > i:
                self.pt.translate_many(p.root, pages[i:j].astype(np.uint64), access)
                out[i:j] = 1
                i = j
                continue
            out[i] = 1 if self._access(pid, int(addrs[i]), write) else 0
            i += 1
        return out

    def _bulk_run(self, pid: int, pages: np.ndarray, i: int, write: bool) -> int:
        """Serve pages[i:j] at once when they are consecutive pages of one private anonymous
        VMA inside one PTE table whose PTEs are all none (a first touch), or all the zero page
        and this is a write (the copy of the zero page); returns j (i if not)."""
        p = self.procs[pid]
        va = int(pages[i])
        v = vmas.vma_at(p.mm, va)
        if v is None or v.file is not None or v.flags & VM_SHARED or access_error(write, v.flags):
            return i
        table_end = (va // (PAGE_SIZE * PTRS_PER_PTE) + 1) * PAGE_SIZE * PTRS_PER_PTE
        limit = min(v.end, table_end)
        j = i + 1
        while j < len(pages) and int(pages[j]) == int(pages[j - 1]) + PAGE_SIZE and int(pages[j]) < limit:
            j += 1
        if j - i < 8:
            return i
        end = int(pages[j - 1]) + PAGE_SIZE
        present = self._ptes(pid, va, end)
        zero = bool(present) and write and len(present) == j - i and all(q[1] == self.zero_pfn for q in present)
        if present and not zero:
            return i
        snap = None if self._room() > j - i + 64 else self._snapshot()
        try:
            if zero:
                v = self._anon_vma(pid, va)
                self.pt.unmap(p.root, va, end - va)
                rest = pages[i:j]
            else:
                self._handle(pid, va, write)  # the first fault allocates the tables (and the anon_vma)
                rest = pages[i + 1:j]
            if write:
                pfns = self.pt.buddy.alloc_many(np.zeros(len(rest), dtype=np.int64), "GFP_HIGHUSER_MOVABLE")
                if (pfns < 0).any():
                    raise ENOMEM("out of frames in a bulk fault")
                self.flags[pfns] = F_USED | F_EXCL | F_DIRTY
                self.refcount[pfns] = 1
                self.mapcount[pfns] = 1
                self.data[pfns] = 0
                self._set_ptes(p.root, int(rest[0]), pfns, pgprot(v.flags, v.flags & VM_WRITE != 0))
            else:
                self._set_ptes(p.root, int(rest[0]), np.full(len(rest), self.zero_pfn, dtype=np.int64),
                               pgprot(v.flags, False) | pte._PAGE_SPECIAL)
            p.minflt += len(rest)
        except MMError:
            if snap is None:
                raise
            self._restore(snap)
            return i
        return j

    def _set_ptes(self, root: int, va: int, pfns: np.ndarray, prot: int) -> None:
        """Write the leaves of consecutive pages from ``va`` (all in one existing PTE table, all
        none now: the caller checked) in one slice: what ``map`` would write page by page."""
        (table, index), _ = self.pt._entry_at(root, va, 1)
        leaf0 = np.uint64(self.pt._leaf_entry(0, prot, 1))
        self.pt.entries[self.pt.tid_of_pfn[table], index:index + len(pfns)] = (pfns.astype(np.uint64) << np.uint64(12)) | leaf0

    # -- zap, protect, move ---------------------------------------------------------------------

    def _zap(self, pid: int, start: int, end: int) -> None:
        found = self._ptes(pid, start, end)
        root = self.procs[pid].root
        for va, pfn, raw in found:
            self.pt.unmap(root, va, PAGE_SIZE)
            if raw & pte._PAGE_DIRTY and pfn != self.zero_pfn and self.flags[pfn] & F_FILE:
                self._set_flag(pfn, F_DIRTY, True)
            self._put_frame(pfn, -1, -1)
        if self.pins:
            self.pins = [q._replace(coherent=False) if q.pid == pid and start <= q.addr < end else q for q in self.pins]

    def _release_shmem(self) -> None:
        used = {v.file.ino for q in self.procs.values() for v in q.mm.vmas if v.file is not None}
        for ino, f in list(self.files.items()):
            if f.anon and ino not in used:
                for key in [k for k in self.cache if k[0] == ino]:
                    pfn = self.cache.pop(key)
                    self._set_flag(pfn, F_CACHED, False)
                    self._put_frame(pfn, -1, 0)
                for key in [k for k in self.filedata if k[0] == ino]:
                    del self.filedata[key]
                del self.files[ino]

    def _reprotect(self, pid: int, start: int, end: int, old=None) -> None:
        mm = self.procs[pid].mm
        for va, pfn, raw in self._ptes(pid, start, end):
            v = vmas.vma_at(mm, va)
            if old is not None:
                was = vmas.vma_at(old, va)
                if was is not None and was.flags == v.flags:
                    continue
            f = self._file_of(v)
            real = pfn != self.zero_pfn
            excl = real and self._is_anon(pfn) and bool(self.flags[pfn] & F_EXCL)
            file_dirty = real and bool(self.flags[pfn] & F_FILE) and bool(self.flags[pfn] & F_DIRTY)
            writable = pte_writable(v.flags, f is not None and f.shmem, file_dirty, excl)
            self.pt.protect(self.procs[pid].root, va, PAGE_SIZE, pgprot(v.flags, writable) | (raw & pte._PAGE_SPECIAL))

    def _move(self, pid: int, old: int, new: int, length: int) -> None:
        root = self.procs[pid].root
        moved = self._ptes(pid, old, old + length)
        for va, _, _ in moved:
            self.pt.unmap(root, va, PAGE_SIZE)
        for va, pfn, raw in moved:
            self.pt.map(root, va - old + new, pfn, PAGE_SIZE, raw & pte.PGPROT_MASK)
            if raw & pte._PAGE_DIRTY and pfn != self.zero_pfn:
                self._set_flag(pfn, F_DIRTY, True)
        lo, hi = old >> PAGE_SHIFT, (old + length) >> PAGE_SHIFT
        entries = [(k, val) for k, val in self.mem.items() if k[0] == pid and lo <= k[1] < hi]
        for k, _ in entries:
            del self.mem[k]
        for k, val in entries:
            self.mem[(pid, k[1] - lo + (new >> PAGE_SHIFT))] = val
        self.pins = [q._replace(addr=q.addr - old + new) if q.pid == pid and old <= q.addr < old + length else q
                     for q in self.pins]

    def _faultin_page(self, pid: int, va: int, write: bool) -> None:
        """GUP on one page: see :func:`spec.fault._faultin_page`."""
        for _ in range(2):
            cur = self._pte(pid, va)
            if cur is not None and (cur[1] or not write):
                return
            try:
                self._handle(pid, va, write)
            except (SIGSEGV, SIGBUS) as exc:
                raise EFAULT(str(exc)) from exc

    def _mm_populate(self, pid: int, start: int, end: int, ignore_errors: bool):
        """``__mm_populate``: see :func:`spec.fault._mm_populate`; returns the error or None."""
        nstart = start & ~(PAGE_SIZE - 1)
        while nstart < end:
            v = vmas.find_vma(self.procs[pid].mm, nstart)
            if v is None or v.start >= end:
                break
            nstart, nend = max(nstart, v.start), min(end, v.end)
            if v.flags & (VM_IO | VM_PFNMAP | VM_LOCKONFAULT):
                nstart = nend
                continue
            try:
                if v.flags & (VM_READ | VM_WRITE | VM_EXEC) == 0:
                    raise EFAULT(f"GUP refuses the PROT_NONE VMA at {v.start:#x}")
                write = gup_write(v.flags)
                for va in range(nstart, nend, PAGE_SIZE):
                    self._faultin_page(pid, va, write)
            except (EFAULT, ENOMEM) as err:
                if not ignore_errors:
                    return err
            nstart = nend
        return None

    def _madvise_populate(self, pid: int, start: int, end: int, write: bool) -> None:
        """``faultin_page_range``: see :func:`spec.fault.madvise_populate`."""
        for va in range(start & ~(PAGE_SIZE - 1), end, PAGE_SIZE):
            try:
                v = vmas.vma_at(self.procs[pid].mm, va)
                if v is None:
                    raise ENOMEM(f"MADV_POPULATE: no VMA at {va:#x}")
                if populate_refused(v.flags, write):
                    raise EINVAL(f"the VMA at {v.start:#x} refuses MADV_POPULATE")
                self._faultin_page(pid, va, write)
            except (ENOMEM, EINVAL, EFAULT) as err:
                raise _here(err) from None

    # -- system calls ---------------------------------------------------------------------------

    def _file_arg(self, file):
        if file is None:
            return None
        if isinstance(file, vmas.FileRef):
            return file
        if self._int(file) and FILE_INO_BASE + file in self.files:
            return self.files[FILE_INO_BASE + file].ref()
        raise EINVAL(f"no file {file!r}")

    def _vma_call(self, pid: int, fn, *args, pages=None):
        """``fn(mm, *args)`` of spec.vma on ``pid``: ``(mm, result)``.  A failure part way
        (``error.partial``, the VMAs Linux leaves) installs those VMAs, runs ``pages()`` (the
        page work for the part done, if any) and re-raises as :func:`_here`."""
        p = self.procs[pid]
        try:
            return fn(p.mm, *args)
        except MMError as err:
            partial = getattr(err, "partial", None)
            if not isinstance(partial, vmas.Mm):
                raise
            p.mm = partial
            if pages is not None:
                pages()
            raise _here(err) from None

    def mmap(self, pid: int, addr: int, length: int, prot: int, flags: int, file=None, pgoff: int = 0) -> int:
        """``mmap(2)``: see :func:`spec.fault.mmap`."""
        p = self._proc(pid)
        mm, got = vmas.mmap(p.mm, addr, length, prot, flags, self._file_arg(file), pgoff)
        return self._atomic(self._mmap_pages, pid, mm, got, _align_up(length), flags)

    def _mmap_pages(self, pid, mm, got, length, flags):
        if flags & MAP_FIXED and not flags & MAP_FIXED_NOREPLACE:
            self._zap(pid, got, got + length)
            self._model_drop(pid, got, got + length)
        self.procs[pid].mm = mm
        self._register_files(mm)
        v = vmas.vma_at(mm, got)
        if (flags & (MAP_POPULATE | MAP_NONBLOCK)) == MAP_POPULATE or (v is not None and v.flags & VM_LOCKED):
            self._mm_populate(pid, got, got + length, ignore_errors=True)
        self._release_shmem()
        return got

    def munmap(self, pid: int, addr: int, length: int) -> int:
        """``munmap(2)``."""
        self._proc(pid)

        def pages():
            mm, ret = self._vma_call(pid, vmas.munmap, addr, length)
            end = addr + _align_up(length)
            self.procs[pid].mm = mm
            self._zap(pid, addr, end)
            self._model_drop(pid, addr, end)
            self._release_shmem()
            return ret

        return self._atomic(pages)

    def mprotect(self, pid: int, addr: int, length: int, prot: int) -> int:
        """``mprotect(2)``: see :func:`spec.fault.mprotect`."""
        p = self._proc(pid)
        old = p.mm

        def work():
            self._reprotect(pid, addr, addr + _align_up(length), old)
            self._mprotect_populate(pid, old, addr, addr + _align_up(length))

        def pages():
            mm, ret = self._vma_call(pid, vmas.mprotect, addr, length, prot, pages=work)
            p.mm = mm
            work()
            return ret

        return self._atomic(pages)

    def mremap(self, pid: int, old_addr: int, old_len: int, new_len: int, flags: int, new_addr: int = 0) -> int:
        """``mremap(2)``."""
        self._proc(pid)

        def pages():
            mm, got = self._vma_call(pid, vmas.mremap, old_addr, old_len, new_len, flags, new_addr)
            olen, nlen = _align_up(old_len), _align_up(new_len)
            self.procs[pid].mm = mm
            if nlen < olen:
                self._zap(pid, old_addr + nlen, old_addr + olen)
                self._model_drop(pid, old_addr + nlen, old_addr + olen)
            if got != old_addr and olen:
                self._zap(pid, got, got + nlen)
                self._model_drop(pid, got, got + nlen)
                self._move(pid, old_addr, got, min(olen, nlen))
                if not flags & MREMAP_DONTUNMAP:
                    self._zap(pid, old_addr, old_addr + olen)
            self._release_shmem()
            return got

        return self._atomic(pages)

    def _mprotect_populate(self, pid: int, old, start: int, end: int) -> None:
        """A locked private VMA made writable is populated: see :func:`spec.fault._mprotect_populate`."""
        for v in old.vmas:
            if v.end <= start or v.start >= end or v.flags & (VM_WRITE | VM_SHARED | VM_LOCKED) != VM_LOCKED:
                continue
            lo, hi = max(start, v.start), min(end, v.end)
            new = vmas.vma_at(self.procs[pid].mm, lo)
            if new is not None and new.flags & VM_WRITE:
                self._mm_populate(pid, lo, hi, ignore_errors=True)

    def _advise_pages(self, pid: int, mm, start: int, end: int, advice: int):
        """``MADV_DONTNEED``/``MADV_FREE`` VMA by VMA: see :func:`spec.fault._advise_pages`."""
        for v in mm.vmas:
            if v.end <= start or v.start >= end:
                continue
            try:
                vmas._madvise_check(advice, v)
            except MMError as err:
                return err
            lo, hi = max(start, v.start), min(end, v.end)
            if advice == MADV_FREE:
                for va, pfn, raw in self._ptes(pid, lo, hi):
                    if self._is_anon(pfn) and self.mapcount[pfn] == 1:
                        self._clear(pid, va)
                        self._install(pid, va, pfn, raw & pte.PGPROT_MASK)
                        self._set_flag(pfn, F_DIRTY, False)
                        self._set_flag(pfn, F_LAZY, True)
            else:
                self._zap(pid, lo, hi)
                self._model_drop(pid, lo, hi)
        return None

    def madvise(self, pid: int, addr: int, length: int, advice: int) -> int:
        """``madvise(2)``: see :func:`spec.fault.madvise`."""
        p = self._proc(pid)
        old = p.mm
        populate = advice in (MADV_POPULATE_READ, MADV_POPULATE_WRITE)
        zaps = advice in (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE)

        def pages():
            end = addr + _align_up(length)
            try:
                mm, ret = self._vma_call(pid, vmas.madvise, addr, length, advice,
                                         pages=lambda: zaps and self._advise_pages(pid, old, addr, end, advice))
            except MMError as err:
                if not populate or getattr(err, "partial", None) is not _HERE:
                    raise
                mm, ret = old, 0  # madvise_populate does its own checks, page by page
            p.mm = mm
            if zaps:
                self._advise_pages(pid, old, addr, end, advice)
            elif populate:
                self._madvise_populate(pid, addr, end, advice == MADV_POPULATE_WRITE)
            return ret

        return self._atomic(pages)

    def _do_mlock(self, pid: int, addr: int, length: int, flags: int) -> int:
        """``do_mlock``: see :func:`spec.fault._do_mlock`."""
        p = self._proc(pid)

        def pages():
            try:
                mm, ret = self._vma_call(pid, vmas.mlock, addr, length, flags)
            except ENOMEM as err:
                if getattr(err, "partial", None) is not _HERE or not locked_throughout(p.mm, addr, length):
                    raise
                mm, ret = p.mm, 0
            p.mm = mm
            start = addr & ~(PAGE_SIZE - 1)
            err = self._mm_populate(pid, start, start + _align_up(length + addr - start), ignore_errors=False)
            if err is not None:
                raise _here(mlock_posix_error(err))
            return ret

        return self._atomic(pages)

    def mlock(self, pid: int, addr: int, length: int) -> int:
        """``mlock(2)``."""
        return self._do_mlock(pid, addr, length, 0)

    def mlock2(self, pid: int, addr: int, length: int, flags: int) -> int:
        """``mlock2(2)``."""
        return self._do_mlock(pid, addr, length, flags)

    def munlock(self, pid: int, addr: int, length: int) -> int:
        """``munlock(2)``."""
        self._proc(pid)

        def pages():
            self.procs[pid].mm, ret = self._vma_call(pid, vmas.munlock, addr, length)
            return ret

        return self._atomic(pages)

    def mlockall(self, pid: int, flags: int) -> int:
        """``mlockall(2)``."""
        p = self._proc(pid)
        mm, ret = vmas.mlockall(p.mm, flags)

        def pages():
            p.mm = mm
            if flags & MCL_CURRENT and not flags & MCL_ONFAULT:
                self._mm_populate(pid, 0, 1 << 47, ignore_errors=True)
            return ret

        return self._atomic(pages)

    def munlockall(self, pid: int) -> int:
        """``munlockall(2)``."""
        p = self._proc(pid)
        p.mm, ret = vmas.munlockall(p.mm)
        return ret

    def brk(self, pid: int, new: int) -> int:
        """``brk(2)``."""
        p = self._proc(pid)
        old = p.mm.brk
        mm, ret = vmas.brk(p.mm, new)

        def pages():
            p.mm = mm
            old_end = (old + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
            new_end = (mm.brk + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
            if new_end < old_end:
                self._zap(pid, new_end, old_end)
                self._model_drop(pid, new_end, old_end)
            elif new_end > old_end and mm.def_flags & VM_LOCKED:
                self._mm_populate(pid, old_end, new_end, ignore_errors=True)
            return ret

        return self._atomic(pages)

    # -- fork, exit, pins -----------------------------------------------------------------------

    def _copy_pte(self, parent: int, child: int, src, va: int, pfn: int, raw: int) -> None:
        prot = raw & pte.PGPROT_MASK
        cow = is_cow_mapping(src.flags)
        anon = self._is_anon(pfn)
        pinned = anon and self.refcount[pfn] > self.mapcount[pfn]
        if anon and needs_cow_for_dma(bool(pinned), cow) and "fault-fork-shares-pinned-page" not in bugs.active_names():
            new = self._alloc(F_EXCL | F_DIRTY, int(self.data[pfn]), 1, 1)
            self._install(child, va, new, pgprot(src.flags, src.flags & VM_WRITE != 0))
            return
        if cow and prot & pte._PAGE_RW:
            if "fault-fork-no-wrprotect" not in bugs.active_names():
                self.pt.protect(self.procs[parent].root, va, PAGE_SIZE, prot & ~pte._PAGE_RW)
            prot &= ~pte._PAGE_RW
        self._install(child, va, pfn, prot)
        if pfn != self.zero_pfn:
            self._put_frame(pfn, 1, 1)
            if raw & pte._PAGE_DIRTY:
                self._set_flag(pfn, F_DIRTY, True)
            if anon:
                self._set_flag(pfn, F_EXCL, False)

    def fork(self, pid: int) -> int:
        """``fork(2)``: the child's pid."""
        p = self._proc(pid)
        child = self.next_pid
        parent_mm, child_mm = vmas.fork(p.mm, child)
        return self._atomic(self._fork, pid, child, parent_mm, child_mm)

    def _fork(self, pid, child, parent_mm, child_mm):
        p = self.procs[pid]
        old_mm = p.mm
        root = self.pt.new_mm()
        self.procs[child] = _Proc(child_mm, root)
        self.next_pid = child + 1
        p.mm = parent_mm
        kept = {(v.start, v.end): v for v in child_mm.vmas}
        for src in old_mm.vmas:
            dst = kept.get((src.start, src.end))
            if dst is None or dst.flags & VM_WIPEONFORK:
                continue
            lo, hi = src.start >> PAGE_SHIFT, src.end >> PAGE_SHIFT
            for k, val in [(k, val) for k, val in self.mem.items() if k[0] == pid and lo <= k[1] < hi]:
                self.mem[(child, k[1])] = val
            if src.anon_vma is None or src.flags & VM_SHARED:
                continue
            for va, pfn, raw in self._ptes(pid, src.start, src.end):
                self._copy_pte(pid, child, src, va, pfn, raw)
        return child

    def exit(self, pid: int) -> int:
        """``exit(2)``."""
        p = self._proc(pid)

        def go():
            for q in [q for q in self.pins if q.pid == pid]:
                self.pins.remove(q)
                self._put_frame(q.pfn, -1, 0)
            self._zap(pid, 0, 1 << 47)
            self.pt.free_mm(p.root)
            self._model_drop(pid, 0, 1 << 47)
            del self.procs[pid]
            self._release_shmem()
            return 0

        return self._atomic(go)

    def pin(self, pid: int, addr: int, write: bool) -> int:
        """A long-term pin: see :func:`spec.fault.pin`."""
        self._proc(pid)
        if not isinstance(write, bool) or not self._int(addr) or not 0 <= addr < 1 << 47:
            raise EINVAL("bad pin request")
        return self._atomic(self._pin, pid, addr & ~(PAGE_SIZE - 1), write)

    def _pin(self, pid: int, addr: int, write: bool) -> int:
        v = vmas.vma_at(self.procs[pid].mm, addr)
        if v is None or access_error(write, v.flags) or (not write and v.flags & VM_READ == 0):
            raise EFAULT(f"cannot pin {addr:#x}")
        try:
            for _ in range(3):
                cur = self._pte(pid, addr)
                if cur is None or (write and not cur[1]):
                    self._handle(pid, addr, write)
                    continue
                pfn = cur[0]
                zero = pfn == self.zero_pfn
                exclusive_anon = not zero and self._is_anon(pfn) and bool(self.flags[pfn] & F_EXCL)
                if not write and not exclusive_anon and is_cow_mapping(v.flags):
                    self._handle(pid, addr, False, unshare=True)
                    continue
                break
        except (SIGSEGV, SIGBUS) as exc:
            raise EFAULT(str(exc)) from exc
        pfn = self._pte(pid, addr)[0]
        self._put_frame(pfn, 1, 0)
        self.pins.append(Pin(pid, addr, pfn, write))
        return sum(1 for q in self.pins if q.pid == pid)

    def unpin(self, pid: int, addr: int) -> int:
        """Drop the oldest pin of ``pid`` at ``addr``."""
        self._proc(pid)
        mine = [q for q in self.pins if q.pid == pid and self._int(addr) and q.addr == addr & ~(PAGE_SIZE - 1)]
        if not mine:
            raise EINVAL(f"process {pid} holds no pin at {addr!r}")
        self.pins.remove(mine[0])
        self._put_frame(mine[0].pfn, -1, 0)
        return 0

    def write_pin(self, pid: int, addr: int, value: int) -> int:
        """A write through a write pin."""
        self._proc(pid)
        mine = [q for q in self.pins if q.pid == pid and q.write and self._int(addr) and q.addr == addr & ~(PAGE_SIZE - 1)]
        if not mine or not self._int(value):
            raise EINVAL(f"process {pid} holds no write pin at {addr!r}")
        q = mine[0]
        self.data[q.pfn] = value
        self._set_flag(q.pfn, F_DIRTY, True)
        if q.coherent:
            self._model_write(pid, vmas.vma_at(self.procs[pid].mm, q.addr), q.addr, value)
        return 0

    # -- programs -------------------------------------------------------------------------------

    def run(self, program, base: int = WINDOW_BASE, pid: int = 1) -> list:
        """Run a program (the kernel oracle's step format: see :func:`spec.fault.run`) and
        return one result per step: the return value, the errno or signal name of a failure,
        or ``GONE`` for a step of a process that no longer exists.  As in the kernel, a step
        that fails part way leaves its partial work in the object (the program goes on from
        the state Linux leaves) and a SIGSEGV or SIGBUS kills the process."""
        procs, results, children = {0: pid}, [], 0
        self._keep_partial = True
        try:
            for step in program:
                proc, inner = (step[1], tuple(step[2])) if step[0] == "in" else (0, tuple(step))
                if inner[0] == "exit":
                    proc = inner[1]
                who = procs.get(proc)
                if who is None or who not in self.procs:
                    children += inner[0] == "fork"
                    results.append(GONE)
                    continue
                try:
                    if inner[0] == "fork":
                        children += 1
                        procs[children] = self.fork(who)
                        ret = children
                    elif inner[0] == "exit":
                        ret = self.exit(who)
                        del procs[proc]
                    else:
                        ret = self._program_step(who, inner, base)
                except MMError as err:
                    ret = type(err).__name__
                    if isinstance(err, (SIGSEGV, SIGBUS)):
                        self.exit(who)
                        del procs[proc]
                results.append(ret)
        finally:
            self._keep_partial = False
        return results

    def _program_step(self, pid: int, step: tuple, base: int):
        op, a = step[0], step[1:]

        def at(off: int) -> int:
            return base + off * PAGE_SIZE

        if op in ("mmap", "mmap_file"):
            return (self.mmap(pid, at(a[0]), a[1] * PAGE_SIZE, a[2], a[3], *a[4:6]) - base) // PAGE_SIZE
        if op == "mremap":
            return (self.mremap(pid, at(a[0]), a[1] * PAGE_SIZE, a[2] * PAGE_SIZE, a[3], at(a[4])) - base) // PAGE_SIZE
        if op == "brk":
            return self.brk(pid, self.procs[pid].mm.brk + a[0]) - base
        if op == "touch":  # page by page: a fault part way leaves the pages before touched
            for page in range(a[0], a[0] + a[1]):
                self.touch(pid, at(page), bool(a[2]))
            return 0
        if op in ("munmap", "munlock", "mlock"):
            return getattr(self, op)(pid, at(a[0]), a[1] * PAGE_SIZE)
        if op in ("mprotect", "madvise", "mlock2"):
            return getattr(self, op)(pid, at(a[0]), a[1] * PAGE_SIZE, a[2])
        if op == "mlockall":
            return self.mlockall(pid, a[0])
        if op == "munlockall":
            return self.munlockall(pid)
        raise EINVAL(f"unknown program step {op!r}")

    # -- the spec state -------------------------------------------------------------------------

    def abstract(self) -> System:
        """The :class:`spec.fault.System` this object represents."""
        frames = {}
        for pfn in np.flatnonzero(self.flags & F_USED).tolist():
            fl = int(self.flags[pfn])
            kind = "file" if fl & F_FILE else "anon"
            frames[pfn] = Frame(kind, int(self.refcount[pfn]), int(self.mapcount[pfn]), bool(fl & F_EXCL),
                                bool(fl & F_DIRTY), int(self.data[pfn]), int(self.ino[pfn]), int(self.index[pfn]),
                                bool(fl & F_CACHED), bool(fl & F_LAZY))
        procs = {pid: Proc(p.mm, p.root, p.minflt, p.majflt) for pid, p in self.procs.items()}
        return System(self.pt.abstract(), Map(procs), Map(frames), Map(self.cache), Map(self.files), self.zero_pfn,
                      tuple(self.pins), Map(self.mem), Map(self.filedata), self.next_pid, self.config)
