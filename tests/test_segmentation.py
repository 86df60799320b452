"""Segmentation: invariants, lockstep with the impl, the SDM's rules on worked examples, bad input.

The two state machines come from the shared harness fed with the strategies of
:mod:`mmspec.mechanisms.segmentation`.  The scenario tests each set up a processor from a
preset and check one rule of Intel SDM Vol. 3A chapters 3 and 5, worked out by hand; the Linux
ones match what the live kernel shows (tests/oracle/test_segmentation.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from mmspec.machines import invariant_machine, lockstep_machine, run_machine
from mmspec.mechanisms import segmentation as reg
from mmspec.tally import tally
from spec import segmentation as spec
from spec.errors import EINVAL, GeneralProtection, InvalidOpcode, MMError

SegInvariants = invariant_machine("SegInvariants", spec, reg.config, reg.steps, reg.render)
SegLockstep = lockstep_machine("SegLockstep", spec, reg.impl_factory, reg.config, reg.steps, reg.render)


@pytest.mark.layer("invariants")
def test_invariants_hold_after_every_step():
    run_machine(SegInvariants)


@pytest.mark.layer("lockstep")
def test_impl_agrees_with_spec_at_every_step():
    run_machine(SegLockstep)


def fault(call, *args):
    """(type name, error code) of the fault ``call(*args)`` raises."""
    with pytest.raises(MMError) as info:
        call(*args)
    return type(info.value).__name__, getattr(info.value, "error_code", None)


# ---------------------------------------------------------------------------------------------
# Loads on Linux's GDT at CPL 3 (what the oracle also sees on the live kernel)

LINUX_LOADS = [  # selector, DS outcome, SS outcome
    (0x00, None, ("GeneralProtection", 0)),
    (0x03, None, ("GeneralProtection", 0)),
    (0x10, ("GeneralProtection", 0x10), ("GeneralProtection", 0x10)),  # __KERNEL_CS, DPL 0
    (0x18, ("GeneralProtection", 0x18), ("GeneralProtection", 0x18)),  # __KERNEL_DS, DPL 0
    (0x23, None, ("GeneralProtection", 0x20)),  # __USER32_CS: readable code, not writable data
    (0x2B, None, None),  # __USER_DS
    (0x28, None, ("GeneralProtection", 0x28)),  # RPL 0 <= DPL 3 for DS; SS needs RPL = CPL
    (0x33, None, ("GeneralProtection", 0x30)),  # __USER_CS
    (0x38, ("GeneralProtection", 0x38), ("GeneralProtection", 0x38)),  # unused entry: type 0 system
    (0x40, ("GeneralProtection", 0x40), ("GeneralProtection", 0x40)),  # TSS
    (0x63, ("GeneralProtection", 0x60), ("GeneralProtection", 0x60)),  # empty TLS slot
    (0x7B, None, ("GeneralProtection", 0x78)),  # CPUNODE: read-only data
    (0x83, ("GeneralProtection", 0x80), ("GeneralProtection", 0x80)),  # beyond GDT_ENTRIES
    (0x07, ("GeneralProtection", 0x04), ("GeneralProtection", 0x04)),  # LDT with a null LDTR
]


@pytest.mark.parametrize(("sel", "ds", "ss"), LINUX_LOADS)
def test_linux_user_loads(sel, ds, ss):
    s = spec.init("linux-user")
    for reg_name, want in (("DS", ds), ("SS", ss)):
        if want is None:
            spec.load_segment(s, reg_name, sel)
        else:
            assert fault(spec.load_segment, s, reg_name, sel) == want


def test_linux_selectors_and_lar():
    s = spec.init("linux-user")
    assert [r.selector for r in s.regs] == [0, 0x33, 0x2B, 0, 0, 0]
    assert spec.lar(s, 0x23)[1] == 0xC0FB00 and spec.lar(s, 0x2B)[1] == 0xC0F300
    assert spec.lar(s, 0x7B)[1] == 0x40F500 and spec.lsl(s, 0x7B)[1] == 0  # cpu 0, node 0
    assert spec.lsl(s, 0x33)[1] == 0xFFFFFFFF
    assert all(spec.lar(s, sel)[1] is None for sel in (0x10, 0x18, 0x40, 0x80))


# ---------------------------------------------------------------------------------------------
# The privilege rule (§5.6): max(CPL, RPL) <= DPL


def test_rpl_defends_the_confused_deputy():
    """Ring 0 may load its own data segment, but not through a selector a ring-3 caller passed
    (RPL 3): the load is checked at max(CPL, RPL) = 3 > DPL 0."""
    s = spec.init("flat-32-ring0")
    spec.load_segment(s, "DS", 0x10)
    assert fault(spec.load_segment, s, "DS", 0x13) == ("GeneralProtection", 0x10)
    spec.load_segment(s, "DS", 0x23)  # the caller's own DPL-3 segment is fine


def test_conforming_code_ignores_privilege_for_data_loads():
    s = spec.init("flat-32-ring3")
    s2, _ = spec.load_segment(s, "DS", 0x3B)  # conforming readable code, DPL 0
    assert s2.regs[spec.DS].selector == 0x3B
    assert fault(spec.load_segment, s, "DS", 0x43) == ("GeneralProtection", 0x40)  # execute-only


def test_not_present_is_np_for_data_and_ss_for_stack():
    s = spec.init("flat-32-ring3")
    assert fault(spec.load_segment, s, "DS", 0x63) == ("SegmentNotPresent", 0x60)
    assert fault(spec.load_segment, s, "SS", 0x63) == ("StackFault", 0x60)


def test_load_sets_the_accessed_bit_and_edits_do_not_reload():
    s = spec.init("flat-32-ring3")
    assert not spec.decode_descriptor(s.gdt[10]).type & spec.TYPE_ACCESSED
    s, _ = spec.load_segment(s, "ES", 0x53)
    assert spec.decode_descriptor(s.gdt[10]).type & spec.TYPE_ACCESSED
    cached = s.regs[spec.ES]
    s, _ = spec.write_descriptor(s, "gdt", 10, 0)
    assert s.regs[spec.ES] == cached  # §3.4.3: the hidden part is not re-read
    assert fault(spec.load_segment, s, "ES", 0x53) == ("GeneralProtection", 0x50)


# ---------------------------------------------------------------------------------------------
# Limits (§3.4.5, §5.3)


def test_granularity_scales_the_limit():
    s = spec.init("flat-32-ring3")  # DS: limit 0xFFFFF, G = 1 -> 4 GiB
    assert spec.access(s, "DS", 0xFFFFFFFC, 4, "write")[1] == 0xFFFFFFFC
    s, _ = spec.load_segment(s, "DS", 0x6B)  # limit field 3, G = 1 -> 0x3FFF, base 4 MiB
    assert spec.access(s, "DS", 0x3FFF, 1, "read")[1] == 0x403FFF
    assert fault(spec.access, s, "DS", 0x3FFF, 2, "read") == ("GeneralProtection", 0)


def test_expand_down_limits():
    s = spec.init("flat-32-ring3")
    s, _ = spec.load_segment(s, "ES", 0x53)  # expand-down, limit 0xFFF, B = 1
    assert fault(spec.access, s, "ES", 0xFFF, 1, "read") == ("GeneralProtection", 0)
    assert spec.access(s, "ES", 0x1000, 4, "write")[1] == 0x1000
    assert spec.access(s, "ES", 0xFFFFFFFC, 4, "write")[1] == 0xFFFFFFFC
    s, _ = spec.load_segment(s, "SS", 0x5B)  # expand-down, G = 1 limit 0xFFFF, B = 0: empty
    assert fault(spec.access, s, "SS", 0x8000, 2, "write") == ("StackFault", 0)


def test_type_checks():
    s = spec.init("flat-32-ring3")
    assert fault(spec.access, s, "FS", 0, 4, "write") == ("GeneralProtection", 0)  # read-only data
    assert fault(spec.access, s, "CS", 0, 4, "write") == ("GeneralProtection", 0)  # code
    assert spec.access(s, "FS", 0x10, 4, "read")[1] == 0x10010
    s, _ = spec.load_segment(s, "ES", 0)
    assert fault(spec.access, s, "ES", 0, 1, "read") == ("GeneralProtection", 0)  # null selector


# ---------------------------------------------------------------------------------------------
# 64-bit mode (§3.4.4, §5.3.1)


def test_64bit_ignores_bases_and_limits_but_checks_canonical():
    cfg = spec.PRESETS["linux-user"]
    gdt = cfg.gdt + (spec.encode_descriptor(0x5000, 0, 0x3, 1, 3, 1, db=1),)  # base 0x5000, limit 0
    s = spec.init(spec.SegConfig("t", True, 3, gdt, (), cfg.selectors, fs_base=0x7F0000000000))
    s, _ = spec.load_segment(s, "DS", 0x83)
    assert spec.access(s, "DS", 0x10000, 8, "write")[1] == 0x10000  # no base, no limit
    assert spec.access(s, "FS", 0x28, 8, "read")[1] == 0x7F0000000028
    assert fault(spec.access, s, "DS", 1 << 47, 8, "read") == ("GeneralProtection", 0)
    assert fault(spec.access, s, "SS", 1 << 47, 8, "read") == ("StackFault", 0)
    assert fault(spec.access, s, "DS", (1 << 47) - 4, 8, "read") == ("GeneralProtection", 0)  # last byte
    assert fault(spec.access, s, "FS", 0x10000000000, 8, "read") == ("GeneralProtection", 0)
    s, _ = spec.load_segment(s, "GS", 0x83)  # a load sets the hidden base from the descriptor
    assert spec.access(s, "GS", 0x10, 1, "read")[1] == 0x5010


def test_la57_widens_the_canonical_range():
    cfg = spec.PRESETS["linux-user"]
    s = spec.init(spec.SegConfig("la57", True, 3, cfg.gdt, (), cfg.selectors, la57=True))
    assert spec.access(s, "DS", 1 << 47, 8, "read")[1] == 1 << 47
    assert fault(spec.access, s, "DS", 1 << 56, 8, "read") == ("GeneralProtection", 0)


def test_write_base():
    s = spec.init("linux-user")
    s, _ = spec.write_base(s, "GS", 0xFFFF800000000000)
    assert s.regs[spec.GS].base == 0xFFFF800000000000
    assert fault(spec.write_base, s, "FS", 1 << 47) == ("GeneralProtection", 0)
    with pytest.raises(InvalidOpcode):
        spec.write_base(spec.init("linux-compat"), "FS", 0)


def test_null_ss_in_64bit_mode_only_below_ring_3():
    s = spec.init("linux-kernel")
    s2, _ = spec.load_segment(s, "SS", 0)
    assert not s2.regs[spec.SS].usable and spec.inv_ss_at_cpl(s2)
    assert fault(spec.load_segment, s, "SS", 3) == ("GeneralProtection", 0)  # RPL != CPL


# ---------------------------------------------------------------------------------------------
# Far transfers (§5.8)


def test_far_jmp_rules():
    s = spec.init("flat-32-ring3")
    s2, t = spec.far_jmp(s, 0x38, 0x100)  # conforming DPL 0: CPL stays 3, CS.RPL := 3
    assert t == spec.FarTransfer(0x3B, 0x100, 3, False) and s2.cpl == 3
    assert fault(spec.far_jmp, s, 0x08, 0) == ("GeneralProtection", 0x08)  # nonconforming DPL 0
    assert fault(spec.far_jmp, spec.init("flat-32-ring0"), 0x1B, 0) == ("GeneralProtection", 0x18)
    assert fault(spec.far_jmp, s, 0, 0) == ("GeneralProtection", 0)
    small = spec.SegConfig("small-cs", False, 3, spec.TEACHING_GDT + (spec.encode_descriptor(0, 0xFFF, 0xA, 1, 3, 1, db=1),),
                           (), (0x23, 0x1B, 0x23, 0x23, 0, 0))
    assert fault(spec.far_jmp, spec.init(small), 0x93, 0x1000) == ("GeneralProtection", 0)  # EIP beyond the limit
    assert spec.far_jmp(spec.init(small), 0x93, 0xFFF)[1].cs == 0x93


def test_ia32e_call_gate_raises_privilege_and_nulls_ss():
    s = spec.init("ia32e-gates")
    s2, t = spec.far_call(s, 0x63, 0)
    assert t == spec.FarTransfer(0x10, 0xFFFFFFFF81000000, 0, True)
    assert s2.cpl == 0 and s2.regs[spec.SS] == spec.SegReg(0, 0, 0, 0)
    assert all(inv(s2) for _, inv, _ in _invariants())
    assert fault(spec.far_jmp, s, 0x63, 0) == ("GeneralProtection", 0x10)  # JMP never raises privilege
    assert fault(spec.far_call, s, 0x83, 0) == ("SegmentNotPresent", 0x80)


def test_legacy_inner_call_gate_is_not_modelled():
    with pytest.raises(EINVAL):
        spec.far_call(spec.init("flat-32-ring3"), 0x73, 0)
    s, t = spec.far_call(spec.init("flat-32-ring3"), 0x7B, 0)  # gate to conforming code: same CPL
    assert t == spec.FarTransfer(0x3B, 0x2000, 3, False)


def _invariants():
    from mmspec.machines import spec_invariants

    return spec_invariants(spec)


# ---------------------------------------------------------------------------------------------
# Bad input: a typed error, and the state exactly as it was, in the spec and the impl

BAD_CALLS = [
    ("load_segment", ("CS", 0x33), InvalidOpcode),
    ("load_segment", ("XS", 0x2B), EINVAL),
    ("load_segment", ("DS", -1), EINVAL),
    ("load_segment", ("DS", 0x10000), EINVAL),
    ("load_segment", ("DS", True), EINVAL),
    ("load_segment", ("DS", "0x2b"), EINVAL),
    ("access", ("DS", 1 << 64, 1, "read"), EINVAL),
    ("access", ("DS", 0, 0, "read"), EINVAL),
    ("access", ("DS", 0, 4, "fetch"), EINVAL),
    ("access", ("DS", 0, 4, "exec"), EINVAL),
    ("far_jmp", (0x33, -1), EINVAL),
    ("write_descriptor", ("idt", 0, 0), EINVAL),
    ("write_descriptor", ("gdt", 16, 0), EINVAL),
    ("write_descriptor", ("gdt", 1, 1 << 64), EINVAL),
    ("write_base", ("DS", 0), EINVAL),
    ("write_base", ("FS", -1), EINVAL),
    ("write_base", ("FS", 1 << 47), GeneralProtection),
    ("load_segment", ("SS", 0x63), GeneralProtection),
]


@pytest.mark.parametrize("case", range(len(BAD_CALLS)))
def test_bad_input_raises_a_typed_error_and_changes_nothing(case):
    op, args, error = BAD_CALLS[case]
    s = spec.init("linux-user")
    with pytest.raises(error):
        getattr(spec, op)(s, *args)
    impl = reg.impl_factory(s.config)
    before = impl.abstract()
    assert before == s
    with pytest.raises(error):
        getattr(impl, op)(*args)
    assert impl.abstract() == before


def test_unknown_preset_and_unreachable_configs_are_einval():
    with pytest.raises(EINVAL):
        spec.init("no-such-cpu")
    cfg = spec.PRESETS["linux-user"]
    for selectors in ((0, 0x10, 0x2B, 0, 0, 0), (0, 0x33, 0x18, 0, 0, 0), (0, 0x33, 0x2B, 0x10, 0, 0)):
        bad = spec.SegConfig("bad", True, 3, cfg.gdt, (), selectors)
        with pytest.raises(EINVAL):
            spec.init(bad)
        with pytest.raises(EINVAL):
            reg.impl_factory(bad)


# ---------------------------------------------------------------------------------------------
# Batched checks agree with the spec, element by element, error codes included


def _spec_access(state, r, off, size, kind):
    try:
        return spec.access(state, spec.SEG_NAMES[r], off, size, kind)[1], 0
    except MMError as err:
        return 0, spec.fault_vector(err)


@pytest.mark.layer("lockstep")
@pytest.mark.parametrize("name", sorted(spec.PRESETS))
def test_check_many_agrees_with_spec(name):
    rng = np.random.default_rng(7)
    s = spec.init(name)
    impl = reg.impl_factory(s.config)
    n = 3000
    regs = rng.integers(0, 6, n)
    kinds = np.where(regs == spec.CS, rng.integers(0, 3, n), rng.integers(0, 2, n))
    sizes = rng.choice([1, 2, 4, 8, 16], n)
    top = spec.MASK64 if spec.long_mode(s) else spec.MASK32
    offsets = np.concatenate([rng.integers(0, 0x20000, n // 3, dtype=np.uint64),
                              rng.integers(0, top, n - 2 * (n // 3), dtype=np.uint64, endpoint=True),
                              (np.array([(1 << 47) if top == spec.MASK64 else 0x1000], dtype=np.uint64)
                               + rng.integers(-20, 20, n // 3).astype(np.int64).astype(np.uint64))])
    if top == spec.MASK32:
        offsets &= np.uint64(spec.MASK32)
    lin, vec, code = impl.check_many(regs, offsets, sizes, kinds)
    for i in range(n):
        want = _spec_access(s, int(regs[i]), int(offsets[i]), int(sizes[i]), spec.ACCESS_KINDS[kinds[i]])
        assert (int(lin[i]), int(vec[i])) == want, (i, regs[i], hex(offsets[i]), sizes[i], kinds[i])
    assert not code.any()
    tally("steps", n)


@pytest.mark.layer("lockstep")
@pytest.mark.parametrize("name", sorted(spec.PRESETS))
def test_load_many_agrees_with_spec(name):
    s = spec.init(name)
    impl = reg.impl_factory(s.config)
    sels = np.arange(0, 8 * (max(len(s.gdt), len(s.ldt)) + 2))
    regs = [spec.SS, spec.DS, spec.ES, spec.FS, spec.GS]
    for r in regs:
        vec, code = impl.load_many(np.full(sels.shape, r), sels)
        for sel, v, c in zip(sels.tolist(), vec.tolist(), code.tolist(), strict=True):
            try:
                spec.load_segment(s, spec.SEG_NAMES[r], sel)
                want = (0, 0)
            except MMError as err:
                want = (spec.fault_vector(err), err.error_code)
            assert (v, c) == want, (spec.SEG_NAMES[r], hex(sel))
    tally("steps", len(sels) * len(regs))


def test_error_codes_match_in_single_operations():
    for name in sorted(spec.PRESETS):
        s = spec.init(name)
        impl = reg.impl_factory(s.config)
        for sel in range(0, 8 * (len(s.gdt) + 1)):
            for op in ("far_jmp", "far_call"):
                try:
                    want = getattr(spec, op)(s, sel, 0x1000)[1]
                except MMError as err:
                    want = (type(err), getattr(err, "error_code", None))
                fresh = reg.impl_factory(s.config)
                try:
                    got = getattr(fresh, op)(sel, 0x1000)
                except MMError as err:
                    got = (type(err), getattr(err, "error_code", None))
                assert got == want, (name, op, hex(sel))
        assert impl.abstract() == s


# ---------------------------------------------------------------------------------------------
# Views, explain, docs


def test_render_names_every_register_and_entry():
    text = spec.render(spec.init("linux-user"))
    assert "CPL 3, 64-bit mode" in text and "CS 0x0033" in text
    assert "[ 6] sel 0x0030  0x00affb000000ffff  code 64-bit readable accessed DPL3" in text


def test_explain_is_deterministic_and_covers_each_check():
    from mmspec.explain.segmentation import explain

    a, b = explain(seed=3), explain(seed=3)
    assert a == b and explain(seed=4) != a
    assert "linear address" in a
    text = explain(seed=0, preset="flat-32-ring0", selector=0x13, reg="DS")
    assert "#GP(0x10)" in text


@pytest.mark.layer("doctests")
def test_docs_page_examples_run():
    """Every >>> example of docs/segmentation.md runs and prints what the page says."""
    import doctest
    from pathlib import Path

    page = Path(__file__).resolve().parent.parent / "docs" / "segmentation.md"
    result = doctest.testfile(str(page), module_relative=False, report=True, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in docs/segmentation.md failed"
    tally("examples", result.attempted)

