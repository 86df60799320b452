"""Segmentation's registration: its modules, and how tests drive it.

``config`` draws a processor: a preset, or IA-32e (64-bit or compatibility mode, 4- or 5-level
canonical width) or legacy protected mode at CPL 0..3, with a GDT holding a valid CS and SS for
that CPL and random descriptors of every kind (code, data, conforming, expand-down, read-only,
execute-only, not present, byte and page granularity, system descriptors and call gates), and
an LDT.  ``steps(state)`` draws segment loads with every selector of both tables under every
RPL, accesses biased to the edges of each register's limit (and of the canonical range in
64-bit mode), far jumps and calls, table edits, FS/GS base writes, LAR/LSL, and bad input.
"""

from __future__ import annotations

from hypothesis import strategies as st

from mmspec.registry import Mechanism
from spec import segmentation as seg
from spec.segmentation import MASK32, MASK64, PRESETS, SEG_NAMES, SegConfig, encode_descriptor, encode_gate, encode_gate64

MECHANISM = Mechanism(
    name="segmentation",
    title="Segmentation and protection rings (Intel SDM Vol. 3A ch. 3, 5)",
    spec="spec.segmentation",
    impl="impl.segmentation",
    proofs="proofs.segmentation",
    explain="mmspec.explain.segmentation:explain",
    topics=("rings",),
    doctest_modules=("spec.segmentation", "spec.descriptor"),
    contracts=("spec.descriptor",),  # the checks of spec.segmentation take whole states
)

_LIMITS = st.sampled_from([0, 1, 0xF, 0xFF, 0xFFF, 0x1000, 0xFFFF, 0xFFFFF])
_BASES = st.one_of(st.just(0), st.sampled_from([0x1000, 0x10000, 0x400000, 0xFFFFF000]), st.integers(0, MASK32))


@st.composite
def code_data_words(draw) -> int:
    """A code or data descriptor word with random fields, biased to the interesting ones."""
    type_ = draw(st.integers(0, 15))
    return encode_descriptor(
        draw(_BASES), draw(_LIMITS), type_, 1, draw(st.integers(0, 3)), draw(st.sampled_from([1, 1, 1, 0])),
        draw(st.integers(0, 1)), draw(st.integers(0, 1)), draw(st.integers(0, 1)), draw(st.integers(0, 1)),
    )


@st.composite
def system_words(draw, n: int) -> tuple[int, ...]:
    """One or two words: a call gate (legacy or 64-bit) to a random index, or another system type."""
    target = seg.make_selector(draw(st.integers(0, n)), 0, draw(st.integers(0, 3)))
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return encode_gate64(target, draw(st.sampled_from([0, 0x1000, 1 << 47, 0xFFFFFFFF81000000])),
                             draw(st.integers(0, 3)), draw(st.sampled_from([1, 1, 0])))
    if kind == 1:
        return (encode_gate(target, draw(st.sampled_from([0, 0x10, 0xFFFF, 0x100000])),
                            draw(st.sampled_from([0xC, 0x4])), draw(st.integers(0, 3)), draw(st.sampled_from([1, 1, 0]))),)
    return (encode_descriptor(draw(_BASES), draw(_LIMITS), draw(st.integers(0, 15)), 0, draw(st.integers(0, 3)),
                              draw(st.integers(0, 1))),)


@st.composite
def tables(draw, n: int) -> list[int]:
    words: list[int] = []
    while len(words) < n:
        if draw(st.integers(0, 3)) == 0:
            words.extend(draw(system_words(n + 3)))
        else:
            words.append(draw(code_data_words()))
    return words


_START = st.sampled_from([0, 0x1B, 0x1B, 0x23, 0x2B])  # null, data with a base, expand-down, conforming code


