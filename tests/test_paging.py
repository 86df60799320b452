"""Paging: invariants, lockstep with the impl, every fault code, bad input, hand-worked walks.

The two state machines come from the shared harness fed with paging's strategies
(:mod:`mmspec.mechanisms.paging`); they run every mode, and once more per mode so that each
preset (x86-64 4/5-level, x86 32-bit and PAE, ARM64 4/16/64 KiB, the teaching modes) gets
its share of steps.  The scenario tests below check the
page walk against the Intel SDM rules worked out by hand, one fault-code bit at a time, and
the teaching mode against a textbook exercise (OSTEP ch. 20: a two-level table with a given
page-directory base), and a configured three-level teaching mode against an exercise of the
same kind worked out by hand.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from immutables import Map

from mmspec.machines import invariant_machine, lockstep_machine, run_machine
from mmspec.mechanisms import paging as reg
from spec import pte
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


@pytest.mark.layer("invariants")
@pytest.mark.parametrize("mode", sorted(spec.MODES))
def test_invariants_hold_in_each_mode(mode):
    """The same machine with the mode fixed, so every preset gets its share of steps."""
    machine = invariant_machine(f"PagingInvariants_{mode.replace('-', '_')}", spec, reg.config_for(mode), reg.steps,
                                reg.render)
    run_machine(machine, settings(settings.default, max_examples=15))


@pytest.mark.layer("lockstep")
@pytest.mark.parametrize("mode", sorted(spec.MODES))
def test_impl_agrees_with_spec_in_each_mode(mode):
    machine = lockstep_machine(f"PagingLockstep_{mode.replace('-', '_')}", spec, reg.impl_factory,
                               reg.config_for(mode), reg.steps, reg.render)
    run_machine(machine, settings(settings.default, max_examples=15))


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


def test_teaching_mode_is_configured_data():
    """The OSTEP preset is teaching_mode() with the homework's numbers; bad combinations are EINVAL."""
    assert spec.MODES["toy"] == spec.teaching_mode("toy", va_bits=15, page_size=32, level_bits=(5, 5), entry_bytes=1,
                                                   valid_bit=7, pfn_bits=7, phys_bits=12)
    for bad in (dict(va_bits=16), dict(page_size=48), dict(level_bits=(6, 5), va_bits=16),  # 64 entries > 32 bytes
                dict(valid_bit=8), dict(pfn_bits=6), dict(valid_bit=3), dict(level_bits=())):
        with pytest.raises(EINVAL):
            spec.teaching_mode(**bad)


def three_level_state():
    """A textbook-style exercise on a configured teaching mode: 16-bit addresses, 64-byte pages,
    2 + 4 + 4 index bits, 2-byte entries (bit 15 valid, bits 0..9 the PFN).  The page-directory
    base register holds page 17.  Directory entry 2 = 0x8005 (valid, pfn 5); page 5's entry 15 =
    0x8009 (valid, pfn 9); page 9's entry 11 = 0x803a (valid, pfn 58), entry 12 = 0x003a (invalid)."""
    s = spec.init(PagingConfig("toy-3level", spec.toy_machine(1024), 0))
    tables = Map({
        17: spec.Table(3, 17, 0, Map({2: 0x8005})),
        5: spec.Table(2, 17, 1, Map({15: 0x8009})),
        9: spec.Table(1, 17, 1, Map({11: 0x803A, 12: 0x003A})),
    })
    return spec.replace(s, tables=tables, mms=(17,), nr_pagetable=3)


def test_configured_teaching_mode_hand_worked_translation():
    """VA 0xbeef = 0b10_1111_1011_101111: top index 0b10 = 2, middle 0b1111 = 15, last 0b1011 =
    11, offset 0b101111 = 0x2f.  Entry 0x8005 -> pfn 5; 0x8009 -> pfn 9; 0x803a -> pfn 58;
    PA = 58 * 64 + 0x2f = 0xe80 + 0x2f = 0xeaf."""
    s = three_level_state()
    assert spec.split_vaddr(s.mode, 0xBEEF) == (2, 15, 11, 0x2F)
    w = spec.walk(s, 17, 0xBEEF)
    assert [(st.table, st.index, st.raw) for st in w.steps] == [(17, 2, 0x8005), (5, 15, 0x8009), (9, 11, 0x803A)]
    assert w.paddr == 0xEAF
    assert all(inv(s) for inv in (spec.inv_tables_typed, spec.inv_refcounts, spec.inv_entries_fit))


