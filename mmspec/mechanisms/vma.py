"""The VMA layer's registration: its modules, and how tests drive it.

``config`` draws small address spaces whose limits bite: a tiny ``max_map_count``, a stack
guard gap of a few pages, ``mmap_base`` just above the test window (so un-hinted mmaps land in
it), no CAP_IPC_LOCK with a small RLIMIT_MEMLOCK, overcommit mode 2 on a small machine.
``steps(state)`` draws system calls on a 48-page window, biased toward VMA boundaries (the
places where splits and merges happen), plus faults (which give VMAs anon_vmas and grow
stacks), brk, and forks that continue in the child.
"""

from __future__ import annotations

from hypothesis import strategies as st

from mmspec.registry import Mechanism
from spec import vma
from spec.mman import (
    MADV_DODUMP, MADV_DOFORK, MADV_DONTDUMP, MADV_DONTFORK, MADV_DONTNEED, MADV_FREE,
    MADV_HUGEPAGE, MADV_KEEPONFORK, MADV_MERGEABLE, MADV_NOHUGEPAGE, MADV_NORMAL,
    MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_RANDOM, MADV_REMOVE, MADV_SEQUENTIAL,
    MADV_WILLNEED, MADV_WIPEONFORK, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_GROWSDOWN,
    MAP_LOCKED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE, MAP_STACK,
    MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT, MREMAP_DONTUNMAP, MREMAP_FIXED,
    MREMAP_MAYMOVE, PROT_EXEC, PROT_READ, PROT_WRITE,
)
from spec.zone import PAGE_SIZE

MECHANISM = Mechanism(
    name="vma",
    title="VMAs and the address-space system calls (mm/vma.c, mm/mmap.c)",
    spec="spec.vma",
    impl="impl.vma",
    proofs="proofs.vma",
    explain="mmspec.explain.vma:explain",
    topics=("mmap",),
    doctest_modules=("spec.vma", "spec.vm_area", "spec.vma_merge", "spec.mmap_layout", "spec.overcommit",
                     "spec.mlock", "spec.mremap", "spec.vma_views"),
    contracts=("spec.vm_area", "spec.mmap_layout", "spec.overcommit"),
)

BASE = vma.WINDOW_BASE
WINDOW = 48  # pages
PG = PAGE_SIZE


@st.composite
def configs(draw) -> dict:
    """Settings for a small address space (a dict for :func:`spec.vma.new_mm`)."""
    cfg = {"start_brk": BASE + 64 * PG, "brk": BASE + 64 * PG + draw(st.sampled_from([0, 0, 100]))}
    cfg["mmap_base"] = draw(st.sampled_from([BASE + 40 * PG, BASE + 40 * PG, BASE + 1100 * PG, vma.MMAP_BASE_NORANDOM]))
    cfg["stack_guard_gap"] = draw(st.sampled_from([4 * PG, 4 * PG, 2 * PG, vma.STACK_GUARD_GAP]))
    if draw(st.integers(0, 2)) == 0:
        cfg["max_map_count"] = draw(st.integers(3, 10))
    if draw(st.integers(0, 2)) == 0:
        cfg["cap_ipc_lock"] = False
        cfg["rlimit_memlock"] = draw(st.sampled_from([0, 6 * PG, 16 * PG]))
    if draw(st.integers(0, 2)) == 0:
        cfg["overcommit_memory"] = draw(st.sampled_from([0, 1, 2]))
        cfg["totalram_pages"] = draw(st.sampled_from([40, 64, 200]))
        cfg["committed_base"] = draw(st.sampled_from([0, 5]))
        cfg["cap_sys_admin"] = draw(st.booleans())
    if draw(st.integers(0, 4)) == 0:
        cfg["cap_sys_rawio"] = False
        cfg["mmap_min_addr"] = 65536
    return cfg


config = configs()

PROTS = [PROT_READ | PROT_WRITE, PROT_READ | PROT_WRITE, PROT_READ, 0, PROT_READ | PROT_WRITE | PROT_EXEC,
         PROT_READ | PROT_EXEC, PROT_WRITE]
ANON = MAP_PRIVATE | MAP_ANONYMOUS
MAP_FLAGS = [
    ANON | MAP_FIXED_NOREPLACE, ANON | MAP_FIXED_NOREPLACE, ANON | MAP_FIXED, ANON, ANON,
    MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, ANON | MAP_FIXED_NOREPLACE | MAP_GROWSDOWN,
    ANON | MAP_GROWSDOWN, ANON | MAP_FIXED_NOREPLACE | MAP_LOCKED, ANON | MAP_FIXED_NOREPLACE | MAP_NORESERVE,
    ANON | MAP_FIXED_NOREPLACE | MAP_STACK, MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
    MAP_SHARED_VALIDATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, MAP_SHARED | MAP_ANONYMOUS | MAP_GROWSDOWN,
]
ADVICE = [MADV_DONTFORK, MADV_DOFORK, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_DONTNEED, MADV_FREE,
          MADV_WIPEONFORK, MADV_KEEPONFORK, MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED,
          MADV_DONTDUMP, MADV_DODUMP, MADV_MERGEABLE, MADV_POPULATE_READ, MADV_POPULATE_WRITE,
          MADV_REMOVE, 99]
REMAP = [0, MREMAP_MAYMOVE, MREMAP_MAYMOVE | MREMAP_FIXED, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, MREMAP_FIXED, 8]


def _points(state: vma.Mm):
    """Page offsets in the window worth aiming at: every VMA boundary and its neighbours."""
    pts = {0, 4, 8, 16}
    for v in state.vmas:
        for a in (v.start, v.end):
            p = (a - BASE) // PG
            if -4 <= p <= WINDOW + 8:
                pts.update({p - 1, p, p + 1})
    return sorted(p for p in pts if 0 <= p <= WINDOW + 8)


