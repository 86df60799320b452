"""DAX: files on persistent memory mapped straight into user space (fs/dax.c, mm/mmap.c).

**The problem.**  A file system on a PMEM device (ext4 or XFS mounted with ``-o dax``) can
map a file's blocks directly into a process: loads and stores reach the PMEM frames with no
page cache in between, so ``msync`` has no dirty pages to write -- only CPU cache lines.  What
the file system still owns is *metadata*: which PMEM block backs which page of the file.  A
write fault on a hole allocates a block; that allocation sits in the journal until an
``fsync``.  ``MAP_SYNC`` (Linux 4.15) closes the gap: on a MAP_SYNC mapping a write fault does
not return until the metadata of the faulting page is durable (``dax_finish_sync_fault`` ->
``vfs_fsync_range``), so a program may persist its data with CLWB+SFENCE alone and never call
``fsync``.

**mmap's flag checks** (``do_mmap``): the flags are first turned into VMA flags, MAP_SYNC into
``VM_SYNC`` (``calc_vm_flag_bits``, shown as ``sf`` in smaps).  For a file, ``MAP_SHARED``
drops every flag outside ``LEGACY_MAP_MASK`` and ``MAP_SHARED_VALIDATE`` refuses them with
``EOPNOTSUPP`` unless the file's operations allow MAP_SYNC (``FOP_MMAP_SYNC``: ext4, XFS).
The file system's ``->mmap`` (``ext4_file_mmap`` -> ``daxdev_mapping_supported``) then
refuses a VMA with ``VM_SYNC`` unless the file is DAX.  tmpfs has neither check, so there
``MAP_SHARED|MAP_SYNC`` and ``MAP_PRIVATE|MAP_SYNC`` succeed with ``VM_SYNC`` set and no effect.
An anonymous mapping accepts only MAP_SHARED or MAP_PRIVATE (``EINVAL`` otherwise).
:func:`mmap_flags` reproduces these checks; ``tests/oracle/test_pmem.py`` runs them against
the live kernel.

**The model.**  A PMEM device of ``pages`` 4 KiB frames under :mod:`spec.pmem`'s persistency
model; files are arrays of pages, each a PMEM frame or a hole, with a flag saying whether the
frame's allocation is durable.  A store through a mapping faults a hole in (allocating the
lowest free frame, zeroed), then stores to the frame.  ``fsync``/``msync`` on DAX write back
every cache line of the file's frames (``dax_writeback_mapping_range`` -> ``dax_flush`` ->
CLWB) then fence, and make every allocation durable.  After a crash a page whose allocation
was not durable reads as a hole (zeros), whatever its frame held.  Simplified: one process,
one file system, whole-file fsync, no extents, no unwritten-extent conversion, no DAX PMD
mappings.

>>> s = init(DaxConfig(pages=2))
>>> s, _ = creat(s, "log", 1)
>>> s, m = mmap(s, "log", MAP_SHARED_VALIDATE | MAP_SYNC)
>>> s, _ = store(s, m, 0, 42)
>>> sorted(crash(s)[1])                  # allocation durable (MAP_SYNC), data not yet flushed
[(('log', ((0,),)),), (('log', ((42,),)),)]
>>> s, _ = flush(s, m, 0, 8)             # CLWB + SFENCE: no fsync needed
>>> sorted(crash(s)[1])
[(('log', ((42,),)),)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from immutables import Map

from spec import pmem
from spec.errors import EINVAL, ENOMEM, EOPNOTSUPP

from spec.mman import (  # noqa: F401  (re-exported: dax.MAP_SYNC etc.)
    LEGACY_MAP_MASK, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_PRIVATE, MAP_SHARED,
    MAP_SHARED_VALIDATE, MAP_SYNC, MAP_TYPE,
)
from spec.zone import PAGE_SIZE
WORDS_PER_PAGE = PAGE_SIZE // pmem.WORD

#: file systems: (file operations allow MAP_SYNC (FOP_MMAP_SYNC), ->mmap checks VM_SYNC against DAX)
FILESYSTEMS = {"ext4": (True, True), "xfs": (True, True), "tmpfs": (False, False)}


def mmap_flags(flags: int, fs: str | None, dax: bool = False) -> bool:
    """``do_mmap``'s flag checks and the file system's ``->mmap``: whether the VMA gets
    ``VM_SYNC``, or the errno (``EOPNOTSUPP``, ``EINVAL``).  ``fs=None`` is anonymous memory.

    >>> mmap_flags(MAP_SHARED_VALIDATE | MAP_SYNC, "ext4", dax=True)
    True
    >>> mmap_flags(MAP_SHARED | MAP_SYNC, "tmpfs")
    True
    >>> mmap_flags(MAP_SHARED_VALIDATE | MAP_SYNC, "ext4", dax=False)
    Traceback (most recent call last):
    ...
    spec.errors.EOPNOTSUPP: ext4: VM_SYNC on a file that is not DAX
    """
    vm_sync = bool(flags & MAP_SYNC)  # calc_vm_flag_bits() runs before the type checks
    kind = flags & MAP_TYPE
    if fs is None:
        if kind not in (MAP_SHARED, MAP_PRIVATE):
            raise EINVAL(f"anonymous mapping of type {kind:#x}")
        return vm_sync
    if fs not in FILESYSTEMS:
        raise EINVAL(f"unknown file system {fs!r}")
    fop_sync, checks_dax = FILESYSTEMS[fs]
    mask = LEGACY_MAP_MASK | (MAP_SYNC if fop_sync else 0)
    if kind == MAP_SHARED:
        flags &= LEGACY_MAP_MASK
    if kind in (MAP_SHARED, MAP_SHARED_VALIDATE) and flags & ~mask:
        raise EOPNOTSUPP(f"{fs}: flags {flags & ~mask:#x} not supported with MAP_SHARED_VALIDATE")
    if kind not in (MAP_SHARED, MAP_SHARED_VALIDATE, MAP_PRIVATE):
        raise EINVAL(f"mapping type {kind:#x}")
    if checks_dax and vm_sync and not dax:
        raise EOPNOTSUPP(f"{fs}: VM_SYNC on a file that is not DAX")
    return vm_sync


def vmflags(flags: int, vm_sync: bool) -> str:
    """The smaps ``VmFlags`` of a read-write file mapping: ``rd wr [sh] mr mw me [ms|ac] [sf]``.

    >>> vmflags(MAP_SHARED, True)
    'rd wr sh mr mw me ms sf'
    """
    shared = flags & MAP_TYPE != MAP_PRIVATE
    return " ".join(["rd", "wr"] + (["sh"] if shared else []) + ["mr", "mw", "me"]
                    + (["ms"] if shared else ["ac"]) + (["sf"] if vm_sync else []))


class DaxConfig(NamedTuple):
    """A PMEM device of ``pages`` frames, its persistence domain, and the fence reading."""

    pages: int = 4
    domain: str = "adr"
    synchronous: bool = True


class DaxFile(NamedTuple):
    """A file: per page, its PMEM frame or None (a hole), and whether that allocation is durable."""

    frames: tuple[int | None, ...]
    durable: tuple[bool, ...]


class Mapping(NamedTuple):
    """A MAP_SHARED mapping of a whole DAX file."""

    name: str
    sync: bool


@dataclass(frozen=True)
class DaxState:
    """The device under the persistency model, the files, and the mappings."""

    config: DaxConfig
    pmem: pmem.PmemState
    files: Map
    mappings: tuple[Mapping, ...] = ()


def init(config: DaxConfig | None = None) -> DaxState:
    """A zeroed device with an empty file system."""
    cfg = config if config is not None else DaxConfig()
    if not isinstance(cfg, DaxConfig) or cfg.pages < 1:
        raise EINVAL(f"bad DAX configuration {cfg!r}")
    dev = pmem.init(pmem.PmemConfig(cfg.pages * WORDS_PER_PAGE, 1, cfg.domain, cfg.synchronous))
    return DaxState(cfg, dev, Map())


def creat(state: DaxState, name: str, pages: int):
    """Create a sparse file of ``pages`` pages (all holes), durably (``creat`` + ``fsync``)."""
    if not isinstance(name, str) or name in state.files or not pmem._is_int(pages) or pages < 1:
        raise EINVAL(f"cannot create {name!r} with {pages!r} pages")
    f = DaxFile((None,) * pages, (True,) * pages)
    return DaxState(state.config, state.pmem, state.files.set(name, f), state.mappings), None


def mmap(state: DaxState, name: str, flags: int):
    """``mmap(fd, MAP_SHARED[_VALIDATE][|MAP_SYNC])`` of a whole DAX file: a mapping handle."""
    if name not in state.files:
        raise EINVAL(f"no file {name!r}")
    if flags & MAP_TYPE == MAP_PRIVATE:
        raise EINVAL("the model maps DAX files MAP_SHARED only")
    sync = mmap_flags(flags, "ext4", dax=True)
    m = Mapping(name, sync)
    return DaxState(state.config, state.pmem, state.files, state.mappings + (m,)), len(state.mappings)


def _fault(state: DaxState, name: str, page: int, sync: bool) -> DaxState:
    """A write fault on a hole: allocate the lowest free frame (already zero); with MAP_SYNC
    the allocation is durable before the fault returns."""
    used = {fr for f in state.files.values() for fr in f.frames if fr is not None}
    free = [p for p in range(state.config.pages) if p not in used]
    if not free:
        raise ENOMEM("the PMEM device is full")
    f = state.files[name]
    frames = f.frames[:page] + (free[0],) + f.frames[page + 1 :]
    durable = f.durable[:page] + (sync,) + f.durable[page + 1 :]
    return DaxState(state.config, state.pmem, state.files.set(name, DaxFile(frames, durable)), state.mappings)


def store(state: DaxState, mapping: int, offset: int, value: int):
    """A store through a mapping at byte ``offset`` of the file: straight to the PMEM frame."""
    if not pmem._is_int(mapping) or not 0 <= mapping < len(state.mappings):
        raise EINVAL(f"no mapping {mapping!r}")
    m = state.mappings[mapping]
    f = state.files[m.name]
    if not pmem._is_int(offset) or not 0 <= offset < len(f.frames) * PAGE_SIZE or offset % pmem.WORD:
        raise EINVAL(f"offset {offset!r} is not an aligned word of the file")
    page = offset // PAGE_SIZE
    if f.frames[page] is None:
        state = _fault(state, m.name, page, m.sync)
    frame = state.files[m.name].frames[page]
    dev, _ = pmem.store(state.pmem, 0, frame * PAGE_SIZE + offset % PAGE_SIZE, value)
    return DaxState(state.config, dev, state.files, state.mappings), None


def flush(state: DaxState, mapping: int, offset: int, length: int):
    """User-space persistence on a MAP_SYNC mapping: libpmem ``pmem_persist`` of the range."""
    if not pmem._is_int(mapping) or not 0 <= mapping < len(state.mappings):
        raise EINVAL(f"no mapping {mapping!r}")
    m = state.mappings[mapping]
    f = state.files[m.name]
    if not pmem._is_int(offset) or not pmem._is_int(length) or offset < 0 or length < 1 or offset + length > len(f.frames) * PAGE_SIZE:
        raise EINVAL(f"range [{offset!r}, +{length!r}) is outside the file")
    dev = state.pmem
    for page in range(offset // PAGE_SIZE, (offset + length - 1) // PAGE_SIZE + 1):
        if f.frames[page] is not None:
            lo = max(offset, page * PAGE_SIZE)
            hi = min(offset + length, (page + 1) * PAGE_SIZE)
            dev, _ = pmem.pmem_flush(dev, 0, f.frames[page] * PAGE_SIZE + lo % PAGE_SIZE, hi - lo)
    dev, _ = pmem.pmem_drain(dev, 0)
    return DaxState(state.config, dev, state.files, state.mappings), None


def fsync(state: DaxState, name: str):
    """``fsync``/``msync(MS_SYNC)`` on a DAX file: CLWB every line of its frames, SFENCE, and
    commit the allocations (``dax_writeback_mapping_range`` and the journal)."""
    if name not in state.files:
        raise EINVAL(f"no file {name!r}")
    f = state.files[name]
    dev = state.pmem
    for fr in f.frames:
        if fr is not None:
            dev, _ = pmem.pmem_flush(dev, 0, fr * PAGE_SIZE, PAGE_SIZE)
    dev, _ = pmem.sfence(dev, 0)
    files = state.files.set(name, DaxFile(f.frames, (True,) * len(f.frames)))
    return DaxState(state.config, dev, files, state.mappings), None


def read_file(image: tuple[int, ...], f: DaxFile) -> tuple[tuple[int, ...], ...]:
    """A file's pages after a crash, from a device image: holes and non-durable pages read zero."""
    out = []
    for fr, ok in zip(f.frames, f.durable):
        if fr is None or not ok:
            out.append((0,) * WORDS_PER_PAGE)
        else:
            out.append(tuple(image[fr * WORDS_PER_PAGE : (fr + 1) * WORDS_PER_PAGE]))
    return tuple(out)


