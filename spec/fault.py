"""Demand paging, the page cache, fork and copy-on-write (mm/memory.c, mm/gup.c, kernel/fork.c).

**The problem.**  ``mmap`` only writes down a promise (a VMA, :mod:`spec.vma`); no memory is
spent until a program touches a page.  The first access traps (#PF), and the fault handler
decides, from the VMA and the page-table entry, what the page must be: the one shared
*zero page* for a read of anonymous memory, a fresh zeroed frame for a write, a page of the
*page cache* for a file.  ``fork`` copies an address space without copying memory: parent and
child share every private page, both write-protected, and the first write by either side
takes a *copy-on-write* fault that gives the writer its own copy -- unless the page is by then
mapped by nobody else, in which case the writer simply reuses it.

**The Linux functions modelled.**

- ``handle_mm_fault`` -> ``handle_pte_fault`` (:func:`handle_mm_fault`): the x86 front end
  (``do_user_addr_fault``: find the VMA, grow a ``VM_GROWSDOWN`` stack with
  ``expand_stack``, ``access_error``) then, for a PTE that is not present,
  ``do_anonymous_page`` (zero page on read, zeroed frame on write after
  ``anon_vma_prepare``) or ``do_fault`` (``do_read_fault`` with *fault-around*,
  ``do_cow_fault``, ``do_shared_fault``), and for a present read-only PTE written,
  ``do_wp_page`` (``wp_page_shared``, ``wp_can_reuse_anon_folio`` reuse, ``wp_page_copy``).
- ``mm_account_fault``: every fault counts in the task's ``min_flt``, or ``maj_flt`` when the
  page had to be read from the disk (``VM_FAULT_MAJOR``); faults taken by GUP for
  ``MAP_POPULATE``, ``mlock`` and ``madvise(MADV_POPULATE_*)`` count as well.
- ``copy_page_range`` / ``copy_present_pte`` (:func:`fork`): PTEs are copied only for private
  VMAs that have an ``anon_vma`` (and not ``VM_WIPEONFORK``); the others fault afresh in the
  child.  A copied anonymous page loses ``PageAnonExclusive`` and, in a COW mapping, both PTEs
  are write-protected; a page with a long-term pin is instead copied for the child at once
  (``folio_needs_cow_for_dma``).
- GUP ``FOLL_PIN | FOLL_LONGTERM`` (:func:`pin`): the page is faulted in (written for a write
  pin, *unshared* with ``FAULT_FLAG_UNSHARE`` for a read pin of a page that may be shared),
  and the pin holds a reference.  ``FOLL_FORCE`` writes (:func:`write_forced`, the
  ``/proc/PID/mem`` path) may write a private mapping without ``VM_WRITE``: they break COW into
  an anonymous copy that stays read-only in the PTE, never into the page cache.
- ``zap_pte_range`` (munmap, ``MADV_DONTNEED``, exit), ``change_protection`` (mprotect,
  with ``can_change_pte_writable``), ``move_ptes`` (mremap), ``populate_vma_page_range``.

**The state.**  A :class:`System` holds the physical side (a :mod:`spec.paging` state whose
buddy allocator gives out every frame and page-table page; the per-frame ``refcount``,
``mapcount``, ``PageAnonExclusive`` and dirty bits in :class:`Frame`; the zero page; the page
cache ``(ino, index) -> pfn``), one :class:`Proc` per pid (its :class:`spec.vma.Mm`, the
root of its page table in the paging state, ``minflt``/``majflt``), the long-term pins, and
beside all that the **content model**: what each process last wrote at each private page
(``mem``) and what each file page holds (``filedata``).  The content model is updated by the
*meaning* of a write (a private write changes one process, a shared write changes the file),
never by the page tables, so :func:`inv_cow_isolation` -- every mapped frame holds what the
model says the process must read there -- is a real check of copy-on-write.  Page contents
are one integer per page (the value the last write stored).

**Three modules.**  :mod:`spec.process` holds the state, the arithmetic of faults, the
invariants and the views; :mod:`spec.pagecache` the page cache and fault-around; this module
the fault handler, the accesses, the process-level system calls, fork, exit and pins.  Every
name of the first two is also reachable here, so ``spec.fault`` is the mechanism's whole API.

**How this model simplifies Linux, and why.**

- One 4 KiB page per PTE: no THP (this kernel's THP mode is ``madvise``; PMD-sized THP in
  ``MADV_HUGEPAGE`` VMAs is not modelled), no large folios, no swap, no reclaim, no KSM.
- PTEs live in real :mod:`spec.paging` tables (x86-64 4-level) built with ``map``/``unmap``/
  ``protect``, and every user access is the hardware walk (which sets Accessed and Dirty).
  Entries are installed young and clean, and a moved or fork-copied entry starts clean:
  the kernel's ``pte_mkdirty`` on write faults is left to the CPU's walk that follows, and
  the Dirty bit of a moved or fork-copied entry (and of a zapped page-cache entry, as
  ``zap_pte_range`` does) becomes the frame's dirty flag.  An anonymous frame is dirty from
  its write fault on (Linux's ``pte_mkdirty``), except the copy an unshare fault makes.
  A ``PROT_NONE`` PTE (``_PAGE_PROTNONE`` in Linux, present to the kernel but not to the CPU)
  is modelled as a present kernel-only entry (no ``_PAGE_USER``), which the user walk rejects
  and pagemap reports present, as Linux does.
- The page cache has no readahead and no eviction; regular (non-shmem) files are filled from
  the disk on first access (a major fault), shmem files (memfd, shared anonymous memory) by
  allocation (a minor fault).  File contents start as 0.  A shmem file of a shared anonymous
  mapping is dropped with its last mapping.
- ``touch`` is an access that stores what the page already holds (a ``memset`` of the
  existing bytes); ``write`` stores a new value.
- Pins are counted as one reference each (Linux adds ``GUP_PIN_COUNTING_BIAS`` = 1024 for a
  small folio); a pin is dropped when its process exits.

**Failures part way: ``error.partial``.**  A transition that raises a typed error changes
nothing: the state passed in is still the state.  Some system calls, though, fail in Linux
*after* doing part of their work and leave it done: ``madvise(MADV_POPULATE_READ/WRITE)``
stops at the first page it cannot fault in (ENOMEM at a hole, EINVAL at a VMA without the
permission, EFAULT at a page past the end of its file) with the pages before it populated and
their faults counted; ``mlock`` locks the VMAs, then populates them and fails (ENOMEM) at a
``PROT_NONE`` VMA or a page past the end of a file; ``mprotect`` and ``madvise`` change and
zap VMA by VMA and stop at a hole or a refused VMA.  Such an error carries the
:class:`System` Linux leaves as ``error.partial`` (``getattr(err, "partial", None)``: absent
when the call failed its checks before doing anything; it may equal the state before when
the very first page failed), with the same meaning in :mod:`impl.fault`, whose object
also stays unchanged; :func:`run` continues a program from it.  (``mmap``, ``mlockall`` and
``brk`` ignore populate errors, as ``mm_populate`` does: the pages before the failure stay
populated and the call succeeds.)

>>> from spec.mman import PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS
>>> s = init()
>>> s, a = mmap(s, 1, 0, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
>>> s, kind = touch(s, 1, a, False)
>>> kind, pfn_class(s, 1, a)
('zero-page', 'zero')
>>> s, kind = touch(s, 1, a, True)
>>> kind, s.procs[1].minflt
('cow-zero', 2)
>>> s, child = fork(s, 1)
>>> s, kind = write(s, child, a, 7)
>>> kind, read(s, 1, a)[1], read(s, child, a)[1]
('cow-copy', 0, 7)
"""

