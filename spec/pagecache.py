"""A minimal page cache: file pages filled on first access, and fault-around.

Part of :mod:`spec.fault` (read that module's docstring first).  A file is a
:class:`spec.process.File` of a fixed number of pages.  ``filemap_fault``/``shmem_fault``
(:func:`cache_page`) find a page in the page cache or fill it -- from the disk for a regular
file (a major fault), by allocation for shmem (memfd, shared anonymous memory: a minor fault);
``do_fault_around`` + ``filemap_map_pages`` (:func:`fault_around`) map the already-cached
neighbours of a read fault; the shmem file of a shared anonymous mapping is dropped with its
last mapping (:func:`release_shmem`).  No readahead, no eviction, no truncation.

>>> from spec.process import FILE_INO_BASE, init
>>> s = init()
>>> disk, memfd = s.files[FILE_INO_BASE + 1], s.files[FILE_INO_BASE]
>>> s, pfn, major = cache_page(s, disk, 0)      # read from the disk
>>> major, cache_page(s, disk, 0)[1:] == (pfn, False)
(True, True)
>>> cache_page(s, memfd, 0)[2]                 # shmem: allocated, a minor fault
False
"""

from __future__ import annotations

from dataclasses import replace

from spec import vma as vmas
from spec.process import (
    FAULT_AROUND_PAGES,
    PTRS_PER_PTE,
    File,
    Frame,
    System,
    _alloc,
    _file_index,
    _get_frame,
    _install,
    pgprot,
    pte_at,
    pte_writable,
)
from spec.vma import VM_SHARED
from spec.zone import PAGE_SHIFT


def register_file(s: System, mm: vmas.Mm) -> System:
    """Give every shmem file of a new shared anonymous mapping its :class:`File`."""
    files = s.files
    for v in mm.vmas:
        if v.file is not None and v.file.ino not in files:
            pages = v.file.size or (v.end - v.start) >> PAGE_SHIFT
            files = files.set(v.file.ino, File(v.file.ino, v.file.path, pages, True, True))
    return replace(s, files=files) if files is not s.files else s


def cache_page(s: System, f: File, index: int) -> tuple[System, int, bool]:
    """``filemap_fault``/``shmem_fault``: the page-cache page of ``index``, read in (major,
    for a regular file) or allocated (shmem) on a miss."""
    key = (f.ino, index)
    if key in s.cache:
        return s, s.cache[key], False
    s, pfn = _alloc(s, Frame("file", 1, 0, False, False, s.filedata.get(key, 0), f.ino, index, True))
    return replace(s, cache=s.cache.set(key, pfn)), pfn, not f.shmem


def map_cached(s: System, pid: int, v: vmas.Vma, f: File, addr: int, pfn: int, write: bool) -> System:
    s = _install(s, pid, addr, pfn, pgprot(v.flags, pte_writable(v.flags, f.shmem, write, False)))
    return _get_frame(s, pfn, 1, 1, dirty=s.frames[pfn].dirty or (write and v.flags & VM_SHARED != 0))


def fault_around(s: System, pid: int, v: vmas.Vma, f: File, addr: int) -> System:
    """``do_fault_around`` + ``filemap_map_pages``: map the pages already in the page cache
    in the aligned 64 KiB window around ``addr`` (inside the VMA, the PTE table and the
    file), where no PTE is present."""
    pte_off = (addr >> PAGE_SHIFT) % PTRS_PER_PTE
    vma_off = (addr - v.start) >> PAGE_SHIFT
    start = max(pte_off - pte_off % FAULT_AROUND_PAGES, pte_off - min(pte_off, vma_off))
    end = min(start + FAULT_AROUND_PAGES, PTRS_PER_PTE, pte_off + ((v.end - v.start) >> PAGE_SHIFT) - vma_off)
    for off in range(start, end):
        va = addr + ((off - pte_off) << PAGE_SHIFT)
        index = _file_index(v, va)
        if index >= f.pages or (f.ino, index) not in s.cache or pte_at(s, pid, va) is not None:
            continue
        s = map_cached(s, pid, v, f, va, s.cache[(f.ino, index)], False)
    return s


def release_shmem(s: System) -> System:
    """Drop the shmem file of a shared anonymous mapping once no VMA maps it."""
    used = {v.file.ino for p in s.procs.values() for v in p.mm.vmas if v.file is not None}
    for ino, f in list(s.files.items()):
        if f.anon and ino not in used:
            for key in [k for k in s.cache if k[0] == ino]:
                pfn = s.cache[key]
                s = replace(s, cache=s.cache.delete(key))
                s = _get_frame(s, pfn, -1, 0, cached=False)
            fd = s.filedata
            for key in [k for k in fd if k[0] == ino]:
                fd = fd.delete(key)
            s = replace(s, files=s.files.delete(ino), filedata=fd)
    return s


