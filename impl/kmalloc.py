"""kmalloc on the fast slab allocator: the twin of :mod:`spec.kmalloc`.

:class:`KmallocAllocator` keeps an :class:`impl.slub.SlubAllocator` (which keeps an
:class:`impl.buddy.BuddyAllocator`) and a dict of the live large allocations.  The size-class
lookup is a precomputed table (``kmalloc_size_index[]`` for sizes up to 192, ``fls(size - 1)``
above, as Linux does); :meth:`simulate` runs a trace of kmalloc/kfree in one call.

>>> k = KmallocAllocator("toy")
>>> p = k.kmalloc(100)
>>> k.ksize(p), hex(p)
(128, '0xffff888000000000')
"""

from __future__ import annotations

import numpy as np
from immutables import Map

from impl import bugs
from impl import slub as slub_impl
from impl.buddy import _GFP_INDEX, C_MAX_ORDER, _alloc_pages, _free_pages, kernel
from impl.bugs import Defect
from impl.slub import (
    C_COUNT,
    C_HEAD,
    C_SLAB,
    C_TAIL,
    NO_SLOT,
    P_DEBUG,
    P_RLP,
    P_SIZE,
    S_CACHE,
    S_PFN,
    SlubAllocator,
    _object_of,
    _slab_alloc,
    _slab_free,
    dependencies_checksum,
    drop_stale_cache,
)
from spec import kmalloc as spec_kmalloc
from spec.errors import EINVAL, ENOMEM, BadPage
from spec.kmalloc import (
    CREATION_ORDER,
    GFP_TYPES,
    KMALLOC_MAX_CACHE_SIZE,
    KMALLOC_MAX_SIZE,
    TYPES,
    ZERO_SIZE_PTR,
    KmallocConfig,
    KmallocState,
    cache_name,
    kmalloc_size,
)
from spec.slub import PAGE_OFFSET, slub_preset
from spec.zone import PAGE_SHIFT, PAGE_SIZE

__all__ = ["KmallocAllocator", "DEFECTS", "OP_KMALLOC", "OP_KFREE", "make_trace"]

_CATCH = "mmspec.mechanisms.kmalloc:catch"
DEFECTS = (
    Defect(
        "kmalloc-size-class-off-by-one",
        "kmalloc",
        "The size-class table compares with < instead of <= at the 96-byte boundary, so "
        "kmalloc(96) is served from kmalloc-128 and wastes a third of the object.",
        "teaching defect",
        _CATCH,
    ),
    Defect(
        "kmalloc-large-freed-to-slab",
        "kmalloc",
        "kfree() of a large kmalloc (above 8 KiB) does not notice that the page is not a slab "
        "and pushes the pointer on the kmalloc-8k freelist of this CPU instead of freeing the "
        "pages to the buddy allocator: the pages leak and the cache hands out memory it does "
        "not own.",
        "teaching defect",
        _CATCH,
    ),
)

OP_KMALLOC, OP_KFREE = 0, 1

