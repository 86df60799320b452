"""The buddy allocator: invariants, lockstep with the impl, bad input, and Linux's choices.

The two state machines come from the shared harness (:mod:`mmspec.machines`) fed with the
buddy's strategies (:mod:`mmspec.mechanisms.buddy`).  The scenario tests below each set up a
small zone, do what the kernel would do, and check the choice Linux makes, worked out by hand
from mm/page_alloc.c; a failure prints the zone as /proc/buddyinfo and a free-area diagram.
"""

from __future__ import annotations

import pytest

from mmspec.machines import invariant_machine, lockstep_machine, run_machine
from mmspec.mechanisms import buddy as reg
from spec import buddy as spec
from spec.errors import EINVAL, ENOMEM, BadPage, DoubleFree, MMError
from spec.zone import ZONE_NAMES, MachineConfig, MigrateType, ZoneSpec, preset

BuddyInvariants = invariant_machine("BuddyInvariants", spec, reg.config, reg.steps, reg.render)
BuddyLockstep = lockstep_machine("BuddyLockstep", spec, reg.impl_factory, reg.config, reg.steps, reg.render)


@pytest.mark.layer("invariants")
def test_invariants_hold_after_every_step():
    run_machine(BuddyInvariants)


@pytest.mark.layer("lockstep")
def test_impl_agrees_with_spec_at_every_step():
    run_machine(BuddyLockstep)


def one_zone(pages: int, max_order: int, pageblock_order: int, start: int = 0, **kw) -> MachineConfig:
    """A machine with a single ZONE_NORMAL (no watermarks unless asked)."""
    cma = kw.pop("cma", ())
    zones = tuple(ZoneSpec(start, pages, cma=cma) if n == "Normal" else ZoneSpec() for n in ZONE_NAMES)
    kw.setdefault("min_free_kbytes", 0)
    return MachineConfig("test", zones, max_order=max_order, pageblock_order=pageblock_order, config_cma=bool(cma), **kw)


def free_blocks(state) -> dict[int, int]:
    return dict(state.buddy.items())


def why(state) -> str:
    return "\n" + spec.render(state)


# ---------------------------------------------------------------------------------------------
# Splitting and merging


def test_expand_keeps_the_lower_half_and_frees_upper_halves():
    """mm/page_alloc.c expand(): order 0 out of an order-3 block at 0 leaves 4 (o2), 2 (o1), 1 (o0)."""
    s = spec.init(one_zone(8, 3, 3))
    assert free_blocks(s) == {0: 3}
    s, pfn = spec.alloc_pages(s, 0, "GFP_HIGHUSER_MOVABLE")
    assert pfn == 0
    assert free_blocks(s) == {4: 2, 2: 1, 1: 0}, why(s)


def test_free_merges_with_free_buddies_all_the_way_up():
    s = spec.init(one_zone(8, 3, 3))
    s, pfn = spec.alloc_pages(s, 0, "GFP_HIGHUSER_MOVABLE")
    s, _ = spec.free_pages(s, pfn, 0)
    assert free_blocks(s) == {0: 3}, why(s)


def test_smallest_order_first():
    """__rmqueue_smallest(): an order-1 request takes a free order-1 block before splitting a bigger one."""
    s = spec.init(one_zone(16, 4, 4))
    s, a = spec.alloc_pages(s, 0, "GFP_HIGHUSER_MOVABLE")  # leaves 8 (o3), 4 (o2), 2 (o1), 1 (o0)
    s, b = spec.alloc_pages(s, 1, "GFP_HIGHUSER_MOVABLE")
    assert (a, b) == (0, 2)
    assert free_blocks(s) == {8: 3, 4: 2, 1: 0}, why(s)


