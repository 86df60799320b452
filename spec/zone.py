"""Zones, watermarks and GFP flags: the frame the buddy allocator works in.

Physical memory on a NUMA node is divided into *zones* by what hardware can address:
``ZONE_DMA`` (the first 16 MiB, for ISA DMA), ``ZONE_DMA32`` (the first 4 GiB, for 32-bit
devices), ``ZONE_NORMAL`` (the rest), ``ZONE_MOVABLE`` (memory that only holds movable pages,
empty unless ``movablecore=``/``kernelcore=`` is given) and ``ZONE_DEVICE`` (device memory, never
in the buddy allocator).  Each zone has its own buddy allocator (``struct zone.free_area``).

A zone spans ``[zone_start_pfn, zone_start_pfn + spanned_pages)``; ``present_pages`` leaves out
holes, and ``managed_pages`` also leaves out what memblock reserved at boot (the kernel image,
early page tables, the memory map itself).  Only managed pages ever reach the free lists.

Each zone has four *watermarks* (``_watermark[WMARK_MIN..WMARK_PROMO]``) computed by
``__setup_per_zone_wmarks()`` in mm/page_alloc.c from ``vm.min_free_kbytes`` and
``vm.watermark_scale_factor``, and a ``lowmem_reserve[]`` array computed by
``setup_per_zone_lowmem_reserve()`` from ``vm.lowmem_reserve_ratio``: an allocation that could
have used a higher zone must leave that many extra pages free in a lower zone, so that a
GFP_DMA request still finds memory after GFP_KERNEL requests have spilled down.

A GFP mask says which zones an allocation may use (the highest, ``gfp_zone()``), which
migratetype it has (``gfp_migratetype()``), and how hard it may dig into the reserves
(``gfp_to_alloc_flags()``).  This module models the handful of masks kernel code uses most as
named presets.

Everything here is a pure function of a :class:`MachineConfig`; :mod:`spec.buddy` builds its
state from it.  Simplifications: one NUMA node; ``watermark_boost_factor`` is 0 (kswapd, which
would reset a boost, is not modelled); no highmem (x86-64 has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag
from math import isqrt

from spec.errors import EINVAL

PAGE_SHIFT = 12  # arch/x86/include/asm/page_types.h
PAGE_SIZE = 1 << PAGE_SHIFT
MAX_PAGE_ORDER = 10  # include/linux/mmzone.h (inclusive since 6.4; x86 does not force it)
PAGEBLOCK_ORDER = 9  # include/linux/pageblock-flags.h: HUGETLB_PAGE_ORDER on x86-64 (2 MiB)
PAGE_ALLOC_COSTLY_ORDER = 3  # include/linux/mmzone.h
SWAP_CLUSTER_MAX = 32  # include/linux/swap.h
MIN_FREE_KBYTES_RANGE = (128, 262144)  # mm/page_alloc.c: calculate_min_free_kbytes()


class ZoneType(IntEnum):
    """``enum zone_type`` (include/linux/mmzone.h) on x86-64 with CONFIG_ZONE_DEVICE."""

    DMA = 0
    DMA32 = 1
    NORMAL = 2
    MOVABLE = 3
    DEVICE = 4


ZONE_NAMES = ("DMA", "DMA32", "Normal", "Movable", "Device")  # mm/page_alloc.c: zone_names[]
MAX_NR_ZONES = len(ZONE_NAMES)


class Wmark(IntEnum):
    """``enum zone_watermarks`` (include/linux/mmzone.h)."""

    MIN = 0
    LOW = 1
    HIGH = 2
    PROMO = 3


class AllocFlags(IntFlag):
    """The ``ALLOC_*`` flags of mm/internal.h that the model uses."""

    NONE = 0
    OOM = 0x08  # ALLOC_OOM: the OOM victim may dip deeper
    MIN_RESERVE = 0x20  # ALLOC_MIN_RESERVE (== __GFP_HIGH): may use half the min reserve
    NON_BLOCK = 0x40  # ALLOC_NON_BLOCK: cannot reclaim, may use another quarter
    CMA = 0x80  # ALLOC_CMA: movable request, may use CMA pageblocks
    HIGHATOMIC = 0x200  # ALLOC_HIGHATOMIC: high-order atomic request, may use/reserve HighAtomic
    NOFRAGMENT = 0x100  # ALLOC_NOFRAGMENT: avoid stealing < pageblock from other types


ALLOC_RESERVES = AllocFlags.NON_BLOCK | AllocFlags.MIN_RESERVE | AllocFlags.HIGHATOMIC | AllocFlags.OOM


class MigrateType(IntEnum):
    """``enum migratetype`` (include/linux/mmzone.h), with CONFIG_CMA and CONFIG_MEMORY_ISOLATION."""

    UNMOVABLE = 0
    MOVABLE = 1
    RECLAIMABLE = 2
    HIGHATOMIC = 3  # == MIGRATE_PCPTYPES
    CMA = 4
    ISOLATE = 5


MIGRATE_PCPTYPES = 3
MIGRATETYPE_NAMES = ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA", "Isolate")  # mm/vmstat.c


def migratetype_is_mergeable(mt: int) -> bool:
    """``migratetype_is_mergeable()``: only the three ordinary types merge across pageblocks."""
    return mt < MIGRATE_PCPTYPES


@dataclass(frozen=True)
class Gfp:
    """What a GFP mask means to the page allocator."""

    name: str
    highest_zone: ZoneType  # gfp_zone()
    migratetype: MigrateType  # gfp_migratetype()
    high: bool = False  # __GFP_HIGH
    direct_reclaim: bool = True  # __GFP_DIRECT_RECLAIM (may sleep)


GFP_MASKS = {
    g.name: g
    for g in (
        Gfp("GFP_KERNEL", ZoneType.NORMAL, MigrateType.UNMOVABLE),
        Gfp("GFP_KERNEL_RECLAIMABLE", ZoneType.NORMAL, MigrateType.RECLAIMABLE),  # | __GFP_RECLAIMABLE
        Gfp("GFP_ATOMIC", ZoneType.NORMAL, MigrateType.UNMOVABLE, high=True, direct_reclaim=False),
        Gfp("GFP_NOWAIT", ZoneType.NORMAL, MigrateType.UNMOVABLE, direct_reclaim=False),
        Gfp("GFP_DMA", ZoneType.DMA, MigrateType.UNMOVABLE),  # GFP_KERNEL | GFP_DMA
        Gfp("GFP_DMA32", ZoneType.DMA32, MigrateType.UNMOVABLE),  # GFP_KERNEL | GFP_DMA32
        Gfp("GFP_USER", ZoneType.NORMAL, MigrateType.UNMOVABLE),
        Gfp("GFP_HIGHUSER_MOVABLE", ZoneType.MOVABLE, MigrateType.MOVABLE),
    )
}


def gfp_mask(name: str) -> Gfp:
    """Look up a GFP preset by its kernel name; ``EINVAL`` for an unknown one."""
    if not isinstance(name, str) or name not in GFP_MASKS:
        raise EINVAL(f"unknown GFP mask {name!r}; known: {', '.join(GFP_MASKS)}")
    return GFP_MASKS[name]


def gfp_to_alloc_flags(gfp: Gfp, order: int, config_cma: bool) -> AllocFlags:
    """``gfp_to_alloc_flags()``: the reserve flags of the slow path (watermark MIN)."""
    flags = AllocFlags.NONE
    if gfp.high:
        flags |= AllocFlags.MIN_RESERVE
    if not gfp.direct_reclaim:
        flags |= AllocFlags.NON_BLOCK
        if order > 0:
            flags |= AllocFlags.HIGHATOMIC
    return flags | cma_flags(gfp, config_cma)


def cma_flags(gfp: Gfp, config_cma: bool) -> AllocFlags:
    """``gfp_to_alloc_flags_cma()``: movable requests may use CMA pageblocks."""
    return AllocFlags.CMA if config_cma and gfp.migratetype == MigrateType.MOVABLE else AllocFlags.NONE


# ---------------------------------------------------------------------------------------------
# Configuration


Range = tuple[int, int]  # [start_pfn, end_pfn)


@dataclass(frozen=True)
class ZoneSpec:
    """One zone of the machine: its span, holes, boot reservations and CMA areas (all in pfns)."""

    start_pfn: int = 0
    spanned: int = 0
    absent: tuple[Range, ...] = ()  # holes: no struct page is online there
    reserved: tuple[Range, ...] = ()  # memblock reservations: present, never managed
    cma: tuple[Range, ...] = ()  # CMA areas, pageblock aligned

    @property
    def end_pfn(self) -> int:
        return self.start_pfn + self.spanned


@dataclass(frozen=True, repr=False)
class MachineConfig:
    """A preset: the zones of node 0 and the sysctls that shape the allocator."""

    name: str
    zones: tuple[ZoneSpec, ...]  # one per ZoneType, in zone order; empty zones have spanned=0
    max_order: int = MAX_PAGE_ORDER
    pageblock_order: int = PAGEBLOCK_ORDER
    min_free_kbytes: int | None = None  # None: calculate_min_free_kbytes()
    watermark_scale_factor: int = 10  # vm.watermark_scale_factor (Documentation/admin-guide/sysctl/vm.rst)
    lowmem_reserve_ratio: tuple[int, ...] = (256, 256, 32, 0, 0)  # vm.lowmem_reserve_ratio
    config_cma: bool = False  # CONFIG_CMA: adds the CMA migratetype row to /proc/pagetypeinfo

    @property
    def end_pfn(self) -> int:
        return max((z.end_pfn for z in self.zones if z.spanned), default=0)

    def _repr_pretty_(self, printer, cycle) -> None:  # how hypothesis prints a counterexample
        printer.text(repr(self))

    def __repr__(self) -> str:
        """Short enough to read in a counterexample: the populated zones and the settings."""
        zones = []
        for name, z in zip(ZONE_NAMES, self.zones):
            if z.spanned:
                extra = "".join(f" {k}={v}" for k, v in (("absent", z.absent), ("reserved", z.reserved), ("cma", z.cma)) if v)
                zones.append(f"{name}[{z.start_pfn},{z.end_pfn}){extra}")
        return (
            f"MachineConfig({self.name!r}: {', '.join(zones) or 'no memory'}; max_order={self.max_order}, "
            f"pageblock_order={self.pageblock_order}, min_free_kbytes={self.min_free_kbytes}, "
            f"watermark_scale_factor={self.watermark_scale_factor}, lowmem_reserve_ratio={self.lowmem_reserve_ratio}, "
            f"config_cma={self.config_cma})"
        )


def _overlap(ranges: tuple[Range, ...], start: int, end: int) -> int:
    return sum(max(0, min(e, end) - max(s, start)) for s, e in ranges)


def present_pages(z: ZoneSpec) -> int:
    """``present_pages``: spanned minus holes."""
    return z.spanned - _overlap(z.absent, z.start_pfn, z.end_pfn)


def managed_pages(z: ZoneSpec) -> int:
    """``managed_pages``: present minus memblock reservations (holes are never reserved twice)."""
    return present_pages(z) - _overlap(z.reserved, z.start_pfn, z.end_pfn) + _overlap_pairs(z)


def _overlap_pairs(z: ZoneSpec) -> int:
    return sum(_overlap(z.absent, max(s, z.start_pfn), min(e, z.end_pfn)) for s, e in z.reserved)


def page_is_managed(z: ZoneSpec, pfn: int) -> bool:
    """Is ``pfn`` a page of this zone that boot handed to the buddy allocator?"""
    inside = z.start_pfn <= pfn < z.end_pfn
    return inside and not any(s <= pfn < e for s, e in z.absent + z.reserved)


def boot_free_ranges(cfg: MachineConfig) -> list[Range]:
    """The runs of pfns ``memblock_free_all()`` gives the buddy allocator at boot: managed pages
    outside the CMA areas, cut at zone boundaries (Linux's zone boundaries are aligned far
    beyond MAX_PAGE_ORDER, except where a zone starts at pfn 1, so no boot block spans zones).

    >>> boot_free_ranges(PRESETS["toy-2zone"])
    [(0, 64), (66, 192)]
    """
    ranges: list[Range] = []
    for zs in cfg.zones:
        hidden = zs.absent + zs.reserved + zs.cma
        cuts = sorted({zs.start_pfn, zs.end_pfn} | {x for r in hidden for x in r})
        zone_ranges: list[Range] = []
        for s, e in zip(cuts, cuts[1:]):
            if zs.start_pfn <= s < e <= zs.end_pfn and not any(a <= s < b for a, b in hidden):
                if zone_ranges and zone_ranges[-1][1] == s:
                    zone_ranges[-1] = (zone_ranges[-1][0], e)
                else:
                    zone_ranges.append((s, e))
        ranges += zone_ranges
    return ranges


def cma_pageblocks(cfg: MachineConfig) -> list[int]:
    """The first pfn of every CMA pageblock, in the order ``cma_activate_area()`` frees them."""
    step = 1 << cfg.pageblock_order
    return sorted(pfn for zs in cfg.zones for s, e in zs.cma for pfn in range(s, e, step))


def validate_config(cfg: MachineConfig) -> None:
    """Raise ``EINVAL`` unless the preset describes a machine Linux could boot."""
    if len(cfg.zones) != MAX_NR_ZONES or len(cfg.lowmem_reserve_ratio) != MAX_NR_ZONES:
        raise EINVAL(f"a preset has {MAX_NR_ZONES} zones and lowmem_reserve_ratio entries")
    if not 0 <= cfg.pageblock_order <= cfg.max_order <= 16:
        raise EINVAL(f"need 0 <= pageblock_order <= max_order <= 16, got {cfg.pageblock_order}, {cfg.max_order}")
    if cfg.zones[ZoneType.DEVICE].spanned:
        raise EINVAL("ZONE_DEVICE memory never reaches the buddy allocator")
    end = 0
    for z in cfg.zones:
        if z.spanned and (z.start_pfn < end or z.start_pfn < 0 or z.spanned < 0):
            raise EINVAL("zones must be in ascending, non-overlapping pfn order")
        end = max(end, z.end_pfn)
        blocks = 1 << cfg.pageblock_order
        for s, e in z.cma:
            if s % blocks or e % blocks or not z.start_pfn <= s < e <= z.end_pfn:
                raise EINVAL(f"CMA area [{s}, {e}) must be pageblock aligned and inside its zone")
            if _overlap(z.absent + z.reserved, s, e):
                raise EINVAL(f"CMA area [{s}, {e}) overlaps a hole or a memblock reservation")
    if any(z.cma for z in cfg.zones) and not cfg.config_cma:
        raise EINVAL("CMA areas need config_cma=True")


# ---------------------------------------------------------------------------------------------
# Watermarks and reserves (mm/page_alloc.c)


def mult_frac(x: int, n: int, d: int) -> int:
    """``mult_frac(x, n, d)`` of include/linux/math.h: x*n/d without overflowing x*n.

    Contract:

    ```text
    pre: x >= 0 and n >= 0 and d > 0
    post: __return__ == x * n // d
    ```
    """
    return (x // d) * n + ((x % d) * n) // d


def calculate_min_free_kbytes(cfg: MachineConfig) -> int:
    """``calculate_min_free_kbytes()``: int_sqrt(lowmem_kbytes * 16), clamped to [128, 262144].

    lowmem_kbytes is ``nr_free_buffer_pages()`` at boot: the managed pages of the zones up to
    ZONE_NORMAL, in kB.  A preset may instead fix the sysctl, as ``vm.min_free_kbytes`` does.
    """
    if cfg.min_free_kbytes is not None:
        return cfg.min_free_kbytes
    lowmem_kbytes = sum(managed_pages(z) for z in cfg.zones[: ZoneType.NORMAL + 1]) * (PAGE_SIZE >> 10)
    lo, hi = MIN_FREE_KBYTES_RANGE
    return min(max(isqrt(lowmem_kbytes * 16), lo), hi)


def zone_watermarks(cfg: MachineConfig) -> tuple[tuple[int, int, int, int], ...]:
    """``__setup_per_zone_wmarks()``: (min, low, high, promo) of every zone.

    pages_min = min_free_kbytes / 4 is shared among the lowmem zones in proportion to their
    managed pages; ZONE_MOVABLE instead gets managed/1024 clamped to [32, 128].  Each further
    mark adds max(share/4, managed * watermark_scale_factor / 10000).

    >>> from spec.zone import PRESETS
    >>> zone_watermarks(PRESETS["x86_64-4g"])[ZoneType.DMA32]
    (2039, 3083, 4127, 5171)
    """
    pages_min = calculate_min_free_kbytes(cfg) >> (PAGE_SHIFT - 10)
    lowmem = sum(managed_pages(z) for i, z in enumerate(cfg.zones) if i != ZoneType.MOVABLE)
    marks = []
    for i, z in enumerate(cfg.zones):
        managed = managed_pages(z)
        tmp = pages_min * managed // lowmem if lowmem else 0
        if i == ZoneType.MOVABLE:
            wmin = min(max(managed // 1024, SWAP_CLUSTER_MAX), 128)
        else:
            wmin = tmp
        gap = max(tmp >> 2, mult_frac(managed, cfg.watermark_scale_factor, 10000))
        marks.append((wmin, wmin + gap, wmin + 2 * gap, wmin + 3 * gap))
    return tuple(marks)


def lowmem_reserves(cfg: MachineConfig) -> tuple[tuple[int, ...], ...]:
    """``setup_per_zone_lowmem_reserve()``: ``zone[i].lowmem_reserve[j]`` for every pair.

    For j > i it is the managed pages of zones i+1..j divided by lowmem_reserve_ratio[i]; it is
    0 when the ratio is 0 or zone i manages nothing, and 0 on and below the diagonal.
    """
    managed = [managed_pages(z) for z in cfg.zones]
    table = []
    for i in range(MAX_NR_ZONES):
        ratio = cfg.lowmem_reserve_ratio[i]
        clear = ratio == 0 or managed[i] == 0
        row = [0 if clear or j <= i else sum(managed[i + 1 : j + 1]) // ratio for j in range(MAX_NR_ZONES)]
        table.append(tuple(row))
    return tuple(table)


def zonelist(cfg: MachineConfig, highest: ZoneType) -> tuple[int, ...]:
    """The node's zonelist from ``highest`` down, populated zones only (``build_zonerefs_node``)."""
    return tuple(i for i in range(highest, -1, -1) if managed_pages(cfg.zones[i]))


