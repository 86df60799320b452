"""SLUB's registration: its modules, and how tests drive it.

``config`` draws small machines (the toy buddy zone of 64 pages, one to three CPUs, slab_debug
letters, slab_min_objects and slab_max_order); ``steps(state)`` draws operations biased toward
the interesting cases: allocations on every CPU, frees of live objects from the CPU that holds
their slab and from others, double frees, interior pointers, frees to the wrong cache, writes
past the end of an object and into free objects, shrink and destroy.
"""

from __future__ import annotations

from hypothesis import strategies as st

from mmspec.registry import Mechanism
from spec import slub
from spec.slub import SlubConfig
from spec.zone import preset

MECHANISM = Mechanism(
    name="slub",
    title="SLUB slab allocator (mm/slub.c, mm/slab_common.c)",
    spec="spec.slub",
    impl="impl.slub",
    proofs="proofs.slub",
    explain="mmspec.explain.slub:explain",
    topics=("slab",),
    doctest_modules=("spec.slub", "spec.slab_geometry"),
    contracts=("spec.slab_geometry",),  # the allocator's transitions take whole states
)

NAMES = ("a", "b", "c", "d")
SIZES = (8, 16, 24, 40, 64, 96, 100, 192, 256, 500, 1000, 2048, 4096)
FLAG_SETS = ((), (), ("HWCACHE_ALIGN",), ("RECLAIM_ACCOUNT",), ("NO_MERGE",), ("RED_ZONE",), ("POISON",),
             ("CONSISTENCY_CHECKS", "RED_ZONE", "POISON"), ("CONSISTENCY_CHECKS",))


@st.composite
def configs(draw) -> SlubConfig:
    """A toy machine with a drawn CPU count and boot parameters, or a preset."""
    if draw(st.integers(0, 3)) == 0:
        return slub.SLUB_PRESETS[draw(st.sampled_from(["toy", "toy-debug", "toy-1cpu"]))]
    return SlubConfig(
        "drawn", preset("toy-64"), nr_cpus=draw(st.integers(1, 3)),
        slab_min_objects=draw(st.sampled_from([0, 0, 2, 4])), slab_max_order=draw(st.sampled_from([3, 3, 1, 0])),
        slab_debug=draw(st.sampled_from(["", "", "", "F", "FZP", "ZP"])), slab_nomerge=draw(st.booleans()),
    )


config = configs()


def objects(state: slub.SlubState):
    """(cache, address, live?) of every object of every slab."""
    out = []
    for pfn, sl in sorted(state.slabs.items()):
        s = state.caches[sl.cache]
        held = {i for c in state.cpus[sl.cache] if c.slab == pfn for i in c.freelist}
        for i in range(sl.objects):
            addr = slub.object_address(slub.pfn_to_virt(pfn), i, s.size, s.red_left_pad)
            out.append((sl.cache, addr, i not in sl.freelist and i not in held))
    return out


def steps(state: slub.SlubState):
    """Operations for the state at hand, most of them meaningful, some wrong on purpose."""
    cpus = st.integers(0, state.config.nr_cpus - 1)
    create = st.tuples(st.just("kmem_cache_create"), st.tuples(
        st.sampled_from(NAMES), st.sampled_from(SIZES), st.sampled_from([0, 0, 8, 64]), st.sampled_from(FLAG_SETS)))
    names = sorted(set(state.caches) | set(state.aliases))
    choices = [(4 if len(state.caches) < 2 else 1, create)]
    choices.append((1, st.tuples(st.just("kmem_cache_create"), st.sampled_from([
        ("x", 0), ("x", -1), ("x", 8, 3), ("x", 8, 0, ("BOGUS",)), ("", 8), (3, 8), ("x", 1 << 23)]))))
    if names:
        name = st.sampled_from(names)
        choices.append((8, st.tuples(st.just("kmem_cache_alloc"), st.tuples(name, cpus))))
        choices.append((1, st.tuples(st.just("kmem_cache_alloc"), st.tuples(name, st.sampled_from([-1, 7, "0"])))))
        choices.append((4, st.tuples(st.just("kmem_cache_shrink"), st.tuples(name))))
        choices.append((1, st.tuples(st.just("kmem_cache_destroy"), st.tuples(name))))
    objs = objects(state)
    live = [o for o in objs if o[2]]
    free = [o for o in objs if not o[2]]
    if live:
        obj = st.sampled_from(live)
        choices.append((8, st.tuples(obj, cpus).map(lambda oc: ("kmem_cache_free", (oc[0][0], oc[0][1], oc[1])))))
        choices.append((1, st.tuples(obj, st.sampled_from([1, 8, 16]), cpus).map(
            lambda o: ("kmem_cache_free", (o[0][0], o[0][1] + o[1], o[2])))))
        choices.append((1, st.tuples(obj, st.sampled_from(names), cpus).map(
            lambda o: ("kmem_cache_free", (o[1], o[0][1], o[2])))))
        choices.append((2, st.tuples(obj, st.sampled_from([-8, 0, 8, 96, 100]), st.integers(1, 16)).map(
            lambda o: ("write", (o[0][1] + o[1] + (state.caches[o[0][0]].object_size if o[1] >= 0 else 0), o[2])))))
    if free:
        obj = st.sampled_from(free)
        choices.append((2, st.tuples(obj, cpus).map(lambda oc: ("kmem_cache_free", (oc[0][0], oc[0][1], oc[1])))))
        choices.append((1, st.tuples(obj, st.integers(1, 8)).map(lambda o: ("write", (o[0][1], o[1])))))
    if names:
        choices.append((1, st.tuples(st.just("kmem_cache_free"), st.tuples(
            st.sampled_from(names), st.sampled_from([0, slub.PAGE_OFFSET - 8, slub.PAGE_OFFSET + (63 << 12)]), cpus))))
    choices.append((1, st.tuples(st.just("write"), st.tuples(st.sampled_from([0, slub.PAGE_OFFSET]), st.sampled_from([0, 4])))))
    return st.one_of(*[s for weight, s in choices for _ in range(weight)])


def render(state: slub.SlubState) -> str:
    return slub.render(state)


def impl_factory(cfg: SlubConfig):
    from impl.slub import SlubAllocator

    return SlubAllocator(cfg)


def catch() -> str | None:
    """Run the lockstep check with whatever defect is enabled; the shrunk witness, or None."""
    from mmspec.machines import catch_witness, lockstep_machine

    machine = lockstep_machine("SlubDefectHunt", slub, impl_factory, config, steps, render)
    return catch_witness(machine)