def test_configured_teaching_mode_hand_worked_faults():
    """VA 0xbf2f: same path, last index 12 (0x003a: valid bit clear) -> fault at the last level.
    VA 0x1234: top index 0 -> an invalid directory entry: fault after one read."""
    s = three_level_state()
    w = spec.walk(s, 17, 0xBF2F)
    assert spec.split_vaddr(s.mode, 0xBF2F) == (2, 15, 12, 0x2F)
    assert w.fault == "#PF" and len(w.steps) == 3 and w.steps[-1].raw == 0x3A
    assert spec.split_vaddr(s.mode, 0x1234) == (0, 4, 8, 0x34)
    assert len(spec.walk(s, 17, 0x1234).steps) == 1
    assert spec.walk(s, 17, 0x10000).fault == "#GP"  # beyond the 16-bit address space


# ---------------------------------------------------------------------------------------------
# Legacy x86: 32-bit paging and PAE


X32 = PagingConfig("x86-32", reg.MACHINES["x86-32"][0])
PAE = PagingConfig("x86-pae", reg.MACHINES["x86-pae"][0])
VA32 = 0x0804A000
SHARED32 = pte.PAGE_SHARED & ~pte._PAGE_NX


def test_x86_32_split_and_4k_walk():
    """0x0804a123: PDE index bits 31..22 = 0x020 = 32, PTE index bits 21..12 = 0x04a = 74,
    offset 0x123; the entries are 32 bits wide and the walk sets A (and D on a write)."""
    m = spec.MODES["x86-32"]
    assert spec.split_vaddr(m, 0x0804A123) == (32, 74, 0x123)
    s, frame = mapped(X32, SHARED32, va=VA32)
    s, pa = spec.translate(s, s.mms[0], VA32 + 0x123, Access("w"))
    assert pa == (frame << 12) + 0x123
    w = spec.walk(s, s.mms[0], VA32)
    assert w.steps[0].raw == (w.steps[1].table << 12) | 0x67 and w.steps[1].raw == (frame << 12) | 0x67
    assert spec.inv_entries_fit(s)


def test_x86_32_pse_4mib_page_and_cr4_pse():
    """A 4 MiB PDE (PS) maps with a 22-bit offset; bits 13..21 of it are reserved (RSVD fault);
    with CR4.PSE = 0 the PS bit is ignored, the PDE names a 'table' (the data frame), which the
    model reads as zeros: a not-present fault at the PTE level."""
    s, frame = mapped(X32, SHARED32, order=10, page_size=0x400000, va=0x40000000)
    assert frame % 1024 == 0
    s, pa = spec.translate(s, s.mms[0], 0x40000000 + 0x3FFFFF, Access("r"))
    assert pa == (frame << 12) + 0x3FFFFF
    w = spec.walk(s, s.mms[0], 0x40000000, Access("r", pse=False))
    assert w.fault == "#PF" and w.error_code == 0x4 and len(w.steps) == 2 and w.steps[1].table == frame
    root = s.mms[0]
    t = s.tables[root]
    bad = spec.replace(s, tables=s.tables.set(root, t._replace(entries=t.entries.set(256, t.entries[256] | 1 << 13))))
    assert fault(bad, 0x40000000, Access("r")) == 0x4 | 0x1 | 0x8  # U P RSVD
    impl = reg.impl_factory(X32)
    impl.alloc_data(10)
    impl.map(impl.mms[0], 0x40000000, frame, 0x400000, SHARED32, 0x400000)
    assert impl.translate(impl.mms[0], 0x40000000 + 0x3FFFFF, Access("r")) == pa
    assert impl.touch(impl.mms[0], 0x40000000, Access("r", pse=False)) == spec.Outcome(None, "#PF", 0x4, 0x40000000)


def test_x86_32_has_no_nx():
    """No NX bit: a user fetch from a user page succeeds; a fetch fault sets I only under SMEP
    (SDM 4.7: NXE counts only with PAE or 4-level paging); an NX prot is EINVAL."""
    s, frame = mapped(X32, SHARED32, va=VA32)
    s, pa = spec.translate(s, s.mms[0], VA32, Access("x"))
    assert pa == frame << 12
    assert fault(s, VA32 + 0x1000, Access("x", smep=False)) == 0x4
    assert fault(s, VA32 + 0x1000, Access("x", smep=True)) == 0x14
    with pytest.raises(EINVAL):
        spec.map(s, s.mms[0], VA32 + 0x1000, frame, 0x1000, pte.PAGE_SHARED)
    with pytest.raises(EINVAL):
        spec.protect_table(s, s.mms[0], VA32, 2, pte._PAGE_NX)


