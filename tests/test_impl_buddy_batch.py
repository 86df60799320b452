"""The impl's batched buddy operations: ``alloc_many``, ``free_many`` and ``simulate`` do what the
same sequence of single spec operations does, refuse bad batches with the spec's typed errors
without changing anything, and a 64 GiB machine fits in memory."""

from __future__ import annotations

import numpy as np
import pytest

from impl.buddy import GFP_NAMES, OP_ALLOC, OP_FREE, BuddyAllocator, as_trace, make_trace
from spec import buddy as spec
from spec.errors import EINVAL, ENOMEM, BadPage, DoubleFree, MMError
from spec.zone import MachineConfig, ZoneSpec, managed_pages, preset

_E = ZoneSpec()
#: A small machine with a CMA area that is pageblock- but not max-order-aligned.
TOY_CMA = MachineConfig(
    "toy-cma", (_E, _E, ZoneSpec(0, 128, cma=((48, 56),)), _E, _E),
    max_order=4, pageblock_order=3, min_free_kbytes=16, config_cma=True,
)
CONFIGS = [pytest.param("toy-64", id="toy-64"), pytest.param("toy-2zone", id="toy-2zone"), pytest.param(TOY_CMA, id="toy-cma")]
GFP = ["GFP_KERNEL", "GFP_HIGHUSER_MOVABLE", "GFP_ATOMIC", "GFP_NOWAIT", "GFP_DMA32", "GFP_KERNEL_RECLAIMABLE"]


def spec_alloc(state, order, gfp):
    """One spec allocation; pfn -1 for ENOMEM."""
    try:
        return spec.alloc_pages(state, order, gfp)
    except ENOMEM:
        return state, -1


def spec_run(config, trace):
    """A trace on the spec, one operation at a time, as ``simulate`` documents it."""
    from bench.buddy import run_spec

    return run_spec(config, trace)


def filled(config, seed=0, n=40):
    """A spec state and an impl in the same state after ``n`` random allocations."""
    rng = np.random.default_rng(seed)
    state, impl, live = spec.init(config), BuddyAllocator(config), []
    for _ in range(n):
        order, gfp = int(rng.choice([0, 0, 0, 1, 2])), str(rng.choice(GFP))
        state, pfn = spec_alloc(state, order, gfp)
        assert impl.alloc_many([order], gfp).tolist() == [pfn]
        if pfn >= 0:
            live.append((pfn, order))
    assert impl.abstract() == state
    return state, impl, live


@pytest.mark.parametrize("config", CONFIGS)
def test_alloc_many_is_a_sequence_of_alloc_pages(config):
    rng = np.random.default_rng(1)
    orders = rng.choice([0, 0, 0, 1, 2, 3, 4], size=60)
    for gfp in ("GFP_HIGHUSER_MOVABLE", list(rng.choice(GFP, size=60))):
        state, impl = spec.init(config), BuddyAllocator(config)
        expected = []
        for i, order in enumerate(orders.tolist()):
            state, pfn = spec_alloc(state, order, gfp if isinstance(gfp, str) else gfp[i])
            expected.append(pfn)
        assert impl.alloc_many(orders, gfp).tolist() == expected
        assert -1 in expected  # the batch ran into ENOMEM and went on
        assert impl.abstract() == state


