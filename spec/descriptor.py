"""Selectors and descriptors: the formats x86 segmentation reads (Intel SDM Vol. 3A §3.4, §3.5, §5.8).

This is the data half of :mod:`spec.segmentation`: the bit layouts, the arithmetic on them,
and the tables Linux and the presets boot with.  The checks that use them (loads, far
transfers, accesses) are in :mod:`spec.segmentation`, which re-exports every name here.

**Selectors.**  A segment register holds a 16-bit *selector*: index (bits 3..15), table
indicator TI (bit 2: 0 = GDT, 1 = LDT) and RPL (bits 0..1) (§3.4.2, :func:`make_selector`).
Index 0 of the GDT is the *null selector*: it loads, but names no descriptor.

**Descriptors.**  Loading a selector fetches the 8-byte *descriptor* at ``index * 8`` in the
GDT or LDT (§3.4.5, :func:`decode_descriptor`): a 32-bit base, a 20-bit limit counted in bytes
or, with the granularity bit G, in 4 KiB units (:func:`scaled_limit`), a 4-bit type, S
(code/data vs system), DPL, P (present), and L, D/B, AVL.  System descriptors (LDT, TSS, call
gates) are 16 bytes in IA-32e mode, to hold a 64-bit base or offset (§3.5.2, §5.8.3.1:
:func:`encode_system16`, :func:`encode_gate64`).  Linux builds its entries with
``GDT_ENTRY_INIT`` (:func:`gdt_entry_init`) and user space asks for LDT entries with
``modify_ldt``'s ``struct user_desc`` (:func:`fill_ldt`).

The arithmetic helpers use plain operators (and the ``_ite``/``_and`` shim) so that
``proofs/segmentation.py`` runs them on z3 values.

>>> hex(make_selector(6, 0, 3))                  # __USER_CS
'0x33'
>>> d = decode_descriptor(LINUX_GDT[6])
>>> d.dpl, d.l, is_code(d)
(3, 1, True)
"""

from __future__ import annotations

from typing import NamedTuple

# ---------------------------------------------------------------------------------------------
# Constants (Intel SDM Vol. 3A; Linux arch/x86/include/asm/segment.h, desc_defs.h)

# Segment registers in the order of the Sreg encoding of MOV (SDM Vol. 2B, MOV: ES=0, CS=1 ... GS=5).
ES, CS, SS, DS, FS, GS = range(6)
SEG_NAMES = ("ES", "CS", "SS", "DS", "FS", "GS")

# Selector fields (§3.4.2, Figure 3-6).
RPL_MASK = 0x3
TI_LDT = 0x4
SELECTOR_ERROR_MASK = 0xFFFC  # §6.13, Figure 6-7: EXT = 0, IDT = 0, TI, index
MAX_DESCRIPTORS = 8192  # §3.5.1: a table holds at most 8192 descriptors (13-bit index)

# Type field (§3.4.5.1, Table 3-1), for S = 1.
TYPE_ACCESSED = 0x1
TYPE_WRITABLE = 0x2  # data
TYPE_READABLE = 0x2  # code
TYPE_EXPAND_DOWN = 0x4  # data
TYPE_CONFORMING = 0x4  # code
TYPE_CODE = 0x8

# System types (§3.5, Table 3-2).  IA-32e mode keeps only LDT, 64-bit TSS and the 64-bit gates.
SYS_TSS16_AVAIL, SYS_LDT, SYS_TSS16_BUSY, SYS_CALL_GATE16, SYS_TASK_GATE = 0x1, 0x2, 0x3, 0x4, 0x5
SYS_TSS_AVAIL, SYS_TSS_BUSY, SYS_CALL_GATE, SYS_INT_GATE, SYS_TRAP_GATE = 0x9, 0xB, 0xC, 0xE, 0xF
SYSTEM_TYPES_LEGACY = frozenset({0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x9, 0xB, 0xC, 0xE, 0xF})
SYSTEM_TYPES_IA32E = frozenset({0x2, 0x9, 0xB, 0xC, 0xE, 0xF})
# LAR accepts these system types, LSL fewer (SDM Vol. 2A LAR and LSL).
LAR_SYSTEM_LEGACY = frozenset({0x1, 0x2, 0x3, 0x4, 0x5, 0x9, 0xB, 0xC})
LAR_SYSTEM_IA32E = frozenset({0x2, 0x9, 0xB, 0xC})
LSL_SYSTEM_LEGACY = frozenset({0x1, 0x2, 0x3, 0x9, 0xB})
LSL_SYSTEM_IA32E = frozenset({0x2, 0x9, 0xB})

