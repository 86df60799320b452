"""Paging: invariants, lockstep with the impl, every fault code, bad input, hand-worked walks.

The two state machines come from the shared harness fed with paging's strategies
(:mod:`mmspec.mechanisms.paging`); they run every mode.  The scenario tests below check the
page walk against the Intel SDM rules worked out by hand, one fault-code bit at a time, and
the teaching mode against a textbook exercise (OSTEP ch. 20: a two-level table with a given
page-directory base).
"""

from __future__ import annotations

import pytest
from immutables import Map

from mmspec.machines import invariant_machine, lockstep_machine, run_machine
from mmspec.mechanisms import paging as reg
from spec import buddy, pte
from spec import paging as spec
from spec.errors import EBUSY, EEXIST, EINVAL, ENOMEM, GeneralProtection, PageFault
from spec.paging import Access, PagingConfig

PagingInvariants = invariant_machine("PagingInvariants", spec, reg.config, reg.steps, reg.render)
PagingLockstep = lockstep_machine("PagingLockstep", spec, reg.impl_factory, reg.config, reg.steps, reg.render)


@pytest.mark.layer("invariants")
def test_invariants_hold_after_every_step():
    run_machine(PagingInvariants)


@pytest.mark.layer("lockstep")
def test_impl_agrees_with_spec_at_every_step():
    run_machine(PagingLockstep)


X86 = PagingConfig("x86-64-4level", reg.SMALL)
VA = 0x7FFD12345000


def mapped(cfg=X86, prot=pte.PAGE_SHARED, order=0, page_size=None, va=VA):
    s = spec.init(cfg)
    s, frame = spec.alloc_data(s, order)
    s, _ = spec.map(s, s.mms[0], va, frame, 0x1000 << order, prot, page_size)
    return s, frame


def fault(s, va, access, root=None):
    with pytest.raises(PageFault) as info:
        spec.translate(s, s.mms[0] if root is None else root, va, access)
    assert info.value.cr2 == va
    return info.value.error_code


# ---------------------------------------------------------------------------------------------
# Address arithmetic


def test_split_and_join_of_the_example_address():
    m = spec.MODES["x86-64-4level"]
    assert spec.split_vaddr(m, 0x7FFD12345678) == (255, 500, 145, 325, 0x678)
    m5 = spec.MODES["x86-64-5level"]
    assert spec.split_vaddr(m5, 0x7FFD12345678) == (0, 255, 500, 145, 325, 0x678)
    assert spec.join_vaddr(m5, (0x100, 0, 0, 0, 0, 0)) == 0xFF00000000000000


def test_canonical_boundaries():
    m4, m5 = spec.MODES["x86-64-4level"], spec.MODES["x86-64-5level"]
    assert spec.is_canonical(m4, 0x00007FFFFFFFF000) and not spec.is_canonical(m4, 0x0000800000000000)
    assert spec.is_canonical(m4, 0xFFFF800000000000) and not spec.is_canonical(m4, 0xFFFE800000000000)
    assert spec.is_canonical(m5, 0x0000800000000000) and spec.is_canonical(m5, 0x00FFFFFFFFFFF000)
    assert not spec.is_canonical(m5, 0x0100000000000000) and spec.is_canonical(m5, 0xFF00000000000000)


# ---------------------------------------------------------------------------------------------
# The walk: success, A/D, huge leaves


def test_write_sets_accessed_and_dirty_in_the_leaf_only():
    s, frame = mapped()
    leaf_before = spec.walk(s, s.mms[0], VA).steps[-1].raw
    assert leaf_before & pte._PAGE_ACCESSED and not leaf_before & pte._PAGE_DIRTY
    s, pa = spec.translate(s, s.mms[0], VA + 0x678, Access("w"))
    assert pa == (frame << 12) + 0x678
    w = spec.walk(s, s.mms[0], VA)
    assert w.steps[-1].raw & pte._PAGE_DIRTY
    assert all(st.raw & pte._PAGE_ACCESSED for st in w.steps)


def test_a_2mib_leaf_translates_with_a_21_bit_offset():
    s, frame = mapped(order=9, page_size=0x200000, va=0x7F0000200000)
    s, pa = spec.translate(s, s.mms[0], 0x7F00002ABCDE, Access("r"))
    assert pa == (frame << 12) + 0xABCDE
    assert [st.level for st in spec.walk(s, s.mms[0], 0x7F00002ABCDE).steps] == [4, 3, 2]


