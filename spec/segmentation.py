"""Segmentation and protection rings: how an x86 logical address becomes a linear address.

**The problem.**  Every x86 memory reference names a *segment* (implicitly: CS for
instruction fetches, SS for pushes and RSP/RBP-based operands, DS for the rest; or explicitly
with a segment-override prefix) and an *offset*.  Segmentation turns the pair into a *linear
address*, ``base + offset``, after checking that the offset lies inside the segment's limit
and that the access is allowed (Intel SDM Vol. 3A §3.1, §3.4).  The linear address is what
paging then translates (``spec/paging.py``: ``translate(state, root, linear, access)``, with
the access counted as a *user* access when CPL = 3).  Segmentation is also where the x86
*protection rings* live: the current privilege level (CPL, the low two bits of CS), each
descriptor's DPL and each selector's requested privilege level (RPL) decide which segments
code may load and where it may jump (SDM Vol. 3A chapter 5).

**Selectors and descriptors.**  A segment register holds a 16-bit *selector* naming an
8-byte *descriptor* in the GDT or LDT: base, limit (bytes, or 4 KiB units with G), type, DPL,
present bit; their formats are in :mod:`spec.descriptor`, whose names this module re-exports.
Loading a selector caches the decoded descriptor in the register's hidden part, and the
processor uses the cache from then on: editing the table does not change a loaded register
(§3.4.3).

**The checks** (§5.4-§5.8).  Loading DS/ES/FS/GS accepts a data or readable code segment whose
DPL is at least ``max(CPL, RPL)`` (conforming code: any DPL); a null selector loads an
unusable register (:func:`load_segment`).  SS takes only a writable data segment with
RPL = DPL = CPL.  A far JMP/CALL to a code segment keeps CPL: a nonconforming target needs
DPL = CPL and RPL <= CPL, a conforming one DPL <= CPL; a call gate lets a CALL reach *more*
privileged code, CPL becoming the target's DPL (:func:`far_call`).  The RPL is how a
privileged routine acting for a caller takes on the caller's privilege (the *confused
deputy* defence, §5.10.4): using CPL alone is the bug ``seg-cpl-not-rpl`` models.
A violation raises #GP, #NP (not present) or #SS (stack) with an error code that names the
selector: ``selector & 0xFFFC`` (§6.13); limit and type violations carry error code 0.

**IA-32e mode** (§3.2.4, §3.4.4, §5.3.1).  With IA32_EFER.LMA = 1 a code segment with L = 1
runs in *64-bit mode*: the bases of CS, DS, ES and SS are treated as 0 and no limits are
checked; only FS and GS keep a base, 64 bits wide, set through the IA32_FS_BASE/IA32_GS_BASE
MSRs or WRFSBASE/WRGSBASE (:func:`write_base`).  Instead of limits, the linear address must be
*canonical* (bits 63..47, or 63..56 with LA57, all equal), else #GP(0), or #SS(0) for a stack
reference.  A code segment with L = 0 runs in *compatibility mode*, which segments as 32-bit
protected mode does.  Linux on x86-64 uses this flat model: user CS = 0x33 (64-bit), SS = DS =
0x2b, 32-bit CS = 0x23, and TLS through the FS base (:data:`LINUX_GDT`).

**How the model simplifies the hardware.**

- The GDT and LDT are tuples of 64-bit words, one per 8 bytes; their limits are their
  lengths (GDTR.limit = 8 * len - 1).  LLDT/LGDT and the TSS are not modelled: the LDT is
  given directly (empty = a null LDTR).
- Memory is not modelled: a far CALL does not push the return address, a call gate's
  parameter copy is not done; :func:`access` returns the linear address and leaves the
  memory reference to paging.  Setting a descriptor's accessed bit on load *is* modelled.
- Task switches (a far JMP/CALL to a TSS or task gate outside IA-32e mode) and a CALL through
  a legacy call gate to a more privileged level (which loads SS:ESP from the TSS) are not
  modelled: they raise ``EINVAL``.  In IA-32e mode those are #GP, and the 64-bit call-gate
  stack switch (SS := null with RPL = new CPL, §5.8.5.1) is modelled.
- Far returns and interrupts are not modelled, so CPL only ever stays or decreases.
- A null selector loaded into DS/ES/FS/GS clears the hidden base, as Intel processors do;
  AMD processors before Zen 3 keep it (Linux: ``X86_BUG_NULL_SEG``).  ``SegConfig.null_clears_base``
  selects the behaviour.

>>> s = init("linux-user")
>>> s.cpl, mode(s)
(3, '64-bit')
>>> s, _ = load_segment(s, "DS", 0x2b)
>>> load_segment(s, "DS", 0x18)              # __KERNEL_DS: DPL 0 < CPL 3
Traceback (most recent call last):
...
spec.errors.GeneralProtection: #GP(0x18): DS: max(CPL 3, RPL 0) = 3 > DPL 0
>>> access(s, "DS", 0x1000, 8, "read")[1]    # DS base ignored in 64-bit mode
4096
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from spec.descriptor import *  # noqa: F403 - the formats are part of this chapter's API
from spec.descriptor import (  # the formats; every name of spec.descriptor is re-exported
    ATTR_DB, ATTR_G, ATTR_L, ATTR_P, ATTR_S, CS, DS, Descriptor, ES, FS, GS, KERNEL_CS,
    KERNEL_DS, LAR_MASK, LAR_SYSTEM_IA32E, LAR_SYSTEM_LEGACY, LINUX_GDT, LSL_SYSTEM_IA32E,
    LSL_SYSTEM_LEGACY, MASK32, MASK64, MAX_DESCRIPTORS, SEG_NAMES, SELECTOR_ERROR_MASK, SS,
    SYSTEM_TYPES_IA32E, SYS_CALL_GATE, SYS_CALL_GATE16, SYS_TASK_GATE, SYS_TSS16_AVAIL,
    SYS_TSS_AVAIL, TEACHING_GDT, TI_LDT, TYPE_ACCESSED, TYPE_CODE, TYPE_CONFORMING,
    TYPE_EXPAND_DOWN, TYPE_READABLE, TYPE_WRITABLE, USER32_CS, USER_CS, USER_DS, UserDesc,
    VECTOR_GP, VECTOR_NP, VECTOR_SS, VECTOR_UD, attrs_of, decode_descriptor, decode_system16,
    describe_descriptor, encode_descriptor, encode_gate, encode_system16, error_code,
    expand_down_upper, fill_ldt, gate_offset, gate_selector, is_canonical, is_code,
    is_conforming, is_data, is_null_selector, linear_address, make_selector, privilege_ok,
    scaled_limit, selector_index, selector_rpl, within_limit,
)
from spec.descriptor import _ia32e_gdt, _linux_gdt  # noqa: F401 - presets and the oracle use them
from spec.errors import EINVAL, GeneralProtection, InvalidOpcode, MMError, SegmentNotPresent, StackFault

__all__ = [
    "Descriptor", "SegReg", "SegState", "SegConfig", "FarTransfer", "PRESETS", "preset", "init",
    "load_segment", "far_jmp", "far_call", "access", "write_descriptor", "write_base", "lar", "lsl",
    "encode_descriptor", "decode_descriptor", "encode_system16", "decode_system16", "encode_gate",
    "scaled_limit", "within_limit", "UserDesc", "fill_ldt", "privilege_ok", "linear_address", "is_canonical", "render",
]

# ---------------------------------------------------------------------------------------------
# State


class SegReg(NamedTuple):
    """A segment register: the visible selector and the hidden descriptor cache (§3.4.3).
    ``attrs == 0`` marks an unusable register (a null selector was loaded)."""

    selector: int
    base: int
    limit: int  # scaled: the last valid offset (expand-up) or the limit (expand-down)
    attrs: int

    @property
    def usable(self) -> bool:
        return self.attrs != 0


NULL_REG = SegReg(0, 0, 0, 0)


class FarTransfer(NamedTuple):
    """The result of a far JMP or CALL: the new CS:RIP and CPL, and whether the stack switched."""

    cs: int
    rip: int
    cpl: int
    stack_switch: bool


@dataclass(frozen=True)
class SegConfig:
    """A machine's segmentation set-up: mode, tables, and the selectors loaded at start."""

    name: str
    lma: bool  # IA32_EFER.LMA: IA-32e mode
    cpl: int
    gdt: tuple[int, ...]
    ldt: tuple[int, ...] = ()
    selectors: tuple[int, ...] = (0, 0, 0, 0, 0, 0)  # ES, CS, SS, DS, FS, GS
    fs_base: int = 0
    gs_base: int = 0
    la57: bool = False
    null_clears_base: bool = True  # Intel; AMD before Zen 3 keeps it (X86_BUG_NULL_SEG)


