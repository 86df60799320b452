"""The buddy allocator: how Linux hands out physical pages (mm/page_alloc.c).

**The problem.**  The kernel needs physically contiguous runs of page frames of many sizes
(one page for a page table, eight for a kernel stack, 512 for a transparent huge page) and must
get them back without the free space crumbling into useless fragments.  The *binary buddy
system* (Knowlton 1965) solves it with one rule: every block has 2^order pages and starts at a
pfn that is a multiple of 2^order.  Two blocks of the same order that together form an aligned
block of the next order are *buddies*; the buddy of ``pfn`` at ``order`` is ``pfn ^ (1 <<
order)`` (:func:`buddy_of`, ``__find_buddy_pfn()``).  Allocation splits a larger block in
halves until it has the size asked for; freeing merges a block with its buddy for as long as
the buddy is free, so free memory is always kept in the largest aligned blocks it can form.

**Free lists.**  Each zone has ``free_area[0..MAX_PAGE_ORDER]``; each ``free_area[order]`` has
one list per *migratetype*.  Every free block is the head page of its run, marked ``PageBuddy``
with its order in ``page_private`` (here: :attr:`BuddyState.buddy`).  Memory is grouped by
mobility in *pageblocks* of 2^pageblock_order pages (2 MiB on x86-64): each pageblock has a
migratetype, and a free block sits on the list of its pageblock's type.  Unmovable kernel
allocations and movable user pages are thereby kept apart, so that compaction can later empty
whole pageblocks.

**Allocation** (``__alloc_pages`` → ``get_page_from_freelist`` → ``rmqueue`` → ``__rmqueue``).
Walk the zonelist from the highest zone the GFP mask allows down to ZONE_DMA; skip a zone whose
watermark check (``__zone_watermark_ok``) fails; in the first zone that passes, take the
*smallest* order with a free block of the wanted migratetype (``__rmqueue_smallest``), take
the block at the head of that list and split it: the lower half is kept, each upper half goes
to the head of the list one order down (``expand``).  If no block of the wanted type exists,
fall back to another type: first *claim* — take the largest block of a fallback type, and if
enough of its pageblock is free or alike, retype the whole pageblock (``__rmqueue_claim``,
``try_to_claim_block``) — then *steal* a single block without retyping (``__rmqueue_steal``).
The fast path checks the LOW watermark; if every zone fails, the slow path retries at the MIN
watermark with the reserve flags of the GFP mask (``gfp_to_alloc_flags``).

**Freeing** (``__free_pages`` → ``free_one_page`` → ``split_large_buddy`` →
``__free_one_page``).  Blocks above pageblock order are freed one pageblock at a time, each to
its own pageblock's type.  Then: while the buddy is a free block of the same order in the same
zone (``page_is_buddy``), unlink it and merge, unless at pageblock order or above the two
pageblocks have different types of which one cannot merge (CMA, HighAtomic, Isolate).  The
merged block goes to the tail of its list if its own buddy one order up is free (so it is
likely to merge soon and should not be handed out first, ``buddy_merge_likely``), else to the
head.  Boot frees all memory to the tail (``FPI_TO_TAIL``) in the largest aligned blocks
(``__free_pages_memory``), which is why a fresh zone's lists are in ascending pfn order.

**How this model simplifies Linux, and why.**

- No per-CPU page lists.  Linux keeps freed pages of order <= 3 on per-CPU lists
  (``free_frozen_page_commit``) and refills them in batches; their sizes depend on CPU count and
  auto-tuning (``pcp->high``).  The model behaves as Linux would with those lists drained after
  every operation (``drain_all_pages``): every free reaches ``__free_one_page`` at once, and
  every allocation is served by ``rmqueue_buddy``.
- No reclaim, compaction or OOM in the allocation path: when the MIN-watermark attempt fails the
  model returns ``ENOMEM`` where Linux would reclaim and retry (later mechanisms add those).
- No watermark boosting (``watermark_boost_factor`` = 0) and no kswapd; no page shuffling
  (``page_alloc.shuffle`` off, the default); no debug guard pages; one NUMA node.
- "Movable" allocated pages (which ``try_to_claim_block`` counts as compatible with a movable
  request) are the pages allocated with a movable GFP mask: Linux asks ``PageLRU`` or
  ``__PageMovable``, which is what those pages become.
- A free must name exactly the (pfn, order) of a live allocation: ``split_page()`` and freeing
  part of a higher-order page are not modelled, and anything else is a typed error.

All transitions are pure: ``alloc_pages(state, order, gfp) -> (state, pfn)`` and
``free_pages(state, pfn, order) -> (state, None)``; a failed precondition raises a typed error
and no new state exists.  The ``*_traced`` variants also return the steps taken, in the kernel's
terms, for ``mmspec explain buddy``.

>>> s = init(preset("toy-64"))
>>> print(buddyinfo(s), end="")
Node 0, zone   Normal      0      0      0      0      4 
>>> s, pfn = alloc_pages(s, 0, "GFP_HIGHUSER_MOVABLE")
>>> pfn
0
>>> print(buddyinfo(s), end="")
Node 0, zone   Normal      1      1      1      1      3 
>>> s, _ = free_pages(s, 0, 0)
>>> print(buddyinfo(s), end="")
Node 0, zone   Normal      0      0      0      0      4 
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from immutables import Map

from spec.errors import EINVAL, ENOMEM, BadPage, DoubleFree
from spec.zone import (
    ALLOC_RESERVES,
    MIGRATE_PCPTYPES,
    MIGRATETYPE_NAMES,
    ZONE_NAMES,
    AllocFlags,
    Gfp,
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
    migratetype_is_mergeable,
    page_is_managed,
    present_pages,
    preset,
    validate_config,
    zone_watermarks,
    zonelist,
)

__all__ = ["preset", "init", "alloc_pages", "free_pages", "buddyinfo", "pagetypeinfo", "zoneinfo"]

NR_MIGRATETYPES = len(MigrateType)

# mm/page_alloc.c: fallbacks[] -- the order in which other free lists are tried.
FALLBACKS = {
    MigrateType.UNMOVABLE: (MigrateType.RECLAIMABLE, MigrateType.MOVABLE),
    MigrateType.MOVABLE: (MigrateType.RECLAIMABLE, MigrateType.UNMOVABLE),
    MigrateType.RECLAIMABLE: (MigrateType.UNMOVABLE, MigrateType.MOVABLE),
}


# ---------------------------------------------------------------------------------------------
# Arithmetic of blocks: plain operators, so the proofs run these very functions on z3 values.


def buddy_of(pfn, order):
    """``__find_buddy_pfn()``: the buddy of the block at ``pfn`` of ``order``.

    Contract:

    ```text
    pre: 0 <= order <= 16
    pre: 0 <= pfn < 2 ** 40
    post: __return__ >= 0
    post: __return__ != pfn
    ```
    """
    return pfn ^ (1 << order)


def merged_head(pfn, order):
    """The head of the order+1 block that ``pfn`` and its buddy form (``buddy_pfn & pfn``).

    >>> merged_head(12, 2), merged_head(8, 2)
    (8, 8)
    """
    return buddy_of(pfn, order) & pfn


def is_aligned(pfn, order):
    """Does a block of ``order`` at ``pfn`` start on a multiple of its size?"""
    return pfn & ((1 << order) - 1) == 0


def upper_half(pfn, order):
    """The upper half that ``expand()`` frees when it splits the block at ``pfn`` of ``order``.

    Contract:

    ```text
    pre: 1 <= order <= 16
    pre: 0 <= pfn < 2 ** 40
    post: __return__ - pfn == 2 ** (order - 1)
    ```
    """
    return pfn + (1 << (order - 1))


def block_pages(order):
    """Pages in a block of ``order``.

    Contract:

    ```text
    pre: 0 <= order <= 16
    post: __return__ >= 1
    post: __return__ == 2 ** order
    ```
    """
    return 1 << order


# ---------------------------------------------------------------------------------------------
# State


class Alloc(NamedTuple):
    """A live allocation: its order and the migratetype its GFP mask asked for."""

    order: int
    migratetype: int


FreeArea = tuple[tuple[tuple[int, ...], ...], ...]  # [order][migratetype] -> pfns, head first


@dataclass(frozen=True)
class Zone:
    """``struct zone``: span, accounting, watermarks and the free lists."""

    index: int
    start_pfn: int
    end_pfn: int  # start + spanned
    present: int
    managed: int
    watermark: tuple[int, int, int, int]  # _watermark[WMARK_MIN..WMARK_PROMO]
    lowmem_reserve: tuple[int, ...]
    free_area: FreeArea
    free_pages: int  # NR_FREE_PAGES, kept as Linux keeps it, not recounted
    nr_reserved_highatomic: int = 0

    @property
    def name(self) -> str:
        return ZONE_NAMES[self.index]

    def nr_free(self, order: int) -> int:
        """``free_area[order].nr_free``: free blocks of this order, all types."""
        return sum(len(lst) for lst in self.free_area[order])


@dataclass(frozen=True)
class BuddyState:
    """Node 0's page allocator: its zones, pageblock types, and page flags."""

    config: MachineConfig
    zones: tuple[Zone, ...]
    pageblock_mt: tuple[int, ...]  # get_pageblock_migratetype(), indexed by pfn >> pageblock_order
    buddy: Map  # pfn -> order of every free block head: PageBuddy + buddy_order()
    allocated: Map  # pfn -> Alloc of every live allocation

    def zone_of(self, pfn: int) -> Zone | None:
        """``page_zone()``: the zone that manages ``pfn``, or None."""
        for zone, zs in zip(self.zones, self.config.zones):
            if page_is_managed(zs, pfn):
                return zone
        return None