@st.composite
def configs(draw) -> SegConfig:
    """A preset, or a drawn processor whose CS and SS are valid at its CPL."""
    if draw(st.integers(0, 3)) == 0:
        return PRESETS[draw(st.sampled_from(sorted(PRESETS)))]
    lma = draw(st.booleans())
    cpl = draw(st.integers(0, 3))
    long = lma and draw(st.sampled_from([True, True, False]))
    conforming = draw(st.integers(0, 4)) == 0
    cs_dpl = draw(st.integers(0, cpl)) if conforming else cpl
    cs = encode_descriptor(draw(_BASES), draw(_LIMITS), 0xA | (4 if conforming else 0), 1, cs_dpl, 1,
                           l=int(long), db=int(not long), g=draw(st.integers(0, 1)))
    ss = encode_descriptor(draw(_BASES), draw(_LIMITS), draw(st.sampled_from([0x2, 0x3, 0x6, 0x7])), 1, cpl, 1,
                           db=draw(st.integers(0, 1)), g=draw(st.integers(0, 1)))
    # Segments every CPL can load (DPL 3): one expand-up with a base, one expand-down, and a
    # readable conforming code segment; then random descriptors of every kind.
    data = encode_descriptor(draw(_BASES.filter(bool)), draw(_LIMITS), draw(st.sampled_from([0x0, 0x2, 0x3])), 1, 3, 1,
                             db=1, g=draw(st.integers(0, 1)))
    down = encode_descriptor(draw(_BASES), draw(_LIMITS), 0x6, 1, 3, 1, db=draw(st.integers(0, 1)), g=draw(st.integers(0, 1)))
    conforming_code = encode_descriptor(0, draw(_LIMITS), 0xE, 1, 0, 1, db=1, g=draw(st.integers(0, 1)))
    gdt = [0, cs, ss, data, down, conforming_code] + draw(tables(draw(st.integers(1, 8))))
    ldt = draw(tables(draw(st.integers(0, 4))))
    la57 = lma and draw(st.booleans())
    canonical = st.sampled_from([0, 0x7FFFFFFFF000, 0xFFFF800000000000, 0x10000] + ([0xFF00000000000000] if la57 else []))
    return SegConfig(
        "drawn", lma, cpl, tuple(gdt), tuple(ldt),
        (draw(_START), 0x08 | cpl, 0x10 | cpl, draw(_START), draw(_START), draw(_START)),
        fs_base=draw(canonical) if long else 0, gs_base=draw(canonical) if long else 0, la57=la57,
        null_clears_base=draw(st.sampled_from([True, True, False])),
    )


config = configs()


_RPL = st.integers(0, 3)
_SIZES = st.sampled_from([1, 2, 4, 8, 16])
_FAR_OFFSETS = st.sampled_from([0, 0x10, 0xFFF, 0x1000, 0xFFFF, 0x100000, MASK32, 1 << 47, 0xFFFFFFFF81000000])
_BASE_VALUES = st.sampled_from([0, 0x1000, 0x7FFFFFFFF000, 1 << 47, 0xFFFF800000000000, 0xFF00000000000000, MASK64])
_WORDS = st.one_of(code_data_words(), system_words(12).map(lambda w: w[0]))
_BAD = st.sampled_from([
    ("load_segment", ("CS", 0x10)), ("load_segment", ("XS", 0x10)), ("load_segment", (3, 0x10)),
    ("load_segment", ("DS", -1)), ("load_segment", ("DS", 0x10000)), ("load_segment", ("DS", "0x10")),
    ("load_segment", ("DS", 1.0)), ("load_segment", ("DS", True)),
    ("access", ("DS", -1, 4, "read")), ("access", ("DS", 1 << 64, 4, "read")), ("access", ("DS", "0", 4, "read")),
    ("access", ("DS", 0, 0, "read")), ("access", ("DS", 0, 65, "read")), ("access", ("DS", 0, 4, "fetch")),
    ("access", ("DS", 0, 4, "exec")), ("write_descriptor", ("idt", 0, 0)), ("write_descriptor", ("gdt", -1, 0)),
    ("write_base", ("DS", 0)), ("write_base", ("FS", -1)), ("write_base", ("FS", 1 << 64)),
])
_OPS = st.sampled_from(["load"] * 6 + ["access"] * 6 + ["far"] * 2 + ["edit"] * 2 + ["base", "probe", "probe", "bad"])