# The access-rights word a segment register caches (the LAR layout, shifted right by 8).
ATTR_S, ATTR_P, ATTR_AVL, ATTR_L, ATTR_DB, ATTR_G = 0x10, 0x80, 0x1000, 0x2000, 0x4000, 0x8000
LAR_MASK = 0x00F0FF00  # §5.10.1 / LAR: bits 16..19 of the result are undefined

# Exception vectors (§6.15, Table 6-1).
VECTOR_UD, VECTOR_NP, VECTOR_SS, VECTOR_GP = 6, 11, 12, 13

MASK32, MASK64 = (1 << 32) - 1, (1 << 64) - 1

# Linux's descriptor flag words (arch/x86/include/asm/desc_defs.h), in GDT_ENTRY_INIT layout:
# type | S << 4 | DPL << 5 | P << 7 | AVL << 12 | L << 13 | D/B << 14 | G << 15.
_DESC_DATA = 0x10 | 0x80 | TYPE_ACCESSED | TYPE_WRITABLE
_DESC_CODE = 0x10 | 0x80 | TYPE_ACCESSED | TYPE_READABLE | TYPE_CODE
DESC_CODE32 = _DESC_CODE | ATTR_G | ATTR_DB  # 0xc09b
DESC_CODE64 = _DESC_CODE | ATTR_G | ATTR_L  # 0xa09b
DESC_DATA64 = _DESC_DATA | ATTR_G | ATTR_DB  # 0xc093
DESC_USER = 3 << 5  # _DESC_DPL(3)

# arch/x86/include/asm/segment.h (CONFIG_X86_64): GDT layout and selectors.
GDT_ENTRY_KERNEL32_CS, GDT_ENTRY_KERNEL_CS, GDT_ENTRY_KERNEL_DS = 1, 2, 3
GDT_ENTRY_DEFAULT_USER32_CS, GDT_ENTRY_DEFAULT_USER_DS, GDT_ENTRY_DEFAULT_USER_CS = 4, 5, 6
GDT_ENTRY_TSS, GDT_ENTRY_LDT, GDT_ENTRY_TLS_MIN, GDT_ENTRY_CPUNODE, GDT_ENTRIES = 8, 10, 12, 15, 16
KERNEL_CS, KERNEL_DS = 0x10, 0x18  # __KERNEL_CS, __KERNEL_DS
USER32_CS, USER_DS, USER_CS = 0x23, 0x2B, 0x33  # __USER32_CS, __USER_DS, __USER_CS
CPUNODE_SEL = GDT_ENTRY_CPUNODE * 8 + 3  # __CPUNODE_SEG, read with LSL by vgetcpu


# ---------------------------------------------------------------------------------------------
# Arithmetic helpers: plain operators, so the proofs run them on z3 values.


def _ite(cond, a, b):
    """``a if cond else b``; for a symbolic (z3) condition, ``z3.If`` (only the proofs pass one)."""
    if isinstance(cond, bool):
        return a if cond else b
    import z3  # noqa: PLC0415 - a symbolic condition comes only from the proofs

    return z3.If(cond, a, b)


def _and(a, b):
    """``a and b`` for Python and z3 booleans."""
    if isinstance(a, bool) and isinstance(b, bool):
        return a and b
    import z3  # noqa: PLC0415

    return z3.And(a, b)