# ---------------------------------------------------------------------------------------------
# Presets

_EMPTY = ZoneSpec()

PRESETS = {
    p.name: p
    for p in (
        # A teaching machine: one 64-page zone, orders 0..4, pageblocks of 8 pages.
        MachineConfig(
            "toy-64",
            (_EMPTY, _EMPTY, ZoneSpec(0, 64), _EMPTY, _EMPTY),
            max_order=4,
            pageblock_order=3,
            min_free_kbytes=0,
        ),
        # Two small zones, so that zone fallback, lowmem_reserve and ALLOC_NOFRAGMENT show.
        MachineConfig(
            "toy-2zone",
            (_EMPTY, ZoneSpec(0, 64), ZoneSpec(64, 128, reserved=((64, 66),)), _EMPTY, _EMPTY),
            max_order=4,
            pageblock_order=3,
            min_free_kbytes=16,
            lowmem_reserve_ratio=(256, 8, 32, 0, 0),
        ),
        # x86-64 with 4 GiB below 4G: DMA (pfn 1..4095, first page reserved by the BIOS), DMA32.
        MachineConfig(
            "x86_64-4g",
            (ZoneSpec(1, 4095, reserved=((1, 159),)), ZoneSpec(4096, 1044480), _EMPTY, _EMPTY, _EMPTY),
        ),
        # A 64 GiB machine: 16 Mi pages across DMA, DMA32 and Normal.
        MachineConfig(
            "x86_64-64g",
            (
                ZoneSpec(1, 4095, reserved=((1, 159),)),
                ZoneSpec(4096, 1044480, absent=((786432, 1048576),)),
                ZoneSpec(1048576, 16515072),
                _EMPTY,
                _EMPTY,
            ),
        ),
        # One 1 GiB Normal zone with a 64 MiB CMA area: the benchmark's zone.
        MachineConfig(
            "x86_64-1g-cma",
            (_EMPTY, _EMPTY, ZoneSpec(0, 262144, cma=((245760, 262144),)), _EMPTY, _EMPTY),
            config_cma=True,
        ),
    )
}


def preset(name: str) -> MachineConfig:
    """Look up a preset by name; ``EINVAL`` for an unknown one."""
    if not isinstance(name, str) or name not in PRESETS:
        raise EINVAL(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
