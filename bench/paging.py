"""Benchmark: the page walk, impl against spec and against the memory-bound limit, in one process.

1. Build 4-level tables with about 1 M mapped 4 KiB pages' worth of address space: a mix of
   2 MiB leaves and 4 KiB leaves (about half the pages each), on the impl (``map`` writes
   each page table's leaves as one slice, so this takes well under a second).
2. Translate 10 M random mapped addresses with ``PageTables.translate_many`` and 10 k with the
   spec's ``translate`` (on ``abstract()`` of the same tables); both must agree on the 10 k.
3. The limit: four dependent ``np.take`` gathers over arrays of the same sizes as the four
   levels' tables (the memory-bound floor of a 4-level walk without permission logic).

The last line printed is one JSON object with ``ratio`` (impl over spec) and
``limit_fraction`` (impl over the gather limit).  Usage: ``python -m bench.paging [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from impl.paging import PageTables
from spec import paging as spec_paging
from spec import pte
from spec.paging import Access, PagingConfig
from spec.zone import MachineConfig, ZoneSpec

BASE = 0x7F0000000000


def build(pages: int, seed: int):
    """Tables mapping ``pages`` 4 KiB pages: half as 2 MiB leaves, half as 4 KiB leaves."""
    huge = pages // 2 // 512
    small = pages - huge * 512
    machine = MachineConfig("bench", (ZoneSpec(), ZoneSpec(), ZoneSpec(0, 2 * pages + (1 << 16)), ZoneSpec(), ZoneSpec()),
                            max_order=10, pageblock_order=9, min_free_kbytes=0)
    pt = PageTables(PagingConfig("x86-64-4level", machine))
    root = pt.mms[0]
    rng = np.random.default_rng(seed)
    slots = rng.permutation(4 * (huge + small // 512 + 1))  # 2 MiB slots in a 16 GiB-ish window, shuffled
    vas = []
    for i in range(huge):
        va = BASE + int(slots[i]) * 0x200000
        pt.map(root, va, pt.alloc_data(9), 0x200000, pte.PAGE_SHARED, 0x200000)
        vas.append((va, 0x200000))
    frames = [pt.alloc_data(9) for _ in range(-(-small // 512))]
    for j in range(-(-small // 512)):
        va = BASE + int(slots[huge + j]) * 0x200000
        n = min(512, small - j * 512)
        pt.map(root, va, frames[j], n * 0x1000, pte.PAGE_SHARED)
        vas.append((va, n * 0x1000))
    return pt, root, vas


def random_addresses(rng, vas, n):
    starts = np.array([v for v, _ in vas], dtype=np.uint64)
    sizes = np.array([s for _, s in vas], dtype=np.uint64)
    weights = sizes / sizes.sum()
    pick = rng.choice(len(vas), size=n, p=weights)
    off = (rng.random(n) * sizes[pick]).astype(np.uint64)
    return starts[pick] + off


def gather_limit(pt: PageTables, n: int, rng) -> float:
    """Four dependent np.take gathers over arrays sized like the four levels' tables."""
    levels = [np.flatnonzero((pt.t_pfn >= 0) & (pt.t_level == lv)).size * 512 for lv in (4, 3, 2, 1)]
    arrays = [rng.integers(0, max(levels[i + 1] if i < 3 else levels[3], 1), size=max(sz, 1), dtype=np.int64)
              for i, sz in enumerate(levels)]
    idx = rng.integers(0, max(levels[0], 1), size=n, dtype=np.int64)
    start = time.perf_counter()
    x = idx
    for a in arrays:
        x = np.take(a, x % a.size)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pages = 1 << (16 if args.quick else 20)
    n_impl, n_spec = (1_000_000, 2_000) if args.quick else (10_000_000, 10_000)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    pt, root, vas = build(pages, args.seed)
    print(f"built {len(vas)} mappings ({pages} pages, {pt.nr_pagetable} table pages) in {time.perf_counter() - t0:.1f} s")
    vaddrs = random_addresses(rng, vas, n_impl)
    pt.translate_many(root, vaddrs[:1000], Access("r"))  # compile and warm
    start = time.perf_counter()
    batch = pt.translate_many(root, vaddrs, Access("r"))
    impl_rate = n_impl / (time.perf_counter() - start)
    assert (batch.codes == -1).all()
    state = pt.abstract()
    sample = [int(v) for v in vaddrs[:n_spec]]
    start = time.perf_counter()
    got = []
    for va in sample:
        state, pa = spec_paging.translate(state, root, va, Access("r"))
        got.append(pa)
    spec_rate = n_spec / (time.perf_counter() - start)
    assert got == batch.paddrs[:n_spec].tolist(), "impl and spec disagree"
    limit = max(gather_limit(pt, n_impl, rng) for _ in range(3))
    print(f"impl translate_many: {impl_rate / 1e6:8.2f} M translations/s")
    print(f"spec translate:      {spec_rate / 1e3:8.2f} k translations/s")
    print(f"gather limit:        {limit / 1e6:8.2f} M walks/s (four dependent np.take)")
    print(f"ratio impl/spec {impl_rate / spec_rate:.0f}x, impl/limit {impl_rate / limit:.2f}")
    print(json.dumps({"bench": "paging", "pages": pages, "impl_per_s": round(impl_rate), "spec_per_s": round(spec_rate),
                      "limit_per_s": round(limit), "ratio": round(impl_rate / spec_rate, 1),
                      "limit_fraction": round(impl_rate / limit, 3)}))


if __name__ == "__main__":
    main()