@dataclass(frozen=True)
class SegState:
    """One logical processor's segmentation state."""

    config: SegConfig
    cpl: int
    gdt: tuple[int, ...]
    ldt: tuple[int, ...]
    regs: tuple[SegReg, ...]  # indexed ES, CS, SS, DS, FS, GS

    @property
    def lma(self) -> bool:
        return self.config.lma


def long_mode(state: SegState) -> bool:
    """64-bit mode: IA-32e mode with CS.L = 1 (§5.2.1)."""
    return state.lma and bool(state.regs[CS].attrs & ATTR_L)


def mode(state: SegState) -> str:
    """``"64-bit"``, ``"compatibility"`` (IA-32e, CS.L = 0) or ``"protected"`` (legacy)."""
    if not state.lma:
        return "protected"
    return "64-bit" if long_mode(state) else "compatibility"


# ---------------------------------------------------------------------------------------------
# Faults


def _fault(cls: type[MMError], code: int, why: str) -> MMError:
    """A fault with its error code, e.g. ``GeneralProtection("#GP(0x18): ...")``."""
    mnemonic = {GeneralProtection: "#GP", SegmentNotPresent: "#NP", StackFault: "#SS"}[cls]
    err = cls(f"{mnemonic}({code:#x}): {why}")
    err.error_code = code
    return err


def fault_vector(err: MMError) -> int:
    """The exception vector of a fault raised here."""
    return {GeneralProtection: VECTOR_GP, SegmentNotPresent: VECTOR_NP, StackFault: VECTOR_SS,
            InvalidOpcode: VECTOR_UD}[type(err)]


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _reg(reg) -> int:
    if isinstance(reg, str) and reg.upper() in SEG_NAMES:
        return SEG_NAMES.index(reg.upper())
    raise EINVAL(f"unknown segment register {reg!r}; one of {', '.join(SEG_NAMES)}")


