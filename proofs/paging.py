"""Theorems about paging (spec/paging.py, spec/pte.py).

The arithmetic theorems run the spec's own helpers (:func:`spec.paging.level_index`,
:func:`~spec.paging.join_vaddr`, :func:`~spec.paging.canonicalize`,
:func:`~spec.paging.is_canonical`, :func:`spec.pte.x86_encode`/:func:`~spec.pte.x86_decode`,
:func:`spec.paging.x86_permission`) on 64-bit z3 bit-vectors, for every mode whose address
arithmetic they concern.  The huge-leaf theorem compares the spec's offset arithmetic of a 2 MiB
(1 GiB) leaf with that of the 512 (512^2) 4 KiB leaves that split would produce.  The bounded
theorem explores every small two-level table (teaching mode, a few entries each, every entry
value among valid/invalid pointers to tables and to data) and checks that whenever the
invariants hold, no walk hands a table page to an access.
"""

from __future__ import annotations

import itertools
import time

import z3

from proofs._z3 import ProofResult, prove, registry
from spec import buddy, paging, pte
from spec.paging import MODES, Access

THEOREMS, theorem = registry()

va, raw = z3.BitVecs("va raw", 64)
X86_MODES = ("x86-64-4level", "x86-64-5level")


def _all(results) -> ProofResult:
    results = list(results)
    bad = [r for r in results if not r.proved]
    if bad:
        return bad[0]
    return ProofResult(True, "; ".join(r.detail for r in results))


def _lower(m, v):
    """The addresses a root walks: the canonical ones, or on ARM64 the TTBR0 half (bits
    63..va_bits zero; the TTBR1 half has the same indices, see thm_ttbr_halves_share_indices)."""
    return z3.LShR(v, m.va_bits) == 0 if m.split_halves else paging.is_canonical(m, v)


@theorem("For every mode (every preset, every granule, the legacy x86 modes, the teaching modes), splitting an address a root walks into its indices and offset and joining them back gives the address (split/join is a bijection).")
def thm_split_join_bijection() -> ProofResult:
    out = []
    for m in MODES.values():
        parts = paging.split_vaddr(m, va)
        out.append(prove(paging.join_vaddr(m, parts) == va, (_lower(m, va),)))
    return _all(out)


@theorem("For every mode, every index field is below 2^bits, and distinct addresses a root walks differ in some index or in the offset (join is injective).")
def thm_indices_in_range_and_injective() -> ProofResult:
    out = []
    vb = z3.BitVec("vb", 64)
    for m in MODES.values():
        pa, pb = paging.split_vaddr(m, va), paging.split_vaddr(m, vb)
        in_range = z3.And(*[z3.ULT(p, 1 << m.bits(lv)) for p, lv in zip(pa[:-1], range(m.levels, 0, -1))])
        out.append(prove(in_range))
        same = z3.And(*[x == y for x, y in zip(pa, pb)])
        out.append(prove(z3.Implies(same, va == vb), (_lower(m, va), _lower(m, vb))))
    return _all(out)


@theorem("ARM64 (every granule): an upper-half address (TTBR1) has the same indices and offset as the lower-half address with the same low va_bits, so both halves walk the same way from their own root.")
def thm_ttbr_halves_share_indices() -> ProofResult:
    out = []
    for m in (m for m in MODES.values() if m.split_halves):
        hi = va | (((1 << 64) - 1) & ~((1 << m.va_bits) - 1))
        out.append(prove(z3.And(*[x == y for x, y in zip(paging.split_vaddr(m, hi), paging.split_vaddr(m, va))]),
                         (z3.LShR(va, m.va_bits) == 0,)))
        out.append(prove(paging.is_canonical(m, hi)))
    return _all(out)


@theorem("Canonical form: canonicalize is idempotent, its result is canonical, and an address is canonical exactly when bits 63..va_bits-1 are all equal (x86-64 4- and 5-level).")
def thm_canonical_form() -> ProofResult:
    out = []
    for name in X86_MODES:
        m = MODES[name]
        c = paging.canonicalize(m, va)
        top = z3.LShR(va, m.va_bits - 1)
        out.append(prove(z3.And(paging.canonicalize(m, c) == c, paging.is_canonical(m, c))))
        out.append(prove(paging.is_canonical(m, va) == z3.Or(top == 0, top == (1 << (65 - m.va_bits)) - 1)))
    return _all(out)


