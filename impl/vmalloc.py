"""vmalloc on arrays: the fast twin of :mod:`spec.vmalloc`.

:class:`VmallocAllocator` keeps the free space of the vmalloc range as two sorted ``int64``
arrays of page offsets from the range's start (``free_start``, ``free_end``), so that the
lowest fit (``find_vmap_lowest_match``) is one vectorized test over every free block, and the
purge merges the purge list back with one sort.  Frames come from the page tables' own
:class:`impl.buddy.BuddyAllocator` (``alloc_many``) and are mapped by writing leaf entries into
the :class:`impl.paging.PageTables` arrays, the same tables the spec builds through
:func:`spec.paging.map`.  A failed operation leaves the object unchanged.

>>> from spec import vmalloc as spec
>>> v = VmallocAllocator(spec.VmallocConfig())
>>> a = v.vmalloc(10000)
>>> v.vfree(a)
>>> hex(v.vmalloc(4096))
'0xffffc90000004000'
>>> s = spec.init(spec.VmallocConfig())
>>> s, a = spec.vmalloc(s, 10000)
>>> s, _ = spec.vfree(s, a)
>>> s, b = spec.vmalloc(s, 4096)
>>> v.abstract() == s
True
"""

from __future__ import annotations

import numpy as np
from immutables import Map

from impl import bugs
from impl.bugs import Defect
from impl.paging import PageTables
from spec import pte
from spec.errors import EINVAL, ENOMEM, DoubleFree, MMError
from spec.paging import PagingConfig
from spec.vmalloc import (
    DEFAULT_CALLER,
    VM_ALLOC,
    VM_NO_GUARD,
    VMALLOC_LAYOUT,
    VmallocConfig,
    VmallocState,
    VmArea,
    lazy_max_pages,
)
from spec.zone import PAGE_SHIFT, PAGE_SIZE

__all__ = ["VmallocAllocator", "DEFECTS", "OP_VMALLOC", "OP_VFREE", "OP_PURGE", "make_trace"]

_CATCH = "mmspec.mechanisms.vmalloc:catch"
DEFECTS = (
    Defect(
        "vmalloc-reuse-before-flush",
        "vmalloc",
        "vfree() returns the area's range straight to the free space instead of the purge list: the "
        "next vmalloc may map new frames at an address another CPU still translates, through a stale "
        "TLB entry, to the old frame that the buddy allocator has already handed to someone else.",
        "teaching defect (the hazard mm/vmalloc.c's lazy purge exists for)",
        _CATCH,
    ),
    Defect(
        "vmalloc-no-guard-page",
        "vmalloc",
        "__get_vm_area_node() forgets the extra PAGE_SIZE of the guard page: areas sit back to back, "
        "so running off the end of one writes into the next instead of faulting.",
        "teaching defect",
        _CATCH,
    ),
    Defect(
        "vmalloc-fit-off-by-one",
        "vmalloc",
        "is_within_this_va() tests start + size < va_end instead of <=: a free block that holds the "
        "area exactly is skipped, so vmalloc picks a higher address than Linux and fragments the range.",
        "teaching defect",
        _CATCH,
    ),
)

OP_VMALLOC, OP_VFREE, OP_PURGE = 0, 1, 2
TRACE_DTYPE = np.dtype([("op", np.int8), ("size", np.int64), ("ref", np.int64)])


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


