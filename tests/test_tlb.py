"""TLBs and shootdowns: invariants, lockstep with the impl, Linux's choices, the SDM's rules.

The invariant machine is the shared one (:mod:`mmspec.machines`) fed with the strategies of
:mod:`mmspec.mechanisms.tlb`; the lockstep machine is that module's variant of the shared one,
which also tells the spec to evict what the impl's set-associative replacement evicted.  The
scenario tests each set up CPUs and mms, do what the kernel would do, and check the choice
arch/x86/mm/tlb.c makes, worked out by hand from its source (``choose_new_asid``'s
round-robin, the 33-page ceiling, the partial flush only one generation behind, lazy CPUs
skipped and caught up); the hardware tests check INVLPG, INVPCID, CR3 and CR4.PGE against the
Intel SDM's sentences; the impl tests compare ``simulate`` with single steps and with pycachesim.
"""

from __future__ import annotations

import numpy as np
import pytest

from impl.tlb import TRACE_DTYPE, Geometry, TlbMachine
from mmspec.machines import invariant_machine, run_machine
from mmspec.mechanisms import tlb as reg
from spec import pte
from spec import tlb as spec
from spec import tlbflush as proto
from spec.errors import EBUSY, EEXIST, EINVAL
from spec.tlb import PAGE_2M, PAGE_4K, TlbConfig

TlbInvariants = invariant_machine("TlbInvariants", spec, reg.config, reg.steps, reg.render)
TlbLockstep = reg.lockstep_machine("TlbLockstep")

BASE = 0x7F0000000000


@pytest.mark.layer("invariants")
def test_invariants_hold_after_every_step():
    run_machine(TlbInvariants)


@pytest.mark.layer("lockstep")
def test_impl_agrees_with_spec_at_every_step():
    run_machine(TlbLockstep)


def machine(ncpus=2, nr_mm=1, pcid=True, pages=2, running=None):
    """A state with ``pages`` pages of mm 1 mapped from BASE and the given CPUs running mm 1,
    each having touched every page."""
    s = spec.init(TlbConfig(ncpus=ncpus, nr_mm=nr_mm, pcid=pcid))
    for k in range(pages):
        s = proto.populated(s, 1, BASE + k * PAGE_4K)
    for c in range(ncpus) if running is None else running:
        s, _ = proto.switch_mm(s, c, 1)
        for k in range(pages):
            s, _ = spec.access(s, c, BASE + k * PAGE_4K)
    return s


def finish(s, cpu=0):
    """Run the flush on ``cpu`` to its end, delivering and acknowledging every IPI it sent."""
    while s.flushes[cpu] is not None:
        for c in range(len(s.cpus)):
            while s.queues[c]:
                s, _ = proto.deliver_ipi(s, c)
            while s.handled[c]:
                s, _ = proto.ack_ipi(s, c)
        s, _ = proto.advance(s, cpu)
    return s


def why(s) -> str:
    return "\n" + spec.render(s)


# ---------------------------------------------------------------------------------------------
# The hazard, and the protocol that covers it


def test_a_hit_returns_the_cached_translation_after_the_pte_is_gone():
    s = machine()
    s, _ = proto.munmap(s, 0, BASE, PAGE_4K)  # the PTE is clear, nothing is flushed yet
    s, r = spec.access(s, 1, BASE + 0x10)
    assert r.hit and r.paddr is not None, why(s)
    assert spec.stale_entries(s) and spec.inv_coherent_after_flush(s)  # excused: the flush has not returned


def test_munmap_flushes_every_running_cpu_then_frees_the_frame():
    s = machine(ncpus=3)
    pfn = spec.lookup(s.cpus[0], BASE).pfn
    s, _ = proto.munmap(s, 0, BASE, PAGE_4K)
    for stage in ("bumped", "sent", "flushed_local"):
        s, got = proto.advance(s, 0)
        assert got == stage
        assert pfn not in s.paging.buddy.buddy, "the frame must not be free before the flush returns"
    assert s.flushes[0].targets == {1, 2} and s.stats.ipis == 2
    with pytest.raises(EBUSY):
        proto.advance(s, 0)  # waiting for acknowledgements
    s = finish(s)
    assert pfn in s.paging.buddy.buddy, why(s)
    assert all(spec.lookup(c, BASE) is None for c in s.cpus)
    assert s.stats.local_invlpg == 1 and s.stats.remote_invlpg == 2