def _trim(pages: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
    """Pages shown up to their last non-zero word (at least one word), for short output."""
    out = []
    for p in pages:
        n = max((i + 1 for i, v in enumerate(p) if v), default=1)
        out.append(p[:n])
    return tuple(out)


def crash(state: DaxState):
    """Power fails now: every set of file contents a remount can show (pages trimmed of
    trailing zeros), as ``((name, pages), ...)`` sorted by name."""
    names = sorted(state.files.keys())
    outcomes = frozenset(
        tuple((n, _trim(read_file(img, state.files[n]))) for n in names) for img in pmem.crash(state.pmem)[1]
    )
    return state, outcomes


def inv_frames_exclusive(state: DaxState) -> bool:
    """No PMEM frame backs two pages (of one file or of two)."""
    frames = [fr for f in state.files.values() for fr in f.frames if fr is not None]
    return len(frames) == len(set(frames)) and all(0 <= fr < state.config.pages for fr in frames)


def inv_sync_fault_durable(state: DaxState) -> bool:
    """Every page a MAP_SYNC mapping has faulted in has durable metadata."""
    synced = {m.name for m in state.mappings} - {m.name for m in state.mappings if not m.sync}
    return all(all(fr is None or ok for fr, ok in zip(state.files[n].frames, state.files[n].durable)) for n in synced)