def _check_selector(sel) -> None:
    if not _is_int(sel) or not 0 <= sel <= 0xFFFF:
        raise EINVAL(f"a selector is a 16-bit integer, got {sel!r}")


# ---------------------------------------------------------------------------------------------
# Descriptor tables


def read_descriptor(state: SegState, sel: int, words: int = 1, steps: list | None = None) -> tuple[int, ...]:
    """Fetch the descriptor ``sel`` names (``words`` = 2 for a 16-byte one): #GP(sel) when it
    lies beyond the table limit, or names the LDT while LDTR is null (§3.5.1)."""
    ldt = bool(sel & TI_LDT)
    table = state.ldt if ldt else state.gdt
    index = selector_index(sel)
    name = "LDT" if ldt else "GDT"
    if index + words > len(table):
        why = "LDTR is null" if ldt and not table else f"index {index} (+{8 * words - 1} bytes) is beyond the {name} limit {8 * len(table) - 1:#x}"
        raise _fault(GeneralProtection, error_code(sel), why)
    if steps is not None:
        steps.append(f"{name}[{index}] = {table[index]:#018x}: {describe_descriptor(table[index])}")
    return tuple(table[index:index + words])


def _set_accessed(state: SegState, sel: int) -> SegState:
    """The processor sets the accessed bit of a descriptor it loads (§3.4.5.1)."""
    index, ldt = selector_index(sel), bool(sel & TI_LDT)
    table = state.ldt if ldt else state.gdt
    q = table[index]
    if q & (TYPE_ACCESSED << 40):
        return state
    table = table[:index] + (q | (TYPE_ACCESSED << 40),) + table[index + 1:]
    return replace(state, ldt=table) if ldt else replace(state, gdt=table)


def _cached(sel: int, d: Descriptor) -> SegReg:
    return SegReg(sel, d.base, scaled_limit(d.limit, d.g), attrs_of(d) | TYPE_ACCESSED)


def _with_reg(state: SegState, reg: int, value: SegReg) -> SegState:
    regs = list(state.regs)
    regs[reg] = value
    return replace(state, regs=tuple(regs))


# ---------------------------------------------------------------------------------------------
# Loading a segment register: MOV/POP to DS, ES, FS, GS, SS (SDM Vol. 2B MOV, §5.6, §5.7)


def _null_load(state: SegState, reg: int, sel: int) -> SegReg:
    """A null selector in DS/ES/FS/GS: the register becomes unusable (§5.4.1); Intel clears the
    hidden base, AMD before Zen 3 keeps it (FS/GS bases matter only in 64-bit mode)."""
    keep = not state.config.null_clears_base and reg in (FS, GS)
    return SegReg(sel, state.regs[reg].base if keep else 0, 0, 0)


def load_segment_traced(state: SegState, reg: str, sel: int):
    """:func:`load_segment`, also returning the checks made, in order."""
    r = _reg(reg)
    if r == CS:
        raise InvalidOpcode("MOV to CS is #UD: CS is loaded only by far JMP, CALL, RET and IRET")
    _check_selector(sel)
    cpl, rpl, name, steps = state.cpl, selector_rpl(sel), SEG_NAMES[r], []
    if r == SS:
        if is_null_selector(sel):
            if long_mode(state) and cpl < 3 and rpl == cpl:
                steps.append(f"null selector into SS in 64-bit mode at CPL {cpl} = RPL: allowed (§5.4.1.1)")
                return _with_reg(state, SS, SegReg(sel, 0, 0, 0)), None, tuple(steps)
            raise _fault(GeneralProtection, 0, "SS: a null selector (allowed only in 64-bit mode at CPL < 3 with RPL = CPL)")
        (q,) = read_descriptor(state, sel, 1, steps)
        d = decode_descriptor(q)
        if rpl != cpl:
            raise _fault(GeneralProtection, error_code(sel), f"SS: RPL {rpl} != CPL {cpl}")
        if not (is_data(d) and d.type & TYPE_WRITABLE):
            raise _fault(GeneralProtection, error_code(sel), "SS: not a writable data segment")
        if d.dpl != cpl:
            raise _fault(GeneralProtection, error_code(sel), f"SS: DPL {d.dpl} != CPL {cpl}")
        steps.append(f"writable data, RPL = DPL = CPL = {cpl}")
        if not d.p:
            raise _fault(StackFault, error_code(sel), "SS: segment not present")
    else:
        if is_null_selector(sel):
            steps.append(f"null selector: {name} becomes unusable (no fault until used outside 64-bit mode)")
            return _with_reg(state, r, _null_load(state, r, sel)), None, tuple(steps)
        (q,) = read_descriptor(state, sel, 1, steps)
        d = decode_descriptor(q)
        if not (is_data(d) or (is_code(d) and d.type & TYPE_READABLE)):
            raise _fault(GeneralProtection, error_code(sel), f"{name}: not a data or readable code segment")
        if not is_conforming(d):
            if not privilege_ok(cpl, rpl, d.dpl):
                raise _fault(GeneralProtection, error_code(sel),
                             f"{name}: max(CPL {cpl}, RPL {rpl}) = {max(cpl, rpl)} > DPL {d.dpl}")
            steps.append(f"max(CPL {cpl}, RPL {rpl}) = {max(cpl, rpl)} <= DPL {d.dpl}")
        else:
            steps.append("conforming code: no privilege check")
        if not d.p:
            raise _fault(SegmentNotPresent, error_code(sel), f"{name}: segment not present")
    state = _set_accessed(state, sel)
    loaded = _cached(sel, d)
    steps.append(f"{name} = {sel:#06x}: base {loaded.base:#x}, limit {loaded.limit:#x}")
    return _with_reg(state, r, loaded), None, tuple(steps)


