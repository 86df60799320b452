"""vmalloc: invariants, lockstep with the impl, Linux's choices by hand, and bad input.

The state machines come from the shared harness fed with vmalloc's strategies
(:mod:`mmspec.mechanisms.vmalloc`), which draw the exact sizes of the holes frees leave.
"""

from __future__ import annotations

import pytest

from mmspec.machines import invariant_machine, lockstep_machine, run_machine
from mmspec.mechanisms import vmalloc as reg
from spec import paging
from spec import vmalloc as spec
from spec.errors import EINVAL, ENOMEM, DoubleFree
from spec.paging import Access, PagingConfig
from spec.vmalloc import VMALLOC_START, VmallocConfig
from spec.zone import PAGE_SIZE

VmallocInvariants = invariant_machine("VmallocInvariants", spec, reg.config, reg.steps, reg.render)
VmallocLockstep = lockstep_machine("VmallocLockstep", spec, reg.impl_factory, reg.config, reg.steps, reg.render)


@pytest.mark.layer("invariants")
def test_invariants_hold_after_every_step():
    run_machine(VmallocInvariants)


@pytest.mark.layer("lockstep")
def test_impl_agrees_with_spec_at_every_step():
    run_machine(VmallocLockstep)


def fresh(**kw):
    return spec.init(VmallocConfig(**kw))


def test_layout_constants():
    """arch/x86/include/asm/pgtable_64_types.h: 32 TiB at 0xffffc90000000000 (4-level), 12.5 PiB
    at 0xffa0000000000000 (5-level); VMALLOC_END inclusive."""
    assert spec.VMALLOC_END == 0xFFFFE8FFFFFFFFFF
    assert spec.vmalloc_total_kb("x86-64-4level") == 34359738367
    s5 = fresh(paging=PagingConfig("x86-64-5level", "toy-64"))
    s5, a = spec.vmalloc(s5, 1)
    assert a == 0xFFA0000000000000


def test_lowest_fit_and_guard_page():
    """Areas are packed from VMALLOC_START up, each followed by its unmapped guard page."""
    s = fresh()
    s, a = spec.vmalloc(s, 3 * PAGE_SIZE)
    s, b = spec.vmalloc(s, 1)
    assert (a, b) == (VMALLOC_START, VMALLOC_START + 4 * PAGE_SIZE)
    guard = a + 3 * PAGE_SIZE
    assert spec.vmalloc_to_pfn(s, guard)[1] is None
    with pytest.raises(paging.PageFault):
        paging.translate(s.paging, s.root, guard, Access("w", user=False))
    assert [spec.vmalloc_to_pfn(s, a + i * PAGE_SIZE)[1] for i in range(3)] == list(s.busy[a].pages)


def test_no_guard_and_alignment():
    s = fresh()
    s, a = spec.vmalloc(s, 4096, guard=False)
    s, b = spec.vmalloc(s, 4096, align=4 * PAGE_SIZE)
    s, c = spec.vmalloc(s, 4096)
    assert (b - a, c - a) == (4 * PAGE_SIZE, PAGE_SIZE)  # c fills the hole between a and b
    assert "VM_NO_GUARD" in s.busy[a].flags and s.busy[a].va_end - a == PAGE_SIZE


def test_frames_go_back_at_vfree_but_the_range_waits_for_the_flush():
    s = fresh()
    free0 = s.paging.buddy.zones[2].free_pages
    s, a = spec.vmalloc(s, 2 * PAGE_SIZE)
    pages = s.busy[a].pages
    s, _ = spec.vfree(s, a)
    assert all(p not in s.paging.buddy.allocated for p in pages)
    assert s.paging.buddy.zones[2].free_pages == free0 - s.paging.nr_pagetable + 1  # only the tables stay
    assert dict(s.lazy) == {a: a + 3 * PAGE_SIZE} and s.lazy_nr == 3
    s, b = spec.vmalloc(s, 1)
    assert b == a + 3 * PAGE_SIZE
    with pytest.raises(DoubleFree):
        spec.vfree(s, a)


def test_lazy_limit_triggers_the_purge():
    """free_vmap_area_noflush(): the drain runs once vmap_lazy_nr exceeds lazy_max_pages()."""
    assert spec.lazy_max_pages(2) == 16384 and spec.lazy_max_pages(3) == 16384
    s = fresh(lazy_max=4)
    s, a = spec.vmalloc(s, PAGE_SIZE)
    s, b = spec.vmalloc(s, PAGE_SIZE)
    s, _ = spec.vfree(s, a)
    assert s.lazy_nr == 2 and s.nr_purges == 0
    s, _ = spec.vfree(s, b)
    assert s.lazy_nr == 4 and s.nr_purges == 0  # 4 is not > 4
    s, c = spec.vmalloc(s, PAGE_SIZE)
    s, _ = spec.vfree(s, c)
    assert s.lazy_nr == 0 and s.nr_purges == 1 and not s.lazy


