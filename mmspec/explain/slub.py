"""``mmspec explain slab``: why the slab allocator exists alongside the buddy allocator.

A seed draws a realistic mix of kernel objects (task_struct, inode, dentry, sk_buff heads and
small kmallocs); the walk-through allocates them through SLUB (:mod:`spec.slub`, via
:mod:`spec.kmalloc`) and prints, for each cache, the memory the slabs take against the memory
the same objects would take if each were its own buddy block, the internal fragmentation of
both, and the path each allocation took (cpu freelist, per-CPU partial, node partial, a new
slab from the buddy allocator).  All the knowledge is in the spec; this module only counts.
"""

from __future__ import annotations

import random
from collections import Counter

from spec import kmalloc, slub
from spec.slub import get_order
from spec.zone import PAGE_SIZE

#: (cache, object size, flags, share of the objects): sizes of x86-64 6.x kernels.
OBJECTS = (
    ("task_struct", 9856, ("HWCACHE_ALIGN",), 0.02),
    ("ext4_inode_cache", 1184, ("RECLAIM_ACCOUNT",), 0.12),
    ("dentry", 192, ("RECLAIM_ACCOUNT",), 0.30),
    ("skbuff_head_cache", 232, ("HWCACHE_ALIGN",), 0.10),
)
KMALLOC_SIZES = (8, 16, 24, 32, 40, 64, 72, 100, 128, 200, 256, 300, 512, 700, 1024, 2000, 4096)


def _path(before: slub.SlubState, after: slub.SlubState, name: str, cpu: int) -> str:
    if len(after.slabs) > len(before.slabs):
        return "new slab from the buddy allocator"
    b, a = before.cpus[name][cpu], after.cpus[name][cpu]
    if b.slab == a.slab and b.freelist:
        return "fast path: cpu freelist"
    if b.partial != a.partial and a.slab in b.partial:
        return "per-CPU partial slab"
    if a.slab in before.partial[name]:
        return "node partial slab"
    return "refill from the cpu slab's remote frees"


def explain(seed: int = 0, objects: int = 3000, **options) -> str:
    """The walk-through for ``seed``: ``--objects`` (how many to allocate)."""
    if options:
        raise TypeError(f"unknown option(s) for explain slab: {', '.join(sorted(options))}")
    rng = random.Random(seed)
    state = kmalloc.init(kmalloc.KmallocConfig(slub.slub_preset("x86_64-1g"), ("normal",)))
    s = state.slub
    for name, size, flags, _ in OBJECTS:
        s, _ = slub.kmem_cache_create(s, name, size, 0, flags)
    state = kmalloc.KmallocState(state.config, s, state.large)
    asked: Counter = Counter()
    count: Counter = Counter()
    paths: Counter = Counter()
    example: dict = {}
    kmalloc_share = 1 - sum(w for *_, w in OBJECTS)
    for _ in range(objects):
        cpu = rng.randrange(state.slub.config.nr_cpus)
        r = rng.random()
        if r < kmalloc_share:
            size = rng.choice(KMALLOC_SIZES)
            name = kmalloc.kmalloc_slab(size)
            before = state.slub
            state, _ = kmalloc.kmalloc(state, size, "GFP_KERNEL", cpu)
        else:
            r -= kmalloc_share
            for name, size, _, w in OBJECTS:
                if r < w:
                    break
                r -= w
            before = state.slub
            s, _ = slub.kmem_cache_alloc(state.slub, name, cpu)
            state = kmalloc.KmallocState(state.config, s, state.large)
        path = _path(before, state.slub, state.slub.aliases.get(name, name), cpu)
        asked[name] += size
        count[name] += 1
        paths[path] += 1
        example.setdefault(path, f"{name} ({size} B) on cpu {cpu}")
    out = [
        f"mmspec explain slab --seed {seed}: {objects} kernel objects on a 2-CPU x86-64 machine (1 GiB)",
        "",
        "Why SLUB exists beside the buddy allocator: the buddy allocator's unit is a page (4096 B).",
        "If every object were its own buddy block of get_order(size), each would take at least one page;",
        "SLUB packs objects of one size into slabs (buddy blocks of calculate_order()) instead.",
        "",
        f"{'cache':<20} {'objects':>7} {'asked KiB':>10} {'buddy pages':>11} {'slab pages':>10} "
        f"{'waste buddy':>11} {'waste slab':>10}",
    ]
    tot = Counter()
    for name in sorted(count, key=lambda n: -count[n]):
        s = state.slub.caches[state.slub.aliases.get(name, name)]
        n = count[name]
        buddy_pages = n * (1 << get_order(s.object_size))
        slab_pages = sum(1 << sl.order for sl in state.slub.slabs.values() if sl.cache == s.name)
        waste_b = 1 - asked[name] / (buddy_pages * PAGE_SIZE)
        waste_s = 1 - asked[name] / (slab_pages * PAGE_SIZE)
        out.append(f"{name:<20} {n:>7} {asked[name] / 1024:>10.1f} {buddy_pages:>11} {slab_pages:>10} "
                   f"{waste_b:>10.1%} {waste_s:>10.1%}")
        tot.update(objects=n, asked=asked[name], buddy=buddy_pages, slab=slab_pages)
    out.append(f"{'total':<20} {tot['objects']:>7} {tot['asked'] / 1024:>10.1f} {tot['buddy']:>11} {tot['slab']:>10} "
               f"{1 - tot['asked'] / (tot['buddy'] * PAGE_SIZE):>10.1%} {1 - tot['asked'] / (tot['slab'] * PAGE_SIZE):>10.1%}")
    out += [
        "",
        f"As buddy blocks the objects would take {tot['buddy'] * 4 / 1024:.1f} MiB; in slabs they take "
        f"{tot['slab'] * 4 / 1024:.1f} MiB ({tot['buddy'] / max(tot['slab'], 1):.1f}x less).",
        "(Slab pages include the free objects still in them, and objects in cpu freelists.)",
        "",
        "The path each allocation took (___slab_alloc):",
        *(f"  {paths[p]:>6}  {p:<42} e.g. {example[p]}" for p in sorted(paths, key=lambda p: -paths[p])),
        "",
        "/proc/slabinfo (the caches used):",
    ]
    info = slub.slabinfo(state.slub).splitlines()
    out += info[:2] + [line for line in info[2:] if line.split()[1] != "0"]
    out += ["", "/proc/meminfo:", slub.meminfo(state.slub).rstrip()]
    return "\n".join(out) + "\n"