from __future__ import annotations

from dataclasses import replace

from spec import paging, pte
from spec import vma as vmas
from spec.errors import EAGAIN, EFAULT, EINVAL, ENOMEM, SIGBUS, SIGSEGV, MMError
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
from spec.pagecache import cache_page, fault_around, map_cached, register_file, release_shmem
from spec.paging import Access
from spec.process import (  # noqa: F401 - spec.fault is the mechanism's whole API
    BUS_ADRERR,
    FAULT_AROUND_PAGES,
    FILE_INO_BASE,
    KERNEL_LOOK,
    PM_FILE,
    PM_MMAP_EXCLUSIVE,
    PM_PFRAME_MASK,
    PM_PRESENT,
    PSS_SHIFT,
    PTRS_PER_PTE,
    SEGV_ACCERR,
    SEGV_MAPERR,
    FaultConfig,
    File,
    Frame,
    Pin,
    Proc,
    System,
    _align_up,
    _alloc,
    _clear,
    _count_fault,
    _file_index,
    _get_frame,
    _install,
    _int,
    _ite,
    _model_drop,
    _model_write,
    _or,
    _page,
    _proc,
    _ptes,
    _set_proc,
    _vma_file,
    access_error,
    can_reuse_anon,
    decode_pagemap,
    encode_pagemap,
    expected,
    init,
    inv_counts_exact,
    inv_cow_isolation,
    inv_exclusive_mapped_once,
    inv_frames_allocated,
    inv_page_cache,
    inv_pins_coherent,
    inv_ptes_inside_vmas,
    inv_vmas,
    inv_writable_means_exclusive,
    is_cow_mapping,
    maps,
    meminfo,
    needs_cow_for_dma,
    pagemap,
    pagemap_entry,
    pfn_class,
    pgprot,
    pte_at,
    pte_writable,
    render,
    smaps,
    smaps_pss,
    status,
)
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

__all__ = [
    "FaultConfig", "File", "Frame", "Pin", "Proc", "System", "init",
    "handle_mm_fault", "touch", "read", "write", "write_forced", "fork", "exit", "pin", "unpin", "write_pin",
    "mmap", "munmap", "mprotect", "mremap", "madvise", "mlock", "mlock2", "munlock", "mlockall", "munlockall",
    "brk", "maps", "smaps", "pagemap", "pagemap_entry", "pfn_class", "status", "meminfo", "render",
    "access_error", "pgprot", "pte_writable", "can_reuse_anon", "needs_cow_for_dma", "encode_pagemap",
    "decode_pagemap", "smaps_pss", "gup_write", "populate_refused", "madvise_populate", "mlock_posix_error",
    "locked_throughout", "run", "program_step", "WINDOW_BASE", "GONE",
]

# --- the fault handler -----------------------------------------------------------------------


def _signal(kind, code: int, addr: int, why: str) -> MMError:
    err = kind(f"{why} at {addr:#x}")
    err.si_code, err.si_addr = code, addr
    return err


def find_fault_vma(s: System, pid: int, addr: int) -> tuple[System, vmas.Vma]:
    """``lock_mm_and_find_vma()``: the VMA that covers ``addr``, growing a ``VM_GROWSDOWN``
    VMA just above down to it (``expand_stack``); SIGSEGV/SEGV_MAPERR otherwise."""
    mm = s.procs[pid].mm
    v = vmas.find_vma(mm, addr)
    if v is None:
        raise _signal(SIGSEGV, SEGV_MAPERR, addr, "no VMA")
    if v.start > addr:
        if not v.flags & VM_GROWSDOWN:
            raise _signal(SIGSEGV, SEGV_MAPERR, addr, "no VMA")
        try:
            mm = vmas.expand_stack(mm, addr)
        except MMError as exc:
            raise _signal(SIGSEGV, SEGV_MAPERR, addr, f"stack cannot grow ({type(exc).__name__})") from exc
        s = _set_proc(s, pid, mm=mm)
        v = vmas.vma_at(mm, addr)
    return s, v


def _ensure_anon_vma(s: System, pid: int, addr: int) -> tuple[System, vmas.Vma]:
    """``anon_vma_prepare()`` on the first anonymous page of a VMA."""
    mm = s.procs[pid].mm
    v = vmas.vma_at(mm, addr)
    if v.anon_vma is None:
        mm = vmas.anon_vma_prepare(mm, addr)
        s = _set_proc(s, pid, mm=mm)
        v = vmas.vma_at(mm, addr)
    return s, v


def _new_anon(s: System, pid: int, addr: int, data: int, writable_flags: int, mkwrite: bool,
              dirty: bool = True) -> System:
    """Allocate an exclusive anonymous page holding ``data`` and map it at ``addr``; ``dirty``
    stands for the ``pte_mkdirty`` of a write fault (an unshare fault maps its copy clean)."""
    s, pfn = _alloc(s, Frame("anon", 1, 1, True, dirty, data))
    return _install(s, pid, addr, pfn, pgprot(writable_flags, mkwrite and writable_flags & VM_WRITE != 0))


def _do_fault(s: System, pid: int, v: vmas.Vma, addr: int, write: bool, forced: bool) -> tuple[System, str, bool]:
    """``do_fault``: a file (or shmem) page that is not mapped yet."""
    f = _vma_file(s, v)
    index = _file_index(v, addr)
    if index >= f.pages:
        raise _signal(SIGBUS, BUS_ADRERR, addr, f"page {index} is beyond the end of {f.path}")
    if not write:  # do_read_fault: fault-around first; done if it mapped the page
        s = fault_around(s, pid, v, f, addr)
        if pte_at(s, pid, addr) is not None:
            return s, "fault-around", False
        s, pfn, major = cache_page(s, f, index)
        return map_cached(s, pid, v, f, addr, pfn, False), "file", major
    if v.flags & VM_SHARED:  # do_shared_fault
        s, pfn, major = cache_page(s, f, index)
        return map_cached(s, pid, v, f, addr, pfn, True), "shared", major
    s, pfn, major = cache_page(s, f, index)  # do_cow_fault
    s, v = _ensure_anon_vma(s, pid, addr)
    s = _new_anon(s, pid, addr, s.frames[pfn].data, v.flags, True)
    return s, "file-cow", major


