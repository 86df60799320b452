"""Theorems about segmentation (spec/segmentation.py).

The format theorems run the spec's own encoders and decoders on 64-bit z3 bit-vectors, so they
hold bit for bit for every descriptor word: the 8-byte code/data/system format, the 16-byte
IA-32e LDT/TSS format and the call gates.  The arithmetic theorems (limit scaling with G,
expand-down limits, the privilege rule, the 64-bit base rule) run the spec's helpers on z3
integers or bit-vectors; where a helper branches, it does so through the spec's tiny
``_ite``/``_and`` shim, which builds ``z3.If``/``z3.And`` for symbolic values.

The bounded theorem loads every selector (every index of both tables and one beyond, both
table indicators, every RPL) into every data segment register and far-jumps/calls to each, from
every preset, and checks every ``inv_*`` in every state reached: exhaustive for that bound.
"""

from __future__ import annotations

import time

import z3

from proofs._z3 import ProofResult, prove, registry
from spec import segmentation as seg
from spec.errors import MMError

THEOREMS, theorem = registry()

B = 64
q = z3.BitVec("q", B)
base, limit, type_, s, dpl, p, avl, lbit, db, g = z3.BitVecs("base limit type s dpl p avl l db g", B)
high = z3.BitVec("high", B)
FIELDS = (base, limit, type_, s, dpl, p, avl, lbit, db, g)
WIDTHS = (32, 20, 4, 1, 2, 1, 1, 1, 1, 1)


def _fits(x, bits: int):
    return z3.ULT(x, 1 << bits)


@theorem("Decoding an encoded 8-byte descriptor gives back every field: base (32 bits), limit (20), type, S, DPL, P, AVL, L, D/B, G.")
def thm_descriptor_decode_encode() -> ProofResult:
    d = seg.decode_descriptor(seg.encode_descriptor(*FIELDS))
    claim = z3.And(*[a == b for a, b in zip(d, FIELDS, strict=True)])
    return prove(claim, tuple(_fits(f, w) for f, w in zip(FIELDS, WIDTHS, strict=True)))


@theorem("Encoding a decoded 8-byte descriptor gives back the same 64-bit word: the format has no unused bit.")
def thm_descriptor_encode_decode() -> ProofResult:
    return prove(seg.encode_descriptor(*seg.decode_descriptor(q)) == q)


@theorem("The 16-byte IA-32e system descriptor (LDT, TSS) round-trips: a 64-bit base, limit, type, DPL, P, AVL, G come back, with S = L = D/B = 0 and a zero upper type field.")
def thm_system16_roundtrip() -> ProofResult:
    low, hi = seg.encode_system16(base, limit, type_, dpl, p, avl, g)
    d, upper = seg.decode_system16(low, hi)
    claim = z3.And(d.base == base, d.limit == limit, d.type == type_, d.dpl == dpl, d.p == p, d.avl == avl,
                   d.g == g, d.s == 0, d.l == 0, d.db == 0, upper == 0)
    premises = (_fits(limit, 20), _fits(type_, 4), _fits(dpl, 2), _fits(p, 1), _fits(avl, 1), _fits(g, 1))
    return prove(claim, premises)


@theorem("Call gates round-trip: the legacy gate keeps its selector, 32-bit offset, type, DPL and P; the IA-32e gate keeps a 64-bit offset and has a zero upper type field.")
def thm_gate_roundtrip() -> ProofResult:
    sel, off = z3.BitVecs("sel off", B)
    legacy = seg.encode_gate(sel, off, type_, dpl, p)
    d = seg.decode_descriptor(legacy)
    low, hi = seg.encode_gate64(sel, off, dpl, p)
    claim = z3.And(
        seg.gate_selector(legacy) == sel, seg.gate_offset(legacy) == off & seg.MASK32, d.type == type_,
        d.dpl == dpl, d.p == p, d.s == 0,
        seg.gate_selector(low) == sel, seg.gate_offset(low, hi) == off, (hi >> 40) & 0x1F == 0,
        seg.decode_descriptor(low).type == seg.SYS_CALL_GATE,
    )
    return prove(claim, (_fits(sel, 16), _fits(type_, 4), _fits(dpl, 2), _fits(p, 1)))


