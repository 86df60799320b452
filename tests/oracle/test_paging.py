"""The running kernel as an oracle for paging: /proc/self/pagemap against the spec's encoding.

User space cannot read its page tables, but pagemap shows, per virtual page, what the leaf
entry says: present, the PFN (with CAP_SYS_ADMIN), exclusively mapped, file/shared,
soft-dirty, uffd-wp.  The test maps private anonymous pages with mmap, writes some, reads one
(the zero page: Linux maps it read-only with ``_PAGE_SPECIAL``) and leaves one untouched, then
builds the same leaves in a spec state (the frames the kernel chose, as memblock-reserved
frames of a machine big enough to hold them) and checks that :func:`spec.paging.pagemap_entry`
gives every 64-bit entry exactly as the kernel does.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

import pytest

from mmspec.tally import tally
from spec import pte
from spec import paging as spec
from spec.paging import PagingConfig
from spec.zone import MachineConfig, ZoneSpec

pytestmark = pytest.mark.layer("oracle")
PAGE = 4096


def _pagemap(addr: int, n: int) -> list[int]:
    path = "/proc/self/pagemap"
    if not os.access(path, os.R_OK):
        pytest.skip(f"{path} is not readable on this host")
    with open(path, "rb") as f:
        f.seek(addr // PAGE * 8)
        data = f.read(8 * n)
    return list(struct.unpack(f"<{n}Q", data))


def test_pagemap_entries_of_mapped_pages_match_the_spec():
    buf = mmap.mmap(-1, 4 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    buf[0] = 1  # page 0 written
    _ = buf[PAGE]  # page 1 read: the shared zero page
    buf[3 * PAGE] = 1  # page 3 written; page 2 untouched
    live = _pagemap(addr, 4)
    pfn_mask = spec.PM_PFRAME_MASK
    pfns = [e & pfn_mask for e in live]
    cap = pfns[0] != 0
    if not cap:  # without CAP_SYS_ADMIN the kernel zeroes PFNs: give the spec placeholder frames
        pfns = [16, 32, 0, 48]
    assert live[2] == 0, "an untouched page reads as 0"
    used = [pfns[i] for i in (0, 1, 3)]
    end = max(used) + 2
    machine = MachineConfig("oracle", (ZoneSpec(), ZoneSpec(), ZoneSpec(0, end, reserved=tuple((p, p + 1) for p in used)),
                                       ZoneSpec(), ZoneSpec()), max_order=10, pageblock_order=9, min_free_kbytes=0)
    s = spec.init(PagingConfig("x86-64-4level", machine))
    root = s.mms[0]
    s, _ = spec.map(s, root, addr, pfns[0], PAGE, pte.PAGE_SHARED)
    s, _ = spec.map(s, root, addr + PAGE, pfns[1], PAGE, pte.PAGE_READONLY | pte._PAGE_SPECIAL)
    s, _ = spec.map(s, root, addr + 3 * PAGE, pfns[3], PAGE, pte.PAGE_SHARED)
    for i in range(4):
        predicted = spec.pagemap_entry(s, root, addr + i * PAGE, cap_sys_admin=cap)
        assert predicted == live[i], f"page {i}: spec {predicted:#x}, kernel {live[i]:#x}"
        tally("cases")
    buf.close()


def test_pagemap_of_an_address_without_a_vma_is_zero():
    live = _pagemap(0x200000000000, 1)  # far below mmap_base: no VMA here
    s = spec.init(PagingConfig("x86-64-4level", "toy-64"))
    assert spec.pagemap_entry(s, s.mms[0], 0x200000000000) == live[0] == 0
    tally("cases")


def test_pagetables_line_has_the_meminfo_format():
    path = "/proc/meminfo"
    if not os.access(path, os.R_OK):
        pytest.skip(f"{path} is not readable on this host")
    line = next(ln for ln in open(path).read().splitlines(keepends=True) if ln.startswith("PageTables:"))
    kb = int(line.split()[1])
    s = spec.init(PagingConfig("x86-64-4level", "toy-64"))
    s = spec.replace(s, nr_pagetable=kb // 4)
    assert spec.meminfo_pagetables(s) == line
    tally("cases")
