"""Benchmark: vmalloc/vfree on the impl against the spec, in one process.

A random vmalloc/vfree trace (1 to 16 pages per area, about 64 areas live, lazy purges on a
small limit) on a 64 MiB machine with 4-level paging: a prefix runs on the spec (one pure
transition at a time), the whole trace on the impl's ``simulate``; on the prefix both must
return the same addresses and end in the same state.

The last line printed is one JSON object with the figures.
Usage: ``python -m bench.vmalloc [--quick] [--seed N]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from impl.vmalloc import OP_VMALLOC, VmallocAllocator, make_trace
from spec import vmalloc as spec
from spec.errors import ENOMEM
from spec.paging import PagingConfig
from spec.vmalloc import VmallocConfig
from spec.zone import PAGE_SIZE, MachineConfig, ZoneSpec

_E = ZoneSpec()
MACHINE = MachineConfig("bench-64m", (_E, _E, ZoneSpec(0, 16384), _E, _E), max_order=10, pageblock_order=9,
                        min_free_kbytes=0)
CONFIG = VmallocConfig(PagingConfig("x86-64-4level", MACHINE), cpus=2, lazy_max=512)


def run_spec(trace):
    s, out, addrs = spec.init(CONFIG), [], []
    for op, size, ref in trace.tolist():
        if op == OP_VMALLOC:
            try:
                s, a = spec.vmalloc(s, size)
                out.append((a - s.vstart) // PAGE_SIZE)
            except ENOMEM:
                a = None
                out.append(-12)
            addrs.append(a)
        else:
            if addrs[ref] is not None:
                s, _ = spec.vfree(s, addrs[ref])
            out.append(0 if addrs[ref] is not None else -12)
            addrs.append(None)
    return s, out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    n = 4000 if a.quick else 40000
    prefix = 400 if a.quick else 1500
    trace = make_trace(np.random.default_rng(a.seed), n, live_target=64, max_pages=16)

    start = time.perf_counter()
    (state, spec_out) = run_spec(trace[:prefix])
    spec_rate = prefix / (time.perf_counter() - start)

    check = VmallocAllocator(CONFIG)
    same = check.simulate(trace[:prefix]).tolist() == spec_out and check.abstract() == state

    v = VmallocAllocator(CONFIG)
    start = time.perf_counter()
    out = v.simulate(trace)
    impl_rate = n / (time.perf_counter() - start)
    pages = int(v.nr_vmalloc_pages)
    print(f"vmalloc/vfree trace of {n:,} ops ({prefix:,} on the spec): impl {impl_rate:,.0f} ops/s, "
          f"spec {spec_rate:,.0f} ops/s, ratio {impl_rate / spec_rate:,.1f}x; agree on the prefix: {same}")
    print(f"  end: {len(v.busy)} live areas, VmallocUsed {pages * 4} kB, {v.nr_purges} purges, "
          f"{int((out == -12).sum())} ENOMEM")
    figures = {"bench": "vmalloc", "ops": n, "spec_ops": prefix, "spec_ops_per_s": round(spec_rate),
               "impl_ops_per_s": round(impl_rate), "ratio": round(impl_rate / spec_rate, 1), "agree": bool(same),
               "purges": int(v.nr_purges)}
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