def selector_index(sel):
    """Bits 3..15 of a selector: the descriptor's index in its table (§3.4.2)."""
    return (sel >> 3) & 0x1FFF


def selector_rpl(sel):
    """Bits 0..1: the requested privilege level."""
    return sel & RPL_MASK


def make_selector(index, ti, rpl):
    """The selector for ``index`` in the GDT (ti = 0) or LDT (ti = 1) with ``rpl``.

    >>> hex(make_selector(6, 0, 3)), hex(make_selector(0, 1, 3))
    ('0x33', '0x7')

    Contract:

    ```text
    pre: 0 <= index < 8192 and 0 <= ti <= 1 and 0 <= rpl <= 3
    post: selector_index(__return__) == index
    post: selector_rpl(__return__) == rpl
    post: 0 <= __return__ < 65536
    ```
    """
    return (index << 3) | (ti << 2) | rpl


def is_null_selector(sel) -> bool:
    """Index 0 of the GDT, any RPL (§3.4.2): loads, but never names a descriptor."""
    return sel & SELECTOR_ERROR_MASK == 0


def error_code(sel):
    """The error code of a fault caused by selector ``sel`` (§6.13): ``sel & 0xFFFC``."""
    return sel & SELECTOR_ERROR_MASK


def scaled_limit(raw, g):
    """The last valid offset of a segment whose 20-bit limit field is ``raw`` (§3.4.5): bytes
    with G = 0, 4 KiB units with G = 1 (the low 12 offset bits are then not checked).

    >>> hex(scaled_limit(0xFFFFF, 1)), hex(scaled_limit(0xFF, 0)), hex(scaled_limit(0, 1))
    ('0xffffffff', '0xff', '0xfff')

    Contract:

    ```text
    pre: 0 <= raw < 2 ** 20 and 0 <= g <= 1
    post: __return__ >= raw
    post: __return__ < 2 ** 32
    post: g == 1 or __return__ == raw
    ```
    """
    return _ite(g == 1, raw * 4096 + 4095, raw)


def expand_down_upper(db):
    """The upper bound of an expand-down segment: 0xFFFFFFFF with B = 1, else 0xFFFF (§3.4.5.1)."""
    return _ite(db == 1, MASK32, 0xFFFF)


def within_limit(offset, size, limit, expand_down, db):
    """Do the bytes ``offset .. offset + size - 1`` lie inside the segment (§5.3)?

    Expand-up: every byte at or below ``limit``.  Expand-down: every byte *above* ``limit`` and
    at or below the upper bound (:func:`expand_down_upper`): the limit is the lowest offset that
    is *not* valid, so a stack can grow down by lowering it.

    >>> within_limit(0xFFF, 1, 0xFFF, 0, 1), within_limit(0xFFE, 4, 0xFFF, 0, 1)
    (True, False)
    >>> within_limit(0xFFF, 1, 0xFFF, 1, 1), within_limit(0x1000, 4, 0xFFF, 1, 1)
    (False, True)

    Contract:

    ```text
    pre: 0 <= offset < 2 ** 32 and 1 <= size <= 16 and 0 <= limit < 2 ** 32
    pre: 0 <= expand_down <= 1 and 0 <= db <= 1
    post: expand_down == 1 or __return__ == (offset + size - 1 <= limit)
    post: expand_down == 0 or not __return__ or offset > limit
    ```
    """
    last = offset + size - 1
    up = last <= limit
    down = _and(offset > limit, last <= expand_down_upper(db))
    return _ite(expand_down == 1, down, up)


def max_privilege(cpl, rpl):
    """The privilege a data-segment load is checked at: the less privileged (numerically larger)
    of CPL and RPL (§5.6)."""
    return _ite(cpl >= rpl, cpl, rpl)


