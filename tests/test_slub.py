"""SLUB: invariants, lockstep with the impl, bad input, and Linux's choices.

The state machines come from the shared harness fed with SLUB's strategies
(:mod:`mmspec.mechanisms.slub`).  The scenario tests check choices worked out by hand from
mm/slub.c; a failure prints /proc/slabinfo and the slab diagram.
"""

from __future__ import annotations

import pytest

from mmspec.machines import invariant_machine, lockstep_machine, run_machine
from mmspec.mechanisms import slub as reg
from spec import slub as spec
from spec.errors import (
    EBUSY,
    EEXIST,
    EFAULT,
    EINVAL,
    ENOMEM,
    DoubleFree,
    InvalidObjectPointer,
    SlabCorruption,
    WrongSlabCache,
)
from spec.slub import SlubConfig, slub_preset
from spec.zone import preset

SlubInvariants = invariant_machine("SlubInvariants", spec, reg.config, reg.steps, reg.render)
SlubLockstep = lockstep_machine("SlubLockstep", spec, reg.impl_factory, reg.config, reg.steps, reg.render)


@pytest.mark.layer("invariants")
def test_invariants_hold_after_every_step():
    run_machine(SlubInvariants)


@pytest.mark.layer("lockstep")
def test_impl_agrees_with_spec_at_every_step():
    run_machine(SlubLockstep)


def why(state) -> str:
    return "\n" + spec.render(state)


def fresh(cfg="toy", *caches):
    s = spec.init(slub_preset(cfg) if isinstance(cfg, str) else cfg)
    for name, size, *rest in caches:
        s, _ = spec.kmem_cache_create(s, name, size, *rest)
    return s


# ---------------------------------------------------------------------------------------------
# Geometry: calculate_sizes, calculate_order, min_partial, cpu_partial


@pytest.mark.parametrize(("size", "cpus", "order", "objects"), [
    (8, 2, 0, 512), (192, 2, 0, 21), (512, 2, 1, 16), (1024, 2, 2, 16), (2048, 2, 3, 16),
    (4096, 2, 3, 8), (8192, 2, 3, 4), (832, 4, 2, 19), (256, 64, 1, 32), (96, 1, 0, 42),
])
def test_calculate_order_matches_worked_examples(size, cpus, order, objects):
    """min_objects = 4 * (fls(cpus) + 1); the first order from get_order(min_objects * size)
    with leftover <= 1/16 (e.g. 832 bytes, 4 CPUs: 16384 % 832 = 576 <= 1024: order 2)."""
    got = spec.calculate_order(size, spec.min_objects_for(cpus))
    assert (got, spec.order_objects(got, size)) == (order, objects)


def test_cache_geometry_of_a_debug_cache():
    """calculate_sizes() with Z and P: a 24-byte object gets a right red zone word (inuse 32),
    the free pointer behind it (offset 32), then a red zone word and a left pad: stride 56."""
    s = fresh("toy-debug", ("x", 24))
    c = s.caches["x"]
    assert (c.inuse, c.offset, c.red_left_pad, c.size) == (32, 32, 8, 56)
    assert c.cpu_partial == 0 and c.cpu_partial_slabs == 0


def test_min_partial_and_cpu_partial():
    """set_min_partial(ilog2(size) / 2) in [5, 10]; set_cpu_partial() by stride."""
    s = fresh("toy", ("a", 8), ("b", 300), ("c", 1024), ("d", 4096, 0, ("NO_MERGE",)))
    got = {n: (c.min_partial, c.cpu_partial, c.cpu_partial_slabs) for n, c in s.caches.items()}
    assert got == {"a": (5, 120, 1), "b": (5, 52, 8), "c": (5, 24, 3), "d": (6, 6, 2)}


def test_hwcache_align_halves_the_line_for_small_objects():
    s = fresh("toy", ("a", 20, 0, ("HWCACHE_ALIGN",)), ("b", 100, 0, ("HWCACHE_ALIGN",)))
    assert (s.caches["a"].size, s.caches["b"].size) == (32, 128)


