"""Benchmark: kmalloc/kfree on the impl against the spec, in one process.

1. A random kmalloc/kfree trace (sizes 8 B .. 16 KiB, about 20 000 objects live, two CPUs) on a
   1 GiB machine: a prefix runs on the spec (one pure transition at a time), the whole trace on
   the impl's ``simulate``; on the prefix both must return the same addresses and end in the same
   state.
2. A million live objects across the 13 kmalloc caches and 20 more caches: allocated with
   ``alloc_many``, counted in /proc/slabinfo, freed with ``free_many``.

The last line printed is one JSON object with the figures.
Usage: ``python -m bench.slab [--quick] [--seed N]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from impl.kmalloc import OP_KMALLOC, KmallocAllocator, make_trace
from impl.slub import SlubAllocator
from spec import kmalloc as spec_kmalloc
from spec.kmalloc import KmallocConfig
from spec.slub import SlubConfig
from spec.zone import preset
from bench import timed

CONFIG = KmallocConfig(SlubConfig("bench", preset("x86_64-1g-cma"), nr_cpus=2), ("normal",))


def run_spec(trace) -> tuple:
    state = spec_kmalloc.init(CONFIG)
    out = []
    for op, size, ref, cpu in trace.tolist():
        if op == OP_KMALLOC:
            state, a = spec_kmalloc.kmalloc(state, size, "GFP_KERNEL", cpu)
        else:
            state, a = spec_kmalloc.kfree(state, out[ref], cpu)[0], 0
        out.append(a)
    return state, out



def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    n = 100_000 if args.quick else 1_000_000
    prefix = 5_000 if args.quick else 20_000
    live_objects = 100_000 if args.quick else 1_000_000
    rng = np.random.default_rng(args.seed)
    trace = make_trace(rng, n, live_target=20_000)
    print(f"trace: {n:,} kmalloc/kfree ({int((trace['op'] == OP_KMALLOC).sum()):,} kmallocs), seed {args.seed}")

    (spec_state, spec_out), t_spec = timed(run_spec, trace[:prefix])
    check = KmallocAllocator(CONFIG)
    same = check.simulate(trace[:prefix]).tolist() == spec_out and check.abstract() == spec_state
    impl = KmallocAllocator(CONFIG)
    _, t_impl = timed(impl.simulate, trace)
    spec_rate, impl_rate = prefix / t_spec, n / t_impl
    print(f"  spec (first {prefix:,} ops): {spec_rate:>12,.0f} ops/s")
    print(f"  impl simulate ({n:,} ops):  {impl_rate:>12,.0f} ops/s   {impl_rate / spec_rate:.1f}x spec")
    print(f"  addresses and final state equal on the prefix: {same}")

    big = SlubAllocator(SlubConfig("bench-big", preset("x86_64-64g"), nr_cpus=2))
    sizes = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192] + [24 + 40 * i for i in range(20)]
    names = [big.kmem_cache_create(f"c{i}-{s}", s, 0, ("NO_MERGE",)) for i, s in enumerate(sizes)]
    per = live_objects // len(names)
    start = time.perf_counter()
    addrs = [big.alloc_many(name, per, i % 2) for i, name in enumerate(names)]
    t_alloc = time.perf_counter() - start
    live = sum(len(a) for a in addrs)
    slab_lines = [line for line in big.slabinfo().splitlines()[2:] if int(line.split()[1])]
    active = sum(int(line.split()[1]) for line in slab_lines)
    start = time.perf_counter()
    for a in addrs:
        big.free_many(a, 0)
    t_free = time.perf_counter() - start
    print(f"  {live:,} live objects in {len(names)} caches: alloc_many {live / t_alloc:,.0f} objects/s, "
          f"free_many {live / t_free:,.0f} objects/s; slabinfo active_objs {active:,}")

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "bench": "slab", "ops": n, "spec_ops": prefix, "spec_ops_per_s": round(spec_rate),
        "impl_ops_per_s": round(impl_rate), "ratio": round(impl_rate / spec_rate, 1), "agree": bool(same),
        "live_objects": live, "alloc_many_per_s": round(live / t_alloc), "free_many_per_s": round(live / t_free),
        "peak_rss_mib": round(peak),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
