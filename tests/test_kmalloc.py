"""kmalloc: invariants, lockstep with the impl, bad input, and Linux's size classes.

The state machines come from the shared harness fed with kmalloc's strategies
(:mod:`mmspec.mechanisms.kmalloc`), which draw sizes at every class boundary.
"""

from __future__ import annotations

import pytest

from mmspec.machines import invariant_machine, lockstep_machine, run_machine
from mmspec.mechanisms import kmalloc as reg
from spec import kmalloc as spec
from spec.errors import EINVAL, ENOMEM, BadPage, DoubleFree, InvalidObjectPointer
from spec.kmalloc import ZERO_SIZE_PTR, KmallocConfig
from spec.slub import SlubConfig, slub_preset
from spec.zone import preset

KmallocInvariants = invariant_machine("KmallocInvariants", spec, reg.config, reg.steps, reg.render)
KmallocLockstep = lockstep_machine("KmallocLockstep", spec, reg.impl_factory, reg.config, reg.steps, reg.render)


@pytest.mark.layer("invariants")
def test_invariants_hold_after_every_step():
    run_machine(KmallocInvariants)


@pytest.mark.layer("lockstep")
def test_impl_agrees_with_spec_at_every_step():
    run_machine(KmallocLockstep)


def fresh(cfg="toy"):
    return spec.init(KmallocConfig(slub_preset(cfg)))


@pytest.mark.parametrize(("size", "cache"), [
    (1, "kmalloc-8"), (8, "kmalloc-8"), (9, "kmalloc-16"), (64, "kmalloc-64"), (65, "kmalloc-96"),
    (96, "kmalloc-96"), (97, "kmalloc-128"), (128, "kmalloc-128"), (129, "kmalloc-192"), (192, "kmalloc-192"),
    (193, "kmalloc-256"), (257, "kmalloc-512"), (1000, "kmalloc-1k"), (4097, "kmalloc-8k"), (8192, "kmalloc-8k"),
])
def test_size_to_cache(size, cache):
    """mm/slab_common.c: kmalloc_size_index[] below 192, fls(size - 1) above."""
    assert spec.kmalloc_slab(size) == cache


def test_families_by_gfp():
    assert [spec.kmalloc_slab(100, g) for g in ("GFP_KERNEL", "GFP_KERNEL_RECLAIMABLE", "GFP_DMA", "GFP_KERNEL_ACCOUNT")] == [
        "kmalloc-128", "kmalloc-rcl-128", "dma-kmalloc-128", "kmalloc-cg-128"]


def test_cache_list_matches_linux_creation_order():
    """create_kmalloc_caches(): per family 96, 192, then 8..8k; /proc/slabinfo prints newest first."""
    s = fresh()
    assert s.slub.cache_list[:3] == ("kmalloc-96", "kmalloc-192", "kmalloc-8")
    names = [line.split()[0] for line in spec.slabinfo(s).splitlines()[2:]]
    assert names[0] == "kmalloc-cg-8k" and names[-1] == "kmalloc-96" and len(names) == 52


def test_large_kmalloc_is_a_buddy_block_and_kfree_returns_it():
    s = fresh()
    s, p = spec.kmalloc(s, 8193)
    assert s.large[p] == 2 and spec.ksize(s, p)[1] == 16384
    s, _ = spec.kfree(s, p)
    assert not s.large and not s.slub.buddy.allocated and s.slub.buddy.zones[2].free_pages == 64


def test_zero_size_and_limits():
    s = fresh()
    assert spec.kmalloc(s, 0) == (s, ZERO_SIZE_PTR)
    assert spec.kfree(s, ZERO_SIZE_PTR) == (s, None) and spec.kfree(s, None) == (s, None)
    with pytest.raises(ENOMEM):
        spec.kmalloc(s, (4 << 20) + 1)
    with pytest.raises(ENOMEM):
        spec.kmalloc(s, 1 << 20)  # order 8 on a machine whose max_order is 4


def test_krealloc_keeps_the_object_while_it_fits():
    s = fresh()
    s, p = spec.kmalloc(s, 100)
    s, q = spec.krealloc(s, p, 128)
    assert q == p
    s, r = spec.krealloc(s, p, 129)
    assert r != p and spec.kmalloc_slab(129) == "kmalloc-192"
    with pytest.raises(DoubleFree):
        spec.kfree(s, p)
    s, z = spec.krealloc(s, r, 0)
    assert z == ZERO_SIZE_PTR


def _bad(s, p, q):
    return [
        ("kfree", (p + 8,), InvalidObjectPointer),
        ("kfree", (q + 4096,), BadPage),
        ("kfree", (12345,), EINVAL),
        ("kmalloc", (-1,), EINVAL),
        ("kmalloc", (8, "GFP_BOGUS"), EINVAL),
        ("kmalloc", (8, "GFP_KERNEL", 5), EINVAL),
        ("ksize", (12345,), EINVAL),
        ("krealloc", (p + 8, 4096), InvalidObjectPointer),
    ]


