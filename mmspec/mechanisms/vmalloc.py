"""vmalloc's registration: its modules, and how tests drive it.

``config`` draws the 64-page toy machine under x86-64 4- or 5-level paging, one to four CPUs,
and (mostly) a vmalloc window of a dozen or two pages with a lazy limit of a few pages, so that
exhaustion, the purge on overflow and the purge on the lazy limit all happen within a few
steps.  ``steps(state)`` draws sizes at page boundaries and the exact sizes of the holes that
frees leave (the lowest fit and its off-by-ones), alignments, VM_NO_GUARD, vfree of live areas,
of areas on the purge list (double free), of interior and foreign addresses, explicit purges and
``vmalloc_to_pfn`` of mapped pages and guard pages.
"""

from __future__ import annotations

from hypothesis import strategies as st

from mmspec.registry import Mechanism
from spec import vmalloc
from spec.paging import PagingConfig
from spec.vmalloc import VmallocConfig
from spec.zone import PAGE_SIZE

MECHANISM = Mechanism(
    name="vmalloc",
    title="vmalloc areas, guard pages and the lazy purge (mm/vmalloc.c)",
    spec="spec.vmalloc",
    impl="impl.vmalloc",
    proofs="proofs.vmalloc",
    explain="mmspec.explain.vmalloc:explain",
    doctest_modules=("spec.vmalloc", "impl.vmalloc"),
)


@st.composite
def configs(draw) -> VmallocConfig:
    mode = draw(st.sampled_from(["x86-64-4level", "x86-64-4level", "x86-64-5level"]))
    window = draw(st.sampled_from([12, 16, 24, 40, None]))
    lazy = draw(st.sampled_from([2, 3, 6, None]))
    return VmallocConfig(PagingConfig(mode, "toy-64"), draw(st.integers(1, 4)), window, lazy,
                         draw(st.sampled_from([True, True, False])))


config = configs()
SIZES = (1, 4095, 4096, 4097, 8192, 8193, 12288, 16384, 20480, 65536)
CALLERS = ("mmspec_caller+0x0/0x0", "alloc_large_system_hash+0x1a/0x2c0", None)


def steps(state: vmalloc.VmallocState):
    holes = [e - s - PAGE_SIZE for s, e in vmalloc.free_blocks(state) if e - s <= 16 * PAGE_SIZE]
    holes = [h for h in holes if h > 0] + [h + PAGE_SIZE for h in holes] + [max(1, h - PAGE_SIZE) for h in holes]
    sizes = st.one_of(st.sampled_from(SIZES + tuple(holes)), st.integers(1, 6 * PAGE_SIZE))
    aligns = st.sampled_from([1, 1, 1, PAGE_SIZE, 4 * PAGE_SIZE])
    alloc = st.tuples(sizes, aligns, st.sampled_from(CALLERS), st.sampled_from([True, True, True, False]))
    choices = [(8, st.tuples(st.just("vmalloc"), alloc))]
    choices.append((1, st.tuples(st.just("vmalloc"), st.sampled_from([
        (0,), (-4096,), ("4096",), (4096, 3), (4096, 1, "two words"), (4096, 1, None, 1), (1 << 40,)]))))
    live = sorted(state.busy)
    if live:
        ptr = st.sampled_from(live)
        choices.append((6, ptr.map(lambda p: ("vfree", (p,)))))
        choices.append((1, ptr.map(lambda p: ("vfree", (p + PAGE_SIZE,)))))
        choices.append((2, st.tuples(ptr, st.integers(0, 4)).map(lambda p: ("vmalloc_to_pfn", (p[0] + p[1] * PAGE_SIZE,)))))
    if state.lazy:
        choices.append((1, st.sampled_from(sorted(state.lazy)).map(lambda p: ("vfree", (p,)))))
    choices.append((2, st.just(("purge_vmap_area_lazy", ()))))
    choices.append((1, st.tuples(st.just("vfree"), st.sampled_from([(None,), (0,), (12345,), (state.vstart - PAGE_SIZE,), ("x",)]))))
    choices.append((1, st.tuples(st.just("vmalloc_to_pfn"), st.sampled_from([(0,), (state.vstart,), (state.vend,)]))))
    return st.one_of(*[s for weight, s in choices for _ in range(weight)])


def render(state: vmalloc.VmallocState) -> str:
    return vmalloc.render(state)


def impl_factory(cfg: VmallocConfig):
    from impl.vmalloc import VmallocAllocator

    return VmallocAllocator(cfg)


SMALL = VmallocConfig(PagingConfig("x86-64-4level", "toy-64"), 1, 16, 4)

#: Scenario table run in lockstep before the random hunt, each on a fresh SMALL state; "A0"
#: names the address the first vmalloc returned.
SCENARIOS = (
    ("vfree, then vmalloc the same size", [("vmalloc", (4096,)), ("vmalloc", (4096,)), ("vfree", ("A0",)),
                                           ("vmalloc", (4096,))]),
    ("an exact-fit hole after the purge", [("vmalloc", (4096,)), ("vmalloc", (4096,)), ("vfree", ("A0",)),
                                           ("purge_vmap_area_lazy", ()), ("vmalloc", (4096,))]),
    ("guard page between two areas", [("vmalloc", (8192,)), ("vmalloc", (4096,)), ("vmalloc_to_pfn", ("A0+8192",))]),
)


def _resolve(args, addrs):
    out = []
    for a in args:
        if isinstance(a, str) and a.startswith("A"):
            base, _, plus = a[1:].partition("+")
            a = addrs[int(base)] + (int(plus) if plus else 0)
        out.append(a)
    return tuple(out)


def run_scenarios() -> str | None:
    """Run every scenario on the spec and the impl side by side; the first disagreement as text."""
    from mmspec.machines import lockstep_scenario_step

    for title, ops in SCENARIOS:
        state, impl, addrs, done = vmalloc.init(SMALL), impl_factory(SMALL), [], []
        for op, args in ops:
            args = _resolve(args, addrs)
            state, result, mismatch = lockstep_scenario_step(vmalloc, state, impl, op, args, render, done, title)
            if mismatch:
                return mismatch
            if op == "vmalloc" and result is not None:
                addrs.append(result)
    return None


def catch() -> str | None:
    """The scenario table in lockstep, then a short random lockstep hunt, with whatever defect
    is enabled: the first witness, or None."""
    from hypothesis import settings

    from mmspec.machines import catch_witness, lockstep_machine

    witness = run_scenarios()
    if witness:
        return witness
    machine = lockstep_machine("VmallocDefectHunt", vmalloc, impl_factory, config, steps, render)
    return catch_witness(machine, settings(max_examples=15, stateful_step_count=15, derandomize=True, database=None,
                                           deadline=None))