@theorem("Linux's GDT_ENTRY_INIT(flags, base, limit) is encode_descriptor with the flag word's fields: type, S, DPL, P from bits 0..7, AVL, L, D/B, G from bits 12..15.")
def thm_gdt_entry_init() -> ProofResult:
    flags = z3.BitVec("flags", B)
    got = seg.gdt_entry_init(flags, base, limit)
    want = seg.encode_descriptor(base, limit, flags & 0xF, (flags >> 4) & 1, (flags >> 5) & 3, (flags >> 7) & 1,
                                 (flags >> 12) & 1, (flags >> 13) & 1, (flags >> 14) & 1, (flags >> 15) & 1)
    return prove(got == want, (_fits(flags, 16),))


# ---------------------------------------------------------------------------------------------
# Limits

raw, raw2, off, size = z3.Ints("raw raw2 off size")


def _raw_ok(x):
    return z3.And(0 <= x, x < 1 << 20)


@theorem("Limit scaling: with G = 1 an offset is within the limit exactly when its 4 KiB page number is at most the limit field (every byte of the last page is valid); with G = 0 the limit counts bytes.")
def thm_limit_scaling() -> ProofResult:
    claim = z3.And(
        (off <= seg.scaled_limit(raw, 1)) == (off / 4096 <= raw),
        seg.scaled_limit(raw, 0) == raw,
        seg.scaled_limit(raw, 1) < 1 << 32,
    )
    return prove(claim, (_raw_ok(raw), off >= 0))


@theorem("Scaled limits are monotone: a larger limit field never gives a smaller limit, and G = 1 never gives less than G = 0.")
def thm_limit_monotone() -> ProofResult:
    gg = z3.Int("gg")
    claim = z3.And(
        z3.Implies(raw <= raw2, seg.scaled_limit(raw, gg) <= seg.scaled_limit(raw2, gg)),
        seg.scaled_limit(raw, 0) <= seg.scaled_limit(raw, 1),
    )
    return prove(claim, (_raw_ok(raw), _raw_ok(raw2), z3.Or(gg == 0, gg == 1)))


@theorem("Expand-down segments: an access is valid exactly when its first byte is above the limit and its last byte at or below 0xFFFFFFFF (B = 1) or 0xFFFF (B = 0); lowering the limit never invalidates an access; for a byte inside the bound, expand-up and expand-down are complementary.")
def thm_expand_down() -> ProofResult:
    lim, lim2, b = z3.Ints("lim lim2 b")
    upper = z3.If(b == 1, seg.MASK32, 0xFFFF)
    down = seg.within_limit(off, size, lim, 1, b)
    claim = z3.And(
        down == z3.And(off > lim, off + size - 1 <= upper),
        z3.Implies(z3.And(down, lim2 <= lim), seg.within_limit(off, size, lim2, 1, b)),
        z3.Implies(off <= upper, seg.within_limit(off, 1, lim, 0, b) != seg.within_limit(off, 1, lim, 1, b)),
    )
    premises = (off >= 0, size >= 1, size <= 16, lim >= 0, lim2 >= 0, z3.Or(b == 0, b == 1))
    return prove(claim, premises)


@theorem("Expand-up limits: an access is valid exactly when its last byte is at most the limit, and raising the limit never invalidates an access.")
def thm_expand_up() -> ProofResult:
    lim, lim2 = z3.Ints("lim lim2")
    up = seg.within_limit(off, size, lim, 0, 1)
    claim = z3.And(up == (off + size - 1 <= lim),
                   z3.Implies(z3.And(up, lim <= lim2), seg.within_limit(off, size, lim2, 0, 1)))
    return prove(claim, (off >= 0, size >= 1, lim >= 0))


# ---------------------------------------------------------------------------------------------
# Privilege

cpl, rpl, dp, cpl2, rpl2, dp2 = z3.Ints("cpl rpl dpl cpl2 rpl2 dpl2")
RINGS = tuple(z3.And(0 <= x, x <= 3) for x in (cpl, rpl, dp, cpl2, rpl2, dp2))


@theorem("The data-segment privilege rule is max(CPL, RPL) <= DPL, i.e. CPL <= DPL and RPL <= DPL: an RPL can only take privilege away (the confused-deputy defence).")
def thm_privilege_rule() -> ProofResult:
    claim = z3.And(
        seg.privilege_ok(cpl, rpl, dp) == z3.And(cpl <= dp, rpl <= dp),
        z3.Implies(seg.privilege_ok(cpl, rpl, dp), seg.privilege_ok(cpl, cpl, dp)),
    )
    return prove(claim, RINGS)


