"""Page-table entries, bit by bit: the x86-64 format, the teaching format, and their decoding.

**The problem.**  A page-table entry is one machine word that the CPU reads during a page walk
and the kernel writes with ``set_pte_at()``/``set_pmd_at()``.  Its bits mean different things
at different levels and in different formats, and a mistake of one bit is a security hole (a
writable entry that should not be, a user bit on a kernel page) or a crash (a reserved bit set:
the CPU raises #PF with the RSVD flag).  This module states every bit once; the walker in
:mod:`spec.paging` reads entries only through :func:`decode`.

**x86-64** (Intel SDM vol. 3A §4.5, tables 4-15 to 4-20; Linux
``arch/x86/include/asm/pgtable_types.h``)::

    63  62..59  58  57  56..52  51..M  M-1..12  12      11  10  9   8  7       6  5  4   3   2  1  0
    NX  PKEY    SW5 SW4 (avl)   rsvd   PFN      PAT_LG  SW3 SW2 SW1 G  PS/PAT  D  A  PCD PWT US RW P

``PS`` (bit 7) makes a PMD (2 MiB) or PUD (1 GiB) entry a leaf; in a 4 KiB PTE the same bit is
the PAT bit, and a large leaf keeps its PAT bit in bit 12 (``_PAGE_PAT_LARGE``), which is why
the low bits of a large leaf's frame number must be zero (the CPU checks: reserved).  Linux
names the software bits: SW1 ``_PAGE_SPECIAL``, SW2 ``_PAGE_UFFD_WP``, SW3
``_PAGE_SOFT_DIRTY``, SW5 ``_PAGE_SAVED_DIRTY``.

**Reserved bits** (SDM §4.5.4, tables 4-15..4-20): bits M..51 of every present entry (M =
MAXPHYADDR), bit 63 when ``EFER.NXE`` = 0, bit 7 of a PML5E or PML4E, bits 13..29 of a 1 GiB
leaf and bits 13..20 of a 2 MiB leaf.  Set in a present entry, any of them makes the walk fail
with an RSVD page fault.

**Legacy x86** uses the same low 12 bits.  *32-bit paging* (SDM §4.3) has 4-byte entries with
a 20-bit frame number in bits 12..31 and no NX; with CR4.PSE a PDE with PS set maps a 4 MiB
page whose frame is bits 22..31 (bits 13..21 reserved without PSE-36), and without CR4.PSE
bit 7 of a PDE is ignored.  *PAE paging* (SDM §4.4) has the 64-bit entries of x86-64 below a
4-entry PDPT whose entries carry only P, PWT, PCD and the address (bits 1, 2, 5..8 and 63
reserved); bits M..62 are reserved everywhere (no protection keys), NX needs ``EFER.NXE``.

**The teaching format** (the "multi-level page table" homework of OSTEP, ch. 20): one byte per
entry, bit 7 valid, bits 0..6 the frame number; no permission bits at all.  The layout is data
(valid bit, PFN shift, PFN width: :data:`TOY_LAYOUT`), so other textbook formats fit too.

**ARM64, 4 KiB granule** (Arm ARM D8.3, VMSAv8-64 descriptors): bit 0 valid; bit 1 *table*
(levels 0..2) or *page* (level 3; 0 there is reserved, i.e. invalid); a level-1/2 descriptor
with bit 1 clear is a *block* (1 GiB / 2 MiB).  Leaf attributes: AttrIndx[2:0] bits 2..4, NS
bit 5, AP[2:1] bits 6..7 (AP[1] = EL0 may access, AP[2] = read-only), SH[1:0] bits 8..9, AF
bit 10, nG bit 11, output address bits 12..47, DBM bit 51, PXN bit 53, UXN bit 54; table
descriptors carry PXNTable 59, UXNTable 60, APTable[1:0] 61..62.
With the 16 KiB and 64 KiB granules the attributes stay where they are and the output
address starts at bit 14 or 16 (the bits below are RES0 without FEAT_LPA/LPA2; ignored here).

Every helper here uses plain operators only, so that the proofs run the same functions on z3
bit-vectors: :func:`x86_decode` and :func:`x86_encode` round-trip for all 2^64 words.

>>> e = x86_encode(X86Fields(p=1, rw=1, us=1, a=1, d=1, nx=1, pfn=0x1234))
>>> hex(e)
'0x8000000001234067'
>>> x86_decode(e).pfn == 0x1234, x86_decode(e).nx
(True, 1)
"""