def test_pae_walk_pdpte_and_nx():
    """0xc0001234: PDPT index bits 31..30 = 3, PD index bits 29..21 = 0, PT index bits 20..12 =
    1, offset 0x234.  The PDPTE is P + address only (Linux's pud_populate on PAE) and never gets
    A; NX works under EFER.NXE and is a reserved bit without it."""
    m = spec.MODES["x86-pae"]
    assert spec.split_vaddr(m, 0xC0001234) == (3, 0, 1, 0x234)
    s, frame = mapped(PAE, pte.PAGE_SHARED, va=0xC0001000)
    s, pa = spec.translate(s, s.mms[0], 0xC0001234, Access("w"))
    assert pa == (frame << 12) + 0x234
    w = spec.walk(s, s.mms[0], 0xC0001234)
    assert w.steps[0].raw == (w.steps[1].table << 12) | 0x1  # no A written into the PDPTE
    assert w.steps[2].raw & (pte._PAGE_ACCESSED | pte._PAGE_DIRTY) == 0x60
    assert fault(s, 0xC0001234, Access("x", smep=False)) == 0x1 | 0x4 | 0x10  # P U I: NX
    assert fault(s, 0xC0001234, Access("r", nxe=False)) == 0x1 | 0x4 | 0x8  # NX is reserved without NXE
    with pytest.raises(EINVAL):
        spec.map(s, s.mms[0], 0xC0002000, frame, 0x1000, pte.PAGE_SHARED | (1 << 59))  # no protection keys
    with pytest.raises(EINVAL):
        spec.protect_table(s, s.mms[0], 0xC0001000, 3, pte._PAGE_RW)  # a PDPTE has no rights


def test_pae_reserved_pdpte_is_gp_and_2mib_leaf():
    """A PDPTE with RW set has a reserved bit: the PDPTE load at MOV to CR3 raises #GP(0)."""
    s, frame = mapped(PAE, pte.PAGE_SHARED, order=9, page_size=0x200000, va=0x40000000)
    s, pa = spec.translate(s, s.mms[0], 0x401FFFFF, Access("r"))
    assert pa == (frame << 12) + 0x1FFFFF
    root = s.mms[0]
    t = s.tables[root]
    bad = spec.replace(s, tables=s.tables.set(root, t._replace(entries=t.entries.set(1, t.entries[1] | pte._PAGE_RW))))
    with pytest.raises(GeneralProtection):
        spec.translate(bad, root, 0x40000000, Access("r"))
    impl = reg.impl_factory(PAE)
    impl.alloc_data(9)
    impl.map(impl.mms[0], 0x40000000, frame, 0x200000, pte.PAGE_SHARED, 0x200000)
    impl._put(root, 1, impl._get(root, 1) | pte._PAGE_RW)
    assert impl.touch(root, 0x40000000, Access("r")).fault == "#GP"


# ---------------------------------------------------------------------------------------------
# ARM64 granules


def test_arm64_16k_and_64k_splits_and_blocks():
    """16 KiB granule: offset bits 13..0, then 11 bits per level and 1 bit (47) at level 0:
    0x7ffd12345678 -> (0, 0x7ff, 0x689, 0xd1, 0x1678).  64 KiB granule: offset bits 15..0,
    13 bits per level, 6 bits (47..42) at level 1: -> (0x1f, 0x1fe8, 0x1234, 0x5678).
    Blocks: 32 MiB at level 2 (16K), 512 MiB at level 2 (64K); none higher without LPA."""
    m16, m64 = spec.MODES["arm64-16k"], spec.MODES["arm64-64k"]
    assert spec.split_vaddr(m16, 0x7FFD12345678) == (0, 0x7FF, 0x689, 0xD1, 0x1678)
    assert spec.split_vaddr(m64, 0x7FFD12345678) == (0x1F, 0x1FE8, 0x1234, 0x5678)
    assert (m16.va_bits, m64.va_bits, m16.leaf_size(2), m64.leaf_size(2)) == (48, 48, 32 << 20, 512 << 20)
    for m, order in ((m16, 11), (m64, 13)):
        cfg = PagingConfig(m.name, reg.MACHINES[m.name][0])
        size = m.leaf_size(2)
        s = spec.init(cfg)
        s, frame = spec.alloc_data(s, order)
        s, _ = spec.map(s, s.mms[0], 0x7F0000000000, frame, size, pte.ARM64_PAGE_SHARED, size)
        s, pa = spec.translate(s, s.mms[0], 0x7F0000000000 + size - 1, Access("r"))
        assert pa == (frame << m.page_shift) + size - 1
        with pytest.raises(EINVAL):
            spec.map(s, s.mms[0], 0x7F0000000000, frame, m.leaf_size(3), pte.ARM64_PAGE_SHARED, m.leaf_size(3))


