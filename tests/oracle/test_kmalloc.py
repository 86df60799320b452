"""The running kernel as an oracle for kmalloc's size classes.

- The kmalloc caches of /proc/slabinfo are exactly the spec's table (kmalloc-8 ... kmalloc-8k
  with 96 and 192) in each family this kernel has (normal, rcl, dma, cg), with the spec's object
  sizes, and they are listed in the order ``create_kmalloc_caches()`` creates them;
- each kmalloc cache's stride, alignment (the largest power of two dividing the size), order and
  objects per slab are what the spec's ``kmem_cache_create(..., KMALLOC)`` computes for this
  machine's CPU count.
"""

from __future__ import annotations

import re

import pytest

from mmspec.tally import tally
from spec import kmalloc
from spec.kmalloc import CREATION_ORDER, KMALLOC_NAMES, TYPES
from spec.slub import SlubConfig
from spec.zone import preset
from tests.oracle.test_slub import SYS, _boot_params, _read, attr, present_cpus

pytestmark = pytest.mark.layer("oracle")


def _slabinfo_names():
    return [line.split()[0] for line in _read("/proc/slabinfo").splitlines()[2:]]


def _families(names):
    return [kind for kind, (prefix, _) in TYPES.items() if f"{prefix}8" in names]


def test_kmalloc_caches_are_the_spec_table():
    names = _slabinfo_names()
    if any(n.startswith("kmalloc-rnd-") for n in names):
        pytest.skip("CONFIG_RANDOM_KMALLOC_CACHES: the spec does not model the kmalloc-rnd-* copies")
    families = _families(names)
    assert "normal" in families
    for kind in families:
        prefix = TYPES[kind][0]
        ours = [kmalloc.cache_name(i, kind) for i in CREATION_ORDER]
        live = [n for n in names if n.startswith(prefix) and re.fullmatch(r"\d+k?", n[len(prefix):])]
        assert sorted(live) == sorted(ours)
        assert live == list(reversed(ours)), "slabinfo lists caches newest first, in creation order reversed"
        tally("cases", len(ours))


def test_kmalloc_object_sizes():
    lines = _read("/proc/slabinfo").splitlines()[2:]
    sizes = {line.split()[0]: int(line.split()[3]) for line in lines}
    for index, suffix in KMALLOC_NAMES.items():
        name = "kmalloc-" + suffix
        assert sizes[name] == kmalloc.kmalloc_size(index), name
        if SYS.is_dir():
            assert int(attr(SYS / name, "object_size")) == kmalloc.kmalloc_size(index)
        tally("cases")


def test_kmalloc_cache_geometry_matches_the_spec():
    _boot_params()
    if not SYS.is_dir():
        pytest.skip("/sys/kernel/slab is not available")
    cfg = SlubConfig("live", preset("x86_64-1g-cma"), nr_cpus=present_cpus())
    state = kmalloc.init(kmalloc.KmallocConfig(cfg, tuple(_families(_slabinfo_names()))))
    for name, s in state.slub.caches.items():
        d = SYS / name
        if not d.is_dir() or any(attr(d, a) == "1" for a in ("red_zone", "poison", "sanity_checks")):
            continue
        live = tuple(int(attr(d, a)) for a in ("slab_size", "align", "order", "objs_per_slab", "min_partial"))
        assert live == (s.size, s.align, s.order, s.objects, s.min_partial), name
        tally("cases")