from __future__ import annotations

from typing import NamedTuple

# ---------------------------------------------------------------------------------------------
# x86-64: arch/x86/include/asm/pgtable_types.h (_PAGE_BIT_*)

_PAGE_BIT_PRESENT = 0
_PAGE_BIT_RW = 1
_PAGE_BIT_USER = 2
_PAGE_BIT_PWT = 3
_PAGE_BIT_PCD = 4
_PAGE_BIT_ACCESSED = 5
_PAGE_BIT_DIRTY = 6
_PAGE_BIT_PSE = 7  # a 2 MiB / 1 GiB leaf
_PAGE_BIT_PAT = 7  # in a 4 KiB PTE
_PAGE_BIT_GLOBAL = 8
_PAGE_BIT_SOFTW1 = 9  # _PAGE_BIT_SPECIAL
_PAGE_BIT_SOFTW2 = 10  # _PAGE_BIT_UFFD_WP
_PAGE_BIT_SOFTW3 = 11  # _PAGE_BIT_SOFT_DIRTY
_PAGE_BIT_PAT_LARGE = 12
_PAGE_BIT_SOFTW4 = 57
_PAGE_BIT_SOFTW5 = 58  # _PAGE_BIT_SAVED_DIRTY
_PAGE_BIT_PKEY_BIT0 = 59  # .. 62
_PAGE_BIT_NX = 63

_PAGE_PRESENT = 1 << _PAGE_BIT_PRESENT
_PAGE_RW = 1 << _PAGE_BIT_RW
_PAGE_USER = 1 << _PAGE_BIT_USER
_PAGE_PWT = 1 << _PAGE_BIT_PWT
_PAGE_PCD = 1 << _PAGE_BIT_PCD
_PAGE_ACCESSED = 1 << _PAGE_BIT_ACCESSED
_PAGE_DIRTY = 1 << _PAGE_BIT_DIRTY
_PAGE_PSE = 1 << _PAGE_BIT_PSE
_PAGE_PAT = 1 << _PAGE_BIT_PAT
_PAGE_GLOBAL = 1 << _PAGE_BIT_GLOBAL
_PAGE_SPECIAL = 1 << _PAGE_BIT_SOFTW1
_PAGE_UFFD_WP = 1 << _PAGE_BIT_SOFTW2
_PAGE_SOFT_DIRTY = 1 << _PAGE_BIT_SOFTW3
_PAGE_PAT_LARGE = 1 << _PAGE_BIT_PAT_LARGE
_PAGE_SAVED_DIRTY = 1 << _PAGE_BIT_SOFTW5
_PAGE_PKEY_MASK = 0xF << _PAGE_BIT_PKEY_BIT0
_PAGE_NX = 1 << _PAGE_BIT_NX

__PHYSICAL_MASK_SHIFT = 52  # arch/x86/include/asm/page_64_types.h
PTE_PFN_MASK = ((1 << __PHYSICAL_MASK_SHIFT) - 1) & ~0xFFF  # PTE_PFN_MASK: bits 12..51
PFN_BITS = __PHYSICAL_MASK_SHIFT - 12  # 40

# _PAGE_TABLE / _KERNPG_TABLE: what Linux writes into a non-leaf entry (P RW A D, plus US for a
# user address space's tables).  Permissions are then decided by the leaf.
_KERNPG_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY
_PAGE_TABLE = _KERNPG_TABLE | _PAGE_USER

