"""Paging's registration: its modules, and how tests drive it.

``config`` draws a mode (every preset: x86-64 4- and 5-level, x86 32-bit and PAE, ARM64 with
the 4, 16 and 64 KiB granules, the teaching modes) and a small machine: 1024 pages with orders
up to 9 (so 2 MiB data frames exist), or, for x86-64, a machine whose upper 1 GiB is reserved
at boot like hugetlb gigantic pages (so 1 GiB leaves can be mapped); the modes whose huge leaf
is larger (4 MiB, 32 MiB, 512 MiB) get a machine whose buddy reaches that order.  ``steps(state)`` draws operations biased toward collisions: the same few
virtual pages and 2 MiB slots, frames that are already mapped, huge leaves to split and full
tables to collapse, every combination of access and control bits, and bad input on purpose.
"""

from __future__ import annotations

from hypothesis import strategies as st

from mmspec.registry import Mechanism
from spec import paging, pte
from spec.paging import Access, PagingConfig
from spec.zone import MachineConfig, ZoneSpec

MECHANISM = Mechanism(
    name="paging",
    title="Paging and the page walk (arch/x86/mm, mm/memory.c, mm/huge_memory.c)",
    spec="spec.paging",
    impl="impl.paging",
    proofs="proofs.paging",
    explain="mmspec.explain.paging:explain",
    topics=("walk",),
    doctest_modules=("spec.paging", "spec.paging_modes", "spec.pte", "impl.paging"),
    contracts=("spec.paging_modes", "spec.pte"),  # the walker itself takes whole states
)

_E = ZoneSpec()
SMALL = MachineConfig("pg-1024", (_E, _E, ZoneSpec(0, 1024), _E, _E), max_order=9, pageblock_order=9, min_free_kbytes=0)
TIGHT = MachineConfig("pg-tight", (_E, _E, ZoneSpec(0, 8), _E, _E), max_order=3, pageblock_order=3, min_free_kbytes=0)
GIGA_START = 1 << 18
GIGA = MachineConfig("pg-giga", (_E, _E, ZoneSpec(0, 2 << 18, reserved=((GIGA_START, 2 << 18),)), _E, _E),
                     max_order=9, pageblock_order=9, min_free_kbytes=0)
TOY = paging.toy_machine(128)


def _order_machine(name: str, order: int) -> MachineConfig:
    """Four maximal blocks of 2^order pages: room for huge data frames beside the tables."""
    return MachineConfig(name, (_E, _E, ZoneSpec(0, 4 << order), _E, _E), max_order=order, pageblock_order=min(order, 10),
                         min_free_kbytes=0)


#: Per mode, the machines drawn besides SMALL and TIGHT.
MACHINES = {
    "x86-64-4level": [GIGA],
    "x86-64-5level": [GIGA],
    "x86-32": [_order_machine("pg-4m", 10)] * 3,
    "x86-pae": [_order_machine("pg-2m", 9)] * 3,
    "arm64-16k": [_order_machine("pg-32m", 11)] * 3,
    "arm64-64k": [_order_machine("pg-512m", 13)] * 3,
}
TEACHING = {"toy": TOY, "toy-3level": paging.toy_machine(1024)}


@st.composite
def configs(draw) -> PagingConfig:
    mode = draw(st.sampled_from(["x86-64-4level", "x86-64-4level", "x86-64-5level", "arm64-4k", "arm64-16k",
                                 "arm64-64k", "x86-32", "x86-pae", "toy", "toy-3level"]))
    if mode in TEACHING:
        return PagingConfig(mode, TEACHING[mode], draw(st.integers(1, 2)))
    machine = draw(st.sampled_from([SMALL, SMALL, SMALL, TIGHT] + MACHINES.get(mode, [])))
    return PagingConfig(mode, machine, draw(st.integers(1, 2)))


config = configs()


def config_for(mode: str):
    """``config`` restricted to one mode (the per-mode machines of the tests)."""
    if mode in TEACHING:
        return st.builds(PagingConfig, st.just(mode), st.just(TEACHING[mode]), st.integers(1, 2))
    machines = [SMALL, TIGHT] + MACHINES.get(mode, [])
    return st.builds(PagingConfig, st.just(mode), st.sampled_from(machines), st.integers(1, 2))

