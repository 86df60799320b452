"""Page tables on arrays: the fast twin of :mod:`spec.paging`.

:class:`PageTables` keeps every table page as one row of a ``uint64`` array ``entries[table id,
index]`` (one row per table page, indexed by a dense table id; ``tid_of_pfn[pfn]`` maps a frame
to its table id, -1 for a frame that is not a table), with the level, owner and refcount of
each table id beside it.  Table pages come from :class:`impl.buddy.BuddyAllocator`, the buddy
allocator's own twin, with the same calls the spec makes, so that ``abstract()`` equals the
spec's state after every operation, failed ones included.

The x86-64 walk is one numba kernel, :func:`_x86_walk`, that serves both the single
:meth:`PageTables.translate` and the batch :meth:`PageTables.translate_many`.  It walks blocks
of addresses level by level (all root entries of a block, then all next entries, ...), so
that the memory accesses of different walks overlap; it applies the
same rules as the spec (canonical check, reserved bits per level, rights combined across
levels, WP/SMEP/SMAP/AC/NXE/PKE/PKRU) and sets Accessed/Dirty bits as it goes.  The legacy
x86 modes (32-bit and PAE), the ARM64 granules and the teaching modes walk in Python.

:meth:`PageTables.map` writes the leaves of each page table the range touches as one numpy
slice (``leaf(pfn) = leaf(0) | pfn << shift`` in every format), after allocating the tables in
the order the page-by-page loop would; :meth:`PageTables.map_many` hands runs of consecutive
pages to it.

Entry encodings (bit positions, ``_PAGE_TABLE``, leaf construction) are imported from
:mod:`spec.pte`: they are the format, not an algorithm.

>>> pt = PageTables(PagingConfig("x86-64-4level", "toy-64"))
>>> frame = pt.alloc_data(0)
>>> pt.map(pt.mms[0], 0x7ffd12345000, frame, 0x1000, pte.PAGE_SHARED)
>>> hex(pt.translate(pt.mms[0], 0x7ffd12345678, Access("w")))
'0x10678'
>>> from spec import paging
>>> s = paging.init(PagingConfig("x86-64-4level", "toy-64"))
>>> s, f = paging.alloc_data(s, 0)
>>> s, _ = paging.map(s, s.mms[0], 0x7ffd12345000, f, 0x1000, pte.PAGE_SHARED)
>>> s, _ = paging.translate(s, s.mms[0], 0x7ffd12345678, Access("w"))
>>> pt.abstract() == s
True
"""

from __future__ import annotations

import numpy as np
from immutables import Map
from numba import njit

from impl import bugs
from impl.buddy import BuddyAllocator
from impl.bugs import Defect
from spec import pte
from spec.errors import EBUSY, EEXIST, EINVAL, ENOMEM, GeneralProtection, MMError, PageFault
from spec.paging import (
    ESR_FSC_ACCESS,
    ESR_FSC_PERM,
    ESR_FSC_TRANSLATION,
    ESR_WNR,
    X86_PF_INSTR,
    X86_PF_PK,
    X86_PF_PROT,
    X86_PF_RSVD,
    X86_PF_USER,
    X86_PF_WRITE,
    Access,
    FAULT_GP,
    FAULT_NONE,
    Batch,
    Mode,
    Outcome,
    PagingConfig,
    PagingState,
    Table,
    describe_error_code,
    mode_of,
)
from spec.zone import preset

__all__ = ["PageTables", "DEFECTS", "FAULT_NONE", "FAULT_GP"]


_CATCH = "mmspec.mechanisms.paging:catch"
DEFECTS = (
    Defect(
        "paging-user-bit-leaf-only",
        "paging",
        "The walker takes the U/S right from the leaf alone instead of ANDing it over every level, "
        "so a user access through a supervisor-only upper-level entry (PTI's kernel copy of the PGD, "
        "or protect_table) succeeds: the 'permissions combined across levels' rule of SDM 4.6 broken.",
        "teaching defect",
        _CATCH,
    ),
    Defect(
        "paging-split-loses-dirty",
        "paging",
        "Splitting a huge PMD builds the small PTEs without the huge leaf's Dirty bit, so a dirty "
        "2 MiB page looks clean afterwards and writeback would skip it (the class of bug fixed by "
        "'mm/huge_memory: transfer dirty bit when splitting pmd', and by the 2022 series that made "
        "__split_huge_pmd_locked carry pmd_dirty into every PTE).",
        "Linux commit 0ccf7f168e17 'mm/thp: carry over dirty bit when thp splits on pmd' (v6.0)",
        _CATCH,
    ),
    Defect(
        "paging-free-table-keeps-entry",
        "paging",
        "free_empty_tables gives an empty table page back to the buddy but leaves the parent entry "
        "pointing at it: the next walk or map uses a freed page as a page table (the use-after-free "
        "class behind the 2018 'tlb-fixes' series).",
        "teaching defect",
        _CATCH,
    ),
)

U64 = np.uint64
_ALL = U64(0xFFFFFFFFFFFFFFFF)
_PFN_MASK = U64((1 << 40) - 1)


_BLOCK = 2048  # addresses walked together, level by level (their loads overlap, as np.take's do)
_F_RW, _F_US, _F_NX, _F_DONE, _F_WB = 1, 2, 4, 8, 16