#: The bits of a ``pgprot_t`` (everything but P, A, D, PS and the frame), 4 KiB layout.
PGPROT_MASK = (
    _PAGE_RW | _PAGE_USER | _PAGE_PWT | _PAGE_PCD | _PAGE_PAT | _PAGE_GLOBAL | _PAGE_SPECIAL
    | _PAGE_UFFD_WP | _PAGE_SOFT_DIRTY | (1 << _PAGE_BIT_SOFTW4) | _PAGE_SAVED_DIRTY | _PAGE_PKEY_MASK | _PAGE_NX
)
#: The permission bits a table entry may carry (``protect_table``): RW, US, NX.
TABLE_PROT_MASK = _PAGE_RW | _PAGE_USER | _PAGE_NX

# Common protections (arch/x86/include/asm/pgtable_types.h, without the encryption mask).
PAGE_NONE_RO = _PAGE_USER | _PAGE_NX  # a read-only user page that cannot be executed
PAGE_SHARED = _PAGE_RW | _PAGE_USER | _PAGE_NX  # PAGE_SHARED: rw-, user
PAGE_READONLY = _PAGE_USER | _PAGE_NX  # PAGE_READONLY: r--, user
PAGE_READONLY_EXEC = _PAGE_USER  # r-x, user
PAGE_SHARED_EXEC = _PAGE_RW | _PAGE_USER  # rwx, user
PAGE_KERNEL = _PAGE_RW | _PAGE_GLOBAL | _PAGE_NX  # __PAGE_KERNEL (P, A, D added when encoded)
PAGE_KERNEL_EXEC = _PAGE_RW | _PAGE_GLOBAL  # __PAGE_KERNEL_EXEC
PAGE_KERNEL_RO = _PAGE_GLOBAL | _PAGE_NX


class X86Fields(NamedTuple):
    """Every field of an x86-64 paging entry, as integers (0/1 for flags)."""

    p: int = 0
    rw: int = 0
    us: int = 0
    pwt: int = 0
    pcd: int = 0
    a: int = 0
    d: int = 0
    ps: int = 0  # PS in a PMD/PUD, PAT in a 4 KiB PTE
    g: int = 0
    sw1: int = 0
    sw2: int = 0
    sw3: int = 0
    pfn: int = 0  # bits 12..51 (bit 12 is PAT_LARGE in a large leaf: part of this field here)
    avl: int = 0  # bits 52..56, ignored by the CPU
    sw4: int = 0
    sw5: int = 0
    pkey: int = 0  # bits 59..62
    nx: int = 0


def _bit(raw, n):
    return (raw >> n) & 1


def x86_decode(raw) -> X86Fields:
    """Split a 64-bit entry into its fields (``pte_flags()``/``pte_pfn()`` in one go).

    Contract:

    ```text
    pre: 0 <= raw < 2 ** 64
    post: 0 <= __return__.pfn < 2 ** 40
    post: 0 <= __return__.pkey < 16
    ```
    """
    return X86Fields(
        p=_bit(raw, 0), rw=_bit(raw, 1), us=_bit(raw, 2), pwt=_bit(raw, 3), pcd=_bit(raw, 4),
        a=_bit(raw, 5), d=_bit(raw, 6), ps=_bit(raw, 7), g=_bit(raw, 8), sw1=_bit(raw, 9),
        sw2=_bit(raw, 10), sw3=_bit(raw, 11), pfn=(raw >> 12) & ((1 << PFN_BITS) - 1),
        avl=(raw >> 52) & 0x1F, sw4=_bit(raw, 57), sw5=_bit(raw, 58), pkey=(raw >> 59) & 0xF,
        nx=_bit(raw, 63),
    )