def steps(state: vma.Mm):
    """System calls for the state at hand, most of them meaningful, some wrong on purpose."""
    pt = st.sampled_from(_points(state))
    n = st.sampled_from([1, 1, 2, 3, 4, 8])
    addr = pt.map(lambda p: BASE + p * PG)
    length = n.map(lambda k: k * PG)
    choices = [
        (5, st.tuples(st.just("mmap"), st.tuples(addr, length, st.sampled_from(PROTS), st.sampled_from(MAP_FLAGS)))),
        (1, st.tuples(st.just("mmap"), st.tuples(st.sampled_from([0, BASE + 5, BASE + 3 * PG + 123]),
                                                  st.sampled_from([0, 5, 512 * PG, 2 * PG + 1]),
                                                  st.sampled_from(PROTS), st.sampled_from(MAP_FLAGS + [MAP_PRIVATE, 0])))),
        (1, st.tuples(st.just("mmap"), st.tuples(st.just(0), st.sampled_from([512 * PG, 1024 * PG]),
                                                  st.just(PROT_READ | PROT_WRITE), st.just(ANON)))),
        (3, st.tuples(st.just("munmap"), st.tuples(addr, length))),
        (4, st.tuples(st.just("mprotect"), st.tuples(addr, length, st.sampled_from(PROTS)))),
        (4, st.tuples(st.just("fault"), st.tuples(addr, st.booleans()))),
        (2, st.tuples(st.just("madvise"), st.tuples(addr, length, st.sampled_from(ADVICE)))),
        (2, st.tuples(st.just("mlock"), st.tuples(addr, length, st.sampled_from([0, 0, MLOCK_ONFAULT, 4])))),
        (1, st.tuples(st.just("munlock"), st.tuples(addr, length))),
        (2, st.tuples(st.just("mremap"), st.tuples(addr, length, length, st.sampled_from(REMAP), addr))),
        (1, st.tuples(st.just("brk"), st.tuples(st.sampled_from([0, 1, 4095, 4096, 3 * PG, -PG, -1, 40 * PG]).map(
            lambda d: state.brk + d)))),
        (1, st.tuples(st.just("mlockall"), st.tuples(st.sampled_from([MCL_CURRENT, MCL_FUTURE, MCL_CURRENT | MCL_ONFAULT,
                                                                      MCL_ONFAULT, 0, 8])))),
        (1, st.tuples(st.just("munlockall"), st.just(()))),
        (1, st.tuples(st.just("fork_child"), st.tuples(st.just(state.pid + 1)))),
        (1, st.tuples(st.sampled_from(["munmap", "mprotect", "madvise"]),
                      st.tuples(st.sampled_from([BASE + 1, BASE - PG, -PG]), st.sampled_from([0, -1, PG]),
                                st.sampled_from([0, 1, 3, 1 << 20]))).map(
            lambda t: (t[0], t[1][:2] if t[0] == "munmap" else t[1]))),
        (1, st.tuples(st.just("fault"), st.tuples(st.sampled_from(["x", None]), st.booleans()))),
    ]
    weighted = [s for weight, s in choices for _ in range(weight)]
    return st.one_of(*weighted)


def render(state: vma.Mm) -> str:
    return vma.render(state)


def impl_factory(cfg: dict):
    from impl.vma import VmaSpace

    return VmaSpace(cfg)


ANON_FIX = ANON | MAP_FIXED_NOREPLACE
RW = PROT_READ | PROT_WRITE

#: hand-written programs that reach each defect (kernel-oracle.md §1 D, H and N)
SCENARIOS = (
    ("two written halves rejoined (§1 D)", {}, (
        ("mmap", (BASE, 8 * PG, RW, ANON_FIX)), ("mprotect", (BASE + 3 * PG, 2 * PG, PROT_READ)),
        ("fault", (BASE, True)), ("fault", (BASE + 5 * PG, True)),
        ("mprotect", (BASE + 3 * PG, 2 * PG, RW)))),
    ("gap filled between written VMAs (§1 H)", {}, (
        ("mmap", (BASE, 4 * PG, RW, ANON_FIX)), ("mmap", (BASE + 6 * PG, 4 * PG, RW, ANON_FIX)),
        ("fault", (BASE, True)), ("fault", (BASE + 6 * PG, True)), ("mmap", (BASE + 4 * PG, 2 * PG, RW, ANON_FIX)))),
    ("stack grown toward the guard gap (§1 N)", {"stack_guard_gap": 4 * PG}, (
        ("mmap", (BASE, 2 * PG, RW, ANON_FIX)), ("mmap", (BASE + 12 * PG, 2 * PG, RW, ANON_FIX | MAP_GROWSDOWN)),
        ("fault", (BASE + 6 * PG, True)), ("fault", (BASE + 5 * PG, True)))),
)


def catch() -> str | None:
    """The hand-written scenarios step by step on spec and impl, then the random lockstep hunt;
    the first disagreement (maps of both sides and the offending step), or None."""
    from impl.vma import VmaSpace
    from mmspec.machines import catch_witness, lockstep_machine, lockstep_scenario_step

    for title, cfg, program in SCENARIOS:
        state, impl, done = vma.init(cfg), VmaSpace(cfg), []
        for op, args in program:
            state, _, mismatch = lockstep_scenario_step(vma, state, impl, op, args, render, done, title)
            if mismatch:
                return mismatch
    machine = lockstep_machine("VmaDefectHunt", vma, impl_factory, config, steps, render)
    return catch_witness(machine)