@pytest.mark.parametrize("case", range(8))
def test_bad_input_raises_a_typed_error_and_changes_nothing(case):
    s = fresh()
    s, p = spec.kmalloc(s, 64)
    s, q = spec.kmalloc(s, 10000)
    op, args, error = _bad(s, p, q)[case]
    with pytest.raises(error):
        getattr(spec, op)(s, *args)
    impl = reg.impl_factory(s.config)
    assert impl.kmalloc(64) == p and impl.kmalloc(10000) == q
    before = impl.abstract()
    assert before == s
    with pytest.raises(error):
        getattr(impl, op)(*args)
    assert impl.abstract() == before


def test_simulate_agrees_with_the_spec():
    import numpy as np

    from impl.kmalloc import OP_KMALLOC, KmallocAllocator, make_trace

    cfg = KmallocConfig(SlubConfig("t", preset("x86_64-1g-cma")), ("normal",))
    trace = make_trace(np.random.default_rng(3), 3000, live_target=300)
    k = KmallocAllocator(cfg)
    out = k.simulate(trace)
    s = spec.init(cfg)
    got = []
    for op, size, ref, cpu in trace.tolist():
        if op == OP_KMALLOC:
            s, a = spec.kmalloc(s, size, "GFP_KERNEL", cpu)
        else:
            s, a = spec.kfree(s, got[ref], cpu)[0], 0
        got.append(a)
    assert out.tolist() == got and k.abstract() == s


def _spec_run(cfg, trace):
    s, got = spec.init(cfg), []
    for op, size, ref, cpu in trace.tolist():
        if op == 0:
            s, a = spec.kmalloc(s, size, "GFP_KERNEL", cpu)
        else:
            s, a = spec.kfree(s, got[ref], cpu)[0], 0
        got.append(a)
    return s, got


def test_simulate_hands_odd_rows_to_the_operations():
    """Rows the kernel does not run itself (size 0, a kfree of ZERO_SIZE_PTR, a large kmalloc, a
    double free) behave as the single operations do; the error names its row, and the rows
    before it have taken effect."""
    import numpy as np

    from impl.kmalloc import OP_KFREE, OP_KMALLOC, TRACE_DTYPE, KmallocAllocator

    cfg = KmallocConfig(SlubConfig("t", preset("x86_64-1g-cma")), ("normal",))
    rows = [(OP_KMALLOC, 0, 0, 0), (OP_KMALLOC, 100, 0, 1), (OP_KFREE, 0, 0, 0), (OP_KMALLOC, 20000, 0, 0),
            (OP_KFREE, 0, 3, 1), (OP_KFREE, 0, 1, 0), (OP_KFREE, 0, 1, 1)]
    trace = np.array(rows, dtype=TRACE_DTYPE)
    k = KmallocAllocator(cfg)
    with pytest.raises(DoubleFree, match=r"^trace\[6\]: "):
        k.simulate(trace)
    s, got = _spec_run(cfg, trace[:6])
    assert got[0] == ZERO_SIZE_PTR and k.abstract() == s
    assert KmallocAllocator(cfg).simulate(trace[:6]).tolist() == got
    with pytest.raises(EINVAL, match=r"^trace\[0\]: "):
        KmallocAllocator(cfg).simulate(np.array([(OP_KMALLOC, 8, 0, 7)], dtype=TRACE_DTYPE))


def test_simulate_of_debug_caches_agrees_with_the_spec():
    """With slab_debug=FZP every kmalloc cache is a debug cache: each row goes through the
    Python operations, with the same addresses and end state as the spec."""
    import numpy as np

    from impl.kmalloc import KmallocAllocator, make_trace

    cfg = KmallocConfig(SlubConfig("t", preset("x86_64-1g-cma"), slab_debug="FZP"), ("normal",))
    trace = make_trace(np.random.default_rng(5), 600, live_target=60)
    k = KmallocAllocator(cfg)
    out = k.simulate(trace)
    s, got = _spec_run(cfg, trace)
    assert out.tolist() == got and k.abstract() == s


def test_explain_kmalloc_topic_runs():
    from mmspec.explain.slub import explain

    assert "kmalloc-8" in explain(seed=2, objects=300)


@pytest.mark.layer("doctests")
def test_docs_page_examples_run():
    """Every >>> example of docs/kmalloc.md runs and prints what the page says."""
    import doctest
    from pathlib import Path

    from mmspec.tally import tally

    page = Path(__file__).resolve().parent.parent / "docs" / "kmalloc.md"
    result = doctest.testfile(str(page), module_relative=False, report=True, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in docs/kmalloc.md failed"
    tally("examples", result.attempted)