def privilege_ok(cpl, rpl, dpl):
    """§5.6: may code at ``cpl`` load a data (or nonconforming code) segment of ``dpl`` through a
    selector with ``rpl``?  Only if ``max(CPL, RPL) <= DPL``.

    >>> privilege_ok(0, 0, 0), privilege_ok(0, 3, 0), privilege_ok(3, 0, 3)
    (True, False, True)

    Contract:

    ```text
    pre: 0 <= cpl <= 3 and 0 <= rpl <= 3 and 0 <= dpl <= 3
    post: __return__ == (cpl <= dpl and rpl <= dpl)
    ```
    """
    return max_privilege(cpl, rpl) <= dpl


def is_canonical(addr, la57=False):
    """Bits 63..47 (63..56 with LA57) of a 64-bit linear address all equal (§3.3.7.1 of Vol. 1).

    >>> is_canonical(0x7FFFFFFFFFFF), is_canonical(0x800000000000), is_canonical(2**64 - 1)
    (True, False, True)
    """
    bits = 57 if la57 else 48
    top = addr >> (bits - 1)
    return top == 0 or top == (1 << (65 - bits)) - 1


def linear_address(base, offset, long_mode, reg):
    """``base + offset`` (§3.4): in 64-bit mode only FS and GS keep a base and the sum wraps at
    2^64; otherwise the sum wraps at 2^32.

    >>> hex(linear_address(0x1000, 0x10, True, DS)), hex(linear_address(0x1000, 0x10, True, FS))
    ('0x10', '0x1010')
    >>> hex(linear_address(0xFFFFF000, 0x2000, False, DS))
    '0x1000'
    """
    if long_mode:
        used = base if reg in (FS, GS) else 0
        return (used + offset) & MASK64
    return (base + offset) & MASK32


# ---------------------------------------------------------------------------------------------
# Descriptor formats (§3.4.5 Figure 3-8, §3.5.2 / Figure 8-4, §5.8.3 Figures 5-8 and 5-9)


class Descriptor(NamedTuple):
    """An 8-byte code, data or system segment descriptor, decoded."""

    base: int
    limit: int  # the 20-bit limit field, unscaled
    type: int
    s: int
    dpl: int
    p: int
    avl: int = 0
    l: int = 0  # noqa: E741 - the SDM's name
    db: int = 0
    g: int = 0


def encode_descriptor(base, limit, type_, s, dpl, p, avl=0, l=0, db=0, g=0):  # noqa: E741
    """The 64-bit descriptor word (§3.4.5, Figure 3-8): limit 15:0 in bits 0..15, base 23:0 in
    16..39, type 40..43, S 44, DPL 45..46, P 47, limit 19:16 in 48..51, AVL 52, L 53, D/B 54,
    G 55, base 31:24 in 56..63.

    >>> hex(encode_descriptor(0, 0xFFFFF, 0xB, 1, 3, 1, l=1, g=1))   # __USER_CS
    '0xaffb000000ffff'
    """
    return (
        (limit & 0xFFFF)
        | ((base & 0xFFFFFF) << 16)
        | ((type_ & 0xF) << 40)
        | ((s & 1) << 44)
        | ((dpl & 3) << 45)
        | ((p & 1) << 47)
        | (((limit >> 16) & 0xF) << 48)
        | ((avl & 1) << 52)
        | ((l & 1) << 53)
        | ((db & 1) << 54)
        | ((g & 1) << 55)
        | (((base >> 24) & 0xFF) << 56)
    )


def decode_descriptor(q) -> Descriptor:
    """The fields of a 64-bit descriptor word (the inverse of :func:`encode_descriptor`)."""
    return Descriptor(
        base=((q >> 16) & 0xFFFFFF) | (((q >> 56) & 0xFF) << 24),
        limit=(q & 0xFFFF) | (((q >> 48) & 0xF) << 16),
        type=(q >> 40) & 0xF,
        s=(q >> 44) & 1,
        dpl=(q >> 45) & 3,
        p=(q >> 47) & 1,
        avl=(q >> 52) & 1,
        l=(q >> 53) & 1,
        db=(q >> 54) & 1,
        g=(q >> 55) & 1,
    )


