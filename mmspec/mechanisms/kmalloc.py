"""kmalloc's registration: its modules, and how tests drive it.

``config`` draws the toy machine with one to three CPUs, optional slab_debug, and which kmalloc
families exist; ``steps(state)`` draws kmalloc sizes at and around every class boundary (0, 8,
9, 64, 65, 96, 97, 128, 192, 193 ... 8192, 8193, the 4 MiB limit), every GFP family, kfree of
live, freed, interior and foreign pointers, krealloc up and down, ksize and overflowing writes.
"""

from __future__ import annotations

from hypothesis import strategies as st

from mmspec.mechanisms.slub import objects
from mmspec.registry import Mechanism
from spec import kmalloc
from spec.kmalloc import GFP_TYPES, KmallocConfig
from spec.slub import SlubConfig
from spec.zone import preset

MECHANISM = Mechanism(
    name="kmalloc",
    title="kmalloc size classes and the large path (mm/slab_common.c)",
    spec="spec.kmalloc",
    impl="impl.kmalloc",
    proofs="proofs.kmalloc",
    explain="mmspec.explain.slub:explain",
)

BOUNDARIES = (1, 7, 8, 9, 16, 17, 32, 33, 63, 64, 65, 95, 96, 97, 127, 128, 129, 191, 192, 193, 256, 257,
              512, 1000, 1024, 2048, 2049, 4096, 8191, 8192, 8193, 16384, 16385, 65536)


@st.composite
def configs(draw) -> KmallocConfig:
    cpus = draw(st.integers(1, 3))
    debug = draw(st.sampled_from(["", "", "", "FZP"]))
    types = draw(st.sampled_from([("normal",), ("normal", "rcl", "dma", "cg"), ("normal", "cg")]))
    return KmallocConfig(SlubConfig("drawn", preset("toy-64"), nr_cpus=cpus, slab_debug=debug), types)


config = configs()
GFPS = tuple(GFP_TYPES)


def steps(state: kmalloc.KmallocState):
    cpus = st.integers(0, state.slub.config.nr_cpus - 1)
    sizes = st.one_of(st.sampled_from(BOUNDARIES), st.integers(1, 9000))
    gfp = st.sampled_from(["GFP_KERNEL"] * 4 + list(GFPS))
    choices = [(8, st.tuples(st.just("kmalloc"), st.tuples(sizes, gfp, cpus)))]
    choices.append((1, st.tuples(st.just("kmalloc"), st.sampled_from([
        (0,), (-1,), (4 << 20,), ((4 << 20) + 1,), (8, "GFP_BOGUS"), ("8",), (8, "GFP_KERNEL", 9)]))))
    objs = [o for o in objects(state.slub)]
    live = [o[1] for o in objs if o[2]] + sorted(state.large)
    free = [o[1] for o in objs if not o[2]]
    if live:
        ptr = st.sampled_from(live)
        choices.append((7, st.tuples(ptr, cpus).map(lambda pc: ("kfree", pc))))
        choices.append((1, st.tuples(ptr, st.sampled_from([8, 4096])).map(lambda p: ("kfree", (p[0] + p[1],)))))
        choices.append((3, st.tuples(ptr, sizes, gfp, cpus).map(lambda p: ("krealloc", p))))
        choices.append((1, ptr.map(lambda p: ("ksize", (p,)))))
        choices.append((1, st.tuples(ptr, st.sampled_from([0, 8, 96, 128]), st.integers(1, 8)).map(
            lambda p: ("write", (p[0] + p[1], p[2])))))
    if free:
        choices.append((1, st.sampled_from(free).map(lambda p: ("kfree", (p,)))))
    choices.append((1, st.tuples(st.just("kfree"), st.sampled_from([(None,), (0,), (16,), (12345,), ("x",)]))))
    choices.append((1, st.tuples(st.just("krealloc"), st.tuples(st.sampled_from([0, 16]), sizes))))
    choices.append((1, st.tuples(st.just("kmem_cache_shrink"), st.sampled_from([("kmalloc-64",), ("kmalloc-8k",)]))))
    return st.one_of(*[s for weight, s in choices for _ in range(weight)])


def render(state: kmalloc.KmallocState) -> str:
    return kmalloc.render(state)


def impl_factory(cfg: KmallocConfig):
    from impl.kmalloc import KmallocAllocator

    return KmallocAllocator(cfg)


def catch() -> str | None:
    """Run the lockstep check with whatever defect is enabled; the shrunk witness, or None."""
    from mmspec.machines import catch_witness, lockstep_machine

    machine = lockstep_machine("KmallocDefectHunt", kmalloc, impl_factory, config, steps, render)
    return catch_witness(machine)
