"""Benchmark: VMA system calls, impl against spec, in one process.

1. A process with 10 k VMAs (un-hinted mmaps of alternating protection, so they do not merge)
   runs a trace of 100 k mixed system calls on the impl: mmap (un-hinted and fixed), munmap,
   mprotect, madvise, mlock/munlock, mremap and first-write faults, at addresses drawn from the
   layout.  A prefix of the same trace runs on the spec from the same starting state; the
   results and the final states of the prefix must agree.  ops/s of both and their ratio.
2. Scaling: the impl's cost per operation on the same mix as the VMA count grows 10^2 .. 10^5
   (it must grow like log n: the VMAs sit in a sorted list and free gaps in an augmented treap).

Both sides run with the cyclic garbage collector paused during the timed calls (the impl's
batch path :meth:`impl.vma.VmaSpace.calls` does this itself; the spec loop does the same, so the
two are measured under one setting).  Each timing is the best of ``--repeat`` runs (default 3)
from the same starting state.

The last line printed is one JSON object with the figures.  Usage: ``python -m bench.vma
[--quick] [--seed N]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from impl.vma import VmaSpace  # noqa: E402
from spec import vma as spec  # noqa: E402
from spec.errors import MMError  # noqa: E402
from spec.mman import (  # noqa: E402
    MADV_DOFORK, MADV_DONTFORK, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MREMAP_MAYMOVE, PROT_READ, PROT_WRITE,
)

PG = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
CONFIG = {"max_map_count": 1 << 20, "cap_ipc_lock": True}


def build(n: int) -> VmaSpace:
    """An impl address space with n VMAs (un-hinted mmaps of alternating protection)."""
    space = VmaSpace(CONFIG)
    for i in range(n):
        space.mmap(0, PG * (1 + i % 4), RW if i % 2 else PROT_READ, ANON)
    return space


def make_trace(space: VmaSpace, n: int, rng: random.Random):
    """n (op, args) calls aimed at the VMAs of ``space``."""
    starts = [v.start for v in space.vmas]
    trace = []
    for _ in range(n):
        a = rng.choice(starts) + PG * rng.randrange(2)
        k = rng.randrange(100)
        if k < 15:
            trace.append(("mmap", (0, PG * rng.randrange(1, 5), rng.choice([RW, PROT_READ]), ANON)))
        elif k < 20:
            trace.append(("mmap", (a, PG, rng.choice([RW, PROT_READ]), ANON | MAP_FIXED)))
        elif k < 35:
            trace.append(("munmap", (a, PG)))
        elif k < 55:
            trace.append(("mprotect", (a, PG * rng.randrange(1, 3), rng.choice([RW, PROT_READ]))))
        elif k < 65:
            trace.append(("madvise", (a, PG, rng.choice([MADV_DONTFORK, MADV_DOFORK]))))
        elif k < 72:
            trace.append(("mlock", (a, PG, 0)))
        elif k < 78:
            trace.append(("munlock", (a, PG)))
        elif k < 85:
            trace.append(("mremap", (a, PG, PG * rng.randrange(1, 3), MREMAP_MAYMOVE, 0)))
        else:
            trace.append(("fault", (a, True)))
    return trace


def run_impl(space: VmaSpace, trace) -> list:
    """The impl's batch path (:meth:`VmaSpace.calls`, which pauses the cyclic GC)."""
    return space.calls(trace)


def run_spec(mm, trace):
    """The spec, call by call, under the same GC setting as the impl's batch."""
    out = []
    was = gc.isenabled()
    gc.disable()
    try:
        for op, args in trace:
            try:
                mm, r = getattr(spec, op)(mm, *args)
                out.append(r)
            except MMError as err:
                out.append(type(err).__name__)
    finally:
        if was:
            gc.enable()
    return mm, out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller trace and sizes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per side; the best counts")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    n_vmas, n_ops, n_spec = (2_000, 10_000, 100) if args.quick else (10_000, 100_000, 300)

    from impl import bugs

    bugs.active("vma-merge-ignores-anon-vma")  # collect the defect registry (imports every impl module) first
    space = build(n_vmas)
    start_mm = space.abstract()
    trace = make_trace(space, n_ops, rng)

    # best of ``repeat`` runs on each side from the same starting state (the machine is shared:
    # the minimum is the run least disturbed by other processes, as timeit recommends)
    impl_s = spec_s = float("inf")
    for r in range(args.repeat):
        run_space = space if r == 0 else VmaSpace(start_mm)
        t0 = time.perf_counter()
        results = run_impl(run_space, trace)
        impl_s = min(impl_s, time.perf_counter() - t0)
        if r == 0:
            impl_results = results
    impl_ops = n_ops / impl_s

    for _ in range(args.repeat):
        t0 = time.perf_counter()
        spec_mm, spec_results = run_spec(start_mm, trace[:n_spec])
        spec_s = min(spec_s, time.perf_counter() - t0)
    spec_ops = n_spec / spec_s

    prefix = VmaSpace(start_mm)
    agree = run_impl(prefix, trace[:n_spec]) == spec_results == impl_results[:n_spec] and prefix.abstract() == spec_mm
    errors = sum(isinstance(r, str) for r in impl_results)
    print(f"process with {n_vmas} VMAs, {n_ops} mixed system calls ({errors} refused with an errno)")
    print(f"impl: {impl_s:8.3f} s  {impl_ops:12,.0f} ops/s   ({len(space)} VMAs at the end)")
    print(f"spec: {spec_s:8.3f} s  {spec_ops:12,.0f} ops/s   (first {n_spec} calls)")
    print(f"ratio impl/spec: {impl_ops / spec_ops:,.0f}x   prefix agrees: {agree}")

    scaling = {}
    sizes = (100, 1_000, 10_000) if args.quick else (100, 1_000, 10_000, 100_000)
    per = 2_000 if args.quick else 5_000
    for n in sizes:
        s = build(n)
        tr = make_trace(s, per, random.Random(args.seed + n))
        start = s.abstract()
        best = float("inf")
        for r in range(args.repeat):
            run_space = s if r == 0 else VmaSpace(start)
            t0 = time.perf_counter()
            run_impl(run_space, tr)
            best = min(best, time.perf_counter() - t0)
        scaling[n] = best / per * 1e6
        print(f"impl cost per call with {n:>7,} VMAs: {scaling[n]:7.1f} us")
    growth = scaling[sizes[-1]] / scaling[sizes[0]]
    print(f"cost growth {sizes[0]} -> {sizes[-1]} VMAs: {growth:.2f}x for a {sizes[-1] // sizes[0]}x larger process")

    figures = {
        "bench": "vma", "vmas": n_vmas, "ops": n_ops, "impl_ops_per_s": round(impl_ops),
        "spec_ops_per_s": round(spec_ops, 1), "ratio": round(impl_ops / spec_ops, 1), "prefix_agrees": agree,
        "us_per_op_by_vmas": {str(k): round(v, 2) for k, v in scaling.items()}, "growth": round(growth, 2),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