def encode_system16(base, limit, type_, dpl, p, avl=0, g=0):
    """An IA-32e 16-byte LDT or TSS descriptor as two words (§3.5.2, §8.2.3 Figure 8-4): the
    low word is the legacy layout with S = 0; the high word holds base 63:32 in bits 0..31 and
    zeros above (its type field, bits 8..12 of the upper dword, must be 0)."""
    low = encode_descriptor(base & MASK32, limit, type_, 0, dpl, p, avl, 0, 0, g)
    return low, (base >> 32) & MASK32


def decode_system16(low, high):
    """(descriptor with its 64-bit base, upper type field) of a 16-byte system descriptor."""
    d = decode_descriptor(low)
    return d._replace(base=d.base | ((high & MASK32) << 32)), (high >> 40) & 0x1F


def encode_gate(selector, offset, type_, dpl, p, param_count=0):
    """A legacy call gate (§5.8.3, Figure 5-8): offset 15:0, selector, parameter count,
    type, DPL, P, offset 31:16."""
    return (
        (offset & 0xFFFF)
        | ((selector & 0xFFFF) << 16)
        | ((param_count & 0x1F) << 32)
        | ((type_ & 0xF) << 40)
        | ((dpl & 3) << 45)
        | ((p & 1) << 47)
        | (((offset >> 16) & 0xFFFF) << 48)
    )


def encode_gate64(selector, offset, dpl, p):
    """An IA-32e call gate (§5.8.3.1, Figure 5-9): the legacy layout with type 0xC and no
    parameter count, then offset 63:32 and a zero type field in the high word."""
    return encode_gate(selector, offset & MASK32, SYS_CALL_GATE, dpl, p), (offset >> 32) & MASK32


def gate_selector(q):
    """The target code-segment selector of a call gate."""
    return (q >> 16) & 0xFFFF


def gate_offset(low, high=0):
    """The entry offset of a call gate (``high`` is the upper word of a 16-byte gate)."""
    return (low & 0xFFFF) | (((low >> 48) & 0xFFFF) << 16) | ((high & MASK32) << 32)


def gdt_entry_init(flags, base, limit):
    """Linux's ``GDT_ENTRY_INIT(flags, base, limit)`` (arch/x86/include/asm/desc_defs.h)."""
    return encode_descriptor(
        base, limit, flags & 0xF, (flags >> 4) & 1, (flags >> 5) & 3, (flags >> 7) & 1,
        (flags >> 12) & 1, (flags >> 13) & 1, (flags >> 14) & 1, (flags >> 15) & 1,
    )


class UserDesc(NamedTuple):
    """Linux's ``struct user_desc`` (arch/x86/include/uapi/asm/ldt.h), the argument of
    ``modify_ldt()`` and ``set_thread_area()``."""

    entry_number: int
    base_addr: int
    limit: int
    seg_32bit: int = 1
    contents: int = 0  # 0 data, 1 expand-down data, 2 code, 3 conforming code
    read_exec_only: int = 0
    limit_in_pages: int = 0
    seg_not_present: int = 0
    useable: int = 0


def fill_ldt(info: UserDesc) -> int:
    """Linux's ``fill_ldt()`` (arch/x86/include/asm/desc.h): the descriptor word ``modify_ldt``
    stores.  DPL is forced to 3, S to 1, L to 0, and the accessed bit is set so that the LDT can
    be mapped read-only.

    >>> hex(fill_ldt(UserDesc(0, 0x1000, 0xFF)))
    '0x40f300100000ff'
    """
    type_ = ((info.read_exec_only ^ 1) << 1) | (info.contents << 2) | TYPE_ACCESSED
    return encode_descriptor(info.base_addr, info.limit, type_, 1, 3, info.seg_not_present ^ 1,
                             info.useable, 0, info.seg_32bit, info.limit_in_pages)


