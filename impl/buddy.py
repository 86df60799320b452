"""The buddy allocator on arrays: the fast twin of :mod:`spec.buddy`.

:class:`BuddyAllocator` makes exactly the choices the spec makes (zone, free list, head or tail
insertion, split halves, claim and steal of pageblocks, CMA and HighAtomic rules, watermarks,
boot-time free order) and raises the same typed errors, so that after every operation
``allocator.abstract()`` equals the spec's state.  The configuration formulas (watermarks,
lowmem reserves, zonelists, GFP masks and alloc flags) are imported from :mod:`spec.zone`; the
algorithms are re-implemented here as numba kernels over these arrays:

``pages[pfn]``: one 16-byte record per page frame (:func:`page_dtype`), like ``struct page``
    ``next``, ``prev``: the intrusive doubly linked free list through the head page of every
    free block (``page->buddy_list``); ``buddy_order``: the order of a free block head, -1
    otherwise (``PageBuddy`` + ``buddy_order()``); ``free_mt``: the list that block is on;
    ``alloc_order``, ``alloc_mt``: order and GFP migratetype of a live allocation head, -1
    otherwise; ``zone``: the zone that manages the pfn, -1 for holes and reserved pages.
    One record per page keeps everything a free or an alloc touches in one cache line.
``lists[HEAD|TAIL|COUNT, zone, order, migratetype]`` (int64)
    the ends and length of every free list (``free_area[order].free_list[mt]``, ``nr_free``).
``pageblock_mt[pfn >> pageblock_order]`` (int8)
    ``get_pageblock_migratetype()``.
``zone_table[zone, column]`` (int64)
    NR_FREE_PAGES, ``nr_reserved_highatomic``, span, managed pages, watermarks, free pages per
    migratetype and ``lowmem_reserve[]``.

A 64 GiB machine (16 Mi pages) takes about 270 MiB.

Batched operations: :meth:`BuddyAllocator.alloc_many`, :meth:`BuddyAllocator.free_many` and
:meth:`BuddyAllocator.simulate` (a trace of allocs and frees, see :data:`TRACE_DTYPE` and
:func:`make_trace`) run whole workloads inside one kernel call.

>>> b = BuddyAllocator("toy-64")
>>> b.alloc_pages(0, "GFP_HIGHUSER_MOVABLE")
0
>>> print(b.buddyinfo(), end="")
Node 0, zone   Normal      1      1      1      1      3 
>>> b.free_pages(0, 0)
>>> from spec import buddy
>>> b.abstract() == buddy.init("toy-64")
True
"""

from __future__ import annotations


import numpy as np
from immutables import Map

try:
    from numba import njit
except ImportError as exc:  # pragma: no cover - the impl has no slow fallback on purpose
    raise ImportError("impl.buddy needs numba (pip install 'numba>=0.60'); it has no pure-Python fallback") from exc

from impl import bugs
from spec import buddy as spec_buddy
from spec.buddy import FALLBACKS, NR_MIGRATETYPES, Alloc, BuddyState, Zone
from spec.errors import EINVAL, ENOMEM, BadPage, DoubleFree
from spec.zone import (
    ALLOC_RESERVES,
    GFP_MASKS,
    MAX_NR_ZONES,
    MIGRATE_PCPTYPES,
    MIGRATETYPE_NAMES,
    ZONE_NAMES,
    AllocFlags,
    MachineConfig,
    MigrateType,
    Wmark,
    ZoneType,
    boot_free_ranges,
    cma_flags,
    cma_pageblocks,
    gfp_mask,
    gfp_to_alloc_flags,
    lowmem_reserves,
    managed_pages,
    present_pages,
    preset,
    validate_config,
    zone_watermarks,
    zonelist,
)

__all__ = ["BuddyAllocator", "TRACE_DTYPE", "OP_ALLOC", "OP_FREE", "GFP_NAMES", "as_trace", "make_trace"]

# The kernels.  They never allocate, so they run without numba's reference counting (_nrt=False,
# as numba's own string and sort helpers do): with it, every call between kernels would pay
# atomic increments and decrements on each array argument, several times the cost of the
# operation itself.  The two kernels that build arrays or sets keep it.  cache=True keeps the
# compiled code between runs (see _drop_stale_cache for the constants frozen into it).
kernel = njit(cache=True, _nrt=False)
alloc_kernel = njit(cache=True)

# Constants the kernels use, taken from the spec.
UNMOVABLE, MOVABLE, RECLAIMABLE = int(MigrateType.UNMOVABLE), int(MigrateType.MOVABLE), int(MigrateType.RECLAIMABLE)
HIGHATOMIC, CMA = int(MigrateType.HIGHATOMIC), int(MigrateType.CMA)
PCPTYPES = MIGRATE_PCPTYPES
F_OOM, F_MIN_RESERVE, F_NON_BLOCK = int(AllocFlags.OOM), int(AllocFlags.MIN_RESERVE), int(AllocFlags.NON_BLOCK)
F_CMA, F_HIGHATOMIC, F_NOFRAGMENT = int(AllocFlags.CMA), int(AllocFlags.HIGHATOMIC), int(AllocFlags.NOFRAGMENT)
F_RESERVES = int(ALLOC_RESERVES)
WMARK_MIN, WMARK_LOW = int(Wmark.MIN), int(Wmark.LOW)
_FALLBACKS = np.array([FALLBACKS[MigrateType(mt)] for mt in range(PCPTYPES)], dtype=np.int64)

GFP_NAMES = tuple(GFP_MASKS)  # a trace's gfp field indexes this tuple
_GFP_INDEX = {name: i for i, name in enumerate(GFP_NAMES)}
ENOMEM_RESULT = -int(ENOMEM.errno)  # -12: an alloc that failed, or a free of one, in a trace

# Layout of the arrays.
HEAD, TAIL, COUNT = range(3)
Z_FREE, Z_HIGHATOMIC, Z_START, Z_END, Z_MANAGED = range(5)
Z_WMARK = 5  # 4 columns: min, low, high, promo
Z_FREE_MT = Z_WMARK + 4  # NR_MIGRATETYPES columns: free pages on each type's lists
Z_LOWMEM = Z_FREE_MT + NR_MIGRATETYPES  # MAX_NR_ZONES columns
Z_COLUMNS = Z_LOWMEM + MAX_NR_ZONES
C_MAX_ORDER, C_PBO, C_END_PFN, C_DEFECTS = range(4)
G_HIGHEST, G_MT, G_FAST, G_SLOW0, G_SLOW1, G_NZONES, G_ZONELIST = range(7)
G_COLUMNS = G_ZONELIST + MAX_NR_ZONES

# Defect switches (impl.bugs), passed to the kernels as bits of cfg[C_DEFECTS].
D_WRONG_BUDDY, D_MISSED_MERGE, D_NO_FREE_CHECKS, D_MERGE_ANY = 1, 2, 4, 8
_DEFECT_BITS = {
    "buddy-wrong-buddy": D_WRONG_BUDDY,
    "buddy-missed-merge": D_MISSED_MERGE,
    "buddy-double-free-undetected": D_NO_FREE_CHECKS,
    "buddy-merge-nonmergeable-pageblocks": D_MERGE_ANY,
}