def test_33_pages_are_flushed_page_by_page_and_34_in_full():
    """get_flush_tlb_info(): (end - start) >> stride_shift > tlb_single_page_flush_ceiling -> full."""
    for pages, invlpg, full in ((33, 33, 0), (34, 0, 1)):
        s = machine(pages=pages, running=[0])
        s, _ = proto.munmap(s, 0, BASE, pages * PAGE_4K)
        s = finish(s)
        assert (s.stats.local_invlpg, s.stats.local_full) == (invlpg, full), why(s)
        assert not s.cpus[0].tlb


def test_nothing_is_flushed_when_no_pte_changed():
    s = machine(running=[0, 1])
    s, n = proto.munmap(s, 0, BASE + 16 * PAGE_4K, PAGE_4K)
    assert n == 0 and s.flushes[0] is None and s.mms[1].tlb_gen == 1


def test_a_2mib_page_is_flushed_with_one_invlpg():
    """tlb_get_unmap_shift(): only PMDs cleared -> stride PMD_SHIFT."""
    s = spec.init(TlbConfig(ncpus=1, nr_mm=1))
    s = proto.populated(s, 1, BASE, PAGE_2M)
    s, _ = proto.switch_mm(s, 0, 1)
    s, r = spec.access(s, 0, BASE + 0x12345)
    assert spec.lookup(s.cpus[0], BASE + 0x1FF000).size == PAGE_2M
    s, _ = proto.munmap(s, 0, BASE, PAGE_2M)
    s = finish(s)
    assert s.stats.local_invlpg == 1 and not s.cpus[0].tlb


def test_partial_flush_only_when_exactly_one_generation_behind():
    """Two concurrent flushes of one mm (tlb_gen 1 -> 2 by cpu0, 2 -> 3 by cpu1): cpu1's own
    flush sees local 1, new 3: a full flush, not an INVLPG of its range only."""
    s = machine()
    s, _ = proto.munmap(s, 0, BASE, PAGE_4K)
    s, _ = proto.advance(s, 0)  # gen 2
    s, _ = proto.advance(s, 0)  # IPI to cpu1
    s, _ = proto.munmap(s, 1, BASE + PAGE_4K, PAGE_4K)
    s, _ = proto.advance(s, 1)  # gen 3
    s, _ = proto.advance(s, 1)  # IPI to cpu0
    s, _ = proto.advance(s, 1)  # cpu1's local flush: 2 behind -> full
    assert s.stats.local_full == 1 and s.stats.local_invlpg == 0
    s, what = proto.deliver_ipi(s, 1)
    assert what == "nothing: already up to date"
    s, what = proto.deliver_ipi(s, 0)  # cpu0 is still at gen 1: cpu1's ranged request is 2 ahead
    assert what == "full flush" and s.cpus[0].ctxs[1].tlb_gen == 3
    s, _ = proto.advance(s, 0)  # cpu0's own local flush finds nothing left to do
    assert s.stats.local_invlpg == 0 and s.stats.remote_full == 1


def test_lazy_cpu_is_skipped_and_catches_up_when_it_returns():
    s = machine()
    s, _ = proto.enter_lazy(s, 1)
    s, _ = proto.munmap(s, 0, BASE, PAGE_4K)
    s = finish(s)
    assert s.stats.ipis == 0 and spec.lookup(s.cpus[1], BASE) is not None  # stale, in a lazy CPU's ASID
    assert spec.inv_coherent_after_flush(s)
    s, (asid, flushed) = proto.switch_mm(s, 1, 1)
    assert flushed and spec.lookup(s.cpus[1], BASE) is None


def test_lazy_cpu_up_to_date_returns_without_a_flush():
    s = machine()
    s, _ = proto.enter_lazy(s, 1)
    s, (asid, flushed) = proto.switch_mm(s, 1, 1)
    assert (asid, flushed) == (1, False) and len(s.cpus[1].tlb) == 2


def test_an_ipi_that_finds_its_cpu_lazy_switches_it_to_init_mm():
    s = machine()
    s, _ = proto.munmap(s, 0, BASE, PAGE_4K)
    s, _ = proto.advance(s, 0)
    s, _ = proto.advance(s, 0)
    s, _ = proto.enter_lazy(s, 1)
    s, what = proto.deliver_ipi(s, 1)
    assert what == "lazy: switched to init_mm" and s.cpus[1].loaded_mm == spec.INIT_MM
    assert 1 not in s.mms[1].cpumask