@pytest.mark.parametrize("config", CONFIGS)
def test_free_many_is_a_sequence_of_free_pages(config):
    state, impl, live = filled(config)
    rng = np.random.default_rng(2)
    chosen = [live[i] for i in rng.permutation(len(live))[: len(live) * 2 // 3]]
    for pfn, order in chosen:
        state, _ = spec.free_pages(state, pfn, order)
    impl.free_many([p for p, _ in chosen], [o for _, o in chosen])
    assert impl.abstract() == state
    impl.free_many([], [])
    assert impl.abstract() == state


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_simulate_is_a_sequence_of_single_ops(config, seed):
    trace = make_trace(np.random.default_rng(seed), 3000, config, target_fill=0.8)
    state, expected = spec_run(config, trace)
    impl = BuddyAllocator(config)
    assert impl.simulate(trace).tolist() == expected
    assert impl.abstract() == state
    fields = (trace["op"], trace["order"], trace["gfp"], trace["ref"])
    again = BuddyAllocator(config)
    assert again.simulate(fields).tolist() == expected


def test_make_trace_is_deterministic():
    a = make_trace(np.random.default_rng(7), 5000, "toy-2zone")
    b = make_trace(np.random.default_rng(7), 5000, "toy-2zone")
    assert np.array_equal(a, b)
    assert set(np.unique(a["op"]).tolist()) == {OP_ALLOC, OP_FREE}


def _spec_free_sequence_error(state, pfns, orders):
    """The typed error the spec raises first when freeing the batch one by one."""
    for pfn, order in zip(pfns, orders, strict=True):
        try:
            state, _ = spec.free_pages(state, pfn, order)
        except MMError as e:
            return type(e)
    return None


def _small(live):
    return next((p, o) for p, o in live if o == 0)


def _big(live):
    return next((p, o) for p, o in live if o > 0)


BAD_FREE_BATCHES = {
    # name: (the batch, from the live blocks and the spec state; the error its first bad element gets)
    "pfn outside every zone": (lambda live, s: [_small(live), (10**6, 0), _big(live)], EINVAL),
    "order out of range": (lambda live, s: [_small(live), (_big(live)[0], 99)], EINVAL),
    "misaligned pfn": (lambda live, s: [_small(live), (1, 1)], EINVAL),
    "duplicate pfn": (lambda live, s: [_small(live), _big(live), _small(live)], DoubleFree),
    "already free": (lambda live, s: [_small(live), (next(iter(s.buddy)), 0)], DoubleFree),
    "wrong order": (lambda live, s: [_small(live), (_big(live)[0], 0)], BadPage),
    "not an allocation head": (lambda live, s: [_small(live), (_big(live)[0] + 1, 0)], BadPage),
    "inside a block freed earlier in the batch": (lambda live, s: [_big(live), (_big(live)[0] + 1, 0)], DoubleFree),
}


@pytest.mark.parametrize("case", list(BAD_FREE_BATCHES))
def test_free_many_refuses_a_bad_batch_and_changes_nothing(case):
    state, impl, live = filled("toy-2zone", seed=3)
    build, error = BAD_FREE_BATCHES[case]
    pfns, orders = (list(x) for x in zip(*build(live, state), strict=True))
    assert _spec_free_sequence_error(state, pfns, orders) is error
    with pytest.raises(error, match=r"pfns\[\d+\]"):
        impl.free_many(pfns, orders)
    assert impl.abstract() == state


@pytest.mark.parametrize(
    "pfns, orders",
    [([0.0, 1.0], [0, 0]), ([True, False], [0, 0]), (["a"], [0]), ([0, 1], [0.5, 0]), ([0, 1, 2], [0, 0]), ([[0]], [0])],
    ids=["float pfns", "bool pfns", "str pfns", "float orders", "length mismatch", "2-D"],
)
def test_free_many_refuses_non_integer_batches(pfns, orders):
    state, impl, _ = filled("toy-64")
    with pytest.raises(EINVAL):
        impl.free_many(pfns, orders)
    assert impl.abstract() == state


@pytest.mark.parametrize(
    "orders, gfp",
    [([0, 1, 5], "GFP_KERNEL"), ([0, -1], "GFP_KERNEL"), ([0, 1], "GFP_BOGUS"), ([0, 1], ["GFP_KERNEL", 3]),
     ([0.0], "GFP_KERNEL"), ([0, 1], ["GFP_KERNEL"])],
    ids=["order too big", "negative order", "unknown gfp", "non-string gfp", "float order", "gfp count"],
)
def test_alloc_many_refuses_bad_input_and_changes_nothing(orders, gfp):
    state, impl, _ = filled("toy-64", n=5)
    with pytest.raises(EINVAL):
        impl.alloc_many(orders, gfp)
    assert impl.abstract() == state


def test_simulate_stops_at_a_bad_free_with_its_index():
    ops = [OP_ALLOC, OP_ALLOC, OP_FREE, OP_ALLOC, OP_FREE, OP_ALLOC]
    trace = as_trace(ops, [1, 0, 1, 0, 1, 0], [0] * 6, [0] * 6)  # op 4 frees op 0's block a second time
    impl = BuddyAllocator("toy-64")
    with pytest.raises(DoubleFree, match=r"trace\[4\]"):
        impl.simulate(trace)
    state, _ = spec_run("toy-64", trace[:4])
    assert impl.abstract() == state  # ops 0..3 took effect, op 4 did not


@pytest.mark.parametrize(
    "field, index, value",
    [("op", 2, 7), ("order", 1, 9), ("gfp", 0, len(GFP_NAMES)), ("ref", 2, 2), ("ref", 3, 2), ("ref", 2, -1)],
    ids=["unknown op", "order too big", "gfp out of range", "ref to itself", "ref to a free", "negative ref"],
)
def test_simulate_refuses_a_malformed_trace_before_running(field, index, value):
    trace = as_trace([OP_ALLOC, OP_ALLOC, OP_FREE, OP_FREE], [0, 1, 0, 1], [0, 0, 0, 0], [0, 0, 0, 1])
    trace[field][index] = value
    impl = BuddyAllocator("toy-64")
    with pytest.raises(EINVAL, match=rf"trace\[{index}\]"):
        impl.simulate(trace)
    assert impl.abstract() == spec.init("toy-64")


def test_a_64_gib_machine_fits_in_memory():
    config = preset("x86_64-64g")
    impl = BuddyAllocator(config)
    assert impl.end_pfn > 16 * 2**20
    assert impl.nbytes < 2**30
    assert impl.free_pages_per_zone().tolist() == [managed_pages(z) for z in config.zones]
