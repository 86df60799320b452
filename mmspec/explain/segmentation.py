"""``mmspec explain segmentation`` (alias ``rings``): a segment load and an access, check by check.

A seed picks a preset (a Linux process, the Linux kernel, a 32-bit compatibility process, or a
32-bit protected-mode machine with the classic segment kinds), a selector, a register and an
access; the options ``--preset``, ``--selector``, ``--reg``, ``--offset``, ``--size`` and
``--kind`` fix any of them, and ``--quiz`` prints the problem only.  The walk-through prints the selector's fields, the descriptor
it names, every check of the load in the order the processor makes them, and then the access:
the limit and type checks (or, in 64-bit mode, the base rule and the canonical check) and the
resulting linear address, which is what paging translates next, or the fault and its error
code.  All the knowledge is in :mod:`spec.segmentation`.
"""

from __future__ import annotations

import random

from spec import segmentation as seg
from spec.errors import MMError

PRESET_CHOICES = ("linux-user", "linux-kernel", "linux-compat", "flat-32-ring3", "flat-32-ring0")


def _selector_words(sel: int) -> str:
    table = "LDT" if sel & seg.TI_LDT else "GDT"
    return f"selector {sel:#06x} = index {seg.selector_index(sel)} | TI {int(bool(sel & 4))} ({table}) | RPL {seg.selector_rpl(sel)}"


def explain(seed: int = 0, preset: str | None = None, selector: int | None = None, reg: str | None = None,
            offset: int | None = None, size: int | None = None, kind: str | None = None, quiz: bool = False,
            **options) -> str:
    """The walk-through for ``seed``; options fix the preset, selector, register and access."""
    if options:
        raise TypeError(f"unknown option(s) for explain segmentation: {', '.join(sorted(options))}")
    rng = random.Random(seed)
    preset = preset or rng.choice(PRESET_CHOICES)
    state = seg.init(preset)
    table = state.gdt
    if selector is None:
        index = rng.randrange(1, len(table) + 1)
        selector = seg.make_selector(index, 0, rng.choice((0, state.cpl, 3)))
    reg = (reg or rng.choice(("DS", "ES", "SS", "FS", "GS"))).upper()
    size = size or rng.choice((1, 2, 4, 8))
    kind = kind or rng.choice(("read", "write"))
    out = [
        f"mmspec explain segmentation --seed {seed}: preset {preset}, {seg.mode(state)} mode, CPL {state.cpl}",
        "",
        seg.render_table(state.gdt, "GDT", 0, state.lma).rstrip(),
        "",
        f"Problem: MOV {reg}, {selector:#06x}; then a {size}-byte {kind} at {reg}:offset.",
        f"  {_selector_words(selector)}",
    ]
    if quiz:
        out += ["Which checks does the load make, does it fault (with which error code), and what linear",
                "address does the access reach?  Run again without --quiz for the answers."]
        return "\n".join(out) + "\n"
    out += ["", "1. The load (SDM Vol. 3A §5.6 for data segments, §5.7 for SS):"]
    try:
        state, _, steps = seg.load_segment_traced(state, reg, selector)
        out += [f"   - {line}" for line in steps]
    except MMError as err:
        out += [f"   - {type(err).__name__}: {err}", "", f"The load faults: the error code is {getattr(err, 'error_code', 0):#x} "
                "(selector & 0xFFFC: index and TI, RPL cleared; §6.13).", "Linux turns #GP into SIGSEGV and #NP/#SS into SIGBUS."]
        return "\n".join(out) + "\n"
    loaded = state.regs[seg.SEG_NAMES.index(reg)]
    if offset is None:
        if seg.long_mode(state):
            offset = rng.choice((0x1000, 0x7FFFFFFFFFF8, 1 << 47))
        elif loaded.usable:
            offset = max(0, loaded.limit + rng.choice((-size + 1, 1, -0x100)))
        else:
            offset = 0x1000
        offset &= seg.MASK32 if not seg.long_mode(state) else seg.MASK64
    out += ["", f"2. The access: {size}-byte {kind} at {reg}:{offset:#x}"]
    try:
        _, linear, steps = seg.access_traced(state, reg, offset, size, kind)
        out += [f"   - {line}" for line in steps]
        user = "a user access (CPL 3)" if state.cpl == 3 else f"a supervisor access (CPL {state.cpl})"
        out += ["", f"Result: linear address {linear:#x}, handed to paging as {user}."]
    except MMError as err:
        out += [f"   - {type(err).__name__}: {err}", "", "Result: the access faults before paging sees any address."]
    return "\n".join(out) + "\n"