def x86_encode(f: X86Fields):
    """Join fields into a 64-bit entry; the inverse of :func:`x86_decode` for in-range fields.

    Contract:

    ```text
    pre: all(0 <= x <= 1 for x in (f.p, f.rw, f.us, f.pwt, f.pcd, f.a, f.d, f.ps, f.g, f.sw1, f.sw2, f.sw3, f.sw4, f.sw5, f.nx))
    pre: 0 <= f.pfn < 2 ** 40 and 0 <= f.avl < 32 and 0 <= f.pkey < 16
    post: 0 <= __return__ < 2 ** 64
    post: x86_decode(__return__) == f
    ```
    """
    return (
        (f.p << 0) | (f.rw << 1) | (f.us << 2) | (f.pwt << 3) | (f.pcd << 4) | (f.a << 5) | (f.d << 6)
        | (f.ps << 7) | (f.g << 8) | (f.sw1 << 9) | (f.sw2 << 10) | (f.sw3 << 11) | (f.pfn << 12)
        | (f.avl << 52) | (f.sw4 << 57) | (f.sw5 << 58) | (f.pkey << 59) | (f.nx << 63)
    )


def x86_reserved_mask(level, is_leaf, phys_bits, nxe, top_levels_no_ps):
    """The reserved bits of a present x86-64 entry at ``level`` (1 = PTE, 2 = PMD, 3 = PUD,
    4 = PML4, 5 = PML5), SDM tables 4-15..4-20.  ``top_levels_no_ps``: the lowest level at
    which bit 7 is reserved (4 in IA-32e paging).  Plain integers in, a mask out.

    >>> hex(x86_reserved_mask(2, True, 46, True, 4))
    '0xfc000001fe000'
    >>> hex(x86_reserved_mask(4, False, 52, False, 4))
    '0x8000000000000080'
    """
    mask = ((1 << 52) - 1) & ~((1 << phys_bits) - 1)
    if not nxe:
        mask |= _PAGE_NX
    if level >= top_levels_no_ps:
        mask |= _PAGE_PSE
    if is_leaf and level == 2:
        mask |= ((1 << 21) - 1) & ~((1 << 13) - 1)  # bits 13..20
    if is_leaf and level == 3:
        mask |= ((1 << 30) - 1) & ~((1 << 13) - 1)  # bits 13..29
    return mask


def pae_reserved_mask(level, is_leaf, phys_bits, nxe):
    """The reserved bits of a present PAE entry (SDM §4.4.2, tables 4-8..4-11): level 3 is a
    PDPTE (bits 1, 2, 5..8 and M..63 reserved: no RW, US, A, D, PS or NX); below it bits M..62,
    bit 63 without ``EFER.NXE``, and bits 13..20 of a 2 MiB leaf.

    >>> hex(pae_reserved_mask(3, False, 36, True)), hex(pae_reserved_mask(2, True, 36, False))
    ('0xfffffff0000001e6', '0xfffffff0001fe000')
    """
    if level == 3:
        return 0x1E6 | (((1 << 64) - 1) & ~((1 << phys_bits) - 1))
    mask = ((1 << 63) - 1) & ~((1 << phys_bits) - 1)
    if not nxe:
        mask |= _PAGE_NX
    if is_leaf and level == 2:
        mask |= ((1 << 21) - 1) & ~((1 << 13) - 1)  # bits 13..20
    return mask


def x86_32_reserved_mask(level, is_leaf):
    """The reserved bits of a present 32-bit-paging entry (SDM §4.3, table 4-4; MAXPHYADDR 32,
    no PSE-36): only bits 13..21 of a 4 MiB PDE; no other bit of a 32-bit entry is reserved.

    >>> hex(x86_32_reserved_mask(2, True)), x86_32_reserved_mask(1, True)
    ('0x3fe000', 0)
    """
    return ((1 << 22) - 1) & ~((1 << 13) - 1) if is_leaf and level == 2 else 0


def protval_4k_2_large(prot):
    """``protval_4k_2_large()``: move the PAT bit from bit 7 (4 KiB) to bit 12 (large leaf).

    >>> hex(protval_4k_2_large(_PAGE_PAT | _PAGE_RW))
    '0x1002'
    """
    return (prot & ~_PAGE_PAT) | ((prot & _PAGE_PAT) << (_PAGE_BIT_PAT_LARGE - _PAGE_BIT_PAT))