@theorem("x86 entries (x86-64, PAE, and the 32-bit format on 32-bit words): decode then encode gives back every word, and encode then decode gives back every in-range field set.")
def thm_pte_roundtrip() -> ProofResult:
    first = prove(pte.x86_encode(pte.x86_decode(raw)) == raw)
    fields = pte.x86_decode(raw)
    again = pte.x86_decode(pte.x86_encode(fields))
    second = prove(z3.And(*[a == b for a, b in zip(again, fields)]))
    narrow = prove(z3.ULT(pte.x86_encode(pte.x86_decode(raw)), 1 << 32), (z3.ULT(raw, 1 << 32),))
    return _all([first, second, narrow])


ARM64_NAMED = pte.arm64_encode(pte.Arm64Fields(1, 1, 7, 1, 3, 3, 1, 1, (1 << 36) - 1, 1, 1, 1, 1, 1, 3))


@theorem("ARM64 descriptors: decode then encode gives back every named bit of a 64-bit word (valid, type, AttrIndx, NS, AP, SH, AF, nG, OA, DBM, PXN, UXN and the table attributes) and clears only the unnamed ones; decode is stable under re-encoding.")
def thm_arm64_descriptor_roundtrip() -> ProofResult:
    back = pte.arm64_encode(pte.arm64_decode(raw))
    again = pte.arm64_decode(back)
    return _all([prove(back == raw & ARM64_NAMED),
                 prove(z3.And(*[a == b for a, b in zip(again, pte.arm64_decode(raw))]))])


@theorem("Teaching modes (every preset layout): decoding then re-encoding an entry keeps its valid bit and PFN, and every (valid, PFN) pair encodes to an entry that decodes to it (exhaustive over all entry words).")
def thm_teaching_entry_roundtrip() -> ProofResult:
    count = 0
    for m in (m for m in MODES.values() if m.fmt == "toy"):
        lay = m.toy_layout
        for w in range(1 << (8 * m.entry_bytes)):
            d = pte.decode("toy", w, 1, layout=lay)
            e = pte.toy_encode(lay, int(d.present), d.pfn)
            if pte.decode("toy", e, 1, layout=lay) != d:
                return ProofResult(False, f"{m.name}: entry {w:#x}", repr(d))
            count += 1
        for valid in (0, 1):
            for pfn in range(1 << lay[2]):
                d = pte.decode("toy", pte.toy_encode(lay, valid, pfn), 1, layout=lay)
                if (d.present, d.pfn) != (bool(valid), pfn):
                    return ProofResult(False, f"{m.name}: valid {valid} pfn {pfn}", repr(d))
                count += 1
    return ProofResult(True, f"exhaustive: {count} entries and (valid, PFN) pairs")


@theorem("In every mode with huge leaves, a huge leaf (x86-64 2 MiB/1 GiB, 32-bit 4 MiB, PAE 2 MiB, ARM64 2 MiB/1 GiB, 32 MiB, 512 MiB) translates every address exactly as the base-page leaves that split() builds from it would: frame + index * step, same offset arithmetic.")
def thm_huge_leaf_equals_small_leaves() -> ProofResult:
    out = []
    pfn = z3.BitVec("pfn", 64)
    for m in MODES.values():
        for level in sorted(lv for lv in m.leaf_levels if lv > 1):
            shift = m.shift(level)
            huge = (pfn << m.page_shift) + (va & ((1 << shift) - 1))
            # the small leaf split() writes for va: frame pfn + i * step, i = the index below level
            small_pfn = pfn
            for lv in range(level - 1, 0, -1):
                step = 1 << (m.shift(lv) - m.page_shift)
                small_pfn = small_pfn + paging.level_index(va, m.shift(lv), m.bits(lv)) * step
            small = (small_pfn << m.page_shift) + (va & (m.page_size - 1))
            aligned = (pfn & ((1 << (shift - m.page_shift)) - 1)) == 0
            out.append(prove(huge == small, (aligned, z3.ULT(pfn, 1 << (m.phys_bits - m.page_shift)))))
    return _all(out)


