"""Segmentation on arrays: the fast twin of :mod:`spec.segmentation`.

:class:`Segmentation` keeps the descriptor tables as numpy structured arrays, decoded once
(:data:`DESC_DTYPE`: the raw word and its base, scaled limit, type, S, DPL, P, L, D/B, G and the
cached access-rights word), and the six segment registers as one structured array
(:data:`REG_DTYPE`).  Its single operations make exactly the spec's checks, in the spec's order,
and raise the same typed errors with the same error codes; ``abstract()`` returns the spec
state.  The batched operations check a million accesses or loads in a few numpy passes:

- :meth:`Segmentation.check_many`: accesses ``(reg, offset, size, kind)`` as arrays; returns
  the linear addresses, the exception vector of each (0 = none, 12 = #SS, 13 = #GP) and its
  error code (always 0 for accesses);
- :meth:`Segmentation.load_many`: segment-register loads, each checked from the current state
  as :func:`spec.segmentation.load_segment` would (none is applied); returns vector (0, 11,
  12, 13) and error code.

>>> seg = Segmentation("flat-32-ring3")
>>> seg.access("FS", 0x10, 4, "read")
65552
>>> import numpy as np
>>> lin, vec, code = seg.check_many(np.array([4, 4]), np.array([0xFFC, 0xFFE]), np.array([4, 4]), np.array([0, 0]))
>>> lin.tolist(), vec.tolist()
([69628, 0], [0, 13])
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError as exc:  # pragma: no cover - the impl has no slow fallback on purpose
    raise ImportError("impl.segmentation needs numba") from exc

from impl import bugs
from impl.bugs import Defect
from spec import segmentation as S
from spec.errors import EINVAL, GeneralProtection, InvalidOpcode, MMError, SegmentNotPresent, StackFault
from spec.segmentation import (
    ACCESS_KINDS, ATTR_DB, ATTR_L, CS, DS, ES, FS, GS, MASK32, MASK64, SEG_NAMES,
    SELECTOR_ERROR_MASK, SS, SYS_CALL_GATE, SYS_CALL_GATE16, SYS_TASK_GATE, SYS_TSS16_AVAIL, SYS_TSS_AVAIL,
    TI_LDT, TYPE_ACCESSED, TYPE_CODE, TYPE_CONFORMING, TYPE_EXPAND_DOWN, TYPE_READABLE, TYPE_WRITABLE,
    VECTOR_GP, VECTOR_NP, VECTOR_SS, FarTransfer, SegConfig, SegReg, SegState,
)

__all__ = ["Segmentation", "DESC_DTYPE", "REG_DTYPE", "DEFECTS", "KIND_READ", "KIND_WRITE", "KIND_FETCH"]

_CATCH = "mmspec.mechanisms.segmentation:catch"

DEFECTS = (
    Defect(
        "seg-cpl-not-rpl",
        "segmentation",
        "The data-segment load check compares CPL alone with DPL, ignoring the selector's RPL: a "
        "privileged routine handed a selector by a less privileged caller (RPL 3) loads a DPL-0 "
        "segment for it -- the confused-deputy hole that max(CPL, RPL) <= DPL closes.",
        "teaching defect (Intel SDM Vol. 3A §5.6, §5.10.4 ARPL)",
        _CATCH,
    ),
    Defect(
        "seg-ignore-granularity",
        "segmentation",
        "The descriptor's limit is used unscaled even when G = 1, so a 4 GiB flat segment "
        "(limit 0xFFFFF, G = 1) looks 1 MiB long and accesses above 1 MiB fault.",
        "teaching defect (Intel SDM Vol. 3A §3.4.5)",
        _CATCH,
    ),
    Defect(
        "seg-expand-down-as-up",
        "segmentation",
        "An expand-down data segment is limit-checked like an expand-up one: offsets at or below "
        "the limit are accepted and the valid range above it faults.",
        "teaching defect (Intel SDM Vol. 3A §3.4.5.1, §5.3)",
        _CATCH,
    ),
    Defect(
        "seg-64bit-ds-base",
        "segmentation",
        "In 64-bit mode the DS base from the descriptor is added to the offset, although the "
        "processor treats the CS, DS, ES and SS bases as 0 there.",
        "teaching defect (Intel SDM Vol. 3A §3.4.4)",
        _CATCH,
    ),
)

DESC_DTYPE = np.dtype([("raw", np.uint64), ("base", np.uint64), ("limit", np.uint64), ("type", np.uint8),
                       ("s", np.uint8), ("dpl", np.uint8), ("p", np.uint8), ("l", np.uint8), ("db", np.uint8),
                       ("g", np.uint8), ("attrs", np.uint16)])
"""One decoded descriptor-table entry (the raw word and its fields, the limit already scaled)."""

REG_DTYPE = np.dtype([("selector", np.uint16), ("base", np.uint64), ("limit", np.uint64), ("attrs", np.uint16)])
"""One segment register: selector and hidden part."""

KIND_READ, KIND_WRITE, KIND_FETCH = 0, 1, 2


def _decode(words) -> np.ndarray:
    """Decode 64-bit descriptor words into a :data:`DESC_DTYPE` array."""
    raw = np.asarray(words, dtype=np.uint64).reshape(-1)
    out = np.zeros(raw.shape, dtype=DESC_DTYPE)
    out["raw"] = raw
    out["base"] = ((raw >> np.uint64(16)) & np.uint64(0xFFFFFF)) | (((raw >> np.uint64(56)) & np.uint64(0xFF)) << np.uint64(24))
    limit = (raw & np.uint64(0xFFFF)) | (((raw >> np.uint64(48)) & np.uint64(0xF)) << np.uint64(16))
    fields = {"type": (40, 0xF), "s": (44, 1), "dpl": (45, 3), "p": (47, 1), "l": (53, 1), "db": (54, 1), "g": (55, 1)}
    for name, (shift, mask) in fields.items():
        out[name] = (raw >> np.uint64(shift)) & np.uint64(mask)
    g = out["g"].astype(bool)
    if "seg-ignore-granularity" in bugs.active_names():
        out["limit"] = limit
    else:
        out["limit"] = np.where(g, (limit << np.uint64(12)) | np.uint64(0xFFF), limit)
    attrs = (raw >> np.uint64(40)) & np.uint64(0xF0FF)
    out["attrs"] = attrs.astype(np.uint16)
    return out


@njit(cache=True, nogil=True)
def _check_kernel(regs, off, size, kinds, base, limit, attrs, flags, lin, vec):
    """The access checks of :func:`spec.segmentation.access` for every element (flags: 1 64-bit
    mode, 2 LA57, 4 defect seg-64bit-ds-base, 8 defect seg-expand-down-as-up)."""
    long_mode, shift = (flags & 1) != 0, np.uint64(56 if flags & 2 else 47)
    top = np.uint64((1 << 8) - 1) if flags & 2 else np.uint64((1 << 17) - 1)
    one, mask32 = np.uint64(1), np.uint64(0xFFFFFFFF)
    for i in range(regs.shape[0]):
        r = regs[i]
        fault = np.uint8(VECTOR_SS if r == SS else VECTOR_GP)
        if long_mode:
            used = base[r] if (r == FS or r == GS or (r == DS and flags & 4)) else np.uint64(0)
            a = used + off[i]
            b = a + (size[i] - one)
            ha, hb = a >> shift, b >> shift
            if (ha == 0 or ha == top) and (hb == 0 or hb == top):
                lin[i], vec[i] = a, 0
            else:
                lin[i], vec[i] = 0, fault
            continue
        at = attrs[r]
        t = at & 0xF
        code = (t & TYPE_CODE) != 0
        k = kinds[i]
        ok = at != 0
        if k == 1 and (code or (t & TYPE_WRITABLE) == 0):
            ok = False
        if k == 0 and code and (t & TYPE_READABLE) == 0:
            ok = False
        last = off[i] + (size[i] - one)
        if (not code) and (t & TYPE_EXPAND_DOWN) != 0 and not flags & 8:
            upper = mask32 if at & ATTR_DB else np.uint64(0xFFFF)
            if off[i] <= limit[r] or last > upper:
                ok = False
        elif last > limit[r]:
            ok = False
        if ok:
            lin[i], vec[i] = (base[r] + off[i]) & mask32, 0
        else:
            lin[i], vec[i] = 0, fault


def _canonical(addr: int, la57: bool) -> bool:
    top = addr >> (56 if la57 else 47)
    return top == 0 or top == (1 << (8 if la57 else 17)) - 1


def _fault(cls, code: int, why: str) -> MMError:
    mnemonic = {GeneralProtection: "#GP", SegmentNotPresent: "#NP", StackFault: "#SS"}[cls]
    err = cls(f"{mnemonic}({code:#x}): {why}")
    err.error_code = code
    return err


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


class Segmentation:
    """One logical processor's segmentation, on arrays; the operations of :mod:`spec.segmentation`."""

    def __init__(self, config: SegConfig | str):
        cfg = S.preset(config) if isinstance(config, str) else config
        if not 0 <= cfg.cpl <= 3 or len(cfg.selectors) != 6:
            raise EINVAL("cpl is 0..3 and there are six selectors (ES, CS, SS, DS, FS, GS)")
        if not cfg.gdt or len(cfg.gdt) > S.MAX_DESCRIPTORS or len(cfg.ldt) > S.MAX_DESCRIPTORS:
            raise EINVAL("a descriptor table holds 1..8192 descriptors")
        if not all(_is_int(q) and 0 <= q <= MASK64 for q in cfg.gdt + cfg.ldt):
            raise EINVAL("descriptor words are 64-bit integers")
        self.config, self.cpl, self.lma, self.la57 = cfg, cfg.cpl, cfg.lma, cfg.la57
        self.gdt, self.ldt = _decode(cfg.gdt), _decode(cfg.ldt)
        self.regs = np.zeros(6, dtype=REG_DTYPE)
        cs = cfg.selectors[CS]
        if not _is_int(cs) or not 0 <= cs <= 0xFFFF:
            raise EINVAL(f"CS {cs!r} is not a selector")
        table, index = self._table(cs), cs >> 3
        if cs & SELECTOR_ERROR_MASK == 0 or index >= len(table):
            raise EINVAL(f"CS {cs:#x} names no descriptor")
        d = table[index]
        code = d["s"] == 1 and d["type"] & TYPE_CODE and d["p"] == 1 and cs & 3 == cfg.cpl
        conforming = bool(d["type"] & TYPE_CONFORMING)
        if not code or not (d["dpl"] <= cfg.cpl if conforming else d["dpl"] == cfg.cpl) or (cfg.lma and d["l"] and d["db"]):
            raise EINVAL(f"CS {cs:#x} is not a present code segment usable at CPL {cfg.cpl}")
        self._load_cached(CS, cs, table, index)
        for r in (SS, DS, ES, FS, GS):
            try:
                self.load_segment(SEG_NAMES[r], cfg.selectors[r])
            except MMError as err:
                raise EINVAL(f"{SEG_NAMES[r]}: {err}") from None
        if self._long_mode():
            for r, base in ((FS, cfg.fs_base), (GS, cfg.gs_base)):
                if base:
                    try:
                        self.write_base(SEG_NAMES[r], base)
                    except MMError as err:
                        raise EINVAL(f"{SEG_NAMES[r]} base: {err}") from None

    # -- helpers ------------------------------------------------------------------------------

    def _long_mode(self) -> bool:
        return self.lma and bool(self.regs[CS]["attrs"] & ATTR_L)

    def _table(self, sel: int) -> np.ndarray:
        return self.ldt if sel & TI_LDT else self.gdt

    def _read(self, sel: int, words: int = 1) -> np.void:
        table, index = self._table(sel), sel >> 3
        if index + words > len(table):
            raise _fault(GeneralProtection, sel & SELECTOR_ERROR_MASK, "beyond the descriptor table limit")
        return table[index]

    def _load_cached(self, r: int, sel: int, table: np.ndarray, index: int) -> None:
        table["raw"][index] |= np.uint64(TYPE_ACCESSED << 40)
        table["type"][index] |= TYPE_ACCESSED
        table["attrs"][index] |= TYPE_ACCESSED
        d = table[index]
        self.regs[r] = (sel, d["base"], d["limit"], d["attrs"])

    @staticmethod
    def _reg(reg) -> int:
        if isinstance(reg, str) and reg.upper() in SEG_NAMES:
            return SEG_NAMES.index(reg.upper())
        raise EINVAL(f"unknown segment register {reg!r}")

    @staticmethod
    def _selector(sel) -> int:
        if not _is_int(sel) or not 0 <= sel <= 0xFFFF:
            raise EINVAL(f"a selector is a 16-bit integer, got {sel!r}")
        return int(sel)

    # -- the operations of spec.segmentation --------------------------------------------------

    def load_segment(self, reg: str, sel: int) -> None:
        """``MOV Sreg, r16``: the spec's checks and errors (see :func:`spec.segmentation.load_segment`)."""
        r = self._reg(reg)
        if r == CS:
            raise InvalidOpcode("MOV to CS is #UD")
        sel = self._selector(sel)
        vec, code = self._load_check(r, sel)
        if vec:
            raise self._vec_error(vec, code, f"{SEG_NAMES[r]} <- {sel:#x}")
        if sel & SELECTOR_ERROR_MASK == 0:
            keep = not self.config.null_clears_base and r in (FS, GS)
            self.regs[r] = (sel, self.regs[r]["base"] if keep else 0, 0, 0)
            return None
        self._load_cached(r, sel, self._table(sel), sel >> 3)
        return None

    def _load_check(self, r: int, sel: int) -> tuple[int, int]:
        """(vector, error code) of loading ``sel`` into register ``r`` (0, 0 if allowed)."""
        cpl, rpl, code = self.cpl, sel & 3, sel & SELECTOR_ERROR_MASK
        if code == 0:
            if r != SS or (self._long_mode() and cpl < 3 and rpl == cpl):
                return 0, 0
            return VECTOR_GP, 0
        table, index = self._table(sel), sel >> 3
        if index >= len(table):
            return VECTOR_GP, code
        d = table[index]
        t, s, dpl = int(d["type"]), int(d["s"]), int(d["dpl"])
        if r == SS:
            if rpl != cpl or not (s and not t & TYPE_CODE and t & TYPE_WRITABLE) or dpl != cpl:
                return VECTOR_GP, code
            return (VECTOR_SS, code) if not d["p"] else (0, 0)
        if not s or (t & TYPE_CODE and not t & TYPE_READABLE):
            return VECTOR_GP, code
        conforming = t & TYPE_CODE and t & TYPE_CONFORMING
        effective = cpl if "seg-cpl-not-rpl" in bugs.active_names() else max(cpl, rpl)
        if not conforming and effective > dpl:
            return VECTOR_GP, code
        return (VECTOR_NP, code) if not d["p"] else (0, 0)

    @staticmethod
    def _vec_error(vec: int, code: int, why: str) -> MMError:
        cls = {VECTOR_GP: GeneralProtection, VECTOR_NP: SegmentNotPresent, VECTOR_SS: StackFault}[vec]
        return _fault(cls, code, why)

    def access(self, reg: str, offset: int, size: int, kind: str = "read") -> int:
        """A ``size``-byte access at ``reg:offset``: the linear address, or the spec's fault."""
        r = self._reg(reg)
        if kind not in ACCESS_KINDS or (kind == "fetch" and r != CS):
            raise EINVAL(f"kind {kind!r} must be one of {ACCESS_KINDS}; fetches go through CS")
        if not _is_int(size) or not 1 <= size <= 64:
            raise EINVAL(f"size {size!r} must be 1..64 bytes")
        limit_ok = MASK64 if self._long_mode() else MASK32
        if not _is_int(offset) or not 0 <= offset <= limit_ok:
            raise EINVAL(f"offset {offset!r} is not a valid effective address")
        lin, vec, _ = self.check_many(np.array([r]), np.array([offset], dtype=np.uint64), np.array([size]),
                                      np.array([ACCESS_KINDS.index(kind)]))
        if vec[0]:
            raise self._vec_error(int(vec[0]), 0, f"{SEG_NAMES[r]}:{offset:#x}")
        return int(lin[0])

    def check_many(self, regs, offsets, sizes, kinds):
        """Check accesses in bulk: ``regs`` (register numbers ES=0..GS=5), ``offsets`` (uint64),
        ``sizes`` (1..64) and ``kinds`` (0 read, 1 write, 2 fetch) as equal-length arrays.
        Returns (linear uint64, vector uint8: 0 / 12 #SS / 13 #GP, error code uint16 (0)).
        One compiled loop (:func:`_check_kernel`) does the work."""
        regs = np.ascontiguousarray(regs, dtype=np.int64)
        off = np.ascontiguousarray(offsets, dtype=np.uint64)
        size = np.ascontiguousarray(sizes, dtype=np.uint64)
        kinds = np.ascontiguousarray(kinds, dtype=np.uint8)
        n = regs.shape[0]
        if not (off.shape == size.shape == kinds.shape == (n,)) or np.any((regs < 0) | (regs > 5)):
            raise EINVAL("check_many takes equal-length 1-D arrays and registers 0..5")
        names = bugs.active_names()
        flags = (1 if self._long_mode() else 0) | (2 if self.la57 else 0) | (
            4 if "seg-64bit-ds-base" in names else 0) | (8 if "seg-expand-down-as-up" in names else 0)
        lin = np.empty(n, dtype=np.uint64)
        vec = np.empty(n, dtype=np.uint8)
        _check_kernel(regs, off, size, kinds, np.ascontiguousarray(self.regs["base"]),
                      np.ascontiguousarray(self.regs["limit"]), self.regs["attrs"].astype(np.int64), flags, lin, vec)
        return lin, vec, np.zeros(n, dtype=np.uint16)

    def load_many(self, regs, selectors):
        """Check loads of ``selectors`` into ``regs`` (SS=2, DS=3, ES=0, FS=4, GS=5), each from the
        current state; none is applied.  Returns (vector uint8: 0 / 11 / 12 / 13, error code)."""
        regs = np.asarray(regs, dtype=np.intp)
        sel = np.asarray(selectors, dtype=np.int64)
        if np.any(regs == CS) or np.any((regs < 0) | (regs > 5)):
            raise EINVAL("load_many loads SS, DS, ES, FS or GS")
        if np.any((sel < 0) | (sel > 0xFFFF)):
            raise EINVAL("selectors are 16-bit")
        cpl, rpl, code = self.cpl, sel & 3, sel & SELECTOR_ERROR_MASK
        null = code == 0
        ldt = (sel & TI_LDT) != 0
        index = sel >> 3
        in_gdt = ~ldt & (index < len(self.gdt))
        in_ldt = ldt & (index < len(self.ldt))
        found = in_gdt | in_ldt
        d = np.zeros(sel.shape, dtype=DESC_DTYPE)
        d[in_gdt] = self.gdt[index[in_gdt]]
        if len(self.ldt):
            d[in_ldt] = self.ldt[index[in_ldt]]
        t, s, dpl, p = d["type"], d["s"] == 1, d["dpl"].astype(np.int64), d["p"] == 1
        code_seg = s & ((t & TYPE_CODE) != 0)
        data = s & ((t & TYPE_CODE) == 0)
        ss = regs == SS
        ss_bad = (rpl != cpl) | ~(data & ((t & TYPE_WRITABLE) != 0)) | (dpl != cpl)
        effective = np.full(sel.shape, cpl) if "seg-cpl-not-rpl" in bugs.active_names() else np.maximum(cpl, rpl)
        conforming = code_seg & ((t & TYPE_CONFORMING) != 0)
        ds_bad = ~(data | (code_seg & ((t & TYPE_READABLE) != 0))) | (~conforming & (effective > dpl))
        gp = ~found | np.where(ss, ss_bad, ds_bad)
        vec = np.where(gp, VECTOR_GP, np.where(~p, np.where(ss, VECTOR_SS, VECTOR_NP), 0))
        null_ok = ~ss | (self._long_mode() and cpl < 3) & (rpl == cpl)
        vec = np.where(null, np.where(null_ok, 0, VECTOR_GP), vec).astype(np.uint8)
        err = np.where((vec == 0) | null, 0, code).astype(np.uint16)
        return vec, err

    def _code_target(self, sel: int, *, call: bool, via_gate: bool) -> np.void:
        cpl, rpl, code = self.cpl, sel & 3, sel & SELECTOR_ERROR_MASK
        if code == 0:
            raise _fault(GeneralProtection, 0, "far transfer to a null selector")
        d = self._read(sel)
        dpl, t = int(d["dpl"]), int(d["type"])
        if not (d["s"] and t & TYPE_CODE):
            raise _fault(GeneralProtection, code, "not a code segment")
        conforming = bool(t & TYPE_CONFORMING)
        if via_gate:
            bad = dpl > cpl or (not call and not conforming and dpl != cpl) or (self.lma and not (d["l"] == 1 and d["db"] == 0))
        else:
            bad = dpl > cpl if conforming else (rpl > cpl or dpl != cpl)
        if bad:
            raise _fault(GeneralProtection, code, "code-segment privilege check")
        if not d["p"]:
            raise _fault(SegmentNotPresent, code, "code segment not present")
        if self.lma and d["l"] and d["db"]:
            raise _fault(GeneralProtection, code, "L = D = 1")
        return d

    def _check_rip(self, d: np.void, rip: int) -> None:
        if self.lma and d["l"]:
            if not _canonical(rip, self.la57):
                raise _fault(GeneralProtection, 0, "RIP not canonical")
        elif rip > int(d["limit"]):
            raise _fault(GeneralProtection, 0, "EIP beyond the limit")

    def _far(self, sel, offset, call: bool) -> FarTransfer:
        sel = self._selector(sel)
        if not _is_int(offset) or not 0 <= offset <= MASK64 or (not self._long_mode() and offset > MASK32):
            raise EINVAL(f"offset {offset!r} does not fit the current operand size")
        offset, cpl = int(offset), self.cpl
        if sel & SELECTOR_ERROR_MASK:
            d = self._read(sel)
            if not d["s"]:
                return self._gate(sel, d, call)
        d = self._code_target(sel, call=call, via_gate=False)
        self._check_rip(d, offset)
        new_cs = (sel & SELECTOR_ERROR_MASK) | cpl
        self._load_cached(CS, new_cs, self._table(sel), sel >> 3)
        return FarTransfer(new_cs, offset, cpl, False)

    def _gate(self, gate_sel: int, g: np.void, call: bool) -> FarTransfer:
        cpl, rpl, code = self.cpl, gate_sel & 3, gate_sel & SELECTOR_ERROR_MASK
        t, dpl = int(g["type"]), int(g["dpl"])
        if t not in ((SYS_CALL_GATE,) if self.lma else (SYS_CALL_GATE16, SYS_CALL_GATE)):
            if not self.lma and t in (SYS_TSS16_AVAIL, SYS_TSS_AVAIL, SYS_TASK_GATE):
                raise EINVAL("task switches are not modelled")
            raise _fault(GeneralProtection, code, "not a call gate")
        if dpl < cpl or rpl > dpl:
            raise _fault(GeneralProtection, code, "call-gate privilege check")
        if not g["p"]:
            raise _fault(SegmentNotPresent, code, "call gate not present")
        raw, high = int(g["raw"]), 0
        if self.lma:
            self._read(gate_sel, 2)
            high = int(self._table(gate_sel)["raw"][(gate_sel >> 3) + 1])
            if (high >> 40) & 0x1F:
                raise _fault(GeneralProtection, code, "upper type field not 0")
        target = (raw >> 16) & 0xFFFF
        rip = (raw & 0xFFFF) | (((raw >> 48) & 0xFFFF) << 16) | ((high & MASK32) << 32)
        if t == SYS_CALL_GATE16:
            rip &= 0xFFFF
        d = self._code_target(target, call=call, via_gate=True)
        inner = call and not (int(d["type"]) & TYPE_CONFORMING) and int(d["dpl"]) < cpl
        if inner and not self.lma:
            raise EINVAL("a legacy call gate to a more privileged level is not modelled")
        self._check_rip(d, rip)
        new_cpl = int(d["dpl"]) if inner else cpl
        new_cs = (target & SELECTOR_ERROR_MASK) | new_cpl
        self._load_cached(CS, new_cs, self._table(target), target >> 3)
        self.cpl = new_cpl
        if inner:
            self.regs[SS] = (new_cpl, 0, 0, 0)
        return FarTransfer(new_cs, rip, new_cpl, inner)

    def far_jmp(self, sel: int, offset: int) -> FarTransfer:
        """Far JMP to a code segment or through a call gate (see :func:`spec.segmentation.far_jmp`)."""
        return self._far(sel, offset, call=False)

    def far_call(self, sel: int, offset: int) -> FarTransfer:
        """Far CALL (see :func:`spec.segmentation.far_call`)."""
        return self._far(sel, offset, call=True)

    def write_descriptor(self, table: str, index: int, value: int) -> None:
        """Store a descriptor word; loaded registers keep their cached copies."""
        if table not in ("gdt", "ldt"):
            raise EINVAL(f"table {table!r} is 'gdt' or 'ldt'")
        entries = self.gdt if table == "gdt" else self.ldt
        if not _is_int(index) or not 0 <= index < len(entries):
            raise EINVAL(f"index {index!r} is outside the {table.upper()}")
        if not _is_int(value) or not 0 <= value <= MASK64:
            raise EINVAL(f"a descriptor word is a 64-bit integer, got {value!r}")
        entries[index] = _decode([value])[0]

    def write_base(self, reg: str, base: int) -> None:
        """WRFSBASE/WRGSBASE: #UD outside 64-bit mode, #GP(0) for a non-canonical base."""
        r = self._reg(reg)
        if r not in (FS, GS):
            raise EINVAL("only FS and GS have a writable 64-bit base")
        if not _is_int(base) or not 0 <= base <= MASK64:
            raise EINVAL(f"a base is a 64-bit integer, got {base!r}")
        if not self._long_mode():
            raise InvalidOpcode("WRFSBASE/WRGSBASE is valid only in 64-bit mode")
        if not _canonical(int(base), self.la57):
            raise _fault(GeneralProtection, 0, "non-canonical base")
        self.regs["base"][r] = base

    def _visible(self, sel: int, lsl: bool):
        sel = self._selector(sel)
        if sel & SELECTOR_ERROR_MASK == 0:
            return None
        table, index = self._table(sel), sel >> 3
        if index >= len(table):
            return None
        d = table[index]
        t = int(d["type"])
        if not d["s"]:
            if self.lma:
                allowed = S.LSL_SYSTEM_IA32E if lsl else S.LAR_SYSTEM_IA32E
            else:
                allowed = S.LSL_SYSTEM_LEGACY if lsl else S.LAR_SYSTEM_LEGACY
            if t not in allowed:
                return None
            if self.lma and (index + 1 >= len(table) or (int(table["raw"][index + 1]) >> 40) & 0x1F):
                return None
        conforming = d["s"] and t & TYPE_CODE and t & TYPE_CONFORMING
        if not conforming and max(self.cpl, sel & 3) > int(d["dpl"]):
            return None
        return d

    def lar(self, sel: int):
        """LAR: access rights masked by 0x00F0FF00, or None."""
        d = self._visible(sel, lsl=False)
        return None if d is None else (int(d["raw"]) >> 32) & S.LAR_MASK

    def lsl(self, sel: int):
        """LSL: the scaled limit, or None."""
        d = self._visible(sel, lsl=True)
        return None if d is None else int(d["limit"])

    # -- the abstraction function ---------------------------------------------------------------

    def abstract(self) -> SegState:
        """The :class:`spec.segmentation.SegState` this object represents."""
        regs = tuple(SegReg(int(r["selector"]), int(r["base"]), int(r["limit"]), int(r["attrs"])) for r in self.regs)
        return SegState(self.config, self.cpl, tuple(self.gdt["raw"].tolist()), tuple(self.ldt["raw"].tolist()), regs)

    def render(self) -> str:
        """Registers and tables, as a counterexample shows them."""
        return S.render(self.abstract())


def access_codes(regs, kinds) -> tuple[np.ndarray, np.ndarray]:
    """Register numbers and kind codes from names (``"DS"``, ``"read"`` ...), for :meth:`Segmentation.check_many`."""
    return (np.array([SEG_NAMES.index(r) for r in regs], dtype=np.intp),
            np.array([ACCESS_KINDS.index(k) for k in kinds], dtype=np.uint8))

