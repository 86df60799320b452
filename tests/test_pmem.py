"""Persistent memory: invariants, lockstep with the impl, litmus vectors, and the programming models.

The state machines come from the shared harness fed with :mod:`mmspec.mechanisms.pmem`'s
strategies: one over raw instructions (:mod:`spec.pmem`), one over transactions
(:mod:`spec.pmemtx`), one over DAX files (:mod:`spec.dax`).  The scenario tests check the
persistency rules worked out by hand from the Intel SDM and the Px86 paper; every litmus vector
of ``spec/pmem_litmus.py`` is run on the spec and on the impl.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from impl import dax as idax
from impl import pmem as ipmem
from mmspec.machines import invariant_machine, lockstep_machine, run_machine
from mmspec.mechanisms import pmem as reg
from mmspec.tally import tally
from spec import dax, pmem, pmemcheck, pmemtx
from spec.errors import EINVAL, ENOMEM, EOPNOTSUPP, MMError
from spec.pmem_litmus import LITMUS, outcome_allowed, run

PmemInvariants = invariant_machine("PmemInvariants", pmem, reg.config, reg.steps, reg.render)
PmemLockstep = lockstep_machine("PmemLockstep", pmem, reg.impl_factory, reg.config, reg.steps, reg.render)
TxInvariants = invariant_machine("TxInvariants", pmemtx, reg.tx_config, reg.tx_steps, reg.tx_render)
TxLockstep = lockstep_machine("TxLockstep", pmemtx, reg.tx_factory, reg.tx_config, reg.tx_steps, reg.tx_render)
DaxInvariants = invariant_machine("DaxInvariants", dax, reg.dax_config, reg.dax_steps, reg.dax_render)
DaxLockstep = lockstep_machine("DaxLockstep", dax, reg.dax_factory, reg.dax_config, reg.dax_steps,
                               reg.dax_render)


def _short():
    """The profile's examples, but at most 8 steps: a transaction is ~20 instructions, and
    every step re-checks every crash point of the whole trace."""
    return settings(stateful_step_count=min(8, settings().stateful_step_count))


@pytest.mark.layer("invariants")
def test_persistency_invariants_hold_after_every_step():
    run_machine(PmemInvariants)


@pytest.mark.layer("invariants")
def test_transactions_are_atomic_at_every_crash_point():
    run_machine(TxInvariants, _short())


@pytest.mark.layer("invariants")
def test_dax_invariants_hold_after_every_step():
    run_machine(DaxInvariants, _short())


@pytest.mark.layer("lockstep")
def test_impl_crash_images_equal_the_spec_at_every_step():
    run_machine(PmemLockstep)


@pytest.mark.layer("lockstep")
def test_impl_transactions_agree_with_the_spec():
    run_machine(TxLockstep, _short())


@pytest.mark.layer("lockstep")
def test_impl_dax_device_agrees_with_the_spec():
    run_machine(DaxLockstep, _short())


X, Y, X2 = 0, 64, 8


def images(state, addrs=(X, Y)):
    return sorted(pmem.show(i, addrs) for i in pmem.crash(state)[1])


def trace(*ops, cfg=None):
    s = pmem.init(cfg or pmem.PmemConfig(words=16))
    for op, *args in ops:
        s, _ = getattr(pmem, op)(s, 0, *args)
    return s


# ---------------------------------------------------------------------------------------------
# The litmus vectors: the papers' verdicts, on the spec (both fence readings) and on the impl


@pytest.mark.parametrize("vector", LITMUS, ids=[v.name for v in LITMUS])
def test_litmus_vector_agrees_with_the_paper(vector):
    state, reads = run(vector)
    assert reads == vector.loads
    assert outcome_allowed(vector, synchronous=True) == vector.allowed, vector.source
    assert outcome_allowed(vector, synchronous=False) == vector.allowed, vector.source
    m = ipmem.PmemMachine(state.config)
    for tid, op, args in vector.trace:
        getattr(m, op)(tid, *args)
    allowed = any(
        all(img[a // 8] == v for a, v in vector.outcome)
        for k in range(len(state.events) + 1) for img in m.crash_at(k)
    )
    assert allowed == vector.allowed


# ---------------------------------------------------------------------------------------------
# The rules, by hand


def test_unflushed_stores_persist_in_any_order():
    assert images(trace(("store", X, 1), ("store", Y, 1))) == ["x=0 y=0", "x=0 y=1", "x=1 y=0", "x=1 y=1"]


def test_same_line_stores_persist_in_order():
    assert images(trace(("store", X, 1), ("store", X2, 1)), (X, X2)) == ["x=0 y=0", "x=1 y=0", "x=1 y=1"]


def test_clwb_without_fence_orders_nothing_and_with_fence_makes_durable():
    s = trace(("store", X, 1), ("clwb", X), ("store", Y, 1))
    assert "x=0 y=1" in images(s)
    s = trace(("store", X, 1), ("clwb", X), ("sfence",), ("store", Y, 1))
    assert images(s) == ["x=1 y=0", "x=1 y=1"]  # durable after the fence (synchronous reading)


def test_asynchronous_reading_forces_nothing_but_keeps_the_order():
    cfg = pmem.PmemConfig(words=16, synchronous=False)
    s = trace(("store", X, 1), ("clwb", X), ("sfence",), ("store", Y, 1), cfg=cfg)
    assert images(s) == ["x=0 y=0", "x=1 y=0", "x=1 y=1"]


def test_a_flush_before_the_store_covers_nothing():
    s = trace(("clwb", X), ("store", X, 1), ("sfence",))
    assert images(s, (X,)) == ["x=0", "x=1"]
    assert [f.kind for f in pmem.check_trace(s)] == ["redundant-flush", "missing-flush"]


def test_eadr_needs_no_flush_but_a_fence():
    cfg = pmem.PmemConfig(words=16, domain="eadr")
    assert images(trace(("store", X, 1), ("store", Y, 1), cfg=cfg)) == ["x=0 y=0", "x=1 y=0", "x=1 y=1"]
    assert images(trace(("store", X, 1), ("sfence",), cfg=cfg), (X,)) == ["x=1"]
    s = trace(("nt_store", X, 1), ("store", Y, 1), cfg=cfg)
    assert "x=0 y=1" in images(s)


def test_libpmem_persist_is_clwb_per_line_then_sfence():
    s, _ = pmem.pmem_persist(pmem.init(pmem.PmemConfig(words=32)), 0, 56, 16)
    assert [str(e) for e in s.events] == ["T0: clwb [0x0]", "T0: clwb [0x40]", "T0: sfence"]
    e, _ = pmem.pmem_persist(pmem.init(pmem.PmemConfig(words=32, domain="eadr")), 0, 56, 16)
    assert [str(x) for x in e.events] == ["T0: sfence"]


def test_memcpy_persist_is_durable_when_it_returns():
    s, _ = pmem.pmem_memcpy_persist(pmem.init(pmem.PmemConfig(words=16)), 0, 0, (4, 5))
    assert pmem.crash(s)[1] == {(4, 5) + (0,) * 14}


def test_checker_reports_missing_flush_missing_fence_and_redundant_flush():
    s = trace(("store", X, 1), ("store", Y, 2), ("clwb", Y), ("clwb", Y), ("store", 128, 3), ("clflush", 128),
              cfg=pmem.PmemConfig(words=24))
    kinds = [(f.kind, f.event) for f in pmemcheck.check_trace(s)]
    assert kinds == [("redundant-flush", 3), ("missing-flush", 0), ("missing-fence", 1)]
    bad = pmemcheck.check_trace(s, None, lambda mem: mem[8] == 0 or mem[0] == 1)
    assert [f.event for f in bad if f.kind == "violation"][:1] == [2]
    # performance findings are kept apart from correctness ones
    performance = [f.kind for f in pmemcheck.check_trace(s) if f.kind in pmemcheck.PERFORMANCE]
    assert performance == ["redundant-flush"]
    assert pmemcheck.redundant_flushes(s) + pmemcheck.unpersisted_stores(s) == pmemcheck.check_trace(s)


def test_checker_names_stay_reachable_from_spec_pmem():
    from spec.pmem import check_trace

    assert check_trace is pmemcheck.check_trace and pmem.Finding is pmemcheck.Finding
    assert pmem.violating_points is pmemcheck.violating_points
    with pytest.raises(AttributeError):
        pmem.no_such_name  # noqa: B018


def test_violations_name_each_crash_point_and_image_the_predicate_rejects():
    s = trace(("store", X, 1), ("store", Y, 1), ("clflush", Y))
    found = pmemcheck.violations(s, None, lambda mem: mem[8] == 0 or mem[0] == 1)
    assert [(f.kind, f.event) for f in found] == [("violation", 2), ("violation", 3)]
    assert pmemcheck.violating_points(s, None, lambda mem: mem[8] == 0 or mem[0] == 1)[1] == (2, 3)


def test_a_store_overwritten_by_a_durable_store_is_not_reported():
    s = trace(("store", X, 1), ("store", X, 2), ("clflush", X))
    assert pmemcheck.check_trace(s) == ()


def test_impl_lazy_check_scales_to_a_64_store_transaction():
    pool = ipmem.TxPool(pmemtx.TxConfig(entries=64, heap_words=64 * 8))
    pool.tx_write(tuple((8 * i, i + 1) for i in range(64)))
    assert pool.violations(lazy=True) == () == pool.violations()


@pytest.mark.layer("lockstep")
@pytest.mark.parametrize("vector", LITMUS, ids=[v.name for v in LITMUS])
def test_impl_packed_rows_are_the_spec_persisted_sets(vector):
    """Every crash point of every litmus trace: the impl's rows of line versions, read back as
    persisted sets, are exactly the spec's, each once; the images are the spec's images."""
    state, _ = run(vector)
    t = ipmem._Trace(state.config, state.initial, state.events)
    for k in range(len(state.events) + 1):
        batch = t.versions(k)
        sets = [batch.persisted(i) for i in range(len(batch))]
        assert len(sets) == len(set(sets)) and set(sets) == set(pmem.persisted_sets(state, k))
        assert ipmem.enumerate_crashes(state, k) == pmem.crash_at(state, k)[1]
    tally("cases")


@pytest.mark.layer("lockstep")
def test_impl_vectorised_full_check_agrees_with_the_spec_on_every_defect():
    """check_all with the vectorised undo-log recovery finds exactly the spec's violating crash
    points, with a witness image the spec also rejects, with each defect and with none."""
    import contextlib

    from impl import bugs

    for name in (None,) + tuple(d.name for d in ipmem.DEFECTS):
        for domain in pmem.DOMAINS:
            with bugs.enabled(name) if name else contextlib.nullcontext():
                pool = ipmem.TxPool(pmemtx.TxConfig(entries=3, heap_words=12, domain=domain))
                pool.tx_write(((0, 5), (9, 7)), nt=name == "pmem-tx-nt-no-fence")
                pool.tx_write(((1, 5), (9, 8), (4, 1)), nt=name == "pmem-tx-nt-no-fence")
            s = pool.abstract()
            rec = s.txs[-1]
            spec_bad = pmemtx.violations(s)
            got = ipmem.check_all(s.pmem, ipmem.tx_atomicity(s.config, rec.before, rec.after),
                                  range(rec.start, rec.end + 1))
            assert [k for k, _ in got] == sorted({k for k, _, _ in spec_bad}), (name, domain)
            assert all((k, img) in {(k2, i2) for k2, i2, _ in spec_bad} for k, img in got)
            tally("cases")


def test_impl_lazy_check_agrees_with_the_spec_on_every_defect():
    from impl import bugs

    for d in ipmem.DEFECTS:
        with bugs.enabled(d.name):
            pool = ipmem.TxPool(pmemtx.TxConfig(entries=2, heap_words=12))
            pool.tx_write(((0, 5), (9, 7)), nt=d.name == "pmem-tx-nt-no-fence")
        spec_points = sorted({k for k, _, _ in pmemtx.violations(pool.abstract())})
        for lazy in (True, False):
            impl_points = [k for k, _ in pool.violations(lazy=lazy)]
            assert impl_points == spec_points and spec_points, (d.name, lazy)


# ---------------------------------------------------------------------------------------------
# DAX


def test_map_sync_makes_the_allocation_durable_at_the_fault():
    s = dax.init(dax.DaxConfig(pages=2))
    s, _ = dax.creat(s, "f", 1)
    s, plain = dax.mmap(s, "f", dax.MAP_SHARED)
    s, _ = dax.store(s, plain, 0, 7)
    s, _ = dax.flush(s, plain, 0, 8)  # data durable, but the block allocation is not
    assert dax.crash(s)[1] == {(("f", ((0,),)),)}
    s, _ = dax.fsync(s, "f")
    assert dax.crash(s)[1] == {(("f", ((7,),)),)}


def test_dax_device_without_map_sync_needs_fsync_in_spec_and_impl():
    s = dax.init(dax.DaxConfig(pages=2))
    d = idax.DaxDevice(s.config)
    for op, args in [("creat", ("f", 2)), ("mmap", ("f", dax.MAP_SHARED)), ("store", (0, 4096, 9)),
                     ("flush", (0, 4096, 8))]:
        s, r = getattr(dax, op)(s, *args)
        assert getattr(d, op)(*args) == r
    assert d.crash() == dax.crash(s)[1] == {(("f", ((0,), (0,))),)}  # page 1's block is not committed
    s, _ = dax.fsync(s, "f")
    d.fsync("f")
    assert d.crash() == dax.crash(s)[1] == {(("f", ((0,), (9,))),)}
    assert d.abstract() == s


DAX_BAD = [("creat", ("f", 1)), ("creat", ("g", 0)), ("mmap", ("nope", dax.MAP_SHARED)),
           ("mmap", ("f", dax.MAP_PRIVATE)),
           ("mmap", ("f", dax.MAP_SHARED_VALIDATE | dax.MAP_FIXED_NOREPLACE)),
           ("store", (1, 0, 1)), ("store", (0, 3, 1)), ("store", (0, 4096, 1)), ("store", (0, 8, "x")),
           ("flush", (0, 0, 0)), ("flush", (0, 4000, 200)), ("fsync", ("nope",))]


@pytest.mark.parametrize("case", range(len(DAX_BAD)))
def test_dax_bad_input_raises_the_same_error_and_changes_nothing(case):
    op, args = DAX_BAD[case]
    s = dax.init(dax.DaxConfig(pages=1))
    d = idax.DaxDevice(s.config)
    setup = [("creat", ("f", 1)), ("mmap", ("f", dax.MAP_SHARED_VALIDATE | dax.MAP_SYNC)), ("store", (0, 0, 1))]
    for o, a in setup:
        s, _ = getattr(dax, o)(s, *a)
        getattr(d, o)(*a)
    with pytest.raises(MMError) as spec_err:
        getattr(dax, op)(s, *args)
    with pytest.raises(MMError) as impl_err:
        getattr(d, op)(*args)
    assert type(spec_err.value) is type(impl_err.value)
    assert d.abstract() == s


def test_dax_store_to_a_full_device_is_enomem():
    s = dax.init(dax.DaxConfig(pages=1))
    d = idax.DaxDevice(s.config)
    for o, a in [("creat", ("f", 2)), ("mmap", ("f", dax.MAP_SHARED)), ("store", (0, 0, 1))]:
        s, _ = getattr(dax, o)(s, *a)
        getattr(d, o)(*a)
    with pytest.raises(ENOMEM):
        dax.store(s, 0, 4096, 1)
    with pytest.raises(ENOMEM):
        d.store(0, 4096, 1)
    assert d.abstract() == s


@pytest.mark.parametrize(("flags", "fs", "is_dax", "outcome"), [
    (dax.MAP_SHARED_VALIDATE | dax.MAP_SYNC, "ext4", True, True),
    (dax.MAP_SHARED_VALIDATE | dax.MAP_SYNC, "ext4", False, EOPNOTSUPP),
    (dax.MAP_SHARED | dax.MAP_SYNC, "ext4", False, EOPNOTSUPP),
    (dax.MAP_SHARED | dax.MAP_SYNC, "tmpfs", False, True),
    (dax.MAP_SHARED_VALIDATE | dax.MAP_SYNC, "tmpfs", False, EOPNOTSUPP),
    (dax.MAP_SHARED_VALIDATE | dax.MAP_FIXED_NOREPLACE, "ext4", True, EOPNOTSUPP),
    (dax.MAP_SHARED_VALIDATE | dax.MAP_SYNC, None, False, EINVAL),
    (dax.MAP_PRIVATE | dax.MAP_SYNC, None, False, True),
])
def test_mmap_flag_checks(flags, fs, is_dax, outcome):
    if isinstance(outcome, type):
        with pytest.raises(outcome):
            dax.mmap_flags(flags, fs, is_dax)
    else:
        assert dax.mmap_flags(flags, fs, is_dax) is outcome


# ---------------------------------------------------------------------------------------------
# Bad input: a typed error, and nothing changed, in spec and impl


BAD = [
    ("store", (0, 3, 1)), ("store", (0, 8 * 16, 1)), ("store", (1, 0, 1)), ("store", (0, 0, "1")),
    ("store", (True, 0, 1)), ("clwb", (0, -1)), ("clflush", (0, 8 * 16)), ("sfence", (2,)),
    ("load", (0, 4)), ("crash_at", (99,)), ("pmem_persist", (0, 0, 0)), ("pmem_memcpy_persist", (0, 120, (1, 2))),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input_raises_and_changes_nothing(case):
    op, args = BAD[case]
    s = trace(("store", X, 1), ("clwb", X))
    m = ipmem.PmemMachine(s.config)
    m.store(0, X, 1)
    m.clwb(0, X)
    with pytest.raises(EINVAL):
        getattr(pmem, op)(s, *args)
    with pytest.raises(EINVAL):
        getattr(m, op)(*args)
    assert m.abstract() == s


def test_bad_transactions_raise_and_change_nothing():
    s = pmemtx.init(pmemtx.TxConfig(entries=2, heap_words=4))
    pool = ipmem.TxPool(s.config)
    for writes in [(), ((0, 1), (0, 2)), ((4, 1),), ((0, 1), (1, 1), (2, 1)), 7]:
        with pytest.raises(EINVAL):
            pmemtx.tx_write(s, writes)
        with pytest.raises(EINVAL):
            pool.tx_write(writes)
        assert pool.abstract() == s
    assert issubclass(EOPNOTSUPP, MMError) and EOPNOTSUPP.errno == 95


def test_explain_is_deterministic_and_shows_the_fix():
    from mmspec.explain.pmem import explain

    a = explain(seed=1)
    assert a == explain(seed=1) and a != explain(seed=2)
    assert "eADR" in a and "without the fence" in a


@pytest.mark.layer("doctests")
def test_docs_page_examples_run():
    """Every >>> example of docs/pmem.md runs and prints what the page says."""
    import doctest
    from pathlib import Path

    page = Path(__file__).resolve().parent.parent / "docs" / "pmem.md"
    result = doctest.testfile(str(page), module_relative=False, report=True, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in docs/pmem.md failed"
    tally("examples", result.attempted)
