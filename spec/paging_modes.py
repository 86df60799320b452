"""Paging modes as data, and the address arithmetic of a page walk.

Part of :mod:`spec.paging`, which re-exports every name here.  A :class:`Mode` lists the
bits per level, the base page size, the levels that may hold leaves and the entry format
(:mod:`spec.pte`), so one walker serves every mode in :data:`MODES`: ``x86-64-4level``,
``x86-64-5level``, ``arm64-4k``/``16k``/``64k``, ``x86-32``, ``x86-pae`` and the teaching modes
:func:`teaching_mode` builds.  A virtual address is cut into one table index per level plus the
page offset (:func:`split_vaddr`); in the sign-extended modes its top bits must copy bit
``va_bits - 1`` (:func:`is_canonical`: bits 63..47 with 4-level paging, 63..56 with LA57).  The
arithmetic uses plain operators so ``proofs/paging.py`` runs it on z3 bit-vectors.

>>> m = MODES["x86-64-4level"]
>>> split_vaddr(m, 0x7ffd12345678)                      # PGD, PUD, PMD, PTE index; offset
(255, 500, 145, 325, 1656)
>>> is_canonical(MODES["x86-64-5level"], 0x0000800000000000)   # canonical with LA57 only
True
"""

from __future__ import annotations

from dataclasses import dataclass

from spec import pte
from spec.errors import EINVAL


# ---------------------------------------------------------------------------------------------
# Modes


@dataclass(frozen=True)
class Mode:
    """A paging mode as data: levels, bits per level (root first), page size, leaf levels."""

    name: str
    fmt: str  # entry format: "x86-64", "arm64", "toy" (spec.pte.decode)
    page_shift: int
    level_bits: tuple[int, ...]  # root level first
    level_names: tuple[str, ...]  # root level first
    leaf_levels: frozenset[int]  # levels (1 = bottom) whose entries may be leaves
    entry_bytes: int
    phys_bits: int  # MAXPHYADDR
    sign_extended: bool  # canonical addresses: the bits above the VA copy its top bit
    split_halves: bool = False  # ARM64: the upper half walks TTBR1
    toy_layout: tuple[int, int, int] = pte.TOY_LAYOUT  # teaching format: valid bit, PFN shift, PFN width

    @property
    def x86(self) -> bool:
        """An x86 entry format: 64-bit (4/5-level), PAE, or 32-bit."""
        return self.fmt.startswith("x86")

    @property
    def levels(self) -> int:
        return len(self.level_bits)

    @property
    def va_bits(self) -> int:
        return self.page_shift + sum(self.level_bits)

    @property
    def page_size(self) -> int:
        return 1 << self.page_shift

    def bits(self, level: int) -> int:
        """Index bits of ``level`` (1 = bottom)."""
        return self.level_bits[self.levels - level]

    def name_of(self, level: int) -> str:
        return self.level_names[self.levels - level]

    def shift(self, level: int) -> int:
        """The address bit where ``level``'s index starts: a leaf there maps 2^shift bytes."""
        return self.page_shift + sum(self.level_bits[self.levels - level + 1:])

    def leaf_size(self, level: int) -> int:
        return 1 << self.shift(level)


