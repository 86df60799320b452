"""The running kernel as an oracle for pages: demand paging, pagemap, fork and copy-on-write.

Each hand scenario is a program on a guarded window of the live kernel
(:mod:`mmspec.livekernel`) with what ``kernel-oracle.md`` recorded on this kernel (sections 2,
3, 4 and "Further observations") written next to its steps: the minor faults a step took
(``ru_minflt`` around one libc call), and per process the pagemap entry of each page as
``(present, exclusive, file, pfn_class)``, PFNs reduced to equality classes (``none``,
``zero``, ``P0``, ``P1`` … in first-seen order).  The kernel must show them; then
:mod:`spec.fault` runs the same program -- processes seeded with the window's layout, forks
and exits included -- and must agree with the kernel after every step on the return value,
the VMAs, the fault counts and the pagemap classes of every live process.

Randomly generated programs with forks (about 20 steps: mmap, mprotect, munmap, madvise,
mlock, touches by parent and children, exits) are compared the same way, step by step.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmspec import livekernel as lk
from mmspec import oracle_spec as osp
from mmspec.oracle_spec import M, scenario
from mmspec.profiles import by_profile
from mmspec.tally import tally
from spec.mman import (
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_WIPEONFORK,
    MAP_ANONYMOUS,
    MAP_FIXED_NOREPLACE,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
)

pytestmark = pytest.mark.layer("oracle")

R, RW = PROT_READ, PROT_READ | PROT_WRITE
PA = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
SA = MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
PF = MAP_PRIVATE | MAP_FIXED_NOREPLACE
SF = MAP_SHARED | MAP_FIXED_NOREPLACE
PAGES_FIELDS = ("ret", "maps", "vmflags", "minflt", "pagemap")
SEC2, SEC3, SEC4 = (f"kernel-oracle.md section {n}" for n in (2, 3, 4))
FURTHER = "kernel-oracle.md Further observations"


def W(off, n):
    return ("touch", off, n, True)


def Rd(off, n):
    return ("touch", off, n, False)


def fresh(p):
    return (1, 1, 0, p)


ZERO, NONE = (1, 0, 0, "zero"), (0, 0, 0, "none")


def _thp_mode():
    if lk.unavailable():  # not a host the oracle runs on: the tests skip before they run
        return None
    return lk.host_config()["thp_enabled"]


# ---------------------------------------------------------------- section 2: demand paging

DEMAND = [
    scenario("write-64", "demand-paging", ("mmap", 0, 64, RW, PA),
             (W(0, 64), {"minflt": 64, "pagemap": {0: fresh("P0"), 63: fresh("P63")}}),
             (W(0, 64), {"minflt": 0}), pages=64, fields=PAGES_FIELDS, source=SEC2),
    scenario("read-then-write-64", "demand-paging", ("mmap", 0, 64, RW, PA),
             (Rd(0, 64), {"minflt": 64, "pagemap": {0: ZERO, 63: ZERO}}),
             (W(0, 64), {"minflt": 64, "pagemap": {0: fresh("P0"), 63: fresh("P63")}}),
             (Rd(0, 64), {"minflt": 0}), pages=64, fields=PAGES_FIELDS, source=SEC2),
    scenario("dontneed-64", "demand-paging", ("mmap", 0, 64, RW, PA), W(0, 64),
             (("madvise", 0, 64, MADV_DONTNEED), {"ret": 0, "pagemap": {0: NONE, 63: NONE}}),
             (W(0, 64), {"minflt": 64}), pages=64, fields=PAGES_FIELDS, source=SEC2),
    scenario("map-populate", "demand-paging",
             (("mmap", 0, 64, RW, PA | MAP_POPULATE),
              {"minflt": 64, "pagemap": {0: fresh("P0"), 63: fresh("P63")}}),
             (W(0, 64), {"minflt": 0}), pages=64, fields=PAGES_FIELDS, source=SEC2),
    scenario("map-populate-readonly", "demand-paging",
             (("mmap", 0, 64, R, PA | MAP_POPULATE), {"minflt": 64, "pagemap": {0: ZERO, 63: ZERO}}),
             pages=64, fields=PAGES_FIELDS, source=SEC2),
    scenario("madv-populate-write", "demand-paging", ("mmap", 0, 64, RW, PA),
             (("madvise", 0, 64, MADV_POPULATE_WRITE),
              {"ret": 0, "minflt": 64, "pagemap": {0: fresh("P0")}}),
             pages=64, fields=PAGES_FIELDS, source=SEC2),
    scenario("madv-populate-read", "demand-paging", ("mmap", 0, 64, RW, PA),
             (("madvise", 0, 64, MADV_POPULATE_READ), {"ret": 0, "minflt": 64, "pagemap": {0: ZERO}}),
             pages=64, fields=PAGES_FIELDS, source=SEC2),
    scenario("shmem-fault-around", "demand-paging", ("mmap", 0, 8, RW, SA), W(0, 8), ("fork",),
             (("in", 1, Rd(0, 1)), {"minflt": 1, "pagemaps": {1: {0: (1, 0, 1, "P0"),
                                                                   1: (1, 0, 1, "P1")}}}),
             fields=PAGES_FIELDS, source=FURTHER + " (fault-around on shared anonymous memory)"),
    scenario("memfd-fault-around", "demand-paging", ("mmap_file", 0, 8, RW, SF, 0, 0), W(0, 8),
             ("munmap", 0, 8), ("mmap_file", 0, 8, R, SF, 0, 0),
             # unmapped frames are forgotten, so the cached pages come back as new classes
             (Rd(0, 1), {"minflt": 1, "pagemap": {0: (1, 1, 1, "P8"), 7: (1, 1, 1, "P15")}}),
             fields=PAGES_FIELDS, source=FURTHER + " (fault-around on memfd pages in the cache)"),
    scenario("private-anon-no-fault-around", "demand-paging", ("mmap", 0, 8, RW, PA),
             (W(0, 8), {"minflt": 8}), ("madvise", 0, 8, MADV_DONTNEED),
             (Rd(0, 1), {"minflt": 1, "pagemap": {0: ZERO, 1: NONE}}),
             fields=PAGES_FIELDS, source=FURTHER + " (never on private anonymous memory)"),
]

THP = [
    scenario("thp-none", "demand-paging", ("mmap", 0, 512, RW, PA),
             (W(0, 512), {"minflt": 512}), pages=512, fields=PAGES_FIELDS, source=SEC2),
    scenario("thp-nohugepage", "demand-paging", ("mmap", 0, 512, RW, PA),
             ("madvise", 0, 512, MADV_NOHUGEPAGE),
             (W(0, 512), {"minflt": 512}), pages=512, fields=PAGES_FIELDS, source=SEC2),
    scenario("thp-hugepage", "demand-paging", ("mmap", 0, 512, RW, PA),
             ("madvise", 0, 512, MADV_HUGEPAGE),
             (W(0, 512), {"minflt": 512 if _thp_mode() == "never" else 1}),
             pages=512, fields=PAGES_FIELDS, source=SEC2 + " (one fault per 2 MiB THP)"),
]

# ---------------------------------------------------------------- section 3: pagemap

PAGEMAP = [
    scenario("pagemap-bits", "pagemap", ("mmap", 0, 4, RW, PA), W(0, 1),
             (Rd(1, 1), {"pagemap": {0: fresh("P0"), 1: ZERO, 2: NONE, 6: NONE}}),
             fields=PAGES_FIELDS, source=SEC3),
    scenario("pagemap-file-bit", "pagemap", ("mmap", 0, 2, RW, SA), ("mmap_file", 2, 2, RW, SF, 0, 0),
             ("mmap_file", 4, 2, RW, PF, 1, 0), W(0, 1), W(2, 1), Rd(4, 1),
             (W(5, 1), {"pagemap": {0: (1, 1, 1, "P0"), 2: (1, 1, 1, "P1"), 4: (1, 1, 1, "P2"),
                                     5: fresh("P3")}}),
             fields=PAGES_FIELDS, source=SEC3 + " (file bit: file and shared-anonymous pages)"),
    scenario("pagemap-mprotect-none", "pagemap", ("mmap", 0, 4, RW, PA), W(0, 4),
             (("mprotect", 0, 2, PROT_NONE), {"pagemap": {0: fresh("P0"), 2: fresh("P2")}}),
             fields=PAGES_FIELDS, source="PROT_NONE keeps the pages present"),
]

# ---------------------------------------------------------------- section 4: fork and COW


def _cow_setup():
    return (("mmap", 0, 2, RW, PA), W(0, 1), Rd(1, 1))


COW = [
    scenario("S1-child-writes-first", "cow-fork", *_cow_setup(),
             (("fork",), {"pagemaps": {0: {0: (1, 0, 0, "P0"), 1: ZERO},
                                       1: {0: (1, 0, 0, "P0"), 1: ZERO}}}),
             (("in", 1, W(0, 1)), {"minflt": 1, "pagemaps": {0: {0: fresh("P0")},
                                                              1: {0: fresh("P1")}}}),
             (("in", 0, W(0, 1)), {"minflt": 1, "pagemaps": {0: {0: fresh("P0")}}}),
             fields=PAGES_FIELDS, source=SEC4 + " S1"),
    scenario("S2-parent-writes-first", "cow-fork", *_cow_setup(), ("fork",),
             (W(0, 1), {"minflt": 1, "pagemaps": {0: {0: fresh("P1")}, 1: {0: fresh("P0")}}}),
             (("in", 1, W(0, 1)), {"minflt": 1, "pagemaps": {1: {0: fresh("P0")}}}),
             fields=PAGES_FIELDS, source=SEC4 + " S2"),
    scenario("S3-child-exits", "cow-fork", *_cow_setup(), ("fork",),
             (("exit", 1), {"pagemaps": {0: {0: fresh("P0")}}}),
             (W(0, 1), {"minflt": 1, "pagemaps": {0: {0: fresh("P0")}}}),
             fields=PAGES_FIELDS, source=SEC4 + " S3"),
    scenario("zero-page-child-write", "cow-fork", *_cow_setup(), ("fork",),
             (("in", 1, W(1, 1)), {"minflt": 1, "pagemaps": {0: {1: ZERO}, 1: {1: fresh("P1")}}}),
             fields=PAGES_FIELDS, source=SEC4),
    scenario("wipeonfork", "cow-fork", ("mmap", 0, 2, RW, PA), W(0, 2),
             ("madvise", 0, 2, MADV_WIPEONFORK),
             (("fork",), {"pagemaps": {1: {0: NONE, 1: NONE}}}),
             (("in", 1, Rd(0, 1)), {"minflt": 1, "pagemaps": {1: {0: ZERO}}}),
             fields=PAGES_FIELDS, source=SEC4 + " (WIPEONFORK)"),
    scenario("dontfork", "cow-fork", ("mmap", 0, 2, RW, PA), W(0, 2),
             ("madvise", 0, 2, MADV_DONTFORK),
             (("fork",), {"procs": {0: M("0-2 rw-p"), 1: []}}),
             (("in", 1, W(0, 1)), {"ret": "SIGSEGV"}),
             ("madvise", 0, 2, MADV_DOFORK),
             fields=PAGES_FIELDS, source=SEC4 + " (DONTFORK)"),
    scenario("fork-copies-only-anon-vma-ptes", "cow-fork", ("mmap", 0, 2, RW, SA), W(0, 2),
             ("mmap_file", 2, 2, RW, SF, 0, 0), W(2, 2), ("mmap", 4, 2, R, PA), Rd(4, 2),
             (("fork",), {"pagemaps": {1: {0: NONE, 2: NONE, 4: NONE}, 0: {4: ZERO}}}),
             (("in", 1, W(0, 1)), {"minflt": 1, "pagemaps": {1: {0: (1, 0, 1, "P0")}}}),
             fields=PAGES_FIELDS, source=FURTHER + " (fork copies PTEs only where an anon_vma is)"),
    scenario("exclusive-still-write-protected", "cow-fork", ("mmap", 0, 1, RW, PA), W(0, 1),
             ("fork",), ("exit", 1),
             (W(0, 1), {"minflt": 1, "pagemaps": {0: {0: fresh("P0")}}}),
             (W(0, 1), {"minflt": 0}),
             fields=PAGES_FIELDS, source=FURTHER + " (exclusive is not writable)"),
    scenario("mlock-after-fork", "cow-fork", ("mmap", 0, 4, RW, PA), W(0, 4), ("fork",),
             (("mlock", 0, 4), {"ret": 0, "minflt": 4}),
             fields=PAGES_FIELDS, source=FURTHER + " (mlock after a fork faults each page)"),
    scenario("shared-stays-shared", "cow-fork", ("mmap", 0, 1, RW, SA), W(0, 1), ("fork",),
             (("in", 1, W(0, 1)), {"minflt": 1, "pagemaps": {0: {0: (1, 0, 1, "P0")},
                                                              1: {0: (1, 0, 1, "P0")}}}),
             fields=PAGES_FIELDS, source=SEC4 + " (MAP_SHARED stays shared)"),
]

SCENARIOS = DEMAND + PAGEMAP + COW
#: scenarios the kernel must show but the spec is not asked to reproduce, with the reason
NOT_MODELLED = {
    "thp-hugepage": "spec.fault does not model transparent huge pages (its docstring: one "
                    "4 KiB page per PTE)",
}


def skip_unless_available(family=None):
    reason = lk.unavailable()
    if reason:
        if family:
            osp.record(family, osp.SKIPPED, reason)
        pytest.skip(reason)


@pytest.mark.parametrize("sc", SCENARIOS + THP, ids=[s.name for s in SCENARIOS + THP])
def test_scenario(sc):
    skip_unless_available(sc.family)
    if sc.name == "thp-hugepage" and _thp_mode() not in ("madvise", "always"):
        osp.record(sc.family, osp.SKIPPED, f"THP mode is {_thp_mode()!r}")
        pytest.skip(f"THP mode is {_thp_mode()!r}: MADV_HUGEPAGE does not give a huge page")
    if sc.name in NOT_MODELLED:
        run = lk.run(sc.program, **sc.options)
        problems = osp.check_reference(run, sc.expect)
        assert not problems, "\n".join(problems)
        tally("cases", sum(1 for want in sc.expect if want))
        osp.record(sc.family, osp.SKIPPED, NOT_MODELLED[sc.name])
        tally("uncompared")
        return
    _, divergence = osp.run_scenario(sc)
    assert divergence is None, divergence


# ---------------------------------------------------------------- random programs with fork

PAGES = 16
_off = st.integers(0, PAGES - 1)
_n = st.integers(1, 4)
_prot = st.sampled_from([R, RW, RW, RW, PROT_NONE])
_mflags = st.sampled_from([PA, PA, PA, SA, PA | MAP_POPULATE])
_advice = st.sampled_from([MADV_DONTNEED, MADV_DONTFORK, MADV_WIPEONFORK, MADV_POPULATE_WRITE,
                           MADV_POPULATE_READ])


def _clip(step):
    op = step[0]
    if op in ("mmap", "mmap_file", "munmap", "mprotect", "madvise", "mlock", "touch"):
        return (op, step[1], min(step[2], PAGES - step[1]), *step[3:])
    return step


_syscall = st.one_of(
    st.tuples(st.just("mmap"), _off, _n, _prot, _mflags),
    st.tuples(st.just("mmap_file"), _off, _n, st.sampled_from([R, RW]), st.sampled_from([PF, SF]),
              st.integers(0, 1), st.integers(0, 8)),
    st.tuples(st.just("munmap"), _off, _n),
    st.tuples(st.just("mprotect"), _off, _n, _prot),
    st.tuples(st.just("madvise"), _off, _n, _advice),
    st.tuples(st.just("mlock"), _off, _n),
).map(_clip)
_touch = st.tuples(st.just("touch"), _off, st.integers(1, 3), st.booleans()).map(_clip)


@st.composite
def fork_programs(draw):
    """A setup of a few mappings and touches, a fork, then parent and child acting in turn
    (touching more often than mapping), perhaps a second fork and an exit."""
    program = [draw(st.tuples(st.just("mmap"), st.integers(0, 8), st.integers(2, 8),
                              st.just(RW), st.just(PA)).map(_clip))]
    program += draw(st.lists(st.one_of(_touch, _touch, _syscall), min_size=1, max_size=5))
    program.append(("fork",))
    procs, alive = 2, {0, 1}
    for _ in range(draw(st.integers(4, 14))):
        choice = draw(st.integers(0, 9))
        if choice == 0 and procs < 3:
            who = draw(st.sampled_from(sorted(alive)))
            program.append(("fork",) if who == 0 else ("in", who, ("fork",)))
            alive.add(procs)
            procs += 1
            continue
        if choice == 1 and len(alive) > 1:
            who = draw(st.sampled_from(sorted(alive)))
            program.append(("exit", who))
            alive.discard(who)
            continue
        who = draw(st.sampled_from(sorted(alive)))
        step = draw(st.one_of(_touch, _touch, _touch, _syscall))
        program.append(step if who == 0 else ("in", who, step))
    return tuple(program)


@settings(max_examples=by_profile(15, 40, 300), deadline=None)
@given(program=fork_programs())
def test_random_fork_programs_agree_with_the_spec(program):
    """Random programs with forks: the spec agrees with the kernel on every step's return
    value, VMAs, fault counts and pagemap classes of every live process."""
    skip_unless_available("random-fault")
    run, _ = lk.stable_run(program)
    tally("cases")
    try:
        divergence = osp.compare("random-fault", run, fields=PAGES_FIELDS)
    except osp.SpecNotReady:
        tally("uncompared")
        return
    assert divergence is None, divergence
