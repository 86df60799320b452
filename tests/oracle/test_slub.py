"""The running kernel as an oracle for SLUB's geometry and views.

What user space can see of SLUB is each cache's geometry and its counters: /proc/slabinfo
and /sys/kernel/slab/<cache>/.  These tests check that

- the spec prints /proc/slabinfo byte for byte as this kernel does (every live line is parsed
  and printed again through the spec's formatter);
- for every cache of this kernel, the spec's ``calculate_order()``, fed the cache's stride and
  the CPU count (``num_present_cpus()``, from /sys/devices/system/cpu/present), gives the
  kernel's order and objects per slab; ``set_min_partial()`` and ``set_cpu_partial()`` give
  its min_partial and cpu_partial;
- ``slabs_cpu_partial`` is printed as the spec's sysfs view prints it.

A cache created with a boot parameter the spec does not see (slab_min_objects=, slab_max_order=,
slab_debug=) would differ: the test skips when the command line sets one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mmspec.tally import tally
from spec import slub

pytestmark = pytest.mark.layer("oracle")
SYS = Path("/sys/kernel/slab")


def _read(path) -> str:
    if not os.access(path, os.R_OK):
        pytest.skip(f"{path} is not readable on this host (needs root)")
    return Path(path).read_text()


def present_cpus() -> int:
    """num_present_cpus(), from the present mask (e.g. "0-1" or "0,2-3")."""
    n = 0
    for part in _read("/sys/devices/system/cpu/present").strip().split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def _boot_params():
    cmdline = _read("/proc/cmdline")
    for p in ("slab_min_objects", "slub_min_objects", "slab_max_order", "slub_max_order",
              "slab_min_order", "slub_min_order", "slab_debug", "slub_debug"):
        if re.search(rf"(^|\s){p}=", cmdline):
            pytest.skip(f"the kernel was booted with {p}=, which changes every cache's geometry")


def real_caches():
    """Every cache directory of /sys/kernel/slab (aliases are symlinks)."""
    if not SYS.is_dir():
        pytest.skip("/sys/kernel/slab is not available (no SLUB sysfs)")
    return sorted(p for p in SYS.iterdir() if p.is_dir() and not p.is_symlink())


def attr(cache: Path, name: str) -> str:
    return (cache / name).read_text().strip()


def test_slabinfo_format_is_linux_byte_for_byte():
    text = _read("/proc/slabinfo")
    lines = text.splitlines(keepends=True)
    assert "".join(lines[:2]) == slub.SLABINFO_HEADER
    for line in lines[2:]:
        f = line.split()
        ours = slub.format_slabinfo_line(f[0], int(f[1]), int(f[2]), int(f[3]), int(f[4]), int(f[5]), int(f[13]))
        assert ours == line
        assert f[8:11] == ["0", "0", "0"] and f[13] == f[14] and f[15] == "0"  # the SLUB zeros
        tally("cases")


def test_slab_order_and_objects_match_calculate_order():
    """calculate_order(stride, 4 * (fls(present CPUs) + 1)) is the kernel's order, for every cache."""
    _boot_params()
    min_objects = slub.min_objects_for(present_cpus())
    for cache in real_caches():
        size, order, objs = int(attr(cache, "slab_size")), int(attr(cache, "order")), int(attr(cache, "objs_per_slab"))
        assert slub.calculate_order(size, min_objects) == order, f"{cache.name}: stride {size}"
        assert slub.order_objects(order, size) == objs, cache.name
        tally("cases")


def test_min_partial_and_cpu_partial_match_the_formulas():
    _boot_params()
    for cache in real_caches():
        size = int(attr(cache, "slab_size"))
        debug = any(attr(cache, a) == "1" for a in ("red_zone", "poison", "sanity_checks"))
        want_min = min(max(slub.ilog2(size) // 2, slub.MIN_PARTIAL), slub.MAX_PARTIAL)
        assert int(attr(cache, "min_partial")) == want_min, cache.name
        want_cpu = 0 if debug else 6 if size >= 4096 else 24 if size >= 1024 else 52 if size >= 256 else 120
        if (cache / "sheaf_capacity").exists() and attr(cache, "sheaf_capacity") != "0":
            continue  # a cache with sheaves has no per-CPU partial slabs
        assert int(attr(cache, "cpu_partial")) == want_cpu, cache.name
        tally("cases")


def test_slabs_cpu_partial_format():
    """slabs_cpu_partial_show(): "objects(slabs)" then " C<cpu>=objects(slabs)", objects = slabs * objs_per_slab / 2."""
    for cache in real_caches():
        text, objs = attr(cache, "slabs_cpu_partial"), int(attr(cache, "objs_per_slab"))
        parts = re.findall(r"C(\d+)=(\d+)\((\d+)\)", text)
        for _, o, k in parts:
            assert int(o) == int(k) * objs // 2, f"{cache.name}: {text}"
        m = re.match(r"^(\d+)\((\d+)\)", text)
        assert m and int(m.group(1)) == int(m.group(2)) * objs // 2, f"{cache.name}: {text}"
        tally("cases")


def test_hwcache_align_and_alignment_of_plain_caches():
    """calculate_alignment(): a cache without HWCACHE_ALIGN or a requested alignment has align 8
    or a power of two; a stride is always a multiple of the alignment."""
    for cache in real_caches():
        size, align = int(attr(cache, "slab_size")), int(attr(cache, "align"))
        assert align & (align - 1) == 0 and size % align == 0, cache.name
        assert int(attr(cache, "object_size")) <= size, cache.name
        tally("cases")