def test_choose_new_asid_round_robin_and_reuse():
    """Six dynamic ASIDs; init_mm holds 0 at boot; mms 1..5 take 1..5, mm 6 wraps to 0; coming
    back to mm 1 reuses its slot without a flush."""
    s = spec.init(TlbConfig(ncpus=1, nr_mm=6))
    got = []
    for mm in range(1, 7):
        s, r = proto.switch_mm(s, 0, mm)
        got.append(r)
    assert got == [(1, True), (2, True), (3, True), (4, True), (5, True), (0, True)]
    s, r = proto.switch_mm(s, 0, 1)
    assert r == (1, False)
    s, r = proto.switch_mm(s, 0, 0)  # init_mm lost its slot: takes the next one, with a flush
    assert r == (1, True)


def test_without_pcid_every_switch_flushes():
    s = machine(pcid=False, running=[0])
    s, r = proto.switch_mm(s, 0, 0)
    assert r == (0, True) and not s.cpus[0].tlb
    s, r = proto.switch_mm(s, 0, 1)
    assert r == (0, True)


def test_mprotect_read_only_stale_writable_entry_until_flushed():
    s = machine()
    s, _ = spec.access(s, 1, BASE, "w")
    s, _ = proto.mprotect(s, 0, BASE, PAGE_4K, pte.PAGE_READONLY)
    s, r = spec.access(s, 1, BASE, "w")
    assert r.hit and r.fault is None  # the hazard: the cached entry is still writable
    s = finish(s)
    s, r = spec.access(s, 1, BASE, "w")
    assert (r.fault, r.error_code) == ("#PF", 0x7), why(s)  # P | W | U from the walk


# ---------------------------------------------------------------------------------------------
# The hardware: SDM rules


def test_write_through_a_clean_entry_walks_again_and_sets_dirty():
    s = machine(running=[0])
    e = spec.lookup(s.cpus[0], BASE)
    assert not e.dirty
    s, r = spec.access(s, 0, BASE, "w")
    assert not r.hit and spec.lookup(s.cpus[0], BASE).dirty
    s, r = spec.access(s, 0, BASE, "w")
    assert r.hit


def kernel_page(s, cpu=0):
    """Map a global kernel page in mm 1's upper half and touch it as the kernel."""
    va = 0xFFFF888000000000
    s, pfn = proto.populate(s, 1, BASE + 8 * PAGE_4K)
    from spec import paging

    pg, _ = paging.map(s.paging, s.mms[1].root, va, pfn + 0, PAGE_4K, pte.PAGE_KERNEL)
    from dataclasses import replace

    s = replace(s, paging=pg)
    s, r = spec.access(s, cpu, va, "r", user=False)
    assert r.fault is None and spec.lookup(s.cpus[cpu], va).glob
    return s, va


def test_global_entries_survive_cr3_writes_and_go_with_invlpg_or_pge():
    s = machine(running=[0])
    s, va = kernel_page(s)
    c = s.cpus[0]
    s2, n = spec.write_cr3(s, 0, c.cr3_root, c.cr3_pcid, noflush=False)
    assert n == 2 and spec.lookup(s2.cpus[0], va) is not None
    s3, n = spec.invlpg(s2, 0, va)
    assert n == 1 and not s3.cpus[0].tlb
    s4, n = spec.toggle_pge(s, 0)
    assert n == 3 and not s4.cpus[0].tlb


def test_invpcid_types():
    s = machine(running=[0])
    s, va = kernel_page(s)
    p = s.cpus[0].cr3_pcid
    assert spec.invpcid(s, 0, 0, p, BASE)[1] == 1
    assert spec.invpcid(s, 0, 0, p + 1, BASE)[1] == 0
    assert spec.invpcid(s, 0, 0, p, va)[1] == 0  # type 0 keeps global entries
    assert spec.invpcid(s, 0, 1, p)[1] == 2
    assert spec.invpcid(s, 0, 2)[1] == 3
    assert spec.invpcid(s, 0, 3)[1] == 2


def test_cr3_noflush_keeps_the_new_pcid_and_flush_drops_it():
    s = machine(running=[0])
    c = s.cpus[0]
    assert spec.write_cr3(s, 0, c.cr3_root, c.cr3_pcid, noflush=True)[1] == 0
    assert spec.write_cr3(s, 0, c.cr3_root, c.cr3_pcid + 1, noflush=False)[1] == 0  # another PCID's entries stay
    assert spec.write_cr3(s, 0, c.cr3_root, c.cr3_pcid, noflush=False)[1] == 2