def test_merge_likely_block_goes_to_the_tail():
    """buddy_merge_likely(): after merging 4 with 6 into 4 (o2), the order-3 buddy of the
    next-larger block (8) is free, so 4 is linked at the tail."""
    s = spec.init(one_zone(16, 4, 4))
    pfns = []
    for order in (0, 0, 1, 1):  # 0, 1, 2, then 4 split from the order-2 block (6 stays free)
        s, p = spec.alloc_pages(s, order, "GFP_HIGHUSER_MOVABLE")
        pfns.append(p)
    assert pfns == [0, 1, 2, 4]
    s, _, steps = spec.free_pages_traced(s, 4, 1)
    assert steps == (
        "buddy 6 (order 1) is free: merge into 4 (order 2)",
        "link 4 at the tail of free_area[2].free_list[Movable]",
    )


def test_unlikely_merge_goes_to_the_head():
    """Freeing 0 while 1 and 2..3 are allocated: no buddy is free at any order: head."""
    s = spec.init(one_zone(16, 4, 4))
    for _ in range(4):
        s, _ = spec.alloc_pages(s, 0, "GFP_HIGHUSER_MOVABLE")
    s, _, steps = spec.free_pages_traced(s, 0, 0)
    assert steps == ("link 0 at the head of free_area[0].free_list[Movable]",)


def test_buddy_merge_likely_tail_case():
    """Freeing 0 (o0) while 1 is allocated and 2 (o1) is free: the order-1 buddy of the merged
    block is free, so 0 goes to the tail of free_area[0]."""
    s = spec.init(one_zone(8, 3, 3))
    s, _ = spec.alloc_pages(s, 0, "GFP_HIGHUSER_MOVABLE")  # 0; free 4 (o2), 2 (o1), 1 (o0)
    s, _ = spec.alloc_pages(s, 0, "GFP_HIGHUSER_MOVABLE")  # 1; free 4 (o2), 2 (o1)
    s, _, steps = spec.free_pages_traced(s, 0, 0)
    assert steps == ("link 0 at the tail of free_area[0].free_list[Movable]",)


# ---------------------------------------------------------------------------------------------
# Migratetypes: claiming and stealing pageblocks, CMA


def test_unmovable_request_claims_a_whole_movable_block():
    """try_to_claim_block(): a fallback block of at least pageblock order is retyped whole."""
    s = spec.init(one_zone(16, 4, 3))
    s, pfn = spec.alloc_pages(s, 0, "GFP_KERNEL")
    assert pfn == 0
    assert s.pageblock_mt == (MigrateType.UNMOVABLE, MigrateType.UNMOVABLE), why(s)
    assert s.zones[2].free_area[3][MigrateType.UNMOVABLE] == (8,), why(s)


def test_movable_request_claims_a_pageblock_back():
    """A movable request finds only unmovable pageblocks: it claims the largest one whole."""
    s = spec.init(one_zone(16, 4, 3))
    s, _ = spec.alloc_pages(s, 0, "GFP_KERNEL")  # all of the zone becomes Unmovable
    s, pfn = spec.alloc_pages(s, 0, "GFP_HIGHUSER_MOVABLE")
    assert pfn == 8
    assert s.pageblock_mt == (MigrateType.UNMOVABLE, MigrateType.MOVABLE), why(s)


def test_small_movable_request_steals_without_retyping():
    """should_try_claim_block() is false for a small movable request: __rmqueue_steal() takes a
    block of another type and leaves its pageblock's type alone."""
    s = spec.init(one_zone(16, 4, 4))  # one pageblock of 16 pages; pageblock_order / 2 = 2
    for order in (0, 3, 2):  # claims the pageblock (Unmovable), then takes 8 (o3) and 4 (o2)
        s, _ = spec.alloc_pages(s, order, "GFP_KERNEL")
    assert free_blocks(s) == {2: 1, 1: 0}, why(s)
    s, pfn = spec.alloc_pages(s, 0, "GFP_HIGHUSER_MOVABLE")  # Unmovable blocks of orders 0..1 only
    assert pfn == 1
    assert s.pageblock_mt == (MigrateType.UNMOVABLE,), why(s)