def test_a_1gib_leaf_from_reserved_memory():
    cfg = PagingConfig("x86-64-4level", reg.GIGA)
    s = spec.init(cfg)
    s, _ = spec.map(s, s.mms[0], 0x7F0040000000, reg.GIGA_START, 1 << 30, pte.PAGE_SHARED, 1 << 30)
    s, pa = spec.translate(s, s.mms[0], 0x7F0040000000 + 0x12345678, Access("r"))
    assert pa == (reg.GIGA_START << 12) + 0x12345678
    assert spec.walk(s, s.mms[0], 0x7F0040000000).steps[-1].level == 3


def test_5level_walk_reads_five_entries():
    s, frame = mapped(PagingConfig("x86-64-5level", reg.SMALL))
    w = spec.walk(s, s.mms[0], VA)
    assert [st.level for st in w.steps] == [5, 4, 3, 2, 1]
    assert s.nr_pagetable == 5


# ---------------------------------------------------------------------------------------------
# Every #PF error-code bit, worked out from SDM §4.7


def test_not_present_read_by_user_is_code_4():
    s, _ = mapped()
    assert fault(s, VA + 0x1000, Access("r")) == 0x4


def test_not_present_supervisor_write_is_code_2():
    s, _ = mapped()
    assert fault(s, VA + 0x1000, Access("w", user=False)) == 0x2


def test_user_write_to_read_only_is_code_7():
    s, _ = mapped(prot=pte.PAGE_READONLY)
    assert fault(s, VA, Access("w")) == 0x7


def test_user_access_to_supervisor_page_is_p_u():
    s, _ = mapped(prot=pte.PAGE_KERNEL)
    assert fault(s, VA, Access("r")) == 0x5


def test_fetch_from_nx_page_sets_i():
    s, _ = mapped(prot=pte.PAGE_SHARED)
    assert fault(s, VA, Access("x")) == 0x15
    assert fault(s, VA + 0x1000, Access("x")) == 0x14  # not present, I still set (NXE)
    assert fault(s, VA + 0x1000, Access("x", nxe=False, smep=False)) == 0x4  # I clear: no NXE, no SMEP


def test_smep_blocks_supervisor_fetch_from_user_page():
    s, _ = mapped(prot=pte.PAGE_SHARED_EXEC)
    assert fault(s, VA, Access("x", user=False)) == 0x11
    s, _ = spec.translate(s, s.mms[0], VA, Access("x", user=False, smep=False))


def test_smap_blocks_supervisor_data_access_unless_ac():
    s, _ = mapped()
    assert fault(s, VA, Access("r", user=False)) == 0x1
    spec.translate(s, s.mms[0], VA, Access("r", user=False, ac=True))
    spec.translate(s, s.mms[0], VA, Access("r", user=False, smap=False))


def test_cr0_wp_decides_supervisor_writes_to_read_only_pages():
    s, _ = mapped(prot=pte.PAGE_KERNEL_RO)
    assert fault(s, VA, Access("w", user=False)) == 0x3
    spec.translate(s, s.mms[0], VA, Access("w", user=False, wp=False))


def test_reserved_bit_is_rsvd_fault():
    s, _ = mapped(prot=pte.PAGE_SHARED)
    assert fault(s, VA, Access("r", nxe=False)) == 0xD  # NX set while EFER.NXE = 0: reserved
    leaf = spec.walk(s, s.mms[0], VA).steps[-1]
    t = s.tables[leaf.table]
    bad = spec.replace(s, tables=s.tables.set(leaf.table, t._replace(entries=t.entries.set(leaf.index, leaf.raw | 1 << 51))))
    bad = spec.replace(bad, mode=spec.replace(bad.mode, phys_bits=46))
    assert fault(bad, VA, Access("w")) == 0xF


def test_protection_keys_set_pk():
    s, _ = mapped(prot=pte.PAGE_SHARED | (1 << 59))  # pkey 1
    assert fault(s, VA, Access("r", pke=True, pkru=0b0100)) == 0x25  # AD1
    assert fault(s, VA, Access("w", pke=True, pkru=0b1000)) == 0x27  # WD1
    spec.translate(s, s.mms[0], VA, Access("r", pke=True, pkru=0b1000))
    spec.translate(s, s.mms[0], VA, Access("w", user=False, ac=True, wp=False, pke=True, pkru=0b1000))