def load_segment(state: SegState, reg: str, sel: int):
    """``MOV Sreg, r16`` / ``POP Sreg``: load ``reg`` (``"DS"``, ``"ES"``, ``"FS"``, ``"GS"`` or
    ``"SS"``) with selector ``sel``.

    DS/ES/FS/GS: #GP(sel) beyond the table, for a system or execute-only code segment, or when
    ``max(CPL, RPL) > DPL`` for data and nonconforming code; #NP(sel) if not present; a null
    selector loads an unusable register.  SS: #GP(0) for a null selector (except in 64-bit mode
    at CPL < 3 with RPL = CPL), #GP(sel) unless a writable data segment with RPL = DPL = CPL,
    #SS(sel) if not present.  MOV to CS is #UD (``InvalidOpcode``); a bad argument is ``EINVAL``.
    """
    state, result, _ = load_segment_traced(state, reg, sel)
    return state, result


# ---------------------------------------------------------------------------------------------
# Far JMP and CALL (§5.8.1-§5.8.5; SDM Vol. 2A CALL, Vol. 2A JMP)


def _code_target(state: SegState, sel: int, steps: list, *, call: bool, via_gate: bool) -> Descriptor:
    """Read and check the target code segment of a far transfer (not yet its limit)."""
    cpl, rpl = state.cpl, selector_rpl(sel)
    if is_null_selector(sel):
        raise _fault(GeneralProtection, 0, "far transfer to a null selector")
    (q,) = read_descriptor(state, sel, 1, steps)
    d = decode_descriptor(q)
    if not is_code(d):
        raise _fault(GeneralProtection, error_code(sel), "target is not a code segment")
    if via_gate:
        if d.dpl > cpl:
            raise _fault(GeneralProtection, error_code(sel), f"gate target DPL {d.dpl} > CPL {cpl}")
        if not call and not is_conforming(d) and d.dpl != cpl:
            raise _fault(GeneralProtection, error_code(sel), f"JMP through a gate to nonconforming DPL {d.dpl} != CPL {cpl}")
        if state.lma and not (d.l == 1 and d.db == 0):
            raise _fault(GeneralProtection, error_code(sel), "an IA-32e call gate must target a 64-bit code segment")
    elif is_conforming(d):
        if d.dpl > cpl:
            raise _fault(GeneralProtection, error_code(sel), f"conforming code: DPL {d.dpl} > CPL {cpl}")
        steps.append(f"conforming code: DPL {d.dpl} <= CPL {cpl} (RPL ignored)")
    else:
        if rpl > cpl or d.dpl != cpl:
            raise _fault(GeneralProtection, error_code(sel), f"nonconforming code: needs RPL {rpl} <= CPL {cpl} and DPL {d.dpl} = CPL")
        steps.append(f"nonconforming code: RPL {rpl} <= CPL {cpl} = DPL {d.dpl}")
    if not d.p:
        raise _fault(SegmentNotPresent, error_code(sel), "code segment not present")
    if state.lma and d.l == 1 and d.db == 1:
        raise _fault(GeneralProtection, error_code(sel), "L = 1 and D = 1 is reserved in IA-32e mode")
    return d


def _check_rip(state: SegState, d: Descriptor, rip: int) -> None:
    """The new RIP: canonical for a 64-bit target, inside the limit otherwise (#GP(0))."""
    if state.lma and d.l == 1:
        if not is_canonical(rip, state.config.la57):
            raise _fault(GeneralProtection, 0, f"RIP {rip:#x} is not canonical")
    elif rip > scaled_limit(d.limit, d.g):
        raise _fault(GeneralProtection, 0, f"EIP {rip:#x} is beyond the code-segment limit {scaled_limit(d.limit, d.g):#x}")


def _far_traced(state: SegState, sel: int, offset: int, call: bool):
    _check_selector(sel)
    if not _is_int(offset) or not 0 <= offset <= MASK64 or (not long_mode(state) and offset > MASK32):
        raise EINVAL(f"offset {offset!r} does not fit the current operand size")
    steps: list[str] = []
    cpl = state.cpl
    if not is_null_selector(sel):
        (q,) = read_descriptor(state, sel, 1, steps)
        d = decode_descriptor(q)
        if d.s == 0:
            return _through_gate(state, sel, q, call, steps)
    d = _code_target(state, sel, steps, call=call, via_gate=False)
    _check_rip(state, d, offset)
    new_cs = (sel & SELECTOR_ERROR_MASK) | cpl
    state = _with_reg(_set_accessed(state, sel), CS, _cached(new_cs, d))
    steps.append(f"CS = {new_cs:#06x} (RPL := CPL {cpl}), RIP = {offset:#x}, now in {mode(state)} mode")
    return state, FarTransfer(new_cs, offset, cpl, False), tuple(steps)