def _do_wp_page(s: System, pid: int, v: vmas.Vma, addr: int, pfn: int, forced: bool, unshare: bool = False):
    """``do_wp_page``: a write (or an unshare) of a present, write-protected PTE."""
    if v.flags & VM_SHARED:  # wp_page_shared: the write-notify fault of a shared mapping
        s = _clear(s, pid, addr)
        s = _install(s, pid, addr, pfn, pgprot(v.flags, True))
        return _get_frame(s, pfn, 0, 0, dirty=True), "shared"
    frame = s.frames.get(pfn)
    mkwrite = not unshare and v.flags & VM_WRITE != 0
    if frame is not None and frame.kind == "anon" and can_reuse_anon(frame.exclusive, frame.refcount):
        s = _clear(s, pid, addr)  # reuse: wp_page_reuse (folio_move_anon_rmap, mark exclusive)
        s = _install(s, pid, addr, pfn, pgprot(v.flags, mkwrite))
        return _get_frame(s, pfn, 0, 0, exclusive=True), "reuse"
    data = 0 if frame is None else frame.data  # wp_page_copy: zero page, page cache or shared anon
    s, v = _ensure_anon_vma(s, pid, addr)
    s = _clear(s, pid, addr)
    s = _get_frame(s, pfn, -1, -1)
    s = _new_anon(s, pid, addr, data, v.flags, mkwrite, dirty=not unshare)
    return s, "unshare" if unshare else "cow-zero" if frame is None else "cow-copy"


def handle_mm_fault(s: System, pid: int, addr: int, write: bool, forced: bool = False, unshare: bool = False):
    """One page fault of ``pid`` at ``addr`` (``do_user_addr_fault`` -> ``handle_mm_fault``):
    returns ``(state, kind)`` where kind names the path taken (``zero-page``, ``anon``,
    ``file``, ``fault-around``, ``shared``, ``file-cow``, ``reuse``, ``cow-copy``,
    ``cow-zero``, ``unshare``), and counts the fault.  SIGSEGV (``si_code`` MAPERR/ACCERR), SIGBUS beyond the
    end of a file, ENOMEM when no frame is left: state unchanged."""
    s, v = find_fault_vma(s, pid, addr)
    if forced:  # GUP check_vma_flags with FOLL_FORCE: a COW mapping may be written anyway
        if write and v.flags & VM_WRITE == 0 and not is_cow_mapping(v.flags):
            raise EFAULT(f"forced write to a shared read-only mapping at {addr:#x}")
    elif access_error(write, v.flags):
        raise _signal(SIGSEGV, SEGV_ACCERR, addr, "access not allowed by the VMA")
    addr = _page(addr)
    cur = pte_at(s, pid, addr)
    major = False
    if cur is None and v.file is None:  # do_anonymous_page
        if not write:
            s, kind = _install(s, pid, addr, s.zero_pfn, pgprot(v.flags, False) | pte._PAGE_SPECIAL), "zero-page"
        else:
            s, v = _ensure_anon_vma(s, pid, addr)
            s, kind = _new_anon(s, pid, addr, 0, v.flags, True), "anon"
    elif cur is None:
        s, kind, major = _do_fault(s, pid, v, addr, write, forced)
    elif write or unshare:
        s, kind = _do_wp_page(s, pid, v, addr, cur[0], forced, unshare)
    else:
        return s, "none"  # a spurious fault: nothing to do, nothing counted
    return _count_fault(s, pid, major), kind


def _access(s: System, pid: int, addr, write: bool) -> tuple[System, str]:
    """A user access as the CPU makes it: the hardware walk (:func:`spec.paging.touch`, which
    sets the Accessed and Dirty bits); on a #PF the fault handler, then the access again."""
    _proc(s, pid)
    if not _int(addr) or not 0 <= addr < 1 << 47:
        raise _signal(SIGSEGV, SEGV_MAPERR, addr if _int(addr) else 0, "bad address")
    access = Access("w" if write else "r")
    pg, out = paging.touch(s.paging, s.procs[pid].root, addr, access)
    if out.fault is None:
        return replace(s, paging=pg), ""
    s, kind = handle_mm_fault(s, pid, addr, write)
    pg, out = paging.touch(s.paging, s.procs[pid].root, addr, access)
    assert out.fault is None, f"the access at {addr:#x} still faults after {kind}"
    return replace(s, paging=pg), kind


def touch(s: System, pid: int, addr: int, write: bool):
    """An access by ``pid`` that stores nothing new: faults as the CPU and kernel would, and
    returns the kind of fault taken (``""`` for none)."""
    if not isinstance(write, bool):
        raise EINVAL(f"write must be a bool, not {write!r}")
    return _access(s, pid, addr, write)


def read(s: System, pid: int, addr: int):
    """A load by ``pid``: the value of the page (faulting it in first if needed)."""
    s, _ = _access(s, pid, addr, False)
    p = pte_at(s, pid, addr)
    return s, 0 if p[0] == s.zero_pfn else s.frames[p[0]].data


def _store(s: System, pid: int, addr: int, value: int) -> System:
    pfn = pte_at(s, pid, addr)[0]
    s = replace(s, frames=s.frames.set(pfn, s.frames[pfn]._replace(data=value, dirty=True, lazyfree=False)))
    return _model_write(s, pid, vmas.vma_at(s.procs[pid].mm, addr), _page(addr), value)


def write(s: System, pid: int, addr: int, value: int):
    """A store of ``value`` by ``pid``: faults as needed; returns the kind of fault taken."""
    if not _int(value):
        raise EINVAL(f"value must be an int, not {value!r}")
    s, kind = _access(s, pid, addr, True)
    return _store(s, pid, addr, value), kind