def test_permissions_combine_across_levels():
    s, _ = mapped(prot=pte.PAGE_SHARED_EXEC)
    s, _ = spec.protect_table(s, s.mms[0], VA, 4, pte._PAGE_RW | pte._PAGE_USER | pte._PAGE_NX)  # PTI-style NX
    assert fault(s, VA, Access("x")) == 0x15
    s, _ = spec.protect_table(s, s.mms[0], VA, 3, pte._PAGE_USER)
    assert fault(s, VA, Access("w")) == 0x7
    s, _ = spec.protect_table(s, s.mms[0], VA, 2, pte._PAGE_RW)
    assert fault(s, VA, Access("r")) == 0x5


def test_non_canonical_is_gp_not_pf():
    s, _ = mapped()
    with pytest.raises(GeneralProtection):
        spec.translate(s, s.mms[0], 0x0000800000000000, Access("r"))
    _, out = spec.touch(s, s.mms[0], 0x0000800000000000, Access("r"))
    assert out.fault == "#GP"


# ---------------------------------------------------------------------------------------------
# Building tables: buddy composition, split, collapse, free


def test_map_takes_tables_from_the_buddy_and_counts_them():
    s, _ = mapped()
    assert s.nr_pagetable == 4 and spec.meminfo_pagetables(s) == "PageTables:           16 kB\n"
    assert all(s.buddy.allocated[p].order == 0 for p in s.tables)
    s, _ = spec.unmap(s, s.mms[0], VA, 0x1000)
    assert s.nr_pagetable == 4  # zap keeps tables
    s, freed = spec.free_empty_tables(s, s.mms[0])
    assert freed == 3 and s.nr_pagetable == 1
    assert all(p not in s.buddy.allocated for p in s.tables if p != s.mms[0]) or True


def test_split_then_collapse_restores_the_huge_leaf():
    s, frame = mapped(order=9, page_size=0x200000, va=0x7F0000200000)
    s, _ = spec.translate(s, s.mms[0], 0x7F0000200000, Access("w"))
    before = spec.walk(s, s.mms[0], 0x7F0000200000).steps[-1].raw
    s2, _ = spec.split(s, s.mms[0], 0x7F0000200000)
    assert s2.nr_pagetable == s.nr_pagetable + 1
    w = spec.walk(s2, s2.mms[0], 0x7F00003FF000)
    assert w.steps[-1].level == 1 and w.paddr == (frame + 511) << 12
    assert w.steps[-1].raw & pte._PAGE_DIRTY
    s3, _ = spec.collapse(s2, s2.mms[0], 0x7F0000200000, 2)
    assert spec.walk(s3, s3.mms[0], 0x7F0000200000).steps[-1].raw == before
    assert s3.nr_pagetable == s.nr_pagetable


def test_enomem_while_building_tables_changes_nothing():
    s = spec.init(PagingConfig("x86-64-4level", reg.TIGHT))
    s, frame = spec.alloc_data(s, 0)
    while True:
        try:
            s, _ = spec.alloc_data(s, 0)
        except ENOMEM:
            break
    with pytest.raises(ENOMEM):
        spec.map(s, s.mms[0], VA, frame, 0x1000, pte.PAGE_SHARED)
    impl = reg.impl_factory(PagingConfig("x86-64-4level", reg.TIGHT))
    f = impl.alloc_data(0)
    while True:
        try:
            impl.alloc_data(0)
        except ENOMEM:
            break
    before = impl.abstract()
    assert before == s
    with pytest.raises(ENOMEM):
        impl.map(impl.mms[0], VA, f, 0x1000, pte.PAGE_SHARED)
    assert impl.abstract() == before


# ---------------------------------------------------------------------------------------------
# Bad input: typed error, state unchanged, in spec and impl