X86_PROTS = [pte.PAGE_SHARED, pte.PAGE_READONLY, pte.PAGE_READONLY_EXEC, pte.PAGE_SHARED_EXEC, pte.PAGE_KERNEL,
             pte.PAGE_KERNEL_RO, pte.PAGE_SHARED | (1 << 59), pte.PAGE_SHARED | (3 << 59), pte.PAGE_READONLY | pte._PAGE_SPECIAL,
             pte.PAGE_SHARED | pte._PAGE_PAT | pte._PAGE_PCD, pte.PAGE_SHARED | pte._PAGE_UFFD_WP]
X86_TABLE_PROTS = [pte._PAGE_RW | pte._PAGE_USER, pte._PAGE_USER, pte._PAGE_RW, pte._PAGE_RW | pte._PAGE_USER | pte._PAGE_NX, 0]
ARM_PROTS = [pte.ARM64_PAGE_SHARED, pte.ARM64_PAGE_READONLY, pte.ARM64_PAGE_KERNEL,
             pte.ARM64_PAGE_SHARED & ~pte.PTE_UXN, pte.ARM64_PAGE_READONLY & ~pte.PTE_UXN, pte.ARM64_PAGE_KERNEL & ~pte.PTE_PXN]
ARM_TABLE_PROTS = [0, pte.PMD_TABLE_UXN, pte.PMD_TABLE_PXN, pte.PMD_TABLE_AP_NO_EL0, pte.PMD_TABLE_AP_RDONLY]

accesses = st.builds(
    Access,
    op=st.sampled_from("rwx"),
    user=st.booleans(),
    wp=st.booleans(),
    smep=st.booleans(),
    smap=st.booleans(),
    pke=st.booleans(),
    nxe=st.sampled_from([True, True, True, False]),
    ac=st.booleans(),
    pkru=st.sampled_from([0, 0, 0b0100, 0b1000, 0b1100, 0x55555554]),
    pse=st.sampled_from([True, True, True, False]),
)


def _bases(mode: paging.Mode) -> list[int]:
    """A few slots: a user 1 GiB region, its neighbour, and an upper-half one."""
    if mode.fmt == "toy":
        return [0, 1 << (mode.va_bits - 1)]
    if mode.va_bits <= 32:
        return [0x40000000, 0x80000000, 0xC0000000]
    lo = 0x7F0000000000 if mode.va_bits == 48 else 0x00FF00000000000
    hi = paging.canonicalize(mode, 1 << (mode.va_bits - 1))
    return [lo, lo + (1 << 30), hi]


def _frames(state: paging.PagingState):
    """Data frames: live buddy allocations that are not tables, and the reserved gigantic page."""
    frames = [(p, a.order) for p, a in sorted(state.buddy.allocated.items()) if p not in state.tables]
    if state.end_pfn == 2 << 18:
        frames.append((GIGA_START, 18))
    return frames


def _mapped(state: paging.PagingState):
    """(root, first address, size) of every present leaf, found by walking each root's tables."""
    mode, out = state.mode, []
    for root in state.mms:
        stack = [(root, mode.levels, 0)]
        while stack:
            table, level, base = stack.pop()
            span = mode.leaf_size(level)
            for index, raw in sorted(state.tables[table].entries.items()):
                d = paging._decode(mode, raw, level)
                if d.present and d.leaf:
                    out.append((root, paging.canonicalize(mode, base + index * span), span))
                elif d.present and d.pfn in state.tables:
                    stack.append((d.pfn, level - 1, base + index * span))
    return out