@njit(cache=True)
def _x86_walk(entries, tid_of, root_tid, vaddrs, levels, rsvd_phys, op, user, wp, smep, smap, pke, nxe, ac, pkru,
              leaf_user_only, out_pa, out_code):
    """Walk every address of ``vaddrs`` (uint64); ``out_code``: -1 ok, -2 #GP, else the #PF
    error code.  Sets Accessed in every entry used and Dirty in the leaf on a write.

    The walks go level by level over blocks of addresses: every address of a block reads its
    root entry, then every one its next entry, and so on, so the cache misses of different
    addresses overlap instead of waiting one behind the other.  That gives the same answers as
    walking them one at a time: a walk's outcome never depends on Accessed/Dirty bits, and
    setting them (the one write a walk does) commutes; the walks that found a bit missing are
    walked again at the end of the block to set it."""
    one = np.uint64(1)
    va_bits = 12 + 9 * levels
    top_ones = (one << np.uint64(65 - va_bits)) - one if va_bits < 65 else np.uint64(0)
    write = op == 1
    fetch = op == 2
    base = (X86_PF_WRITE if write else 0) | (X86_PF_USER if user else 0)
    if fetch and (nxe or smep):
        base |= X86_PF_INSTR
    ps_bit = np.uint64(0x80)
    nx_bit = np.uint64(1) << np.uint64(63)
    a_bit = np.uint64(0x20)
    d_bit = np.uint64(0x40)
    pfn_mask = np.uint64((1 << 40) - 1)
    n = vaddrs.shape[0]
    cur = np.empty(_BLOCK, np.int64)
    flags = np.empty(_BLOCK, np.uint8)
    for b0 in range(0, n, _BLOCK):
        b1 = min(n, b0 + _BLOCK)
        for k in range(b0, b1):
            j = k - b0
            va = vaddrs[k]
            top = va >> np.uint64(va_bits - 1)
            out_pa[k] = 0
            out_code[k] = -1
            cur[j] = root_tid
            flags[j] = _F_RW | _F_US
            if top != 0 and top != top_ones:
                out_code[k] = -2
                flags[j] = _F_DONE
        for depth in range(levels):
            lv = levels - depth
            shift = np.uint64(12 + 9 * (lv - 1))
            for k in range(b0, b1):
                j = k - b0
                f = flags[j]
                if f & _F_DONE:
                    continue
                va = vaddrs[k]
                e = entries[cur[j], np.int64((va >> shift) & np.uint64(511))]
                if e & one == 0:
                    out_code[k] = base
                    flags[j] = f | _F_DONE
                    continue
                leaf = lv == 1 or ((lv == 2 or lv == 3) and (e & ps_bit) != 0)
                rsvd = e & rsvd_phys
                if not nxe:
                    rsvd |= e & nx_bit
                if lv >= 4:
                    rsvd |= e & ps_bit
                if leaf and lv == 2:
                    rsvd |= e & np.uint64(0x1FE000)
                if leaf and lv == 3:
                    rsvd |= e & np.uint64(0x3FFFE000)
                if rsvd != 0:
                    out_code[k] = base | X86_PF_PROT | X86_PF_RSVD
                    flags[j] = f | _F_DONE
                    continue
                if (e >> np.uint64(1)) & one == 0:
                    f &= ~_F_RW
                if (e >> np.uint64(2)) & one == 0:
                    f &= ~_F_US
                elif leaf and leaf_user_only:  # the defect: the leaf's US alone decides
                    f |= _F_US
                if nxe and (e >> np.uint64(63)) == 1:
                    f |= _F_NX
                if e & a_bit == 0 or (leaf and write and e & d_bit == 0):
                    f |= _F_WB
                pfn = (e >> np.uint64(12)) & pfn_mask
                if not leaf:
                    cur[j] = tid_of[np.int64(pfn)]
                    flags[j] = f
                    continue
                flags[j] = f | _F_DONE
                if lv > 1:
                    pfn &= ~one
                rw_all = f & _F_RW != 0
                us_all = f & _F_US != 0
                nx_any = f & _F_NX != 0
                if user:
                    ok = us_all and (rw_all or not write) and not (fetch and nx_any)
                else:
                    smap_blocks = us_all and not fetch and smap and not ac
                    ok = not smap_blocks and not (write and wp and not rw_all)
                    ok = ok and not (fetch and (nx_any or (us_all and smep)))
                pk = False
                if pke and us_all and not fetch:
                    key = np.int64((e >> np.uint64(59)) & np.uint64(15))
                    ad = (pkru >> (2 * key)) & 1
                    wd = (pkru >> (2 * key + 1)) & 1
                    pk = ad == 1 or (wd == 1 and write and (wp or user))
                if not ok or pk:
                    out_code[k] = base | X86_PF_PROT | (X86_PF_PK if pk else 0)
                    continue
                out_pa[k] = np.int64((pfn << np.uint64(12)) + (va & ((one << shift) - one)))
        for k in range(b0, b1):  # the Accessed/Dirty write-back of the walks that need one
            if flags[k - b0] & _F_WB == 0 or out_code[k] != -1:
                continue
            va = vaddrs[k]
            t = root_tid
            for depth in range(levels):
                lv = levels - depth
                shift = np.uint64(12 + 9 * (lv - 1))
                idx = np.int64((va >> shift) & np.uint64(511))
                e = entries[t, idx]
                leaf = lv == 1 or ((lv == 2 or lv == 3) and (e & ps_bit) != 0)
                new = e | a_bit
                if leaf and write:
                    new |= d_bit
                if new != e:
                    entries[t, idx] = new
                if leaf:
                    break
                t = tid_of[np.int64((e >> np.uint64(12)) & pfn_mask)]


