"""kmalloc: the kernel's general-purpose allocator, on top of SLUB and the buddy allocator
(mm/slab_common.c, include/linux/slab.h, mm/slab.h).

**The problem.**  Most kernel code wants "n bytes" without creating a cache of its own.
``kmalloc(size, flags)`` serves any size up to 4 MiB from a fixed table of *size classes*,
each a SLUB cache, and hands anything above 8 KiB straight to the page allocator.

**Size classes** (``kmalloc_info[]``, x86-64 with 4 KiB pages): kmalloc-8, -16, -32, -64,
-96, -128, -192, -256, -512, -1k, -2k, -4k, -8k.  The class of a size is its *index*: 1 for
96, 2 for 192, n for 2^n (``__kmalloc_index()``).  ``kmalloc_slab()`` finds it through
``kmalloc_size_index[(size - 1) / 8]`` for sizes up to 192 and ``fls(size - 1)`` above
(:func:`size_index`).  Four families of the table exist, chosen by the GFP flags
(``kmalloc_type()``): ``kmalloc-*`` (normal), ``kmalloc-rcl-*`` (``__GFP_RECLAIMABLE``),
``dma-kmalloc-*`` (``__GFP_DMA``) and ``kmalloc-cg-*`` (``__GFP_ACCOUNT``, memcg charged).
kmalloc caches are aligned to the largest power of two dividing their size
(``create_boot_cache()``) and are never merged with other caches.

**The large path** (``__kmalloc_large_node()``): above ``KMALLOC_MAX_CACHE_SIZE`` = 8192 the
request becomes ``alloc_pages(flags, get_order(size))``; above ``KMALLOC_MAX_SIZE`` = 4 MiB
(order 10 = MAX_PAGE_ORDER) it fails.  ``kmalloc(0)`` returns ``ZERO_SIZE_PTR`` (16), which
``kfree`` ignores as it ignores NULL.  ``kfree`` finds the cache from the slab the pointer is
in, or frees the large allocation's pages.  ``ksize``/``kmalloc_size_roundup`` say how many
bytes the caller may really use; ``krealloc`` keeps the object when it already fits and
otherwise allocates, (copies) and frees.

**Simplifications.** No ``CONFIG_RANDOM_KMALLOC_CACHES`` (the ``kmalloc-rnd-NN-*`` copies), no
kmalloc red zone beyond the requested size (``orig_size`` tracking needs ``SLAB_STORE_USER``), no
``kmem_buckets``; ``kfree`` of an interior pointer of a large allocation is refused (Linux frees
the whole folio).  Everything else is :mod:`spec.slub` and :mod:`spec.buddy`, called, not copied.

>>> s = init(KmallocConfig(slub_preset("toy")))
>>> tuple(size_index(n) for n in (1, 8, 9, 65, 96, 97, 129, 193, 8192))
(3, 3, 4, 1, 1, 7, 2, 8, 13)
>>> s, p = kmalloc(s, 100)
>>> kmalloc_slab(100), ksize(s, p)[1]
('kmalloc-128', 128)
>>> s, q = kmalloc(s, 10000)          # large: an order-2 buddy block
>>> ksize(s, q)[1], kmalloc_size_roundup(10000)
(16384, 16384)
>>> kmalloc(s, 0)[1] == ZERO_SIZE_PTR
True
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from immutables import Map

from spec import buddy as spec_buddy
from spec import slub
from spec.errors import EINVAL, ENOMEM, BadPage
from spec.slab_geometry import PAGE_OFFSET, _if, fls, get_order, pfn_to_virt
from spec.slub import SlubConfig, SlubState, slub_preset
from spec.zone import MAX_PAGE_ORDER, PAGE_SHIFT, PAGE_SIZE

__all__ = [
    "KmallocConfig", "init", "kmalloc", "kfree", "krealloc", "ksize", "kmalloc_size_roundup",
    "kmalloc_slab", "size_index", "kmalloc_size", "slabinfo",
]

KMALLOC_SHIFT_LOW = 3  # include/linux/slab.h: ilog2(ARCH_KMALLOC_MINALIGN = 8)
KMALLOC_SHIFT_HIGH = PAGE_SHIFT + 1  # 13
KMALLOC_MIN_SIZE = 1 << KMALLOC_SHIFT_LOW
KMALLOC_MAX_CACHE_SIZE = 1 << KMALLOC_SHIFT_HIGH  # 8192
KMALLOC_MAX_SIZE = 1 << (MAX_PAGE_ORDER + PAGE_SHIFT)  # 4 MiB
ZERO_SIZE_PTR = 16  # include/linux/slab.h: ((void *)16)

#: mm/slab_common.c: kmalloc_info[] names, by index.
KMALLOC_NAMES = {1: "96", 2: "192", 3: "8", 4: "16", 5: "32", 6: "64", 7: "128", 8: "256",
                 9: "512", 10: "1k", 11: "2k", 12: "4k", 13: "8k"}
#: Creation order of create_kmalloc_caches(): 96 and 192 first, then the powers of two.
CREATION_ORDER = (1, 2) + tuple(range(KMALLOC_SHIFT_LOW, KMALLOC_SHIFT_HIGH + 1))
#: enum kmalloc_cache_type order (no random caches): prefix and the cache flags it adds.
TYPES = {
    "normal": ("kmalloc-", ()),
    "rcl": ("kmalloc-rcl-", ("RECLAIM_ACCOUNT",)),
    "dma": ("dma-kmalloc-", ("CACHE_DMA",)),
    "cg": ("kmalloc-cg-", ("ACCOUNT",)),
}
#: kmalloc_type() of the GFP masks the model accepts, and the mask the page allocator sees.
GFP_TYPES = {
    "GFP_KERNEL": ("normal", "GFP_KERNEL"),
    "GFP_ATOMIC": ("normal", "GFP_ATOMIC"),
    "GFP_NOWAIT": ("normal", "GFP_NOWAIT"),
    "GFP_USER": ("normal", "GFP_USER"),
    "GFP_KERNEL_RECLAIMABLE": ("rcl", "GFP_KERNEL_RECLAIMABLE"),
    "GFP_DMA": ("dma", "GFP_DMA"),
    "GFP_KERNEL_ACCOUNT": ("cg", "GFP_KERNEL"),
}


# ---------------------------------------------------------------------------------------------
# Size classes: plain operators, so the proofs run them on z3 values.


def size_index(size):
    """``kmalloc_index()``/``kmalloc_slab()``: the kmalloc_info index of 1 <= size <= 8192.

    Contract:

    ```text
    pre: 1 <= size <= 8192
    post: 1 <= __return__ <= 13
    post: kmalloc_size(__return__) >= size
    ```
    """
    index = fls(size - 1)
    index = _if(size <= KMALLOC_MIN_SIZE, KMALLOC_SHIFT_LOW, index)
    index = _if(size > 64, _if(size <= 96, 1, index), index)
    return _if(size > 128, _if(size <= 192, 2, index), index)


def kmalloc_size(index):
    """``kmalloc_info[index].size``: 96, 192, or 2^index.

    Contract:

    ```text
    pre: 1 <= index <= 13
    post: 8 <= __return__ <= 8192
    ```
    """
    return _if(index == 1, 96, _if(index == 2, 192, 1 << index))


def cache_name(index: int, kind: str = "normal") -> str:
    """The name of the kmalloc cache of ``index`` in family ``kind``."""
    return TYPES[kind][0] + KMALLOC_NAMES[index]


def kmalloc_slab(size: int, gfp: str = "GFP_KERNEL") -> str:
    """``kmalloc_slab()``: the cache that serves ``size`` (1..8192) with ``gfp``."""
    return cache_name(size_index(size), _gfp_type(gfp))


def large_order(size):
    """The buddy order of a large kmalloc: ``get_order(size)``."""
    return get_order(size)


def kmalloc_size_roundup(size: int) -> int:
    """``kmalloc_size_roundup()``: the bytes a kmalloc of ``size`` really provides.

    >>> tuple(kmalloc_size_roundup(n) for n in (0, 1, 65, 100, 8193, 5 << 20))
    (0, 8, 96, 128, 16384, 5242880)
    """
    if size and size <= KMALLOC_MAX_CACHE_SIZE:
        return kmalloc_size(size_index(size))
    if size and size <= KMALLOC_MAX_SIZE:
        return PAGE_SIZE << get_order(size)
    return size


# ---------------------------------------------------------------------------------------------
# State


@dataclass(frozen=True)
class KmallocConfig:
    """The SLUB machine and which kmalloc families to create."""

    slub: SlubConfig
    types: tuple = ("normal", "rcl", "dma", "cg")


@dataclass(frozen=True)
class KmallocState:
    """The slab allocator (with the kmalloc caches in it) and the live large allocations."""

    config: KmallocConfig
    slub: SlubState
    large: Map  # address -> buddy order of every live large kmalloc


def init(config: KmallocConfig | str) -> KmallocState:
    """``create_kmalloc_caches()``: every family, 96 and 192 first, then 8 .. 8k."""
    cfg = KmallocConfig(slub_preset(config)) if isinstance(config, str) else config
    if not isinstance(cfg, KmallocConfig) or not set(cfg.types) <= set(TYPES):
        raise EINVAL(f"bad kmalloc configuration {cfg!r}")
    state = slub.init(cfg.slub)
    for kind in TYPES:
        if kind in cfg.types:
            for index in CREATION_ORDER:
                flags = ("KMALLOC",) + TYPES[kind][1]
                size = kmalloc_size(index)
                state, _ = slub.kmem_cache_create(state, cache_name(index, kind), size, size & -size, flags, mergeable=False)
    return KmallocState(cfg, state, Map())


def _gfp_type(gfp) -> str:
    if not isinstance(gfp, str) or gfp not in GFP_TYPES:
        raise EINVAL(f"unknown GFP mask {gfp!r}; known: {', '.join(GFP_TYPES)}")
    return GFP_TYPES[gfp][0]


def _with_slub(state: KmallocState, new: SlubState) -> KmallocState:
    return replace(state, slub=new)


# ---------------------------------------------------------------------------------------------
# Operations


def kmalloc(state: KmallocState, size: int, gfp: str = "GFP_KERNEL", cpu: int = 0):
    """``kmalloc(size, gfp)`` on ``cpu``: the address of at least ``size`` bytes.

    ``ZERO_SIZE_PTR`` for 0; ``EINVAL`` for a negative or non-integer size, an unknown mask, or
    a family this configuration lacks; ``ENOMEM`` above KMALLOC_MAX_SIZE or when the buddy
    allocator fails.
    """
    if not slub._is_int(size) or size < 0:
        raise EINVAL(f"size {size!r} is not a byte count")
    kind = _gfp_type(gfp)
    if size == 0:
        return state, ZERO_SIZE_PTR
    if size > KMALLOC_MAX_SIZE:
        raise ENOMEM(f"kmalloc({size}) exceeds KMALLOC_MAX_SIZE ({KMALLOC_MAX_SIZE})")
    if size > KMALLOC_MAX_CACHE_SIZE:
        slub._check_cpu(state.slub, cpu)
        order = large_order(size)
        if order > state.slub.buddy.config.max_order:
            raise ENOMEM(f"kmalloc({size}) needs order {order}, above this machine's max_order")
        b, pfn = spec_buddy.alloc_pages(state.slub.buddy, order, GFP_TYPES[gfp][1])
        addr = pfn_to_virt(pfn)
        return replace(state, slub=replace(state.slub, buddy=b), large=state.large.set(addr, order)), addr
    if kind not in state.config.types:
        raise EINVAL(f"no {TYPES[kind][0]}* caches in this configuration")
    new, addr = slub.kmem_cache_alloc(state.slub, kmalloc_slab(size, gfp), cpu)
    return _with_slub(state, new), addr


def _is_null(addr) -> bool:
    """``ZERO_OR_NULL_PTR()``: NULL (0 or None) and ZERO_SIZE_PTR."""
    return addr is None or (slub._is_int(addr) and 0 <= addr <= ZERO_SIZE_PTR)


def kfree(state: KmallocState, addr: int, cpu: int = 0):
    """``kfree(addr)`` on ``cpu``: nothing for NULL and ZERO_SIZE_PTR; the object back to the
    cache of its slab; the pages of a large allocation back to the buddy allocator.

    The slab checks of :func:`spec.slub.kmem_cache_free` apply; ``BadPage`` for a pointer
    inside a large allocation that is not its start; ``EINVAL`` for any other address.
    """
    slub._check_cpu(state.slub, cpu)
    if _is_null(addr):
        return state, None
    if not slub._is_int(addr):
        raise EINVAL(f"bad address {addr!r}")
    pfn = slub.slab_of(state.slub, addr)
    if pfn is not None:
        cache = state.slub.slabs[pfn].cache
        new, _ = slub.kmem_cache_free(state.slub, cache, addr, cpu)
        return _with_slub(state, new), None
    order = state.large.get(addr)
    if order is None:
        for start, o in state.large.items():
            if start < addr < start + (PAGE_SIZE << o):
                raise BadPage(f"kfree(0x{addr:x}) is inside the large kmalloc at 0x{start:x}, not its start")
        raise EINVAL(f"kfree(0x{addr:x}): not a kmalloc'd address")
    b, _ = spec_buddy.free_pages(state.slub.buddy, (addr - PAGE_OFFSET) >> PAGE_SHIFT, order)
    return replace(state, slub=replace(state.slub, buddy=b), large=state.large.delete(addr)), None


def ksize(state: KmallocState, addr: int):
    """``ksize(addr)``: the usable bytes of a live kmalloc (``slab_ksize()``: the stride, or the
    object size when red zones or poison guard the padding; the folio size if large)."""
    if _is_null(addr):
        return state, 0
    if addr in state.large:
        return state, PAGE_SIZE << state.large[addr]
    pfn = slub.slab_of(state.slub, addr)
    if pfn is None:
        raise EINVAL(f"ksize(0x{addr:x}): not a kmalloc'd address" if slub._is_int(addr) else f"bad address {addr!r}")
    s = state.slub.caches[state.slub.slabs[pfn].cache]
    return state, s.object_size if s.flags & {"RED_ZONE", "POISON"} else s.size


def krealloc(state: KmallocState, addr: int, new_size: int, gfp: str = "GFP_KERNEL", cpu: int = 0):
    """``krealloc(addr, new_size, gfp)``: size 0 frees and returns ZERO_SIZE_PTR; a size that
    still fits (``ksize``) keeps the object; otherwise a new kmalloc, then the old one freed."""
    if not slub._is_int(new_size) or new_size < 0:
        raise EINVAL(f"size {new_size!r} is not a byte count")
    _gfp_type(gfp)
    if new_size == 0:
        state, _ = kfree(state, addr, cpu)
        return state, ZERO_SIZE_PTR
    if not _is_null(addr):
        _, ks = ksize(state, addr)
        if ks >= new_size:
            return state, addr
        _check_live(state, addr, cpu)
    new, ret = kmalloc(state, new_size, gfp, cpu)
    if not _is_null(addr):
        new, _ = kfree(new, addr, cpu)
    return new, ret


def _check_live(state: KmallocState, addr: int, cpu: int) -> None:
    """Raise what kfree would raise, before krealloc allocates anything."""
    kfree(state, addr, cpu)


def write(state: KmallocState, addr: int, length: int):
    """:func:`spec.slub.write` on the slab allocator underneath."""
    new, _ = slub.write(state.slub, addr, length)
    return _with_slub(state, new), None


def kmem_cache_shrink(state: KmallocState, name: str):
    """:func:`spec.slub.kmem_cache_shrink` of one kmalloc cache."""
    new, ret = slub.kmem_cache_shrink(state.slub, name)
    return _with_slub(state, new), ret


# ---------------------------------------------------------------------------------------------
# Invariants


def inv_large_blocks(state: KmallocState) -> bool:
    """Every large kmalloc is a live buddy block of its order (above order 1: more than 8 KiB),
    starts at its page, and lies in no slab."""
    for addr, order in state.large.items():
        pfn = (addr - PAGE_OFFSET) >> PAGE_SHIFT
        alloc = state.slub.buddy.allocated.get(pfn)
        if alloc is None or alloc.order != order or addr % PAGE_SIZE or pfn in state.slub.slabs or order < 2:
            return False
    return True


def inv_slub(state: KmallocState) -> bool:
    """Every invariant of the slab allocator underneath holds."""
    return all(getattr(slub, n)(state.slub) for n in dir(slub) if n.startswith("inv_"))


def inv_kmalloc_caches(state: KmallocState) -> bool:
    """Every kmalloc cache exists with its class size, natural alignment and is never merged."""
    for kind in state.config.types:
        for index in CREATION_ORDER:
            s = state.slub.caches.get(cache_name(index, kind))
            size = kmalloc_size(index)
            if s is None or s.object_size != size or s.align < (size & -size) or s.refcount != -1:
                return False
    return True


# ---------------------------------------------------------------------------------------------
# Views


def slabinfo(state: KmallocState) -> str:
    """/proc/slabinfo of the slab allocator underneath."""
    return slub.slabinfo(state.slub)


def render(state: KmallocState) -> str:
    """A counterexample: the non-empty caches, the large allocations, buddyinfo."""
    text = slub.slabinfo(state.slub)
    lines = text.splitlines(keepends=True)
    busy = [line for line in lines[2:] if line.split()[2] != "0"]
    large = "".join(f"large kmalloc 0x{a:x} order {o}\n" for a, o in sorted(state.large.items()))
    return "".join(lines[:2] + busy) + large + spec_buddy.buddyinfo(state.slub.buddy)