def _through_gate(state: SegState, gate_sel: int, low: int, call: bool, steps: list):
    """A far transfer through a call gate (§5.8.4, Table 5-1)."""
    cpl, rpl, d = state.cpl, selector_rpl(gate_sel), decode_descriptor(low)
    gates = (SYS_CALL_GATE,) if state.lma else (SYS_CALL_GATE16, SYS_CALL_GATE)
    if d.type not in gates:
        if not state.lma and d.type in (SYS_TSS16_AVAIL, SYS_TSS_AVAIL, SYS_TASK_GATE):
            raise EINVAL("task switches are not modelled")
        raise _fault(GeneralProtection, error_code(gate_sel), f"system descriptor type {d.type:#x} is not a call gate")
    if d.dpl < cpl or rpl > d.dpl:
        raise _fault(GeneralProtection, error_code(gate_sel), f"call gate: needs CPL {cpl} <= DPL {d.dpl} and RPL {rpl} <= DPL")
    steps.append(f"call gate: CPL {cpl} <= DPL {d.dpl}, RPL {rpl} <= DPL {d.dpl}")
    if not d.p:
        raise _fault(SegmentNotPresent, error_code(gate_sel), "call gate not present")
    high = 0
    if state.lma:
        high = read_descriptor(state, gate_sel, 2)[1]
        if (high >> 40) & 0x1F:
            raise _fault(GeneralProtection, error_code(gate_sel), "the upper type field of a 64-bit call gate is not 0")
    target, rip = gate_selector(low), gate_offset(low, high)
    if d.type == SYS_CALL_GATE16:
        rip &= 0xFFFF
    steps.append(f"gate target {target:#06x}:{rip:#x}")
    t = _code_target(state, target, steps, call=call, via_gate=True)
    inner = call and not is_conforming(t) and t.dpl < cpl
    if inner and not state.lma:
        raise EINVAL("a legacy call gate to a more privileged level loads SS:ESP from the TSS: not modelled")
    _check_rip(state, t, rip)
    new_cpl = t.dpl if inner else cpl
    new_cs = (target & SELECTOR_ERROR_MASK) | new_cpl
    state = _with_reg(_set_accessed(state, target), CS, _cached(new_cs, t))
    state = replace(state, cpl=new_cpl)
    if inner:
        state = _with_reg(state, SS, SegReg(new_cpl, 0, 0, 0))
        steps.append(f"more privileged: CPL {cpl} -> {new_cpl}, SS = null selector with RPL {new_cpl} (§5.8.5.1)")
    steps.append(f"CS = {new_cs:#06x}, RIP = {rip:#x}")
    return state, FarTransfer(new_cs, rip, new_cpl, inner), tuple(steps)


def far_jmp_traced(state: SegState, sel: int, offset: int):
    """:func:`far_jmp`, also returning the checks made."""
    return _far_traced(state, sel, offset, call=False)


def far_call_traced(state: SegState, sel: int, offset: int):
    """:func:`far_call`, also returning the checks made."""
    return _far_traced(state, sel, offset, call=True)


def far_jmp(state: SegState, sel: int, offset: int):
    """``JMP ptr16:32`` / ``JMP m16:64``: jump to ``sel:offset`` (a code segment or a call gate).

    A direct jump never changes CPL: nonconforming code needs RPL <= CPL and DPL = CPL,
    conforming code DPL <= CPL.  Through a gate, the target must satisfy the same (a JMP never
    raises privilege).  Returns a :class:`FarTransfer`.
    """
    state, result, _ = far_jmp_traced(state, sel, offset)
    return state, result


def far_call(state: SegState, sel: int, offset: int):
    """``CALL ptr16:32`` / ``CALL m16:64``: like :func:`far_jmp`, but a call gate (CPL and RPL
    <= gate DPL) may reach a nonconforming segment with DPL < CPL: CPL becomes that DPL and, in
    IA-32e mode, SS becomes a null selector with RPL = new CPL (§5.8.5.1)."""
    state, result, _ = far_call_traced(state, sel, offset)
    return state, result


# ---------------------------------------------------------------------------------------------
# Accesses through a segment (§5.3, §5.4, §3.4.4; §6.15 #GP and #SS)

ACCESS_KINDS = ("read", "write", "fetch")