def write_forced(s: System, pid: int, addr: int, value: int):
    """A ``FOLL_FORCE | FOLL_WRITE`` write (``/proc/PID/mem``, ptrace): allowed into a private
    mapping without ``VM_WRITE`` (``VM_MAYWRITE`` suffices).  The write breaks COW into an
    anonymous page that only this process maps (``can_follow_write_pte``: the PTE may stay
    read-only, the page must be ``PageAnonExclusive``); it never reaches the page cache.
    EFAULT where GUP refuses."""
    _proc(s, pid)
    if not _int(value) or not _int(addr) or not 0 <= addr < 1 << 47:
        raise EINVAL("bad address or value")
    v = vmas.vma_at(s.procs[pid].mm, addr)
    if v is None:
        raise EFAULT(f"no VMA at {addr:#x}")
    kind = ""
    for _ in range(2):
        cur = pte_at(s, pid, addr)
        if cur is not None and (cur[1] or _follow_write_ok(s, v, cur[0])):
            return _store(s, pid, addr, value), kind
        try:
            s, kind = handle_mm_fault(s, pid, addr, True, forced=True)
        except (SIGSEGV, SIGBUS) as exc:
            raise EFAULT(str(exc)) from exc
    raise AssertionError("a forced write fault always leaves a page it may write")


def _follow_write_ok(s: System, v: vmas.Vma, pfn: int) -> bool:
    """``can_follow_write_pte``: a read-only PTE may be written by FOLL_FORCE only in a private
    mapping without VM_WRITE, and only to an exclusive anonymous page."""
    f = s.frames.get(pfn)
    return (v.flags & VM_SHARED == 0 and v.flags & VM_WRITE == 0 and f is not None
            and f.kind == "anon" and f.exclusive)


# --- zap, protect, move ----------------------------------------------------------------------


def _zap(s: System, pid: int, start: int, end: int) -> System:
    """``zap_pte_range``: clear the PTEs of [start, end) and drop their references; a pin of
    the pinner's own page there stops being coherent."""
    for va, pfn, raw in _ptes(s, pid, start, end):
        s = _clear(s, pid, va)
        f = s.frames.get(pfn)
        dirty = f is not None and (f.dirty or (f.kind == "file" and raw & pte._PAGE_DIRTY != 0))
        s = _get_frame(s, pfn, -1, -1, **({"dirty": dirty} if f is not None else {}))
    pins = tuple(p._replace(coherent=False) if p.pid == pid and start <= p.addr < end else p for p in s.pins)
    return replace(s, pins=pins) if pins != s.pins else s


def _reprotect(s: System, pid: int, start: int, end: int, old: vmas.Mm | None = None) -> System:
    """``change_protection``: give every PTE in [start, end) its VMA's protection, keeping
    writable only what ``can_change_pte_writable`` allows; with ``old`` (the address space
    before mprotect), only PTEs whose VMA flags changed (``mprotect_fixup`` skips the rest)."""
    mm = s.procs[pid].mm
    for va, pfn, raw in _ptes(s, pid, start, end):
        v = vmas.vma_at(mm, va)
        if old is not None:
            was = vmas.vma_at(old, va)
            if was is not None and was.flags == v.flags:
                continue
        frame = s.frames.get(pfn)
        f = _vma_file(s, v)
        excl = frame is not None and frame.kind == "anon" and frame.exclusive
        writable = pte_writable(v.flags, f is not None and f.shmem, frame is not None and frame.dirty and frame.kind == "file", excl)
        special = raw & pte._PAGE_SPECIAL
        pg, _ = paging.protect(s.paging, s.procs[pid].root, va, PAGE_SIZE, pgprot(v.flags, writable) | special)
        s = replace(s, paging=pg)
    return s


def _move(s: System, pid: int, old: int, new: int, length: int) -> System:
    """``move_ptes``: PTEs (and the process's private contents) of [old, old+length) move to
    ``new``; the pages and their counts stay as they are."""
    moved = _ptes(s, pid, old, old + length)
    for va, _, _ in moved:
        s = _clear(s, pid, va)
    for va, pfn, raw in moved:
        pg, _ = paging.map(s.paging, s.procs[pid].root, va - old + new, pfn, PAGE_SIZE, raw & pte.PGPROT_MASK)
        s = replace(s, paging=pg)
        if raw & pte._PAGE_DIRTY and pfn in s.frames:  # the moved entry starts clean: see _copy_pte
            s = _get_frame(s, pfn, 0, 0, dirty=True)
    mem = s.mem
    entries = [(k, val) for k, val in mem.items() if k[0] == pid and old >> PAGE_SHIFT <= k[1] < (old + length) >> PAGE_SHIFT]
    for k, _ in entries:
        mem = mem.delete(k)
    for k, val in entries:
        mem = mem.set((pid, k[1] - (old >> PAGE_SHIFT) + (new >> PAGE_SHIFT)), val)
    pins = tuple(p._replace(addr=p.addr - old + new) if p.pid == pid and old <= p.addr < old + length else p
                 for p in s.pins)
    return replace(s, mem=mem, pins=pins)


# --- populate (GUP) --------------------------------------------------------------------------
#
# Linux populates with get_user_pages: one page at a time, faulting in what is missing and
# stopping at the first page it cannot fault in.  What it populated before stays populated
# and its faults count, so a failure part way leaves a half-done change (see _fail).


def _fail(err: MMError, partial: System) -> MMError:
    """Attach the state Linux leaves to an error raised part way (``error.partial``)."""
    err.partial = partial
    return err


def _faultin_page(s: System, pid: int, va: int, write: bool) -> System:
    """``__get_user_pages`` on one page: ``follow_page_mask`` finds a PTE that allows the
    access, or ``faultin_page`` faults (at most twice: a read fault then the write fault of
    a COW break).  A SIGSEGV/SIGBUS of the fault is GUP's EFAULT; ENOMEM stays ENOMEM."""
    for _ in range(2):
        cur = pte_at(s, pid, va)
        if cur is not None and (cur[1] or not write):
            return s
        try:
            s, _ = handle_mm_fault(s, pid, va, write)
        except (SIGSEGV, SIGBUS) as exc:
            raise EFAULT(str(exc)) from exc
    return s


def gup_write(flags: int) -> bool:
    """``populate_vma_page_range``: a private writable VMA is populated with write faults (to
    break COW now); any other VMA with read faults (``FOLL_FORCE`` so that a write-only or
    exec-only VMA can be read).

    >>> gup_write(VM_READ | VM_WRITE), gup_write(VM_READ | VM_WRITE | VM_SHARED), gup_write(VM_READ)
    (True, False, False)
    """
    return flags & (VM_WRITE | VM_SHARED) == VM_WRITE


def _mm_populate(s: System, pid: int, start: int, end: int, ignore_errors: bool):
    """``__mm_populate``: VMA by VMA over [start, end) (holes skipped), ``VM_IO``/``VM_PFNMAP``
    and ``VM_LOCKONFAULT`` VMAs left alone, every page faulted in as GUP does
    (:func:`gup_write`).  An inaccessible (``PROT_NONE``) VMA is refused with EFAULT
    (``check_vma_flags``: no ``FOLL_FORCE`` for it).  Returns ``(state, error)``: with
    ``ignore_errors`` (``mm_populate`` after mmap, mlockall, brk) a failure skips the rest of
    its VMA and the error is None; without (mlock) the first error stops everything and is
    returned with the state populated up to it."""
    nstart = _page(start)
    while nstart < end:
        v = vmas.find_vma(s.procs[pid].mm, nstart)
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
                s = _faultin_page(s, pid, va, write)
        except (EFAULT, ENOMEM) as err:
            if not ignore_errors:
                return s, err
        nstart = nend
    return s, None


