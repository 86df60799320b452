"""Paging: multi-level page tables and the hardware page walk (x86-64 4- and 5-level, ARM64).

**The problem.**  Every memory access a program makes names a *virtual* address; the CPU must
find the physical frame behind it, check that the access is allowed, and do so for a 48- or
57-bit address space of which a process uses a tiny, scattered part.  A flat table of 2^36
entries per process is out of the question, so the table is a *radix tree*: the virtual page
number is cut into fields of 9 bits, each field indexes one 4 KiB table of 512 eight-byte
entries, and each entry points to the table of the next level, down to the entry that names
the frame.  Only the tables on the path to a mapped page exist.  x86-64 uses four levels for
48-bit addresses (PML4, PDPT, PD, PT; Linux's PGD, PUD, PMD, PTE with the P4D folded) and five
with LA57 for 57-bit addresses (a PML5 on top: Linux's PGD, then the P4D).  An entry one or
two levels above the bottom may instead be a *leaf* (the PS bit): a 2 MiB page (a PMD leaf)
or a 1 GiB page (a PUD leaf), which saves a level of walk and TLB reach.

**The walk** (Intel SDM vol. 3A §4.5 to §4.7; :func:`walk`).  The address must be *canonical*
(bits 63..47, or 63..56 with LA57, all equal) or the access raises #GP, not #PF.  From the root
(CR3) the walker reads one entry per level.  An entry with P = 0 ends the walk with a
not-present #PF; an entry with a reserved bit set ends it with an RSVD #PF; a leaf ends it with
a frame.  The access rights are those of the whole path: writable only if every entry has RW,
user-accessible only if every entry has US, executable only if no entry has NX.  Then the
control registers decide: a user access needs US; a write needs RW (for a supervisor write only
when CR0.WP = 1); a fetch needs NX clear (with EFER.NXE); a supervisor fetch from a user page
faults under CR4.SMEP, a supervisor data access to a user page under CR4.SMAP unless
EFLAGS.AC; under CR4.PKE the leaf's protection key indexes PKRU (access-disable, write-disable)
for data accesses to user pages.  A fault reports CR2 = the address and an error code whose
bits say why (``enum x86_pf_error_code``: P, W, U, RSVD, I, PK).  On success the CPU sets the
Accessed bit of every entry it used and, for a write, the Dirty bit of the leaf.

**Building tables** (mm/memory.c ``__pte_alloc``, ``__pmd_alloc``; mm/huge_memory.c
``__split_huge_pmd``; mm/khugepaged.c ``collapse_pte_mapped_thp``; mm/memory.c
``free_pgd_range``).  :func:`map` allocates each missing table page from the buddy allocator
(``pagetable_alloc(GFP_PGTABLE_USER, 0)``: an order-0 ``GFP_KERNEL`` page here), links it with
``_PAGE_TABLE``, and writes leaves; :func:`unmap` clears leaves but keeps the tables, as
``zap_page_range`` does; :func:`free_empty_tables` gives empty tables back to the buddy, as
``free_pgtables`` does; :func:`split` turns a huge leaf into a table of 512 smaller leaves;
:func:`collapse` does the reverse when the 512 leaves map one aligned, contiguous run with the
same protection.  Every table page is counted in ``NR_PAGETABLE`` (``PageTables:`` in
/proc/meminfo), the root included (``pagetable_pgd_ctor``, Linux 6.14+).

**Modes are data.**  A :class:`Mode` lists the bits per level, the base page size, the levels
that may hold leaves and the entry format; one walker serves all of them: ``x86-64-4level``,
``x86-64-5level``, ``arm64-4k`` (TTBR0 for the lower half, TTBR1 = the first address space,
Linux's ``swapper_pg_dir``, for the upper half), ``arm64-16k`` and ``arm64-64k`` (the other
granules: 11 and 13 index bits per level, 32 MiB and 512 MiB blocks), the legacy ``x86-32``
(two levels of 1024 four-byte entries, 4 MiB pages under CR4.PSE, no NX) and ``x86-pae`` (a
4-entry PDPT over 512-entry tables of 8-byte entries, 2 MiB pages, NX under EFER.NXE), and the
teaching modes: ``toy`` (the 15-bit, 32-byte-page, two-level machine of the OSTEP homework)
and any other that :func:`teaching_mode` builds from an address-space size, a page size, the
bits per level and an entry layout (:mod:`spec.paging_modes`).  Entry bits are in
:mod:`spec.pte`.

**How this model simplifies, and why.**

- No TLB and no paging-structure caches here: every access walks.  :mod:`spec.tlb` caches
  the results of this walk and models the flushes that keep the cache coherent.
- A walk that faults changes nothing.  Real CPUs may already have set Accessed bits in the
  upper entries of a walk that then faults; Linux never relies on either behaviour.
- Data frames are the caller's: :func:`map` takes a pfn, which must lie in physical memory,
  not be free in the buddy allocator (allocated, e.g. by :func:`alloc_data`, or reserved at
  boot) and not be a page-table page.  The kernel half of an x86 address space (cloned PGD
  entries) is not built for you: map it explicitly in each address space if you need it.
- No page-table isolation (PTI): the PGD is one order-0 page, not two.  The PAE PDPT is a
  whole page too (Linux uses a 32-byte slab object unless PTI or Xen needs a page).
- The 32-bit modes have no kernel half of their own (no 3G/1G split): every table entry
  gets ``_PAGE_TABLE``.  An address wider than 32 bits cannot be formed there; the walk
  reports it as #GP, as it does a non-canonical one.  A PAE PDPTE with a reserved bit is the
  #GP that MOV to CR3 would raise, reported at the walk.
- ARM64: no hardware Access-flag or Dirty-state management (FEAT_HAFDBS off), no PAN beyond
  the ``smap`` switch, 48-bit physical addresses.  Faults carry the ESR ISS (DFSC/IFSC plus WnR)
  as their error code and FAR as their address.

>>> s = init(PagingConfig("x86-64-4level", "toy-64"))
>>> root = s.mms[0]
>>> s, frame = alloc_data(s, 0)
>>> frame
16
>>> s, _ = map(s, root, 0x7ffd12345000, frame, 0x1000, pte.PAGE_SHARED)
>>> s, pa = translate(s, root, 0x7ffd12345678, Access("w"))
>>> hex(pa)
'0x10678'
>>> print(meminfo_pagetables(s), end="")
PageTables:           16 kB
>>> translate(s, root, 0x7ffd12346000, Access("r"))
Traceback (most recent call last):
...
spec.errors.PageFault: #PF error code 0x4 (U) at CR2=0x7ffd12346000: PTE entry 326 not present
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from immutables import Map

from spec import buddy, pte
from spec.buddy import BuddyState
from spec.errors import EBUSY, EEXIST, EINVAL, GeneralProtection, MMError, PageFault
from spec.paging_modes import (  # noqa: F401 - the modes and address arithmetic, re-exported
    MODES, Mode, canonicalize, in_upper_half, is_canonical, join_vaddr, level_index, mode_of, split_vaddr,
    teaching_mode,
)
from spec.zone import MachineConfig, ZoneSpec

__all__ = [
    "MODES", "Mode", "teaching_mode", "PagingConfig", "PagingState", "Table", "Access", "Walk", "Outcome",
    "init", "new_mm", "free_mm", "alloc_data", "free_data", "map", "unmap", "protect",
    "protect_table", "split", "collapse", "free_empty_tables", "walk", "translate", "touch", "translate_many",
    "pagemap_entry", "meminfo_pagetables", "walk_diagram",
]

# #PF error code (arch/x86/include/asm/trap_pf.h: enum x86_pf_error_code)
X86_PF_PROT = 1 << 0
X86_PF_WRITE = 1 << 1
X86_PF_USER = 1 << 2
X86_PF_RSVD = 1 << 3
X86_PF_INSTR = 1 << 4
X86_PF_PK = 1 << 5
PF_BIT_NAMES = ((X86_PF_PROT, "P"), (X86_PF_WRITE, "W"), (X86_PF_USER, "U"), (X86_PF_RSVD, "RSVD"),
                (X86_PF_INSTR, "I"), (X86_PF_PK, "PK"))

# ARM64 fault status codes (Arm ARM D17.2.40 ESR_ELx, DFSC/IFSC): the low 2 bits are the level.
ESR_FSC_TRANSLATION = 0x04
ESR_FSC_ACCESS = 0x08
ESR_FSC_PERM = 0x0C
ESR_WNR = 1 << 6  # ISS.WnR: the faulting access was a write


# ---------------------------------------------------------------------------------------------
# State


class Table(NamedTuple):
    """One page-table page: its level (1 = bottom), owner (the root pfn of its address space),
    how many entries point to it, and its non-zero entries (index -> raw entry)."""

    level: int
    owner: int
    refcount: int
    entries: Map


class PagingConfig(NamedTuple):
    """A mode, a machine (a buddy preset or config), and how many address spaces to create."""

    mode: str | Mode = "x86-64-4level"
    machine: str | MachineConfig = "toy-64"
    nr_mm: int = 1


@dataclass(frozen=True)
class PagingState:
    """The page tables of every address space, over the buddy allocator they come from."""

    mode: Mode
    buddy: BuddyState
    tables: Map  # table pfn -> Table
    mms: tuple[int, ...]  # the root (CR3 / TTBR) of each address space, oldest first
    nr_pagetable: int  # NR_PAGETABLE, kept as Linux keeps it

    @property
    def end_pfn(self) -> int:
        return self.buddy.config.end_pfn


def init(config: PagingConfig | str = PagingConfig()) -> PagingState:
    """Boot the buddy allocator of ``config.machine`` and create ``nr_mm`` address spaces."""
    if isinstance(config, str):
        config = PagingConfig(config)
    mode = mode_of(config.mode)
    state = PagingState(mode, buddy.init(config.machine), Map(), (), 0)
    if 1 << (mode.phys_bits - mode.page_shift) < state.end_pfn:
        raise EINVAL(f"the machine has more memory than {mode.name}'s {mode.phys_bits}-bit physical addresses reach")
    for _ in range(config.nr_mm):
        state, _ = new_mm(state)
    return state


def toy_machine(pages: int = 128) -> MachineConfig:
    """A machine of ``pages`` frames in one Normal zone (the OSTEP homework has 128 pages)."""
    order = max(0, min(10, pages.bit_length() - 1))
    return MachineConfig(f"toy-{pages}", (ZoneSpec(), ZoneSpec(), ZoneSpec(0, pages), ZoneSpec(), ZoneSpec()),
                         max_order=order, pageblock_order=order, min_free_kbytes=0)


# ---------------------------------------------------------------------------------------------
# Entries of the mode's format


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def table_entry(mode: Mode, pfn: int, upper: bool, level: int = 0) -> int:
    """The entry at ``level`` that links a table: ``_PAGE_TABLE`` (``_KERNPG_TABLE`` in the
    kernel half) on x86, only ``_PAGE_PRESENT`` in a PAE PDPTE (``pud_populate()``: "almost
    everything apart from _PAGE_PRESENT is reserved at the pmd (PDPT) level"), a table
    descriptor on ARM64, the valid bit on the toy."""
    if mode.fmt == "x86-pae" and level == 3:
        return (pfn << 12) | pte._PAGE_PRESENT
    if mode.x86:
        return (pfn << 12) | (pte._KERNPG_TABLE if upper else pte._PAGE_TABLE)
    if mode.fmt == "arm64":
        return (pfn << mode.page_shift) | pte.PTE_TABLE_BIT | pte.PTE_VALID
    return pte.toy_encode(mode.toy_layout, 1, pfn)


def leaf_entry(mode: Mode, pfn: int, prot: int, level: int) -> int:
    """A present leaf for ``pfn`` at ``level`` with protection ``prot`` (the format's bits)."""
    if mode.x86:
        return pte.x86_leaf(pfn, prot, level)
    if mode.fmt == "arm64":
        return pte.arm64_leaf(pfn, prot, level, page_shift=mode.page_shift)
    return pte.toy_encode(mode.toy_layout, 1, pfn)


def prot_of(mode: Mode, raw: int, level: int) -> int:
    """The protection bits of a leaf (``pte_pgprot()``)."""
    if mode.x86:
        return pte.x86_prot_of(raw, level)
    if mode.fmt == "arm64":
        return pte.arm64_prot_of(raw)
    return 0


def _prot_mask(mode: Mode) -> int:
    if mode.fmt == "x86-64":
        return pte.PGPROT_MASK
    if mode.fmt == "x86-pae":  # bits 57..62 are reserved: no protection keys, no SOFTW4/SAVED_DIRTY
        return pte.PGPROT_MASK & (((1 << 57) - 1) | pte._PAGE_NX)
    if mode.fmt == "x86-32":  # 32-bit entries, no NX (_PAGE_NX is 0 on !PAE)
        return pte.PGPROT_MASK & 0xFFF
    if mode.fmt == "arm64":
        return ((1 << 64) - 1) & ~(pte.PTE_VALID | pte.PTE_TABLE_BIT | pte.PTE_AF | pte.ARM64_OA_MASK) & ~(0xF << 59)
    return 0


def _table_prot_mask(mode: Mode) -> int:
    if mode.fmt == "x86-32":
        return pte.TABLE_PROT_MASK & ~pte._PAGE_NX
    if mode.x86:
        return pte.TABLE_PROT_MASK
    if mode.fmt == "arm64":
        return pte.PMD_TABLE_PXN | pte.PMD_TABLE_UXN | pte.PMD_TABLE_AP_NO_EL0 | pte.PMD_TABLE_AP_RDONLY
    return 0


def _hw_bits(mode: Mode) -> int:
    """The bits of a leaf that record use rather than permission: x86 Accessed and Dirty, the
    ARM64 Access Flag.  They survive protect, split and collapse."""
    if mode.x86:
        return pte._PAGE_ACCESSED | pte._PAGE_DIRTY
    if mode.fmt == "arm64":
        return pte.PTE_AF
    return 0


def _decode(mode: Mode, raw: int, level: int, nxe: bool = True, pse: bool = True) -> pte.Decoded:
    return pte.decode(mode.fmt, raw, level, phys_bits=mode.phys_bits, nxe=nxe, pse=pse, page_shift=mode.page_shift,
                      layout=mode.toy_layout)


# ---------------------------------------------------------------------------------------------
# The walk


class Access(NamedTuple):
    """One access and the control state it runs under (x86 names; ARM64 reads ``user`` as
    EL0, ``smap`` as PAN, and ignores the rest)."""

    op: str = "r"  # "r" read, "w" write, "x" instruction fetch
    user: bool = True  # CPL 3 (EL0)
    wp: bool = True  # CR0.WP
    smep: bool = True  # CR4.SMEP
    smap: bool = True  # CR4.SMAP
    pke: bool = False  # CR4.PKE
    nxe: bool = True  # EFER.NXE
    ac: bool = False  # EFLAGS.AC
    pkru: int = 0  # PKRU: AD = bit 2k, WD = bit 2k+1 for key k
    pse: bool = True  # CR4.PSE (32-bit paging: 4 MiB pages); Linux sets it whenever the CPU has PSE


class WalkStep(NamedTuple):
    """One entry the walker read: its level, table, index, raw value and meaning."""

    level: int
    table: int
    index: int
    raw: int
    decoded: pte.Decoded


class Walk(NamedTuple):
    """The result of a walk: the entries read, then the physical address or the fault."""

    steps: tuple[WalkStep, ...]
    paddr: int | None
    fault: str | None  # None, "#PF" or "#GP"
    error_code: int
    cr2: int
    why: str


class Outcome(NamedTuple):
    """What an access comes to: a physical address, or a fault with its code and address."""

    paddr: int | None
    fault: str | None
    error_code: int
    cr2: int


def _x86_fault_bits(mode: Mode, access: Access) -> int:
    code = X86_PF_WRITE if access.op == "w" else 0
    code |= X86_PF_USER if access.user else 0
    # SDM 4.7: I/D is set for a fetch under SMEP, or under EFER.NXE with PAE or 4/5-level paging
    if access.op == "x" and ((access.nxe and mode.fmt != "x86-32") or access.smep):
        code |= X86_PF_INSTR
    return code


def x86_permission(rw_all, us_all, nx_any, pkey, access: Access) -> tuple[bool, bool]:
    """SDM §4.6 and §4.6.2: (access allowed by the paging rights, protection-key violation)
    for combined rights ``rw_all``, ``us_all``, ``nx_any`` and the leaf's ``pkey``."""
    write, fetch = access.op == "w", access.op == "x"
    if access.user:
        ok = us_all and (rw_all or not write) and not (fetch and nx_any)
    else:
        smap_blocks = us_all and not fetch and access.smap and not access.ac
        ok = not smap_blocks and not (write and access.wp and not rw_all)
        ok = ok and not (fetch and (nx_any or (us_all and access.smep)))
    pk = False
    if access.pke and us_all and not fetch:
        ad = (access.pkru >> (2 * pkey)) & 1
        wd = (access.pkru >> (2 * pkey + 1)) & 1
        pk = bool(ad) or (bool(wd) and write and (access.wp or access.user))
    return ok, pk


def _arm64_permission(steps, leaf: pte.Decoded, access: Access) -> bool:
    """Arm ARM D8.4: AP[2:1], APTable, UXN/PXN (and their table forms), PAN (``smap``), and
    the rule that EL1 may not execute memory EL0 can write."""
    tables = [s.decoded for s in steps[:-1]]
    write, fetch = access.op == "w", access.op == "x"
    ro = (not leaf.write) or any(not t.write for t in tables)
    el0 = leaf.user and all(t.user for t in tables)
    if access.user:
        return el0 and not (write and ro) and not (fetch and (leaf.nx or any(t.nx for t in tables)))
    if fetch:
        return not (leaf.pxn or any(t.pxn for t in tables) or (el0 and not ro))
    if el0 and access.smap:
        return False
    return not (write and ro)


def _root_for(state: PagingState, root: int, vaddr: int) -> int:
    if state.mode.split_halves and in_upper_half(state.mode, vaddr):
        return state.mms[0]  # TTBR1: swapper_pg_dir
    return root


def walk(state: PagingState, root: int, vaddr: int, access: Access = Access()) -> Walk:
    """The hardware page walk, read-only: every entry read, and the address or the fault."""
    mode = state.mode
    if not is_canonical(mode, vaddr):
        if mode.fmt == "arm64":  # outside both TTBR ranges: a level-0 translation fault
            return Walk((), None, "#PF", ESR_FSC_TRANSLATION | (ESR_WNR if access.op == "w" else 0), vaddr,
                        "address outside both TTBR0 and TTBR1 ranges")
        return Walk((), None, "#GP", 0, 0, f"non-canonical address {vaddr:#x}")
    table, steps = _root_for(state, root, vaddr), []
    for level in range(mode.levels, 0, -1):
        index = level_index(vaddr, mode.shift(level), mode.bits(level))
        # a 32-bit PDE with PS under CR4.PSE = 0 points at a data frame read as a table: the
        # model has no frame contents and reads zeros
        raw = state.tables[table].entries.get(index, 0) if table in state.tables else 0
        d = _decode(mode, raw, level, access.nxe, access.pse)
        steps.append(WalkStep(level, table, index, raw, d))
        where = f"{mode.name_of(level)} entry {index}"
        if not d.present or (d.leaf and level not in mode.leaf_levels and mode.fmt == "arm64"):
            return _fault(mode, steps, access, vaddr, "translation", f"{where} not present")
        if d.rsvd and mode.fmt == "x86-pae" and level == 3:  # SDM 4.4.1: checked when CR3 loads the PDPTEs
            return Walk(tuple(steps), None, "#GP", 0, 0, f"PDPTE {index} has a reserved bit set (#GP(0) at MOV to CR3)")
        if d.rsvd:
            return _fault(mode, steps, access, vaddr, "rsvd", f"{where} has a reserved bit set")
        if d.leaf:
            return _leaf_access(mode, tuple(steps), d, level, vaddr, access)
        table = d.pfn
    raise AssertionError("a walk always ends at a leaf or a fault")


def _fault(mode: Mode, steps, access: Access, vaddr: int, kind: str, why: str) -> Walk:
    if mode.fmt == "arm64":
        level = 4 - steps[-1].level  # the Arm level: the last is level 3 whatever the granule starts at
        fsc = {"translation": ESR_FSC_TRANSLATION, "access": ESR_FSC_ACCESS, "perm": ESR_FSC_PERM, "rsvd": 0}[kind]
        code = (fsc + level if kind != "rsvd" else 0) | (ESR_WNR if access.op == "w" else 0)
        return Walk(tuple(steps), None, "#PF", code, vaddr, why)
    code = _x86_fault_bits(mode, access)
    if kind == "rsvd":
        code |= X86_PF_PROT | X86_PF_RSVD
    elif kind == "perm":
        code |= X86_PF_PROT
    elif kind == "pk":
        code |= X86_PF_PROT | X86_PF_PK
    return Walk(tuple(steps), None, "#PF", code, vaddr, why)


def _leaf_access(mode: Mode, steps, leaf: pte.Decoded, level: int, vaddr: int, access: Access) -> Walk:
    offset = vaddr & (mode.leaf_size(level) - 1)
    paddr = (leaf.pfn << mode.page_shift) + offset
    if mode.fmt == "toy":
        return Walk(steps, paddr, None, 0, 0, "")
    if mode.fmt == "arm64":
        if not leaf.af:
            return _fault(mode, steps, access, vaddr, "access", "Access Flag clear")
        if not _arm64_permission(steps, leaf, access):
            return _fault(mode, steps, access, vaddr, "perm", "permission fault")
        return Walk(steps, paddr, None, 0, 0, "")
    rw_all = all(s.decoded.write for s in steps)
    us_all = all(s.decoded.user for s in steps)
    nx_any = any(s.decoded.nx for s in steps)
    if mode.fmt != "x86-64":  # protection keys exist only in IA-32e paging
        access = access._replace(pke=False)
    ok, pk = x86_permission(rw_all, us_all, nx_any, leaf.pkey, access)
    if ok and not pk:
        return Walk(steps, paddr, None, 0, 0, "")
    walk_ = _fault(mode, steps, access, vaddr, "perm", "protection violation")
    code = walk_.error_code | (X86_PF_PK if pk else 0)
    return walk_._replace(error_code=code, why="protection-key violation" if ok else walk_.why)


def describe_error_code(code: int) -> str:
    """The set bits of a #PF error code by name.

    >>> describe_error_code(0x7)
    'P W U'
    """
    return " ".join(name for bit, name in PF_BIT_NAMES if code & bit) or "none"


def page_fault(w: Walk) -> MMError:
    """The typed error of a failed walk: ``PageFault`` with ``error_code`` and ``cr2``
    attributes, or ``GeneralProtection``."""
    if w.fault == "#GP":
        return GeneralProtection(f"#GP(0): {w.why}")
    err = PageFault(f"#PF error code {w.error_code:#x} ({describe_error_code(w.error_code)}) at CR2={w.cr2:#x}: {w.why}")
    err.error_code, err.cr2 = w.error_code, w.cr2
    return err


def _check_access(state: PagingState, root: int, vaddr: int, access: Access) -> None:
    _check_root(state, root)
    if not _is_int(vaddr) or not 0 <= vaddr < 1 << 64:
        raise EINVAL(f"vaddr {vaddr!r} is not a 64-bit address")
    if not isinstance(access, Access) or access.op not in ("r", "w", "x") or not 0 <= access.pkru < 1 << 32:
        raise EINVAL(f"bad access {access!r}")


def _set_accessed_dirty(state: PagingState, w: Walk, write: bool) -> PagingState:
    """What the CPU writes back: Accessed in every entry used, Dirty in the leaf on a write
    (x86 only, never in a PAE PDPTE; ARM64 without FEAT_HAFDBS and the toy write nothing)."""
    if not state.mode.x86:
        return state
    tables = state.tables
    for i, s in enumerate(w.steps):
        if state.mode.fmt == "x86-pae" and s.level == 3:
            continue
        new = s.raw | pte._PAGE_ACCESSED | (pte._PAGE_DIRTY if write and i == len(w.steps) - 1 else 0)
        if new != s.raw:
            t = tables[s.table]
            tables = tables.set(s.table, t._replace(entries=t.entries.set(s.index, new)))
    return replace(state, tables=tables) if tables is not state.tables else state


def translate(state: PagingState, root: int, vaddr: int, access: Access = Access()):
    """Translate ``vaddr`` in the address space ``root`` for ``access``: the physical address,
    with the Accessed/Dirty bits set; raises ``PageFault`` (``error_code``, ``cr2``) or
    ``GeneralProtection`` and then changes nothing."""
    _check_access(state, root, vaddr, access)
    w = walk(state, root, vaddr, access)
    if w.fault:
        raise page_fault(w)
    return _set_accessed_dirty(state, w, access.op == "w"), w.paddr


FAULT_NONE, FAULT_GP = -1, -2  # translate_many's codes besides a #PF error code


class Batch(NamedTuple):
    """The answer of :func:`translate_many`: physical addresses (0 where the access faulted)
    and codes (-1 translated, -2 #GP, else the #PF error code or ARM64 ISS)."""

    paddrs: tuple
    codes: tuple


def translate_many(state: PagingState, root: int, vaddrs, access: Access = Access()):
    """Translate a batch of addresses in order, as repeated :func:`touch` would."""
    _check_access(state, root, 0, access)
    vaddrs = tuple(vaddrs)
    for va in vaddrs:
        if not _is_int(va) or not 0 <= va < 1 << 64:
            raise EINVAL(f"vaddr {va!r} is not a 64-bit address")
    paddrs, codes = [], []
    for va in vaddrs:
        w = walk(state, root, va, access)
        if w.fault:
            paddrs.append(0)
            codes.append(FAULT_GP if w.fault == "#GP" else w.error_code)
        else:
            state = _set_accessed_dirty(state, w, access.op == "w")
            paddrs.append(w.paddr)
            codes.append(FAULT_NONE)
    return state, Batch(tuple(paddrs), tuple(codes))


def touch(state: PagingState, root: int, vaddr: int, access: Access = Access()):
    """:func:`translate` with the fault returned as a value: ``(state, Outcome)``."""
    _check_access(state, root, vaddr, access)
    w = walk(state, root, vaddr, access)
    if w.fault:
        return state, Outcome(None, w.fault, w.error_code, w.cr2)
    return _set_accessed_dirty(state, w, access.op == "w"), Outcome(w.paddr, None, 0, 0)


# ---------------------------------------------------------------------------------------------
# Address spaces and data frames


def _check_root(state: PagingState, root: int) -> None:
    if not _is_int(root) or root not in state.mms:
        raise EINVAL(f"{root!r} is not the root of an address space")


def _alloc_table(state: PagingState, level: int, owner: int | None) -> tuple[PagingState, int]:
    """``pagetable_alloc()`` + ``pagetable_*_ctor()``: an order-0 page from the buddy, counted
    in NR_PAGETABLE."""
    b, pfn = buddy.alloc_pages(state.buddy, 0, "GFP_KERNEL")
    table = Table(level, pfn if owner is None else owner, 0 if owner is None else 1, Map())
    return replace(state, buddy=b, tables=state.tables.set(pfn, table), nr_pagetable=state.nr_pagetable + 1), pfn


def _free_table(state: PagingState, pfn: int) -> PagingState:
    """``pagetable_dtor_free()``: back to the buddy, uncounted."""
    b, _ = buddy.free_pages(state.buddy, pfn, 0)
    return replace(state, buddy=b, tables=state.tables.delete(pfn), nr_pagetable=state.nr_pagetable - 1)


def new_mm(state: PagingState):
    """``pgd_alloc()``: a new address space with an empty root table; returns the root pfn."""
    state, root = _alloc_table(state, state.mode.levels, None)
    return replace(state, mms=state.mms + (root,)), root


def free_mm(state: PagingState, root: int):
    """``free_pgtables()`` + ``pgd_free()`` at exit: every table of the address space goes back
    to the buddy (lowest level first); the data frames stay with their owners."""
    _check_root(state, root)
    if state.mode.split_halves and root == state.mms[0] and len(state.mms) > 1:
        raise EBUSY("the first address space is TTBR1 (swapper_pg_dir) of every other one")
    owned = sorted((t.level, pfn) for pfn, t in state.tables.items() if t.owner == root)
    for _, pfn in owned:
        state = _free_table(state, pfn)
    return replace(state, mms=tuple(r for r in state.mms if r != root)), None


def alloc_data(state: PagingState, order: int):
    """A data frame of 2^order pages from the buddy (``GFP_HIGHUSER_MOVABLE``); returns its pfn."""
    b, pfn = buddy.alloc_pages(state.buddy, order, "GFP_HIGHUSER_MOVABLE")
    return replace(state, buddy=b), pfn


def free_data(state: PagingState, pfn: int, order: int):
    """Give a data frame back to the buddy: ``EINVAL`` for a page-table page, ``EBUSY`` while a
    leaf still maps any of its pages; the buddy's own checks (``BadPage`` …) after that."""
    if _is_int(pfn) and pfn in state.tables:
        raise EINVAL(f"pfn {pfn} is a page-table page")
    if _is_int(pfn) and _is_int(order) and 0 <= order <= 64:
        for _, _, lpfn, n in _all_leaves(state):
            if lpfn < pfn + (1 << order) and pfn < lpfn + n:
                raise EBUSY(f"pfn {lpfn} is still mapped")
    b, _ = buddy.free_pages(state.buddy, pfn, order)
    return replace(state, buddy=b), None


# ---------------------------------------------------------------------------------------------
# Looking up entries


def _all_leaves(state: PagingState):
    """Every present leaf: (table pfn, index, frame pfn, frame pages)."""
    mode = state.mode
    for tpfn, t in state.tables.items():
        for index, raw in t.entries.items():
            d = _decode(mode, raw, t.level)
            if d.present and d.leaf:
                yield tpfn, index, d.pfn, 1 << (mode.shift(t.level) - mode.page_shift)


def _entry_at(state: PagingState, root: int, vaddr: int, level: int):
    """The (table pfn, index) of the entry at ``level`` on ``vaddr``'s path, or None when a
    present leaf above, or a missing table, ends the path first; and the leaf above if any."""
    mode, table = state.mode, _root_for(state, root, vaddr)
    for lv in range(mode.levels, level, -1):
        index = level_index(vaddr, mode.shift(lv), mode.bits(lv))
        raw = state.tables[table].entries.get(index, 0)
        d = _decode(mode, raw, lv)
        if not d.present:
            return None, None
        if d.leaf:
            return None, (lv, table, index, raw)
        table = d.pfn
    return (table, level_index(vaddr, mode.shift(level), mode.bits(level))), None


def _set_entry(state: PagingState, table: int, index: int, raw: int) -> PagingState:
    t = state.tables[table]
    entries = t.entries.set(index, raw) if raw else t.entries.delete(index) if index in t.entries else t.entries
    return replace(state, tables=state.tables.set(table, t._replace(entries=entries)))


def _ensure_tables(state: PagingState, root: int, vaddr: int, level: int):
    """``__pud_alloc``/``__pmd_alloc``/``__pte_alloc``: walk down to the table holding the
    entry at ``level`` for ``vaddr``, allocating and linking each missing table."""
    mode, table = state.mode, _root_for(state, root, vaddr)
    owner = table
    for lv in range(mode.levels, level, -1):
        index = level_index(vaddr, mode.shift(lv), mode.bits(lv))
        raw = state.tables[table].entries.get(index, 0)
        if raw == 0:
            state, new = _alloc_table(state, lv - 1, owner)
            state = _set_entry(state, table, index, table_entry(mode, new, in_upper_half(mode, vaddr), lv))
            table = new
        else:
            table = _decode(mode, raw, lv).pfn
    return state, table, level_index(vaddr, mode.shift(level), mode.bits(level))


# ---------------------------------------------------------------------------------------------
# Building and changing mappings


def _leaf_level(mode: Mode, page_size) -> int:
    for lv in sorted(mode.leaf_levels):
        if mode.leaf_size(lv) == page_size:
            return lv
    raise EINVAL(f"{page_size!r} is not a page size of {mode.name}")


def _check_range(state: PagingState, root: int, vaddr, size, align: int) -> None:
    _check_root(state, root)
    mode = state.mode
    if not _is_int(vaddr) or not _is_int(size) or size <= 0:
        raise EINVAL(f"bad range {vaddr!r} + {size!r}")
    if vaddr % align or size % align:
        raise EINVAL(f"range {vaddr:#x} + {size:#x} is not aligned to {align:#x}")
    last = vaddr + size - 1
    if not (0 <= vaddr and last < 1 << 64 and is_canonical(mode, vaddr) and is_canonical(mode, last)):
        raise EINVAL(f"range {vaddr:#x} + {size:#x} is not canonical in {mode.name}")
    if in_upper_half(mode, vaddr) != in_upper_half(mode, last):
        raise EINVAL("a range may not cross from the lower to the upper half")
    if mode.split_halves and in_upper_half(mode, vaddr) and root != state.mms[0]:
        raise EINVAL("on arm64 the upper half belongs to the first address space (TTBR1)")


def _check_prot(mode: Mode, prot, mask: int) -> None:
    if not _is_int(prot) or prot & ~mask or prot < 0:
        raise EINVAL(f"protection {prot!r} has bits outside {mask:#x} for {mode.name}")


def _overlapping_leaves(state: PagingState, root: int, vaddr: int, size: int):
    """Present leaves overlapping [vaddr, vaddr + size) as (level, table, index, raw, start)."""
    mode, found = state.mode, []

    def visit(table: int, level: int, base: int):
        span = mode.leaf_size(level)
        for index, raw in sorted(state.tables[table].entries.items()):
            start = canonicalize(mode, base + index * span)
            if start + span <= vaddr or start >= vaddr + size:
                continue
            d = _decode(mode, raw, level)
            if not d.present:
                continue
            if d.leaf:
                found.append((level, table, index, raw, start))
            else:
                visit(d.pfn, level - 1, start)

    base = vaddr & ~((1 << mode.va_bits) - 1) if mode.split_halves else 0
    visit(_root_for(state, root, vaddr), mode.levels, base)
    return found


def _frame_ok(state: PagingState, pfn, pages: int, align: int) -> None:
    """The frames [pfn, pfn + pages) may be mapped: in memory, aligned to ``align`` pages, not
    free in the buddy, no page-table page among them."""
    if not _is_int(pfn) or pfn < 0 or pfn + pages > state.end_pfn:
        raise EINVAL(f"pfn {pfn!r} + {pages} pages is outside physical memory (0..{state.end_pfn - 1})")
    if pfn % align:
        raise EINVAL(f"pfn {pfn} is not aligned to the {align}-page leaf")
    for head, order in state.buddy.buddy.items():
        if head < pfn + pages and pfn < head + (1 << order):
            raise EINVAL(f"pfn {max(head, pfn)} is free in the buddy allocator")
    for t in state.tables:
        if pfn <= t < pfn + pages:
            raise EINVAL(f"pfn {t} is a page-table page")


def map(state: PagingState, root: int, vaddr: int, pfn: int, size: int, prot: int, page_size: int | None = None):
    """Map [vaddr, vaddr + size) to the frames from ``pfn`` on with leaves of ``page_size``
    (default: the base page) and protection ``prot``: ``remap_pfn_range``/``set_pte_at``/
    ``set_pmd_at``.  Missing tables come from the buddy.  ``EINVAL`` for bad or unaligned
    arguments or frames, ``EEXIST`` if anything is mapped in the range already (or a table
    sits where a huge leaf would go), ``ENOMEM`` if the buddy runs out: all change nothing."""
    mode = state.mode
    page_size = mode.page_size if page_size is None else page_size
    level = _leaf_level(mode, page_size)
    _check_range(state, root, vaddr, size, page_size)
    _check_prot(mode, prot, _prot_mask(mode))
    pages = page_size >> mode.page_shift
    _frame_ok(state, pfn, size >> mode.page_shift, pages)
    if _overlapping_leaves(state, root, vaddr, size):
        raise EEXIST(f"{vaddr:#x} + {size:#x} overlaps a present mapping")
    for va in range(vaddr, vaddr + size, page_size):
        entry, _ = _entry_at(state, root, va, level)
        if entry is not None and state.tables[entry[0]].entries.get(entry[1], 0):
            raise EEXIST(f"a page table occupies the {mode.name_of(level)} entry for {va:#x}")
    for i, va in enumerate(range(vaddr, vaddr + size, page_size)):
        state, table, index = _ensure_tables(state, root, va, level)
        state = _set_entry(state, table, index, leaf_entry(mode, pfn + i * pages, prot, level))
    return state, None


def _leaves_within(state: PagingState, root: int, vaddr: int, size: int):
    leaves = _overlapping_leaves(state, root, vaddr, size)
    for level, _, _, _, start in leaves:
        if start < vaddr or start + state.mode.leaf_size(level) > vaddr + size:
            raise EINVAL(f"the {state.mode.name_of(level)} leaf at {start:#x} is only partly in the range: split it first")
    return leaves


def unmap(state: PagingState, root: int, vaddr: int, size: int):
    """``zap_page_range()``: clear every leaf in the range (holes are fine); tables stay.
    ``EINVAL`` if a huge leaf is only partly inside."""
    _check_range(state, root, vaddr, size, state.mode.page_size)
    for _, table, index, _, _ in _leaves_within(state, root, vaddr, size):
        state = _set_entry(state, table, index, 0)
    return state, None


def protect(state: PagingState, root: int, vaddr: int, size: int, prot: int):
    """``change_protection()``: give every leaf in the range protection ``prot``, keeping its
    frame and its Accessed/Dirty bits.  ``EINVAL`` if a huge leaf is only partly inside."""
    mode = state.mode
    _check_range(state, root, vaddr, size, mode.page_size)
    _check_prot(mode, prot, _prot_mask(mode))
    for level, table, index, raw, _ in _leaves_within(state, root, vaddr, size):
        d = _decode(mode, raw, level)
        hw = _hw_bits(mode)
        state = _set_entry(state, table, index, leaf_entry(mode, d.pfn, prot, level) & ~hw | raw & hw)
    return state, None


def protect_table(state: PagingState, root: int, vaddr: int, level: int, prot: int):
    """Set the permission bits of the table entry at ``level`` on ``vaddr``'s path (x86: RW,
    US, NX; ARM64: APTable, UXNTable, PXNTable) -- as PTI does when it sets NX in the user
    half of the kernel's copy of the PGD.  ``EINVAL`` if that entry is not a present table."""
    _check_root(state, root)
    mode = state.mode
    _check_prot(mode, prot, _table_prot_mask(mode))
    if not _is_int(level) or not 2 <= level <= mode.levels or not _is_int(vaddr) or not is_canonical(mode, vaddr):
        raise EINVAL(f"bad level {level!r} or address {vaddr!r}")
    entry, _ = _entry_at(state, root, vaddr, level)
    raw = state.tables[entry[0]].entries.get(entry[1], 0) if entry else 0
    d = _decode(mode, raw, level)
    if not d.present or d.leaf:
        raise EINVAL(f"the {mode.name_of(level)} entry for {vaddr:#x} is not a table")
    if mode.fmt == "x86-pae" and level == 3:
        raise EINVAL("a PAE PDPTE has no permission bits")
    new = (raw & ~_table_prot_mask(mode)) | prot
    return _set_entry(state, entry[0], entry[1], new), None


def split(state: PagingState, root: int, vaddr: int):
    """``__split_huge_pmd_locked()`` (and the PUD analogue): replace the huge leaf covering
    ``vaddr`` by a new table of leaves one level down that map the same frames with the same
    protection, Accessed and Dirty bits.  ``EINVAL`` if no huge leaf covers ``vaddr``."""
    _check_root(state, root)
    mode = state.mode
    if not _is_int(vaddr) or not 0 <= vaddr < 1 << 64 or not is_canonical(mode, vaddr):
        raise EINVAL(f"bad address {vaddr!r}")
    _, leaf = _entry_at(state, root, vaddr, 1)
    if leaf is None or leaf[0] == 1:
        raise EINVAL(f"no huge leaf maps {vaddr:#x}")
    level, table, index, raw = leaf
    d = _decode(mode, raw, level)
    state, new = _alloc_table(state, level - 1, state.tables[table].owner)
    prot, step = prot_of(mode, raw, level), 1 << (mode.shift(level - 1) - mode.page_shift)
    hw = _hw_bits(mode)
    entries = {i: leaf_entry(mode, d.pfn + i * step, prot, level - 1) & ~hw | raw & hw
               for i in range(1 << mode.bits(level - 1))}
    t = state.tables[new]
    state = replace(state, tables=state.tables.set(new, t._replace(entries=Map(entries))))
    upper = in_upper_half(mode, vaddr)
    return _set_entry(state, table, index, table_entry(mode, new, upper, level)), None


def collapse(state: PagingState, root: int, vaddr: int, level: int):
    """``collapse_pte_mapped_thp()``: when the table below the ``level`` entry for ``vaddr``
    holds a full set of present leaves mapping one aligned, contiguous run of frames with one
    protection, replace it by a single leaf at ``level`` (Accessed/Dirty: any of the small
    ones') and free the table.  ``EINVAL`` otherwise."""
    _check_root(state, root)
    mode = state.mode
    if not _is_int(level) or level not in mode.leaf_levels or level == 1:
        raise EINVAL(f"level {level!r} cannot hold a huge leaf in {mode.name}")
    if not _is_int(vaddr) or not 0 <= vaddr < 1 << 64 or not is_canonical(mode, vaddr):
        raise EINVAL(f"bad address {vaddr!r}")
    entry, _ = _entry_at(state, root, vaddr, level)
    raw = state.tables[entry[0]].entries.get(entry[1], 0) if entry else 0
    d = _decode(mode, raw, level)
    if not d.present or d.leaf:
        raise EINVAL(f"no table below the {mode.name_of(level)} entry for {vaddr:#x}")
    child = state.tables[d.pfn]
    n, step = 1 << mode.bits(level - 1), 1 << (mode.shift(level - 1) - mode.page_shift)
    if len(child.entries) != n:
        raise EINVAL("the table is not full")
    first = _decode(mode, child.entries[0], level - 1)
    prot = prot_of(mode, child.entries[0], level - 1)
    ad = 0
    for i, e in sorted(child.entries.items()):
        di = _decode(mode, e, level - 1)
        if not (di.present and di.leaf) or di.pfn != first.pfn + i * step or prot_of(mode, e, level - 1) != prot:
            raise EINVAL(f"entry {i} does not continue the run")
        ad |= e & _hw_bits(mode)
    if first.pfn % (n * step):
        raise EINVAL(f"pfn {first.pfn} is not aligned to the huge leaf")
    new = leaf_entry(mode, first.pfn, prot, level) & ~_hw_bits(mode) | ad
    state = _set_entry(state, entry[0], entry[1], new)
    return _free_table(state, d.pfn), None


def free_empty_tables(state: PagingState, root: int):
    """``free_pgd_range()``: free every table of the address space that has no entries, lowest
    level first (so a parent emptied by it goes too), clearing the entry that pointed to it.
    The root stays.  Returns the number of pages freed."""
    _check_root(state, root)
    freed = 0
    for level in range(1, state.mode.levels):
        parents = {}
        for pfn, t in state.tables.items():
            if t.owner == root and t.level == level + 1:
                for index, raw in t.entries.items():
                    d = _decode(state.mode, raw, level + 1)
                    if d.present and not d.leaf:
                        parents[d.pfn] = (pfn, index)
        for pfn in sorted(parents):
            if not state.tables[pfn].entries:
                state = _set_entry(state, *parents[pfn], 0)
                state = _free_table(state, pfn)
                freed += 1
    return state, freed


# ---------------------------------------------------------------------------------------------
# Invariants: the catalogue (after Komodo's page-table invariants)


def _links(state: PagingState):
    """Every present non-leaf entry: (table, index, level, target)."""
    for pfn, t in state.tables.items():
        if t.level == 1:
            continue
        for index, raw in t.entries.items():
            d = _decode(state.mode, raw, t.level)
            if d.present and not d.leaf:
                yield pfn, index, t.level, d.pfn


def inv_tables_typed(state: PagingState) -> bool:
    """Every present non-leaf entry of a level-L table points to a table page of level L-1 with the same owner."""
    return all(
        target in state.tables and state.tables[target].level == level - 1
        and state.tables[target].owner == state.tables[pfn].owner
        for pfn, _, level, target in _links(state)
    )


def inv_refcounts(state: PagingState) -> bool:
    """Each table page's refcount equals the number of entries pointing to it: one, or none for a root."""
    count: dict[int, int] = {}
    for _, _, _, target in _links(state):
        count[target] = count.get(target, 0) + 1
    return all(t.refcount == count.get(pfn, 0) == (0 if pfn in state.mms else 1) for pfn, t in state.tables.items())


def inv_owned_by_one_space(state: PagingState) -> bool:
    """Every table page belongs to one live address space, is reachable from its root, and roots are top-level tables."""
    roots = set(state.mms)
    if len(roots) != len(state.mms) or any(state.tables.get(r, Table(0, 0, 0, Map())).level != state.mode.levels for r in roots):
        return False
    reached, todo = set(roots), list(roots)
    children: dict[int, list[int]] = {}
    for pfn, _, _, target in _links(state):
        children.setdefault(pfn, []).append(target)
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in reached:
                reached.add(c)
                todo.append(c)
    return reached == set(state.tables) and all(t.owner in roots for t in state.tables.values())


def inv_table_not_data(state: PagingState) -> bool:
    """A page is never both a page-table page and a data frame: no leaf maps a table page."""
    return not any(lpfn <= t < lpfn + n for _, _, lpfn, n in _all_leaves(state) for t in state.tables)


def inv_leaf_levels(state: PagingState) -> bool:
    """Only allowed levels hold leaves, and every leaf's frame is aligned to its size."""
    mode = state.mode
    for t in state.tables.values():
        for raw in t.entries.values():
            d = _decode(mode, raw, t.level)
            if d.present and d.leaf and (t.level not in mode.leaf_levels or d.pfn % (1 << (mode.shift(t.level) - mode.page_shift))):
                return False
    return True


def inv_in_memory(state: PagingState) -> bool:
    """No present entry points outside physical memory, and no leaf maps a page the buddy holds free."""
    for _, _, lpfn, n in _all_leaves(state):
        if lpfn + n > state.end_pfn or any(h < lpfn + n and lpfn < h + (1 << o) for h, o in state.buddy.buddy.items()):
            return False
    return all(target < state.end_pfn for _, _, _, target in _links(state))


def inv_no_reserved_bits(state: PagingState) -> bool:
    """Entries built by the kernel never set a reserved bit (with EFER.NXE on)."""
    return not any(_decode(state.mode, raw, t.level).rsvd for t in state.tables.values() for raw in t.entries.values())


def inv_entries_fit(state: PagingState) -> bool:
    """Every entry fits in the mode's entry size (4 bytes in 32-bit paging, 1 in the OSTEP toy)."""
    limit = 1 << (8 * state.mode.entry_bytes)
    return all(0 <= raw < limit for t in state.tables.values() for raw in t.entries.values())


def inv_pagetables_accounted(state: PagingState) -> bool:
    """NR_PAGETABLE counts exactly the table pages, and each is a live order-0 buddy allocation."""
    return state.nr_pagetable == len(state.tables) and all(
        state.buddy.allocated.get(pfn) is not None and state.buddy.allocated[pfn].order == 0 for pfn in state.tables
    )


def inv_user_never_reaches_table(state: PagingState) -> bool:
    """A user-accessible translation never reaches a page-table page."""
    mode = state.mode
    for root in state.mms:
        stack = [(root, mode.levels, True)]
        while stack:
            table, level, user = stack.pop()
            for raw in state.tables[table].entries.values():
                d = _decode(mode, raw, level)
                if not d.present:
                    continue
                if d.leaf:
                    n = 1 << (mode.shift(level) - mode.page_shift)
                    if user and d.user and any(d.pfn <= t < d.pfn + n for t in state.tables):
                        return False
                else:
                    stack.append((d.pfn, level - 1, user and d.user))
    return True


# ---------------------------------------------------------------------------------------------
# Views


# fs/proc/task_mmu.c: PM_* bits of a /proc/PID/pagemap entry
PM_PFRAME_BITS = 55
PM_PFRAME_MASK = (1 << PM_PFRAME_BITS) - 1
PM_SOFT_DIRTY = 1 << 55
PM_MMAP_EXCLUSIVE = 1 << 56
PM_UFFD_WP = 1 << 57
PM_FILE = 1 << 61
PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63


def mapcount(state: PagingState, pfn: int) -> int:
    """How many leaves, in all address spaces, map the page ``pfn`` (``page_mapcount``)."""
    return sum(1 for _, _, lpfn, n in _all_leaves(state) if lpfn <= pfn < lpfn + n)


def pagemap_entry(state: PagingState, root: int, vaddr: int, *, cap_sys_admin: bool = True,
                  file: bool = False, soft_dirty: bool = False) -> int:
    """The 64-bit ``/proc/PID/pagemap`` entry of ``vaddr`` (``pte_to_pagemap_entry``): PRESENT
    and the PFN of the 4 KiB page (zeroed without CAP_SYS_ADMIN), MMAP_EXCLUSIVE when the page
    is mapped once and is a normal page (not ``_PAGE_SPECIAL``, such as the zero page), UFFD_WP
    from ``_PAGE_UFFD_WP``, SOFT_DIRTY from ``_PAGE_SOFT_DIRTY`` when CONFIG_MEM_SOFT_DIRTY
    (``soft_dirty``), FILE for file or shared memory (``file``).  0 if not mapped."""
    _check_root(state, root)
    mode = state.mode
    w = walk(state, root, vaddr, Access("r", user=False, smap=False))
    if w.fault:
        return 0
    leaf = w.steps[-1]
    pfn = w.paddr >> mode.page_shift
    flags = PM_PRESENT | (PM_FILE if file else 0)
    if mode.x86:
        flags |= PM_UFFD_WP if leaf.raw & pte._PAGE_UFFD_WP else 0
        flags |= PM_SOFT_DIRTY if soft_dirty and leaf.raw & pte._PAGE_SOFT_DIRTY else 0
        special = leaf.raw & pte._PAGE_SPECIAL
    else:
        special = 0
    if not special and mapcount(state, pfn) == 1:
        flags |= PM_MMAP_EXCLUSIVE
    return flags | (pfn & PM_PFRAME_MASK if cap_sys_admin else 0)


def meminfo_pagetables(state: PagingState) -> str:
    """The ``PageTables:`` line of /proc/meminfo (``show_val_kb``: value in kB, width 8)."""
    kb = state.nr_pagetable << (state.mode.page_shift - 10) if state.mode.page_shift >= 10 else state.nr_pagetable * state.mode.page_size // 1024
    return f"PageTables:     {kb:8d} kB\n"


def _hex(mode: Mode, raw: int) -> str:
    return f"{raw:#0{2 + 2 * mode.entry_bytes}x}"


def describe_entry(mode: Mode, raw: int, level: int) -> str:
    """An entry's set bits by their Linux names."""
    d = _decode(mode, raw, level)
    if not d.present:
        return "not present"
    if mode.fmt == "x86-pae" and level == 3:
        return "P (PDPTE)" + (" RSVD!" if d.rsvd else "")
    if mode.x86:
        f = pte.x86_decode(raw)
        names = [n.upper() for n in ("p", "rw", "us", "pwt", "pcd", "a", "d") if getattr(f, n)]
        names += (["PS"] if level > 1 else ["PAT"]) if f.ps else []
        names += [n for n, v in (("G", f.g), ("SPECIAL", f.sw1), ("UFFD_WP", f.sw2), ("SOFT_DIRTY", f.sw3), ("NX", f.nx)) if v]
        names += [f"PKEY={f.pkey}"] if f.pkey else []
        return " ".join(names) + (" RSVD!" if d.rsvd else "")
    if mode.fmt == "arm64":
        f = pte.arm64_decode(raw)
        kind = "page" if level == 1 else ("block" if d.leaf else "table")
        if not d.leaf:
            return f"{kind} PXNTable={f.pxntable} UXNTable={f.uxntable} APTable={f.aptable}"
        return f"{kind} AttrIndx={f.attrindx} AP={f.ap:02b} SH={f.sh} AF={f.af} nG={f.ng} PXN={f.pxn} UXN={f.uxn}"
    return "valid"


def walk_diagram(state: PagingState, root: int, vaddr: int, access: Access = Access()) -> str:
    """Each level of the walk of ``vaddr``: table address, index bits, entry, decoded bits; then
    the physical address or the fault and its error code."""
    mode = state.mode
    w = walk(state, root, vaddr, access)
    out = [f"{mode.name}: virtual address {vaddr:#x}, {access.op} access, {'user' if access.user else 'supervisor'}"]
    if w.fault == "#GP":
        return "\n".join(out + [f"  #GP: {w.why}"]) + "\n"
    parts = split_vaddr(mode, vaddr) if is_canonical(mode, vaddr) else ()
    if parts:
        fields = " | ".join(f"{mode.name_of(lv)} {parts[mode.levels - lv]}" for lv in range(mode.levels, 0, -1))
        out.append(f"  index fields: {fields} | offset {parts[-1]:#x}")
    for s in w.steps:
        hi = mode.shift(s.level) + mode.bits(s.level) - 1
        out.append(f"  {mode.name_of(s.level):4} table at {s.table << mode.page_shift:#x} (pfn {s.table}), bits "
                   f"{hi}..{mode.shift(s.level)} = {s.index:3d}: entry {_hex(mode, s.raw)}  {describe_entry(mode, s.raw, s.level)}")
        d = s.decoded
        if d.present and not d.leaf and not d.rsvd:
            out.append(f"       -> next table at {d.pfn << mode.page_shift:#x}")
    if w.fault:
        tail = f"  fault: {w.why}; error code {w.error_code:#x}"
        tail += f" ({describe_error_code(w.error_code)})" if mode.x86 else " (ESR ISS)" if mode.fmt == "arm64" else ""
        out.append(tail + f", CR2 = {w.cr2:#x}")
    else:
        size = mode.leaf_size(w.steps[-1].level)
        out.append(f"  leaf maps {size // 1024 if size >= 1024 else size}{' KiB' if size >= 1024 else ' bytes'}: "
                   f"physical address {w.paddr:#x} (pfn {w.paddr >> mode.page_shift}, offset {vaddr & (size - 1):#x})")
    return "\n".join(out) + "\n"


def render(state: PagingState) -> str:
    """How a counterexample shows the page tables: one line per table, then PageTables."""
    out = []
    for root in state.mms:
        out.append(f"mm root pfn {root}:")
        for pfn, t in sorted(state.tables.items(), key=lambda kv: (-kv[1].level, kv[0])):
            if t.owner == root:
                ents = ", ".join(f"[{i}]={_hex(state.mode, r)}" for i, r in sorted(t.entries.items()))
                out.append(f"  {state.mode.name_of(t.level)} pfn {pfn} ref {t.refcount}: {ents or '(empty)'}")
    return "\n".join(out) + "\n" + meminfo_pagetables(state)