@theorem("Effective permission is monotone: removing RW or US at any level, or adding NX, never turns a refused access into an allowed one, for every access and control state (SDM 4.6 as the spec states it).")
def thm_permission_monotone() -> ProofResult:
    bad = []
    count = 0
    for rw, us, nx in itertools.product((False, True), repeat=3):
        for rw2, us2, nx2 in ((rw and x, us and y, nx or z) for x in (False, True) for y in (False, True) for z in (False, True)):
            for op, user, wp, smep, smap, ac in itertools.product("rwx", *(((False, True),) * 5)):
                for pke, pkru in ((False, 0), (True, 0), (True, 0b01), (True, 0b10), (True, 0b11)):
                    a = Access(op, user, wp, smep, smap, pke, True, ac, pkru)
                    strict = paging.x86_permission(rw2, us2, nx2, 0, a)
                    loose = paging.x86_permission(rw, us, nx, 0, a)
                    count += 1
                    if (strict[0] and not strict[1]) and not (loose[0] and not loose[1]):
                        # a stricter entry granted what a looser one refused: only allowed when the
                        # looser one was refused by SMAP/SMEP/PK for being a *user* page
                        if not (us and not us2):
                            bad.append((rw, us, nx, rw2, us2, nx2, a))
    if bad:
        return ProofResult(False, f"{len(bad)} cases", repr(bad[0]))
    return ProofResult(True, f"exhaustive over {count} (entry, stricter entry, access, control) combinations; "
                             "the only grants are supervisor accesses to pages that lost US, as SMAP/SMEP/PKRU intend")


def _walks_reach_tables(state) -> bool:
    mode = state.mode
    for root in state.mms:
        for v in range(0, 1 << mode.va_bits, mode.page_size):
            w = paging.walk(state, root, v, Access("r"))
            if w.paddr is not None and (w.paddr >> mode.page_shift) in state.tables:
                return True
    return False


@theorem("Bounded: on a two-level teaching table (root + 2 second-level tables, 2 entries each, every entry invalid, a table pointer or a data pointer, 3^6 tables), whenever the invariants hold no walk reaches a page-table page.")
def thm_bounded_no_walk_reaches_a_table() -> ProofResult:
    from immutables import Map

    start = time.perf_counter()
    base = paging.init(paging.PagingConfig("toy", paging.toy_machine(16), 0))
    b = base.buddy
    b, root = buddy.alloc_pages(b, 0)
    b, t1 = buddy.alloc_pages(b, 0)
    b, t2 = buddy.alloc_pages(b, 0)
    b, d1 = buddy.alloc_pages(b, 0)
    targets = (0, pte.TOY_VALID | t1, pte.TOY_VALID | t2, pte.TOY_VALID | d1, pte.TOY_VALID | root)
    leaf_targets = (0, pte.TOY_VALID | d1, pte.TOY_VALID | t1)
    checked = held = 0
    for r0, r1 in itertools.product(targets, repeat=2):
        for a0, a1, b0, b1 in itertools.product(leaf_targets, repeat=4):
            tables = {root: paging.Table(2, root, 0, Map({i: e for i, e in enumerate((r0, r1)) if e}))}
            links = [e & pte.TOY_PFN_MASK for e in (r0, r1) if e]
            for t, es in ((t1, (a0, a1)), (t2, (b0, b1))):
                tables[t] = paging.Table(1, root, links.count(t), Map({i: e for i, e in enumerate(es) if e}))
            s = paging.replace(base, buddy=b, tables=Map(tables), mms=(root,), nr_pagetable=3)
            checked += 1
            if all(inv(s) for inv in INVARIANTS):
                held += 1
                if _walks_reach_tables(s):
                    return ProofResult(False, "a walk reached a table page", paging.render(s))
    secs = time.perf_counter() - start
    return ProofResult(True, f"exhaustive: {checked} tables, {held} satisfy every invariant, none lets a walk reach a table ({secs:.1f} s)")


INVARIANTS = [getattr(paging, n) for n in dir(paging) if n.startswith("inv_")]