# What the free checks return (0: the free may go ahead).
E_ORDER, E_ZONE, E_ALIGN, E_DOUBLE, E_NOT_HEAD, E_WRONG_ORDER = range(1, 7)

OP_ALLOC, OP_FREE = 0, 1
TRACE_DTYPE = np.dtype([("op", np.int8), ("order", np.int8), ("gfp", np.int8), ("ref", np.int32)])
"""One trace operation: ``op`` (OP_ALLOC or OP_FREE), ``order``, ``gfp`` (an index into
:data:`GFP_NAMES`, allocs only) and ``ref`` (frees only: the index of the earlier alloc whose
block it frees)."""


# ---------------------------------------------------------------------------------------------
# Free-list primitives (__add_to_free_list, __del_page_from_free_list)


@kernel
def _add_to_free_list(pages, lists, zones, z, pfn, order, mt, tail):
    """Link the free block at ``pfn`` at the head (or tail) of free_area[order].free_list[mt]."""
    if tail:
        last = lists[TAIL, z, order, mt]
        pages[pfn].prev = last
        pages[pfn].next = -1
        if last >= 0:
            pages[last].next = pfn
        else:
            lists[HEAD, z, order, mt] = pfn
        lists[TAIL, z, order, mt] = pfn
    else:
        first = lists[HEAD, z, order, mt]
        pages[pfn].next = first
        pages[pfn].prev = -1
        if first >= 0:
            pages[first].prev = pfn
        else:
            lists[TAIL, z, order, mt] = pfn
        lists[HEAD, z, order, mt] = pfn
    lists[COUNT, z, order, mt] += 1
    pages[pfn].buddy_order = order
    pages[pfn].free_mt = mt
    zones[z, Z_FREE] += 1 << order
    zones[z, Z_FREE_MT + mt] += 1 << order


@kernel
def _del_from_free_list(pages, lists, zones, z, pfn):
    """Unlink the free block at ``pfn`` from the list it is on."""
    order, mt = np.int64(pages[pfn].buddy_order), np.int64(pages[pfn].free_mt)
    nxt, prv = np.int64(pages[pfn].next), np.int64(pages[pfn].prev)
    if prv >= 0:
        pages[prv].next = nxt
    else:
        lists[HEAD, z, order, mt] = nxt
    if nxt >= 0:
        pages[nxt].prev = prv
    else:
        lists[TAIL, z, order, mt] = prv
    lists[COUNT, z, order, mt] -= 1
    pages[pfn].buddy_order = -1
    zones[z, Z_FREE] -= 1 << order
    zones[z, Z_FREE_MT + mt] -= 1 << order


@kernel
def _set_pageblocks(pbmt, pbo, pfn, order, mt):
    """set_pageblock_migratetype() for every pageblock of the block (at least one)."""
    first = pfn >> pbo
    count = max(1, (1 << order) >> pbo)
    for b in range(first, min(first + count, pbmt.shape[0])):
        pbmt[b] = mt


# ---------------------------------------------------------------------------------------------
# Freeing (__free_one_page and its checks)


@kernel
def _buddy_of(pfn, order, defects):
    if defects & D_WRONG_BUDDY:
        return pfn + (1 << order)
    return pfn ^ (1 << order)


@kernel
def _page_is_buddy(pages, z, buddy, order):
    """page_is_buddy(): a free block head of this order in the same zone."""
    return 0 <= buddy < pages.shape[0] and pages[buddy].buddy_order == order and pages[buddy].zone == z


@kernel
def _buddy_merge_likely(pages, z, pfn, buddy, order, max_order, defects):
    """buddy_merge_likely(): is the buddy of the next-larger block free already?"""
    if order >= max_order - 1:
        return False
    higher = buddy & pfn
    return _page_is_buddy(pages, z, _buddy_of(higher, order + 1, defects), order + 1)


@kernel
def _free_one_block(pages, pbmt, lists, zones, cfg, pfn, order, to_tail):
    """__free_one_page(): merge with free buddies, then link at head or tail."""
    max_order, pbo, defects = cfg[C_MAX_ORDER], cfg[C_PBO], cfg[C_DEFECTS]
    z, mt = np.int64(pages[pfn].zone), np.int64(pbmt[pfn >> pbo])
    buddy, have_buddy = np.int64(0), False
    while order < max_order:
        buddy, have_buddy = _buddy_of(pfn, order, defects), True
        if not _page_is_buddy(pages, z, buddy, order):
            break
        buddy_mt = mt if order < pbo else np.int64(pbmt[buddy >> pbo])
        if buddy_mt != mt and not defects & D_MERGE_ANY:
            if not (mt < PCPTYPES and buddy_mt < PCPTYPES):
                break
        _del_from_free_list(pages, lists, zones, z, buddy)
        if buddy_mt != mt:
            _set_pageblocks(pbmt, pbo, buddy, order, mt)
        pfn, order = buddy & pfn, order + 1
        if defects & D_MISSED_MERGE:
            break
    tail = to_tail or (have_buddy and _buddy_merge_likely(pages, z, pfn, buddy, order, max_order, defects))
    _add_to_free_list(pages, lists, zones, z, pfn, order, mt, tail)


@kernel
def _check_free(pages, cfg, pfn, order):
    """The preconditions of free_pages on in-range integers: 0 or an E_* code."""
    max_order = cfg[C_MAX_ORDER]
    if not 0 <= order <= max_order:
        return E_ORDER
    if not 0 <= pfn < cfg[C_END_PFN] or pages[pfn].zone < 0:
        return E_ZONE
    if pfn & ((1 << order) - 1):
        return E_ALIGN
    if cfg[C_DEFECTS] & D_NO_FREE_CHECKS:
        return 0
    if pages[pfn].alloc_order == order and cfg[C_DEFECTS] == 0:
        return 0  # a live head: free and allocated blocks partition memory, so no free block holds it
    for o in range(max_order + 1):
        if pages[pfn & ~((1 << o) - 1)].buddy_order == o:
            return E_DOUBLE
    if pages[pfn].alloc_order < 0:
        return E_NOT_HEAD
    if pages[pfn].alloc_order != order:
        return E_WRONG_ORDER
    return 0


@kernel
def _split_large_buddy(pages, pbmt, lists, zones, cfg, pfn, order, to_tail):
    """split_large_buddy(): free a block above pageblock order one pageblock at a time."""
    chunk = min(order, cfg[C_PBO])
    for head in range(pfn, pfn + (1 << order), 1 << chunk):
        _free_one_block(pages, pbmt, lists, zones, cfg, head, chunk, to_tail)


