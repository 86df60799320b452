"""Theorems about the buddy allocator (spec/buddy.py).

The arithmetic theorems run the spec's own helpers (:func:`spec.buddy.buddy_of`,
:func:`~spec.buddy.merged_head`, :func:`~spec.buddy.is_aligned`, :func:`~spec.buddy.upper_half`,
:func:`~spec.buddy.block_pages`) on 64-bit z3 bit-vectors, so they hold for every pfn and
order, not for a sample.  Orders range over 0..16 (Linux's MAX_PAGE_ORDER is 10; ARM64 with
64 KiB pages and hugetlb configurations use larger blocks), pfns over 40 bits (4 PiB of 4 KiB
pages) where an addition could otherwise wrap.

The bounded theorem explores, by exhaustive breadth-first search over the spec's own
transitions, every history of up to N allocations and frees on a zone of 2^k pages, and checks
every ``inv_*`` of the spec in every reachable state.  It is a proof for that bound, not a
sample: every reachable state is visited (deduplicated), and the counts are reported.
"""

from __future__ import annotations

from dataclasses import replace

import z3

from proofs._z3 import ProofResult, prove, registry
from proofs._z3 import explore as explore_histories
from spec import buddy
from spec.zone import ZONE_NAMES, MachineConfig, ZoneSpec

THEOREMS, theorem = registry()

BITS = 64
pfn, pfn2, order, order2 = z3.BitVecs("pfn pfn2 order order2", BITS)


def _order_ok(o, hi: int = 16):
    return z3.ULE(o, hi)


def _small(p):
    return z3.ULT(p, 1 << 40)


@theorem("The buddy of the buddy is the block itself: buddy_of(buddy_of(pfn, o), o) == pfn.")
def thm_buddy_involution() -> ProofResult:
    return prove(buddy.buddy_of(buddy.buddy_of(pfn, order), order) == pfn, (_order_ok(order),))


@theorem("A block and its buddy differ, and the buddy of an aligned block is aligned to the same order.")
def thm_buddy_aligned() -> ProofResult:
    claim = z3.And(buddy.buddy_of(pfn, order) != pfn, buddy.is_aligned(buddy.buddy_of(pfn, order), order))
    return prove(claim, (_order_ok(order), buddy.is_aligned(pfn, order)))


@theorem("The merged head of an aligned block and its buddy is aligned to order + 1 and is the lower of the two.")
def thm_merged_head_aligned() -> ProofResult:
    b = buddy.buddy_of(pfn, order)
    head = buddy.merged_head(pfn, order)
    claim = z3.And(buddy.is_aligned(head, order + 1), head == z3.If(z3.ULT(pfn, b), pfn, b))
    return prove(claim, (_order_ok(order, 15), buddy.is_aligned(pfn, order)))


@theorem("A block and its buddy tile exactly the merged block: the lower one at its head, the upper one right after it.")
def thm_merge_tiles() -> ProofResult:
    b = buddy.buddy_of(pfn, order)
    head = buddy.merged_head(pfn, order)
    lower, upper = z3.If(z3.ULT(pfn, b), pfn, b), z3.If(z3.ULT(pfn, b), b, pfn)
    claim = z3.And(lower == head, upper == head + buddy.block_pages(order))
    return prove(claim, (_order_ok(order, 15), buddy.is_aligned(pfn, order), _small(pfn)))


@theorem("Two aligned blocks either nest or are disjoint (the buddy system never produces partial overlap).")
def thm_nest_or_disjoint() -> ProofResult:
    a_end, b_end = pfn + buddy.block_pages(order), pfn2 + buddy.block_pages(order2)
    disjoint = z3.Or(z3.ULE(a_end, pfn2), z3.ULE(b_end, pfn))
    a_in_b = z3.And(z3.ULE(pfn2, pfn), z3.ULE(a_end, b_end))
    b_in_a = z3.And(z3.ULE(pfn, pfn2), z3.ULE(b_end, a_end))
    premises = (_order_ok(order), _order_ok(order2), _small(pfn), _small(pfn2))
    premises += (buddy.is_aligned(pfn, order), buddy.is_aligned(pfn2, order2))
    return prove(z3.Or(disjoint, a_in_b, b_in_a), premises)


@theorem("Splitting a block (expand) then merging the halves restores it: the upper half is the lower half's buddy, and they merge back to the block.")
def thm_split_then_merge() -> ProofResult:
    half = order - 1
    upper = buddy.upper_half(pfn, order)
    claim = z3.And(
        upper == buddy.buddy_of(pfn, half),
        buddy.merged_head(pfn, half) == pfn,
        buddy.merged_head(upper, half) == pfn,
        buddy.is_aligned(upper, half),
    )
    return prove(claim, (z3.ULE(1, order), _order_ok(order), buddy.is_aligned(pfn, order), _small(pfn)))


@theorem("A block's pages are 2^order, and the two halves of a split hold exactly as many.")
def thm_block_pages_halve() -> ProofResult:
    claim = buddy.block_pages(order - 1) + buddy.block_pages(order - 1) == buddy.block_pages(order)
    return prove(claim, (z3.ULE(1, order), _order_ok(order)))


# ---------------------------------------------------------------------------------------------
# Bounded: every history of N operations on a zone of 2^k pages keeps every invariant.

INVARIANTS = [getattr(buddy, n) for n in dir(buddy) if n.startswith("inv_")]
GFPS = ("GFP_KERNEL", "GFP_HIGHUSER_MOVABLE")


def bounded_config(k: int) -> MachineConfig:
    """A single ZONE_NORMAL of 2^k pages, orders 0..k, pageblocks of 2^(k-1) pages."""
    zones = tuple(ZoneSpec(0, 1 << k) if name == "Normal" else ZoneSpec() for name in ZONE_NAMES)
    return MachineConfig(f"bounded-2^{k}", zones, max_order=k, pageblock_order=max(0, k - 1), min_free_kbytes=0)


def _successors(state):
    for o in range(state.config.max_order + 1):
        for gfp in GFPS:
            try:
                yield buddy.alloc_pages(state, o, gfp)[0]
            except buddy.ENOMEM:
                pass
    for pfn_, alloc in state.allocated.items():
        yield buddy.free_pages(state, pfn_, alloc.order)[0]


def explore(k: int, depth: int) -> ProofResult:
    """Breadth-first search over all histories of up to ``depth`` operations on 2^k pages."""
    result = explore_histories(buddy.init(bounded_config(k)), _successors, INVARIANTS, buddy.render, depth)
    return replace(result, detail=f"2^{k} pages, {result.detail}")


def _bound(kind: str) -> tuple[int, int]:
    """(k, N) for the profile in force: long histories on a small zone, short ones on 64 pages."""
    from mmspec.profiles import by_profile

    if kind == "long":
        return by_profile((3, 8), (3, 8), (4, 8))
    return by_profile((6, 4), (6, 5), (6, 5))


@theorem("Bounded, long histories: every sequence of up to N = 8 alloc_pages/free_pages (all orders, movable and unmovable) on a zone of 2^k pages (k = 3; 4 with the thorough profile) keeps every inv_* invariant.")
def thm_bounded_long_histories() -> ProofResult:
    return explore(*_bound("long"))


@theorem("Bounded, a 64-page zone: every sequence of up to N alloc_pages/free_pages on a zone of 2^6 pages (N = 4 with the quick profile, 5 otherwise) keeps every inv_* invariant.")
def thm_bounded_wide_zone() -> ProofResult:
    return explore(*_bound("wide"))