def access_traced(state: SegState, reg: str, offset: int, size: int, kind: str):
    """:func:`access`, also returning the checks made."""
    r = _reg(reg)
    if kind not in ACCESS_KINDS or (kind == "fetch" and r != CS):
        raise EINVAL(f"kind {kind!r} must be one of {ACCESS_KINDS}; fetches go through CS")
    if not _is_int(size) or not 1 <= size <= 64:
        raise EINVAL(f"size {size!r} must be 1..64 bytes")
    seg, name = state.regs[r], SEG_NAMES[r]
    stack = StackFault if r == SS else GeneralProtection
    if long_mode(state):
        if not _is_int(offset) or not 0 <= offset <= MASK64:
            raise EINVAL(f"offset {offset!r} is not a 64-bit effective address")
        linear = linear_address(seg.base, offset, True, r)
        last = (linear + size - 1) & MASK64
        used = f"{name}.base {seg.base:#x}" if r in (FS, GS) else f"{name}.base treated as 0"
        steps = [f"64-bit mode: {used}, no limit check; linear {linear:#x}"]
        if not (is_canonical(linear, state.config.la57) and is_canonical(last, state.config.la57)):
            raise _fault(stack, 0, f"{name}: linear address {linear:#x} (+{size - 1}) is not canonical")
        steps.append("canonical: passed to paging")
        return state, linear, tuple(steps)
    if not _is_int(offset) or not 0 <= offset <= MASK32:
        raise EINVAL(f"offset {offset!r} is not a 32-bit effective address")
    steps = []
    if not seg.usable:
        raise _fault(stack, 0, f"{name} holds a null selector")
    t, code = seg.attrs & 0xF, bool(seg.attrs & TYPE_CODE)
    if kind == "write" and (code or not t & TYPE_WRITABLE):
        raise _fault(stack, 0, f"{name}: write to a {'code' if code else 'read-only data'} segment")
    if kind == "read" and code and not t & TYPE_READABLE:
        raise _fault(stack, 0, f"{name}: read from an execute-only code segment")
    down = 1 if not code and t & TYPE_EXPAND_DOWN else 0
    db = 1 if seg.attrs & ATTR_DB else 0
    if not within_limit(offset, size, seg.limit, down, db):
        span = f"({seg.limit:#x}, {expand_down_upper(db):#x}]" if down else f"[0, {seg.limit:#x}]"
        raise _fault(stack, 0, f"{name}: bytes {offset:#x}..{offset + size - 1:#x} are outside {span}")
    steps.append(f"{'expand-down' if down else 'expand-up'} limit check passed")
    linear = linear_address(seg.base, offset, False, r)
    steps.append(f"linear = {name}.base {seg.base:#x} + {offset:#x} = {linear:#x}")
    return state, linear, tuple(steps)


def access(state: SegState, reg: str, offset: int, size: int, kind: str = "read"):
    """A ``size``-byte ``kind`` access (``"read"``, ``"write"``, ``"fetch"``) at ``reg:offset``:
    returns (state, linear address), the state unchanged.

    64-bit mode: linear = offset (CS/DS/ES/SS) or FS/GS base + offset; #GP(0) (#SS(0) for SS)
    if the first or last byte is not canonical.  Otherwise: #GP(0)/#SS(0) for an unusable
    register, a write to code or read-only data, a read of execute-only code, or a byte outside
    the (scaled, possibly expand-down) limit; linear = base + offset mod 2^32.
    """
    state, linear, _ = access_traced(state, reg, offset, size, kind)
    return state, linear


# ---------------------------------------------------------------------------------------------
# The operating system's side: editing tables, FS/GS bases


def write_descriptor(state: SegState, table: str, index: int, value: int):
    """The kernel stores ``value`` in GDT or LDT entry ``index`` (``write_gdt_entry()``,
    ``write_ldt_entry()``).  Loaded registers keep their cached copies (§3.4.3)."""
    if table not in ("gdt", "ldt"):
        raise EINVAL(f"table {table!r} is 'gdt' or 'ldt'")
    entries = state.gdt if table == "gdt" else state.ldt
    if not _is_int(index) or not 0 <= index < len(entries):
        raise EINVAL(f"index {index!r} is outside the {table.upper()} (0..{len(entries) - 1})")
    if not _is_int(value) or not 0 <= value <= MASK64:
        raise EINVAL(f"a descriptor word is a 64-bit integer, got {value!r}")
    entries = entries[:index] + (value,) + entries[index + 1:]
    return (replace(state, gdt=entries) if table == "gdt" else replace(state, ldt=entries)), None


def write_base(state: SegState, reg: str, base: int):
    """``WRFSBASE``/``WRGSBASE`` (or ``WRMSR`` to IA32_FS_BASE/IA32_GS_BASE, as Linux's
    ``arch_prctl(ARCH_SET_FS)`` does): set the hidden 64-bit base of FS or GS.

    #UD (``InvalidOpcode``) outside 64-bit mode; #GP(0) for a non-canonical base.
    """
    r = _reg(reg)
    if r not in (FS, GS):
        raise EINVAL("only FS and GS have a writable 64-bit base")
    if not _is_int(base) or not 0 <= base <= MASK64:
        raise EINVAL(f"a base is a 64-bit integer, got {base!r}")
    if not long_mode(state):
        raise InvalidOpcode(f"WR{SEG_NAMES[r]}BASE is valid only in 64-bit mode")
    if not is_canonical(base, state.config.la57):
        raise _fault(GeneralProtection, 0, f"{SEG_NAMES[r]} base {base:#x} is not canonical")
    return _with_reg(state, r, state.regs[r]._replace(base=base)), None


# ---------------------------------------------------------------------------------------------
# LAR and LSL: what user space can learn about any descriptor (§5.10.1, §5.10.3)


def _visible(state: SegState, sel: int, legacy_types, ia32e_types):
    """The descriptor words if ``sel`` names a descriptor of an accepted type that is visible
    at CPL and RPL, else None (LAR/LSL then clear ZF)."""
    if is_null_selector(sel):
        return None
    table = state.ldt if sel & TI_LDT else state.gdt
    index = selector_index(sel)
    if index >= len(table):
        return None
    d = decode_descriptor(table[index])
    high = 0
    if d.s == 0:
        if d.type not in (ia32e_types if state.lma else legacy_types):
            return None
        if state.lma:
            if index + 1 >= len(table) or (table[index + 1] >> 40) & 0x1F:
                return None
            high = table[index + 1]
    if not is_conforming(d) and not privilege_ok(state.cpl, selector_rpl(sel), d.dpl):
        return None
    return table[index], high