# kmalloc_size_index[(size - 1) / 8] for sizes 1..192 (mm/slab_common.c), and fls(size - 1) above.
_SMALL = [0] * 24
for _s in range(1, 193):
    _SMALL[(_s - 1) // 8] = 3 if _s <= 8 else 1 if 64 < _s <= 96 else 2 if 128 < _s <= 192 else (_s - 1).bit_length()


def _index(size: int) -> int:
    if size <= 192:
        if size == 96 and bugs.active_names() and bugs.active("kmalloc-size-class-off-by-one"):
            return 7
        return _SMALL[(size - 1) >> 3]
    return (size - 1).bit_length()


def _get_order(size: int) -> int:
    return max(0, ((size - 1) >> PAGE_SHIFT).bit_length())


# What the simulate kernel keeps for each row: the offset of the address into the direct map,
# or one of these for the addresses below it.
R_NULL, R_ZERO = -1, -2  # 0 (a kfree row, NULL), ZERO_SIZE_PTR
E_ROW = 1  # the kernel's "this row needs the Python operation"


@kernel
def _large_alloc(pages, pbmt, lists, zones, bcfg, gfp, large, size, g):
    """A large kmalloc: ``get_order()`` pages straight from the buddy allocator; the pfn, or -1
    with nothing changed."""
    order = 0
    while (PAGE_SIZE << order) < size:
        order += 1
    if order > bcfg[C_MAX_ORDER]:
        return -1
    pfn = _alloc_pages(pages, pbmt, lists, zones, bcfg, gfp, order, g)
    if pfn >= 0:
        large[pfn] = order
    return pfn


@kernel
def _large_free(pages, pbmt, lists, zones, bcfg, page_slot, large, rel):
    """kfree() of the large kmalloc that starts ``rel`` bytes into the direct map: True, or
    False with nothing changed if none starts there."""
    pfn = rel >> PAGE_SHIFT
    if rel & (PAGE_SIZE - 1) or pfn >= large.shape[0] or large[pfn] < 0 or page_slot[pfn] >= 0:
        return False
    _free_pages(pages, pbmt, lists, zones, bcfg, pfn, large[pfn])
    large[pfn] = -1
    return True


@kernel
def _simulate(pages, pbmt, lists, zones, bcfg, gfp, slabs, objs, cpus, params, page_slot, meta, large,
              classes, g_large, nr_cpus, ops, sizes, refs, cpu_of, rel, start):
    """Rows ``start..`` of a kmalloc/kfree trace: (row, code) where it stopped (code E_ROW: the
    row needs the Python operation; NO_SLOT: more slab rows), or (len, 0)."""
    n = ops.shape[0]
    for i in range(start, n):
        cpu = cpu_of[i]
        if cpu < 0 or cpu >= nr_cpus:
            return i, E_ROW
        if ops[i] == OP_KMALLOC:
            size = sizes[i]
            if size == 0:
                rel[i] = R_ZERO
                continue
            if size < 0 or size > KMALLOC_MAX_SIZE:
                return i, E_ROW
            if size > KMALLOC_MAX_CACHE_SIZE:  # get_order(), straight to the buddy allocator
                pfn = _large_alloc(pages, pbmt, lists, zones, bcfg, gfp, large, size, g_large)
                if pfn < 0:
                    return i, E_ROW
                rel[i] = pfn << PAGE_SHIFT
                continue
            k = classes[size]
            if k < 0 or params[k, P_DEBUG]:
                return i, E_ROW
            j, index = _slab_alloc(pages, pbmt, lists, zones, bcfg, gfp, slabs, objs, cpus, params, page_slot,
                                   meta, k, cpu)
            if j == NO_SLOT:
                return i, NO_SLOT
            if j < 0:
                return i, E_ROW
            rel[i] = (slabs[j, S_PFN] << PAGE_SHIFT) + params[k, P_RLP] + index * params[k, P_SIZE]
            continue
        ref = refs[i]
        if ref < 0 or ref >= n:
            return i, E_ROW
        a = rel[ref]
        if a < 0:  # NULL or ZERO_SIZE_PTR
            rel[i] = R_NULL
            continue
        j, index = _object_of(slabs, objs, params, page_slot, a)
        if j >= 0:
            _slab_free(pages, pbmt, lists, zones, bcfg, slabs, objs, cpus, params, page_slot, meta,
                       slabs[j, S_CACHE], cpu, j, index)
            rel[i] = R_NULL
            continue
        if _large_free(pages, pbmt, lists, zones, bcfg, page_slot, large, a):
            rel[i] = R_NULL
            continue
        return i, E_ROW
    return n, 0


@kernel
def _addresses(rel, out):
    """The addresses of the rows, from what the simulate kernel kept."""
    for i in range(rel.shape[0]):
        r = rel[i]
        if r >= 0:
            out[i] = np.uint64(r) + np.uint64(PAGE_OFFSET)
        else:
            out[i] = ZERO_SIZE_PTR if r == R_ZERO else 0


_CONSTANTS = (PAGE_SIZE, PAGE_SHIFT, PAGE_OFFSET, KMALLOC_MAX_SIZE, KMALLOC_MAX_CACHE_SIZE, ZERO_SIZE_PTR)
_DEPENDENCIES = dependencies_checksum((slub_impl,), _CONSTANTS)


@kernel
def _fingerprint():
    return _DEPENDENCIES


drop_stale_cache(_fingerprint, globals())


def _encode(addr: int) -> int:
    return R_NULL if addr == 0 else R_ZERO if addr == ZERO_SIZE_PTR else addr - PAGE_OFFSET


def _decode(r: int) -> int:
    return 0 if r == R_NULL else ZERO_SIZE_PTR if r == R_ZERO else r + PAGE_OFFSET


class KmallocAllocator:
    """kmalloc, kfree, krealloc, ksize over :class:`impl.slub.SlubAllocator`; the same results
    and errors as :mod:`spec.kmalloc`.  The large allocations are kept as ``large_order[pfn]``
    (int8, -1 where none starts); :attr:`large` is the dict of the spec."""

    def __init__(self, config: KmallocConfig | str):
        cfg = KmallocConfig(slub_preset(config)) if isinstance(config, str) else config
        if not isinstance(cfg, KmallocConfig) or not set(cfg.types) <= set(TYPES):
            raise EINVAL(f"bad kmalloc configuration {cfg!r}")
        self.config = cfg
        self.slub = SlubAllocator(cfg.slub)
        for kind in TYPES:
            if kind in cfg.types:
                for index in CREATION_ORDER:
                    size = kmalloc_size(index)
                    self.slub.kmem_cache_create(cache_name(index, kind), size, size & -size, ("KMALLOC",) + TYPES[kind][1], False)
        self.large_order = np.full(self.slub.page_slot.shape[0], -1, dtype=np.int8)
        self._names = {(kind, i): cache_name(i, kind) for kind in TYPES for i in CREATION_ORDER}
        # the kmalloc-* (normal) cache row of every size up to KMALLOC_MAX_CACHE_SIZE, for simulate
        self._classes = np.full(KMALLOC_MAX_CACHE_SIZE + 1, -1, dtype=np.int64)
        if "normal" in cfg.types:
            ids = {i: self.slub.cache_id[self._names["normal", i]] for i in CREATION_ORDER}
            for size in range(1, KMALLOC_MAX_CACHE_SIZE + 1):
                self._classes[size] = ids[_SMALL[(size - 1) >> 3] if size <= 192 else (size - 1).bit_length()]

    @property
    def large(self) -> dict:
        """The live large kmallocs: address -> order."""
        pfns = np.flatnonzero(self.large_order >= 0)
        return {PAGE_OFFSET + (int(p) << PAGE_SHIFT): int(self.large_order[p]) for p in pfns}

    def _large_at(self, addr) -> int:
        """The order of the large kmalloc that starts at ``addr``, or -1."""
        if not isinstance(addr, (int, np.integer)) or addr < PAGE_OFFSET or (addr - PAGE_OFFSET) % PAGE_SIZE:
            return -1
        pfn = (int(addr) - PAGE_OFFSET) >> PAGE_SHIFT
        return int(self.large_order[pfn]) if pfn < self.large_order.shape[0] else -1

    @staticmethod
    def _kind(gfp) -> str:
        if not isinstance(gfp, str) or gfp not in GFP_TYPES:
            raise EINVAL(f"unknown GFP mask {gfp!r}; known: {', '.join(GFP_TYPES)}")
        return GFP_TYPES[gfp][0]

    def kmalloc(self, size: int, gfp: str = "GFP_KERNEL", cpu: int = 0) -> int:
        """``kmalloc(size, gfp)`` on ``cpu``."""
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 0:
            raise EINVAL(f"size {size!r} is not a byte count")
        kind = self._kind(gfp)
        if size == 0:
            return ZERO_SIZE_PTR
        if size > KMALLOC_MAX_SIZE:
            raise ENOMEM(f"kmalloc({size}) exceeds KMALLOC_MAX_SIZE ({KMALLOC_MAX_SIZE})")
        if size > KMALLOC_MAX_CACHE_SIZE:
            self.slub._check_cpu(cpu)
            order = _get_order(size)
            if order > self.slub.buddy.max_order:
                raise ENOMEM(f"kmalloc({size}) needs order {order}, above this machine's max_order")
            pfn = self.slub.buddy.alloc_pages(order, GFP_TYPES[gfp][1])
            self.large_order[pfn] = order
            return PAGE_OFFSET + (pfn << PAGE_SHIFT)
        if kind not in self.config.types:
            raise EINVAL(f"no {TYPES[kind][0]}* caches in this configuration")
        return self.slub.kmem_cache_alloc(self._names[kind, _index(size)], cpu)

    def kfree(self, addr: int, cpu: int = 0) -> None:
        """``kfree(addr)`` on ``cpu``."""
        self.slub._check_cpu(cpu)
        if addr is None or (isinstance(addr, (int, np.integer)) and not isinstance(addr, bool) and 0 <= addr <= ZERO_SIZE_PTR):
            return
        if not isinstance(addr, (int, np.integer)) or isinstance(addr, bool):
            raise EINVAL(f"bad address {addr!r}")
        j = self.slub._slot_of(addr)
        if j >= 0:
            self.slub.kmem_cache_free(self.slub._cache_of_slot(j), addr, cpu)
            return
        order = self._large_at(addr)
        if order < 0:
            for start, o in self.large.items():
                if start < addr < start + (PAGE_SIZE << o):
                    raise BadPage(f"kfree(0x{addr:x}) is inside the large kmalloc at 0x{start:x}, not its start")
            raise EINVAL(f"kfree(0x{addr:x}): not a kmalloc'd address")
        pfn = (int(addr) - PAGE_OFFSET) >> PAGE_SHIFT
        self.large_order[pfn] = -1
        if bugs.active_names() and bugs.active("kmalloc-large-freed-to-slab"):
            # the pages leak, and the pointer goes on this CPU's kmalloc-8k freelist: its cpu
            # slab's first object, handed out again although it may be live
            s = self.slub
            k = s.cache_id.get("kmalloc-8k")
            if k is not None and s.cpus[k, cpu, C_SLAB] >= 0:
                j = int(s.cpus[k, cpu, C_SLAB])
                if not s._is_free(j, 0):
                    s.objs[j, 0] = s.cpus[k, cpu, C_HEAD] if s.cpus[k, cpu, C_COUNT] else -1
                    s.cpus[k, cpu, C_HEAD] = 0
                    s.cpus[k, cpu, C_COUNT] += 1
                    if s.cpus[k, cpu, C_COUNT] == 1:
                        s.cpus[k, cpu, C_TAIL] = 0
            return
        self.slub.buddy.free_pages(pfn, order)

    def ksize(self, addr: int) -> int:
        """``ksize(addr)``."""
        if addr is None or (isinstance(addr, int) and 0 <= addr <= ZERO_SIZE_PTR):
            return 0
        order = self._large_at(addr)
        if order >= 0:
            return PAGE_SIZE << order
        j = self.slub._slot_of(addr)
        if j < 0:
            raise EINVAL(f"ksize(0x{addr:x}): not a kmalloc'd address" if isinstance(addr, int) else f"bad address {addr!r}")
        s = self.slub.caches[self.slub._cache_of_slot(j)]
        return s.object_size if s.flags & {"RED_ZONE", "POISON"} else s.size

    def krealloc(self, addr: int, new_size: int, gfp: str = "GFP_KERNEL", cpu: int = 0) -> int:
        """``krealloc(addr, new_size, gfp)``."""
        if not isinstance(new_size, (int, np.integer)) or isinstance(new_size, bool) or new_size < 0:
            raise EINVAL(f"size {new_size!r} is not a byte count")
        self._kind(gfp)
        if new_size == 0:
            self.kfree(addr, cpu)
            return ZERO_SIZE_PTR
        null = addr is None or (isinstance(addr, int) and 0 <= addr <= ZERO_SIZE_PTR)
        if not null:
            if self.ksize(addr) >= new_size:
                return addr
            self._check_live(addr, cpu)
        ret = self.kmalloc(new_size, gfp, cpu)
        if not null:
            self.kfree(addr, cpu)
        return ret

    def _check_live(self, addr: int, cpu: int) -> None:
        """Raise what kfree would raise, without freeing (the checks of kmem_cache_free)."""
        j = self.slub._slot_of(addr)
        if j >= 0:
            s = self.slub.caches[self.slub._cache_of_slot(j)]
            self.slub._check_free(s, addr, cpu)
        elif self._large_at(addr) < 0:
            self.kfree(addr, cpu)  # raises

    def write(self, addr: int, length: int) -> None:
        """:func:`spec.slub.write`."""
        self.slub.write(addr, length)

    def kmem_cache_shrink(self, name: str) -> int:
        return self.slub.kmem_cache_shrink(name)

    # -- batches --------------------------------------------------------------------------------

    def _row(self, rel: np.ndarray, row: int, op: int, size: int, ref: int, cpu: int) -> None:
        """One trace row through the Python operations."""
        try:
            if op == OP_KMALLOC:
                rel[row] = _encode(self.kmalloc(size, "GFP_KERNEL", cpu))
            else:
                self.kfree(_decode(int(rel[ref])), cpu)
                rel[row] = R_NULL
        except Exception as exc:
            raise type(exc)(f"trace[{row}]: {exc}") from None

    def simulate(self, trace) -> np.ndarray:
        """Run a trace: ``(op, size, ref, cpu)`` rows, OP_KMALLOC of ``size`` bytes with
        GFP_KERNEL, or OP_KFREE of the address that row ``ref`` returned.  Returns one uint64 per
        row: the address of a kmalloc, 0 for a kfree.  Errors are raised with the row index.

        The rows run in one kernel call; a row it does not handle (an error, a debug cache, a
        defect switched on) runs through :meth:`kmalloc` / :meth:`kfree`."""
        ops, sizes, refs, cpus = (np.asarray(trace[f]) for f in ("op", "size", "ref", "cpu"))
        ops, sizes, refs, cpus = (a if a.dtype.kind == "i" else a.astype(np.int64)
                                  for a in (ops, sizes, refs, cpus))
        n = ops.shape[0]
        rel = np.full(n, R_NULL, dtype=np.int64)
        slub = self.slub
        g_large = _GFP_INDEX[GFP_TYPES["GFP_KERNEL"][1]]
        row = 0
        if bugs.active_names():  # every row the slow way, so that each defect has its say
            for row in range(n):
                self._row(rel, row, int(ops[row]), int(sizes[row]), int(refs[row]), int(cpus[row]))
            row = n
        while row < n:
            slub._sync()
            row, code = _simulate(*slub._b(), slub._gfp(), *slub._arrays(), self.large_order, self._classes,
                                  g_large, slub.nr_cpus, ops, sizes, refs, cpus, rel, row)
            if code == NO_SLOT:
                slub._grow_slots(64)
            elif code:
                self._row(rel, row, int(ops[row]), int(sizes[row]), int(refs[row]), int(cpus[row]))
                row += 1
        out = np.empty(n, dtype=np.uint64)
        _addresses(rel, out)
        return out

    # -- views and the abstraction function -------------------------------------------------------

    def abstract(self) -> KmallocState:
        """The :class:`spec.kmalloc.KmallocState` this object represents."""
        return KmallocState(self.config, self.slub.abstract(), Map(self.large))

    def slabinfo(self) -> str:
        return self.slub.slabinfo()

    def render(self) -> str:
        return spec_kmalloc.render(self.abstract())


TRACE_DTYPE = np.dtype([("op", np.int8), ("size", np.int32), ("ref", np.int64), ("cpu", np.int16)])

#: A kmalloc size mix: mostly small objects, some page-sized buffers, rare large ones.
SIZE_MIX = ((8, 0.08), (16, 0.08), (24, 0.06), (32, 0.1), (48, 0.06), (64, 0.12), (96, 0.06), (128, 0.08),
            (192, 0.08), (256, 0.08), (512, 0.06), (1024, 0.05), (2048, 0.03), (4096, 0.03), (8192, 0.02),
            (16384, 0.01))


def make_trace(rng: np.random.Generator, n: int, *, live_target: int = 20000, nr_cpus: int = 2,
               sizes=SIZE_MIX, p_alloc: float = 0.75) -> np.ndarray:
    """A random kmalloc/kfree trace of ``n`` rows keeping about ``live_target`` objects live:
    below the target a row is a kmalloc with probability ``p_alloc``, above it a kfree of a
    uniformly chosen live object; sizes are drawn from ``sizes`` and jittered within their class."""
    vals = np.array([s for s, _ in sizes])
    cdf = np.cumsum([w for _, w in sizes])
    cdf /= cdf[-1]
    trace = np.zeros(n, dtype=TRACE_DTYPE)
    u = rng.random((n, 3))
    live: list = []
    for i in range(n):
        alloc = not live or u[i, 0] < (p_alloc if len(live) < live_target else 1 - p_alloc)
        trace[i]["cpu"] = int(u[i, 2] * nr_cpus)
        if alloc:
            base = int(vals[min(np.searchsorted(cdf, u[i, 1]), len(vals) - 1)])
            trace[i]["op"], trace[i]["size"] = OP_KMALLOC, max(1, base - int(u[i, 2] * base / 4))
            live.append(i)
        else:
            k = int(u[i, 1] * len(live))
            live[k], live[-1] = live[-1], live[k]
            trace[i]["op"], trace[i]["ref"] = OP_KFREE, live.pop()
    return trace
