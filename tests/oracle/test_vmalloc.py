"""The running kernel as an oracle for vmalloc.

- every line of /proc/vmallocinfo parses and prints back byte for byte through the spec's
  formatter (``0x%pK-0x%pK %7ld`` caller, ``pages=``, ``phys=``, the flag words, ``N<node>=``,
  ``unpurged vm_area``);
- every vmalloc'd area's size is its pages plus one guard page (unless the kernel shows a
  VM_NO_GUARD area, which it cannot name: then the size is just the pages);
- the purge list holds at most ``lazy_max_pages()`` pages for this machine's CPU count, give or
  take the drain that may be about to run;
- VmallocTotal and the format of the three Vmalloc lines of /proc/meminfo are the spec's, and
  VmallocUsed is the pages of the vmalloc'd areas;
- with real addresses (kptr_restrict = 1 and root) the areas do not overlap, and lie inside
  VMALLOC_START..VMALLOC_END of this kernel's paging mode (KASLR moves the base: the test
  finds it from the lowest area).  With hashed addresses (%pK under kptr_restrict = 0) only an
  area's end equal to the next one's start (the same hash) is visible: adjacency.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mmspec.tally import tally
from spec import vmalloc
from spec.zone import PAGE_SIZE

pytestmark = pytest.mark.layer("oracle")

INFO = Path("/proc/vmallocinfo")


def _read(path) -> str:
    try:
        return Path(path).read_text()
    except (PermissionError, FileNotFoundError, OSError) as exc:
        pytest.skip(f"{path} is not readable here: {exc}")


def _lines():
    text = _read(INFO)
    if not text.strip():
        pytest.skip("/proc/vmallocinfo is empty (not root?)")
    return text.splitlines()


def _online_cpus() -> int:
    text = _read("/sys/devices/system/cpu/online").strip()
    n = 0
    for part in text.split(","):
        a, _, b = part.partition("-")
        n += int(b or a) - int(a) + 1
    return n


def _real_addresses(lines) -> bool:
    restrict = Path("/proc/sys/kernel/kptr_restrict")
    if not restrict.exists() or restrict.read_text().strip() != "1" or os.geteuid() != 0:
        return False
    return all(int(line.split("-")[0], 16) >= 1 << 63 for line in lines)


def test_vmallocinfo_lines_reprint_byte_for_byte():
    lines = _lines()
    for line in lines:
        parsed = vmalloc.parse_vmallocinfo_line(line)
        assert vmalloc.format_vmallocinfo_line(parsed) == line
    tally("cases", len(lines))


def test_vmalloc_areas_carry_one_guard_page():
    n = 0
    for line in _lines():
        p = vmalloc.parse_vmallocinfo_line(line)
        assert p.size % PAGE_SIZE == 0, line
        if p.kind == "vm" and "vmalloc" in p.words and p.nr_pages:  # pcpu_get_vm_areas: VM_ALLOC, no pages, no guard
            assert p.size == vmalloc.vm_area_size(p.nr_pages * PAGE_SIZE, True), line
            if p.numa:
                assert sum(c for _, c in p.numa) == p.nr_pages, line
            n += 1
    if not n:
        pytest.skip("no vmalloc'd areas listed")
    tally("cases", n)


def test_purge_list_stays_near_lazy_max_pages():
    unpurged = [vmalloc.parse_vmallocinfo_line(x) for x in _lines() if x.endswith(" unpurged vm_area")]
    total = sum(p.size for p in unpurged) // PAGE_SIZE
    limit = vmalloc.lazy_max_pages(_online_cpus())
    largest = max((p.size // PAGE_SIZE for p in unpurged), default=0)
    # free_vmap_area_noflush() schedules the drain once vmap_lazy_nr > limit; it runs soon after.
    assert total <= limit + 64 * largest, (total, limit)
    tally("cases", len(unpurged) + 1)


def test_meminfo_vmalloc_lines():
    text = _read("/proc/meminfo")
    lines = [line + "\n" for line in text.splitlines() if line.startswith("Vmalloc")]
    assert len(lines) == 3
    total = int(re.search(r"VmallocTotal:\s+(\d+) kB", text).group(1))
    modes = {vmalloc.vmalloc_total_kb(m): m for m in vmalloc.VMALLOC_LAYOUT}
    assert total in modes, f"VmallocTotal {total} kB is neither 4- nor 5-level's"
    used_kb = int(re.search(r"VmallocUsed:\s+(\d+) kB", text).group(1))
    assert "".join(lines) == vmalloc.format_meminfo_vmalloc(total, used_kb // (PAGE_SIZE // 1024))
    tally("cases", 3)


def test_vmalloc_used_is_the_pages_of_vmalloc_areas():
    """VmallocUsed = nr_vmalloc_pages: the pages= of every 'vmalloc' line.  Both files move
    while we read them (stacks come and go), so allow a few tries."""
    for _ in range(5):
        pages = sum(p.nr_pages for p in map(vmalloc.parse_vmallocinfo_line, _lines()) if p.kind == "vm" and "vmalloc" in p.words)
        used_kb = int(re.search(r"VmallocUsed:\s+(\d+) kB", _read("/proc/meminfo")).group(1))
        if used_kb == pages * (PAGE_SIZE // 1024):
            tally("cases")
            return
    assert abs(used_kb - pages * (PAGE_SIZE // 1024)) <= 64 * (PAGE_SIZE // 1024), (used_kb, pages)
    tally("cases")


def test_adjacent_areas_share_an_address():
    """An area is followed directly by the next (its guard page inside its own size): with
    hashed pointers, an end hash equal to another line's start hash is that adjacency."""
    parsed = [vmalloc.parse_vmallocinfo_line(x) for x in _lines()]
    starts = {p.start for p in parsed}
    shared = sum(1 for p in parsed if p.end in starts)
    if not shared:
        pytest.skip("no two listed areas are adjacent")
    tally("cases", shared)


def test_areas_disjoint_and_inside_the_vmalloc_range():
    lines = _lines()
    if not _real_addresses(lines):
        pytest.skip("/proc/vmallocinfo prints hashed pointers (%pK with kptr_restrict != 1): layout not visible")
    parsed = sorted(vmalloc.parse_vmallocinfo_line(x) for x in lines)
    total_kb = int(re.search(r"VmallocTotal:\s+(\d+) kB", _read("/proc/meminfo")).group(1))
    span = (total_kb << 10) + 1
    vm = [p for p in parsed if p.kind != "vm" or "vmalloc" in p.words or "vmap" in p.words]
    base = min(p.start for p in vm)
    for a, b in zip(parsed, parsed[1:]):
        assert a.end <= b.start, (a, b)
    for p in vm:
        assert base <= p.start and p.end <= base + span, p
    tally("cases", len(parsed))