def protval_large_2_4k(prot):
    """``protval_large_2_4k()``: move the PAT bit from bit 12 back to bit 7.

    >>> protval_large_2_4k(protval_4k_2_large(0x80 | 0x2)) == 0x82
    True
    """
    return (prot & ~_PAGE_PAT_LARGE) | ((prot & _PAGE_PAT_LARGE) >> (_PAGE_BIT_PAT_LARGE - _PAGE_BIT_PAT))


# ---------------------------------------------------------------------------------------------
# ARM64 VMSAv8-64 descriptors (Arm ARM D8.3; Linux arch/arm64/include/asm/pgtable-hwdef.h)

PTE_VALID = 1 << 0
PTE_TABLE_BIT = 1 << 1  # table (levels 0..2) or page (level 3); clear at level 1/2: block
PTE_ATTRINDX_SHIFT = 2  # AttrIndx[2:0], bits 2..4: index into MAIR_EL1
PTE_NS = 1 << 5
PTE_USER = 1 << 6  # AP[1]: EL0 may access
PTE_RDONLY = 1 << 7  # AP[2]: read-only
PTE_SHARED = 3 << 8  # SH[1:0] = inner shareable
PTE_AF = 1 << 10  # Access Flag
PTE_NG = 1 << 11  # not global (ASID-tagged)
PTE_DBM = 1 << 51  # dirty bit modifier
PTE_PXN = 1 << 53  # privileged execute-never
PTE_UXN = 1 << 54  # unprivileged execute-never
PMD_TABLE_PXN = 1 << 59
PMD_TABLE_UXN = 1 << 60
PMD_TABLE_AP_NO_EL0 = 1 << 61  # APTable[0]: no EL0 access below
PMD_TABLE_AP_RDONLY = 1 << 62  # APTable[1]: read-only below
ARM64_OA_MASK = ((1 << 48) - 1) & ~0xFFF  # output address bits 12..47 (4 KiB granule, 48-bit PA)
MT_NORMAL = 0  # AttrIndx of normal memory in Linux's MAIR_EL1 layout (MT_NORMAL = 0)

#: Linux's PAGE_* for user pages on arm64 (pgtable-prot.h), without PTE_VALID/PTE_AF/type.
ARM64_PAGE_READONLY = PTE_USER | PTE_RDONLY | PTE_NG | PTE_PXN | PTE_UXN | PTE_SHARED
ARM64_PAGE_SHARED = PTE_USER | PTE_NG | PTE_PXN | PTE_UXN | PTE_SHARED
ARM64_PAGE_KERNEL = PTE_PXN | PTE_UXN | PTE_SHARED


class Arm64Fields(NamedTuple):
    """The fields of an ARM64 descriptor (4 KiB granule)."""

    valid: int = 0
    table: int = 0  # bit 1
    attrindx: int = 0
    ns: int = 0
    ap: int = 0  # AP[2:1] as a 2-bit number: bit 0 = EL0 access, bit 1 = read-only
    sh: int = 0
    af: int = 0
    ng: int = 0
    oa: int = 0  # output address >> 12
    dbm: int = 0
    pxn: int = 0
    uxn: int = 0
    pxntable: int = 0
    uxntable: int = 0
    aptable: int = 0


def arm64_decode(raw) -> Arm64Fields:
    """Split an ARM64 descriptor into its fields (page/block and table attributes together).

    >>> arm64_decode(0x00600000_40000703).oa == 0x40000, arm64_decode(0x00600000_40000703).af
    (True, 1)
    """
    return Arm64Fields(
        valid=_bit(raw, 0), table=_bit(raw, 1), attrindx=(raw >> 2) & 7, ns=_bit(raw, 5),
        ap=(raw >> 6) & 3, sh=(raw >> 8) & 3, af=_bit(raw, 10), ng=_bit(raw, 11),
        oa=(raw >> 12) & ((1 << 36) - 1), dbm=_bit(raw, 51), pxn=_bit(raw, 53), uxn=_bit(raw, 54),
        pxntable=_bit(raw, 59), uxntable=_bit(raw, 60), aptable=(raw >> 61) & 3,
    )


