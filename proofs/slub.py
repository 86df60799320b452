"""Theorems about SLUB's geometry (spec/slub.py).

They run the spec's own :func:`spec.slub.calculate_order`, :func:`~spec.slub.get_order`,
:func:`~spec.slub.order_objects` and :func:`~spec.slub.object_address` on 64-bit z3
bit-vectors, for every object size up to 1 MiB and every ``min_objects`` a CPU count can
give (``4 * (fls(nr_cpus) + 1)`` for 1..8192 CPUs is 8..56, and ``slab_min_objects=`` up to
64), so they hold for all of them, not for a sample.  A bounded theorem explores every history
of a few SLUB operations on a toy machine and checks every ``inv_*`` in every state.
"""

from __future__ import annotations


import z3

from proofs._z3 import ProofResult, prove, registry
from proofs._z3 import explore as explore_histories
from spec import slub
from spec.zone import MAX_PAGE_ORDER, PAGE_SIZE

THEOREMS, theorem = registry()

size, min_objects, order, index, base, align = z3.BitVecs("size min_objects order index base align", 64)
PREMISES = (z3.ULE(8, size), z3.ULE(size, 1 << 20), z3.ULE(1, min_objects), z3.ULE(min_objects, 64))


@theorem("calculate_order() returns an order in 0..MAX_PAGE_ORDER for every object size 8 B..1 MiB and every min_objects 1..64.")
def thm_order_in_range() -> ProofResult:
    o = slub.calculate_order(size, min_objects)
    return prove(z3.And(z3.ULE(0, o), z3.ULE(o, MAX_PAGE_ORDER)), PREMISES)


@theorem("A slab of the order calculate_order() picks holds at least one object.")
def thm_order_holds_an_object() -> ProofResult:
    o = slub.calculate_order(size, min_objects)
    return prove(z3.UGE(slub.order_objects(o, size), 1), PREMISES)


@theorem("Whenever calculate_order() returns an order <= slab_max_order, its leftover is at most half the slab (the weakest fraction it tries); for objects up to 512 B it meets the 1/16 fraction.")
def thm_leftover_meets_fraction() -> ProofResult:
    o = slub.calculate_order(size, min_objects)
    waste = slub.leftover(o, size)
    claim = z3.And(
        z3.Implies(z3.ULE(o, slub.SLAB_MAX_ORDER), z3.ULE(waste * 2, PAGE_SIZE << o)),
        z3.Implies(z3.ULE(size, 512), z3.ULE(waste * 16, PAGE_SIZE << o)),
    )
    return prove(claim, PREMISES)


@theorem("get_order(n) is the smallest order whose block holds n bytes, for every n in 1..4 GiB.")
def thm_get_order_smallest() -> ProofResult:
    n = size
    o = slub.get_order(n)
    claim = z3.And(z3.UGE(PAGE_SIZE << o, n), z3.Or(o == 0, z3.ULT(PAGE_SIZE << (o - 1), n)))
    return prove(claim, (z3.ULE(1, n), z3.ULE(n, 1 << 32)))


@theorem("Objects are aligned and in bounds: for every slab order 0..10, every power-of-two alignment 8 B..4 MiB, every stride that is a multiple of it, and every object index below order_objects(), the object's offset in the slab (red_left_pad + index * stride) is aligned and the object ends inside the slab; with the slab block aligned to its size, so is the address.")
def thm_objects_aligned_and_in_bounds() -> ProofResult:
    o, i, sz, a = z3.BitVecs("order index stride align", 32)
    slab_bytes = z3.BitVecVal(PAGE_SIZE, 32) << o
    rlp = a  # red_left_pad = ALIGN(sizeof(void *), align) = align, as align >= 8
    off = slub.object_address(0, i, sz, rlp)
    premises = (
        z3.ULE(o, MAX_PAGE_ORDER), z3.ULE(8, a), z3.ULE(a, 1 << 22), a & (a - 1) == 0, sz & (a - 1) == 0,
        z3.ULE(8, sz), z3.ULE(sz, 1 << 22), z3.ULT(i, slub.order_objects(o, sz + rlp)), z3.ULE(sz + rlp, slab_bytes),
    )
    claim = z3.And(off & (a - 1) == 0, z3.ULE(off - rlp + sz, slab_bytes))
    return prove(claim, premises)


# ---------------------------------------------------------------------------------------------
# Bounded: every history of N operations keeps every invariant.

INVARIANTS = [getattr(slub, n) for n in dir(slub) if n.startswith("inv_")]
TINY = slub.SlubConfig("bounded", slub.preset("toy-64"), nr_cpus=2, slab_max_order=0)


def _successors(state):
    for name in ("x",) if "x" not in state.caches else ():
        yield slub.kmem_cache_create(state, name, 1024)[0]
    for cpu in range(state.config.nr_cpus if "x" in state.caches else 0):
        try:
            yield slub.kmem_cache_alloc(state, "x", cpu)[0]
        except slub.ENOMEM:
            pass
        for pfn, sl in state.slabs.items():
            s = state.caches[sl.cache]
            held = {i for c in state.cpus[sl.cache] if c.slab == pfn for i in c.freelist}
            for i in range(sl.objects):
                if i not in sl.freelist and i not in held:
                    addr = slub.object_address(slub.pfn_to_virt(pfn), i, s.size, s.red_left_pad)
                    yield slub.kmem_cache_free(state, "x", addr, cpu)[0]
    if "x" in state.caches:
        yield slub.kmem_cache_shrink(state, "x")[0]


def explore(depth: int) -> ProofResult:
    """Breadth-first search over all histories of up to ``depth`` operations on one cache of
    1 KiB objects (4 per slab) with two CPUs."""
    return explore_histories(slub.init(TINY), _successors, INVARIANTS, slub.render, depth)


@theorem("Bounded: every history of up to N kmem_cache_create/alloc/free/shrink operations (N = 9 quick, 10 default, 11 thorough) on two CPUs and one cache of four 1 KiB objects per slab keeps every inv_* invariant.")
def thm_bounded_histories() -> ProofResult:
    from mmspec.profiles import by_profile

    return explore(by_profile(9, 10, 11))