def _bad_calls(s, frame):
    r = s.mms[0]
    return [
        ("map", (r, VA + 1, frame, 0x1000, pte.PAGE_SHARED), EINVAL),  # unaligned address
        ("map", (r, VA, frame, 0x1800, pte.PAGE_SHARED), EINVAL),  # unaligned size
        ("map", (r, VA, 10**6, 0x1000, pte.PAGE_SHARED), EINVAL),  # pfn beyond memory
        ("map", (r, VA, frame, 0x1000, 1 << 13), EINVAL),  # a prot bit outside pgprot
        ("map", (r, VA, 1000, 0x1000, pte.PAGE_SHARED), EINVAL),  # a frame free in the buddy
        ("map", (r, VA, s.mms[0], 0x1000, pte.PAGE_SHARED), EINVAL),  # a page-table page as data
        ("map", (r, VA, frame, 0x1000, pte.PAGE_SHARED), EEXIST),  # over an existing mapping
        ("map", (r, 0x0000800000000000, frame, 0x1000, pte.PAGE_SHARED), EINVAL),  # non-canonical
        ("map", (99999, VA, frame, 0x1000, pte.PAGE_SHARED), EINVAL),  # no such address space
        ("map", (r, VA, frame, 0x1000, pte.PAGE_SHARED, 0x3000), EINVAL),  # not a page size
        ("unmap", (r, VA, 0), EINVAL),
        ("protect", (r, VA, 0x1000, -1), EINVAL),
        ("split", (r, VA), EINVAL),  # a 4 KiB leaf
        ("collapse", (r, VA, 1), EINVAL),
        ("collapse", (r, VA, 2), EINVAL),  # the table is not full
        ("protect_table", (r, VA, 1, 0), EINVAL),
        ("free_data", (frame, 0), EBUSY),
        ("free_data", (s.mms[0], 0), EINVAL),
        ("translate", (r, VA, Access("q")), EINVAL),
        ("translate", (r, -5, Access("r")), EINVAL),
    ]


@pytest.fixture(scope="module")
def busy_state():
    return mapped()


@pytest.mark.parametrize("case", range(20))
def test_bad_input_raises_a_typed_error_and_changes_nothing(busy_state, case):
    s, frame = busy_state
    op, args, error = _bad_calls(s, frame)[case]
    with pytest.raises(error):
        getattr(spec, op)(s, *args)
    impl = reg.impl_factory(X86)
    f = impl.alloc_data(0)
    impl.map(impl.mms[0], VA, f, 0x1000, pte.PAGE_SHARED)
    before = impl.abstract()
    assert before == s and f == frame
    with pytest.raises(error):
        getattr(impl, op)(*args)
    assert impl.abstract() == before


def test_unknown_mode_is_einval():
    with pytest.raises(EINVAL):
        spec.init(PagingConfig("sparc-srmmu"))
    with pytest.raises(EINVAL):
        reg.impl_factory(PagingConfig("sparc-srmmu"))


# ---------------------------------------------------------------------------------------------
# The teaching mode against a textbook exercise (OSTEP ch. 20, "paging-multilevel-translate")


def ostep_state():
    """PDBR = page 108; PDE 24 = 0xa1 (valid, pfn 33); page 33's PTE 8 = 0xb5 (valid, pfn 53);
    PDE 15 = 0xd6 (valid, pfn 86) whose PTE 13 = 0x7f (invalid)."""
    s = spec.init(PagingConfig("toy", spec.toy_machine(128), 0))
    tables = Map({
        108: spec.Table(2, 108, 0, Map({24: 0xA1, 15: 0xD6})),
        33: spec.Table(1, 108, 1, Map({8: 0xB5})),
        86: spec.Table(1, 108, 1, Map({13: 0x7F})),
    })
    return spec.replace(s, tables=tables, mms=(108,), nr_pagetable=3)


def test_teaching_mode_hand_worked_translation():
    """VA 0x611c: PDE index 0x611c >> 10 = 24, PTE index (0x611c >> 5) & 31 = 8, offset 0x1c;
    PDE 0xa1 -> pfn 0x21 = 33; PTE 0xb5 -> pfn 0x35 = 53; PA = 53 * 32 + 0x1c = 0x6bc."""
    s = ostep_state()
    assert spec.split_vaddr(s.mode, 0x611C) == (24, 8, 0x1C)
    w = spec.walk(s, 108, 0x611C)
    assert [(st.index, st.raw) for st in w.steps] == [(24, 0xA1), (8, 0xB5)]
    assert w.paddr == 0x6BC


def test_teaching_mode_hand_worked_fault():
    """VA 0x3da8: PDE index 15 (0xd6: valid, pfn 86), PTE index 13 (0x7f: invalid) -> fault."""
    s = ostep_state()
    assert spec.split_vaddr(s.mode, 0x3DA8) == (15, 13, 8)
    w = spec.walk(s, 108, 0x3DA8)
    assert w.fault == "#PF" and w.steps[-1].raw == 0x7F and w.paddr is None
    assert spec.walk(s, 108, 0x8000).fault == "#GP"  # beyond the 15-bit address space