def populate_refused(flags: int, write: bool) -> bool:
    """``check_vma_flags`` as ``MADV_POPULATE_*`` reports it (EINVAL): a ``VM_IO`` or
    ``VM_PFNMAP`` VMA, or one without ``VM_WRITE`` (POPULATE_WRITE) or ``VM_READ``
    (POPULATE_READ: no ``FOLL_FORCE``, so a write-only VMA is refused).

    >>> populate_refused(VM_READ, True), populate_refused(VM_WRITE, False), populate_refused(VM_READ | VM_WRITE, True)
    (True, True, False)
    """
    return _or(flags & (VM_IO | VM_PFNMAP) != 0, _ite(write, flags & VM_WRITE, flags & VM_READ) == 0)


def madvise_populate(s: System, pid: int, start: int, end: int, write: bool) -> System:
    """``madvise_populate`` -> ``faultin_page_range``: fault in [start, end) page by page with
    ``FOLL_MADV_POPULATE`` (read faults for POPULATE_READ, write faults for POPULATE_WRITE,
    whatever the VMA).  ENOMEM at a hole (or when no frame is left), EINVAL at a VMA lacking
    the permission, EFAULT at a page past the end of its file (SIGBUS): the pages before the
    failing one stay populated and their faults count, so the error carries that state as
    ``error.partial``."""
    for va in range(_page(start), end, PAGE_SIZE):
        try:
            v = vmas.vma_at(s.procs[pid].mm, va)
            if v is None:
                raise ENOMEM(f"MADV_POPULATE: no VMA at {va:#x}")
            if populate_refused(v.flags, write):
                raise EINVAL(f"the VMA at {v.start:#x} refuses MADV_POPULATE")
            s = _faultin_page(s, pid, va, write)
        except (ENOMEM, EINVAL, EFAULT) as err:
            raise _fail(err, s) from None
    return s


# --- process-level system calls --------------------------------------------------------------
#
# Each call runs spec.vma's transition for the VMAs, then does the page work.  Linux's
# mprotect, madvise and mlock are not atomic: when spec.vma reports a failure part way (its
# error carries the VMAs Linux leaves as ``error.partial``), the page work for the part done
# is done too, and the error carries the whole System Linux leaves instead.


def _vma_call(s: System, pid: int, fn, *args):
    """``fn(mm, *args)`` of spec.vma on ``pid``'s address space: ``(mm, result)``; a failure
    part way is re-raised with ``error.partial`` = the System with those VMAs (no page work
    yet: the caller adds it)."""
    p = _proc(s, pid)
    try:
        return fn(p.mm, *args)
    except MMError as err:
        partial = getattr(err, "partial", None)
        if isinstance(partial, vmas.Mm):
            err.partial = _set_proc(s, pid, mm=partial)
        raise


def _file_arg(s: System, file):
    if file is None:
        return None
    if isinstance(file, vmas.FileRef):
        return file
    if _int(file) and FILE_INO_BASE + file in s.files:
        return s.files[FILE_INO_BASE + file].ref()
    raise EINVAL(f"no file {file!r}")


def mmap(s: System, pid: int, addr: int, length: int, prot: int, flags: int, file=None, pgoff: int = 0):
    """``mmap(2)`` of ``pid`` (``file`` is the index of a configured file, or a FileRef):
    :func:`spec.vma.mmap` places the VMA; pages a ``MAP_FIXED`` mapping replaces are zapped;
    ``MAP_POPULATE`` (without ``MAP_NONBLOCK``) and ``VM_LOCKED`` mappings are populated by GUP
    (``mm_populate``), whose faults count and whose errors mmap ignores: the pages up to a
    failure (a page past the end of the file, no frame left) stay populated."""
    mm, got = _vma_call(s, pid, vmas.mmap, addr, length, prot, flags, _file_arg(s, file), pgoff)
    length = _align_up(length)
    if flags & MAP_FIXED and not flags & MAP_FIXED_NOREPLACE:
        s = _model_drop(_zap(s, pid, got, got + length), pid, got, got + length)
    s = register_file(_set_proc(s, pid, mm=mm), mm)
    v = vmas.vma_at(mm, got)
    if (flags & (MAP_POPULATE | MAP_NONBLOCK)) == MAP_POPULATE or (v is not None and v.flags & VM_LOCKED):
        s, _ = _mm_populate(s, pid, got, got + length, ignore_errors=True)
    return release_shmem(s), got


def munmap(s: System, pid: int, addr: int, length: int):
    """``munmap(2)``: the VMAs go (:func:`spec.vma.munmap`), the PTEs are zapped and frames
    nobody holds any more go back to the buddy allocator."""
    mm, ret = _vma_call(s, pid, vmas.munmap, addr, length)
    length = _align_up(length)
    s = _zap(_set_proc(s, pid, mm=mm), pid, addr, addr + length)
    return release_shmem(_model_drop(s, pid, addr, addr + length)), ret


def mprotect(s: System, pid: int, addr: int, length: int, prot: int):
    """``mprotect(2)``: new VMA flags, then the PTEs of every VMA whose flags changed are
    re-protected (``mprotect_fixup`` returns early for a VMA whose flags stay the same), and a
    locked private VMA made writable is populated (:func:`_mprotect_populate`).  A
    failure part way (a hole, EACCES) leaves the VMAs before it changed, their PTEs too:
    ``error.partial``."""
    old = s.procs[pid].mm if _int(pid) and pid in s.procs else None
    end = addr + _align_up(length) if _int(addr) and _int(length) else 0
    try:
        mm, ret = _vma_call(s, pid, vmas.mprotect, addr, length, prot)
    except MMError as err:
        partial = getattr(err, "partial", None)
        if partial is not None:
            err.partial = _mprotect_populate(_reprotect(partial, pid, addr, end, old), pid, old, addr, end)
        raise
    s = _reprotect(_set_proc(s, pid, mm=mm), pid, addr, end, old)
    return _mprotect_populate(s, pid, old, addr, end), ret


