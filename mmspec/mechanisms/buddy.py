"""The buddy allocator's registration: its modules, and how tests drive it.

``config`` draws small machines (one to three zones, unaligned starts, reserved pages, holes,
CMA areas, tiny orders and pageblocks, watermarks from nothing to tight); ``steps(state)``
draws operations biased toward the interesting cases: frees of live blocks, frees of buddies of
free blocks, double frees, wrong orders, misaligned and out-of-zone pfns, bad types, and
allocations of every order with every GFP mask.
"""

from __future__ import annotations

from hypothesis import strategies as st

from mmspec.registry import Mechanism
from spec import buddy
from spec.zone import GFP_MASKS, PRESETS, ZONE_NAMES, MachineConfig, ZoneSpec

MECHANISM = Mechanism(
    name="buddy",
    title="Buddy allocator (mm/page_alloc.c)",
    spec="spec.buddy",
    impl="impl.buddy",
    proofs="proofs.buddy",
    explain="mmspec.explain.buddy:explain",
    topics=("page_alloc",),
    doctest_modules=("spec.buddy", "spec.zone"),
    contracts=("spec.buddy", "spec.zone"),
)

SMALL_PRESETS = ("toy-64", "toy-2zone")


@st.composite
def _zone_layout(draw, pageblock_order: int, max_order: int):
    """One to three populated zones among DMA, DMA32, Normal and Movable, in ascending pfn order."""
    chosen = sorted(draw(st.sets(st.sampled_from(range(4)), min_size=1, max_size=3)))
    zones, cursor, cma_used = [ZoneSpec()] * len(ZONE_NAMES), 0, False
    block = 1 << pageblock_order
    for index in chosen:
        start = cursor + draw(st.sampled_from([0, 0, 1, 3, block]))
        size = draw(st.integers(1, 3 << max_order))
        reserved = ()
        if draw(st.integers(0, 4)) == 0:
            s = draw(st.integers(start, start + size - 1))
            reserved = ((s, min(start + size, s + draw(st.integers(1, 3)))),)
        absent = ()
        if draw(st.integers(0, 6)) == 0 and size > 4:
            s = draw(st.integers(start + 1, start + size - 2))
            absent = ((s, s + 1),)
        cma = ()
        first = -(-start // block) * block
        clear = not any(s < first + block and first < e for s, e in absent + reserved)
        if draw(st.integers(0, 3)) == 0 and first + block <= start + size and clear:
            cma, cma_used = ((first, first + block),), True
        zones[index] = ZoneSpec(start, size, absent=absent, reserved=reserved, cma=cma)
        cursor = start + size
    return tuple(zones), cma_used


@st.composite
def configs(draw) -> MachineConfig:
    """A small machine: a preset, or a drawn layout with its own orders and sysctls."""
    if draw(st.integers(0, 3)) == 0:
        return PRESETS[draw(st.sampled_from(SMALL_PRESETS))]
    max_order = draw(st.integers(1, 5))
    pageblock_order = draw(st.integers(0, max_order))
    zones, cma = draw(_zone_layout(pageblock_order, max_order))
    return MachineConfig(
        "drawn",
        zones,
        max_order=max_order,
        pageblock_order=pageblock_order,
        min_free_kbytes=draw(st.sampled_from([0, 0, 4, 16, 64])),
        watermark_scale_factor=draw(st.sampled_from([10, 1000])),
        lowmem_reserve_ratio=draw(st.sampled_from([(256, 256, 32, 0, 0), (4, 4, 4, 0, 0), (0, 0, 0, 0, 0)])),
        config_cma=cma or draw(st.booleans()),
    )


config = configs()

GFPS = list(GFP_MASKS)


def steps(state: buddy.BuddyState):
    """Operations for the state at hand, most of them meaningful, some of them wrong on purpose."""
    max_order, end = state.config.max_order, state.config.end_pfn
    alloc = st.tuples(st.just("alloc_pages"), st.tuples(st.integers(0, max_order), st.sampled_from(GFPS)))
    bad_alloc = st.tuples(
        st.just("alloc_pages"),
        st.one_of(
            st.tuples(st.sampled_from([-1, max_order + 1]), st.sampled_from(GFPS)),
            st.tuples(st.integers(0, max_order), st.sampled_from(["GFP_BOGUS", 3])),
            st.tuples(st.sampled_from([1.0, "1", None, True]), st.just("GFP_KERNEL")),
        ),
    )
    live = sorted(state.allocated.items())
    free = sorted(state.buddy.items())
    choices = [(6, alloc), (1, bad_alloc)]
    if live:
        block = st.sampled_from(live)
        choices.append((6, block.map(lambda pa: ("free_pages", (pa[0], pa[1].order)))))
        choices.append((1, block.map(lambda pa: ("free_pages", (pa[0], (pa[1].order + 1) % (max_order + 1))))))
        choices.append((1, block.map(lambda pa: ("free_pages", (pa[0] + 1, 0)))))
    if free:
        fb = st.sampled_from(free)
        choices.append((1, fb.map(lambda po: ("free_pages", (po[0], po[1])))))
        choices.append((1, fb.map(lambda po: ("free_pages", (buddy.buddy_of(po[0], po[1]), po[1])))))
    choices.append((1, st.tuples(st.just("free_pages"), st.tuples(st.integers(-2, end + 2), st.integers(-1, max_order + 1)))))
    choices.append((1, st.tuples(st.just("free_pages"), st.tuples(st.sampled_from(["0", 0.0, None, False]), st.just(0)))))
    weighted = [s for weight, s in choices for _ in range(weight)]
    return st.one_of(*weighted)


def render(state: buddy.BuddyState) -> str:
    return buddy.render(state)


def impl_factory(cfg: MachineConfig):
    from impl.buddy import BuddyAllocator

    return BuddyAllocator(cfg)


def catch() -> str | None:
    """Run the lockstep check with whatever defect is enabled; the shrunk witness, or None."""
    from mmspec.machines import catch_witness, lockstep_machine

    machine = lockstep_machine("BuddyDefectHunt", buddy, impl_factory, config, steps, render)
    return catch_witness(machine)