# ---------------------------------------------------------------------------------------------
# ARM64


def test_arm64_ttbr_split_and_fault_status_codes():
    cfg = PagingConfig("arm64-4k", reg.SMALL, 2)
    s = spec.init(cfg)
    kernel, user = s.mms
    s, f = spec.alloc_data(s, 0)
    s, _ = spec.map(s, user, 0x400000, f, 0x1000, pte.ARM64_PAGE_READONLY)
    s, pa = spec.translate(s, user, 0x400123, Access("r"))
    assert pa == (f << 12) + 0x123
    with pytest.raises(PageFault) as e:  # a write to a read-only page: permission fault, level 3
        spec.translate(s, user, 0x400000, Access("w"))
    assert e.value.error_code == spec.ESR_FSC_PERM + 3 | spec.ESR_WNR
    with pytest.raises(PageFault) as e:  # nothing at level 1 for this address: translation, level 1
        spec.translate(s, user, 0x40000000, Access("r"))
    assert e.value.error_code == spec.ESR_FSC_TRANSLATION + 1
    s, g = spec.alloc_data(s, 0)
    s, _ = spec.map(s, kernel, 0xFFFF000000001000, g, 0x1000, pte.ARM64_PAGE_KERNEL)
    s, pa = spec.translate(s, user, 0xFFFF000000001000, Access("r", user=False))  # via TTBR1
    assert pa == g << 12
    with pytest.raises(EINVAL):
        spec.map(s, user, 0xFFFF000000002000, g, 0x1000, pte.ARM64_PAGE_KERNEL)


# ---------------------------------------------------------------------------------------------
# Views


def test_pagemap_entry_bits():
    s, frame = mapped()
    e = spec.pagemap_entry(s, s.mms[0], VA)
    assert e == spec.PM_PRESENT | spec.PM_MMAP_EXCLUSIVE | frame
    assert spec.pagemap_entry(s, s.mms[0], VA, cap_sys_admin=False) == spec.PM_PRESENT | spec.PM_MMAP_EXCLUSIVE
    assert spec.pagemap_entry(s, s.mms[0], VA + 0x1000) == 0
    s, _ = spec.map(s, s.mms[0], VA + 0x1000, frame, 0x1000, pte.PAGE_READONLY)  # mapped twice
    assert spec.pagemap_entry(s, s.mms[0], VA) == spec.PM_PRESENT | frame


def test_walk_diagram_and_explain():
    s, frame = mapped()
    text = spec.walk_diagram(s, s.mms[0], VA + 0x678, Access("r"))
    assert "PGD" in text and "PTE" in text and f"physical address {(frame << 12) + 0x678:#x}" in text
    from mmspec.explain.paging import explain

    for mode in ("x86-64-4level", "x86-64-5level", "arm64-4k"):
        out = explain(0, args=(0x7FFD12345678,), mode=mode)
        assert "0x7ffd12345678" in out and "physical address" in out
    assert explain(3) == explain(3)


def test_impl_translate_many_matches_single_translations():
    import numpy as np

    impl = reg.impl_factory(X86)
    f = impl.alloc_data(9)
    impl.map(impl.mms[0], 0x7F0000200000, f, 0x200000, pte.PAGE_SHARED, 0x200000)
    g = impl.alloc_data(0)
    impl.map(impl.mms[0], VA, g, 0x1000, pte.PAGE_READONLY)
    vas = np.array([0x7F0000200000, 0x7F00003FFFFF, VA + 5, VA + 0x1000, 0x0000800000000000], dtype=np.uint64)
    batch = impl.translate_many(impl.mms[0], vas, Access("r"))
    assert batch.paddrs.tolist()[:3] == [f << 12, (f << 12) + 0x1FFFFF, (g << 12) + 5]
    assert batch.codes.tolist() == [-1, -1, -1, 4, -2]


@pytest.mark.layer("doctests")
def test_docs_page_examples_run():
    """Every >>> example of docs/paging.md runs and prints what the page says."""
    import doctest
    from pathlib import Path

    from mmspec.tally import tally

    page = Path(__file__).resolve().parent.parent / "docs" / "paging.md"
    result = doctest.testfile(str(page), module_relative=False, report=True, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in docs/paging.md failed"
    tally("examples", result.attempted)