def _selector(draw, state: seg.SegState) -> int:
    """A selector of either table (or just beyond, or null) with any RPL; in drawn machines,
    often one of the segments every CPL may load."""
    n_gdt, n_ldt = len(state.gdt), len(state.ldt)
    pick = draw(st.integers(0, 9))
    if pick < 3 and state.config.name == "drawn":
        base_sel = draw(st.sampled_from([0x18, 0x20, 0x28]))
    elif pick < 8:
        i = draw(st.integers(0, n_gdt + n_ldt - 1))
        base_sel = seg.make_selector(i, 0, 0) if i < n_gdt else seg.make_selector(i - n_gdt, 1, 0)
    else:
        base_sel = draw(st.sampled_from([0, seg.make_selector(n_gdt, 0, 0), seg.make_selector(n_ldt, 1, 0), 0x1FF8]))
    return base_sel | draw(_RPL)


def _offset(draw, state: seg.SegState, reg: int) -> int:
    r = state.regs[reg]
    pick = draw(st.integers(0, 3))
    if seg.long_mode(state):
        edge = ((1 << (56 if state.config.la57 else 47)) - (r.base if reg in (seg.FS, seg.GS) else 0)) & MASK64
        if pick == 0:
            return draw(st.integers(0, MASK64))
        return draw(st.integers(0, 0x10000)) if pick == 1 else (edge + draw(st.integers(-16, 16))) & MASK64
    if pick == 0:
        return draw(st.integers(0, MASK32))
    if pick == 1:
        return draw(st.sampled_from([0, 0xFFFF, 0x10000, MASK32, 0x1000]))
    return min(max(r.limit + draw(st.integers(-16, 16)), 0), MASK32)


@st.composite
def _step(draw, state: seg.SegState):
    op = draw(_OPS)
    if op == "load":
        return "load_segment", (draw(st.sampled_from(["DS", "ES", "FS", "GS", "SS"])), _selector(draw, state))
    if op == "access":
        r = draw(st.integers(0, 5))
        kind = draw(st.sampled_from(["read", "write", "fetch"] if r == seg.CS else ["read", "write"]))
        return "access", (SEG_NAMES[r], _offset(draw, state, r), draw(_SIZES), kind)
    if op == "far":
        return draw(st.sampled_from(["far_jmp", "far_call"])), (_selector(draw, state), draw(_FAR_OFFSETS))
    if op == "edit":
        table = "ldt" if state.ldt and draw(st.booleans()) else "gdt"
        n = len(state.ldt if table == "ldt" else state.gdt)
        return "write_descriptor", (table, draw(st.integers(0, n - 1)), draw(_WORDS))
    if op == "base":
        return "write_base", (draw(st.sampled_from(["FS", "GS"])), draw(_BASE_VALUES))
    if op == "probe":
        return draw(st.sampled_from(["lar", "lsl"])), (_selector(draw, state),)
    return draw(_BAD)


def steps(state: seg.SegState):
    """Operations for the state at hand, most meaningful, some wrong on purpose."""
    return _step(state)


def render(state: seg.SegState) -> str:
    return seg.render(state)


def impl_factory(cfg: SegConfig):
    from impl.segmentation import Segmentation

    return Segmentation(cfg)


def catch() -> str | None:
    """Run the lockstep check with whatever defect is enabled; the shrunk witness, or None."""
    from mmspec.machines import catch_witness, lockstep_machine

    from hypothesis import HealthCheck, settings

    from mmspec.profiles import by_profile

    machine = lockstep_machine("SegmentationDefectHunt", seg, impl_factory, config, steps, render)
    hunt = settings(max_examples=by_profile(300, 400, 1500), stateful_step_count=20, derandomize=True,
                    database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    return catch_witness(machine, hunt)