class PageTables:
    """The page tables of every address space on arrays; the operations of :mod:`spec.paging`."""

    def __init__(self, config: PagingConfig | str = PagingConfig()):
        if isinstance(config, str):
            config = PagingConfig(config)
        self.mode: Mode = mode_of(config.mode)
        machine = preset(config.machine) if isinstance(config.machine, str) else config.machine
        self.buddy = BuddyAllocator(machine)
        self.end_pfn = machine.end_pfn
        if 1 << (self.mode.phys_bits - self.mode.page_shift) < self.end_pfn:
            raise EINVAL(f"the machine has more memory than {self.mode.name}'s physical addresses reach")
        self.width = 1 << max(self.mode.level_bits)
        self.entries = np.zeros((8, self.width), dtype=np.uint64)
        self.tid_of_pfn = np.full(max(self.end_pfn, 1), -1, dtype=np.int64)
        self.t_pfn = np.full(8, -1, dtype=np.int64)
        self.t_level = np.zeros(8, dtype=np.int64)
        self.t_owner = np.zeros(8, dtype=np.int64)
        self.t_ref = np.zeros(8, dtype=np.int64)
        self.free_tids: list[int] = list(range(7, -1, -1))
        self.mms: list[int] = []
        self.nr_pagetable = 0
        for _ in range(config.nr_mm):
            self.new_mm()

    # -- table pages ----------------------------------------------------------------------------

    def _grow(self) -> None:
        n = self.entries.shape[0]
        self.entries = np.concatenate([self.entries, np.zeros_like(self.entries)])
        for name in ("t_pfn", "t_level", "t_owner", "t_ref"):
            arr = getattr(self, name)
            setattr(self, name, np.concatenate([arr, np.full(n, -1 if name == "t_pfn" else 0, dtype=np.int64)]))
        self.free_tids = list(range(2 * n - 1, n - 1, -1)) + self.free_tids

    def _alloc_table(self, level: int, owner: int | None) -> int:
        pfn = self.buddy.alloc_pages(0, "GFP_KERNEL")
        if not self.free_tids:
            self._grow()
        tid = self.free_tids.pop()
        self.entries[tid] = 0
        self.tid_of_pfn[pfn] = tid
        self.t_pfn[tid], self.t_level[tid] = pfn, level
        self.t_owner[tid], self.t_ref[tid] = (pfn, 0) if owner is None else (owner, 1)
        self.nr_pagetable += 1
        return pfn

    def _free_table(self, pfn: int) -> None:
        self.buddy.free_pages(pfn, 0)
        tid = int(self.tid_of_pfn[pfn])
        self.tid_of_pfn[pfn] = -1
        self.t_pfn[tid] = -1
        self.free_tids.append(tid)
        self.nr_pagetable -= 1

    def _snapshot(self):
        b = self.buddy
        return (b.pages.copy(), b.pageblock_mt.copy(), b.lists.copy(), b.zone_table.copy(), self.entries.copy(),
                self.tid_of_pfn.copy(), self.t_pfn.copy(), self.t_level.copy(), self.t_owner.copy(), self.t_ref.copy(),
                list(self.free_tids), self.nr_pagetable)

    def _restore(self, snap) -> None:
        b = self.buddy
        (b.pages, b.pageblock_mt, b.lists, b.zone_table, self.entries, self.tid_of_pfn, self.t_pfn, self.t_level,
         self.t_owner, self.t_ref, self.free_tids, self.nr_pagetable) = snap

    # -- entries --------------------------------------------------------------------------------

    def _get(self, table_pfn: int, index: int) -> int:
        tid = self.tid_of_pfn[table_pfn]
        return int(self.entries[tid, index]) if tid >= 0 else 0  # a data frame read as a table: zeros

    def _put(self, table_pfn: int, index: int, raw: int) -> None:
        self.entries[self.tid_of_pfn[table_pfn], index] = raw

    def _decode(self, raw: int, level: int, nxe: bool = True, pse: bool = True) -> pte.Decoded:
        m = self.mode
        return pte.decode(m.fmt, raw, level, phys_bits=m.phys_bits, nxe=nxe, pse=pse, page_shift=m.page_shift,
                          layout=m.toy_layout)

    def _table_entry(self, pfn: int, upper: bool, level: int) -> int:
        m = self.mode
        if m.fmt == "x86-pae" and level == 3:
            return (pfn << 12) | pte._PAGE_PRESENT
        if m.x86:
            return (pfn << 12) | (pte._KERNPG_TABLE if upper else pte._PAGE_TABLE)
        if m.fmt == "arm64":
            return (pfn << m.page_shift) | pte.PTE_TABLE_BIT | pte.PTE_VALID
        return pte.toy_encode(m.toy_layout, 1, pfn)

    def _leaf_entry(self, pfn: int, prot: int, level: int) -> int:
        m = self.mode
        if m.x86:
            return pte.x86_leaf(pfn, prot, level)
        if m.fmt == "arm64":
            return pte.arm64_leaf(pfn, prot, level, page_shift=m.page_shift)
        return pte.toy_encode(m.toy_layout, 1, pfn)

    def _prot_of(self, raw: int, level: int) -> int:
        m = self.mode
        return pte.x86_prot_of(raw, level) if m.x86 else pte.arm64_prot_of(raw) if m.fmt == "arm64" else 0

    def _hw(self) -> int:
        m = self.mode
        return pte._PAGE_ACCESSED | pte._PAGE_DIRTY if m.x86 else pte.PTE_AF if m.fmt == "arm64" else 0

    # -- addresses ------------------------------------------------------------------------------

    def _shift(self, level: int) -> int:
        m = self.mode
        return m.page_shift + sum(m.level_bits[m.levels - level + 1:])

    def _bits(self, level: int) -> int:
        return self.mode.level_bits[self.mode.levels - level]

    def _index(self, vaddr: int, level: int) -> int:
        return (vaddr >> self._shift(level)) & ((1 << self._bits(level)) - 1)

    def _canonical(self, vaddr: int) -> bool:
        m = self.mode
        if m.split_halves:
            top = vaddr >> m.va_bits
            return top == 0 or top == (1 << (64 - m.va_bits)) - 1
        top = vaddr >> (m.va_bits - 1)
        if not m.sign_extended:
            return vaddr >> m.va_bits == 0
        return top == 0 or top == (1 << (65 - m.va_bits)) - 1

    def _upper(self, vaddr: int) -> bool:
        m = self.mode
        if m.split_halves:
            return (vaddr >> 63) & 1 == 1
        return m.sign_extended and (vaddr >> (m.va_bits - 1)) & 1 == 1

    def _canon(self, va: int) -> int:
        m = self.mode
        if not m.sign_extended or not (va >> (m.va_bits - 1)) & 1:
            return va
        return va | (((1 << 64) - 1) & ~((1 << m.va_bits) - 1))

    def _root_for(self, root: int, vaddr: int) -> int:
        if self.mode.split_halves and self._upper(vaddr):
            return self.mms[0]
        return root

    # -- checks (in the spec's order) -----------------------------------------------------------

    @staticmethod
    def _is_int(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    def _check_root(self, root) -> None:
        if not self._is_int(root) or root not in self.mms:
            raise EINVAL(f"{root!r} is not the root of an address space")

    def _check_range(self, root, vaddr, size, align: int) -> None:
        self._check_root(root)
        if not self._is_int(vaddr) or not self._is_int(size) or size <= 0:
            raise EINVAL("bad range")
        if vaddr % align or size % align:
            raise EINVAL("unaligned range")
        last = vaddr + size - 1
        if not (0 <= vaddr and last < 1 << 64 and self._canonical(vaddr) and self._canonical(last)):
            raise EINVAL("range not canonical")
        if self._upper(vaddr) != self._upper(last):
            raise EINVAL("range crosses halves")
        if self.mode.split_halves and self._upper(vaddr) and root != self.mms[0]:
            raise EINVAL("upper half belongs to TTBR1")

    def _prot_mask(self) -> int:
        fmt = self.mode.fmt
        if fmt == "x86-64":
            return pte.PGPROT_MASK
        if fmt == "x86-pae":
            return pte.PGPROT_MASK & (((1 << 57) - 1) | pte._PAGE_NX)
        if fmt == "x86-32":
            return pte.PGPROT_MASK & 0xFFF
        if fmt == "arm64":
            return ((1 << 64) - 1) & ~(pte.PTE_VALID | pte.PTE_TABLE_BIT | pte.PTE_AF | pte.ARM64_OA_MASK) & ~(0xF << 59)
        return 0

    def _table_prot_mask(self) -> int:
        fmt = self.mode.fmt
        if fmt == "x86-32":
            return pte._PAGE_RW | pte._PAGE_USER
        if fmt in ("x86-64", "x86-pae"):
            return pte.TABLE_PROT_MASK
        if fmt == "arm64":
            return pte.PMD_TABLE_PXN | pte.PMD_TABLE_UXN | pte.PMD_TABLE_AP_NO_EL0 | pte.PMD_TABLE_AP_RDONLY
        return 0

    def _check_prot(self, prot, mask: int) -> None:
        if not self._is_int(prot) or prot < 0 or prot & ~mask:
            raise EINVAL(f"bad protection {prot!r}")

    def _leaf_level(self, page_size) -> int:
        for lv in sorted(self.mode.leaf_levels):
            if 1 << self._shift(lv) == page_size:
                return lv
        raise EINVAL(f"{page_size!r} is not a page size of {self.mode.name}")

    def _page_free(self, pfn: int, n: int) -> bool:
        """Is any page of [pfn, pfn + n) inside a free buddy block?"""
        order_of = self.buddy.pages["buddy_order"]
        if (order_of[pfn:pfn + n] >= 0).any():
            return True
        for o in range(1, self.buddy.max_order + 1):
            head = pfn & ~((1 << o) - 1)
            if head < pfn and order_of[head] == o:
                return True
        return False

    def _frame_ok(self, pfn, pages: int, align: int) -> None:
        if not self._is_int(pfn) or pfn < 0 or pfn + pages > self.end_pfn:
            raise EINVAL("frame outside physical memory")
        if pfn % align:
            raise EINVAL("frame unaligned")
        if self._page_free(pfn, pages):
            raise EINVAL("frame free in the buddy allocator")
        if (self.tid_of_pfn[pfn:pfn + pages] >= 0).any():
            raise EINVAL("frame is a page-table page")

    # -- lookups --------------------------------------------------------------------------------

    def _entry_at(self, root: int, vaddr: int, level: int):
        table = self._root_for(root, vaddr)
        for lv in range(self.mode.levels, level, -1):
            index = self._index(vaddr, lv)
            raw = self._get(table, index)
            d = self._decode(raw, lv)
            if not d.present:
                return None, None
            if d.leaf:
                return None, (lv, table, index, raw)
            table = d.pfn
        return (table, self._index(vaddr, level)), None

    def _overlapping_leaves(self, root: int, vaddr: int, size: int):
        found = []
        end = vaddr + size

        def visit(table: int, level: int, base: int):
            span = 1 << self._shift(level)
            row = self.entries[self.tid_of_pfn[table]]
            lo = max(0, (vaddr - base) // span) if vaddr > base else 0
            hi = min(len(row), -(-(end - base) // span))
            for index in np.flatnonzero(row[lo:hi]).tolist():
                index += lo
                raw = int(row[index])
                start = self._canon(base + index * span)
                d = self._decode(raw, level)
                if not d.present:
                    continue
                if d.leaf:
                    found.append((level, table, index, raw, start))
                else:
                    visit(d.pfn, level - 1, base + index * span)

        root_t = self._root_for(root, vaddr)
        m = self.mode
        base = 0
        if m.split_halves:
            base = vaddr & ~((1 << m.va_bits) - 1)
        elif m.sign_extended and self._upper(vaddr):  # index in the un-sign-extended VA space
            mask = (1 << m.va_bits) - 1
            vaddr, end = vaddr & mask, ((end - 1) & mask) + 1
        visit(root_t, m.levels, base)
        return found

    def _all_leaves(self):
        """Every present leaf: (frame pfn, pages)."""
        out = []
        live = np.flatnonzero(self.t_pfn >= 0)
        for tid in live.tolist():
            level = int(self.t_level[tid])
            row = self.entries[tid]
            for index in np.flatnonzero(row).tolist():
                d = self._decode(int(row[index]), level)
                if d.present and d.leaf:
                    out.append((d.pfn, 1 << (self._shift(level) - self.mode.page_shift)))
        return out

    def _ensure_tables(self, root: int, vaddr: int, level: int):
        table = self._root_for(root, vaddr)
        owner = table
        for lv in range(self.mode.levels, level, -1):
            index = self._index(vaddr, lv)
            raw = self._get(table, index)
            if raw == 0:
                new = self._alloc_table(lv - 1, owner)
                self._put(table, index, self._table_entry(new, self._upper(vaddr), lv))
                table = new
            else:
                table = self._decode(raw, lv).pfn
        return table, self._index(vaddr, level)

    # -- the operations of spec.paging ----------------------------------------------------------

    def new_mm(self) -> int:
        """``pgd_alloc()``: a new empty root; returns its pfn."""
        root = self._alloc_table(self.mode.levels, None)
        self.mms.append(root)
        return root

    def free_mm(self, root: int) -> None:
        """Free every table of the address space, lowest level first."""
        self._check_root(root)
        if self.mode.split_halves and root == self.mms[0] and len(self.mms) > 1:
            raise EBUSY("TTBR1 in use")
        live = np.flatnonzero((self.t_pfn >= 0) & (self.t_owner == root))
        order = sorted((int(self.t_level[t]), int(self.t_pfn[t])) for t in live.tolist())
        for _, pfn in order:
            self._free_table(pfn)
        self.mms.remove(root)

    def alloc_data(self, order: int) -> int:
        """A data frame from the buddy (``GFP_HIGHUSER_MOVABLE``)."""
        return self.buddy.alloc_pages(order, "GFP_HIGHUSER_MOVABLE")

    def free_data(self, pfn: int, order: int) -> None:
        """Give a data frame back: EINVAL for a table page, EBUSY while mapped."""
        if self._is_int(pfn) and 0 <= pfn < self.end_pfn and self.tid_of_pfn[pfn] >= 0:
            raise EINVAL(f"pfn {pfn} is a page-table page")
        if self._is_int(pfn) and self._is_int(order) and 0 <= order <= 64:
            for lpfn, n in self._all_leaves():
                if lpfn < pfn + (1 << order) and pfn < lpfn + n:
                    raise EBUSY(f"pfn {lpfn} is still mapped")
        self.buddy.free_pages(pfn, order)

    def map(self, root: int, vaddr: int, pfn: int, size: int, prot: int, page_size: int | None = None) -> None:
        """Map [vaddr, vaddr + size) to frames from ``pfn`` on (see :func:`spec.paging.map`)."""
        m = self.mode
        page_size = m.page_size if page_size is None else page_size
        level = self._leaf_level(page_size)
        self._check_range(root, vaddr, size, page_size)
        self._check_prot(prot, self._prot_mask())
        pages = page_size >> m.page_shift
        self._frame_ok(pfn, size >> m.page_shift, pages)
        if self._overlapping_leaves(root, vaddr, size):
            raise EEXIST("overlaps a present mapping")
        vas = range(vaddr, vaddr + size, page_size)
        runs = list(self._runs(vaddr, size, page_size, level))
        for va, count in runs:  # one lookup per table the range touches, not one per page
            entry, _ = self._entry_at(root, va, level)
            if entry is not None and self.entries[self.tid_of_pfn[entry[0]], entry[1]:entry[1] + count].any():
                raise EEXIST("a page table occupies that entry")
        # Atomicity on ENOMEM: snapshot the arrays unless the buddy clearly has room for every
        # table this map could need (one per level per leaf, above all watermarks and reserves).
        from impl.buddy import Z_FREE, Z_LOWMEM, Z_WMARK

        zt = self.buddy.zone_table
        room = int(zt[:, Z_FREE].sum() - zt[:, Z_WMARK:Z_WMARK + 4].sum() - zt[:, Z_LOWMEM:].sum())
        snap = self._snapshot() if room <= len(vas) * m.levels + 16 else None
        leaf0, shift = self._leaf_entry(0, prot, level), self._pfn_shift()
        try:
            first = pfn
            for va, count in runs:  # tables in the order the page-by-page loop allocates them
                table, index = self._ensure_tables(root, va, level)
                frames = np.arange(count, dtype=np.uint64) * U64(pages) + U64(first)
                self.entries[self.tid_of_pfn[table], index:index + count] = (frames << U64(shift)) | U64(leaf0)
                first += count * pages
        except ENOMEM:
            if snap is None:
                raise
            self._restore(snap)
            raise

    def _pfn_shift(self) -> int:
        """Where a leaf's frame number sits: leaf(pfn) = leaf(0) | pfn << this, in every format."""
        m = self.mode
        return 12 if m.x86 else m.page_shift if m.fmt == "arm64" else m.toy_layout[1]

    def _runs(self, vaddr: int, size: int, page_size: int, level: int):
        """(first address, pages) of each stretch of the range whose ``level`` entries share a table."""
        span = 1 << (self._shift(level) + self._bits(level))
        va, end = vaddr, vaddr + size
        while va < end:
            nxt = min(end, (va // span + 1) * span)
            yield va, (nxt - va) // page_size
            va = nxt

    def map_many(self, root: int, vaddrs, pfns, prot: int, page_size: int | None = None) -> None:
        """Batched :meth:`map` of one page each: ``map(root, vaddrs[i], pfns[i], page_size, prot)``
        in order; stops at the first error, with the earlier pages mapped (as the loop would).
        Runs of consecutive addresses with consecutive frames go to :meth:`map` whole; a run
        that fails is redone page by page, so the error comes from the same page."""
        page_size = self.mode.page_size if page_size is None else page_size
        v = np.asarray(vaddrs).astype(object) if len(vaddrs) else np.zeros(0, dtype=object)
        p = np.asarray(pfns).astype(object) if len(pfns) else np.zeros(0, dtype=object)
        if len(v) != len(p):
            raise ValueError("vaddrs and pfns differ in length")
        step = page_size >> self.mode.page_shift
        breaks = [0] + [i for i in range(1, len(v)) if v[i] != v[i - 1] + page_size or p[i] != p[i - 1] + step] + [len(v)]
        for a, b in zip(breaks, breaks[1:]):
            if b <= a:
                continue
            try:
                self.map(root, v[a], p[a], (b - a) * page_size, prot, page_size)
            except MMError:  # the whole run changed nothing: find the failing page as the loop would
                for va, pfn in zip(v[a:b], p[a:b]):
                    self.map(root, va, pfn, page_size, prot, page_size)

    def _leaves_within(self, root: int, vaddr: int, size: int):
        leaves = self._overlapping_leaves(root, vaddr, size)
        for level, _, _, _, start in leaves:
            if start < vaddr or start + (1 << self._shift(level)) > vaddr + size:
                raise EINVAL("a huge leaf is only partly in the range")
        return leaves

    def unmap(self, root: int, vaddr: int, size: int) -> None:
        """Clear every leaf in the range."""
        self._check_range(root, vaddr, size, self.mode.page_size)
        for _, table, index, _, _ in self._leaves_within(root, vaddr, size):
            self._put(table, index, 0)

    def unmap_many(self, root: int, vaddrs) -> None:
        """Batched :meth:`unmap` of one base page each, in order."""
        for va in np.asarray(vaddrs).tolist():
            self.unmap(root, int(va), self.mode.page_size)

    def protect(self, root: int, vaddr: int, size: int, prot: int) -> None:
        """Give every leaf in the range protection ``prot``."""
        self._check_range(root, vaddr, size, self.mode.page_size)
        self._check_prot(prot, self._prot_mask())
        hw = self._hw()
        for level, table, index, raw, _ in self._leaves_within(root, vaddr, size):
            d = self._decode(raw, level)
            self._put(table, index, self._leaf_entry(d.pfn, prot, level) & ~hw | raw & hw)

    def protect_table(self, root: int, vaddr: int, level: int, prot: int) -> None:
        """Set the permission bits of a table entry."""
        self._check_root(root)
        mask = self._table_prot_mask()
        self._check_prot(prot, mask)
        if not self._is_int(level) or not 2 <= level <= self.mode.levels or not self._is_int(vaddr) \
                or not 0 <= vaddr < 1 << 64 or not self._canonical(vaddr):
            raise EINVAL("bad level or address")
        entry, _ = self._entry_at(root, vaddr, level)
        raw = self._get(*entry) if entry else 0
        d = self._decode(raw, level)
        if not d.present or d.leaf:
            raise EINVAL("not a table entry")
        if self.mode.fmt == "x86-pae" and level == 3:
            raise EINVAL("a PDPTE has no permission bits")
        self._put(entry[0], entry[1], (raw & ~mask) | prot)

    def split(self, root: int, vaddr: int) -> None:
        """Replace the huge leaf covering ``vaddr`` by a table of smaller leaves."""
        self._check_root(root)
        if not self._is_int(vaddr) or not 0 <= vaddr < 1 << 64 or not self._canonical(vaddr):
            raise EINVAL("bad address")
        _, leaf = self._entry_at(root, vaddr, 1)
        if leaf is None or leaf[0] == 1:
            raise EINVAL("no huge leaf")
        level, table, index, raw = leaf
        d = self._decode(raw, level)
        owner = int(self.t_owner[self.tid_of_pfn[table]])
        new = self._alloc_table(level - 1, owner)
        prot, step = self._prot_of(raw, level), 1 << (self._shift(level - 1) - self.mode.page_shift)
        hw = self._hw()
        keep = raw & hw
        if "paging-split-loses-dirty" in bugs.active_names():
            keep &= ~pte._PAGE_DIRTY
        row = self.entries[self.tid_of_pfn[new]]
        for i in range(1 << self._bits(level - 1)):
            row[i] = self._leaf_entry(d.pfn + i * step, prot, level - 1) & ~hw | keep
        self._put(table, index, self._table_entry(new, self._upper(vaddr), level))

    def collapse(self, root: int, vaddr: int, level: int) -> None:
        """Replace a full, contiguous, uniform table by one huge leaf."""
        self._check_root(root)
        m = self.mode
        if not self._is_int(level) or level not in m.leaf_levels or level == 1:
            raise EINVAL("level cannot hold a huge leaf")
        if not self._is_int(vaddr) or not 0 <= vaddr < 1 << 64 or not self._canonical(vaddr):
            raise EINVAL("bad address")
        entry, _ = self._entry_at(root, vaddr, level)
        raw = self._get(*entry) if entry else 0
        d = self._decode(raw, level)
        if not d.present or d.leaf:
            raise EINVAL("no table below")
        row = self.entries[self.tid_of_pfn[d.pfn]]
        n, step = 1 << self._bits(level - 1), 1 << (self._shift(level - 1) - m.page_shift)
        if np.count_nonzero(row) != n:
            raise EINVAL("the table is not full")
        first = self._decode(int(row[0]), level - 1)
        prot = self._prot_of(int(row[0]), level - 1)
        ad, hw = 0, self._hw()
        for i in range(n):
            e = int(row[i])
            di = self._decode(e, level - 1)
            if not (di.present and di.leaf) or di.pfn != first.pfn + i * step or self._prot_of(e, level - 1) != prot:
                raise EINVAL("entry does not continue the run")
            ad |= e & hw
        if first.pfn % (n * step):
            raise EINVAL("unaligned run")
        self._put(entry[0], entry[1], self._leaf_entry(first.pfn, prot, level) & ~hw | ad)
        self._free_table(d.pfn)

    def free_empty_tables(self, root: int) -> int:
        """Free every empty table of the address space, lowest level first."""
        self._check_root(root)
        freed = 0
        keep_entry = "paging-free-table-keeps-entry" in bugs.active_names()
        for level in range(1, self.mode.levels):
            parents = {}
            live = np.flatnonzero((self.t_pfn >= 0) & (self.t_owner == root) & (self.t_level == level + 1))
            for tid in live.tolist():
                row = self.entries[tid]
                for index in np.flatnonzero(row).tolist():
                    d = self._decode(int(row[index]), level + 1)
                    if d.present and not d.leaf:
                        parents[d.pfn] = (int(self.t_pfn[tid]), index)
            for pfn in sorted(parents):
                if not self.entries[self.tid_of_pfn[pfn]].any():
                    if not keep_entry:
                        self._put(*parents[pfn], 0)
                    self._free_table(pfn)
                    freed += 1
        return freed

    # -- translation ----------------------------------------------------------------------------

    def _check_access(self, root, vaddr, access) -> None:
        self._check_root(root)
        if not self._is_int(vaddr) or not 0 <= vaddr < 1 << 64:
            raise EINVAL("bad address")
        if not isinstance(access, Access) or access.op not in ("r", "w", "x") or not 0 <= access.pkru < 1 << 32:
            raise EINVAL("bad access")

    def _walk_batch(self, root: int, vaddrs: np.ndarray, access: Access):
        """(paddrs, codes) for every address: codes -1 ok, -2 #GP, else the fault code."""
        n = vaddrs.shape[0]
        pa, code = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        if self.mode.fmt == "x86-64":
            m = self.mode
            rsvd_phys = ((1 << 52) - 1) & ~((1 << m.phys_bits) - 1)
            _x86_walk(self.entries, self.tid_of_pfn, int(self.tid_of_pfn[root]), vaddrs, m.levels, U64(rsvd_phys),
                      "rwx".index(access.op), access.user, access.wp, access.smep, access.smap, access.pke,
                      access.nxe, access.ac, access.pkru, "paging-user-bit-leaf-only" in bugs.active_names(), pa, code)
            return pa, code
        walker = self._walk_x86_legacy if self.mode.x86 else self._walk_py
        for k, va in enumerate(vaddrs.tolist()):
            p, c = walker(root, int(va), access)
            pa[k], code[k] = p, c
        return pa, code

    def _walk_x86_legacy(self, root: int, vaddr: int, access: Access):
        """The 32-bit and PAE walk: rights combined over the levels (a PDPTE has none), no
        protection keys, I/D only with SMEP or (PAE) NXE; Accessed/Dirty set on success, never
        in a PDPTE; a reserved bit in a PDPTE is the #GP of the PDPTE load."""
        m = self.mode
        pae = m.fmt == "x86-pae"
        write, fetch = access.op == "w", access.op == "x"
        base = (X86_PF_WRITE if write else 0) | (X86_PF_USER if access.user else 0)
        if fetch and ((access.nxe and pae) or access.smep):
            base |= X86_PF_INSTR
        if vaddr >> m.va_bits:
            return 0, FAULT_GP
        table, path = root, []
        rw_all = us_all = True
        nx_any = False
        for lv in range(m.levels, 0, -1):
            index = self._index(vaddr, lv)
            raw = self._get(table, index)
            d = self._decode(raw, lv, access.nxe, access.pse)
            path.append((table, index, raw, lv))
            if not d.present:
                return 0, base
            if d.rsvd:
                return (0, FAULT_GP) if pae and lv == 3 else (0, base | X86_PF_PROT | X86_PF_RSVD)
            rw_all, us_all, nx_any = rw_all and d.write, us_all and d.user, nx_any or d.nx
            if not d.leaf:
                table = d.pfn
                continue
            if access.user:
                ok = us_all and (rw_all or not write) and not (fetch and nx_any)
            else:
                ok = not (us_all and not fetch and access.smap and not access.ac)
                ok = ok and not (write and access.wp and not rw_all)
                ok = ok and not (fetch and (nx_any or (us_all and access.smep)))
            if not ok:
                return 0, base | X86_PF_PROT
            for j, (t, i, e, plv) in enumerate(path):
                if pae and plv == 3:
                    continue
                new = e | pte._PAGE_ACCESSED | (pte._PAGE_DIRTY if write and j == len(path) - 1 else 0)
                if new != e:
                    self._put(t, i, new)
            return (d.pfn << 12) + (vaddr & ((1 << self._shift(lv)) - 1)), FAULT_NONE
        raise AssertionError("unreachable")

    def _walk_py(self, root: int, vaddr: int, access: Access):
        """The ARM64 and teaching-mode walk (no Accessed/Dirty updates in either)."""
        m = self.mode
        wnr = ESR_WNR if access.op == "w" else 0
        x86 = (X86_PF_WRITE if access.op == "w" else 0) | (X86_PF_USER if access.user else 0)
        x86 |= X86_PF_INSTR if access.op == "x" and (access.nxe or access.smep) else 0
        if not self._canonical(vaddr):
            return 0, ESR_FSC_TRANSLATION | wnr if m.fmt == "arm64" else FAULT_GP
        table, steps = self._root_for(root, vaddr), []
        for lv in range(m.levels, 0, -1):
            raw = self._get(table, self._index(vaddr, lv))
            d = self._decode(raw, lv)
            steps.append(d)
            arm_level = 4 - lv
            if not d.present or (d.leaf and lv not in m.leaf_levels):
                return 0, (ESR_FSC_TRANSLATION + arm_level) | wnr if m.fmt == "arm64" else x86
            if d.rsvd:
                return 0, wnr if m.fmt == "arm64" else x86 | X86_PF_PROT | X86_PF_RSVD
            if not d.leaf:
                table = d.pfn
                continue
            paddr = (d.pfn << m.page_shift) + (vaddr & ((1 << self._shift(lv)) - 1))
            if m.fmt != "arm64":
                return paddr, FAULT_NONE
            if not d.af:
                return 0, (ESR_FSC_ACCESS + arm_level) | wnr
            tables = steps[:-1]
            write, fetch = access.op == "w", access.op == "x"
            ro = (not d.write) or any(not t.write for t in tables)
            el0 = d.user and all(t.user for t in tables)
            if access.user:
                ok = el0 and not (write and ro) and not (fetch and (d.nx or any(t.nx for t in tables)))
            elif fetch:
                ok = not (d.pxn or any(t.pxn for t in tables) or (el0 and not ro))
            else:
                ok = not (el0 and access.smap) and not (write and ro)
            return (paddr, FAULT_NONE) if ok else (0, (ESR_FSC_PERM + arm_level) | wnr)
        raise AssertionError("unreachable")

    def _one(self, root: int, vaddr: int, access: Access):
        pa, code = self._walk_batch(root, np.array([vaddr], dtype=np.uint64), access)
        return int(pa[0]), int(code[0])

    def translate(self, root: int, vaddr: int, access: Access = Access()) -> int:
        """The physical address, or ``PageFault``/``GeneralProtection``."""
        self._check_access(root, vaddr, access)
        pa, code = self._one(root, vaddr, access)
        if code == FAULT_GP:
            raise GeneralProtection(f"#GP(0): non-canonical address {vaddr:#x}")
        if code != FAULT_NONE:
            err = PageFault(f"#PF error code {code:#x} ({describe_error_code(code)}) at CR2={vaddr:#x}")
            err.error_code, err.cr2 = code, vaddr
            raise err
        return pa

    def touch(self, root: int, vaddr: int, access: Access = Access()) -> Outcome:
        """:meth:`translate` with the fault as a value."""
        self._check_access(root, vaddr, access)
        pa, code = self._one(root, vaddr, access)
        if code == FAULT_NONE:
            return Outcome(pa, None, 0, 0)
        if code == FAULT_GP:
            return Outcome(None, "#GP", 0, 0)
        return Outcome(None, "#PF", code, vaddr)

    def translate_many(self, root: int, vaddrs, access: Access = Access()) -> Batch:
        """Translate a batch: ``Batch(paddrs, codes)`` as arrays; a code is -1 (translated),
        -2 (#GP) or the #PF error code; Accessed/Dirty bits are set as the walks go."""
        self._check_access(root, 0, access)
        v = np.asarray(vaddrs)
        if v.dtype != np.uint64:
            v = v.astype(np.uint64)
        pa, code = self._walk_batch(root, v, access)
        return Batch(pa, code)

    # -- views ----------------------------------------------------------------------------------

    def abstract(self) -> PagingState:
        """The :class:`spec.paging.PagingState` these arrays represent."""
        tables = {}
        for tid in np.flatnonzero(self.t_pfn >= 0).tolist():
            row = self.entries[tid]
            nz = np.flatnonzero(row)
            entries = Map(zip(nz.tolist(), row[nz].tolist(), strict=True))
            tables[int(self.t_pfn[tid])] = Table(int(self.t_level[tid]), int(self.t_owner[tid]), int(self.t_ref[tid]), entries)
        return PagingState(self.mode, self.buddy.abstract(), Map(tables), tuple(self.mms), self.nr_pagetable)