def lar(state: SegState, sel: int):
    """``LAR``: the access rights (descriptor bits 32..63 masked by 0x00F0FF00) of the segment
    ``sel`` names, or None when it is invisible at this CPL/RPL or of a type LAR rejects.

    >>> hex(lar(init("linux-user"), 0x33)[1]), lar(init("linux-user"), 0x10)[1]
    ('0xa0fb00', None)
    """
    _check_selector(sel)
    found = _visible(state, sel, LAR_SYSTEM_LEGACY, LAR_SYSTEM_IA32E)
    return state, None if found is None else (found[0] >> 32) & LAR_MASK


def lsl(state: SegState, sel: int):
    """``LSL``: the scaled limit of the segment ``sel`` names, or None (as for :func:`lar`)."""
    _check_selector(sel)
    found = _visible(state, sel, LSL_SYSTEM_LEGACY, LSL_SYSTEM_IA32E)
    if found is None:
        return state, None
    d = decode_descriptor(found[0])
    return state, scaled_limit(d.limit, d.g)


# ---------------------------------------------------------------------------------------------
# Presets and boot


PRESETS: dict[str, SegConfig] = {
    "linux-user": SegConfig("linux-user", True, 3, LINUX_GDT, (), (0, USER_CS, USER_DS, 0, 0, 0)),
    "linux-kernel": SegConfig("linux-kernel", True, 0, LINUX_GDT, (), (0, KERNEL_CS, KERNEL_DS, 0, 0, 0)),
    "linux-compat": SegConfig("linux-compat", True, 3, LINUX_GDT, (), (USER_DS, USER32_CS, USER_DS, USER_DS, 0, 0)),
    "ia32e-gates": SegConfig("ia32e-gates", True, 3, _ia32e_gdt(), (), (0, USER_CS, USER_DS, 0, 0, 0)),
    "flat-32-ring3": SegConfig("flat-32-ring3", False, 3, TEACHING_GDT, (TEACHING_GDT[13],),
                               (0x23, 0x1B, 0x23, 0x23, 0x4B, 0x07)),
    "flat-32-ring0": SegConfig("flat-32-ring0", False, 0, TEACHING_GDT, (), (0x10, 0x08, 0x10, 0x10, 0, 0)),
}