def test_cma_pages_serve_movable_requests_only():
    """__rmqueue(): free CMA above half the zone's free pages is used first by movable requests;
    the watermark check does not count free CMA for anyone else.  CMA pageblocks are freed one
    by one after boot (init_cma_reserved_pageblock), each to the list head, so the last is first."""
    cfg = one_zone(32, 3, 3, cma=((8, 32),))
    s = spec.init(cfg)
    assert s.zones[2].free_area[3][MigrateType.CMA] == (24, 16, 8)
    _, pfn = spec.alloc_pages(s, 0, "GFP_HIGHUSER_MOVABLE")
    assert pfn == 24
    got = []
    for _ in range(9):
        try:
            s, p = spec.alloc_pages(s, 0, "GFP_KERNEL")
        except ENOMEM:
            break
        got.append(p)
    assert got == list(range(8)), why(s)


# ---------------------------------------------------------------------------------------------
# Zones, watermarks, lowmem_reserve


def test_zone_fallback_keeps_the_lowmem_reserve():
    """GFP_KERNEL spills from Normal into DMA32 but leaves lowmem_reserve[Normal] there, which
    GFP_DMA32 can still use (toy-2zone: DMA32 min 1, reserve 126 / 8 = 15; Normal min 2)."""
    s = spec.init(preset("toy-2zone"))
    dma32, normal = s.zones[1], s.zones[2]
    assert dma32.lowmem_reserve[2] == 15 and dma32.watermark[0] == 1 and normal.watermark[0] == 2
    kernel = 0
    while True:
        try:
            s, _ = spec.alloc_pages(s, 0, "GFP_KERNEL")
        except ENOMEM:
            break
        kernel += 1
    assert kernel == (126 - 2) + (64 - 16), why(s)
    assert s.zones[1].free_pages == 16
    dma = 0
    while True:
        try:
            s, _ = spec.alloc_pages(s, 0, "GFP_DMA32")
        except ENOMEM:
            break
        dma += 1
    assert dma == 15 and s.zones[1].free_pages == 1, why(s)


def test_watermark_failure_is_enomem_and_changes_nothing():
    s = spec.init(one_zone(8, 3, 3, min_free_kbytes=16))  # min 4, low 4 pages
    for _ in range(4):
        s, _ = spec.alloc_pages(s, 0, "GFP_KERNEL")
    with pytest.raises(ENOMEM):
        spec.alloc_pages(s, 0, "GFP_KERNEL")


def test_atomic_requests_dig_into_the_min_reserve():
    """__zone_watermark_ok(): ALLOC_MIN_RESERVE halves min, ALLOC_NON_BLOCK takes a quarter more."""
    cfg = one_zone(64, 3, 3, min_free_kbytes=64)  # 16 pages min
    s = spec.init(cfg)
    assert s.zones[2].watermark[0] == 16
    n = 0
    while True:
        try:
            s, _ = spec.alloc_pages(s, 0, "GFP_KERNEL")
            n += 1
        except ENOMEM:
            break
    atomic = 0
    while True:
        try:
            s, _ = spec.alloc_pages(s, 0, "GFP_ATOMIC")
            atomic += 1
        except ENOMEM:
            break
    assert s.zones[2].free_pages == 16 - 16 // 2 - (16 - 16 // 2) // 4, why(s)


def test_boot_frees_in_the_largest_aligned_blocks():
    """__free_pages_memory(): the DMA zone of x86_64-4g (pfn 159..4095 managed)."""
    s = spec.init(preset("x86_64-4g"))
    assert spec.buddyinfo(s).splitlines()[0] == (
        "Node 0, zone      DMA      1      0      0      0      0      1      1      0      1      1      3 "
    )


# ---------------------------------------------------------------------------------------------
# Bad input: a typed error, and the state exactly as it was, in the spec and the impl


