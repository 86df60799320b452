"""DAX files on arrays: the fast twin of :mod:`spec.dax`.

:class:`DaxDevice` is a PMEM device of ``pages`` frames under :class:`impl.pmem.PmemMachine`
(the persistency model on bitsets), a file table whose files are numpy arrays -- per page the
backing frame (-1 for a hole) and whether that allocation is durable -- and a ``used`` array of
frames, so a write fault finds the lowest free frame with one ``argmin``.  Operations,
results and typed errors are the spec's; every check happens before anything changes, so a
failed operation leaves the device as it was.  :meth:`DaxDevice.crash` enumerates the device's
crash images with :mod:`impl.pmem`'s packed enumeration and reads every file out of all of
them with array slicing; only the distinct outcomes become the spec's tuples.
:meth:`DaxDevice.abstract` returns the :class:`spec.dax.DaxState` the same operations give.

>>> d = DaxDevice(dax.DaxConfig(pages=2))
>>> d.creat("log", 1)
>>> m = d.mmap("log", dax.MAP_SHARED_VALIDATE | dax.MAP_SYNC)
>>> d.store(m, 0, 42)
>>> d.flush(m, 0, 8)
>>> sorted(d.crash())
[(('log', ((42,),)),)]
>>> s = dax.init(dax.DaxConfig(pages=2))
>>> s, _ = dax.creat(s, "log", 1)
>>> s, _ = dax.mmap(s, "log", dax.MAP_SHARED_VALIDATE | dax.MAP_SYNC)
>>> s, _ = dax.store(s, 0, 0, 42)
>>> d.abstract() == dax.flush(s, 0, 0, 8)[0]
True
"""

from __future__ import annotations

import numpy as np
from immutables import Map

from impl import pmem as ipmem
from spec import dax, pmem
from spec.errors import EINVAL, ENOMEM
from spec.zone import PAGE_SIZE

WORDS_PER_PAGE = dax.WORDS_PER_PAGE


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class DaxDevice:
    """A DAX file system on a PMEM device: files as frame arrays, mappings, the machine."""

    def __init__(self, config: dax.DaxConfig | None = None) -> None:
        cfg = config if config is not None else dax.DaxConfig()
        if not isinstance(cfg, dax.DaxConfig) or cfg.pages < 1:
            raise EINVAL(f"bad DAX configuration {cfg!r}")
        self.config = cfg
        region = pmem.PmemConfig(cfg.pages * WORDS_PER_PAGE, 1, cfg.domain, cfg.synchronous)
        self.machine = ipmem.PmemMachine(region)
        self.files: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (frames, durable)
        self.used = np.zeros(cfg.pages, bool)
        self.mappings: list[dax.Mapping] = []

    # -- checks shared by the operations
    def _mapping(self, mapping) -> dax.Mapping:
        if not _is_int(mapping) or not 0 <= mapping < len(self.mappings):
            raise EINVAL(f"no mapping {mapping!r}")
        return self.mappings[mapping]

    # -- operations
    def creat(self, name, pages) -> None:
        if not isinstance(name, str) or name in self.files or not _is_int(pages) or pages < 1:
            raise EINVAL(f"cannot create {name!r} with {pages!r} pages")
        self.files[name] = (np.full(pages, -1, np.int64), np.ones(pages, bool))

    def mmap(self, name, flags) -> int:
        if name not in self.files:
            raise EINVAL(f"no file {name!r}")
        if flags & dax.MAP_TYPE == dax.MAP_PRIVATE:
            raise EINVAL("the model maps DAX files MAP_SHARED only")
        sync = dax.mmap_flags(flags, "ext4", dax=True)
        self.mappings.append(dax.Mapping(name, sync))
        return len(self.mappings) - 1

    def store(self, mapping, offset, value) -> None:
        m = self._mapping(mapping)
        frames, durable = self.files[m.name]
        if not _is_int(offset) or not 0 <= offset < len(frames) * PAGE_SIZE or offset % pmem.WORD:
            raise EINVAL(f"offset {offset!r} is not an aligned word of the file")
        page = offset // PAGE_SIZE
        if frames[page] < 0 and self.used.all():
            raise ENOMEM("the PMEM device is full")
        if not _is_int(value):
            raise EINVAL(f"value {value!r} is not an integer")
        if frames[page] < 0:
            frame = int(np.argmin(self.used))  # the lowest free frame (already zero)
            self.used[frame] = True
            frames[page], durable[page] = frame, m.sync  # MAP_SYNC: durable before the fault returns
        self.machine.store(0, int(frames[page]) * PAGE_SIZE + offset % PAGE_SIZE, value)

    def flush(self, mapping, offset, length) -> None:
        m = self._mapping(mapping)
        frames, _ = self.files[m.name]
        if (not _is_int(offset) or not _is_int(length) or offset < 0 or length < 1
                or offset + length > len(frames) * PAGE_SIZE):
            raise EINVAL(f"range [{offset!r}, +{length!r}) is outside the file")
        for page in range(offset // PAGE_SIZE, (offset + length - 1) // PAGE_SIZE + 1):
            if frames[page] >= 0:
                lo, hi = max(offset, page * PAGE_SIZE), min(offset + length, (page + 1) * PAGE_SIZE)
                self.machine.pmem_flush(0, int(frames[page]) * PAGE_SIZE + lo % PAGE_SIZE, hi - lo)
        self.machine.pmem_drain(0)

    def fsync(self, name) -> None:
        if name not in self.files:
            raise EINVAL(f"no file {name!r}")
        frames, durable = self.files[name]
        for fr in frames[frames >= 0].tolist():
            self.machine.pmem_flush(0, fr * PAGE_SIZE, PAGE_SIZE)
        self.machine.sfence(0)
        durable[:] = True

    # -- crashes
    def crash(self) -> frozenset:
        """Every set of file contents a remount can show, as :func:`spec.dax.crash` gives it."""
        t = self.machine.trace()
        images = t.versions(t.n).images()
        names = sorted(self.files)
        cols = []
        for name in names:
            frames, durable = self.files[name]
            for fr, ok in zip(frames.tolist(), durable.tolist(), strict=True):
                if fr < 0 or not ok:
                    cols.append(np.zeros((len(images), WORDS_PER_PAGE), np.int64))
                else:
                    cols.append(images[:, fr * WORDS_PER_PAGE : (fr + 1) * WORDS_PER_PAGE])
        if not cols:
            return frozenset({()}) if len(images) else frozenset()
        pages = np.unique(np.stack(cols, axis=1), axis=0)  # (outcomes, pages, words)
        nz = pages != 0
        last = np.where(nz.any(axis=2), WORDS_PER_PAGE - np.argmax(nz[:, :, ::-1], axis=2), 1)  # trim zeros
        out = set()
        for o in range(len(pages)):
            c, files = 0, []
            for name in names:
                n = len(self.files[name][0])
                trimmed = tuple(tuple(pages[o, c + i, : last[o, c + i]].tolist()) for i in range(n))
                files.append((name, trimmed))
                c += n
            out.add(tuple(files))
        return frozenset(out)

    def abstract(self) -> dax.DaxState:
        files = Map({
            name: dax.DaxFile(tuple(None if f < 0 else f for f in frames.tolist()), tuple(durable.tolist()))
            for name, (frames, durable) in self.files.items()
        })
        return dax.DaxState(self.config, self.machine.abstract(), files, tuple(self.mappings))