def test_arm64_granule_fault_levels_are_arm_levels():
    """Fault status codes carry the Arm lookup level: the last level is 3 for every granule, so
    a missing 64K level-2 table (the walk starts at Arm level 1) is a level-2 translation fault,
    and a block descriptor where none is allowed (64K Arm level 1) a level-1 one."""
    m = spec.MODES["arm64-64k"]
    cfg = PagingConfig(m.name, reg.MACHINES[m.name][0])
    s = spec.init(cfg)
    s, frame = spec.alloc_data(s, 0)
    s, _ = spec.map(s, s.mms[0], 0x7F0000000000, frame, 1 << 16, pte.ARM64_PAGE_SHARED)
    with pytest.raises(PageFault) as e:
        spec.translate(s, s.mms[0], 0x7F0000000000 + (1 << 16), Access("r"))
    assert e.value.error_code == spec.ESR_FSC_TRANSLATION + 3
    with pytest.raises(PageFault) as e:
        spec.translate(s, s.mms[0], 0x7F0000000000 + (1 << 29), Access("r"))
    assert e.value.error_code == spec.ESR_FSC_TRANSLATION + 2
    root = s.mms[0]
    t = s.tables[root]
    block = pte.arm64_leaf(0, pte.ARM64_PAGE_SHARED, 3, page_shift=16)
    bad = spec.replace(s, tables=s.tables.set(root, t._replace(entries=t.entries.set(0, block))))
    with pytest.raises(PageFault) as e:
        spec.translate(bad, root, 0x1000, Access("r"))
    assert e.value.error_code == spec.ESR_FSC_TRANSLATION + 1
    impl = reg.impl_factory(cfg)
    impl.alloc_data(0)
    impl.map(root, 0x7F0000000000, frame, 1 << 16, pte.ARM64_PAGE_SHARED)
    assert impl.touch(root, 0x7F0000000000 + (1 << 29), Access("r")).error_code == spec.ESR_FSC_TRANSLATION + 2


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

    for mode in ("x86-64-4level", "x86-64-5level", "arm64-4k", "arm64-16k", "arm64-64k"):
        out = explain(0, args=(0x7FFD12345678,), mode=mode)
        assert "0x7ffd12345678" in out and "physical address" in out
    for mode in ("x86-32", "x86-pae"):
        for seed in range(4):
            out = explain(seed, mode=mode)
            assert "0x804a123" in out and "physical address" in out
    assert "physical address 0x6bc" not in explain(0, mode="toy") and "index fields: PD 24 | PT 8" in explain(0, mode="toy")
    assert "index fields: L3 2 | L2 15 | L1 11 | offset 0x2f" in explain(0, mode="toy-3level")
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


@pytest.mark.parametrize("mode", ["x86-64-4level", "x86-32", "arm64-16k", "toy-3level"])
def test_impl_batched_map_matches_the_page_by_page_spec(mode):
    """A range crossing a table boundary through map, and map_many with a hole, a jump and a
    failing page in the middle: the same tables, entries and error as the spec's loop."""
    import numpy as np

    cfg = PagingConfig(mode, reg.TEACHING.get(mode) or reg.SMALL)
    s, impl = spec.init(cfg), reg.impl_factory(cfg)
    m = s.mode
    ps, per_table = m.page_size, 1 << m.bits(1)
    prot = (pte.PAGE_SHARED & spec._prot_mask(m)) if m.x86 else pte.ARM64_PAGE_SHARED if m.fmt == "arm64" else 0
    s, f = spec.alloc_data(s, 4)
    assert impl.alloc_data(4) == f
    va = reg._bases(m)[0] + (per_table - 3) * ps  # 3 pages in one table, 5 in the next
    s, _ = spec.map(s, s.mms[0], va, f, 8 * ps, prot)
    impl.map(impl.mms[0], va, f, 8 * ps, prot)
    assert impl.abstract() == s
    va2 = va + 64 * ps
    vas = [va2, va2 + ps, va2 + 5 * ps, va2 + 6 * ps, va2 + 7 * ps]
    pfns = [f + 8, f + 9, f + 10, f + 3, f + 12]  # f + 3 is mapped already: fine; then a jump
    bad = [f + 13, 10**6]  # the second frame is beyond memory: EINVAL after the first is mapped
    for k, (va_, pfn) in enumerate(zip(vas + [va2 + 9 * ps, va2 + 10 * ps], pfns + bad)):
        try:
            s, _ = spec.map(s, s.mms[0], va_, pfn, ps, prot)
        except EINVAL:
            assert k == 6
    with pytest.raises(EINVAL):
        impl.map_many(impl.mms[0], np.array(vas + [va2 + 9 * ps, va2 + 10 * ps], dtype=np.uint64), pfns + bad, prot)
    assert impl.abstract() == s


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