def _bad_calls(state):
    live_pfn, live = next(iter(sorted(state.allocated.items())))
    return [
        ("alloc_pages", (11, "GFP_KERNEL"), EINVAL),
        ("alloc_pages", (-1, "GFP_KERNEL"), EINVAL),
        ("alloc_pages", (0, "GFP_NONSENSE"), EINVAL),
        ("alloc_pages", ("0", "GFP_KERNEL"), EINVAL),
        ("alloc_pages", (True, "GFP_KERNEL"), EINVAL),
        ("free_pages", (live_pfn, 11), EINVAL),
        ("free_pages", (10**12, 0), EINVAL),
        ("free_pages", (0, 0), EINVAL),  # pfn 0 is not in any zone of x86_64-4g
        ("free_pages", (live_pfn + 1, 1), EINVAL),  # misaligned
        ("free_pages", (live_pfn, live.order + 1), BadPage),
        ("free_pages", (live_pfn + 1, 0), BadPage),  # a tail page
        ("free_pages", (100, 0), EINVAL),  # memblock-reserved: not a page of the buddy allocator
        ("free_pages", (4096, 0), DoubleFree),  # inside a free order-10 block
        ("free_pages", ("4096", 0), EINVAL),
        ("free_pages", (4096.0, 0), EINVAL),
    ]


@pytest.fixture(scope="module")
def busy_state():
    s = spec.init(preset("x86_64-4g"))
    for order in (1, 0, 3):
        s, _ = spec.alloc_pages(s, order, "GFP_DMA")
    return s


@pytest.mark.parametrize("case", range(15))
def test_bad_input_raises_a_typed_error_and_changes_nothing(busy_state, case):
    op, args, error = _bad_calls(busy_state)[case]
    with pytest.raises(error):
        getattr(spec, op)(busy_state, *args)
    impl = reg.impl_factory(busy_state.config)
    for pfn, a in sorted(busy_state.allocated.items()):
        assert impl.alloc_pages(a.order, "GFP_DMA") == pfn
    before = impl.abstract()
    assert before == busy_state
    with pytest.raises(error):
        getattr(impl, op)(*args)
    assert impl.abstract() == before


def test_double_free_is_detected_and_changes_nothing():
    s = spec.init(preset("toy-64"))
    s, pfn = spec.alloc_pages(s, 2, "GFP_KERNEL")
    s2, _ = spec.free_pages(s, pfn, 2)
    with pytest.raises(DoubleFree):
        spec.free_pages(s2, pfn, 2)
    assert issubclass(DoubleFree, MMError)


def test_unknown_preset_and_bad_config_are_einval():
    with pytest.raises(EINVAL):
        spec.init("no-such-machine")
    bad = MachineConfig("bad", (ZoneSpec(),) * 5, max_order=2, pageblock_order=3)
    with pytest.raises(EINVAL):
        spec.init(bad)


# ---------------------------------------------------------------------------------------------
# Views


def test_views_use_linux_formats():
    s = spec.init(preset("x86_64-1g-cma"))
    info = spec.pagetypeinfo(s).splitlines()
    assert info[:3] == ["Page block order: 9", "Pages per block:  512", ""]
    assert info[3].startswith("Free pages count per migrate type at order       0      1")
    assert "type          CMA      0" in spec.pagetypeinfo(s)
    normal = spec.zoneinfo(s).split("Node 0, zone   Normal\n")[1].splitlines()
    assert normal[8:10] == ["        managed  262144", "        cma      16384"]
    assert spec.extfrag_index(s).split()[4:6] == ["-1.000", "-1.000"]
    assert spec.unusable_index(s).split()[4:6] == ["0.000", "0.000"]


def test_explain_is_deterministic_and_ends_with_buddyinfo():
    from mmspec.explain.buddy import explain

    a, b = explain(seed=7), explain(seed=7)
    assert a == b
    assert "/proc/buddyinfo" in a and "Node 0, zone" in a.splitlines()[-1]
    assert explain(seed=8) != a


@pytest.mark.layer("doctests")
def test_docs_page_examples_run():
    """Every >>> example of docs/buddy.md runs and prints what the page says."""
    import doctest
    from pathlib import Path

    from mmspec.tally import tally

    page = Path(__file__).resolve().parent.parent / "docs" / "buddy.md"
    result = doctest.testfile(str(page), module_relative=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in docs/buddy.md failed"
    tally("examples", result.attempted)