def ldt_entry_allowed(info: UserDesc) -> bool:
    """``write_ldt()`` (arch/x86/kernel/ldt.c, new mode): a present conforming code segment
    (contents 3) is refused with EINVAL."""
    return not (info.contents == 3 and info.seg_not_present == 0)


def attrs_of(d: Descriptor) -> int:
    """The access-rights word a segment register caches for ``d``."""
    return d.type | d.s << 4 | d.dpl << 5 | d.p << 7 | d.avl << 12 | d.l << 13 | d.db << 14 | d.g << 15


def is_code(d: Descriptor) -> bool:
    return d.s == 1 and bool(d.type & TYPE_CODE)


def is_data(d: Descriptor) -> bool:
    return d.s == 1 and not d.type & TYPE_CODE


def is_conforming(d: Descriptor) -> bool:
    return is_code(d) and bool(d.type & TYPE_CONFORMING)


def describe_descriptor(q: int) -> str:
    """One line in words: ``code 64-bit DPL3 readable accessed base 0x0 limit 0xffffffff``."""
    d = decode_descriptor(q)
    if q == 0:
        return "null (all zero)"
    if d.s:
        if is_code(d):
            width = "64-bit" if d.l else "32-bit" if d.db else "16-bit"
            kind = [f"code {width}", "conforming" if d.type & TYPE_CONFORMING else "",
                    "readable" if d.type & TYPE_READABLE else "execute-only"]
        else:
            kind = ["data", "expand-down" if d.type & TYPE_EXPAND_DOWN else "",
                    "writable" if d.type & TYPE_WRITABLE else "read-only"]
        kind.append("accessed" if d.type & TYPE_ACCESSED else "")
        words = " ".join(k for k in kind if k)
        return f"{words} DPL{d.dpl}{'' if d.p else ' not-present'} base {d.base:#x} limit {scaled_limit(d.limit, d.g):#x}"
    names = {0x1: "TSS16 available", 0x2: "LDT", 0x3: "TSS16 busy", 0x4: "call gate 16", 0x5: "task gate",
             0x6: "interrupt gate 16", 0x7: "trap gate 16", 0x9: "TSS available", 0xB: "TSS busy",
             0xC: "call gate", 0xE: "interrupt gate", 0xF: "trap gate"}
    return f"system: {names.get(d.type, f'reserved type {d.type:#x}')} DPL{d.dpl}{'' if d.p else ' not-present'}"




# ---------------------------------------------------------------------------------------------
# The GDTs the presets boot with


def _linux_gdt(cpu: int = 0, node: int = 0) -> tuple[int, ...]:
    """The x86-64 per-CPU GDT (arch/x86/kernel/cpu/common.c: ``gdt_page``; ``setup_getcpu()``
    for the CPUNODE entry).  The busy TSS's base and limit are illustrative: user space cannot
    see them."""
    gdt = [0] * GDT_ENTRIES
    gdt[GDT_ENTRY_KERNEL32_CS] = gdt_entry_init(DESC_CODE32, 0, 0xFFFFF)
    gdt[GDT_ENTRY_KERNEL_CS] = gdt_entry_init(DESC_CODE64, 0, 0xFFFFF)
    gdt[GDT_ENTRY_KERNEL_DS] = gdt_entry_init(DESC_DATA64, 0, 0xFFFFF)
    gdt[GDT_ENTRY_DEFAULT_USER32_CS] = gdt_entry_init(DESC_CODE32 | DESC_USER, 0, 0xFFFFF)
    gdt[GDT_ENTRY_DEFAULT_USER_DS] = gdt_entry_init(DESC_DATA64 | DESC_USER, 0, 0xFFFFF)
    gdt[GDT_ENTRY_DEFAULT_USER_CS] = gdt_entry_init(DESC_CODE64 | DESC_USER, 0, 0xFFFFF)
    gdt[GDT_ENTRY_TSS : GDT_ENTRY_TSS + 2] = encode_system16(0xFFFFFE0000003000, 0x206F, SYS_TSS_BUSY, 0, 1)
    # Read-only expand-down data, DPL 3, D = 1; the limit holds (node << 12) | cpu.
    gdt[GDT_ENTRY_CPUNODE] = encode_descriptor(0, (node << 12) | cpu, 0x5, 1, 3, 1, db=1)
    return tuple(gdt)