def _mprotect_populate(s: System, pid: int, old: vmas.Mm, start: int, end: int) -> System:
    """``mprotect_fixup``: a private ``VM_LOCKED`` VMA that becomes writable is populated at
    once (``populate_vma_page_range``, its result ignored), so that COW is broken now rather
    than by a fault on a locked page."""
    for v in old.vmas:
        if v.end <= start or v.start >= end or v.flags & (VM_WRITE | VM_SHARED | VM_LOCKED) != VM_LOCKED:
            continue
        lo, hi = max(start, v.start), min(end, v.end)
        new = vmas.vma_at(s.procs[pid].mm, lo)
        if new is not None and new.flags & VM_WRITE:
            s, _ = _mm_populate(s, pid, lo, hi, ignore_errors=True)
    return s


def mremap(s: System, pid: int, old_addr: int, old_len: int, new_len: int, flags: int, new_addr: int = 0):
    """``mremap(2)``: :func:`spec.vma.mremap` decides where; a shrink zaps the tail, a move
    zaps what the destination replaced and moves the PTEs (``MREMAP_DONTUNMAP`` leaves the old
    VMA empty)."""
    mm, got = _vma_call(s, pid, vmas.mremap, old_addr, old_len, new_len, flags, new_addr)
    old_len, new_len = _align_up(old_len), _align_up(new_len)
    s = _set_proc(s, pid, mm=mm)
    keep = min(old_len, new_len)
    if new_len < old_len:
        s = _model_drop(_zap(s, pid, old_addr + new_len, old_addr + old_len), pid, old_addr + new_len, old_addr + old_len)
    if got != old_addr and old_len:
        s = _model_drop(_zap(s, pid, got, got + new_len), pid, got, got + new_len)
        s = _move(s, pid, old_addr, got, keep)
        if not flags & MREMAP_DONTUNMAP:
            s = _zap(s, pid, old_addr, old_addr + old_len)
    return release_shmem(s), got


def _advise_pages(s: System, pid: int, mm: vmas.Mm, start: int, end: int, advice: int) -> tuple[System, MMError | None]:
    """The page work of ``MADV_DONTNEED``/``MADV_FREE`` VMA by VMA in ``mm`` (holes skipped),
    as ``madvise_walk_vmas`` does it: stops at the first VMA the advice refuses (returning
    that error), after the work on the VMAs before it."""
    for v in mm.vmas:
        if v.end <= start or v.start >= end:
            continue
        try:
            vmas._madvise_check(advice, v)
        except MMError as err:
            return s, err
        lo, hi = max(start, v.start), min(end, v.end)
        if advice == MADV_FREE:
            for va, pfn, raw in _ptes(s, pid, lo, hi):
                f = s.frames.get(pfn)
                if f is not None and f.kind == "anon" and f.mapcount == 1:  # madvise_free_pte_range
                    s = _install(_clear(s, pid, va), pid, va, pfn, raw & pte.PGPROT_MASK)  # pte_mkclean
                    s = replace(s, frames=s.frames.set(pfn, f._replace(dirty=False, lazyfree=True)))
        else:
            s = _model_drop(_zap(s, pid, lo, hi), pid, lo, hi)
    return s, None


def madvise(s: System, pid: int, addr: int, length: int, advice: int):
    """``madvise(2)``: :func:`spec.vma.madvise` validates and sets flags; ``MADV_DONTNEED``
    zaps, ``MADV_FREE`` marks exclusive anonymous pages clean and lazily freeable (both VMA by
    VMA, so a hole or a refused VMA leaves the work before it done: ``error.partial``), and
    ``MADV_POPULATE_READ/WRITE`` fault the range in (:func:`madvise_populate`)."""
    populate = advice in (MADV_POPULATE_READ, MADV_POPULATE_WRITE)
    old = s.procs[pid].mm if _int(pid) and pid in s.procs else None
    end = addr + _align_up(length) if _int(addr) and _int(length) else 0
    try:
        mm, ret = _vma_call(s, pid, vmas.madvise, addr, length, advice)
    except MMError as err:
        partial = getattr(err, "partial", None)
        if partial is None:
            raise  # the arguments are wrong: nothing done
        if not populate:
            if advice in (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE):
                err.partial, _ = _advise_pages(partial, pid, old, addr, end, advice)
            raise
        mm, ret = old, 0  # madvise_populate does its own checks, page by page
    s = _set_proc(s, pid, mm=mm)
    if advice in (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE):
        s, _ = _advise_pages(s, pid, old, addr, end, advice)
    elif populate:
        s = madvise_populate(s, pid, addr, end, advice == MADV_POPULATE_WRITE)
    return s, ret


def mlock_posix_error(err: MMError) -> MMError:
    """``__mlock_posix_error_return``: GUP's EFAULT is mlock's ENOMEM, its ENOMEM is EAGAIN."""
    if isinstance(err, EFAULT):
        return ENOMEM(f"mlock: cannot populate ({err})")
    if isinstance(err, ENOMEM):
        return EAGAIN(f"mlock: out of memory while populating ({err})")
    return err


def _do_mlock(s: System, pid: int, addr: int, length: int, flags: int):
    """``do_mlock``: lock the VMAs (:func:`spec.vma.mlock`), then ``__mm_populate`` without
    ignoring errors: a failure (a ``PROT_NONE`` VMA, a page past the end of a file) leaves the
    VMAs locked and the pages before it populated (``error.partial``)."""
    try:
        mm, ret = _vma_call(s, pid, vmas.mlock, addr, length, flags)
    except ENOMEM as err:
        # spec.vma reports the PROT_NONE populate failure itself, with every VMA locked;
        # any other ENOMEM (a hole, a failed split, the rlimit) happens before population
        partial = getattr(err, "partial", None)
        if partial is None or not locked_throughout(partial.procs[pid].mm, addr, length):
            raise
        mm, ret = partial.procs[pid].mm, 0
    start = _page(addr)
    end = start + _align_up(length + (addr - start))
    s, err = _mm_populate(_set_proc(s, pid, mm=mm), pid, start, end, ignore_errors=False)
    if err is not None:
        raise _fail(mlock_posix_error(err), s)
    return s, ret


def locked_throughout(mm: vmas.Mm, addr: int, length: int) -> bool:
    """Is [addr, addr+length) covered by VMAs that are all VM_LOCKED?"""
    start = _page(addr)
    end = start + _align_up(length + (addr - start))
    pos = start
    for v in mm.vmas:
        if v.end <= pos or v.start >= end:
            continue
        if v.start > pos or not v.flags & VM_LOCKED:
            return False
        pos = v.end
    return pos >= end


def mlock(s: System, pid: int, addr: int, length: int):
    """``mlock(2)``: lock the VMAs, then populate them (:func:`_do_mlock`)."""
    return _do_mlock(s, pid, addr, length, 0)


def mlock2(s: System, pid: int, addr: int, length: int, flags: int):
    """``mlock2(2)``: with ``MLOCK_ONFAULT`` the VMAs are ``VM_LOCKONFAULT`` and populating
    them does nothing."""
    return _do_mlock(s, pid, addr, length, flags)