def test_a_fault_through_a_cached_entry_invalidates_it():
    s = machine(running=[0])
    s, r = spec.access(s, 0, BASE, "x")  # PAGE_SHARED has NX: a fetch faults from the cached rights
    assert (r.hit, r.fault, r.error_code) == (True, "#PF", 0x15)
    assert spec.lookup(s.cpus[0], BASE) is None


# ---------------------------------------------------------------------------------------------
# Bad input: a typed error, and nothing changes in the spec or the impl


def _busy():
    cfg = TlbConfig(ncpus=2, nr_mm=1)
    s, m = spec.init(cfg), TlbMachine(cfg)
    ops = [("populate", (1, BASE, PAGE_4K)), ("populate", (1, BASE + PAGE_2M, PAGE_2M)), ("switch_mm", (0, 1)),
           ("switch_mm", (1, 1)), ("access", (0, BASE, "r")), ("access", (1, BASE, "r")), ("enter_lazy", (1,))]
    for op, args in ops:
        s, r = getattr(spec, op)(s, *args)
        assert getattr(m, op)(*args) == r
    return s, m


BAD = [
    ("access", (5, BASE, "r"), EINVAL), ("access", (0, -1, "r"), EINVAL), ("access", (0, BASE, "q"), EINVAL),
    ("access", (1, BASE, "r"), EINVAL),  # cpu1 is lazy: it runs no user task
    ("evict", (0, spec.Entry(2, BASE, PAGE_4K, 0, True, True, True, 0, False, False)), EINVAL),
    ("invpcid", (0, 4, 1, 0), EINVAL), ("invpcid", (0, 1, 1 << 12, 0), EINVAL),
    ("write_cr3", (0, 999, 1, False), EINVAL),
    ("advance", (0,), EINVAL), ("deliver_ipi", (0,), EINVAL), ("ack_ipi", (1,), EINVAL),
    ("munmap", (0, BASE + PAGE_2M + PAGE_4K, PAGE_4K), EINVAL),  # part of a huge leaf
    ("munmap", (1, BASE, PAGE_4K), EINVAL),  # from a lazy CPU
    ("munmap", (0, BASE + 1, PAGE_4K), EINVAL),
    ("mprotect", (0, BASE, PAGE_4K, 1 << 52), EINVAL),
    ("populate", (1, BASE, PAGE_4K), EEXIST), ("populate", (1, BASE, 8192), EINVAL), ("populate", (0, BASE, PAGE_4K), EINVAL),
    ("switch_mm", (0, 7), EINVAL), ("switch_mm", ("0", 1), EINVAL),
    ("reclaim_unmap", (0, 1, BASE + 5 * PAGE_4K), EINVAL),  # nothing mapped there
    ("reclaim_unmap", (0, 1, BASE + PAGE_2M), EINVAL),  # a 2 MiB leaf, not a 4 KiB page
    ("reclaim_unmap", (0, 0, BASE), EINVAL), ("reclaim_flush", (0, 1), EINVAL),
    ("reclaim_pageout", (0, 12345), EINVAL),
]


@pytest.mark.parametrize(("op", "args", "error"), BAD, ids=[f"{o}-{i}" for i, (o, _, _) in enumerate(BAD)])
def test_bad_input_raises_a_typed_error_and_changes_nothing(op, args, error):
    s, m = _busy()
    before = m.abstract()
    assert before == s
    with pytest.raises(error):
        getattr(spec, op)(s, *args)
    with pytest.raises(error):
        getattr(m, op)(*args)
    assert m.abstract() == before