def test_compatible_caches_merge_into_the_oldest():
    """find_mergeable(): same size after alignment (within a word), same MERGE_SAME flags."""
    s = fresh("toy", ("a", 64), ("b", 64, 0, ("RECLAIM_ACCOUNT",)))
    s, target = spec.kmem_cache_create(s, "c", 60)
    assert target == "a" and s.aliases["c"] == "a" and s.caches["a"].refcount == 2
    s, target = spec.kmem_cache_create(s, "d", 64, 0, ("RECLAIM_ACCOUNT",))
    assert target == "b"
    s, target = spec.kmem_cache_create(s, "e", 64, 0, ("RED_ZONE",))
    assert target == "e"  # debug caches never merge
    assert "c " not in spec.slabinfo(s)


# ---------------------------------------------------------------------------------------------
# The freelist, the cpu slab and the partial lists


def test_new_slab_hands_out_objects_in_address_order_and_frees_are_lifo():
    s = fresh("toy", ("x", 256))
    addrs = []
    for _ in range(3):
        s, a = spec.kmem_cache_alloc(s, "x", 0)
        addrs.append(a)
    assert [a - addrs[0] for a in addrs] == [0, 256, 512]
    s, _ = spec.kmem_cache_free(s, "x", addrs[0], 0)
    s, _ = spec.kmem_cache_free(s, "x", addrs[2], 0)
    s, a = spec.kmem_cache_alloc(s, "x", 0)
    assert a == addrs[2], why(s)  # the last freed comes back first


def test_remote_free_goes_to_the_slab_freelist_not_the_cpu_freelist():
    s = fresh("toy", ("x", 256))
    s, a = spec.kmem_cache_alloc(s, "x", 0)
    s, _ = spec.kmem_cache_free(s, "x", a, 1)  # CPU 1 frees an object of CPU 0's cpu slab
    pfn = s.cpus["x"][0].slab
    assert s.slabs[pfn].freelist == (0,) and s.cpus["x"][0].freelist == tuple(range(1, 16)), why(s)


def test_full_slab_freed_into_goes_to_the_cpu_partial_list():
    """__slab_free(): a free to a full, unfrozen slab puts it on this CPU's partial list."""
    s = fresh("toy", ("x", 1024))  # 16 objects per order-2 slab
    objs = []
    for _ in range(17):  # fills slab 1, starts slab 2
        s, a = spec.kmem_cache_alloc(s, "x", 0)
        objs.append(a)
    first = (objs[0] - spec.PAGE_OFFSET) >> 12
    s, _ = spec.kmem_cache_free(s, "x", objs[0], 0)
    assert s.cpus["x"][0].partial == (first,) and not s.slabs[first].frozen, why(s)
    for a in objs[1:16]:
        s, _ = spec.kmem_cache_free(s, "x", a, 0)
    assert first in s.slabs, "an empty slab on a cpu partial list stays until the list is drained"


def test_empty_slabs_stay_below_min_partial_and_shrink_returns_them():
    cfg = SlubConfig("t", preset("toy-64"), nr_cpus=1)
    s = fresh(cfg, ("x", 4096))  # 8 objects per order-3 slab, cpu_partial_slabs 2, min_partial 6
    objs = []
    for _ in range(8 * 7):
        s, a = spec.kmem_cache_alloc(s, "x", 0)
        objs.append(a)
    for a in objs:
        s, _ = spec.kmem_cache_free(s, "x", a, 0)
    # fewer than min_partial (6) node-partial slabs: the empty ones are kept, none discarded
    assert len(s.slabs) == 7 and len(s.partial["x"]) == 4 and all(sl.inuse in (0, 8) for sl in s.slabs.values()), why(s)
    s, ret = spec.kmem_cache_shrink(s, "x")
    assert ret == 0 and not s.slabs, why(s)
    assert not s.buddy.allocated and s.buddy.zones[2].free_pages == 64


def test_shrink_sorts_partial_slabs_fullest_first():
    s = fresh("toy-1cpu", ("x", 1024))
    objs = []
    for _ in range(48):
        s, a = spec.kmem_cache_alloc(s, "x", 0)
        objs.append(a)
    for a in objs[0:3] + objs[16:17] + objs[32:40]:  # 8 objects per order-1 slab with 1 CPU
        s, _ = spec.kmem_cache_free(s, "x", a, 0)
    s, ret = spec.kmem_cache_shrink(s, "x")
    frees = [s.slabs[p].objects - s.slabs[p].inuse for p in s.partial["x"]]
    assert ret == 1 and frees == [1, 3] and len(s.slabs) == 5, why(s)  # the empty slab is freed