@theorem("The privilege rule is monotone: what is allowed at (CPL, RPL, DPL) stays allowed with a more privileged CPL or RPL and a less privileged DPL.")
def thm_privilege_monotone() -> ProofResult:
    more = z3.And(cpl2 <= cpl, rpl2 <= rpl, dp2 >= dp)
    return prove(z3.Implies(z3.And(more, seg.privilege_ok(cpl, rpl, dp)), seg.privilege_ok(cpl2, rpl2, dp2)), RINGS)


# ---------------------------------------------------------------------------------------------
# Linear addresses

bv_base, bv_off = z3.BitVecs("seg_base offset", B)


@theorem("64-bit mode: CS, DS, ES and SS accesses have linear address = offset whatever the descriptor base; FS and GS add their base modulo 2^64; outside 64-bit mode every segment adds its base modulo 2^32.")
def thm_linear_base_rule() -> ProofResult:
    parts = [seg.linear_address(bv_base, bv_off, True, r) == bv_off for r in (seg.CS, seg.DS, seg.ES, seg.SS)]
    parts += [seg.linear_address(bv_base, bv_off, True, r) == bv_base + bv_off for r in (seg.FS, seg.GS)]
    parts += [seg.linear_address(bv_base, bv_off, False, r) == z3.ZeroExt(32, z3.Extract(31, 0, bv_base + bv_off))
              for r in range(6)]
    return prove(z3.And(*parts))


@theorem("Selectors: make_selector and the field accessors are inverse for every index, TI and RPL, and the error code of a selector keeps index and TI and clears RPL.")
def thm_selector_fields() -> ProofResult:
    index, ti, r = z3.BitVecs("index ti rpl", B)
    sel = seg.make_selector(index, ti, r)
    claim = z3.And(seg.selector_index(sel) == index, seg.selector_rpl(sel) == r, (sel >> 2) & 1 == ti,
                   seg.error_code(sel) == sel - r, z3.ULT(sel, 1 << 16))
    return prove(claim, (_fits(index, 13), _fits(ti, 1), _fits(r, 2)))


# ---------------------------------------------------------------------------------------------
# Bounded: every selector, every register, every preset

INVARIANTS = [getattr(seg, n) for n in dir(seg) if n.startswith("inv_")]


def explore(offsets=(0, 0x1000, 0xFFFFFFFF81000000)) -> ProofResult:
    start = time.perf_counter()
    loads = transfers = faults = 0
    for name in sorted(seg.PRESETS):
        state = seg.init(name)
        n = max(len(state.gdt), len(state.ldt)) + 1
        for index in range(n):
            for ti in (0, 1):
                for r in range(4):
                    sel = seg.make_selector(index, ti, r)
                    outcomes = [lambda reg=reg: seg.load_segment(state, reg, sel)[0] for reg in ("SS", "DS", "ES", "FS", "GS")]
                    outcomes += [lambda o=o: seg.far_jmp(state, sel, o)[0] for o in offsets]
                    outcomes += [lambda o=o: seg.far_call(state, sel, o)[0] for o in offsets]
                    for k, step in enumerate(outcomes):
                        loads += k < 5
                        transfers += k >= 5
                        try:
                            succ = step()
                        except MMError:
                            faults += 1
                            continue
                        bad = [inv.__name__ for inv in INVARIANTS if not inv(succ)]
                        if bad:
                            return ProofResult(False, f"{', '.join(bad)} violated after selector {sel:#x} on {name}", seg.render(succ))
    secs = time.perf_counter() - start
    return ProofResult(True, f"exhaustive: {len(seg.PRESETS)} presets, {loads} loads, {transfers} far transfers ({faults} faulted), {secs:.1f} s")


@theorem("Bounded, every selector: from every preset, loading every selector (each index of the GDT and LDT and one beyond, TI 0 and 1, RPL 0..3) into SS, DS, ES, FS, GS, and far-jumping or calling to each, keeps every inv_* invariant.")
def thm_bounded_every_selector() -> ProofResult:
    return explore()