def test_reclaim_batches_unmaps_of_two_mms_into_one_full_flush_before_freeing():
    """mm/rmap.c try_to_unmap_one + set_tlb_ubc_flush_pending, mm/vmscan.c shrink_folio_list,
    arch/x86 arch_tlbbatch_add_pending / arch_tlbbatch_flush: cpu2 (kswapd, lazy) unmaps one
    page of mm 1 (written by cpu0: dirty) and one of mm 2 (read by cpu1: clean).  Nothing is
    flushed and nothing freed; both tlb_gens are bumped and the batch's mask is {0, 1}.  The
    dirty frame cannot be written back before the flush.  try_to_unmap_flush_dirty() sends
    one full flush to cpu0 and cpu1 (not to the lazy reclaimer, which is not in the mask);
    only when it returns is the clean frame freed and the dirty one ready for pageout."""
    s = spec.init(TlbConfig(ncpus=3, nr_mm=2))
    s, dirty = proto.populate(s, 1, BASE)
    s, clean = proto.populate(s, 2, BASE)
    s, _ = proto.switch_mm(s, 0, 1)
    s, _ = proto.switch_mm(s, 1, 2)
    s, _ = spec.access(s, 0, BASE, "w")
    s, _ = spec.access(s, 1, BASE, "r")
    s, _ = proto.switch_mm(s, 2, 1)
    s, _ = proto.enter_lazy(s, 2)
    s, _ = proto.switch_mm(s, 2, 0)  # kswapd: init_mm
    gens = [m.tlb_gen for m in s.mms]
    s, got = proto.reclaim_unmap(s, 2, 1, BASE)
    assert got == dirty
    s, got = proto.reclaim_unmap(s, 2, 2, BASE)
    assert got == clean
    b = s.batches[2]
    assert b.cpumask == {0, 1} and b.writable and [m.tlb_gen for m in s.mms] == [gens[0], gens[1] + 1, gens[2] + 1]
    s, r = spec.access(s, 0, BASE + 8, "w")  # the stale, writable entry still works
    assert r.hit and spec.inv_coherent_after_flush(s) and spec.inv_reclaim_batch_covers(s), why(s)
    with pytest.raises(EBUSY):
        proto.reclaim_pageout(s, 2, dirty)
    s, what = proto.reclaim_flush(s, 2, dirty_only=True)
    assert what == "started" and s.batches[2] == spec.Batch(flushing=((dirty, 0),))
    s, _ = proto.advance(s, 2)
    assert s.flushes[2].targets == {0, 1} and not s.flushes[2].local and s.stats.ipis == 2
    assert clean not in s.paging.buddy.buddy and dirty not in s.paging.buddy.buddy
    s = finish(s, 2)
    assert s.stats.remote_full == 2 and s.stats.remote_invlpg == 0, why(s)
    assert all(spec.lookup(c, BASE) is None for c in s.cpus)
    assert clean in s.paging.buddy.buddy and dirty not in s.paging.buddy.buddy
    s, _ = proto.reclaim_pageout(s, 2, dirty)
    assert dirty in s.paging.buddy.buddy and s.batches[2] == spec.Batch(), why(s)
    assert proto.reclaim_flush(s, 2)[1] == "nothing"


def test_reclaim_batch_in_the_impl_matches_the_spec():
    s = machine(ncpus=2, nr_mm=2, pages=2)
    m = TlbMachine(TlbConfig(ncpus=2, nr_mm=2))
    for k in range(2):
        m.populate(1, BASE + k * PAGE_4K)
    for c in range(2):
        m.switch_mm(c, 1)
        for k in range(2):
            m.access(c, BASE + k * PAGE_4K)
    assert m.abstract() == s
    steps = [("reclaim_unmap", (1, 1, BASE)), ("reclaim_unmap", (1, 1, BASE + PAGE_4K)), ("reclaim_flush", (1,)),
             ("advance", (1,)), ("advance", (1,)), ("deliver_ipi", (0,)), ("ack_ipi", (0,)), ("advance", (1,)),
             ("advance", (1,))]
    for op, args in steps:
        s, r = getattr(spec, op)(s, *args)
        assert getattr(m, op)(*args) == r, (op, args)
        assert m.abstract() == s, (op, args)
    assert s.stats.local_full == 1 and s.stats.remote_full == 1 and not s.cpus[0].tlb and not s.cpus[1].tlb


def test_nothing_else_runs_on_a_cpu_inside_a_flush():
    s, m = _busy()
    s, _ = proto.munmap(s, 0, BASE, PAGE_4K)
    m.munmap(0, BASE, PAGE_4K)
    for op, args in (("access", (0, BASE, "r")), ("switch_mm", (0, 0)), ("enter_lazy", (0,)),
                     ("munmap", (0, BASE, PAGE_4K))):
        with pytest.raises(EBUSY):
            getattr(spec, op)(s, *args)
        with pytest.raises(EBUSY):
            getattr(m, op)(*args)
    assert m.abstract() == s


# ---------------------------------------------------------------------------------------------
# The impl: simulate, geometry, pycachesim