def munlock(s: System, pid: int, addr: int, length: int):
    """``munlock(2)``: the pages stay resident."""
    mm, ret = _vma_call(s, pid, vmas.munlock, addr, length)
    return _set_proc(s, pid, mm=mm), ret


def mlockall(s: System, pid: int, flags: int):
    """``mlockall(2)``: ``MCL_CURRENT`` populates every VMA (unless ``MCL_ONFAULT``), ignoring
    errors (``mm_populate(0, TASK_SIZE)``)."""
    mm, ret = _vma_call(s, pid, vmas.mlockall, flags)
    s = _set_proc(s, pid, mm=mm)
    if flags & MCL_CURRENT and not flags & MCL_ONFAULT:
        s, _ = _mm_populate(s, pid, 0, 1 << 47, ignore_errors=True)
    return s, ret


def munlockall(s: System, pid: int):
    """``munlockall(2)``."""
    mm, ret = _vma_call(s, pid, vmas.munlockall)
    return _set_proc(s, pid, mm=mm), ret


def brk(s: System, pid: int, new: int):
    """``brk(2)``: a shrink zaps the freed pages; growth under ``mlockall(MCL_FUTURE)``
    populates; returns the break as Linux does."""
    old = _proc(s, pid).mm.brk
    mm, ret = _vma_call(s, pid, vmas.brk, new)
    s = _set_proc(s, pid, mm=mm)
    old_end, new_end = _align_up(old), _align_up(mm.brk)
    if new_end < old_end:
        s = _model_drop(_zap(s, pid, new_end, old_end), pid, new_end, old_end)
    elif new_end > old_end and mm.def_flags & VM_LOCKED:
        s, _ = _mm_populate(s, pid, old_end, new_end, ignore_errors=True)
    return s, ret


# --- fork, exit, pins ------------------------------------------------------------------------


def _copy_pte(s: System, parent: int, child: int, src: vmas.Vma, va: int, pfn: int, raw: int) -> System:
    """``copy_present_pte``: share the page with the child (write-protecting both PTEs in a COW
    mapping), or copy a possibly pinned anonymous page for the child at once."""
    frame = s.frames.get(pfn)
    prot = raw & pte.PGPROT_MASK
    cow = is_cow_mapping(src.flags)
    if frame is not None and frame.kind == "anon" and needs_cow_for_dma(frame.refcount > frame.mapcount, cow):
        s, new = _alloc(s, frame._replace(refcount=1, mapcount=1, exclusive=True, dirty=True))
        return _install(s, child, va, new, pgprot(src.flags, src.flags & VM_WRITE != 0))  # copy_present_page
    if cow and prot & pte._PAGE_RW:
        pg, _ = paging.protect(s.paging, s.procs[parent].root, va, PAGE_SIZE, prot & ~pte._PAGE_RW)
        s, prot = replace(s, paging=pg), prot & ~pte._PAGE_RW
    s = _install(s, child, va, pfn, prot)
    if frame is None:
        return s
    # the child's entry starts clean in the model, where Linux copies the Dirty bit: it
    # becomes the page's dirty flag, which smaps counts the same way
    dirty = frame.dirty or raw & pte._PAGE_DIRTY != 0
    return _get_frame(s, pfn, 1, 1, exclusive=False if frame.kind == "anon" else frame.exclusive, dirty=dirty)


def fork(s: System, pid: int):
    """``fork(2)`` (``dup_mmap``): the child's VMAs from :func:`spec.vma.fork`; PTEs copied for
    every private VMA with an anon_vma that the child keeps without ``VM_WIPEONFORK``; the
    content model copied likewise.  Returns the child's pid."""
    p = _proc(s, pid)
    child = s.next_pid
    parent_mm, child_mm = vmas.fork(p.mm, child)
    pg, root = paging.new_mm(s.paging)
    s = replace(s, paging=pg, next_pid=child + 1, procs=s.procs.set(child, Proc(child_mm, root)))
    s = _set_proc(s, pid, mm=parent_mm)
    kept = {(v.start, v.end): v for v in child_mm.vmas}
    mem = s.mem
    for src in p.mm.vmas:
        dst = kept.get((src.start, src.end))
        if dst is None or dst.flags & VM_WIPEONFORK:
            continue
        for k in [k for k in s.mem if k[0] == pid and src.start >> PAGE_SHIFT <= k[1] < src.end >> PAGE_SHIFT]:
            mem = mem.set((child, k[1]), s.mem[k])
        if src.anon_vma is None or src.flags & VM_SHARED:
            continue
        for va, pfn, raw in _ptes(s, pid, src.start, src.end):
            s = _copy_pte(s, pid, child, src, va, pfn, raw)
    return replace(s, mem=mem), child


def exit(s: System, pid: int):
    """``exit(2)`` (``exit_mmap``): every PTE zapped, the page table freed, the pins of the
    process dropped, the process gone."""
    p = _proc(s, pid)
    for pn in [pn for pn in s.pins if pn.pid == pid]:
        s = _unpin_one(s, pn)
    s = _zap(s, pid, 0, 1 << 47)
    pg, _ = paging.free_mm(s.paging, p.root)
    s = _model_drop(replace(s, paging=pg), pid, 0, 1 << 47)
    return release_shmem(replace(s, procs=s.procs.delete(pid))), 0


def pin(s: System, pid: int, addr: int, write: bool):
    """``pin_user_pages(FOLL_LONGTERM)`` of one page: fault it in (a write fault for a write
    pin; for a read pin in a COW mapping of anything but an exclusive anonymous page -- a page
    shared since fork, the zero page, a page-cache page -- an unshare fault that gives this
    process its own exclusive copy: ``gup_must_unshare``, Linux commit 84209e87c696 "mm/gup:
    reliable R/O long-term pinning in COW mappings", v6.2), then take a reference.
    EFAULT where GUP refuses.  Returns the number of pins the process holds."""
    _proc(s, pid)
    if not isinstance(write, bool) or not _int(addr) or not 0 <= addr < 1 << 47:
        raise EINVAL("bad pin request")
    v = vmas.vma_at(s.procs[pid].mm, addr)
    if v is None or access_error(write, v.flags) or (not write and v.flags & VM_READ == 0):
        raise EFAULT(f"cannot pin {addr:#x}")
    addr = _page(addr)
    try:
        for _ in range(3):
            cur = pte_at(s, pid, addr)
            if cur is None or (write and not cur[1]):
                s, _ = handle_mm_fault(s, pid, addr, write)
                continue
            f = s.frames.get(cur[0])
            exclusive_anon = f is not None and f.kind == "anon" and f.exclusive
            if not write and not exclusive_anon and is_cow_mapping(v.flags):
                s, _ = handle_mm_fault(s, pid, addr, False, unshare=True)
                continue
            break
    except (SIGSEGV, SIGBUS) as exc:
        raise EFAULT(str(exc)) from exc
    pfn = pte_at(s, pid, addr)[0]
    s = _get_frame(s, pfn, 1, 0)
    s = replace(s, pins=s.pins + (Pin(pid, addr, pfn, write),))
    return s, sum(1 for p in s.pins if p.pid == pid)