def init(config: MachineConfig | str) -> BuddyState:
    """Boot: every pageblock starts MOVABLE (CMA areas CMA); memblock frees all managed memory
    outside CMA areas in the largest aligned blocks, to the tail of the lists
    (``memblock_free_all``); then ``cma_activate_area()`` frees each CMA pageblock in turn with
    ``__free_pages(page, pageblock_order)``, which links at the head unless a merge is likely.
    """
    cfg = preset(config) if isinstance(config, str) else config
    validate_config(cfg)
    marks, reserves = zone_watermarks(cfg), lowmem_reserves(cfg)
    empty: FreeArea = tuple(((),) * NR_MIGRATETYPES for _ in range(cfg.max_order + 1))
    zones = tuple(
        Zone(i, zs.start_pfn, zs.end_pfn, present_pages(zs), managed_pages(zs), marks[i], reserves[i], empty, 0)
        for i, zs in enumerate(cfg.zones)
    )
    blocks = -(-cfg.end_pfn // (1 << cfg.pageblock_order))
    pb = [int(MigrateType.MOVABLE)] * blocks
    for pfn in cma_pageblocks(cfg):
        pb[pfn >> cfg.pageblock_order] = int(MigrateType.CMA)
    state = BuddyState(cfg, zones, tuple(pb), Map(), Map())
    for start, end in boot_free_ranges(cfg):
        state = _free_range_at_boot(state, start, end)
    for pfn in cma_pageblocks(cfg):  # init_cma_reserved_pageblock()
        state = _split_large_buddy(state, pfn, cfg.pageblock_order)[0]
    return state


def _free_range_at_boot(state: BuddyState, start: int, end: int) -> BuddyState:
    """``__free_pages_memory()``: order = min(MAX_PAGE_ORDER, __ffs(start)), shrunk to fit."""
    max_order = state.config.max_order
    while start < end:
        order = max_order if start == 0 else min(max_order, (start & -start).bit_length() - 1)
        while start + (1 << order) > end:
            order -= 1
        state = _split_large_buddy(state, start, order, to_tail=True)[0]  # FPI_TO_TAIL
        start += 1 << order
    return state


# ---------------------------------------------------------------------------------------------
# Free-list primitives (``__add_to_free_list``, ``__del_page_from_free_list``, ``move_to_free_list``)


def _zone_index(state: BuddyState, pfn: int) -> int:
    zone = state.zone_of(pfn)
    assert zone is not None
    return zone.index


def _with_zone(state: BuddyState, zone: Zone, **changes) -> BuddyState:
    zones = list(state.zones)
    zones[zone.index] = replace(zone, **changes)
    return replace(state, zones=tuple(zones))


def _set_list(zone: Zone, order: int, mt: int, pfns: tuple[int, ...]) -> FreeArea:
    area = list(zone.free_area)
    lists = list(area[order])
    lists[mt] = pfns
    area[order] = tuple(lists)
    return tuple(area)


def _add_to_free_list(state: BuddyState, zi: int, pfn: int, order: int, mt: int, tail: bool) -> BuddyState:
    """Link a free block at the head (or tail) of ``free_area[order].free_list[mt]``."""
    zone = state.zones[zi]
    lst = zone.free_area[order][mt]
    lst = lst + (pfn,) if tail else (pfn,) + lst
    state = _with_zone(state, zone, free_area=_set_list(zone, order, mt, lst), free_pages=zone.free_pages + (1 << order))
    return replace(state, buddy=state.buddy.set(pfn, order))


def _del_from_free_list(state: BuddyState, zi: int, pfn: int, order: int, mt: int) -> BuddyState:
    """Unlink a free block from ``free_area[order].free_list[mt]``."""
    zone = state.zones[zi]
    lst = zone.free_area[order][mt]
    i = lst.index(pfn)
    state = _with_zone(
        state, zone, free_area=_set_list(zone, order, mt, lst[:i] + lst[i + 1 :]), free_pages=zone.free_pages - (1 << order)
    )
    return replace(state, buddy=state.buddy.delete(pfn))


def _pageblock(state: BuddyState, pfn: int) -> int:
    return state.pageblock_mt[pfn >> state.config.pageblock_order]


def _set_pageblocks(state: BuddyState, pfn: int, order: int, mt: int) -> BuddyState:
    """``change_pageblock_range()`` / ``set_pageblock_migratetype()`` for the pageblocks of a block."""
    pbo = state.config.pageblock_order
    first, count = pfn >> pbo, max(1, (1 << order) >> pbo)
    pb = state.pageblock_mt
    return replace(state, pageblock_mt=pb[:first] + (int(mt),) * count + pb[first + count :])


# ---------------------------------------------------------------------------------------------
# Freeing


def _page_is_buddy(state: BuddyState, zi: int, buddy: int, order: int) -> bool:
    """``page_is_buddy()``: the buddy is a free block head of the same order in the same zone."""
    zone = state.zone_of(buddy)
    return state.buddy.get(buddy) == order and zone is not None and zone.index == zi


def _free_one_block(state: BuddyState, pfn: int, order: int, to_tail: bool = False):
    """``__free_one_page()``: merge with free buddies, then link at head or tail."""
    zi, mt, max_order = _zone_index(state, pfn), _pageblock(state, pfn), state.config.max_order
    steps, buddy = [], None
    while order < max_order:
        buddy = buddy_of(pfn, order)
        if not _page_is_buddy(state, zi, buddy, order):
            break
        buddy_mt = mt if order < state.config.pageblock_order else _pageblock(state, buddy)
        if buddy_mt != mt:
            if not (migratetype_is_mergeable(mt) and migratetype_is_mergeable(buddy_mt)):
                steps.append(f"buddy {buddy} is {MIGRATETYPE_NAMES[buddy_mt]}: pageblocks do not merge")
                break
        state = _del_from_free_list(state, zi, buddy, order, buddy_mt)
        if buddy_mt != mt:
            state = _set_pageblocks(state, buddy, order, mt)
        steps.append(f"buddy {buddy} (order {order}) is free: merge into {merged_head(pfn, order)} (order {order + 1})")
        pfn, order = merged_head(pfn, order), order + 1
    tail = to_tail or (buddy is not None and _buddy_merge_likely(state, zi, pfn, buddy, order))
    state = _add_to_free_list(state, zi, pfn, order, mt, tail)
    where = "tail" if tail else "head"
    steps.append(f"link {pfn} at the {where} of free_area[{order}].free_list[{MIGRATETYPE_NAMES[mt]}]")
    return state, tuple(steps)


def _buddy_merge_likely(state: BuddyState, zi: int, pfn: int, buddy: int, order: int) -> bool:
    """``buddy_merge_likely()``: is the buddy of the next-larger block free already?"""
    if order >= state.config.max_order - 1:
        return False
    higher = buddy & pfn
    return _page_is_buddy(state, zi, buddy_of(higher, order + 1), order + 1)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_free(state: BuddyState, pfn: int, order: int) -> None:
    """The preconditions of :func:`free_pages`; raises, never returns a state."""
    if not _is_int(pfn) or not _is_int(order):
        raise EINVAL(f"pfn and order must be integers, got {pfn!r}, {order!r}")
    if not 0 <= order <= state.config.max_order:
        raise EINVAL(f"order {order} is outside 0..{state.config.max_order}")
    if state.zone_of(pfn) is None:
        raise EINVAL(f"pfn {pfn} is not a page of any zone")
    if not is_aligned(pfn, order):
        raise EINVAL(f"pfn {pfn} is not aligned to order {order}")
    for o in range(state.config.max_order + 1):
        head = pfn & ~((1 << o) - 1)
        if state.buddy.get(head) == o:
            raise DoubleFree(f"pfn {pfn} is already free (inside free block {head} of order {o})")
    live = state.allocated.get(pfn)
    if live is None:
        raise BadPage(f"pfn {pfn} is not the first page of an allocation")
    if live.order != order:
        raise BadPage(f"pfn {pfn} was allocated with order {live.order}, freed with order {order}")


def _split_large_buddy(state: BuddyState, pfn: int, order: int, to_tail: bool = False):
    """``split_large_buddy()``: free a block above pageblock order one pageblock at a time,
    each to its own pageblock's type."""
    chunk = min(order, state.config.pageblock_order)
    steps: list[str] = []
    for head in range(pfn, pfn + (1 << order), 1 << chunk):
        state, s = _free_one_block(state, head, chunk, to_tail)
        steps.extend(s)
    return state, tuple(steps)


def free_pages_traced(state: BuddyState, pfn: int, order: int):
    """:func:`free_pages`, also returning the steps taken."""
    _check_free(state, pfn, order)
    state = replace(state, allocated=state.allocated.delete(pfn))
    state, steps = _split_large_buddy(state, pfn, order)
    return state, None, steps


def free_pages(state: BuddyState, pfn: int, order: int):
    """``__free_pages(page, order)``: give back the block at ``pfn`` that was allocated with ``order``.

    Raises ``EINVAL`` (order out of range, pfn outside every zone, pfn not aligned to order),
    ``DoubleFree`` (pfn lies in a free block) or ``BadPage`` (pfn is not the head of a live
    allocation of that order).
    """
    state, result, _ = free_pages_traced(state, pfn, order)
    return state, result


# ---------------------------------------------------------------------------------------------
# Allocation: __rmqueue and its helpers


def _expand(state: BuddyState, zi: int, pfn: int, low: int, high: int, mt: int, steps: list) -> BuddyState:
    """``expand()``: split a block of order ``high`` down to ``low``; upper halves go to list heads."""
    while high > low:
        high -= 1
        half = pfn + (1 << high)
        state = _add_to_free_list(state, zi, half, high, mt, tail=False)
        steps.append(f"split: {half} (order {high}) to the head of free_area[{high}].free_list[{MIGRATETYPE_NAMES[mt]}]")
    return state


def _rmqueue_smallest(state: BuddyState, zi: int, order: int, mt: int, steps: list):
    """``__rmqueue_smallest()``: the head of the smallest non-empty list of type ``mt``."""
    for current in range(order, state.config.max_order + 1):
        lst = state.zones[zi].free_area[current][mt]
        if lst:
            pfn = lst[0]
            steps.append(f"take {pfn} from the head of free_area[{current}].free_list[{MIGRATETYPE_NAMES[mt]}]")
            state = _del_from_free_list(state, zi, pfn, current, mt)
            return _expand(state, zi, pfn, order, current, mt, steps), pfn
    return None


def _find_suitable_fallback(zone: Zone, order: int, mt: int, claimable: bool, pb_order: int) -> int:
    """``find_suitable_fallback()``: -2 if claiming is pointless, -1 if none, else a type."""
    if claimable and not _should_try_claim_block(order, mt, pb_order):
        return -2
    for fallback in FALLBACKS[MigrateType(mt)]:
        if zone.free_area[order][fallback]:
            return int(fallback)
    return -1


def _should_try_claim_block(order: int, start_mt: int, pb_order: int) -> bool:
    """``should_try_claim_block()``: big blocks, and non-movable requests, claim pageblocks."""
    if order >= pb_order or order >= pb_order // 2:
        return True
    return start_mt in (MigrateType.RECLAIMABLE, MigrateType.UNMOVABLE)


def _walk_pageblock(state: BuddyState, start: int):
    """The blocks of the pageblock at ``start`` in pfn order: (pfn, order, free?, movable?)."""
    pfn, end = start, start + (1 << state.config.pageblock_order)
    while pfn < end:
        if pfn in state.buddy:
            yield pfn, state.buddy[pfn], True, False
            pfn += 1 << state.buddy[pfn]
        elif pfn in state.allocated:
            a = state.allocated[pfn]
            yield pfn, a.order, False, a.migratetype == MigrateType.MOVABLE
            pfn += 1 << a.order
        else:
            pfn += 1  # a reserved page


def _pageblock_census(state: BuddyState, zi: int, pfn: int):
    """``prep_move_freepages_block()``: (start, free pages, movable pages) of ``pfn``'s
    pageblock, or None when the pageblock reaches outside the zone."""
    pbo, zone = state.config.pageblock_order, state.zones[zi]
    start = pfn >> pbo << pbo
    if start < zone.start_pfn or start + (1 << pbo) > zone.end_pfn:
        return None
    free = movable = 0
    for _, order, is_free, is_movable in _walk_pageblock(state, start):
        free += (1 << order) if is_free else 0
        movable += (1 << order) if is_movable else 0
    return start, free, movable


def _move_freepages_block(state: BuddyState, zi: int, start: int, old_mt: int, new_mt: int) -> BuddyState:
    """``__move_freepages_block()``: move every free block of a pageblock to the tail of the new type's list."""
    for pfn, order, is_free, _ in list(_walk_pageblock(state, start)):
        if is_free:
            state = _del_from_free_list(state, zi, pfn, order, old_mt)
            state = _add_to_free_list(state, zi, pfn, order, new_mt, tail=True)
    return state


def _try_to_claim_block(state, zi, pfn, current, order, start_mt, block_mt, steps):
    """``try_to_claim_block()``: retype the fallback block's pageblock(s) if worth it."""
    pbo, names = state.config.pageblock_order, MIGRATETYPE_NAMES
    if current >= pbo:
        steps.append(f"claim: {pfn} (order {current}) and its pageblocks become {names[start_mt]}")
        state = _del_from_free_list(state, zi, pfn, current, block_mt)
        state = _set_pageblocks(state, pfn, current, start_mt)
        return _expand(state, zi, pfn, order, current, start_mt, steps), pfn
    census = _pageblock_census(state, zi, pfn)
    if census is None:
        return None
    start, free, movable = census
    if start_mt == MigrateType.MOVABLE:
        alike = movable
    else:
        alike = (1 << pbo) - (free + movable) if block_mt == MigrateType.MOVABLE else 0
    if free + alike < 1 << (pbo - 1):
        steps.append(f"claim: pageblock {start} has {free} free + {alike} alike pages, too few")
        return None
    steps.append(f"claim: pageblock {start} ({free} free + {alike} alike) becomes {names[start_mt]}")
    state = _move_freepages_block(state, zi, start, block_mt, start_mt)
    state = _set_pageblocks(state, start, 0, start_mt)
    return _rmqueue_smallest(state, zi, order, start_mt, steps)


def _rmqueue_claim(state, zi, order, start_mt, flags, steps):
    """``__rmqueue_claim()``: try fallback types from the LARGEST order down."""
    pbo = state.config.pageblock_order
    min_order = pbo if order < pbo and flags & AllocFlags.NOFRAGMENT else order
    for current in range(state.config.max_order, min_order - 1, -1):
        fallback = _find_suitable_fallback(state.zones[zi], current, start_mt, True, pbo)
        if fallback == -1:
            continue
        if fallback == -2:
            break
        pfn = state.zones[zi].free_area[current][fallback][0]
        result = _try_to_claim_block(state, zi, pfn, current, order, start_mt, fallback, steps)
        if result is not None:
            return result
    return None


def _rmqueue_steal(state, zi, order, start_mt, steps):
    """``__rmqueue_steal()``: take the smallest fallback block without retyping its pageblock."""
    for current in range(order, state.config.max_order + 1):
        fallback = _find_suitable_fallback(state.zones[zi], current, start_mt, False, state.config.pageblock_order)
        if fallback < 0:
            continue
        pfn = state.zones[zi].free_area[current][fallback][0]
        steps.append(f"steal {pfn} (order {current}) from free_list[{MIGRATETYPE_NAMES[fallback]}]")
        state = _del_from_free_list(state, zi, pfn, current, fallback)
        return _expand(state, zi, pfn, order, current, fallback, steps), pfn
    return None


def _rmqueue(state, zi, order, mt, flags, steps):
    """``__rmqueue()``: CMA first if most free memory is CMA; own type; CMA; claim; steal."""
    zone = state.zones[zi]
    if flags & AllocFlags.CMA and _free_cma(zone) > zone.free_pages // 2:
        result = _rmqueue_smallest(state, zi, order, MigrateType.CMA, steps)
        if result is not None:
            return result
    result = _rmqueue_smallest(state, zi, order, mt, steps)
    if result is None and flags & AllocFlags.CMA:
        result = _rmqueue_smallest(state, zi, order, MigrateType.CMA, steps)
    if result is None:
        result = _rmqueue_claim(state, zi, order, mt, flags, steps)
    if result is None and not flags & AllocFlags.NOFRAGMENT:
        result = _rmqueue_steal(state, zi, order, mt, steps)
    return result


def _rmqueue_buddy(state, zi, order, mt, flags, steps):
    """``rmqueue_buddy()``: HighAtomic reserves first for high-order atomic requests, last for others."""
    result = None
    if flags & AllocFlags.HIGHATOMIC:
        result = _rmqueue_smallest(state, zi, order, MigrateType.HIGHATOMIC, steps)
    if result is None:
        result = _rmqueue(state, zi, order, mt, flags, steps)
    if result is None and flags & (AllocFlags.OOM | AllocFlags.NON_BLOCK):
        result = _rmqueue_smallest(state, zi, order, MigrateType.HIGHATOMIC, steps)
    return result


def _reserve_highatomic_pageblock(state: BuddyState, zi: int, pfn: int, order: int) -> BuddyState:
    """``reserve_highatomic_pageblock()``: set aside up to ~1% of the zone for high-order atomics."""
    zone, pbo = state.zones[zi], state.config.pageblock_order
    if zone.managed // 100 < 1 << pbo:
        return state
    limit = -(-(zone.managed // 100) // (1 << pbo)) << pbo
    mt = _pageblock(state, pfn)
    if zone.nr_reserved_highatomic >= limit or not migratetype_is_mergeable(mt):
        return state
    if order < pbo:
        census = _pageblock_census(state, zi, pfn)
        if census is None:
            return state
        state = _move_freepages_block(state, zi, census[0], mt, MigrateType.HIGHATOMIC)
        state = _set_pageblocks(state, census[0], 0, MigrateType.HIGHATOMIC)
        added = 1 << pbo
    else:
        state = _set_pageblocks(state, pfn, order, MigrateType.HIGHATOMIC)
        added = 1 << order
    zone = state.zones[zi]
    return _with_zone(state, zone, nr_reserved_highatomic=zone.nr_reserved_highatomic + added)


# ---------------------------------------------------------------------------------------------
# Allocation: watermarks and the zonelist


def _free_cma(zone: Zone) -> int:
    return sum(len(zone.free_area[o][MigrateType.CMA]) << o for o in range(len(zone.free_area)))


def _free_highatomic(zone: Zone) -> int:
    return sum(len(zone.free_area[o][MigrateType.HIGHATOMIC]) << o for o in range(len(zone.free_area)))


def zone_watermark_ok(zone: Zone, order: int, mark: int, highest_zone: int, flags: AllocFlags) -> bool:
    """``__zone_watermark_ok()``: would the zone stay above ``mark`` after this allocation?

    Free pages that this request may not use do not count: (2^order - 1) pages of the block
    itself, the HighAtomic reserve unless the request may dip into reserves, free CMA pages
    unless ALLOC_CMA.  The mark shrinks for reserve-eligible requests.  The zone must keep
    ``mark + lowmem_reserve[highest_zone]`` free, and for order > 0 some free list of a usable
    type must hold a block of at least ``order``.
    """
    free = zone.free_pages - ((1 << order) - 1)
    if not flags & ALLOC_RESERVES:
        free -= _free_highatomic(zone)
    if not flags & AllocFlags.CMA:
        free -= _free_cma(zone)
    wmin = mark
    if flags & AllocFlags.MIN_RESERVE:
        wmin -= wmin // 2
        if flags & AllocFlags.NON_BLOCK:
            wmin -= wmin // 4
    if flags & AllocFlags.OOM:
        wmin -= wmin // 2
    if free <= wmin + zone.lowmem_reserve[highest_zone]:
        return False
    if order == 0:
        return True
    usable = list(range(MIGRATE_PCPTYPES))
    usable += [MigrateType.CMA] if flags & AllocFlags.CMA else []
    usable += [MigrateType.HIGHATOMIC] if flags & (AllocFlags.HIGHATOMIC | AllocFlags.OOM) else []
    return any(zone.free_area[o][mt] for o in range(order, len(zone.free_area)) for mt in usable)


def _get_page_from_freelist(state, order, gfp: Gfp, wmark: Wmark, flags, steps):
    """``get_page_from_freelist()``: the first zone of the zonelist that passes and has a block."""
    passes = [flags, flags & ~AllocFlags.NOFRAGMENT] if flags & AllocFlags.NOFRAGMENT else [flags]
    for attempt in passes:
        for zi in zonelist(state.config, gfp.highest_zone):
            zone = state.zones[zi]
            if not zone_watermark_ok(zone, order, zone.watermark[wmark], gfp.highest_zone, attempt):
                steps.append(f"zone {zone.name}: {zone.free_pages} free fails the {wmark.name.lower()} watermark")
                continue
            result = _rmqueue_buddy(state, zi, order, gfp.migratetype, attempt, steps)
            if result is not None:
                state, pfn = result
                if attempt & AllocFlags.HIGHATOMIC:
                    state = _reserve_highatomic_pageblock(state, zi, pfn, order)
                return state, pfn
        if len(passes) > 1 and attempt is passes[0]:
            steps.append("no zone without fragmenting: retry without ALLOC_NOFRAGMENT")
    return None


def _alloc_flags_nofragment(state: BuddyState, gfp: Gfp) -> AllocFlags:
    """``alloc_flags_nofragment()``: on one node, a request whose preferred zone is ZONE_NORMAL
    avoids fragmenting pageblocks on its first pass."""
    zl = zonelist(state.config, gfp.highest_zone)
    preferred_normal = bool(zl) and zl[0] == ZoneType.NORMAL
    return AllocFlags.NOFRAGMENT if preferred_normal else AllocFlags.NONE


def alloc_pages_traced(state: BuddyState, order: int, gfp: str = "GFP_KERNEL"):
    """:func:`alloc_pages`, also returning the steps taken."""
    if not _is_int(order) or not 0 <= order <= state.config.max_order:
        raise EINVAL(f"order {order!r} is outside 0..{state.config.max_order}")
    g = gfp_mask(gfp)
    steps: list[str] = []
    fast = cma_flags(g, state.config.config_cma) | _alloc_flags_nofragment(state, g)
    result = _get_page_from_freelist(state, order, g, Wmark.LOW, fast, steps)
    if result is None:
        steps.append("slow path: retry at the min watermark with the reserve flags of " + g.name)
        slow = gfp_to_alloc_flags(g, order, state.config.config_cma)
        result = _get_page_from_freelist(state, order, g, Wmark.MIN, slow, steps)
    if result is None:
        raise ENOMEM(f"no zone can satisfy an order-{order} {g.name} allocation")
    state, pfn = result
    state = replace(state, allocated=state.allocated.set(pfn, Alloc(order, int(g.migratetype))))
    return state, pfn, tuple(steps)


def alloc_pages(state: BuddyState, order: int, gfp: str = "GFP_KERNEL"):
    """``alloc_pages(gfp, order)``: allocate 2^order contiguous pages; returns the first pfn.

    Raises ``EINVAL`` for an order outside 0..max_order or an unknown GFP mask, ``ENOMEM`` when
    no zone of the zonelist passes its watermark with a block to give.
    """
    state, pfn, _ = alloc_pages_traced(state, order, gfp)
    return state, pfn


# ---------------------------------------------------------------------------------------------
# Invariants


def _blocks(state: BuddyState):
    """Every free and allocated block as (pfn, order)."""
    return list(state.buddy.items()) + [(p, a.order) for p, a in state.allocated.items()]


def inv_partition(state: BuddyState) -> bool:
    """Free and allocated blocks partition the managed pages of every zone exactly: no overlap,
    no block across a zone boundary, a hole or a reserved page, and no managed page left out."""
    covered = 0
    for pfn, order in sorted(_blocks(state)):
        end = pfn + (1 << order)
        zone = state.zone_of(pfn)
        if zone is None or pfn < covered or end > zone.end_pfn:
            return False
        zs = state.config.zones[zone.index]
        if any(s < end and pfn < e for s, e in zs.absent + zs.reserved):
            return False
        covered = end
    total = sum(1 << o for _, o in _blocks(state))
    return total == sum(z.managed for z in state.zones)


def inv_aligned(state: BuddyState) -> bool:
    """Every free and allocated block starts at a multiple of its size."""
    return all(is_aligned(p, o) and 0 <= o <= state.config.max_order for p, o in _blocks(state))


def inv_coalesced(state: BuddyState) -> bool:
    """No free block has a free buddy of the same order in its zone, unless at pageblock order or
    above their pageblocks differ in type and one of the types (CMA, HighAtomic, Isolate) cannot merge."""
    for pfn, order in state.buddy.items():
        if order == state.config.max_order:
            continue
        buddy = buddy_of(pfn, order)
        zone = state.zone_of(pfn)
        if state.buddy.get(buddy) != order or state.zone_of(buddy) is not zone:
            continue
        a, b = _pageblock(state, pfn), _pageblock(state, buddy)
        exempt = order >= state.config.pageblock_order and a != b
        if not (exempt and not (migratetype_is_mergeable(a) and migratetype_is_mergeable(b))):
            return False
    return True


def inv_free_lists(state: BuddyState) -> bool:
    """The free lists hold exactly the PageBuddy blocks, each once, on the list of its order."""
    listed = [(p, o) for z in state.zones for o, lists in enumerate(z.free_area) for lst in lists for p in lst]
    return len(listed) == len(set(listed)) == len(state.buddy) and all(state.buddy.get(p) == o for p, o in listed)


def inv_free_counts(state: BuddyState) -> bool:
    """Each zone's NR_FREE_PAGES counter equals the pages on its free lists."""
    return all(z.free_pages == sum(z.nr_free(o) << o for o in range(len(z.free_area))) for z in state.zones)


def inv_pageblock_types(state: BuddyState) -> bool:
    """Every free block is on the list of its pageblocks' type; CMA pageblocks are exactly the CMA
    areas; each zone's HighAtomic reservation counts its HighAtomic pageblocks."""
    pbo = state.config.pageblock_order
    for z in state.zones:
        for order, lists in enumerate(z.free_area):
            for mt, lst in enumerate(lists):
                if any(_pageblock(state, p + i) != mt for p in lst for i in range(0, 1 << order, 1 << pbo)):
                    return False
    cma = {b for zs in state.config.zones for s, e in zs.cma for b in range(s >> pbo, e >> pbo)}
    if {b for b, mt in enumerate(state.pageblock_mt) if mt == MigrateType.CMA} != cma:
        return False
    for z in state.zones:
        blocks = {b for b in range(z.start_pfn >> pbo, -(-z.end_pfn >> pbo)) if state.pageblock_mt[b] == MigrateType.HIGHATOMIC}
        if z.managed and len(blocks) << pbo != z.nr_reserved_highatomic:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Views: what Linux prints


def _populated(state: BuddyState):
    return [z for z in state.zones if z.present]


def format_buddyinfo(rows) -> str:
    """Print ``(zone name, free blocks per order)`` rows as ``frag_show_print()`` does."""
    return "".join(f"Node 0, zone {name:>8} " + "".join(f"{n:6d} " for n in counts) + "\n" for name, counts in rows)


def buddyinfo(state: BuddyState) -> str:
    """``/proc/buddyinfo`` (mm/vmstat.c: ``frag_show_print``): free blocks per order, per populated zone."""
    return format_buddyinfo(_nr_free_rows(state))


def migratetypes_shown(config_cma: bool) -> list[str]:
    """The migratetype names /proc/pagetypeinfo prints (CMA only with CONFIG_CMA)."""
    return [n for n in MIGRATETYPE_NAMES if n != "CMA" or config_cma]


def format_pagetypeinfo(pageblock_order: int, free_rows, block_rows, types) -> str:
    """Print /proc/pagetypeinfo as ``pagetypeinfo_show()`` does, from
    ``(zone, type, free blocks per order)`` rows and ``(zone, pageblocks per type)`` rows.
    Counts are capped at 100000 and shown as ``>100000``, as Linux does."""
    free_rows = list(free_rows)
    orders = len(free_rows[0][2]) if free_rows else 0
    out = [f"Page block order: {pageblock_order}\n", f"Pages per block:  {1 << pageblock_order}\n", "\n"]
    out.append(f"{'Free pages count per migrate type at order':<43} " + "".join(f"{o:6d} " for o in range(orders)) + "\n")
    for zone, mt, counts in free_rows:
        cells = "".join(f">{100000:6d} " if n >= 100000 else f"{n:6d} " for n in counts)
        out.append(f"Node {0:4d}, zone {zone:>8}, type {mt:>12} " + cells + "\n")
    out.append(f"\n{'Number of blocks type ':<23}" + "".join(f"{t:>12} " for t in types) + "\n")
    out.extend(f"Node 0, zone {zone:>8} " + "".join(f"{n:12d} " for n in counts) + "\n" for zone, counts in block_rows)
    return "".join(out)


def pagetypeinfo(state: BuddyState) -> str:
    """``/proc/pagetypeinfo`` (mm/vmstat.c: ``pagetypeinfo_show``): free blocks per order and type,
    then pageblocks per type (stepping from the zone's first pfn, as
    ``pagetypeinfo_showblockcount_print()`` does)."""
    pbo, types = state.config.pageblock_order, migratetypes_shown(state.config.config_cma)
    mts = [MIGRATETYPE_NAMES.index(t) for t in types]
    free_rows = [(z.name, MIGRATETYPE_NAMES[mt], [len(lists[mt]) for lists in z.free_area]) for z in _populated(state) for mt in mts]
    block_rows = []
    for z in _populated(state):
        counts = [0] * NR_MIGRATETYPES
        zs = state.config.zones[z.index]
        for pfn in range(z.start_pfn, z.end_pfn, 1 << pbo):
            if not any(s <= pfn < e for s, e in zs.absent):
                counts[_pageblock(state, pfn)] += 1
        block_rows.append((z.name, [counts[mt] for mt in mts]))
    return format_pagetypeinfo(pbo, free_rows, block_rows, types)


def format_zoneinfo_zone(name: str, free: int, watermark, spanned: int, present: int, managed: int, cma: int, protection) -> str:
    """One zone's watermark block as ``zoneinfo_show_print()`` prints it."""
    wmin, low, high, promo = watermark
    return (
        f"Node 0, zone {name:>8}\n  pages free     {free}\n        boost    0\n"
        f"        min      {wmin}\n        low      {low}\n        high     {high}\n"
        f"        promo    {promo}\n        spanned  {spanned}\n"
        f"        present  {present}\n        managed  {managed}\n        cma      {cma}\n"
        f"        protection: ({', '.join(str(r) for r in protection)})\n"
    )


def zoneinfo(state: BuddyState) -> str:
    """The per-zone watermark block of ``/proc/zoneinfo`` (mm/vmstat.c: ``zoneinfo_show_print``),
    without the per-node and per-CPU statistics that other mechanisms own."""
    return "".join(
        format_zoneinfo_zone(
            z.name, z.free_pages, z.watermark, z.end_pfn - z.start_pfn, z.present, z.managed,
            sum(e - s for s, e in zs.cma), z.lowmem_reserve,
        )
        for z, zs in zip(state.zones, state.config.zones)
    )


def contig_page_info(nr_free: list[int], order: int) -> tuple[int, int, int]:
    """``fill_contig_page_info()`` from ``nr_free[o]`` (free blocks per order):
    (free_blocks_total, free_pages, free_blocks_suitable for ``order``).

    Contract:

    ```text
    pre: all(n >= 0 for n in nr_free) and 0 <= order < len(nr_free) <= 11
    post: __return__[0] <= __return__[1]
    post: __return__[2] << order <= __return__[1]
    ```
    """
    total = sum(nr_free)
    pages = sum(n << o for o, n in enumerate(nr_free))
    suitable = sum(n << (o - order) for o, n in enumerate(nr_free) if o >= order)
    return total, pages, suitable


def fragmentation_index(nr_free: list[int], order: int) -> int:
    """``__fragmentation_index()`` in thousandths: -1000 if the order is available, near 0 when
    a failure would be for lack of memory, near 1000 when it would be for fragmentation.

    >>> fragmentation_index([8, 0, 0], 2), fragmentation_index([0, 0, 1], 2)
    (625, -1000)

    Contract:

    ```text
    pre: all(n >= 0 for n in nr_free) and 0 <= order < len(nr_free) <= 11
    post: -1000 <= __return__ < 1000
    ```
    """
    total, pages, suitable = contig_page_info(nr_free, order)
    if total == 0:
        return 0
    if suitable:
        return -1000
    return 1000 - (1000 + pages * 1000 // (1 << order)) // total


def unusable_free_index(nr_free: list[int], order: int) -> int:
    """``unusable_free_index()`` in thousandths: the share of free memory unusable for ``order``.

    >>> unusable_free_index([8, 0, 1], 2), unusable_free_index([8, 0, 1], 0)
    (666, 0)

    Contract:

    ```text
    pre: all(n >= 0 for n in nr_free) and 0 <= order < len(nr_free) <= 11
    post: 0 <= __return__ <= 1000
    post: order > 0 or __return__ in (0, 1000)
    ```
    """
    _, pages, suitable = contig_page_info(nr_free, order)
    if pages == 0:
        return 1000
    return (pages - (suitable << order)) * 1000 // pages


def _c_thousandths(index: int, width: int) -> str:
    """C's ``"%<width>d.%03d"`` of (index / 1000, index % 1000): both truncate toward zero."""
    q = abs(index) // 1000 * (-1 if index < 0 else 1)
    return f"{q:{width}d}.{index - q * 1000:03d}"


def format_extfrag_index(rows) -> str:
    """debugfs ``extfrag/extfrag_index`` (``extfrag_show_print``) from (zone, nr_free) rows."""
    return "".join(
        f"Node 0, zone {name:>8} " + "".join(_c_thousandths(fragmentation_index(nr, o), 2) + " " for o in range(len(nr))) + "\n"
        for name, nr in rows
    )


def format_unusable_index(rows) -> str:
    """debugfs ``extfrag/unusable_index`` (``unusable_show_print``) from (zone, nr_free) rows."""
    return "".join(
        f"Node 0, zone {name:>8} " + "".join(_c_thousandths(unusable_free_index(nr, o), 1) + " " for o in range(len(nr))) + "\n"
        for name, nr in rows
    )


def _nr_free_rows(state: BuddyState):
    return [(z.name, [z.nr_free(o) for o in range(len(z.free_area))]) for z in _populated(state)]


def extfrag_index(state: BuddyState) -> str:
    """debugfs ``extfrag/extfrag_index`` of the state."""
    return format_extfrag_index(_nr_free_rows(state))


def unusable_index(state: BuddyState) -> str:
    """debugfs ``extfrag/unusable_index`` of the state."""
    return format_unusable_index(_nr_free_rows(state))


def free_area_diagram(state: BuddyState) -> str:
    """A zone map for humans: one character per page (``.`` free, ``#`` allocated, ``r`` reserved),
    with a ``|`` at every free-block boundary, then each non-empty free list."""
    out = []
    for z in _populated(state):
        cells = []
        for pfn in range(z.start_pfn, min(z.end_pfn, z.start_pfn + 256)):
            mark = "|" if pfn in state.buddy or pfn in state.allocated else ""
            free = any(p <= pfn < p + (1 << o) for p, o in state.buddy.items() if p <= pfn)
            used = any(p <= pfn < p + (1 << a.order) for p, a in state.allocated.items() if p <= pfn)
            cells.append(mark + ("." if free else "#" if used else "r"))
        out.append(f"zone {z.name} pfn {z.start_pfn}..{z.end_pfn - 1}: " + "".join(cells) + "\n")
        for o, lists in enumerate(z.free_area):
            for mt, lst in enumerate(lists):
                if lst:
                    out.append(f"  free_area[{o}].free_list[{MIGRATETYPE_NAMES[mt]}] = {list(lst)}\n")
    return "".join(out)


def render(state: BuddyState) -> str:
    """How a counterexample shows the allocator: /proc/buddyinfo and the free-area diagram."""
    return buddyinfo(state) + free_area_diagram(state)