def preset(name: str) -> SegConfig:
    """A preset by name (``EINVAL`` for an unknown one)."""
    if name not in PRESETS:
        raise EINVAL(f"unknown segmentation preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def init(config: SegConfig | str) -> SegState:
    """Boot the processor into ``config``: CS and CPL as given, then SS, DS, ES, FS, GS loaded
    with the normal checks, then the FS/GS bases written in 64-bit mode.  A configuration the
    hardware could not reach is ``EINVAL``."""
    cfg = preset(config) if isinstance(config, str) else config
    if not 0 <= cfg.cpl <= 3 or len(cfg.selectors) != 6:
        raise EINVAL("cpl is 0..3 and there are six selectors (ES, CS, SS, DS, FS, GS)")
    if len(cfg.gdt) > MAX_DESCRIPTORS or len(cfg.ldt) > MAX_DESCRIPTORS or not cfg.gdt:
        raise EINVAL("a descriptor table holds 1..8192 descriptors")
    if not all(_is_int(q) and 0 <= q <= MASK64 for q in cfg.gdt + cfg.ldt):
        raise EINVAL("descriptor words are 64-bit integers")
    cs_sel = cfg.selectors[CS]
    state = SegState(cfg, cfg.cpl, cfg.gdt, cfg.ldt, (NULL_REG,) * 6)
    try:
        _check_selector(cs_sel)
        (q,) = read_descriptor(state, cs_sel)
    except MMError as err:
        raise EINVAL(f"CS {cs_sel!r}: {err}") from None
    d = decode_descriptor(q)
    ok = is_code(d) and d.p and selector_rpl(cs_sel) == cfg.cpl and not is_null_selector(cs_sel)
    ok = ok and (d.dpl <= cfg.cpl if is_conforming(d) else d.dpl == cfg.cpl)
    if not ok or (cfg.lma and d.l == 1 and d.db == 1):
        raise EINVAL(f"CS {cs_sel:#x} is not a present code segment usable at CPL {cfg.cpl}")
    state = _with_reg(_set_accessed(state, cs_sel), CS, _cached(cs_sel, d))
    for r in (SS, DS, ES, FS, GS):
        try:
            state, _ = load_segment(state, SEG_NAMES[r], cfg.selectors[r])
        except MMError as err:
            raise EINVAL(f"{SEG_NAMES[r]} {cfg.selectors[r]!r}: {err}") from None
    if long_mode(state):
        for r, base in ((FS, cfg.fs_base), (GS, cfg.gs_base)):
            if base:
                try:
                    state, _ = write_base(state, SEG_NAMES[r], base)
                except MMError as err:
                    raise EINVAL(f"{SEG_NAMES[r]} base: {err}") from None
    return state


# ---------------------------------------------------------------------------------------------
# Invariants


def _ss_ok(state: SegState) -> bool:
    ss = state.regs[SS]
    if selector_rpl(ss.selector) != state.cpl:
        return False
    if not ss.usable:
        return state.lma and is_null_selector(ss.selector)
    t = ss.attrs & 0x1F
    return t & 0x18 == 0x10 and bool(t & TYPE_WRITABLE) and (ss.attrs >> 5) & 3 == state.cpl and bool(ss.attrs & ATTR_P)


def inv_cpl_is_cs_rpl(state: SegState) -> bool:
    """CPL is the RPL field of CS (§5.5), and a ring number 0..3."""
    return 0 <= state.cpl <= 3 and selector_rpl(state.regs[CS].selector) == state.cpl


def inv_cs_holds_code(state: SegState) -> bool:
    """CS caches a present code segment (never L = D = 1 in IA-32e mode), nonconforming with
    DPL = CPL or conforming with DPL <= CPL."""
    cs = state.regs[CS]
    dpl, conforming = (cs.attrs >> 5) & 3, bool(cs.attrs & TYPE_CONFORMING)
    code = cs.attrs & 0x18 == 0x18 and bool(cs.attrs & ATTR_P)
    long_and_d = state.lma and bool(cs.attrs & ATTR_L) and bool(cs.attrs & ATTR_DB)
    return code and not long_and_d and (dpl <= state.cpl if conforming else dpl == state.cpl)


def inv_ss_at_cpl(state: SegState) -> bool:
    """SS has RPL = CPL and is a present writable data segment with DPL = CPL, or (IA-32e mode
    only) a null selector (§5.7, §5.8.5.1)."""
    return _ss_ok(state)


def inv_data_segments_accessible(state: SegState) -> bool:
    """Every usable DS, ES, FS, GS caches a present data or readable code segment, and a data or
    nonconforming one has DPL >= CPL (§5.6)."""
    for r in (DS, ES, FS, GS):
        seg = state.regs[r]
        if not seg.usable:
            continue
        code, t = bool(seg.attrs & TYPE_CODE), seg.attrs & 0xF
        if not seg.attrs & ATTR_S or not seg.attrs & ATTR_P or (code and not t & TYPE_READABLE):
            return False
        if not (code and t & TYPE_CONFORMING) and (seg.attrs >> 5) & 3 < state.cpl:
            return False
    return True


def inv_cached_limits_scaled(state: SegState) -> bool:
    """Every usable register's cached limit is a 20-bit limit scaled by its G bit: below 2^20
    with G = 0, ending in 0xFFF and below 2^32 with G = 1."""
    for seg in state.regs:
        if seg.usable and not (
            (seg.limit & 0xFFF == 0xFFF and seg.limit <= MASK32) if seg.attrs & ATTR_G else seg.limit < 1 << 20
        ):
            return False
    return True


def inv_bases_fit_mode(state: SegState) -> bool:
    """Cached bases are 32-bit, except FS and GS in IA-32e mode, which are canonical 64-bit."""
    for r, seg in enumerate(state.regs):
        if r in (FS, GS) and state.lma:
            if not is_canonical(seg.base, state.config.la57):
                return False
        elif not 0 <= seg.base <= MASK32:
            return False
    return True


def inv_tables_well_formed(state: SegState) -> bool:
    """The GDT and LDT keep their lengths (1..8192, 0..8192) and hold 64-bit words."""
    return (
        len(state.gdt) == len(state.config.gdt) and len(state.ldt) == len(state.config.ldt)
        and all(0 <= q <= MASK64 for q in state.gdt + state.ldt)
    )


# ---------------------------------------------------------------------------------------------
# Views


def render_registers(state: SegState) -> str:
    """The segment registers with their hidden parts, one per line."""
    out = [f"CPL {state.cpl}, {mode(state)} mode{' (LA57)' if state.config.la57 else ''}"]
    for r, seg in enumerate(state.regs):
        if seg.usable:
            out.append(f"  {SEG_NAMES[r]} {seg.selector:#06x}  base {seg.base:#018x}  limit {seg.limit:#010x}  attrs {seg.attrs:#06x}")
        else:
            out.append(f"  {SEG_NAMES[r]} {seg.selector:#06x}  (unusable)  base {seg.base:#018x}")
    return "\n".join(out) + "\n"


def render_table(entries: tuple[int, ...], name: str, ti: int = 0, ia32e: bool = False) -> str:
    """A descriptor table, one non-zero entry per line, with the selector that names it; in
    IA-32e mode the word after an LDT, TSS or gate is shown as its upper half."""
    lines = [f"{name}: {len(entries)} entries, limit {8 * len(entries) - 1:#x}"]
    upper = False
    for i, q in enumerate(entries):
        if upper:
            lines.append(f"  [{i:2d}]           {q:#018x}  (upper half: bits 63..32 {q & MASK32:#x})")
            upper = False
            continue
        d = decode_descriptor(q)
        upper = ia32e and d.s == 0 and d.type in SYSTEM_TYPES_IA32E
        if q:
            lines.append(f"  [{i:2d}] sel {make_selector(i, ti, 0):#06x}  {q:#018x}  {describe_descriptor(q)}")
    return "\n".join(lines) + "\n"


def render(state: SegState) -> str:
    """How a counterexample shows the processor: registers, GDT and LDT."""
    ldt = render_table(state.ldt, "LDT", 1, state.lma) if state.ldt else "LDT: none (LDTR null)\n"
    return render_registers(state) + render_table(state.gdt, "GDT", 0, state.lma) + ldt
