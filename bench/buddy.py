"""Benchmark: the buddy allocator, impl against spec, in one process.

1. One random alloc/free trace (mixed orders and GFP masks, steady state near a target fill)
   runs on the spec (a plain loop over ``spec.buddy.alloc_pages/free_pages``), on the impl one
   operation at a time, and on the impl's ``simulate``; all three must give the same results and
   the same final state.
2. ``simulate`` runs a 10 M-operation order-0-heavy trace on a 64 GiB machine.

Timings exclude building the traces and the allocators; the impl's runs on the first trace are
the best of three (each on a freshly booted allocator), the spec's and the 10 M run are single.
The last line printed is one JSON object with the figures: ``ratio`` is simulate over spec,
``single_ratio`` single impl operations over spec.  Usage: ``python -m bench.buddy [--quick]
[--seed N]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from impl.buddy import ENOMEM_RESULT, GFP_NAMES, OP_ALLOC, ORDER0_HEAVY, BuddyAllocator, make_trace  # noqa: E402
from spec import buddy as spec_buddy  # noqa: E402
from spec.errors import ENOMEM  # noqa: E402
from bench import timed  # noqa: E402


def run_spec(config: str, trace: np.ndarray):
    """The trace on the spec, one pure transition at a time: (final state, results)."""
    state = spec_buddy.init(config)
    ops, orders, gfps, refs = (trace[f].tolist() for f in ("op", "order", "gfp", "ref"))
    results = []
    for op, order, gfp, ref in zip(ops, orders, gfps, refs, strict=True):
        if op == OP_ALLOC:
            try:
                state, pfn = spec_buddy.alloc_pages(state, order, GFP_NAMES[gfp])
            except ENOMEM:
                pfn = ENOMEM_RESULT
            results.append(pfn)
        elif results[ref] < 0:
            results.append(ENOMEM_RESULT)
        else:
            state, _ = spec_buddy.free_pages(state, results[ref], order)
            results.append(0)
    return state, results


def run_impl_single(allocator: BuddyAllocator, trace: np.ndarray) -> list[int]:
    """The trace on the impl through its single-operation API."""
    ops, orders, gfps, refs = (trace[f].tolist() for f in ("op", "order", "gfp", "ref"))
    results = []
    alloc, free = allocator.alloc_pages, allocator.free_pages
    for op, order, gfp, ref in zip(ops, orders, gfps, refs, strict=True):
        if op == OP_ALLOC:
            try:
                results.append(alloc(order, GFP_NAMES[gfp]))
            except ENOMEM:
                results.append(ENOMEM_RESULT)
        elif results[ref] < 0:
            results.append(ENOMEM_RESULT)
        else:
            free(results[ref], order)
            results.append(0)
    return results



def warm_up() -> float:
    """Load (or compile) the numba kernels on a toy machine; returns the seconds it took."""
    start = time.perf_counter()
    toy = BuddyAllocator("toy-64")
    toy.simulate(make_trace(np.random.default_rng(0), 200, "toy-64"))
    pfn = toy.alloc_pages(0)
    toy.free_pages(pfn, 0)
    toy.free_many(toy.alloc_many([0, 1]), [0, 1])
    toy.abstract()
    return time.perf_counter() - start


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a small run (seconds)")
    ap.add_argument("--ops", type=int, help="operations of the impl-vs-spec trace (default 100000)")
    ap.add_argument("--big-ops", type=int, help="operations of the simulate trace (default 10000000)")
    ap.add_argument("--preset", default="x86_64-1g-cma")
    ap.add_argument("--big-preset", default="x86_64-64g")
    args = ap.parse_args(argv)
    ops = args.ops or (5_000 if args.quick else 100_000)
    big_ops = args.big_ops or (500_000 if args.quick else 10_000_000)
    rng = np.random.default_rng(args.seed)

    load = warm_up()
    print(f"numba kernels loaded/compiled in {load:.2f} s")

    trace = make_trace(rng, ops, args.preset)
    n_alloc = int((trace["op"] == OP_ALLOC).sum())
    print(f"trace: {ops} ops on {args.preset} ({n_alloc} allocs, {ops - n_alloc} frees), seed {args.seed}")

    (spec_state, spec_results), t_spec = timed(run_spec, args.preset, trace)
    t_single = t_sim = float("inf")
    for _ in range(3):
        single, batch = BuddyAllocator(args.preset), BuddyAllocator(args.preset)
        single_results, t = timed(run_impl_single, single, trace)
        t_single = min(t_single, t)
        sim_results, t = timed(batch.simulate, trace)
        t_sim = min(t_sim, t)

    failed = sum(r == ENOMEM_RESULT for r, op in zip(spec_results, trace["op"], strict=True) if op == OP_ALLOC)
    print(f"  {failed} allocations failed with ENOMEM")
    same_results = spec_results == single_results == sim_results.tolist()
    same_state = single.abstract() == spec_state and batch.abstract() == spec_state
    print(f"  results equal: {same_results}; final state equal (abstract() == spec): {same_state}")
    spec_rate, single_rate, sim_rate = ops / t_spec, ops / t_single, ops / t_sim
    print(f"  spec:                {spec_rate:>14,.0f} ops/s  ({t_spec:.2f} s)")
    print(f"  impl single ops:     {single_rate:>14,.0f} ops/s  ({t_single:.3f} s)  {single_rate / spec_rate:8.1f}x spec")
    print(f"  impl simulate:       {sim_rate:>14,.0f} ops/s  ({t_sim:.4f} s)  {sim_rate / spec_rate:8.1f}x spec")

    big, t_build = timed(BuddyAllocator, args.big_preset)
    print(f"{args.big_preset}: {big.end_pfn:,} pfns, arrays {big.nbytes / 2**20:.0f} MiB, booted in {t_build:.2f} s")
    big_trace, t_gen = timed(make_trace, rng, big_ops, args.big_preset, target_fill=0.25, orders=ORDER0_HEAVY)
    big_results, t_big = timed(big.simulate, big_trace)
    big_failed = int(((big_trace["op"] == OP_ALLOC) & (big_results == ENOMEM_RESULT)).sum())
    big_rate = big_ops / t_big
    print(f"  simulate {big_ops:,} order-0-heavy ops: {big_rate:,.0f} ops/s ({t_big:.2f} s; "
          f"trace built in {t_gen:.2f} s; {big_failed} ENOMEM)")

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    figures = {
        "bench": "buddy",
        "ops": ops,
        "spec_ops_per_s": round(spec_rate),
        "impl_ops_per_s": round(single_rate),
        "impl_simulate_ops_per_s": round(sim_rate),
        "ratio": round(sim_rate / spec_rate, 1),
        "single_ratio": round(single_rate / spec_rate, 1),
        "simulate_10m_ops_per_s": round(big_rate),
        "simulate_ops": big_ops,
        "agree": bool(same_results and same_state),
        "peak_rss_mib": round(peak),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