def test_overflow_purges_then_fails():
    """alloc_vmap_area(): no fit -> purge and retry once -> fail."""
    s = fresh(window_pages=4)
    s, a = spec.vmalloc(s, 3 * PAGE_SIZE)
    s, _ = spec.vfree(s, a)
    s, b = spec.vmalloc(s, 2 * PAGE_SIZE)
    assert b == a and s.nr_purges == 1
    with pytest.raises(ENOMEM):
        spec.vmalloc(s, PAGE_SIZE + 1)


def test_vmallocinfo_and_meminfo():
    s = fresh()
    s, a = spec.vmalloc(s, 5000, caller="dup_task_struct+0x40/0x1f0")
    s, b = spec.vmalloc(s, 100)
    s, _ = spec.vfree(s, b)
    assert spec.vmallocinfo(s) == (
        "0xffffc90000000000-0xffffc90000003000   12288 dup_task_struct+0x40/0x1f0 pages=2 vmalloc N0=2\n"
        "0xffffc90000003000-0xffffc90000005000    8192 unpurged vm_area\n")
    assert "VmallocUsed:           8 kB\n" in spec.meminfo_vmalloc(s)
    for line in spec.vmallocinfo(s).splitlines():
        assert spec.format_vmallocinfo_line(spec.parse_vmallocinfo_line(line)) == line


def test_failed_vmalloc_changes_nothing():
    s = fresh()
    with pytest.raises(ENOMEM):
        spec.vmalloc(s, 62 * PAGE_SIZE)  # 64 pages, but the tables and watermarks need some
    s2, _ = spec.vmalloc(s, 4096)
    assert s2 != s


def _bad(s, a):
    return [
        ("vmalloc", (0,), EINVAL),
        ("vmalloc", (-1,), EINVAL),
        ("vmalloc", (4096, 3), EINVAL),
        ("vmalloc", (4096, 1, "two words"), EINVAL),
        ("vmalloc", (1 << 40,), ENOMEM),
        ("vfree", (a + PAGE_SIZE,), EINVAL),
        ("vfree", (12345,), EINVAL),
        ("vmalloc_to_pfn", (0,), EINVAL),
    ]


@pytest.mark.parametrize("case", range(8))
def test_bad_input_raises_a_typed_error_and_changes_nothing(case):
    s = fresh()
    s, a = spec.vmalloc(s, 3 * PAGE_SIZE)
    op, args, error = _bad(s, a)[case]
    with pytest.raises(error):
        getattr(spec, op)(s, *args)
    impl = reg.impl_factory(s.config)
    assert impl.vmalloc(3 * PAGE_SIZE) == a
    before = impl.abstract()
    assert before == s
    with pytest.raises(error):
        getattr(impl, op)(*args)
    assert impl.abstract() == before


def test_simulate_agrees_with_the_spec():
    import numpy as np

    from impl.vmalloc import OP_VMALLOC, VmallocAllocator, make_trace

    cfg = VmallocConfig(PagingConfig("x86-64-4level", "toy-64"), 2, 48, 8)
    trace = make_trace(np.random.default_rng(5), 400, live_target=6, max_pages=4)
    v = VmallocAllocator(cfg)
    out = v.simulate(trace)
    s, got, addrs = spec.init(cfg), [], []
    for op, size, ref in trace.tolist():
        if op == OP_VMALLOC:
            try:
                s, a = spec.vmalloc(s, size)
                got.append((a - s.vstart) // PAGE_SIZE)
            except ENOMEM:
                a = None
                got.append(-12)
        else:
            if addrs[ref] is not None:
                s, _ = spec.vfree(s, addrs[ref])
            a = None
            got.append(-12 if addrs[ref] is None else 0)
        addrs.append(a)
    assert out.tolist() == got and v.abstract() == s


def test_explain_vmalloc_topic_runs():
    from mmspec.explain.vmalloc import explain

    text = explain(seed=1)
    assert "vmallocinfo" in text and "PTE" in text


@pytest.mark.layer("doctests")
def test_docs_page_examples_run():
    """Every >>> example of docs/vmalloc.md runs and prints what the page says."""
    import doctest
    from pathlib import Path

    from mmspec.tally import tally

    page = Path(__file__).resolve().parent.parent / "docs" / "vmalloc.md"
    result = doctest.testfile(str(page), module_relative=False, report=True, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in docs/vmalloc.md failed"
    tally("examples", result.attempted)
