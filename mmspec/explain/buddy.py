"""``mmspec explain buddy``: the buddy allocator on a concrete problem, step by step.

A seed picks a sequence of allocations and frees on a small zone; the walk-through prints the
problem first (so a reader can work it out), then every step the spec takes, in the kernel's
terms, and the zone after each one, ending with ``/proc/buddyinfo``.  All the knowledge is in
:mod:`spec.buddy`: this module only draws the problem and prints what the spec reports.
"""

from __future__ import annotations

import random

from spec import buddy
from spec.errors import MMError
from spec.zone import PRESETS, preset

ORDERS = (0, 0, 0, 0, 0, 1, 1, 2, 3)
GFPS = ("GFP_HIGHUSER_MOVABLE", "GFP_HIGHUSER_MOVABLE", "GFP_KERNEL", "GFP_KERNEL_RECLAIMABLE")


def _problem(rng: random.Random, n: int, max_order: int):
    """n requests: ("alloc", order, gfp) or ("free", index of an earlier alloc)."""
    requests, live = [], []
    for i in range(n):
        if live and rng.random() < 0.4:
            requests.append(("free", live.pop(rng.randrange(len(live)))))
        else:
            requests.append(("alloc", min(rng.choice(ORDERS), max_order), rng.choice(GFPS)))
            live.append(i)
    return requests


def _describe(i: int, req) -> str:
    if req[0] == "alloc":
        return f"{i + 1:2d}. alloc_pages({req[2]}, order={req[1]})"
    return f"{i + 1:2d}. free the block request {req[1] + 1} got"


def explain(seed: int = 0, preset_name: str = "toy-64", steps: int = 10, quiz: bool = False, **options) -> str:
    """The walk-through text for ``seed``: ``--preset-name``, ``--steps`` and ``--quiz`` (the
    problem only, OSTEP style without ``-c``) are the options."""
    preset_name = options.pop("preset", preset_name)
    if options:
        raise TypeError(f"unknown option(s) for explain buddy: {', '.join(sorted(options))}")
    cfg = preset(preset_name)
    rng = random.Random(seed)
    state = buddy.init(cfg)
    requests = _problem(rng, steps, cfg.max_order)
    out = [
        f"mmspec explain buddy --seed {seed}: preset {cfg.name} "
        f"(orders 0..{cfg.max_order}, pageblocks of {1 << cfg.pageblock_order} pages)",
        "",
        "The zone at boot (every page free, in the largest aligned blocks, each list in pfn order):",
        buddy.free_area_diagram(state).rstrip(),
        "",
        "The requests:",
        *(_describe(i, r) for i, r in enumerate(requests)),
        "",
    ]
    if quiz:
        out.append("For each request: which free list is used, which blocks are split or merged, the pfn")
        out.append("returned; then the final /proc/buddyinfo.  Run again without --quiz for the answers.")
        return "\n".join(out) + "\n"
    got: dict[int, tuple[int, int]] = {}
    for i, req in enumerate(requests):
        out.append(_describe(i, req))
        try:
            if req[0] == "alloc":
                state, pfn, trace = buddy.alloc_pages_traced(state, req[1], req[2])
                got[i] = (pfn, req[1])
                result = f"-> pfn {pfn} (pages {pfn}..{pfn + (1 << req[1]) - 1})"
            elif req[1] in got:
                pfn, order = got.pop(req[1])
                state, _, trace = buddy.free_pages_traced(state, pfn, order)
                result = f"-> __free_pages(pfn {pfn}, order {order}) done"
            else:
                trace, result = (), "-> nothing to free: that allocation failed"
        except MMError as err:
            trace, result = (), f"-> {type(err).__name__}: {err}"
        out.extend(f"      {line}" for line in trace)
        out.append(f"    {result}")
        out.extend(f"    {line}" for line in buddy.free_area_diagram(state).splitlines()[:1])
    out += ["", "/proc/pagetypeinfo:", buddy.pagetypeinfo(state).rstrip(), "", "/proc/buddyinfo:"]
    out.append(buddy.buddyinfo(state).rstrip("\n"))
    return "\n".join(out) + "\n"


PRESET_NAMES = tuple(PRESETS)