@kernel
def _free_pages(pages, pbmt, lists, zones, cfg, pfn, order):
    """__free_pages() of a checked block."""
    pages[pfn].alloc_order = -1
    _split_large_buddy(pages, pbmt, lists, zones, cfg, pfn, order, False)


@kernel
def _free_pages_checked(pages, pbmt, lists, zones, cfg, pfn, order):
    code = _check_free(pages, cfg, pfn, order)
    if code == 0:
        _free_pages(pages, pbmt, lists, zones, cfg, pfn, order)
    return code


@kernel
def _boot(pages, pbmt, lists, zones, cfg, ranges, cma):
    """memblock_free_all(): __free_pages_memory() over each managed range, FPI_TO_TAIL; then
    init_cma_reserved_pageblock(): each CMA pageblock freed in turn, not to the tail."""
    max_order = cfg[C_MAX_ORDER]
    for r in range(ranges.shape[0]):
        start, end = ranges[r, 0], ranges[r, 1]
        while start < end:
            order = max_order
            if start != 0:
                order = 0
                while order < max_order and not (start >> order) & 1:
                    order += 1
            while start + (1 << order) > end:
                order -= 1
            _split_large_buddy(pages, pbmt, lists, zones, cfg, start, order, True)
            start += 1 << order
    for i in range(cma.shape[0]):
        _split_large_buddy(pages, pbmt, lists, zones, cfg, cma[i], cfg[C_PBO], False)


# ---------------------------------------------------------------------------------------------
# Allocation (__rmqueue and its helpers)


@kernel
def _expand(pages, lists, zones, z, pfn, low, high, mt):
    """expand(): split down to ``low``; each upper half goes to the head of its list."""
    while high > low:
        high -= 1
        _add_to_free_list(pages, lists, zones, z, pfn + (1 << high), high, mt, False)


@kernel
def _rmqueue_smallest(pages, lists, zones, cfg, z, order, mt):
    """__rmqueue_smallest(): the head of the smallest non-empty list of type ``mt``, or -1."""
    for current in range(order, cfg[C_MAX_ORDER] + 1):
        pfn = lists[HEAD, z, current, mt]
        if pfn >= 0:
            _del_from_free_list(pages, lists, zones, z, pfn)
            _expand(pages, lists, zones, z, pfn, order, current, mt)
            return pfn
    return -1