def test_destroy_refuses_while_objects_are_live():
    s = fresh("toy", ("x", 64))
    s, a = spec.kmem_cache_alloc(s, "x", 1)
    with pytest.raises(EBUSY):
        spec.kmem_cache_destroy(s, "x")
    s, _ = spec.kmem_cache_free(s, "x", a, 0)
    s, _ = spec.kmem_cache_destroy(s, "x")
    assert not s.caches and not s.buddy.allocated and s.buddy.zones[2].free_pages == 64


# ---------------------------------------------------------------------------------------------
# Debugging: red zones, poison, consistency checks


def test_debug_reports_use_after_free_as_poison_overwritten():
    s = fresh("toy-debug", ("x", 64))
    s, a = spec.kmem_cache_alloc(s, "x", 0)
    s, _ = spec.kmem_cache_free(s, "x", a, 0)
    s, _ = spec.write(s, a + 8, 4)  # use after free
    with pytest.raises(SlabCorruption, match="BUG x .*: Poison overwritten"):
        spec.kmem_cache_alloc(s, "x", 0)


def test_debug_reports_an_overflow_as_right_redzone_overwritten_at_free():
    s = fresh("toy-debug", ("x", 60))
    s, a = spec.kmem_cache_alloc(s, "x", 0)
    s, _ = spec.write(s, a + 60, 2)
    with pytest.raises(SlabCorruption, match="Right Redzone overwritten"):
        spec.kmem_cache_free(s, "x", a, 0)


def test_without_debug_a_write_is_not_recorded():
    s = fresh("toy", ("x", 60))
    s, a = spec.kmem_cache_alloc(s, "x", 0)
    s2, _ = spec.write(s, a + 60, 8)
    assert s2 == s


# ---------------------------------------------------------------------------------------------
# Bad input: a typed error, and the state exactly as it was, in the spec and the impl


@pytest.fixture(scope="module")
def busy():
    ops = [("kmem_cache_create", ("x", 64)), ("kmem_cache_create", ("y", 200, 0, ("NO_MERGE",))),
           ("kmem_cache_alloc", ("x", 0)), ("kmem_cache_alloc", ("x", 0)), ("kmem_cache_alloc", ("y", 1))]
    s = spec.init("toy-debug")
    results = []
    for op, args in ops:
        s, r = getattr(spec, op)(s, *args)
        results.append(r)
    return ops, s, results


def _bad_calls(results):
    a, b, c = results[2:]
    return [
        ("kmem_cache_free", ("x", a + 8, 0), InvalidObjectPointer),
        ("kmem_cache_free", ("y", a, 0), WrongSlabCache),
        ("kmem_cache_free", ("x", a + (3 << 12) * 4, 0), EINVAL),
        ("kmem_cache_free", ("nope", a, 0), EINVAL),
        ("kmem_cache_alloc", ("x", 2), EINVAL),
        ("kmem_cache_create", ("x", 64), EEXIST),
        ("kmem_cache_create", ("z", 0), EINVAL),
        ("kmem_cache_create", ("z", 8, 24), EINVAL),
        ("kmem_cache_destroy", ("x",), EBUSY),
        ("write", (0, 4), EFAULT),
    ]


@pytest.mark.parametrize("case", range(10))
def test_bad_input_raises_a_typed_error_and_changes_nothing(busy, case):
    ops, s, results = busy
    op, args, error = _bad_calls(results)[case]
    with pytest.raises(error):
        getattr(spec, op)(s, *args)
    impl = reg.impl_factory(s.config)
    for o, a in ops:
        getattr(impl, o)(*a)
    assert impl.abstract() == s
    with pytest.raises(error):
        getattr(impl, op)(*args)
    assert impl.abstract() == s


def test_double_free_is_named_as_linux_names_it():
    s = fresh("toy-debug", ("x", 64))
    s, a = spec.kmem_cache_alloc(s, "x", 0)
    s, _ = spec.kmem_cache_free(s, "x", a, 0)
    with pytest.raises(DoubleFree, match="Object already free"):
        spec.kmem_cache_free(s, "x", a, 0)
    s = fresh("toy", ("x", 64))
    s, a = spec.kmem_cache_alloc(s, "x", 0)
    s, _ = spec.kmem_cache_free(s, "x", a, 0)
    with pytest.raises(DoubleFree, match="naive double-free"):
        spec.kmem_cache_free(s, "x", a, 0)