MODES = {
    m.name: m
    for m in (
        # Intel SDM §4.5 4-level paging: PML4/PDPT/PD/PT; Linux pgd/pud/pmd/pte (p4d folded).
        Mode("x86-64-4level", "x86-64", 12, (9, 9, 9, 9), ("PGD", "PUD", "PMD", "PTE"), frozenset({1, 2, 3}), 8, 52, True),
        # LA57: PML5 on top (Linux's pgd), then the P4D.
        Mode("x86-64-5level", "x86-64", 12, (9,) * 5, ("PGD", "P4D", "PUD", "PMD", "PTE"), frozenset({1, 2, 3}), 8, 52, True),
        # ARM64, 4 KiB granule, 48-bit VA (Linux CONFIG_ARM64_VA_BITS_48): levels 0..3.
        # Bits 63..48 all 0 (TTBR0) or all 1 (TTBR1); no sign extension from bit 47.
        Mode("arm64-4k", "arm64", 12, (9, 9, 9, 9), ("PGD", "PUD", "PMD", "PTE"), frozenset({1, 2, 3}), 8, 48, False, True),
        # ARM64, 16 KiB granule, 48-bit VA (CONFIG_ARM64_16K_PAGES + VA_BITS_48: PGTABLE_LEVELS 4):
        # 11 bits per level and a 1-bit level 0; blocks only at level 2 (32 MiB) without FEAT_LPA2.
        Mode("arm64-16k", "arm64", 14, (1, 11, 11, 11), ("PGD", "PUD", "PMD", "PTE"), frozenset({1, 2}), 8, 48, False, True),
        # ARM64, 64 KiB granule, 48-bit VA (CONFIG_ARM64_64K_PAGES + VA_BITS_48: PGTABLE_LEVELS 3):
        # a 6-bit level 1, then 13 bits per level; blocks only at level 2 (512 MiB) without FEAT_LPA.
        Mode("arm64-64k", "arm64", 16, (6, 13, 13), ("PGD", "PMD", "PTE"), frozenset({1, 2}), 8, 48, False, True),
        # Intel SDM §4.3 32-bit paging: PD/PT of 1024 4-byte entries, 4 MiB PSE pages, no NX;
        # Linux's 2-level i386 pgd/pte (p4d, pud and pmd folded).  MAXPHYADDR 32 (no PSE-36).
        Mode("x86-32", "x86-32", 12, (10, 10), ("PGD", "PTE"), frozenset({1, 2}), 4, 32, False),
        # SDM §4.4 PAE paging: a 4-entry PDPT, PD, PT of 8-byte entries, 2 MiB pages, NX with
        # EFER.NXE; Linux's 3-level i386 pgd/pmd/pte (pud folded).  MAXPHYADDR 36 (PAE's classic).
        Mode("x86-pae", "x86-pae", 12, (2, 9, 9), ("PGD", "PMD", "PTE"), frozenset({1, 2}), 8, 36, False),
    )
}


def teaching_mode(name: str = "toy", va_bits: int = 15, page_size: int = 32, level_bits: tuple[int, ...] = (5, 5),
                  entry_bytes: int = 1, valid_bit: int = 7, pfn_bits: int = 7, pfn_shift: int = 0,
                  phys_bits: int = 12) -> Mode:
    """A teaching mode as configured: the address-space size, the page size, the index bits
    of each level (root first) and the entry layout (size, valid bit, PFN field).  The defaults
    are the OSTEP homework's machine (15-bit addresses, 32-byte pages, 5 + 5 index bits, 1-byte
    entries with valid bit 7 and a 7-bit PFN, 4 KiB of physical memory).  ``EINVAL`` unless the
    pieces fit: offset + index bits = address bits, a table fits in a page, the fields fit in
    the entry and the PFN reaches all of physical memory.

    >>> m = teaching_mode("toy-3level", va_bits=16, page_size=64, level_bits=(2, 4, 4), entry_bytes=2,
    ...                   valid_bit=15, pfn_bits=10, phys_bits=16)
    >>> m.levels, m.shift(2), split_vaddr(m, 0xBEEF)
    (3, 10, (2, 15, 11, 47))
    """
    ints = (va_bits, page_size, entry_bytes, valid_bit, pfn_bits, pfn_shift, phys_bits, *level_bits)
    if not level_bits or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in ints) or not all(b >= 1 for b in level_bits):
        raise EINVAL("teaching mode: positive integers needed")
    page_shift = page_size.bit_length() - 1
    if page_size != 1 << page_shift or page_shift < 1:
        raise EINVAL(f"teaching mode: page size {page_size} is not a power of two")
    if page_shift + sum(level_bits) != va_bits or va_bits > 64:
        raise EINVAL(f"teaching mode: {page_shift} offset bits + {sum(level_bits)} index bits != {va_bits}-bit addresses")
    if any((1 << b) * entry_bytes > page_size for b in level_bits):
        raise EINVAL("teaching mode: a table of that many entries does not fit in a page")
    if valid_bit >= 8 * entry_bytes or pfn_shift + pfn_bits > 8 * entry_bytes \
            or pfn_shift <= valid_bit < pfn_shift + pfn_bits:
        raise EINVAL("teaching mode: the valid bit and the PFN field must fit in the entry without overlapping")
    if phys_bits < page_shift or phys_bits - page_shift > pfn_bits:
        raise EINVAL("teaching mode: the PFN field cannot name every frame of physical memory")
    names = tuple(f"L{len(level_bits) - i}" for i in range(len(level_bits)))
    if len(level_bits) == 2:
        names = ("PD", "PT")
    return Mode(name, "toy", page_shift, tuple(level_bits), names, frozenset({1}), entry_bytes, phys_bits, False,
                False, (valid_bit, pfn_shift, pfn_bits))