class VmallocAllocator:
    """The vmalloc range, the kernel page tables and the buddy allocator; :mod:`spec.vmalloc`'s
    operations as methods."""

    def __init__(self, config: VmallocConfig | str = VmallocConfig()):
        if isinstance(config, str):
            config = VmallocConfig(PagingConfig("x86-64-4level", config))
        if not isinstance(config, VmallocConfig):
            raise EINVAL(f"bad vmalloc configuration {config!r}")
        self.config = config
        if not _is_int(config.cpus) or config.cpus < 1:
            raise EINVAL(f"bad CPU count {config.cpus!r}")
        for knob in (config.window_pages, config.lazy_max):
            if knob is not None and (not _is_int(knob) or knob < 1):
                raise EINVAL(f"bad test knob {knob!r}")
        self.pt = PageTables(config.paging._replace(nr_mm=max(1, config.paging.nr_mm)))
        if self.pt.mode.name not in VMALLOC_LAYOUT:
            raise EINVAL(f"no vmalloc layout for {self.pt.mode.name}")
        start, tb = VMALLOC_LAYOUT[self.pt.mode.name]
        self.vstart = start
        pages = (tb << 40) >> PAGE_SHIFT if config.window_pages is None else config.window_pages
        self.vend = start + (pages << PAGE_SHIFT)
        self.free_start = np.array([0], dtype=np.int64)  # page offsets from vstart, sorted
        self.free_end = np.array([pages], dtype=np.int64)
        self.busy: dict[int, tuple[int, np.ndarray, str | None, frozenset]] = {}  # page offset -> area
        self.lazy: dict[int, int] = {}  # page offset -> end offset
        self.lazy_nr = 0
        self.nr_vmalloc_pages = 0
        self.nr_purges = 0
        self.lazy_limit = config.lazy_max if config.lazy_max is not None else lazy_max_pages(config.cpus)
        from impl.buddy import Z_MANAGED

        self.totalram = int(self.pt.buddy.zone_table[:, Z_MANAGED].sum())
        self.root = self.pt.mms[0]
        self.prot = pte.PAGE_KERNEL
        self._pte_table: dict[int, int] = {}  # va >> 21 -> pfn of the PTE table (kernel tables are never freed)

    # -- free space -----------------------------------------------------------------------------

    def _lowest_match(self, npages: int, align_pages: int) -> int:
        """The page offset of the lowest fit, or -1."""
        fs, fe = self.free_start, self.free_end
        start = (fs + align_pages - 1) & -align_pages
        ok = (start + npages < fe) if bugs.active("vmalloc-fit-off-by-one") else (start + npages <= fe)
        hit = np.flatnonzero(ok)
        return int(start[hit[0]]) if hit.size else -1

    def _carve(self, off: int, npages: int) -> None:
        i = int(np.searchsorted(self.free_start, off, side="right")) - 1
        s, e = int(self.free_start[i]), int(self.free_end[i])
        starts, ends = [], []
        if s < off:
            starts.append(s), ends.append(off)
        if off + npages < e:
            starts.append(off + npages), ends.append(e)
        self.free_start = np.concatenate([self.free_start[:i], np.array(starts, np.int64), self.free_start[i + 1:]])
        self.free_end = np.concatenate([self.free_end[:i], np.array(ends, np.int64), self.free_end[i + 1:]])

    def _release(self, starts, ends) -> None:
        """Merge ranges back into the free space (``merge_or_add_vmap_area``)."""
        s = np.concatenate([self.free_start, np.asarray(starts, np.int64)])
        e = np.concatenate([self.free_end, np.asarray(ends, np.int64)])
        order = np.argsort(s, kind="stable")
        s, e = s[order], e[order]
        new = np.ones(s.size, dtype=bool)
        new[1:] = s[1:] != e[:-1]
        group = np.cumsum(new) - 1
        self.free_start = s[new]
        self.free_end = np.zeros(self.free_start.size, np.int64)
        np.maximum.at(self.free_end, group, e)

    # -- operations -----------------------------------------------------------------------------

    def _check_request(self, size, align, caller, guard) -> int:
        if not _is_int(size) or size <= 0:
            raise EINVAL(f"vmalloc size {size!r}")
        if not _is_int(align) or align < 1 or align & (align - 1) or align > 1 << 30:
            raise EINVAL(f"alignment {align!r} is not a power of two")
        if caller is not None and (not isinstance(caller, str) or not caller or any(c.isspace() for c in caller)):
            raise EINVAL(f"bad caller {caller!r}")
        if not isinstance(guard, bool):
            raise EINVAL(f"guard must be a bool, not {guard!r}")
        if int(size) >> PAGE_SHIFT > self.totalram:
            raise ENOMEM(f"vmalloc error: size {size}, exceeds total pages")
        nr = (int(size) + PAGE_SIZE - 1) >> PAGE_SHIFT
        return nr + (1 if guard and not bugs.active("vmalloc-no-guard-page") else 0)

    def vmalloc(self, size: int, align: int = 1, caller: str | None = DEFAULT_CALLER, guard: bool = True) -> int:
        """See :func:`spec.vmalloc.vmalloc`."""
        total = self._check_request(size, align, caller, guard)
        align_pages = max(1, int(align) >> PAGE_SHIFT)
        off = self._lowest_match(total, align_pages)
        saved = None
        if off < 0 and self.lazy:
            saved = (self.free_start, self.free_end, dict(self.lazy), self.lazy_nr, self.nr_purges)
            self.purge_vmap_area_lazy()
            off = self._lowest_match(total, align_pages)
        if off < 0:
            self._unpurge(saved)
            raise ENOMEM(f"vmap allocation for size {total << PAGE_SHIFT} failed")
        nr = (int(size) + PAGE_SIZE - 1) >> PAGE_SHIFT
        snap = self.pt._snapshot() if self._tight(nr) else None
        try:
            pfns = self.pt.buddy.alloc_many(np.zeros(nr, dtype=np.int64), "GFP_KERNEL")
            if (pfns < 0).any():
                raise ENOMEM("out of frames")
            base = self.vstart + (off << PAGE_SHIFT)
            pt = self.pt
            for i, pfn in enumerate(pfns.tolist()):
                pt._put(*self._pte_slot(base + (i << PAGE_SHIFT), True), pt._leaf_entry(pfn, self.prot, 1))
        except MMError:
            self._pte_table = {}
            if snap is not None:
                self.pt._restore(snap)
            self._unpurge(saved)
            raise
        self._carve(off, total)
        flags = frozenset({VM_ALLOC} | (set() if guard else {VM_NO_GUARD}))
        self.busy[off] = (off + total, pfns, caller, flags)
        self.nr_vmalloc_pages += nr
        return base

    def _tight(self, nr: int) -> bool:
        from impl.buddy import Z_FREE, Z_LOWMEM, Z_WMARK

        zt = self.pt.buddy.zone_table
        room = int(zt[:, Z_FREE].sum() - zt[:, Z_WMARK:Z_WMARK + 4].sum() - zt[:, Z_LOWMEM:].sum())
        return room <= nr * (self.pt.mode.levels + 1) + 16

    def _unpurge(self, saved) -> None:
        if saved is not None:
            self.free_start, self.free_end, self.lazy, self.lazy_nr, self.nr_purges = saved

    def vfree(self, addr: int) -> None:
        """See :func:`spec.vmalloc.vfree`."""
        if addr is None or (_is_int(addr) and addr == 0):
            return None
        off = (int(addr) - self.vstart) >> PAGE_SHIFT if _is_int(addr) else None
        aligned = _is_int(addr) and (int(addr) - self.vstart) % PAGE_SIZE == 0
        if off is None or not aligned or off not in self.busy:
            if aligned and off in self.lazy:
                raise DoubleFree(f"vfree(0x{addr:x}): the area is already freed (unpurged)")
            raise EINVAL(f"Trying to vfree() nonexistent vm area ({addr!r})")
        end, pfns, _, _ = self.busy.pop(off)
        pt = self.pt
        for i in range(pfns.size):
            table, index = self._pte_slot(self.vstart + ((off + i) << PAGE_SHIFT))
            pt._put(table, index, 0)
        pt.buddy.free_many(pfns, 0)
        self.nr_vmalloc_pages -= int(pfns.size)
        if bugs.active("vmalloc-reuse-before-flush"):
            self._release([off], [end])
            return None
        self.lazy[off] = end
        self.lazy_nr += end - off
        if self.lazy_nr > self.lazy_limit:
            self.purge_vmap_area_lazy()
        return None

    def _pte_slot(self, va: int, create: bool = False):
        """(PTE table pfn, index) of ``va``, allocating missing tables when ``create``."""
        table = self._pte_table.get(va >> 21)
        if table is None:
            if create:
                table, _ = self.pt._ensure_tables(self.root, va, 1)
            else:
                entry, _ = self.pt._entry_at(self.root, va, 1)
                table = entry[0]
            self._pte_table[va >> 21] = table
        return table, (va >> PAGE_SHIFT) & 511

    def purge_vmap_area_lazy(self) -> int:
        """See :func:`spec.vmalloc.purge_vmap_area_lazy`."""
        if not self.lazy:
            return 0
        starts = np.fromiter(self.lazy.keys(), np.int64, len(self.lazy))
        ends = np.fromiter(self.lazy.values(), np.int64, len(self.lazy))
        self._release(starts, ends)
        nr, self.lazy, self.lazy_nr = self.lazy_nr, {}, 0
        self.nr_purges += 1
        return nr

    def vmalloc_to_pfn(self, addr: int):
        """See :func:`spec.vmalloc.vmalloc_to_pfn`."""
        if not _is_int(addr) or not self.vstart <= addr < self.vend:
            raise EINVAL(f"{addr!r} is not a vmalloc address")
        entry, _ = self.pt._entry_at(self.root, int(addr), 1)
        raw = self.pt._get(*entry) if entry else 0
        d = self.pt._decode(raw, 1)
        return d.pfn if d.present else None

    # -- batches --------------------------------------------------------------------------------

    def simulate(self, trace) -> np.ndarray:
        """Run a trace (:data:`TRACE_DTYPE`: op, size, ref) of vmalloc / vfree (of the address
        the ``ref``-th operation returned) / purge; one int64 per operation: the address offset
        from the range's start in pages of a vmalloc, -12 for ENOMEM (a vfree of it is skipped),
        0 otherwise."""
        trace = np.asarray(trace)
        out = np.zeros(trace.shape[0], dtype=np.int64)
        addrs = np.zeros(trace.shape[0], dtype=object)
        for i, (op, size, ref) in enumerate(trace.tolist()):
            if op == OP_VMALLOC:
                try:
                    addrs[i] = self.vmalloc(size)
                    out[i] = (addrs[i] - self.vstart) >> PAGE_SHIFT
                except ENOMEM:
                    out[i] = -12
            elif op == OP_VFREE:
                out[i] = -12 if out[ref] == -12 else 0
                if out[ref] != -12:
                    self.vfree(addrs[ref])
            elif op == OP_PURGE:
                self.purge_vmap_area_lazy()
            else:
                raise EINVAL(f"trace[{i}]: unknown op {op}")
        return out

    def abstract(self) -> VmallocState:
        """The :class:`spec.vmalloc.VmallocState` this object represents."""
        busy = {}
        for off, (end, pfns, caller, flags) in self.busy.items():
            start = self.vstart + (off << PAGE_SHIFT)
            busy[start] = VmArea(start, self.vstart + (end << PAGE_SHIFT), tuple(pfns.tolist()), caller, flags)
        lazy = {self.vstart + (s << PAGE_SHIFT): self.vstart + (e << PAGE_SHIFT) for s, e in self.lazy.items()}
        return VmallocState(self.config, self.pt.abstract(), self.vstart, self.vend, Map(busy), Map(lazy),
                            self.lazy_nr, self.nr_vmalloc_pages, self.nr_purges)


def make_trace(rng: np.random.Generator, n: int, live_target: int = 64, max_pages: int = 16) -> np.ndarray:
    """A random vmalloc/vfree trace around ``live_target`` live areas of 1..max_pages pages."""
    trace = np.zeros(n, dtype=TRACE_DTYPE)
    live: list[int] = []
    for i in range(n):
        if live and (len(live) >= live_target or rng.random() < 0.5 * len(live) / live_target):
            k = int(rng.integers(len(live)))
            live[k], live[-1] = live[-1], live[k]
            trace[i] = (OP_VFREE, 0, live.pop())
        else:
            trace[i] = (OP_VMALLOC, int(rng.integers(1, max_pages * PAGE_SIZE + 1)), 0)
            live.append(i)
    return trace
