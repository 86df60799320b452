"""Benchmark: page touches on the impl against the spec, in one process.

A process maps one private anonymous region on a 8 GiB machine (x86-64 4-level paging) and
touches every page: first a read of each (the zero page), then a write of each (a fresh frame
each), then every page again (no fault).  The impl's ``touch_many`` does all of it (1 M page
touches by default); the spec does a prefix one ``touch`` at a time, on a small machine; on the
prefix the impl, run page by page, must end in the spec's state.  Then a batch of system calls:
random programs in the kernel oracle's step format (mmap, mprotect, madvise, mlock, touches,
fork, exit) through ``FaultSystem.run`` and ``spec.fault.run``, which must agree.

The last line printed is one JSON object with the figures.
Usage: ``python -m bench.fault [--quick] [--pages N]``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from bench import timed
from impl.fault import FaultSystem
from spec import fault as spec
from spec.fault import FaultConfig
from spec.mman import MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_PRIVATE, PROT_READ, PROT_WRITE
from spec.zone import PAGE_SIZE

BASE = 0x200000000000
FLAGS = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
RW = PROT_READ | PROT_WRITE


def spec_touches(pages: int):
    """Read, then write, then touch again ``pages`` pages on the spec, one call at a time."""
    s = spec.init(FaultConfig(2 * pages + 64, files=()))
    s, a = spec.mmap(s, 1, BASE, pages * PAGE_SIZE, RW, FLAGS)
    for write in (False, True, True):
        for i in range(pages):
            s, _ = spec.touch(s, 1, a + i * PAGE_SIZE, write)
    return s


def impl_touches(pages: int, config: FaultConfig):
    fs = FaultSystem(config)
    a = fs.mmap(1, BASE, pages * PAGE_SIZE, RW, FLAGS)
    addrs = a + np.arange(pages, dtype=np.int64) * PAGE_SIZE
    faults = 0
    for write in (False, True, True):
        faults += int(fs.touch_many(1, addrs, write).sum())
    return fs, faults


def programs(count: int, seed: int = 0):
    """``count`` random programs of about 20 steps (the lockstep tests' generator)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed

    from mmspec.mechanisms.fault import programs as strategy

    out = []

    @fixed_seed(seed)
    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy(20))
    def collect(program):
        out.append(program)

    collect()
    return out


def run_programs(runner, progs) -> tuple[int, list]:
    steps, results = 0, []
    for program in progs:
        results.append(runner(program))
        steps += len(program)
    return steps, results


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pages", type=int, default=None)
    a = ap.parse_args(argv)
    touches = 30_000 if a.quick else 1_000_000
    pages = a.pages or touches // 3
    prefix = 100 if a.quick else 300
    s, spec_s = timed(spec_touches, prefix)
    check, _ = impl_touches(prefix, FaultConfig(2 * prefix + 64, files=()))
    assert check.abstract() == s, "impl and spec disagree on the prefix"
    (fs, faults), impl_s = timed(impl_touches, pages, FaultConfig(2 * pages + 4096, files=()))
    assert faults == 2 * pages and fs.procs[1].minflt == 2 * pages
    spec_rate = 3 * prefix / spec_s
    impl_rate = 3 * pages / impl_s
    out = {"bench": "fault", "touches": 3 * pages, "impl_touches_per_s": round(impl_rate),
           "spec_prefix_touches": 3 * prefix, "spec_touches_per_s": round(spec_rate, 1),
           "ratio": round(impl_rate / spec_rate, 1), "faults": faults}
    print(f"impl: {3 * pages} touches ({faults} faults) in {impl_s:.2f} s = {impl_rate:,.0f}/s")
    print(f"spec: {3 * prefix} touches in {spec_s:.2f} s = {spec_rate:,.1f}/s")
    print(f"impl/spec: {out['ratio']}x")
    progs = programs(20 if a.quick else 60)
    (steps, want), spec_run_s = timed(run_programs, lambda p: spec.run(spec.init(), p, BASE)[1], progs)
    (_, got), impl_run_s = timed(run_programs, lambda p: FaultSystem(FaultConfig()).run(p, BASE), progs)
    assert got == want, "impl.run and spec.run disagree"
    out.update(run_steps=steps, impl_run_steps_per_s=round(steps / impl_run_s),
               spec_run_steps_per_s=round(steps / spec_run_s), run_ratio=round(spec_run_s / impl_run_s, 1))
    print(f"run(): {len(progs)} programs, {steps} steps: impl {out['impl_run_steps_per_s']:,}/s, "
          f"spec {out['spec_run_steps_per_s']:,}/s, impl/spec {out['run_ratio']}x")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
