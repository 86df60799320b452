"""Benchmark: segment checks, impl against spec, in one process.

1. A million accesses ``(register, offset, size, kind)`` on a 32-bit protected-mode machine
   (limits, expand-down and type checks) and on a 64-bit Linux process (base rule and canonical
   check): the spec checks them one :func:`spec.segmentation.access` call at a time, the impl
   in one :meth:`impl.segmentation.Segmentation.check_many` call.  Linear addresses and fault
   vectors must agree.
2. A million segment-register loads (every selector of the tables, every register) through the
   spec's :func:`~spec.segmentation.load_segment` and the impl's ``load_many``.

The spec runs on a sample (``--spec-n``) and its rate is extrapolated; the agreement check
covers that sample.  The last line printed is one JSON object.  Usage:
``python -m bench.segmentation [--quick] [--seed N]``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from impl.segmentation import Segmentation
from spec import segmentation as seg
from spec.errors import MMError
from bench import timed


def accesses(rng: np.random.Generator, state: seg.SegState, n: int):
    regs = rng.integers(0, 6, n)
    kinds = np.where(regs == seg.CS, rng.integers(0, 3, n), rng.integers(0, 2, n)).astype(np.uint8)
    sizes = rng.choice(np.array([1, 2, 4, 8]), n)
    if seg.long_mode(state):
        offsets = rng.integers(0, 1 << 48, n, dtype=np.uint64)
    else:
        limits = np.array([r.limit for r in state.regs], dtype=np.int64)[regs]
        near = np.clip(limits + rng.integers(-8, 8, n), 0, seg.MASK32)
        offsets = np.where(rng.random(n) < 0.5, near, rng.integers(0, 1 << 32, n)).astype(np.uint64)
    return regs, offsets, sizes, kinds


def spec_accesses(state, regs, offsets, sizes, kinds):
    out_lin, out_vec = [], []
    names, kind_names = seg.SEG_NAMES, seg.ACCESS_KINDS
    for r, o, z, k in zip(regs.tolist(), offsets.tolist(), sizes.tolist(), kinds.tolist(), strict=True):
        try:
            out_lin.append(seg.access(state, names[r], o, z, kind_names[k])[1])
            out_vec.append(0)
        except MMError as err:
            out_lin.append(0)
            out_vec.append(seg.fault_vector(err))
    return out_lin, out_vec


def spec_loads(state, regs, sels):
    out = []
    for r, sel in zip(regs.tolist(), sels.tolist(), strict=True):
        try:
            seg.load_segment(state, seg.SEG_NAMES[r], sel)
            out.append(0)
        except MMError as err:
            out.append(seg.fault_vector(err))
    return out



def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, help="checks per batch (default 1,000,000)")
    ap.add_argument("--spec-n", type=int, help="checks run through the spec (default 100,000)")
    args = ap.parse_args(argv)
    n = args.n or (100_000 if args.quick else 1_000_000)
    spec_n = min(n, args.spec_n or (20_000 if args.quick else 100_000))
    rng = np.random.default_rng(args.seed)
    figures: dict = {"bench": "segmentation", "n": n, "spec_n": spec_n}
    agree = True
    ratios = []
    for preset in ("flat-32-ring3", "linux-user"):
        state = seg.init(preset)
        impl = Segmentation(preset)
        regs, offsets, sizes, kinds = accesses(rng, state, n)
        impl.check_many(regs[:10], offsets[:10], sizes[:10], kinds[:10])  # warm up
        (lin, vec, _), t_impl = timed(impl.check_many, regs, offsets, sizes, kinds)
        (s_lin, s_vec), t_spec = timed(spec_accesses, state, regs[:spec_n], offsets[:spec_n], sizes[:spec_n], kinds[:spec_n])
        same = lin[:spec_n].tolist() == s_lin and vec[:spec_n].tolist() == s_vec
        agree &= same
        impl_rate, spec_rate = n / t_impl, spec_n / t_spec
        ratios.append(impl_rate / spec_rate)
        faults = float((vec != 0).mean())
        print(f"{preset}: {n:,} accesses ({faults:.1%} fault); impl {impl_rate:,.0f}/s, spec {spec_rate:,.0f}/s, "
              f"ratio {impl_rate / spec_rate:,.0f}x; agree on {spec_n:,}: {same}")
        figures[f"{preset}_impl_checks_per_s"] = round(impl_rate)
        figures[f"{preset}_spec_checks_per_s"] = round(spec_rate)

    state = seg.init("flat-32-ring3")
    impl = Segmentation("flat-32-ring3")
    regs = rng.choice(np.array([seg.SS, seg.DS, seg.ES, seg.FS, seg.GS]), n)
    sels = rng.integers(0, 8 * (len(state.gdt) + 2), n)
    (vec, _), t_impl = timed(impl.load_many, regs, sels)
    s_vec, t_spec = timed(spec_loads, state, regs[:spec_n], sels[:spec_n])
    same = vec[:spec_n].tolist() == s_vec
    agree &= same
    impl_rate, spec_rate = n / t_impl, spec_n / t_spec
    ratios.append(impl_rate / spec_rate)
    print(f"loads: {n:,}; impl {impl_rate:,.0f}/s, spec {spec_rate:,.0f}/s, ratio {impl_rate / spec_rate:,.0f}x; agree: {same}")
    figures.update(load_impl_per_s=round(impl_rate), load_spec_per_s=round(spec_rate))
    figures["ratio"] = round(min(ratios), 1)
    figures["agree"] = bool(agree)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