def _sim_machine(geometry):
    m = TlbMachine(TlbConfig(ncpus=2, nr_mm=1), geometry)
    for k in range(12):
        m.populate(1, BASE + k * PAGE_4K)
    m.populate(1, BASE + PAGE_2M, PAGE_2M)
    m.switch_mm(0, 1)
    m.switch_mm(1, 1)
    return m


def test_simulate_equals_single_steps():
    rng = np.random.default_rng(1)
    n = 3000
    t = np.empty(n, TRACE_DTYPE)
    t["cpu"] = rng.integers(0, 2, n)
    pages = rng.integers(0, 16, n)
    t["vaddr"] = np.where(pages < 14, BASE + pages * PAGE_4K, BASE + PAGE_2M + rng.integers(0, 512, n) * PAGE_4K)
    t["access"] = rng.choice([0, 0, 1, 2, 3, 4], n, p=[.4, .2, .2, .1, .05, .05])
    geometry = Geometry((4, 2), (2, 1), (8, 2))
    batch, single = _sim_machine(geometry), _sim_machine(geometry)
    got = batch.simulate(t)
    hits = faults = evictions = 0
    for c, v, a in zip(t["cpu"].tolist(), t["vaddr"].tolist(), t["access"].tolist()):
        if a == 3:
            single.invlpg(c, v)
        elif a == 4:
            single.write_cr3(c, single.cpus[c].cr3_root, single.cpus[c].cr3_pcid, False)
        else:
            r = single.access(c, v, "rwx"[a])
            hits += r.hit and r.fault is None
            faults += r.fault is not None
            evictions += len(single.evicted)
    assert (got.hits, got.faults, got.evictions) == (hits, faults, evictions)
    assert got.misses == got.walks and got.hits + got.walks + got.invlpgs + got.full_flushes + got.gp <= n
    assert batch.abstract() == single.abstract()


def test_geometry_must_have_power_of_two_sets():
    with pytest.raises(EINVAL):
        TlbMachine(TlbConfig(), Geometry(stlb=(48, 4)))
    with pytest.raises(EINVAL):
        TlbMachine(TlbConfig(), Geometry(stlb=(0, 0)))


def test_lru_hit_and_miss_counts_match_pycachesim():
    """The STLB alone (64 entries, 16 sets x 4 ways, LRU) against pycachesim's C simulator of
    the same cache with 4 KiB lines, on one trace of 200 000 references over 128 pages."""
    cachesim = pytest.importorskip("cachesim", reason="pycachesim is not installed (pip install .[cachesim], needs gcc)")
    m = TlbMachine(TlbConfig(ncpus=1, nr_mm=1), Geometry((0, 0), (0, 0), (64, 4)))
    for k in range(128):
        m.populate(1, BASE + k * PAGE_4K)
    m.switch_mm(0, 1)
    rng = np.random.default_rng(0)
    pages = np.where(rng.random(200_000) < 0.7, rng.integers(0, 48, 200_000), rng.integers(0, 128, 200_000))
    t = np.zeros(len(pages), TRACE_DTYPE)
    t["vaddr"] = (BASE + pages * PAGE_4K).astype(np.uint64)
    got = m.simulate(t)
    mem = cachesim.MainMemory()
    cache = cachesim.Cache("STLB", 16, 4, PAGE_4K, "LRU")
    mem.load_to(cache)
    mem.store_from(cache)
    cache.backend.iterload((pages * PAGE_4K).tolist(), 1)
    assert (got.hits, got.misses) == (cache.backend.HIT_count, cache.backend.MISS_count)


def test_explain_shootdown_is_deterministic_and_shows_the_ceiling():
    from mmspec.explain.tlb import explain

    a = explain(seed=3, cpus=8, pages="1,33,34")
    assert a == explain(seed=3, cpus=8, pages="1,33,34")
    rows = [line.split() for line in a.splitlines() if line.startswith("    8 ")]
    assert [r[2] for r in rows] == ["ranged", "ranged", "full"]
    assert "partial flush of 1 page" in a and "tlb_finish_mmu" in a
    with pytest.raises(TypeError):
        explain(0, bogus=1)


@pytest.mark.layer("doctests")
def test_docs_page_examples_run():
    """Every >>> example of docs/tlb.md runs and prints what the page says."""
    import doctest
    from pathlib import Path

    from mmspec.tally import tally

    page = Path(__file__).resolve().parent.parent / "docs" / "tlb.md"
    result = doctest.testfile(str(page), module_relative=False, report=True, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in docs/tlb.md failed"
    tally("examples", result.attempted)
