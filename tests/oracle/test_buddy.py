"""The running kernel as an oracle for the buddy allocator's views and formulas.

What user space can see of the page allocator is its accounting, not its choices: the free
block counts of /proc/buddyinfo and /proc/pagetypeinfo, and the watermarks and lowmem reserves
of /proc/zoneinfo.  These tests check that

- the spec prints those files byte for byte as this kernel does (the live numbers are parsed
  and printed again through the spec's formatters);
- the spec's constants (orders 0..MAX_PAGE_ORDER, pageblock order, migratetype names) are the
  kernel's;
- the spec's watermark and lowmem_reserve formulas, fed the live managed page counts and
  sysctls, give exactly the kernel's min/low/high/promo and protection values;
- the kernel keeps the invariant the spec states as ``inv_free_lists``: free blocks per order
  summed over migratetypes equal buddyinfo's counts.

Free counts move all the time on a live machine, so each comparison reads its files together
and retries until a consistent snapshot is seen; a file this kernel does not offer skips the
test with the reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mmspec.tally import tally
from spec import buddy, zone
from spec.zone import MAX_NR_ZONES, ZONE_NAMES, MachineConfig, ZoneSpec

pytestmark = pytest.mark.layer("oracle")


def _read(path: str) -> str:
    if not os.access(path, os.R_OK):
        pytest.skip(f"{path} is not readable on this host")
    return Path(path).read_text()


def _parse_buddyinfo(text: str):
    rows = []
    for line in text.splitlines():
        m = re.match(r"Node (\d+), zone\s+(\S+)\s+(.*)$", line)
        assert m, f"unexpected buddyinfo line {line!r}"
        if m.group(1) == "0":
            rows.append((m.group(2), [int(x) for x in m.group(3).split()]))
    return rows


def _parse_pagetypeinfo(text: str):
    header, _, rest = text.partition("Free pages count per migrate type at order")
    free_part, _, block_part = rest.partition("Number of blocks type")
    pbo = int(re.search(r"Page block order: (\d+)", header).group(1))
    free_rows = []
    for line in free_part.splitlines()[1:]:
        m = re.match(r"Node\s+(\d+), zone\s+(\S+), type\s+(\S+)\s+(.*)$", line)
        if m and m.group(1) == "0":
            free_rows.append((m.group(2), m.group(3), [int(x.lstrip(">")) for x in m.group(4).split()]))
    lines = block_part.splitlines()
    types = lines[0].split()
    block_rows = []
    for line in lines[1:]:
        m = re.match(r"Node (\d+), zone\s+(\S+)\s+(.*)$", line)
        if m and m.group(1) == "0":
            block_rows.append((m.group(2), [int(x) for x in m.group(3).split()]))
    return pbo, free_rows, block_rows, types


def test_buddyinfo_format_is_linux_byte_for_byte():
    text = _read("/proc/buddyinfo")
    rows = _parse_buddyinfo(text)
    node0 = "".join(line + "\n" for line in text.splitlines() if line.startswith("Node 0,"))
    assert buddy.format_buddyinfo(rows) == node0
    tally("cases", len(rows))


def test_orders_and_zone_names_match_the_kernel():
    rows = _parse_buddyinfo(_read("/proc/buddyinfo"))
    for name, counts in rows:
        assert len(counts) == zone.MAX_PAGE_ORDER + 1, f"zone {name}: {len(counts)} orders"
        assert name in ZONE_NAMES
    tally("cases", len(rows))


def test_pagetypeinfo_format_and_constants_match_the_kernel():
    text = _read("/proc/pagetypeinfo")
    pbo, free_rows, block_rows, types = _parse_pagetypeinfo(text)
    assert pbo == zone.PAGEBLOCK_ORDER
    assert types == buddy.migratetypes_shown("CMA" in types)
    if any(max(c) >= 100000 for _, _, c in free_rows):
        pytest.skip("a free list holds >= 100000 blocks: the kernel caps the count it prints")
    node0 = text.split("\nNumber of blocks type")[0]
    ours = buddy.format_pagetypeinfo(pbo, free_rows, block_rows, types)
    assert ours.split("\nNumber of blocks type")[0] == node0
    assert ours.split("\nNumber of blocks type")[1] == text.split("\nNumber of blocks type")[1]
    tally("cases", len(free_rows) + len(block_rows))


def test_free_counts_per_type_sum_to_buddyinfo():
    """The kernel keeps inv_free_lists: per order, the typed free lists add up to nr_free."""
    for _ in range(50):
        info = _parse_buddyinfo(_read("/proc/buddyinfo"))
        _, free_rows, _, _ = _parse_pagetypeinfo(_read("/proc/pagetypeinfo"))
        again = _parse_buddyinfo(_read("/proc/buddyinfo"))
        if info != again:
            continue  # the machine moved between reads
        if any(max(c) >= 100000 for _, _, c in free_rows):
            pytest.skip("a free list holds >= 100000 blocks: the kernel caps the count it prints")
        sums = {}
        for name, _, counts in free_rows:
            sums[name] = [a + b for a, b in zip(sums.get(name, [0] * len(counts)), counts)]
        if all(sums[name] == counts for name, counts in info):
            tally("cases", len(info))
            return
    pytest.fail("no consistent snapshot in 50 tries: per-type sums never matched buddyinfo")


def _parse_zoneinfo(text: str):
    zones = {}
    for block in re.split(r"(?m)^(?=Node \d+, zone)", text):
        m = re.match(r"Node (\d+), zone\s+(\S+)", block)
        if not m or m.group(1) != "0":
            continue
        fields = {k: int(v) for k, v in re.findall(r"(?m)^\s+(pages free|boost|min|low|high|promo|spanned|present|managed|cma)\s+(\d+)$", block)}
        prot = re.search(r"protection: \(([^)]*)\)", block)
        fields["protection"] = tuple(int(x) for x in prot.group(1).split(","))
        zones[m.group(2)] = fields
    return zones


def _sysctl(name: str):
    return [int(x) for x in _read(f"/proc/sys/vm/{name}").split()]


def _live_config():
    """A MachineConfig whose zones manage exactly what the live zones manage."""
    live = _parse_zoneinfo(_read("/proc/zoneinfo"))
    specs, start = [], 0
    for name in ZONE_NAMES:
        f = live.get(name)
        if f is None or f["spanned"] == 0:
            specs.append(ZoneSpec())
            continue
        hidden = f["present"] - f["managed"]
        specs.append(ZoneSpec(start, f["present"], reserved=((start, start + hidden),) if hidden else ()))
        start += f["present"]
    ratio = tuple(_sysctl("lowmem_reserve_ratio"))
    cfg = MachineConfig(
        "live",
        tuple(specs),
        min_free_kbytes=_sysctl("min_free_kbytes")[0],
        watermark_scale_factor=_sysctl("watermark_scale_factor")[0],
        lowmem_reserve_ratio=ratio,
    )
    return cfg, live


def test_watermarks_match_the_kernel():
    """__setup_per_zone_wmarks(): min/low/high/promo from min_free_kbytes and the live managed pages."""
    cfg, live = _live_config()
    if len(live) != MAX_NR_ZONES:
        pytest.skip(f"this kernel has {len(live)} zones per node, the spec models {MAX_NR_ZONES}")
    if any(f["boost"] for f in live.values()):
        pytest.skip("a watermark boost is in effect; the spec models watermark_boost_factor = 0")
    marks = zone.zone_watermarks(cfg)
    for i, name in enumerate(ZONE_NAMES):
        f = live[name]
        assert marks[i] == (f["min"], f["low"], f["high"], f["promo"]), f"zone {name}"
        tally("cases")


def test_lowmem_reserve_matches_the_kernel():
    """setup_per_zone_lowmem_reserve(): protection from vm.lowmem_reserve_ratio and managed pages."""
    cfg, live = _live_config()
    if len(live) != MAX_NR_ZONES:
        pytest.skip(f"this kernel has {len(live)} zones per node, the spec models {MAX_NR_ZONES}")
    reserves = zone.lowmem_reserves(cfg)
    for i, name in enumerate(ZONE_NAMES):
        assert reserves[i] == live[name]["protection"], f"zone {name}"
        tally("cases")


def test_zoneinfo_block_format_matches_the_kernel():
    text = _read("/proc/zoneinfo")
    live = _parse_zoneinfo(text)
    for name, f in live.items():
        ours = buddy.format_zoneinfo_zone(
            name, f["pages free"], (f["min"], f["low"], f["high"], f["promo"]), f["spanned"], f["present"],
            f["managed"], f["cma"], f["protection"],
        )
        lines = ours.splitlines()
        block = re.search(rf"(?ms)^Node 0, zone\s+{name}\n.*?protection: \([^)]*\)$", text).group(0)
        assert lines[0] == block.splitlines()[0]
        kernel_lines = [l for l in block.splitlines() if re.match(r"^  pages free|^        (boost|min|low|high|promo|spanned|present|managed|cma|protection)", l)]
        assert lines[1:] == kernel_lines, f"zone {name}"
        tally("cases")


def test_fragmentation_indexes_match_debugfs():
    """mm/vmstat.c: extfrag_index and unusable_index computed from the same free counts."""
    root = Path("/sys/kernel/debug/extfrag")
    if not root.is_dir():
        pytest.skip("debugfs extfrag/ is not mounted on this host")
    for _ in range(50):
        before = _read("/proc/buddyinfo")
        extfrag, unusable = (root / "extfrag_index").read_text(), (root / "unusable_index").read_text()
        if _read("/proc/buddyinfo") != before:
            continue
        rows = _parse_buddyinfo(before)
        node0 = lambda t: "".join(l + "\n" for l in t.splitlines() if l.startswith("Node 0,"))
        assert buddy.format_extfrag_index(rows) == node0(extfrag)
        assert buddy.format_unusable_index(rows) == node0(unusable)
        tally("cases", 2 * len(rows))
        return
    pytest.fail("no consistent snapshot of buddyinfo around the debugfs reads in 50 tries")
