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
from impl.bugs import Defect
from impl.slub import SlubAllocator
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


class KmallocAllocator:
    """kmalloc, kfree, krealloc, ksize over :class:`impl.slub.SlubAllocator`; the same results
    and errors as :mod:`spec.kmalloc`."""

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
        self.large: dict = {}
        self._names = {(kind, i): cache_name(i, kind) for kind in TYPES for i in CREATION_ORDER}

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
            addr = PAGE_OFFSET + (self.slub.buddy.alloc_pages(order, GFP_TYPES[gfp][1]) << PAGE_SHIFT)
            self.large[addr] = order
            return addr
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
        pfn = self.slub._slab_of(addr)
        if pfn is not None:
            self.slub.kmem_cache_free(self.slub.slabs[pfn][0], addr, cpu)
            return
        order = self.large.get(addr)
        if order is None:
            for start, o in self.large.items():
                if start < addr < start + (PAGE_SIZE << o):
                    raise BadPage(f"kfree(0x{addr:x}) is inside the large kmalloc at 0x{start:x}, not its start")
            raise EINVAL(f"kfree(0x{addr:x}): not a kmalloc'd address")
        if bugs.active_names() and bugs.active("kmalloc-large-freed-to-slab"):
            del self.large[addr]
            self.slub.cpus["kmalloc-8k"][cpu][1].append(0)  # a bogus object on the cpu freelist
            return
        self.slub.buddy.free_pages((addr - PAGE_OFFSET) >> PAGE_SHIFT, order)
        del self.large[addr]

    def ksize(self, addr: int) -> int:
        """``ksize(addr)``."""
        if addr is None or (isinstance(addr, int) and 0 <= addr <= ZERO_SIZE_PTR):
            return 0
        if addr in self.large:
            return PAGE_SIZE << self.large[addr]
        pfn = self.slub._slab_of(addr)
        if pfn is None:
            raise EINVAL(f"ksize(0x{addr:x}): not a kmalloc'd address" if isinstance(addr, int) else f"bad address {addr!r}")
        s = self.slub.caches[self.slub.slabs[pfn][0]]
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
        pfn = self.slub._slab_of(addr)
        if pfn is not None:
            s = self.slub.caches[self.slub.slabs[pfn][0]]
            self.slub._check_free(s, addr, cpu)
        elif addr not in self.large:
            self.kfree(addr, cpu)  # raises

    def write(self, addr: int, length: int) -> None:
        """:func:`spec.slub.write`."""
        self.slub.write(addr, length)

    def kmem_cache_shrink(self, name: str) -> int:
        return self.slub.kmem_cache_shrink(name)

    # -- batches --------------------------------------------------------------------------------

    def simulate(self, trace) -> np.ndarray:
        """Run a trace: ``(op, size, ref, cpu)`` rows, OP_KMALLOC of ``size`` bytes with
        GFP_KERNEL, or OP_KFREE of the address that row ``ref`` returned.  Returns one uint64 per
        row: the address of a kmalloc, 0 for a kfree.  Errors are raised with the row index."""
        ops, sizes, refs, cpus = (np.asarray(trace[f]).tolist() for f in ("op", "size", "ref", "cpu"))
        out = [0] * len(ops)
        slub = self.slub
        names = self._names
        small = _SMALL
        defects = bugs.active_names()
        caches = {i: slub.caches[names["normal", i]] for i in CREATION_ORDER} if "normal" in self.config.types else {}
        cpus_of = {i: slub.cpus[names["normal", i]] for i in caches}
        page_slab, slabs = slub.page_slab, slub.slabs
        for row, (op, size, ref, cpu) in enumerate(zip(ops, sizes, refs, cpus)):
            try:
                if op == OP_KMALLOC:
                    if defects or not 0 < size <= KMALLOC_MAX_CACHE_SIZE or not caches:
                        out[row] = self.kmalloc(size, "GFP_KERNEL", cpu)
                        continue
                    i = small[(size - 1) >> 3] if size <= 192 else (size - 1).bit_length()
                    s = caches[i]
                    c = cpus_of[i][cpu]
                    if c[0] >= 0 and c[1] and not s.debug:
                        out[row] = PAGE_OFFSET + (c[0] << PAGE_SHIFT) + s.red_left_pad + c[1].pop() * s.size
                    else:
                        out[row] = slub.kmem_cache_alloc(s.name, cpu)
                else:
                    addr = out[ref]
                    pfn = page_slab.get((addr - PAGE_OFFSET) >> PAGE_SHIFT)
                    if pfn is not None and not defects:
                        slab = slabs[pfn]
                        s = slub.caches[slab[0]]
                        c = slub.cpus[slab[0]][cpu]
                        off = addr - PAGE_OFFSET - (pfn << PAGE_SHIFT) - s.red_left_pad
                        index = off // s.size
                        # the fast path only for an object that is certainly live and a valid start
                        if (c[0] == pfn and not s.debug and off % s.size == 0 and (not c[1] or c[1][-1] != index)
                                and index not in c[1] and index not in slab[3]):
                            c[1].append(index)
                            continue
                    self.kfree(addr, cpu)
            except Exception as exc:
                raise type(exc)(f"trace[{row}]: {exc}") from None
        return np.array(out, dtype=np.uint64)

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