def arm64_encode(f: Arm64Fields):
    """Join ARM64 descriptor fields; the inverse of :func:`arm64_decode` on the fields it names."""
    return (
        f.valid | (f.table << 1) | (f.attrindx << 2) | (f.ns << 5) | (f.ap << 6) | (f.sh << 8)
        | (f.af << 10) | (f.ng << 11) | (f.oa << 12) | (f.dbm << 51) | (f.pxn << 53) | (f.uxn << 54)
        | (f.pxntable << 59) | (f.uxntable << 60) | (f.aptable << 61)
    )


# ---------------------------------------------------------------------------------------------
# The teaching format (OSTEP ch. 20 homework): 8-bit entries, valid bit 7, PFN bits 0..6.

TOY_VALID = 0x80
TOY_PFN_MASK = 0x7F
TOY_LAYOUT = (7, 0, 7)  # (valid bit, PFN shift, PFN width) of the OSTEP entry


# ---------------------------------------------------------------------------------------------
# The uniform view the walker reads


class Decoded(NamedTuple):
    """What the walker needs of one entry, whatever its format.

    ``write``/``user``/``nx`` are what this entry allows (for a table entry: what it allows
    below it); ``rsvd`` is true when a reserved bit is set; ``af`` is false only for an ARM64
    descriptor whose Access Flag is clear.
    """

    present: bool
    leaf: bool
    pfn: int  # the frame (leaf) or the next table (non-leaf), in base pages
    write: bool
    user: bool
    nx: bool  # x86 NX, or ARM64 UXN for a user access / PXN for a privileged one, per ``user_nx``
    pxn: bool
    pkey: int
    rsvd: bool
    af: bool = True


def decode(fmt: str, raw: int, level: int, *, phys_bits: int = 52, nxe: bool = True, pse: bool = True,
           page_shift: int = 12, layout: tuple[int, int, int] = TOY_LAYOUT) -> Decoded:
    """Read an entry of format ``fmt`` found at ``level`` of a walk (1 = last level).

    ``pse`` is CR4.PSE (32-bit paging only: without it bit 7 of a PDE is ignored);
    ``page_shift`` the ARM64 granule; ``layout`` the teaching format's (valid bit, PFN shift,
    PFN width).

    >>> decode("x86-64", 0x8000000001234067, 1)
    Decoded(present=True, leaf=True, pfn=4660, write=True, user=True, nx=True, pxn=True, pkey=0, rsvd=False, af=True)
    >>> decode("toy", 0xA1, 2).pfn
    33
    >>> decode("x86-32", 0x00C000E7, 2, phys_bits=32).pfn, decode("x86-32", 0x00C000E7, 2, pse=False).leaf
    (3072, False)
    >>> decode("x86-pae", 0x1003, 3, phys_bits=36).rsvd  # RW in a PDPTE is reserved
    True
    """
    if fmt in ("x86-64", "x86-pae", "x86-32"):
        f = x86_decode(raw)
        if fmt == "x86-64":
            leaf = level == 1 or (level in (2, 3) and f.ps == 1)
            rsvd = raw & x86_reserved_mask(level, leaf, phys_bits, nxe, 4) != 0
        elif fmt == "x86-pae":
            leaf = level == 1 or (level == 2 and f.ps == 1)
            rsvd = raw & pae_reserved_mask(level, leaf, phys_bits, nxe) != 0
        else:
            leaf = level == 1 or (level == 2 and f.ps == 1 and pse)
            rsvd = raw & x86_32_reserved_mask(level, leaf) != 0
        pfn = f.pfn
        if leaf and level > 1:
            pfn &= ~1  # bit 12 is PAT_LARGE in a large leaf, not part of the frame
        if fmt == "x86-pae" and level == 3:  # a PDPTE has no rights: it allows everything below
            return Decoded(bool(f.p), False, pfn, True, True, False, False, 0, rsvd)
        nx = bool(f.nx) and nxe and fmt != "x86-32"
        return Decoded(bool(f.p), leaf, pfn, bool(f.rw), bool(f.us), nx, nx, f.pkey if fmt == "x86-64" else 0, rsvd)
    if fmt == "arm64":
        f = arm64_decode(raw)
        oa = f.oa >> (page_shift - 12)  # OA bits below the granule are RES0: ignored here
        if level == 1:
            present, leaf = bool(f.valid and f.table), True
        else:
            present, leaf = bool(f.valid), not f.table
        if leaf:
            return Decoded(present, True, oa, not f.ap & 2, bool(f.ap & 1), bool(f.uxn), bool(f.pxn), 0,
                           raw & ((1 << 52) - 1) & ~((1 << phys_bits) - 1) & ~PTE_DBM != 0, bool(f.af))
        return Decoded(present, False, oa, not f.aptable & 2, not f.aptable & 1, bool(f.uxntable),
                       bool(f.pxntable), 0, False)
    if fmt == "toy":
        valid_bit, pfn_shift, pfn_width = layout
        return Decoded(bool((raw >> valid_bit) & 1), level == 1, (raw >> pfn_shift) & ((1 << pfn_width) - 1),
                       True, True, False, False, 0, False)
    raise ValueError(f"unknown entry format {fmt!r}")