def steps(state: paging.PagingState):
    mode = state.mode
    ps = mode.page_size
    sizes = sorted(mode.leaf_size(lv) for lv in mode.leaf_levels)
    roots = list(state.mms) or [0]
    root = st.sampled_from(roots + ([12345] if len(roots) < 3 else []))
    bases = _bases(mode)
    base = st.sampled_from(bases[:2] if mode.split_halves else bases)
    small_off = st.integers(0, 1023 if mode.fmt != "toy" else 31).map(lambda k: k * ps)
    huge_off = st.integers(0, 3).map(lambda k: k * (sizes[1] if len(sizes) > 1 else ps))
    vaddr = st.builds(lambda b, o: b + o, base, st.one_of(small_off, huge_off))
    if mode.x86:  # the presets' protections cut to what the format has, plus one it lacks
        mask = paging._prot_mask(mode)
        prots = list(dict.fromkeys([p & mask for p in X86_PROTS] + [X86_PROTS[6]]))
    else:
        prots = ARM_PROTS if mode.fmt == "arm64" else [0]
    tprots = X86_TABLE_PROTS if mode.x86 else ARM_TABLE_PROTS if mode.fmt == "arm64" else [0]
    prot = st.sampled_from(prots)
    frames = _frames(state)
    huge_order = (sizes[1] >> mode.page_shift).bit_length() - 1 if len(sizes) > 1 else 0
    orders = [0, 0, 1] + [o for o in (9, huge_order) if 1 < o <= state.buddy.config.max_order]
    choices = [
        (3, st.tuples(st.just("alloc_data"), st.tuples(st.sampled_from(orders)))),
        (2, st.tuples(st.just("touch"), st.tuples(root, vaddr, accesses))),
        (1, st.tuples(st.just("translate"), st.tuples(root, vaddr, accesses))),
        (1, st.tuples(st.just("translate_many"), st.tuples(root, st.lists(vaddr, max_size=4), accesses))),
        (1, st.tuples(st.just("unmap"), st.tuples(root, vaddr, st.sampled_from(sizes[:2] + [3 * ps])))),
        (1, st.tuples(st.just("protect"), st.tuples(root, vaddr, st.sampled_from(sizes[:2]), prot))),
        (1, st.tuples(st.just("protect_table"), st.tuples(root, vaddr, st.integers(2, mode.levels), st.sampled_from(tprots)))),
        (1, st.tuples(st.just("split"), st.tuples(root, vaddr))),
        (1, st.tuples(st.just("collapse"), st.tuples(root, vaddr, st.sampled_from([2, 3])))),
        (1, st.tuples(st.just("free_empty_tables"), st.tuples(root))),
        (1, st.tuples(st.just("new_mm"), st.just(()))),
        (1, st.tuples(st.just("free_mm"), st.tuples(root))),
        (1, st.tuples(st.just("map"), st.tuples(root, st.integers(-1, 1 << 16).map(lambda k: k * ps + 7 * (k % 2)),
                                                 st.integers(-1, 1 << 20), st.just(ps), prot))),
    ]
    mapped = _mapped(state)
    if mapped:  # accesses that reach a leaf: rights, Accessed/Dirty, huge-leaf offsets
        hit = st.tuples(st.sampled_from(mapped), st.integers(0, 7)).map(
            lambda a: (a[0][0], a[0][1] + (a[0][2] - 1) * a[1] // 7))
        choices.append((3, st.tuples(hit, accesses).map(lambda a: ("touch", (a[0][0], a[0][1], a[1])))))
        choices.append((1, st.tuples(hit, accesses).map(lambda a: ("translate", (a[0][0], a[0][1], a[1])))))
    if frames:
        frame = st.sampled_from(frames)

        def mapping(args):
            (pfn, order), b, k, r, p = args
            size = ps << order
            page = size if size in sizes else ps
            if size > (1 << 30) and page == ps:
                size = ps
            return ("map", (r, b + (k * size if size <= sizes[-1] else 0), pfn, size, p, page))

        choices.append((8, st.tuples(frame, base, st.integers(0, 3), root, prot).map(mapping)))
        choices.append((1, frame.map(lambda fo: ("free_data", fo))))
        choices.append((2, st.tuples(frame, vaddr, root, prot).map(lambda a: ("map", (a[2], a[1], a[0][0], ps, a[3])))))
    weighted = [s for weight, s in choices for _ in range(weight)]
    return st.one_of(*weighted)


def render(state: paging.PagingState) -> str:
    return paging.render(state)


def impl_factory(cfg: PagingConfig):
    from impl.paging import PageTables

    return PageTables(cfg)


def hunt_steps(state: paging.PagingState):
    """The defect hunt's operations, state-directed on x86-64: get a 2 MiB frame, map it (as one
    huge leaf or 512 small ones), then write, split, unmap, free tables, restrict table entries
    and touch as user or kernel."""
    root = state.mms[0]
    frames = [f for f in _frames(state) if f[1] == 9]
    va = st.just(0x7F0000000000)
    if not frames:
        return st.just(("alloc_data", (9,)))
    if not any(True for _ in paging._all_leaves(state)) and len(state.tables) < 4:
        return st.tuples(st.sampled_from(frames), va, st.booleans()).map(
            lambda a: ("map", (root, a[1], a[0][0], 0x200000, pte.PAGE_SHARED, 0x200000 if a[2] else None)))
    return st.one_of(
        st.tuples(st.just("touch"), st.tuples(st.just(root), va, st.builds(Access, op=st.sampled_from("rw"), user=st.booleans(), smap=st.just(False)))),
        st.tuples(st.just("split"), st.tuples(st.just(root), va)),
        st.tuples(st.just("unmap"), st.tuples(st.just(root), va, st.just(0x200000))),
        st.tuples(st.just("free_empty_tables"), st.just((root,))),
        st.tuples(st.just("protect_table"), st.tuples(st.just(root), va, st.sampled_from([2, 3, 4]), st.sampled_from([pte._PAGE_RW, 0]))),
        st.tuples(st.sampled_from(frames), va).map(lambda a: ("map", (root, a[1], a[0][0], 0x200000, pte.PAGE_SHARED, 0x200000))),
    )


HUGE, SMALLVA = 0x7F0000000000, 0x7F0000400000

#: Scenario table run in lockstep before the random hunt: each is a list of (op, args) on a
#: fresh x86-64 state with one 2 MiB data frame at pfn 512 (what the first alloc_data(9) gives).
SCENARIOS = (
    ("write a huge page, split it", [("alloc_data", (9,)), ("map", (0, HUGE, 512, 0x200000, pte.PAGE_SHARED, 0x200000)),
                                     ("touch", (0, HUGE, Access("w"))), ("split", (0, HUGE)), ("touch", (0, HUGE + 0x1000, Access("r")))]),
    ("user access under a supervisor-only PMD entry", [("alloc_data", (9,)), ("map", (0, HUGE, 512, 0x1000, pte.PAGE_SHARED)),
                                                       ("protect_table", (0, HUGE, 2, pte._PAGE_RW)), ("touch", (0, HUGE, Access("r")))]),
    ("unmap, free the tables, map again", [("alloc_data", (9,)), ("map", (0, HUGE, 512, 0x1000, pte.PAGE_SHARED)),
                                           ("unmap", (0, HUGE, 0x1000)), ("free_empty_tables", (0,)),
                                           ("map", (0, SMALLVA, 512, 0x1000, pte.PAGE_SHARED))]),
)


def run_scenarios() -> str | None:
    """Run every scenario on the spec and the impl side by side; the first disagreement as text."""
    from mmspec.machines import lockstep_scenario_step

    for title, ops in SCENARIOS:
        cfg = PagingConfig("x86-64-4level", SMALL)
        state, impl = paging.init(cfg), impl_factory(cfg)
        done: list[str] = []
        for op, args in ops:
            args = tuple(state.mms[0] if (a == 0 and k == 0 and op != "alloc_data") else a for k, a in enumerate(args))
            state, _, mismatch = lockstep_scenario_step(paging, state, impl, op, args, render, done, title)
            if mismatch:
                return mismatch
    return None


def catch() -> str | None:
    """The scenario table in lockstep, then a short random lockstep hunt on x86-64 with whatever
    defect is enabled: the first witness, or None."""
    from hypothesis import settings

    from mmspec.machines import catch_witness, lockstep_machine

    witness = run_scenarios()
    if witness:
        return witness
    machine = lockstep_machine("PagingDefectHunt", paging, impl_factory, st.just(PagingConfig("x86-64-4level", SMALL)),
                               hunt_steps, render)
    return catch_witness(machine, settings(max_examples=10, stateful_step_count=10, derandomize=True, database=None,
                                           deadline=None))
