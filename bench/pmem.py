"""Benchmark: crash-state checking of undo-log transactions, impl against spec, in one process.

For transactions of N = 8, 16, 32, 64 data stores (each to its own cache line, so nothing
orders them before their CLWBs and the data phase of the trace has 2^N crash images):

1. **full enumeration**: every image at every crash point, on the spec (pure Python) and on
   the impl (numba bitset kernels), where it fits; the two image sets must be equal; images
   per second and the ratio are printed;
2. **lazy check**: the impl's ``check`` with the undo-log recovery and the atomicity predicate
   at every crash point; it branches only on the words recovery reads, so its cost grows with
   the trace, not with the number of images.  The spec's check (enumerate, recover, test) is
   timed where enumeration fits, and the number of images the lazy check stood for is given.

The last line printed is one JSON object.  Usage: ``python -m bench.pmem [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time

from impl import pmem as ipmem
from spec import pmem, pmemtx
from bench import timed

FULL_LIMIT = 1 << 18  # images per crash point beyond which full enumeration is not attempted


def transaction(n: int) -> pmemtx.TxState:
    cfg = pmemtx.TxConfig(entries=n, heap_words=8 * n)
    s, _ = pmemtx.tx_write(pmemtx.init(cfg), tuple((8 * i, i + 1) for i in range(n)))
    return s


def images_upper_bound(n: int) -> int:
    """Crash images of the data phase: the N unordered data stores, plus the log's 2^(N/4)."""
    return 1 << n



def spec_enumerate(s: pmemtx.TxState) -> list:
    """The spec's crash_at at every point: persisted sets enumerated, each made an image."""
    return [pmem.crash_at(s.pmem, k)[1] for k in range(len(s.pmem.events) + 1)]


def impl_enumerate(s: pmemtx.TxState) -> list:
    """The same on the impl's kernels: one image row per persisted set, per crash point."""
    t = ipmem._Trace(s.pmem.config, s.pmem.initial, s.pmem.events)
    return [t.images(k) for k in range(t.n + 1)]


def spec_check(s: pmemtx.TxState) -> int:
    return len(pmemtx.violations(s))


def impl_check(s: pmemtx.TxState, stats: dict) -> int:
    rec = s.txs[-1]
    return len(ipmem.check(s.pmem, pmemtx.recovery_for(s.config), pmemtx.atomic_predicate(s.config, rec.before, rec.after), stats))


def warm_up() -> float:
    start = time.perf_counter()
    s = transaction(2)
    impl_enumerate(s)
    impl_check(s, {})
    return time.perf_counter() - start


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    sizes = (8, 16) if args.quick else (8, 16, 32, 64)
    print(f"numba kernels loaded/compiled in {warm_up():.2f} s")
    rows = []
    for n in sizes:
        s = transaction(n)
        events = len(s.pmem.events)
        row = {"stores": n, "events": events}
        if images_upper_bound(n) <= FULL_LIMIT:
            spec_sets, t_spec = timed(spec_enumerate, s)
            impl_rows, t_impl = timed(impl_enumerate, s)
            ni = sum(len(r) for r in impl_rows)  # persisted sets (the spec enumerates as many)
            assert [len(x) for x in spec_sets] == [len(ipmem.np.unique(r, axis=0)) for r in impl_rows]
            row.update(images=ni, spec_images_per_s=round(ni / t_spec), impl_images_per_s=round(ni / t_impl),
                       enumerate_ratio=round(t_spec / t_impl, 1))
            bad_spec, t_spec_check = timed(spec_check, s)
        else:
            bad_spec, t_spec_check = None, None
        stats: dict = {}
        bad_impl, t_lazy = timed(impl_check, s, stats)
        assert bad_impl == 0 and bad_spec in (None, 0)
        row.update(lazy_seconds=round(t_lazy, 4), lazy_leaves=stats["leaves"], crash_points=stats["points"])
        if t_spec_check:
            row.update(spec_check_seconds=round(t_spec_check, 3), check_ratio=round(t_spec_check / t_lazy, 1),
                       images_checked_per_s_spec=round(row["images"] / t_spec_check),
                       images_covered_per_s_lazy=round(row["images"] / t_lazy))
        rows.append(row)
        line = f"N={n:3d}: {events:4d} events"
        if "images" in row:
            line += (f", {row['images']:,} persisted sets: enumerate spec {row['spec_images_per_s']:,}/s, impl "
                     f"{row['impl_images_per_s']:,}/s ({row['enumerate_ratio']}x); check spec {t_spec_check:.3f} s, "
                     f"lazy {t_lazy:.4f} s ({row['check_ratio']}x)")
        else:
            line += f", >= 2^{n} images (not enumerable): lazy check {t_lazy:.4f} s, {stats['leaves']} leaves"
        print(line)
    growth = [r["lazy_seconds"] for r in rows]
    print("lazy check time by N: " + ", ".join(f"{r['stores']}: {r['lazy_seconds']:.4f} s" for r in rows)
          + " -- polynomial in the trace (the images grow as 2^N)")
    figures = {"bench": "pmem", "rows": rows, "ratio": max(r.get("check_ratio", 0) for r in rows),
               "enumerate_ratio": max(r.get("enumerate_ratio", 0) for r in rows), "lazy_seconds": growth}
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