#: OSTEP ch. 20 homework: 32-byte pages, 15-bit VA, 5+5 index bits, 1-byte entries, 7-bit PFN.
MODES["toy"] = teaching_mode()
#: A configured teaching mode: 16-bit VA, 64-byte pages, 2+4+4 index bits, 2-byte entries
#: (valid bit 15, 10-bit PFN), 64 KiB of physical memory.
MODES["toy-3level"] = teaching_mode("toy-3level", va_bits=16, page_size=64, level_bits=(2, 4, 4), entry_bytes=2,
                                    valid_bit=15, pfn_bits=10, phys_bits=16)


def mode_of(name) -> Mode:
    """The preset called ``name`` (a :class:`Mode` passes through); ``EINVAL`` if unknown."""
    if isinstance(name, Mode):
        return name
    if not isinstance(name, str) or name not in MODES:
        raise EINVAL(f"unknown paging mode {name!r}; known: {', '.join(MODES)}")
    return MODES[name]


# ---------------------------------------------------------------------------------------------
# Address arithmetic: plain operators, so the proofs run these on z3 bit-vectors.


def level_index(vaddr, shift, bits):
    """The table index a walk uses at the level whose field starts at bit ``shift``.

    >>> level_index(0x7ffd12345678, 39, 9), level_index(0x7ffd12345678, 12, 9)
    (255, 325)

    Contract:

    ```text
    pre: 0 <= vaddr < 2 ** 64 and 0 <= shift < 64 and 1 <= bits <= 13
    post: 0 <= __return__ < 2 ** bits
    ```
    """
    return (vaddr >> shift) & ((1 << bits) - 1)


def split_vaddr(mode: Mode, vaddr):
    """(index at the root level, ..., index at level 1, page offset) of ``vaddr``.

    >>> split_vaddr(MODES["x86-64-4level"], 0x7ffd12345678)
    (255, 500, 145, 325, 1656)
    """
    idx = tuple(level_index(vaddr, mode.shift(lv), mode.bits(lv)) for lv in range(mode.levels, 0, -1))
    return idx + (vaddr & (mode.page_size - 1),)


def join_vaddr(mode: Mode, parts):
    """The inverse of :func:`split_vaddr`: the canonical address with these indices and offset.

    >>> hex(join_vaddr(MODES["x86-64-4level"], (255, 500, 145, 325, 1656)))
    '0x7ffd12345678'
    """
    va = parts[-1]
    for i, lv in enumerate(range(mode.levels, 0, -1)):
        va = va | (parts[i] << mode.shift(lv))
    return canonicalize(mode, va)


def canonicalize(mode: Mode, vaddr):
    """Sign-extend the top VA bit into bits 63..va_bits (modes with canonical addresses).

    >>> hex(canonicalize(MODES["x86-64-4level"], 0x800000000000))
    '0xffff800000000000'
    """
    if not mode.sign_extended:
        return vaddr
    low = vaddr & ((1 << mode.va_bits) - 1)
    sign = 1 << (mode.va_bits - 1)
    return ((low ^ sign) - sign) & ((1 << 64) - 1)


def is_canonical(mode: Mode, vaddr):
    """Do bits 63..va_bits-1 all equal (sign-extended modes) or are they all 0 (others)?

    >>> is_canonical(MODES["x86-64-4level"], 0x00007fffffffffff), is_canonical(MODES["x86-64-4level"], 0x0000800000000000)
    (True, False)
    """
    if mode.split_halves:  # ARM64: bits 63..va_bits all 0 (TTBR0) or all 1 (TTBR1)
        top = (vaddr >> mode.va_bits) & ((1 << (64 - mode.va_bits)) - 1)
        return (top == 0) | (top == (1 << (64 - mode.va_bits)) - 1)
    if not mode.sign_extended:
        return vaddr >> mode.va_bits == 0
    return canonicalize(mode, vaddr) == vaddr


def in_upper_half(mode: Mode, vaddr) -> bool:
    """Is ``vaddr`` in the upper (kernel) half?"""
    if mode.split_halves:
        return (vaddr >> 63) & 1 == 1
    return mode.sign_extended and (vaddr >> (mode.va_bits - 1)) & 1 == 1