# ---------------------------------------------------------------------------------------------
# Views and batches


def test_slabinfo_and_sysfs_views():
    s = fresh("toy", ("dentry", 192))
    for cpu in (0, 1):
        s, _ = spec.kmem_cache_alloc(s, "dentry", cpu)
    lines = spec.slabinfo(s).splitlines()
    assert lines[0] == "slabinfo - version: 2.1"
    assert lines[2] == "dentry                42     42    192   21    1 : tunables    0    0    0 : slabdata      2      2      0"
    attrs = spec.sysfs(s, "dentry")
    assert (attrs["cpu_slabs"], attrs["partial"], attrs["slabs"]) == ("2 N0=2", "0", "2 N0=2")
    assert spec.meminfo(s).splitlines() == ["Slab:                  8 kB", "SReclaimable:          0 kB", "SUnreclaim:            8 kB"]


def test_impl_batches_agree_with_single_operations():
    from impl.slub import SlubAllocator

    a, b = SlubAllocator("toy"), SlubAllocator("toy")
    for x in (a, b):
        x.kmem_cache_create("x", 100)
    many = a.alloc_many("x", 50, 1)
    single = [b.kmem_cache_alloc("x", 1) for _ in range(50)]
    assert many.tolist() == single and a.abstract() == b.abstract()
    a.free_many(many[::2], 0)
    for addr in single[::2]:
        b.kmem_cache_free("x", addr, 0)
    assert a.abstract() == b.abstract()
    assert a.slabinfo() == spec.slabinfo(a.abstract())


def test_impl_batches_grow_their_arrays_and_stop_at_a_bad_pointer():
    """alloc_many past the impl's first 64 slab rows equals single allocations; free_many stops
    at an interior pointer with the frees before it done, as single frees would."""
    from impl.slub import SlubAllocator

    cfg = SlubConfig("t", preset("x86_64-1g-cma"))
    a, b = SlubAllocator(cfg), SlubAllocator(cfg)
    for x in (a, b):
        x.kmem_cache_create("small", 8)
        x.kmem_cache_create("big", 4096)
    many = a.alloc_many("big", 1000, 0).tolist() + a.alloc_many("small", 3000, 1).tolist()
    single = [b.kmem_cache_alloc("big", 0) for _ in range(1000)]
    single += [b.kmem_cache_alloc("small", 1) for _ in range(3000)]
    assert many == single and a.abstract() == b.abstract()
    bad = many[:500] + [many[500] + 1] + many[501:]
    with pytest.raises(InvalidObjectPointer):
        a.free_many(bad, 1)
    for addr in single[:500]:
        b.kmem_cache_free("big", addr, 1)
    assert a.abstract() == b.abstract()


def test_alloc_that_finds_no_memory_changes_nothing():
    """The cpu slab is full, no slab is partial and the buddy allocator is empty: ENOMEM, and the
    full cpu slab stays the (frozen) cpu slab, in the impl as in the spec."""
    from impl.slub import SlubAllocator

    s = fresh("toy", ("x", 4096))
    a = SlubAllocator(s.config)
    a.kmem_cache_create("x", 4096)
    while True:
        try:
            s, addr = spec.kmem_cache_alloc(s, "x", 0)
        except ENOMEM:
            break
        assert a.kmem_cache_alloc("x", 0) == addr
    with pytest.raises(ENOMEM):
        a.kmem_cache_alloc("x", 0)
    assert s.cpus["x"][0].slab >= 0 and a.abstract() == s, why(s)


def test_explain_slab_is_deterministic():
    from mmspec.explain.slub import explain

    text = explain(seed=1)
    assert text == explain(seed=1)
    assert "buddy pages" in text and "SLUB" in text


@pytest.mark.layer("doctests")
def test_docs_page_examples_run():
    """Every >>> example of docs/slub.md runs and prints what the page says."""
    import doctest
    from pathlib import Path

    from mmspec.tally import tally

    page = Path(__file__).resolve().parent.parent / "docs" / "slub.md"
    result = doctest.testfile(str(page), module_relative=False, report=True, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in docs/slub.md failed"
    tally("examples", result.attempted)