def _unpin_one(s: System, pn: Pin) -> System:
    i = s.pins.index(pn)
    s = replace(s, pins=s.pins[:i] + s.pins[i + 1:])
    return _get_frame(s, pn.pfn, -1, 0)


def unpin(s: System, pid: int, addr: int):
    """``unpin_user_page``: drop the oldest pin ``pid`` holds on the page at ``addr``."""
    _proc(s, pid)
    mine = [p for p in s.pins if p.pid == pid and _int(addr) and p.addr == _page(addr)]
    if not mine:
        raise EINVAL(f"process {pid} holds no pin at {addr!r}")
    return _unpin_one(s, mine[0]), 0


def write_pin(s: System, pid: int, addr: int, value: int):
    """A write through the oldest write pin ``pid`` holds at ``addr`` (a device's DMA into a
    pinned buffer): it changes the pinned frame, which is the pinner's page while the pin is
    coherent."""
    _proc(s, pid)
    mine = [p for p in s.pins if p.pid == pid and p.write and _int(addr) and p.addr == _page(addr)]
    if not mine or not _int(value):
        raise EINVAL(f"process {pid} holds no write pin at {addr!r}")
    pn = mine[0]
    s = replace(s, frames=s.frames.set(pn.pfn, s.frames[pn.pfn]._replace(data=value, dirty=True)))
    if pn.coherent:
        s = _model_write(s, pid, vmas.vma_at(s.procs[pid].mm, pn.addr), pn.addr, value)
    return s, 0




# --- programs: a batch of system calls ---------------------------------------------------------

#: where a program's window starts (the oracle's arena, far below mmap_base)
WINDOW_BASE = 0x200000000000
#: the result of a step of a process that no longer exists (killed by a signal, or exited)
GONE = "no-process"


def program_step(s: System, pid: int, step: tuple, base: int):
    """One step of the program format (a system call or a touch, not fork/exit) by ``pid``:
    ``(state, ret)`` with ``ret`` as :func:`run` reports it; typed errors raise, those raised
    part way (a touch that faults after its first pages, see also the module docstring) with
    ``error.partial``."""
    op, a = step[0], step[1:]

    def at(off: int) -> int:
        return base + off * PAGE_SIZE

    if op in ("mmap", "mmap_file"):
        s, r = mmap(s, pid, at(a[0]), a[1] * PAGE_SIZE, a[2], a[3], *a[4:6])
        return s, (r - base) // PAGE_SIZE
    if op == "mremap":
        s, r = mremap(s, pid, at(a[0]), a[1] * PAGE_SIZE, a[2] * PAGE_SIZE, a[3], at(a[4]))
        return s, (r - base) // PAGE_SIZE
    if op == "brk":
        s, r = brk(s, pid, s.procs[pid].mm.brk + a[0])
        return s, r - base
    if op == "touch":  # one access per page; a fault part way leaves the pages before touched
        for page in range(a[0], a[0] + a[1]):
            try:
                s, _ = touch(s, pid, at(page), bool(a[2]))
            except MMError as err:
                raise _fail(err, s) from None
        return s, 0
    calls = {"munmap": lambda: munmap(s, pid, at(a[0]), a[1] * PAGE_SIZE),
             "mprotect": lambda: mprotect(s, pid, at(a[0]), a[1] * PAGE_SIZE, a[2]),
             "madvise": lambda: madvise(s, pid, at(a[0]), a[1] * PAGE_SIZE, a[2]),
             "mlock": lambda: mlock(s, pid, at(a[0]), a[1] * PAGE_SIZE),
             "mlock2": lambda: mlock2(s, pid, at(a[0]), a[1] * PAGE_SIZE, a[2]),
             "munlock": lambda: munlock(s, pid, at(a[0]), a[1] * PAGE_SIZE),
             "mlockall": lambda: mlockall(s, pid, a[0]),
             "munlockall": lambda: munlockall(s, pid)}
    if op not in calls:
        raise EINVAL(f"unknown program step {op!r}")
    return calls[op]()


def run(s: System, program, base: int = WINDOW_BASE, pid: int = 1):
    """Run a program (the step format the kernel oracle uses: offsets and lengths in pages
    from ``base``; ``("fork",)``, ``("in", proc, step)``, ``("exit", proc)``; process 0 is
    ``pid``, 1, 2 … its children in fork order) one step at a time, as the kernel would:
    a step that fails part way continues from ``error.partial``, a SIGSEGV or SIGBUS kills
    its process (the pages it touched before stay touched).  Returns ``(state, results)``,
    one result per step: the return value (an address as a page offset from ``base`` for
    mmap/mremap, the break minus ``base`` for brk, the child's process number for fork), the
    errno or signal name of a failure (``"ENOMEM"``, ``"SIGSEGV"`` …), or :data:`GONE` for a
    step of a process that no longer exists.

    >>> from spec.mman import PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE
    >>> from spec.mman import MADV_POPULATE_WRITE
    >>> RW, PA = PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
    >>> s, out = run(init(), (("mmap", 2, 2, RW, PA), ("madvise", 3, 3, MADV_POPULATE_WRITE),
    ...                       ("fork",), ("in", 1, ("touch", 0, 1, True))))
    >>> out, s.procs[1].minflt, sorted(s.procs)
    ([2, 'ENOMEM', 1, 'SIGSEGV'], 1, [1])
    """
    procs, results, children = {0: pid}, [], 0
    for step in program:
        proc, inner = (step[1], tuple(step[2])) if step[0] == "in" else (0, tuple(step))
        if inner[0] == "exit":
            proc = inner[1]
        who = procs.get(proc)
        if who is None or who not in s.procs:
            children += inner[0] == "fork"
            results.append(GONE)
            continue
        try:
            if inner[0] == "fork":
                s, child = fork(s, who)
                children += 1
                procs[children] = child
                ret = children
            elif inner[0] == "exit":
                s, ret = exit(s, who)
                del procs[proc]
            else:
                s, ret = program_step(s, who, inner, base)
        except MMError as err:
            ret = type(err).__name__
            partial = getattr(err, "partial", None)
            if isinstance(partial, System):
                s = partial
            if isinstance(err, (SIGSEGV, SIGBUS)):  # the kernel kills the process
                s, _ = exit(s, who)
                del procs[proc]
        results.append(ret)
    return s, results