LINUX_GDT = _linux_gdt()


def _teaching_gdt() -> tuple[int, ...]:
    """A 32-bit flat GDT plus the segments the checks are about: per-ring code and data,
    conforming, execute-only, read-only, expand-down (byte and page granular), not-present,
    a small segment with a base, and call gates (one into ring 0)."""
    e = encode_descriptor
    gdt = [0,
           e(0, 0xFFFFF, 0xB, 1, 0, 1, db=1, g=1),   # 1  0x08 ring-0 code 32-bit flat
           e(0, 0xFFFFF, 0x3, 1, 0, 1, db=1, g=1),   # 2  0x10 ring-0 data flat
           e(0, 0xFFFFF, 0xB, 1, 3, 1, db=1, g=1),   # 3  0x18 ring-3 code flat
           e(0, 0xFFFFF, 0x3, 1, 3, 1, db=1, g=1),   # 4  0x20 ring-3 data flat
           e(0, 0xFFFFF, 0xB, 1, 1, 1, db=1, g=1),   # 5  0x28 ring-1 code
           e(0, 0xFFFFF, 0x3, 1, 1, 1, db=1, g=1),   # 6  0x30 ring-1 data
           e(0, 0xFFFFF, 0xF, 1, 0, 1, db=1, g=1),   # 7  0x38 conforming code DPL 0
           e(0, 0xFFFFF, 0x9, 1, 3, 1, db=1, g=1),   # 8  0x40 execute-only code DPL 3
           e(0x10000, 0xFFF, 0x0, 1, 3, 1, db=1),    # 9  0x48 read-only data, base 64 KiB, 4 KiB
           e(0, 0xFFF, 0x6, 1, 3, 1, db=1),          # 10 0x50 expand-down writable, limit 0xfff, B=1
           e(0, 0xF, 0x6, 1, 3, 1, db=0, g=1),       # 11 0x58 expand-down, G=1 (limit 0xffff), B=0
           e(0, 0xFFFFF, 0x2, 1, 3, 0, db=1, g=1),   # 12 0x60 not-present data DPL 3
           e(0x400000, 0x3, 0x2, 1, 3, 1, db=1, g=1),  # 13 0x68 data base 4 MiB, 16 KiB (G=1)
           encode_gate(0x08, 0x1000, SYS_CALL_GATE, 3, 1),  # 14 0x70 call gate DPL 3 -> ring 0
           encode_gate(0x38, 0x2000, SYS_CALL_GATE, 3, 1),  # 15 0x78 call gate -> conforming
           e(0, 0xFFFFF, 0xB, 1, 0, 1, l=1, g=1),    # 16 0x80 ring-0 64-bit code
           e(0, 0xFFFFF, 0xB, 1, 3, 1, l=1, g=1)]    # 17 0x88 ring-3 64-bit code
    return tuple(gdt)


TEACHING_GDT = _teaching_gdt()


def _ia32e_gdt() -> tuple[int, ...]:
    """Linux's GDT plus two IA-32e call gates (into ring-0 64-bit code, one not present)."""
    gdt = list(LINUX_GDT)
    gdt[GDT_ENTRY_TLS_MIN : GDT_ENTRY_TLS_MIN + 2] = encode_gate64(KERNEL_CS, 0xFFFFFFFF81000000, 3, 1)
    return tuple(gdt) + encode_gate64(KERNEL_CS, 0x1000, 3, 0)
