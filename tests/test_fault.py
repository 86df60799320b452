"""Demand paging and copy-on-write: invariants, lockstep with the impl, the live kernel's
observations (kernel-oracle.md sections 2 to 4) worked out by hand, and bad input.

The state machines come from the shared harness fed with the strategies of
:mod:`mmspec.mechanisms.fault` (system calls on a 16-page window, accesses by every live
process, fork, exit, pins, forced writes).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from mmspec.machines import invariant_machine, lockstep_machine, run_machine
from mmspec.mechanisms import fault as reg
from mmspec.profiles import by_profile
from mmspec.tally import tally
from spec import fault as spec
from spec.errors import EAGAIN, EFAULT, EINVAL, ENOMEM, SIGBUS, SIGSEGV
from spec.fault import SEGV_ACCERR, SEGV_MAPERR, FaultConfig
from spec.mman import (
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_FREE,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_WIPEONFORK,
    MAP_ANONYMOUS,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_LOCKED,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MLOCK_ONFAULT,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
)
from spec.zone import PAGE_SIZE

FaultInvariants = invariant_machine("FaultInvariants", spec, reg.config, reg.steps, reg.render)
FaultLockstep = lockstep_machine("FaultLockstep", spec, reg.lockstep_factory, reg.config, reg.steps, reg.render)

P = PAGE_SIZE
BASE = reg.BASE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE


@pytest.mark.layer("invariants")
def test_invariants_hold_after_every_step():
    run_machine(FaultInvariants)


@pytest.mark.layer("lockstep")
def test_impl_agrees_with_spec_at_every_step():
    run_machine(FaultLockstep)


def check(s):
    """Every invariant of the spec holds in ``s``."""
    for name, fn, doc in __import__("mmspec.machines", fromlist=["x"]).spec_invariants(spec):
        assert fn(s), f"{name}: {doc}\n{spec.render(s)}"
    return s


def anon(n=64, prot=RW, flags=ANON, pages=256):
    s = spec.init(FaultConfig(pages))
    s, a = spec.mmap(s, 1, BASE, n * P, prot, flags)
    return s, a


def run(s, pid, op, a, n, *args):
    for i in range(n):
        s, _ = getattr(spec, op)(s, pid, a + i * P, *args)
    return s


def distinct(s, pid, a, n):
    return {spec.pfn_class(s, pid, a + i * P) for i in range(n)}


# --- kernel-oracle.md section 2: demand paging --------------------------------------------------


def test_write_64_fresh_pages_takes_64_faults_then_none():
    s, a = anon()
    s = check(run(s, 1, "touch", a, 64, True))
    assert s.procs[1].minflt == 64 and len(distinct(s, 1, a, 64)) == 64
    s = run(s, 1, "touch", a, 64, True)
    assert s.procs[1].minflt == 64


def test_read_maps_the_zero_page_then_write_faults_again():
    s, a = anon()
    s = check(run(s, 1, "touch", a, 64, False))
    assert s.procs[1].minflt == 64 and distinct(s, 1, a, 64) == {"zero"}
    assert s.procs[1].mm.vmas[0].anon_vma is None  # a read fault assigns no anon_vma
    s = check(run(s, 1, "touch", a, 64, True))
    assert s.procs[1].minflt == 128 and "zero" not in distinct(s, 1, a, 64)
    s = run(s, 1, "touch", a, 64, False)
    assert s.procs[1].minflt == 128


def test_dontneed_then_write_faults_and_reads_zero():
    s, a = anon()
    s = run(s, 1, "write", a, 64, 9)
    s, rc = spec.madvise(s, 1, a, 64 * P, MADV_DONTNEED)
    assert rc == 0 and distinct(s, 1, a, 64) == {"none"} and not s.frames
    assert spec.read(s, 1, a)[1] == 0
    s = check(run(s, 1, "touch", a, 64, True))
    assert s.procs[1].minflt == 128


@pytest.mark.parametrize("prot, classes", [(RW, 64), (PROT_READ, 1)])
def test_map_populate_faults_inside_mmap(prot, classes):
    s, a = anon(prot=prot, flags=ANON | MAP_POPULATE)
    assert s.procs[1].minflt == 64 and len(distinct(s, 1, a, 64)) == classes
    s = run(s, 1, "touch", a, 64, prot == RW)
    assert s.procs[1].minflt == 64


@pytest.mark.parametrize("advice, classes", [(MADV_POPULATE_WRITE, 64), (MADV_POPULATE_READ, 1)])
def test_madvise_populate(advice, classes):
    s, a = anon()
    s, rc = spec.madvise(s, 1, a, 64 * P, advice)
    assert rc == 0 and s.procs[1].minflt == 64 and len(distinct(s, 1, a, 64)) == classes


def test_madvise_populate_errnos():
    """Further observations: EINVAL without the permission, ENOMEM on a hole, EFAULT past EOF."""
    s, a = anon(4, prot=PROT_READ)
    with pytest.raises(EINVAL):
        spec.madvise(s, 1, a, 4 * P, MADV_POPULATE_WRITE)
    s, _ = spec.munmap(s, 1, a + 2 * P, P)
    with pytest.raises(spec.ENOMEM):
        spec.madvise(s, 1, a, 4 * P, MADV_POPULATE_READ)
    s, b = spec.mmap(s, 1, BASE + 32 * P, 12 * P, RW, MAP_SHARED | MAP_FIXED_NOREPLACE, 0, 0)
    with pytest.raises(EFAULT):
        spec.madvise(s, 1, b, 12 * P, MADV_POPULATE_READ)


def test_rss_and_pagemap_of_written_pages():
    s, a = anon()
    s = run(s, 1, "touch", a, 64, True)
    smaps = spec.smaps(s, 1)
    assert "Rss:                 256 kB\n" in smaps and "Anonymous:           256 kB\n" in smaps
    assert "VmRSS:\t     256 kB\n" in spec.status(s, 1)
    assert "AnonPages:           256 kB\n" in spec.meminfo(s)


def test_mlock_populates_and_onfault_does_not():
    s, a = anon(16)
    s, rc = spec.mlock(s, 1, a, 16 * P)
    assert rc == 0 and s.procs[1].minflt == 16
    assert "Locked:               64 kB\n" in spec.smaps(s, 1)
    t, a = anon(16)
    t, _ = spec.mlock2(t, 1, a, 16 * P, MLOCK_ONFAULT)
    assert t.procs[1].minflt == 0 and distinct(t, 1, a, 16) == {"none"}
    u, a = anon(64, flags=ANON | MAP_LOCKED)
    assert u.procs[1].minflt == 64 and "Locked:              256 kB\n" in spec.smaps(u, 1)
    v, a = anon(8, prot=PROT_READ)
    v, _ = spec.mlock(v, 1, a, 8 * P)  # read-only: the zero page, Rss 0
    assert distinct(v, 1, a, 8) == {"zero"} and "Rss:                   0 kB\n" in spec.smaps(v, 1)


# --- section 3: pagemap -----------------------------------------------------------------------


def test_pagemap_classes():
    s, a = anon(4)
    s, _ = spec.touch(s, 1, a, True)
    s, _ = spec.touch(s, 1, a + P, False)
    assert spec.pagemap(s, 1, a, 3)[:2] == [(1, 1, 0, spec.pfn_class(s, 1, a)), (1, 0, 0, "zero")]
    assert spec.pagemap_entry(s, 1, a + 2 * P) == 0 and spec.pagemap_entry(s, 1, a + 64 * P) == 0
    entry = spec.pagemap_entry(s, 1, a)
    assert entry >> 55 == 0x102 and f"P{spec.decode_pagemap(entry)[3]}" == spec.pfn_class(s, 1, a)


def test_shared_and_file_pages_set_the_file_bit():
    s, a = anon(2, flags=MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
    s, _ = spec.touch(s, 1, a, True)
    present, excl, file, _ = spec.pagemap(s, 1, a, 1)[0]
    assert (present, excl, file) == (1, 1, 1)
    assert "/dev/zero (deleted)" in spec.maps(s, 1)


# --- section 4: fork and copy-on-write --------------------------------------------------------


def forked():
    """The parent writes page 0 and read-faults page 1, then forks."""
    s, a = anon(4)
    s, _ = spec.write(s, 1, a, 1)
    s, _ = spec.touch(s, 1, a + P, False)
    s, child = spec.fork(s, 1)
    return check(s), a, child


def test_fork_shares_and_write_protects():
    s, a, c = forked()
    p0 = spec.pfn_class(s, 1, a)
    assert spec.pagemap(s, 1, a, 2) == [(1, 0, 0, p0), (1, 0, 0, "zero")] == spec.pagemap(s, c, a, 2)
    pfn = int(p0[1:])
    assert s.frames[pfn].refcount == s.frames[pfn].mapcount == 2
    assert not spec.pte_at(s, 1, a)[1] and not spec.pte_at(s, c, a)[1]


def test_s1_child_writes_first_then_parent_reuses():
    s, a, c = forked()
    p0 = spec.pfn_class(s, 1, a)
    s, kind = spec.write(s, c, a, 2)
    assert kind == "cow-copy" and s.procs[c].minflt == 1
    assert spec.pagemap(s, 1, a, 1) == [(1, 1, 0, p0)] and spec.pagemap(s, c, a, 1)[0][:2] == (1, 1)
    assert spec.pfn_class(s, c, a) != p0
    s, kind = spec.write(s, 1, a, 3)
    assert kind == "reuse" and spec.pfn_class(s, 1, a) == p0 and s.procs[1].minflt == 3
    assert (spec.read(check(s), 1, a)[1], spec.read(s, c, a)[1]) == (3, 2)


def test_s2_parent_writes_first_then_child_reuses():
    s, a, c = forked()
    p0 = spec.pfn_class(s, 1, a)
    s, kind = spec.write(s, 1, a, 2)
    assert kind == "cow-copy" and spec.pfn_class(s, 1, a) != p0 and spec.pagemap(s, c, a, 1) == [(1, 1, 0, p0)]
    s, kind = spec.write(s, c, a, 3)
    assert kind == "reuse" and spec.pfn_class(s, c, a) == p0
    check(s)


def test_s3_child_exits_then_parent_reuses():
    s, a, c = forked()
    p0 = spec.pfn_class(s, 1, a)
    s, _ = spec.exit(s, c)
    assert s.frames[int(p0[1:])].refcount == 1
    s, kind = spec.write(s, 1, a, 5)
    assert kind == "reuse" and spec.pfn_class(s, 1, a) == p0


def test_zero_page_write_in_the_child():
    s, a, c = forked()
    s, kind = spec.write(s, c, a + P, 4)
    assert kind == "cow-zero" and spec.pfn_class(s, 1, a + P) == "zero"
    assert spec.pagemap(s, c, a + P, 1)[0][:2] == (1, 1)


def test_wipeonfork_and_dontfork():
    s, a = anon(4)
    s = run(s, 1, "write", a, 4, 7)
    s, _ = spec.madvise(s, 1, a, P, MADV_WIPEONFORK)
    s, _ = spec.madvise(s, 1, a + 2 * P, P, MADV_DONTFORK)
    s, c = spec.fork(check(s), 1)
    assert spec.pagemap(s, c, a, 1) == [(0, 0, 0, "none")] and spec.read(s, c, a)[1] == 0
    assert spec.read(s, c, a + P)[1] == 7
    assert spec.maps(s, c).count("\n") == spec.maps(s, 1).count("\n") - 1
    with pytest.raises(SIGSEGV):
        spec.touch(s, c, a + 2 * P, False)


def test_fork_copies_ptes_only_for_private_vmas_with_an_anon_vma():
    s, a = anon(2)
    s, _ = spec.touch(s, 1, a, False)  # zero page only: no anon_vma
    s, b = spec.mmap(s, 1, BASE + 8 * P, 2 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
    s, _ = spec.write(s, 1, b, 3)
    s, c = spec.fork(s, 1)
    assert spec.pfn_class(s, c, a) == "none" and spec.pfn_class(s, c, b) == "none"
    s, kind = spec.read(s, c, b)
    assert kind == 3  # the shared page is found in the page cache
    s, _ = spec.write(s, c, b, 4)
    assert spec.read(check(s), 1, b)[1] == 4  # MAP_SHARED stays shared


def test_private_file_mapping_copies_on_write_from_the_page_cache():
    s = spec.init()
    s, a = spec.mmap(s, 1, BASE, 4 * P, RW, MAP_PRIVATE | MAP_FIXED_NOREPLACE, 0, 0)
    s, b = spec.mmap(s, 1, BASE + 16 * P, 4 * P, RW, MAP_SHARED | MAP_FIXED_NOREPLACE, 0, 0)
    s, _ = spec.write(s, 1, b, 5)
    s, value = spec.read(s, 1, a)
    assert value == 5  # not yet copied: the private mapping maps the page-cache page
    s, kind = spec.write(s, 1, a, 6)
    assert kind == "cow-copy" and spec.read(s, 1, b)[1] == 5
    t, a2 = spec.mmap(s, 1, BASE + 32 * P, 4 * P, RW, MAP_PRIVATE | MAP_FIXED_NOREPLACE, 0, 1)
    t, kind = spec.write(t, 1, a2, 7)
    assert kind == "file-cow"  # do_cow_fault: copied straight from the page cache
    check(s)


def test_fault_around_maps_cached_neighbours_of_a_file():
    s = spec.init()
    s, a = spec.mmap(s, 1, BASE, 8 * P, RW, MAP_SHARED | MAP_FIXED_NOREPLACE, 0, 0)
    s = run(s, 1, "touch", a, 3, True)
    s, _ = spec.munmap(s, 1, a, 8 * P)
    s, a = spec.mmap(s, 1, BASE, 8 * P, PROT_READ, MAP_PRIVATE | MAP_FIXED_NOREPLACE, 0, 0)
    s, kind = spec.touch(s, 1, a + 2 * P, False)
    assert kind == "fault-around" and [e[0] for e in spec.pagemap(s, 1, a, 4)] == [1, 1, 1, 0]
    t, b = anon(8)
    t, _ = spec.write(t, 1, b, 1)
    t, _ = spec.touch(t, 1, b + P, False)
    assert spec.pagemap(t, 1, b + 2 * P, 1)[0][0] == 0  # never on private anonymous memory


def test_major_faults_for_a_regular_file_minor_for_shmem():
    s = spec.init()
    s, a = spec.mmap(s, 1, BASE, 4 * P, PROT_READ, MAP_PRIVATE | MAP_FIXED_NOREPLACE, 1, 0)
    s, _ = spec.touch(s, 1, a, False)
    assert (s.procs[1].majflt, s.procs[1].minflt) == (1, 0)
    s, _ = spec.mmap(s, 1, BASE + 16 * P, 4 * P, PROT_READ, MAP_PRIVATE | MAP_FIXED_NOREPLACE, 1, 0)
    s, _ = spec.touch(s, 1, BASE + 16 * P, False)
    assert (s.procs[1].majflt, s.procs[1].minflt) == (1, 1)  # now in the page cache
    s, _ = spec.mmap(s, 1, BASE + 32 * P, 4 * P, PROT_READ, MAP_PRIVATE | MAP_FIXED_NOREPLACE, 0, 0)
    s, _ = spec.touch(s, 1, BASE + 32 * P, False)
    assert (s.procs[1].majflt, s.procs[1].minflt) == (1, 2)


def test_signals():
    s, a = anon(2, prot=PROT_READ)
    with pytest.raises(SIGSEGV) as e:
        spec.touch(s, 1, a + 4 * P, False)
    assert e.value.si_code == SEGV_MAPERR
    with pytest.raises(SIGSEGV) as e:
        spec.write(s, 1, a, 1)
    assert e.value.si_code == SEGV_ACCERR
    s, b = spec.mmap(s, 1, BASE + 32 * P, 12 * P, RW, MAP_SHARED | MAP_FIXED_NOREPLACE, 0, 0)
    with pytest.raises(SIGBUS):
        spec.touch(s, 1, b + 8 * P, False)


def test_stack_grows_down_to_the_faulting_page():
    s = spec.init()
    s, a = spec.mmap(s, 1, BASE + 300 * P, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_FIXED_NOREPLACE)
    s, _ = spec.touch(s, 1, a - 101 * P + 5, True)
    assert s.procs[1].mm.vmas[0].start == a - 101 * P
    check(s)


def test_forced_write_never_reaches_the_page_cache():
    """Dirty COW's invariant: a FOLL_FORCE write to a private read-only file mapping makes an
    anonymous copy; the file is unchanged for everyone."""
    s = spec.init()
    s, a = spec.mmap(s, 1, BASE, 4 * P, PROT_READ, MAP_PRIVATE | MAP_FIXED_NOREPLACE, 0, 0)
    s, b = spec.mmap(s, 1, BASE + 16 * P, 4 * P, PROT_READ, MAP_SHARED | MAP_FIXED_NOREPLACE, 0, 0)
    s, _ = spec.touch(s, 1, a, False)
    s, kind = spec.write_forced(s, 1, a, 7)
    assert kind == "cow-copy" and spec.read(s, 1, a)[1] == 7 and spec.read(s, 1, b)[1] == 0
    assert not spec.pte_at(s, 1, a)[1]  # the copy stays read-only
    s, _ = spec.madvise(s, 1, a, P, MADV_DONTNEED)
    assert spec.read(check(s), 1, a)[1] == 0
    with pytest.raises(EFAULT):
        spec.write_forced(s, 1, b, 1)  # FOLL_FORCE never writes a shared read-only mapping


def test_pin_before_fork_is_copied_for_the_child():
    """CVE-2020-29374's fix: the pinned page stays the parent's; the child gets a copy."""
    s, a = anon(2)
    s, _ = spec.write(s, 1, a, 1)
    s, _ = spec.pin(s, 1, a, True)
    s, c = spec.fork(s, 1)
    assert spec.pfn_class(s, 1, a) != spec.pfn_class(s, c, a)
    s, kind = spec.write(s, 1, a, 2)
    assert kind == ""  # still writable and exclusive in the parent
    s, _ = spec.write_pin(s, 1, a, 3)
    assert (spec.read(check(s), 1, a)[1], spec.read(s, c, a)[1]) == (3, 1)


def test_read_pin_of_a_shared_page_unshares_it():
    """The vmsplice shape: the child R/O-pins a COW-shared page, unmaps it; the parent's write
    must not reach the pinned page."""
    s, a, c = forked()
    s, _ = spec.pin(s, c, a, False)
    assert spec.pfn_class(s, c, a) != spec.pfn_class(s, 1, a)  # unshared for the pinner
    s, _ = spec.munmap(s, c, a, P)
    s, kind = spec.write(s, 1, a, 9)
    assert kind == "reuse"
    pinned = s.pins[0].pfn
    assert s.frames[pinned].data == 1
    check(s)


def test_read_pin_in_a_cow_mapping_unshares_page_cache_and_zero_pages():
    """Linux v6.2 (84209e87c696): R/O long-term pins in COW mappings pin an exclusive anonymous
    copy, so a later write by the process cannot detach the pin; in a shared mapping the
    page-cache page itself is pinned."""
    s = spec.init()
    s, a = spec.mmap(s, 1, BASE, 4 * P, RW, MAP_PRIVATE | MAP_FIXED_NOREPLACE, 0, 0)
    s, b = spec.mmap(s, 1, BASE + 16 * P, 4 * P, RW, MAP_SHARED | MAP_FIXED_NOREPLACE, 0, 0)
    s, _ = spec.touch(s, 1, a, False)
    s, _ = spec.pin(s, 1, a, False)
    f = s.frames[s.pins[0].pfn]
    assert f.kind == "anon" and f.exclusive and s.procs[1].mm.vmas[0].anon_vma is not None
    s, _ = spec.pin(s, 1, b, False)
    assert s.frames[s.pins[1].pfn].kind == "file"
    s, kind = spec.write(s, 1, a, 3)
    assert kind == "reuse" and s.pins[0].coherent
    t, c = anon(2)
    t, _ = spec.touch(t, 1, c, False)
    t, _ = spec.pin(t, 1, c, False)
    assert spec.pfn_class(t, 1, c) != "zero"
    check(s), check(t)


def test_views_are_byte_exact():
    s, a = anon(2)
    s, _ = spec.write(s, 1, a, 1)
    block = spec.smaps(s, 1).splitlines()
    assert block[1] == "Size:                  8 kB" and block[4] == "Rss:                   4 kB"
    assert block[-2] == "THPeligible:           0" and block[-1] == "VmFlags: rd wr mr mw me ac "
    assert spec.status(s, 1).splitlines()[0] == "VmLck:\t       0 kB"


# --- bad input ---------------------------------------------------------------------------------


def _bad():
    return [
        ("touch", (99, BASE, False), EINVAL),
        ("touch", (1, BASE, 1), EINVAL),
        ("write", (1, BASE, "x"), EINVAL),
        ("touch", (1, 0, False), SIGSEGV),
        ("touch", (1, BASE + 100 * P, False), SIGSEGV),
        ("write", (1, BASE + 2 * P, 1), SIGSEGV),
        ("unpin", (1, BASE), EINVAL),
        ("write_pin", (1, BASE, 1), EINVAL),
        ("mmap", (1, BASE, 0, RW, ANON), EINVAL),
        ("mmap", (1, BASE, P, RW, MAP_SHARED | MAP_FIXED_NOREPLACE, 9), EINVAL),
        ("fork", (5,), EINVAL),
        ("exit", (5,), EINVAL),
        ("pin", (1, BASE + 2 * P, True), EFAULT),
    ]


@pytest.mark.parametrize("case", range(13))
def test_bad_input_raises_a_typed_error_and_changes_nothing(case):
    op, args, error = _bad()[case]
    s, a = anon(2)
    s, _ = spec.mmap(s, 1, BASE + 2 * P, P, PROT_READ, ANON)
    s, _ = spec.write(s, 1, a, 1)
    with pytest.raises(error):
        getattr(spec, op)(s, *args)
    impl = reg.impl_factory(FaultConfig(256))
    impl.mmap(1, BASE, 2 * P, RW, ANON)
    impl.mmap(1, BASE + 2 * P, P, PROT_READ, ANON)
    impl.write(1, a, 1)
    before = impl.abstract()
    assert before == s
    with pytest.raises(error):
        getattr(impl, op)(*args)
    assert impl.abstract() == before


# --- the impl's batch ---------------------------------------------------------------------------


@pytest.mark.parametrize("write", [True, False])
def test_touch_many_agrees_with_the_spec(write):
    s, a = anon(40, pages=256)
    s = run(s, 1, "touch", a, 3, True)
    impl = reg.impl_factory(FaultConfig(256))
    impl.mmap(1, BASE, 40 * P, RW, ANON)
    for i in range(3):
        impl.touch(1, a + i * P, True)
    addrs = [a + i * P for i in range(40)] + [a + 5 * P + 8]
    out = impl.touch_many(1, np.array(addrs), write)
    for va in addrs:
        s, _ = spec.touch(s, 1, va, write)
    assert impl.abstract() == s
    assert out.tolist() == [0, 0, 0] + [1] * 37 + [0]


def test_explain_fault_walks_demand_paging_and_fork_walks_copy_on_write():
    from mmspec.explain.fault import explain

    paging, cow = explain(seed=1, topic="fault"), explain(seed=1, topic="fork")
    assert paging == explain(seed=1) == explain(seed=1, topic="fault") and cow == explain(seed=1, topic="fork")
    assert "zero page" in paging and "major fault" in paging and "fork()" not in paging
    assert "cow-copy" in cow and "reuse" in cow and "write-protects" in cow and "do_anonymous_page" not in cow
    with pytest.raises(TypeError):
        explain(seed=1, topic="tlb")


@pytest.mark.layer("doctests")
def test_docs_page_examples_run():
    """Every >>> example of docs/fault.md runs and prints what the page says."""
    import doctest
    from pathlib import Path

    from mmspec.tally import tally

    page = Path(__file__).resolve().parent.parent / "docs" / "fault.md"
    result = doctest.testfile(str(page), module_relative=False, report=True, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in docs/fault.md failed"
    tally("examples", result.attempted)


# --- failures part way: error.partial -----------------------------------------------------------

SA = MAP_SHARED | MAP_FIXED_NOREPLACE


def both(*ops, cfg=FaultConfig(256)):  # noqa: B008 - an immutable default
    """The same calls on the spec and the impl: (spec state, impl)."""
    s, impl = spec.init(cfg), reg.impl_factory(cfg)
    for op, *args in ops:
        s, _ = getattr(spec, op)(s, *args)
        getattr(impl, op)(*args)
    assert impl.abstract() == s
    return s, impl


def fails_part_way(s, impl, error, op, *args):
    """``op`` raises ``error`` on both sides, changes neither, and both report the same state
    left part way (``error.partial``), in which every invariant holds; returns it."""
    with pytest.raises(error) as e:
        getattr(spec, op)(s, *args)
    partial = check(e.value.partial)
    before = impl.abstract()
    with pytest.raises(error) as f:
        getattr(impl, op)(*args)
    assert impl.abstract() == before == s
    assert f.value.partial == partial
    return partial


def present(s, pages, pid=1):
    return [spec.pagemap(s, pid, BASE + i * P, 1)[0][0] for i in pages]


def test_populate_write_stops_at_a_hole_with_the_pages_before_populated():
    """The oracle's example: mmap(2, 2, RW), madvise(3, 3, POPULATE_WRITE): 1 fault, page 3
    present, ENOMEM (faultin_page_range returns the pages done; madvise_populate's next call
    meets the hole: vma_lookup() is NULL, -ENOMEM)."""
    s, impl = both(("mmap", 1, BASE + 2 * P, 2 * P, RW, ANON))
    partial = fails_part_way(s, impl, ENOMEM, "madvise", 1, BASE + 3 * P, 3 * P, MADV_POPULATE_WRITE)
    assert present(partial, range(2, 6)) == [0, 1, 0, 0] and partial.procs[1].minflt == 1


def test_populate_write_stops_at_a_vma_without_write_permission():
    """check_vma_flags refuses FOLL_WRITE on a VMA without VM_WRITE: EINVAL after the RW pages."""
    s, impl = both(("mmap", 1, BASE, 2 * P, RW, ANON), ("mmap", 1, BASE + 2 * P, 2 * P, PROT_READ, ANON))
    partial = fails_part_way(s, impl, EINVAL, "madvise", 1, BASE, 4 * P, MADV_POPULATE_WRITE)
    assert present(partial, range(4)) == [1, 1, 0, 0] and partial.procs[1].minflt == 2


def test_populate_read_refuses_a_write_only_vma_at_once():
    """No FOLL_FORCE for MADV_POPULATE_READ: a PROT_WRITE VMA (no VM_READ) is EINVAL at its
    first page, so nothing is done (the partial state is the state before)."""
    s, impl = both(("mmap", 1, BASE, 2 * P, PROT_WRITE, ANON))
    assert fails_part_way(s, impl, EINVAL, "madvise", 1, BASE, 2 * P, MADV_POPULATE_READ) == s


def test_populate_read_past_the_end_of_a_file_is_efault_after_the_pages_inside():
    """A memfd of 8 pages mapped from page 6: pages 6 and 7 fault in, page 8 is SIGBUS, which
    GUP reports as EFAULT."""
    s, impl = both(("mmap", 1, BASE, 4 * P, RW, SA, 0, 6))
    partial = fails_part_way(s, impl, EFAULT, "madvise", 1, BASE, 4 * P, MADV_POPULATE_READ)
    assert present(partial, range(4)) == [1, 1, 0, 0] and partial.procs[1].minflt == 2


def test_mlock_populates_up_to_a_prot_none_vma_then_enomem():
    """__mm_populate: the RW VMA is populated (2 faults), then GUP refuses the PROT_NONE VMA
    (EFAULT, which __mlock_posix_error_return makes ENOMEM); both VMAs stay locked."""
    s, impl = both(("mmap", 1, BASE, 2 * P, RW, ANON), ("mmap", 1, BASE + 2 * P, 2 * P, PROT_NONE, ANON))
    partial = fails_part_way(s, impl, ENOMEM, "mlock", 1, BASE, 4 * P)
    assert present(partial, range(4)) == [1, 1, 0, 0] and partial.procs[1].minflt == 2
    assert all(v.flags & spec.VM_LOCKED for v in partial.procs[1].mm.vmas)
    t, impl = both(("mmap", 1, BASE, 2 * P, PROT_NONE, ANON), ("mmap", 1, BASE + 2 * P, 2 * P, RW, ANON))
    partial = fails_part_way(t, impl, ENOMEM, "mlock", 1, BASE, 4 * P)
    assert present(partial, range(4)) == [0, 0, 0, 0] and partial.procs[1].minflt == 0


def test_mlock_past_the_end_of_a_file_and_map_populate_past_it():
    """mlock: ENOMEM after the pages inside the file; MAP_POPULATE ignores the error and keeps
    the pages inside (mm_populate(..., ignore_errors=1))."""
    s, impl = both(("mmap", 1, BASE, 4 * P, RW, SA, 0, 6))
    partial = fails_part_way(s, impl, ENOMEM, "mlock", 1, BASE, 4 * P)
    assert present(partial, range(4)) == [1, 1, 0, 0] and partial.procs[1].minflt == 2
    t, impl = both(("mmap", 1, BASE, 4 * P, RW, SA | MAP_POPULATE, 0, 6))
    assert present(t, range(4)) == [1, 1, 0, 0] and t.procs[1].minflt == 2


def test_mprotect_over_a_hole_reprotects_the_vma_before_it():
    s, impl = both(("mmap", 1, BASE, 2 * P, RW, ANON), ("write", 1, BASE, 1), ("mmap", 1, BASE + 3 * P, P, RW, ANON))
    partial = fails_part_way(s, impl, ENOMEM, "mprotect", 1, BASE, 4 * P, PROT_READ)
    assert spec.maps(partial, 1).splitlines()[0].split()[1] == "r--p" and not spec.pte_at(partial, 1, BASE)[1]
    with pytest.raises(SIGSEGV):
        spec.write(partial, 1, BASE, 2)


def test_dontneed_zaps_up_to_a_locked_vma():
    """madvise_walk_vmas: the first VMA is zapped, the locked one refuses (EINVAL)."""
    s, impl = both(("mmap", 1, BASE, 2 * P, RW, ANON), ("write", 1, BASE, 1), ("write", 1, BASE + P, 1),
                   ("mmap", 1, BASE + 2 * P, 2 * P, RW, ANON | MAP_LOCKED))
    partial = fails_part_way(s, impl, EINVAL, "madvise", 1, BASE, 4 * P, MADV_DONTNEED)
    assert present(partial, range(4)) == [0, 0, 1, 1] and spec.read(partial, 1, BASE)[1] == 0


def test_mprotect_to_the_same_protection_leaves_the_ptes_alone():
    """mprotect_fixup returns early when the flags do not change: an exclusive page whose PTE
    fork write-protected stays write-protected (its next write is a fault that reuses it)."""
    s, impl = both(("mmap", 1, BASE, 2 * P, RW, ANON), ("write", 1, BASE, 1), ("fork", 1), ("exit", 2),
                   ("mprotect", 1, BASE, 2 * P, RW))
    assert not spec.pte_at(s, 1, BASE)[1]
    s, kind = spec.write(s, 1, BASE, 2)
    assert kind == "reuse" and impl.write(1, BASE, 2) == "reuse" and impl.abstract() == s


def test_mlock_oom_while_populating_is_eagain():
    assert isinstance(spec.mlock_posix_error(ENOMEM("no frame")), EAGAIN)
    assert isinstance(spec.mlock_posix_error(EFAULT("PROT_NONE")), ENOMEM)


# --- run(program) -------------------------------------------------------------------------------


def test_run_continues_from_the_state_linux_leaves():
    program = (("mmap", 2, 2, RW, ANON), ("madvise", 3, 3, MADV_POPULATE_WRITE), ("fork",),
               ("in", 1, ("touch", 0, 1, True)), ("in", 1, ("touch", 2, 1, False)), ("exit", 0))
    s, out = spec.run(spec.init(), program, BASE)
    assert out == [2, "ENOMEM", 1, "SIGSEGV", spec.GONE, 0] and not s.procs
    impl = reg.impl_factory(FaultConfig())
    assert impl.run(program, BASE) == out and impl.abstract() == s


@pytest.mark.layer("lockstep")
@settings(max_examples=by_profile(25, 60, 300), deadline=None)
@given(cfg=reg.config, program=reg.programs())
def test_impl_run_agrees_with_the_spec_run_step_by_step(cfg, program):
    """impl.run(program) returns what spec.run (one transition per step, continuing from
    error.partial after a failure part way) returns, and ends in the same state."""
    s, want = spec.run(spec.init(cfg), program, BASE)
    impl = reg.impl_factory(cfg)
    assert impl.run(program, BASE) == want
    assert impl.abstract() == s, f"{program}\nspec:\n{spec.render(s)}impl:\n{spec.render(impl.abstract())}"
    tally("examples")
    tally("steps", len(program))


# --- smaps accounting (fs/proc/task_mmu.c smaps_account), worked out by hand --------------------


def smaps_kb(s, pid, start):
    """The smaps fields of the VMA starting at ``start``, in kB."""
    lines = spec.smaps(s, pid).splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith(f"{start:x}-"))
    out = {}
    for line in lines[head + 1:]:
        if line.startswith("VmFlags"):
            break
        name, value = line.split(":", 1)
        out[name] = int(value.split()[0])
    return out


FIELDS = ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty")


def fields(s, pid, start=BASE):
    kb = smaps_kb(s, pid, start)
    return tuple(kb[f] for f in FIELDS)


def test_smaps_fork_shares_then_cow_makes_private():
    """Two written pages, fork: each page has mapcount 2, so Pss is 4 kB (2 x 2 kB) and both
    are Shared_Dirty (the copied PTEs keep their Dirty bit).  The child writes page 0: its
    copy is Private_Dirty in the child, and the original, mapped once again, is Private_Dirty
    in the parent; page 1 stays shared (Pss 2 + 4 = 6 kB on each side)."""
    s, a = anon(2)
    s = run(s, 1, "write", a, 2, 1)
    s, c = spec.fork(s, 1)
    assert fields(s, 1) == fields(s, c) == (8, 4, 0, 8, 0, 0)
    s, _ = spec.write(s, c, a, 2)
    assert fields(s, 1) == fields(s, c) == (8, 6, 0, 4, 0, 4)


def test_smaps_pss_of_a_page_mapped_three_times():
    """mapcount 3: pss = (4096 << 12) / 3 = 5592405; >> PSS_SHIFT = 1365 bytes; >> 10 = 1 kB."""
    s, a = anon(1)
    s, _ = spec.write(s, 1, a, 1)
    s, c1 = spec.fork(s, 1)
    s, c2 = spec.fork(s, 1)
    assert fields(s, 1) == fields(s, c1) == fields(s, c2) == (4, 1, 0, 4, 0, 0)


def test_smaps_zero_page_is_not_counted():
    s, a = anon(2)
    s = run(s, 1, "touch", a, 2, False)
    assert fields(s, 1) == (0, 0, 0, 0, 0, 0)


def test_smaps_clean_shared_memfd_page_and_dirty_from_the_pte_bit():
    """A memfd page read in two processes is Shared_Clean (folio clean, PTEs clean).  A shmem
    page read (a writable, clean PTE: shmem needs no write-notify) then written by the CPU
    without a fault is dirty through the PTE's Dirty bit alone: Private_Dirty."""
    s = spec.init()
    s, a = spec.mmap(s, 1, BASE, 2 * P, PROT_READ, SA, 0, 0)
    s, _ = spec.touch(s, 1, a, False)
    s, c = spec.fork(s, 1)
    s, _ = spec.touch(s, c, a, False)
    assert fields(s, 1) == fields(s, c) == (4, 2, 4, 0, 0, 0)
    t = spec.init()
    t, b = spec.mmap(t, 1, BASE, 2 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
    t, _ = spec.touch(t, 1, b, False)
    assert fields(t, 1) == (4, 4, 0, 0, 4, 0)
    t, kind = spec.touch(t, 1, b, True)
    assert kind == "" and fields(t, 1) == (4, 4, 0, 0, 0, 4)


def test_smaps_madv_free_is_clean_and_lazy_until_written():
    """MADV_FREE clears the dirty state: Private_Clean and LazyFree; a write by the CPU sets the
    PTE's Dirty bit, so that page is Private_Dirty and no longer LazyFree.  (Clean and dirty
    are what this kernel shows at once; LazyFree needs the folio's swapbacked flag cleared,
    which Linux does from a per-CPU batch (lru_lazyfree_fn), so a read right after a small
    MADV_FREE can still show 0 there: the model shows the state after the batch drained.)"""
    s, a = anon(2)
    s = run(s, 1, "write", a, 2, 1)
    s, _ = spec.madvise(s, 1, a, 2 * P, MADV_FREE)
    assert fields(s, 1) == (8, 8, 0, 0, 8, 0) and smaps_kb(s, 1, a)["LazyFree"] == 8
    s, _ = spec.touch(s, 1, a, True)
    assert fields(s, 1) == (8, 8, 0, 0, 4, 4) and smaps_kb(s, 1, a)["LazyFree"] == 4


def test_smaps_unshared_copy_of_a_read_pin_is_clean():
    """A read pin of a page shared since fork unshares it (wp_page_copy with unshare): the
    copy's PTE is not made dirty and the new folio is clean, so it is Private_Clean; the
    original is mapped once again by the other process."""
    s, a, c = forked()
    s, _ = spec.pin(s, c, a, False)
    assert smaps_kb(s, c, a)["Private_Clean"] == 4 and smaps_kb(s, 1, a)["Private_Dirty"] == 4


def test_lockstep_compares_the_state_left_part_way(monkeypatch):
    """The lockstep wrapper fails an impl whose error carries another state than the spec's."""
    wrapped = reg.lockstep_factory(FaultConfig())
    wrapped.mmap(1, BASE + 2 * P, 2 * P, RW, ANON)
    with pytest.raises(ENOMEM):
        wrapped.madvise(1, BASE + 3 * P, 3 * P, MADV_POPULATE_WRITE)
    monkeypatch.setattr(wrapped.impl, "_faultin_page", lambda *args: None)  # populates nothing
    with pytest.raises(AssertionError, match="state left part way differs"):
        wrapped.madvise(1, BASE + 3 * P, 3 * P, MADV_POPULATE_WRITE)


def test_mprotect_populates_a_locked_private_vma_made_writable():
    """mprotect_fixup: "Private VM_LOCKED VMA becoming writable: trigger COW to avoid major
    fault on access" -- the read-only locked pages (the zero page) are write-faulted at once."""
    s, impl = both(("mmap", 1, BASE, 2 * P, PROT_READ, ANON | MAP_LOCKED))
    assert s.procs[1].minflt == 2 and distinct(s, 1, BASE, 2) == {"zero"}
    s, _ = spec.mprotect(s, 1, BASE, 2 * P, RW)
    impl.mprotect(1, BASE, 2 * P, RW)
    assert s.procs[1].minflt == 4 and "zero" not in distinct(s, 1, BASE, 2) and impl.abstract() == check(s)
    s, kind = spec.write(s, 1, BASE, 1)
    assert kind == ""  # already writable: no fault