@kernel
def _find_suitable_fallback(lists, z, order, mt, claimable, pbo):
    """find_suitable_fallback(): -2 if claiming is pointless, -1 if none, else a type."""
    if claimable and not (order >= pbo or order >= pbo // 2 or mt == RECLAIMABLE or mt == UNMOVABLE):
        return -2
    for k in range(_FALLBACKS.shape[1]):
        fallback = _FALLBACKS[mt, k]
        if lists[HEAD, z, order, fallback] >= 0:
            return fallback
    return -1


@kernel
def _pageblock_census(pages, zones, z, pfn, pbo):
    """prep_move_freepages_block(): (start, free, movable) of the pageblock; start -1 if it
    reaches outside the zone."""
    start = pfn >> pbo << pbo
    if start < zones[z, Z_START] or start + (1 << pbo) > zones[z, Z_END]:
        return -1, 0, 0
    free = movable = 0
    p, end = start, start + (1 << pbo)
    while p < end:
        if pages[p].buddy_order >= 0:
            size = np.int64(1) << pages[p].buddy_order
            free += size
            p += size
        elif pages[p].alloc_order >= 0:
            size = np.int64(1) << pages[p].alloc_order
            if pages[p].alloc_mt == MOVABLE:
                movable += size
            p += size
        else:
            p += 1
    return start, free, movable


@kernel
def _move_freepages_block(pages, lists, zones, z, start, pbo, new_mt):
    """__move_freepages_block(): every free block of the pageblock to the tail of ``new_mt``."""
    p, end = start, start + (1 << pbo)
    while p < end:
        order = np.int64(pages[p].buddy_order)
        if order >= 0:
            _del_from_free_list(pages, lists, zones, z, p)
            _add_to_free_list(pages, lists, zones, z, p, order, new_mt, True)
            p += 1 << order
        elif pages[p].alloc_order >= 0:
            p += np.int64(1) << pages[p].alloc_order
        else:
            p += 1


@kernel
def _try_to_claim_block(pages, pbmt, lists, zones, cfg, z, pfn, current, order, start_mt, block_mt):
    """try_to_claim_block(): retype the fallback block's pageblock(s) if worth it; pfn or -1."""
    pbo = cfg[C_PBO]
    if current >= pbo:
        _del_from_free_list(pages, lists, zones, z, pfn)
        _set_pageblocks(pbmt, pbo, pfn, current, start_mt)
        _expand(pages, lists, zones, z, pfn, order, current, start_mt)
        return pfn
    start, free, movable = _pageblock_census(pages, zones, z, pfn, pbo)
    if start < 0:
        return -1
    if start_mt == MOVABLE:
        alike = movable
    else:
        alike = (1 << pbo) - (free + movable) if block_mt == MOVABLE else 0
    if free + alike < 1 << (pbo - 1):
        return -1
    _move_freepages_block(pages, lists, zones, z, start, pbo, start_mt)
    _set_pageblocks(pbmt, pbo, start, 0, start_mt)
    return _rmqueue_smallest(pages, lists, zones, cfg, z, order, start_mt)


@kernel
def _rmqueue_claim(pages, pbmt, lists, zones, cfg, z, order, start_mt, flags):
    """__rmqueue_claim(): try fallback types from the largest order down."""
    pbo = cfg[C_PBO]
    min_order = pbo if order < pbo and flags & F_NOFRAGMENT else order
    for current in range(cfg[C_MAX_ORDER], min_order - 1, -1):
        fallback = _find_suitable_fallback(lists, z, current, start_mt, True, pbo)
        if fallback == -1:
            continue
        if fallback == -2:
            break
        pfn = lists[HEAD, z, current, fallback]
        got = _try_to_claim_block(pages, pbmt, lists, zones, cfg, z, pfn, current, order, start_mt, fallback)
        if got >= 0:
            return got
    return -1


@kernel
def _rmqueue_steal(pages, lists, zones, cfg, z, order, start_mt):
    """__rmqueue_steal(): the smallest fallback block, without retyping its pageblock."""
    for current in range(order, cfg[C_MAX_ORDER] + 1):
        fallback = _find_suitable_fallback(lists, z, current, start_mt, False, cfg[C_PBO])
        if fallback < 0:
            continue
        pfn = lists[HEAD, z, current, fallback]
        _del_from_free_list(pages, lists, zones, z, pfn)
        _expand(pages, lists, zones, z, pfn, order, current, fallback)
        return pfn
    return -1


@kernel
def _rmqueue(pages, pbmt, lists, zones, cfg, z, order, mt, flags):
    """__rmqueue(): CMA first if most free memory is CMA; own type; CMA; claim; steal."""
    if flags & F_CMA and zones[z, Z_FREE_MT + CMA] > zones[z, Z_FREE] // 2:
        pfn = _rmqueue_smallest(pages, lists, zones, cfg, z, order, CMA)
        if pfn >= 0:
            return pfn
    pfn = _rmqueue_smallest(pages, lists, zones, cfg, z, order, mt)
    if pfn < 0 and flags & F_CMA:
        pfn = _rmqueue_smallest(pages, lists, zones, cfg, z, order, CMA)
    if pfn < 0:
        pfn = _rmqueue_claim(pages, pbmt, lists, zones, cfg, z, order, mt, flags)
    if pfn < 0 and not flags & F_NOFRAGMENT:
        pfn = _rmqueue_steal(pages, lists, zones, cfg, z, order, mt)
    return pfn


@kernel
def _rmqueue_buddy(pages, pbmt, lists, zones, cfg, z, order, mt, flags):
    """rmqueue_buddy(): HighAtomic first for high-order atomics, last for other reserve users."""
    pfn = -1
    if flags & F_HIGHATOMIC:
        pfn = _rmqueue_smallest(pages, lists, zones, cfg, z, order, HIGHATOMIC)
    if pfn < 0:
        pfn = _rmqueue(pages, pbmt, lists, zones, cfg, z, order, mt, flags)
    if pfn < 0 and flags & (F_OOM | F_NON_BLOCK):
        pfn = _rmqueue_smallest(pages, lists, zones, cfg, z, order, HIGHATOMIC)
    return pfn


@kernel
def _reserve_highatomic_pageblock(pages, pbmt, lists, zones, cfg, z, pfn, order):
    """reserve_highatomic_pageblock(): set aside up to ~1% of the zone for high-order atomics."""
    pbo = cfg[C_PBO]
    block = np.int64(1) << pbo
    share = zones[z, Z_MANAGED] // 100
    if share < block:
        return
    limit = (share + block - 1) // block * block
    mt = np.int64(pbmt[pfn >> pbo])
    if zones[z, Z_HIGHATOMIC] >= limit or mt >= PCPTYPES:
        return
    if order < pbo:
        start, _, _ = _pageblock_census(pages, zones, z, pfn, pbo)
        if start < 0:
            return
        _move_freepages_block(pages, lists, zones, z, start, pbo, HIGHATOMIC)
        _set_pageblocks(pbmt, pbo, start, 0, HIGHATOMIC)
        added = block
    else:
        _set_pageblocks(pbmt, pbo, pfn, order, HIGHATOMIC)
        added = np.int64(1) << order
    zones[z, Z_HIGHATOMIC] += added


@kernel
def _zone_watermark_ok(lists, zones, z, order, mark, highest, flags, max_order):
    """__zone_watermark_ok(): would the zone stay above ``mark`` after this allocation?"""
    free = zones[z, Z_FREE] - ((1 << order) - 1)
    if not flags & F_RESERVES:
        free -= zones[z, Z_FREE_MT + HIGHATOMIC]
    if not flags & F_CMA:
        free -= zones[z, Z_FREE_MT + CMA]
    wmin = mark
    if flags & F_MIN_RESERVE:
        wmin -= wmin // 2
        if flags & F_NON_BLOCK:
            wmin -= wmin // 4
    if flags & F_OOM:
        wmin -= wmin // 2
    if free <= wmin + zones[z, Z_LOWMEM + highest]:
        return False
    if order == 0:
        return True
    for o in range(order, max_order + 1):
        for mt in range(PCPTYPES):
            if lists[HEAD, z, o, mt] >= 0:
                return True
        if flags & F_CMA and lists[HEAD, z, o, CMA] >= 0:
            return True
        if flags & (F_HIGHATOMIC | F_OOM) and lists[HEAD, z, o, HIGHATOMIC] >= 0:
            return True
    return False


@kernel
def _get_page_from_freelist(pages, pbmt, lists, zones, cfg, gfp, g, order, wmark, flags):
    """get_page_from_freelist(): the first zone of the zonelist that passes and has a block."""
    npasses = 2 if flags & F_NOFRAGMENT else 1
    for p in range(npasses):
        # Linux's get_page_from_freelist() retries every zone with ALLOC_NOFRAGMENT cleared.
        attempt = flags & ~F_NOFRAGMENT if p == 1 else flags
        for k in range(gfp[g, G_NZONES]):
            z = gfp[g, G_ZONELIST + k]
            mark = zones[z, Z_WMARK + wmark]
            if not _zone_watermark_ok(lists, zones, z, order, mark, gfp[g, G_HIGHEST], attempt, cfg[C_MAX_ORDER]):
                continue
            pfn = _rmqueue_buddy(pages, pbmt, lists, zones, cfg, z, order, gfp[g, G_MT], attempt)
            if pfn >= 0:
                if attempt & F_HIGHATOMIC:
                    _reserve_highatomic_pageblock(pages, pbmt, lists, zones, cfg, z, pfn, order)
                return pfn
    return -1


@kernel
def _alloc_pages(pages, pbmt, lists, zones, cfg, gfp, order, g):
    """alloc_pages(): the fast path at the low watermark, then the slow path at min; pfn or -1."""
    pfn = _get_page_from_freelist(pages, pbmt, lists, zones, cfg, gfp, g, order, WMARK_LOW, gfp[g, G_FAST])
    if pfn < 0:
        slow = gfp[g, G_SLOW1] if order > 0 else gfp[g, G_SLOW0]
        pfn = _get_page_from_freelist(pages, pbmt, lists, zones, cfg, gfp, g, order, WMARK_MIN, slow)
    if pfn >= 0:
        pages[pfn].alloc_order = order
        pages[pfn].alloc_mt = gfp[g, G_MT]
    return pfn


# ---------------------------------------------------------------------------------------------
# Batches


@kernel
def _alloc_many(pages, pbmt, lists, zones, cfg, gfp, orders, gfps, out):
    for i in range(orders.shape[0]):
        out[i] = _alloc_pages(pages, pbmt, lists, zones, cfg, gfp, orders[i], gfps[i])


@alloc_kernel
def _check_free_many(pages, cfg, pfns, orders):
    """Check a batch as if freed one by one: (index, code) of the first bad one, or (-1, 0).

    Free pages after the first k frees are the free pages now plus the blocks of those k
    (valid, hence disjoint live) allocations, so a later pfn inside one of them is a DoubleFree.
    """
    freed = {np.int64(-1)}
    max_order = cfg[C_MAX_ORDER]
    for i in range(pfns.shape[0]):
        pfn, order = pfns[i], orders[i]
        code = _check_free(pages, cfg, pfn, order)
        if code == E_ORDER or code == E_ZONE or code == E_ALIGN or code == E_DOUBLE:
            return i, code
        if not cfg[C_DEFECTS] & D_NO_FREE_CHECKS:
            for o in range(max_order + 1):
                head = pfn & ~((1 << o) - 1)
                if pages[head].alloc_order == o and head in freed:
                    return i, E_DOUBLE
        if code != 0:
            return i, code
        freed.add(pfn)
    return -1, 0


@kernel
def _free_many(pages, pbmt, lists, zones, cfg, pfns, orders):
    for i in range(pfns.shape[0]):
        _free_pages(pages, pbmt, lists, zones, cfg, pfns[i], orders[i])


@kernel
def _simulate(pages, pbmt, lists, zones, cfg, gfp, ops, orders, gfps, refs, results):
    """Run a trace; returns (index, code) of the first failing free, or (-1, 0)."""
    for i in range(ops.shape[0]):
        if ops[i] == OP_ALLOC:
            pfn = _alloc_pages(pages, pbmt, lists, zones, cfg, gfp, np.int64(orders[i]), np.int64(gfps[i]))
            results[i] = pfn if pfn >= 0 else ENOMEM_RESULT
            continue
        pfn = results[refs[i]]
        if pfn < 0:
            results[i] = ENOMEM_RESULT
            continue
        code = _check_free(pages, cfg, pfn, np.int64(orders[i]))
        if code:
            return i, code
        _free_pages(pages, pbmt, lists, zones, cfg, pfn, np.int64(orders[i]))
        results[i] = 0
    return -1, 0


@alloc_kernel
def _dump_free_lists(pages, lists):
    """Every free list walked from its head (at most COUNT steps): flat pfns and lengths."""
    nz, no, nm = lists.shape[1], lists.shape[2], lists.shape[3]
    total = 0
    for z in range(nz):
        for o in range(no):
            for m in range(nm):
                total += max(lists[COUNT, z, o, m], 0)
    out = np.empty(total, np.int64)
    lengths = np.zeros((nz, no, nm), np.int64)
    k = 0
    for z in range(nz):
        for o in range(no):
            for m in range(nm):
                p, n = lists[HEAD, z, o, m], 0
                while p >= 0 and n < lists[COUNT, z, o, m]:
                    out[k] = p
                    k, n, p = k + 1, n + 1, pages[p].next
                lengths[z, o, m] = n
    return out[:k], lengths


@kernel
def _constants_fingerprint():
    """A checksum of the module constants, as the compiled kernels see them."""
    f = 0
    for c in (UNMOVABLE, MOVABLE, RECLAIMABLE, HIGHATOMIC, CMA, PCPTYPES, F_OOM, F_MIN_RESERVE, F_NON_BLOCK, F_CMA,
              F_HIGHATOMIC, F_NOFRAGMENT, F_RESERVES, WMARK_MIN, WMARK_LOW, ENOMEM_RESULT):
        f = (f * 31 + c) & 0xFFFFFFFF
    for m in range(_FALLBACKS.shape[0]):
        for k in range(_FALLBACKS.shape[1]):
            f = (f * 31 + _FALLBACKS[m, k]) & 0xFFFFFFFF
    return f


def _drop_stale_cache() -> None:
    """numba's on-disk cache is keyed on this file, not on the spec values frozen into the
    kernels: if those changed (say a renumbered migratetype), throw the cached code away."""
    if _constants_fingerprint() == _constants_fingerprint.py_func():
        return
    for obj in list(globals().values()):
        if hasattr(obj, "py_func") and getattr(obj, "_cache", None) is not None:
            obj._cache.flush()


_drop_stale_cache()


# ---------------------------------------------------------------------------------------------
# The allocator object


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _gfp_table(cfg: MachineConfig) -> np.ndarray:
    """Per GFP mask: highest zone, migratetype, fast/slow alloc flags and zonelist."""
    table = np.full((len(GFP_NAMES), G_COLUMNS), -1, dtype=np.int64)
    for g, name in enumerate(GFP_NAMES):
        gfp = GFP_MASKS[name]
        zl = zonelist(cfg, gfp.highest_zone)
        nofragment = AllocFlags.NOFRAGMENT if zl and zl[0] == ZoneType.NORMAL else AllocFlags.NONE
        table[g, :G_ZONELIST] = (
            gfp.highest_zone,
            gfp.migratetype,
            cma_flags(gfp, cfg.config_cma) | nofragment,
            gfp_to_alloc_flags(gfp, 0, cfg.config_cma),
            gfp_to_alloc_flags(gfp, 1, cfg.config_cma),
            len(zl),
        )
        table[g, G_ZONELIST : G_ZONELIST + len(zl)] = zl
    return table


def page_dtype(pfn_dtype=np.int32) -> np.dtype:
    """The record of one page frame (int32 links up to 2^31 pfns, int64 beyond)."""
    return np.dtype([("next", pfn_dtype), ("prev", pfn_dtype), ("buddy_order", np.int8), ("free_mt", np.int8),
                     ("alloc_order", np.int8), ("alloc_mt", np.int8), ("zone", np.int8)], align=True)


class BuddyAllocator:
    """Node 0's page allocator on arrays; the same operations, results and errors as
    :mod:`spec.buddy`.  ``BuddyAllocator(config)`` boots like ``spec.buddy.init(config)``."""

    def __init__(self, config: MachineConfig | str):
        cfg = preset(config) if isinstance(config, str) else config
        validate_config(cfg)
        self.config, self.max_order, self.pageblock_order = cfg, cfg.max_order, cfg.pageblock_order
        self.end_pfn = cfg.end_pfn
        align = 1 << cfg.max_order
        n = max(align, -(-self.end_pfn // align) * align)  # buddies of real pfns stay inside
        pfn_dtype = np.int32 if n < 2**31 else np.int64
        self.pages = np.empty(n, dtype=page_dtype(pfn_dtype))
        self.pages.view(np.int8).fill(-1)  # every field -1: no links, not free, not allocated, no zone
        self.pageblock_mt = np.full(n >> cfg.pageblock_order, MOVABLE, dtype=np.int8)
        orders = cfg.max_order + 1
        self.lists = np.zeros((3, MAX_NR_ZONES, orders, NR_MIGRATETYPES), dtype=np.int64)
        self.lists[HEAD:TAIL + 1] = -1
        self.zone_table = np.zeros((MAX_NR_ZONES, Z_COLUMNS), dtype=np.int64)
        self.cfg = np.array([cfg.max_order, cfg.pageblock_order, self.end_pfn, 0], dtype=np.int64)
        self._defects = 0
        self.gfp_table = _gfp_table(cfg)
        self._present = [present_pages(zs) for zs in cfg.zones]
        self._watermarks, self._reserves = zone_watermarks(cfg), lowmem_reserves(cfg)
        for i, zs in enumerate(cfg.zones):
            row = self.zone_table[i]
            row[Z_START], row[Z_END], row[Z_MANAGED] = zs.start_pfn, zs.end_pfn, managed_pages(zs)
            row[Z_WMARK : Z_WMARK + 4] = self._watermarks[i]
            row[Z_LOWMEM : Z_LOWMEM + MAX_NR_ZONES] = self._reserves[i]
            if zs.spanned:
                self.pages["zone"][zs.start_pfn : zs.end_pfn] = i
                for s, e in zs.absent + zs.reserved:
                    self.pages["zone"][max(s, zs.start_pfn) : min(e, zs.end_pfn)] = -1
            for s, e in zs.cma:
                self.pageblock_mt[s >> cfg.pageblock_order : e >> cfg.pageblock_order] = CMA
        self._sync_defects()
        ranges = np.array(boot_free_ranges(cfg), dtype=np.int64).reshape(-1, 2)
        cma = np.array(cma_pageblocks(cfg), dtype=np.int64)
        _boot(self.pages, self.pageblock_mt, self.lists, self.zone_table, self.cfg, ranges, cma)

    # -- the operations of spec.buddy ---------------------------------------------------------

    def alloc_pages(self, order: int, gfp: str = "GFP_KERNEL") -> int:
        """``alloc_pages(gfp, order)``: the first pfn of 2^order contiguous pages.

        ``EINVAL`` for an order outside 0..max_order or an unknown GFP mask, ``ENOMEM`` when no
        zone of the zonelist can give a block.
        """
        if not _is_int(order) or not 0 <= order <= self.max_order:
            raise EINVAL(f"order {order!r} is outside 0..{self.max_order}")
        g = _GFP_INDEX.get(gfp) if isinstance(gfp, str) else None
        if g is None:
            gfp_mask(gfp)  # raises EINVAL
        self._sync_defects()
        pfn = _alloc_pages(self.pages, self.pageblock_mt, self.lists, self.zone_table, self.cfg, self.gfp_table, order, g)
        if pfn < 0:
            raise ENOMEM(f"no zone can satisfy an order-{order} {gfp} allocation")
        return int(pfn)

    def free_pages(self, pfn: int, order: int) -> None:
        """``__free_pages(page, order)``: give back the block allocated at ``pfn`` with ``order``.

        ``EINVAL`` (order out of range, pfn outside every zone, pfn not aligned), ``DoubleFree``
        (pfn lies in a free block) or ``BadPage`` (not the head of a live allocation of that order).
        """
        if not _is_int(pfn) or not _is_int(order):
            raise EINVAL(f"pfn and order must be integers, got {pfn!r}, {order!r}")
        if not 0 <= order <= self.max_order:
            raise EINVAL(f"order {order} is outside 0..{self.max_order}")
        if not 0 <= pfn < self.end_pfn:
            raise EINVAL(f"pfn {pfn} is not a page of any zone")
        self._sync_defects()
        code = _free_pages_checked(self.pages, self.pageblock_mt, self.lists, self.zone_table, self.cfg, pfn, order)
        if code:
            raise self._free_error(code, pfn, order)

    # -- batches --------------------------------------------------------------------------------

    def alloc_many(self, orders, gfp="GFP_KERNEL") -> np.ndarray:
        """Allocate one block per order, in sequence, as repeated :meth:`alloc_pages` would.

        ``gfp`` is one GFP mask name or a sequence of names, one per order.  Returns the pfns as
        an int64 array with -1 where that allocation failed with ENOMEM (the batch goes on).  An
        order outside 0..max_order, a non-integer order or an unknown mask raises ``EINVAL``
        before anything is allocated.
        """
        order_arr = self._int_array(orders, "orders").reshape(-1)
        bad = np.flatnonzero((order_arr < 0) | (order_arr > self.max_order))
        if bad.size:
            raise EINVAL(f"orders[{bad[0]}] = {order_arr[bad[0]]} is outside 0..{self.max_order}")
        if isinstance(gfp, str):
            gfps = np.full(order_arr.shape, self._gfp_index(gfp), dtype=np.int64)
        else:
            names = list(gfp)
            if len(names) != order_arr.size:
                raise EINVAL(f"{len(names)} GFP masks for {order_arr.size} orders")
            gfps = np.array([self._gfp_index(name) for name in names], dtype=np.int64)
        out = np.empty(order_arr.shape, dtype=np.int64)
        self._sync_defects()
        _alloc_many(self.pages, self.pageblock_mt, self.lists, self.zone_table, self.cfg, self.gfp_table, order_arr, gfps, out)
        return out

    def free_many(self, pfns, orders) -> None:
        """Free blocks as repeated :meth:`free_pages` would, but all or nothing.

        ``orders`` is one order or one per pfn.  The whole batch is checked first, as if freed in
        sequence (so a pfn freed twice, or inside a block freed earlier in the batch, is a
        ``DoubleFree``); the first bad element raises its typed error, naming its index, and
        nothing is freed.
        """
        pfn_arr = self._int_array(pfns, "pfns")
        order_arr = self._int_array(orders, "orders")
        if np.ndim(pfns) != 1:
            raise EINVAL("pfns must be a 1-D array of integers")
        if np.ndim(orders) == 0:
            order_arr = np.full(pfn_arr.shape, order_arr[0], dtype=np.int64)
        if order_arr.shape != pfn_arr.shape:
            raise EINVAL(f"{order_arr.size} orders for {pfn_arr.size} pfns")
        self._sync_defects()
        index, code = _check_free_many(self.pages, self.cfg, pfn_arr, order_arr)
        if code:
            err = self._free_error(code, int(pfn_arr[index]), int(order_arr[index]))
            raise type(err)(f"pfns[{index}]: {err}")
        _free_many(self.pages, self.pageblock_mt, self.lists, self.zone_table, self.cfg, pfn_arr, order_arr)

    def simulate(self, trace) -> np.ndarray:
        """Run a trace of allocs and frees (:data:`TRACE_DTYPE`, or a tuple ``(op, order, gfp,
        ref)`` of arrays) and return one int64 result per operation: the pfn of an alloc or -12
        (ENOMEM), 0 for a free, -12 for a free of an alloc that failed (skipped).

        A malformed trace (unknown op, order outside 0..max_order, gfp index outside
        :data:`GFP_NAMES`, a free whose ref is not an earlier alloc) raises ``EINVAL`` before any
        operation runs.  A free that the spec would refuse raises its typed error with the trace
        index in the message; the operations before it have taken effect, it has not.
        """
        ops, orders, gfps, refs = self._trace_arrays(trace)
        results = np.empty(ops.shape[0], dtype=np.int64)
        self._sync_defects()
        index, code = _simulate(
            self.pages, self.pageblock_mt, self.lists, self.zone_table, self.cfg, self.gfp_table,
            ops, orders, gfps, refs, results,
        )
        if code:
            pfn = int(results[refs[index]])
            err = self._free_error(code, pfn, int(orders[index]))
            raise type(err)(f"trace[{index}]: {err}")
        return results

    # -- views and the abstraction function -------------------------------------------------------

    def nr_free(self) -> np.ndarray:
        """``free_area[order].nr_free`` of every zone: an int64 array zones x orders."""
        return self.lists[COUNT].sum(axis=2)

    def free_pages_per_zone(self) -> np.ndarray:
        """NR_FREE_PAGES of every zone."""
        return self.zone_table[:, Z_FREE].copy()

    @property
    def nbytes(self) -> int:
        """Bytes held by the allocator's arrays."""
        arrays = (self.pages, self.pageblock_mt, self.lists, self.zone_table, self.cfg, self.gfp_table)
        return sum(a.nbytes for a in arrays)

    def abstract(self) -> BuddyState:
        """The :class:`spec.buddy.BuddyState` this object represents."""
        cfg, pbo = self.config, self.pageblock_order
        flat, lengths = _dump_free_lists(self.pages, self.lists)
        pfns, offset = flat.tolist(), 0
        zones = []
        for i, zs in enumerate(cfg.zones):
            area = []
            for o in range(self.max_order + 1):
                lists = []
                for mt in range(NR_MIGRATETYPES):
                    n = int(lengths[i, o, mt])
                    lists.append(tuple(pfns[offset : offset + n]))
                    offset += n
                area.append(tuple(lists))
            row = self.zone_table[i]
            zones.append(
                Zone(
                    i, zs.start_pfn, zs.end_pfn, self._present[i], int(row[Z_MANAGED]), self._watermarks[i],
                    self._reserves[i], tuple(area), int(row[Z_FREE]), int(row[Z_HIGHATOMIC]),
                )
            )
        blocks = -(-self.end_pfn // (1 << pbo))
        free_heads = np.flatnonzero(self.pages["buddy_order"] >= 0)
        live = np.flatnonzero(self.pages["alloc_order"] >= 0)
        buddy = Map(zip(free_heads.tolist(), self.pages["buddy_order"][free_heads].tolist(), strict=True))
        orders, mts = self.pages["alloc_order"][live].tolist(), self.pages["alloc_mt"][live].tolist()
        allocated = Map((p, Alloc(o, m)) for p, o, m in zip(live.tolist(), orders, mts, strict=True))
        return BuddyState(cfg, tuple(zones), tuple(self.pageblock_mt[:blocks].tolist()), buddy, allocated)

    def _nr_free_rows(self):
        nr = self.nr_free()
        return [(ZONE_NAMES[i], nr[i].tolist()) for i in range(MAX_NR_ZONES) if self._present[i]]

    def buddyinfo(self) -> str:
        """``/proc/buddyinfo``, from the counters."""
        return spec_buddy.format_buddyinfo(self._nr_free_rows())

    def pagetypeinfo(self) -> str:
        """``/proc/pagetypeinfo``, from the counters and the pageblock types."""
        cfg, pbo = self.config, self.pageblock_order
        types = spec_buddy.migratetypes_shown(cfg.config_cma)
        mts = [MIGRATETYPE_NAMES.index(t) for t in types]
        populated = [i for i in range(MAX_NR_ZONES) if self._present[i]]
        free_rows = [
            (ZONE_NAMES[i], MIGRATETYPE_NAMES[mt], self.lists[COUNT, i, :, mt].tolist()) for i in populated for mt in mts
        ]
        block_rows = []
        for i in populated:
            zs = cfg.zones[i]
            pfns = np.arange(zs.start_pfn, zs.end_pfn, 1 << pbo)
            for s, e in zs.absent:
                pfns = pfns[(pfns < s) | (pfns >= e)]
            counts = np.bincount(self.pageblock_mt[pfns >> pbo], minlength=NR_MIGRATETYPES)
            block_rows.append((ZONE_NAMES[i], [int(counts[mt]) for mt in mts]))
        return spec_buddy.format_pagetypeinfo(pbo, free_rows, block_rows, types)

    def zoneinfo(self) -> str:
        """The watermark block of ``/proc/zoneinfo``, from the counters."""
        return "".join(
            spec_buddy.format_zoneinfo_zone(
                ZONE_NAMES[i], int(self.zone_table[i, Z_FREE]), self._watermarks[i], zs.spanned, self._present[i],
                int(self.zone_table[i, Z_MANAGED]), sum(e - s for s, e in zs.cma), self._reserves[i],
            )
            for i, zs in enumerate(self.config.zones)
        )

    def extfrag_index(self) -> str:
        """debugfs ``extfrag/extfrag_index``."""
        return spec_buddy.format_extfrag_index(self._nr_free_rows())

    def unusable_index(self) -> str:
        """debugfs ``extfrag/unusable_index``."""
        return spec_buddy.format_unusable_index(self._nr_free_rows())

    def render(self) -> str:
        """buddyinfo and the free-area diagram, as a counterexample shows them."""
        return spec_buddy.render(self.abstract())

    # -- helpers --------------------------------------------------------------------------------

    def _sync_defects(self) -> None:
        """Pass the defects switched on in :mod:`impl.bugs` to the kernels (cfg[C_DEFECTS])."""
        names = bugs.active_names()
        if names or self._defects:
            mask = sum(bit for name, bit in _DEFECT_BITS.items() if name in names)
            if mask != self._defects:
                self.cfg[C_DEFECTS] = self._defects = mask

    @staticmethod
    def _gfp_index(name) -> int:
        g = _GFP_INDEX.get(name) if isinstance(name, str) else None
        if g is None:
            gfp_mask(name)  # raises EINVAL
        return g

    @staticmethod
    def _int_array(values, what: str) -> np.ndarray:
        """An int64 array from integers; ``EINVAL`` for anything else (floats, bools, objects)."""
        try:
            arr = np.asarray(values)
        except (ValueError, TypeError, OverflowError) as exc:
            raise EINVAL(f"{what} must be integers: {exc}") from None
        if arr.size == 0 and arr.dtype.kind == "f":  # np.asarray([]) is float64
            arr = arr.astype(np.int64)
        if arr.dtype.kind == "u":
            arr = np.minimum(arr, np.iinfo(np.int64).max >> 1).astype(np.int64)
        if arr.dtype.kind != "i" or arr.ndim > 1:
            raise EINVAL(f"{what} must be a 1-D array of integers, got dtype {arr.dtype}, shape {arr.shape}")
        return np.ascontiguousarray(arr, dtype=np.int64)  # 0-d becomes 1-d

    def _trace_arrays(self, trace):
        """Check a trace and return its fields as contiguous int8, int8, int8, int32 arrays."""
        if isinstance(trace, np.ndarray) and trace.dtype.names:
            if not {"op", "order", "gfp", "ref"} <= set(trace.dtype.names):
                raise EINVAL(f"a trace has fields op, order, gfp, ref; got {trace.dtype.names}")
            fields = [trace["op"], trace["order"], trace["gfp"], trace["ref"]]
        else:
            fields = list(trace)
            if len(fields) != 4:
                raise EINVAL("a trace is a structured array or a tuple (op, order, gfp, ref) of arrays")
        for k, name in enumerate(("op", "order", "gfp", "ref")):
            arr = np.asarray(fields[k])
            fields[k] = arr if arr.dtype.kind in "iu" else self._int_array(arr, f"trace field {name}")
        ops, orders, gfps, refs = fields
        n = ops.shape[0] if ops.ndim == 1 else -1
        if not all(a.shape == (n,) for a in fields):
            raise EINVAL("the fields of a trace must be 1-D with one entry per operation")
        alloc, free = ops == OP_ALLOC, ops == OP_FREE
        checks = (
            (~(alloc | free), "op is neither OP_ALLOC nor OP_FREE"),
            ((orders < 0) | (orders > self.max_order), f"order is outside 0..{self.max_order}"),
            (alloc & ((gfps < 0) | (gfps >= len(GFP_NAMES))), f"gfp is not an index into {len(GFP_NAMES)} masks"),
            (free & ((refs < 0) | (refs >= np.arange(n, dtype=np.int32 if n < 2**31 else np.int64))),
             "ref is not an earlier operation"),
        )
        for bad, what in checks:
            hits = np.flatnonzero(bad)
            if hits.size:
                raise EINVAL(f"trace[{hits[0]}]: {what}")
        frees = np.flatnonzero(free)
        hits = np.flatnonzero(ops[refs[frees]] != OP_ALLOC)
        if hits.size:
            raise EINVAL(f"trace[{frees[hits[0]]}]: ref is not an alloc")
        dtypes = (np.int8, np.int8, np.int8, np.int32)
        return tuple(np.ascontiguousarray(a, dtype=dt) for a, dt in zip(fields, dtypes, strict=True))

    def _free_error(self, code: int, pfn: int, order: int):
        """The typed error, with the spec's wording, for an E_* code of the free checks."""
        if code == E_ORDER:
            return EINVAL(f"order {order} is outside 0..{self.max_order}")
        if code == E_ZONE:
            return EINVAL(f"pfn {pfn} is not a page of any zone")
        if code == E_ALIGN:
            return EINVAL(f"pfn {pfn} is not aligned to order {order}")
        if code == E_DOUBLE:
            for o in range(self.max_order + 1):
                head = pfn & ~((1 << o) - 1)
                if self.pages["buddy_order"][head] == o:
                    return DoubleFree(f"pfn {pfn} is already free (inside free block {head} of order {o})")
            return DoubleFree(f"pfn {pfn} is already free (inside a block freed earlier in the batch)")
        if code == E_NOT_HEAD:
            return BadPage(f"pfn {pfn} is not the first page of an allocation")
        return BadPage(f"pfn {pfn} was allocated with order {self.pages['alloc_order'][pfn]}, freed with order {order}")


# ---------------------------------------------------------------------------------------------
# Traces


def as_trace(op, order, gfp, ref) -> np.ndarray:
    """A :data:`TRACE_DTYPE` array from four equal-length sequences."""
    trace = np.empty(len(op), dtype=TRACE_DTYPE)
    trace["op"], trace["order"], trace["gfp"], trace["ref"] = op, order, gfp, ref
    return trace


#: Order mix of a general workload: mostly single pages, some small blocks, rare huge ones.
MIXED_ORDERS = {0: 0.82, 1: 0.07, 2: 0.05, 3: 0.05, 9: 0.007, 10: 0.003}
#: Order mix of a page-cache / anonymous-memory heavy workload.
ORDER0_HEAVY = {0: 0.97, 1: 0.02, 3: 0.01}
#: GFP mix: user pages and kernel allocations dominate.
MIXED_GFPS = {
    "GFP_HIGHUSER_MOVABLE": 0.60,
    "GFP_KERNEL": 0.30,
    "GFP_KERNEL_RECLAIMABLE": 0.04,
    "GFP_ATOMIC": 0.03,
    "GFP_NOWAIT": 0.02,
    "GFP_DMA32": 0.01,
}


@kernel
def _trace_chunk(u, base, ops, orders, gfps, refs, live, live_state, order_cdf, order_vals, gfp_cdf, target, p_alloc):
    """Fill ops[base:base + len(u)] from uniforms u (n x 3), updating the live set in place."""
    nlive, live_pages = live_state[0], live_state[1]
    for j in range(u.shape[0]):
        i = base + j
        under = live_pages < target
        if nlive == 0 or u[j, 0] < (p_alloc if under else 1.0 - p_alloc):
            o = order_vals[np.searchsorted(order_cdf, u[j, 1], side="right")]
            ops[i], orders[i], refs[i] = OP_ALLOC, o, 0
            gfps[i] = np.searchsorted(gfp_cdf, u[j, 2], side="right")
            live[nlive] = i
            nlive += 1
            live_pages += 1 << o
        else:
            k = min(int(u[j, 1] * nlive), nlive - 1)
            victim = live[k]
            live[k] = live[nlive - 1]
            nlive -= 1
            ops[i], orders[i], gfps[i], refs[i] = OP_FREE, orders[victim], 0, victim
            live_pages -= 1 << orders[victim]
    live_state[0], live_state[1] = nlive, live_pages


def make_trace(rng: np.random.Generator, n: int, config: MachineConfig | str = "x86_64-1g-cma", *,
               target_fill: float = 0.6, orders: dict[int, float] = MIXED_ORDERS,
               gfps: dict[str, float] = MIXED_GFPS, p_alloc: float = 0.75) -> np.ndarray:
    """A random alloc/free trace of ``n`` operations that keeps memory near ``target_fill``.

    While the pages of live allocations are below ``target_fill`` of the managed pages an
    operation is an alloc with probability ``p_alloc``, above it a free with that probability;
    a free picks a live allocation uniformly.  Orders above the machine's max_order are dropped
    from the mix.  The same ``rng`` state gives the same trace.
    """
    cfg = preset(config) if isinstance(config, str) else config
    mix = {o: w for o, w in orders.items() if o <= cfg.max_order}
    order_vals = np.array(sorted(mix), dtype=np.int64)
    order_cdf = np.cumsum([mix[o] for o in order_vals]) / sum(mix.values())
    gfp_cdf = np.zeros(len(GFP_NAMES))
    for name, w in gfps.items():
        gfp_cdf[_GFP_INDEX[name]] = w
    gfp_cdf = np.cumsum(gfp_cdf) / gfp_cdf.sum()
    order_cdf[-1] = gfp_cdf[-1] = 2.0  # searchsorted never runs off the end
    total = sum(managed_pages(zs) for zs in cfg.zones)
    ops, ords = np.empty(n, np.int8), np.empty(n, np.int8)
    gfp_idx, refs = np.empty(n, np.int8), np.empty(n, np.int32)
    live, live_state = np.empty(n, np.int64), np.zeros(2, np.int64)
    chunk = 1 << 20
    for base in range(0, n, chunk):
        u = rng.random((min(chunk, n - base), 3))
        _trace_chunk(u, base, ops, ords, gfp_idx, refs, live, live_state, order_cdf, order_vals, gfp_cdf,
                     int(target_fill * total), p_alloc)
    return as_trace(ops, ords, gfp_idx, refs)