def toy_encode(layout, valid, pfn):
    """A teaching-format entry with ``layout`` = (valid bit, PFN shift, PFN width).

    >>> hex(toy_encode(TOY_LAYOUT, 1, 33))
    '0xa1'
    """
    return (valid << layout[0]) | (pfn << layout[1])


def x86_leaf(pfn: int, prot: int, level: int, accessed: bool = True, dirty: bool = False) -> int:
    """A present x86-64 leaf for ``pfn`` with ``pgprot`` bits ``prot`` (4 KiB layout) at
    ``level``: ``pfn_pte()``/``pfn_pmd()`` + ``pmd_mkhuge()``.

    >>> hex(x86_leaf(0x200, PAGE_SHARED, 2))
    '0x80000000002000a7'
    """
    bits = prot & PGPROT_MASK
    if level > 1:
        bits = protval_4k_2_large(bits) | _PAGE_PSE
    return (pfn << 12) | bits | _PAGE_PRESENT | (_PAGE_ACCESSED if accessed else 0) | (_PAGE_DIRTY if dirty else 0)


def x86_prot_of(raw: int, level: int) -> int:
    """The ``pgprot`` bits of a leaf, in the 4 KiB layout (``pte_pgprot()``)."""
    if level > 1:
        return protval_large_2_4k(raw & (PGPROT_MASK | _PAGE_PAT_LARGE) & ~_PAGE_PAT) & PGPROT_MASK
    return raw & PGPROT_MASK


def arm64_leaf(pfn: int, prot: int, level: int, accessed: bool = True, page_shift: int = 12) -> int:
    """A valid ARM64 page (level 1 of the walk) or block descriptor for ``pfn`` (in pages of
    the granule ``1 << page_shift``): ``pfn_pte()`` with ``PTE_TYPE_PAGE`` / ``PMD_TYPE_SECT``;
    AF set as Linux sets it (``PTE_AF`` in ``PROT_DEFAULT``) unless ``accessed`` is false.

    >>> hex(arm64_leaf(3, ARM64_PAGE_SHARED, 1, page_shift=16))
    '0x60000000030f43'
    """
    kind = PTE_TABLE_BIT if level == 1 else 0
    return (pfn << page_shift) | (prot & ~(PTE_VALID | PTE_TABLE_BIT | PTE_AF | ARM64_OA_MASK)) | kind | PTE_VALID | (PTE_AF if accessed else 0)


def arm64_prot_of(raw: int) -> int:
    """The attribute bits of an ARM64 leaf (everything but valid, type, AF and the address)."""
    return raw & ~(PTE_VALID | PTE_TABLE_BIT | PTE_AF | ARM64_OA_MASK)
