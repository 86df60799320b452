"""Slab geometry: how SLUB sizes a cache's objects and slabs (mm/slub.c ``calculate_sizes``,
``calculate_order``, mm/slab_common.c ``calculate_alignment``).

A cache's layout is pure arithmetic on its object size, alignment, flags and the machine's
CPU count, so it lives apart from the allocator's state machine in :mod:`spec.slub` (which
re-exports every name here).

The object size is rounded up to a pointer, then to the cache's alignment
(:func:`calculate_alignment`: at least 8 bytes; with ``SLAB_HWCACHE_ALIGN`` the cache line,
halved while the object fits twice).  The slab order is the smallest order, from the one that
holds ``min_objects = 4 * (fls(nr_cpus) + 1)`` objects (:func:`min_objects_for`) up to
``slab_max_order`` (3), whose leftover is at most 1/16 of the slab, else 1/8, 1/4, 1/2
(:func:`calc_slab_order`, :func:`calculate_order`).  Every helper uses plain operators (and the
``_if``/``_udiv``/``_urem`` shim), so ``proofs/slub.py`` runs these very functions on z3 values.

>>> calculate_order(192), order_objects(0, 192), leftover(0, 192)
(0, 21, 64)
>>> calculate_alignment(frozenset({"HWCACHE_ALIGN"}), 0, 24)
32
"""

from __future__ import annotations

from spec.zone import PAGE_ALLOC_COSTLY_ORDER, PAGE_SHIFT, PAGE_SIZE

PAGE_OFFSET = 0xFFFF888000000000  # Documentation/arch/x86/x86_64/mm.rst: the direct map (4-level, no KASLR)
WORD = 8  # sizeof(void *) on x86-64
CACHE_LINE = 64  # cache_line_size() on x86-64
ARCH_SLAB_MINALIGN = 8  # __alignof__(unsigned long long)
MAX_OBJS_PER_PAGE = 32767  # mm/slub.c: slab->objects is 15 bits
SLAB_MAX_ORDER = PAGE_ALLOC_COSTLY_ORDER  # mm/slub.c: slab_max_order default (1 with SLUB_TINY)


def _if(cond, a, b):
    """``cond ? a : b``; on z3 values, ``z3.If``."""
    if isinstance(cond, bool):
        return a if cond else b
    import z3  # only reached with symbolic values

    bits = next((x.size() for x in (a, b) if isinstance(x, z3.BitVecRef)), 64)
    a = z3.BitVecVal(a, bits) if isinstance(a, int) else a
    b = z3.BitVecVal(b, bits) if isinstance(b, int) else b
    return z3.If(cond, a, b)


def _udiv(a, b):
    """Unsigned division on ints or z3 bit-vectors."""
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    import z3

    return z3.UDiv(a, b)


def _urem(a, b):
    """Unsigned remainder on ints or z3 bit-vectors."""
    if isinstance(a, int) and isinstance(b, int):
        return a % b
    import z3

    return z3.URem(a, b)


def fls(x, bits: int = 32):
    """``fls()``: the 1-based index of the highest set bit, 0 for 0.

    >>> fls(0), fls(1), fls(2), fls(4), fls(5)
    (0, 1, 2, 3, 3)
    """
    n = 0
    for k in range(bits):
        n = _if(x >= (1 << k), k + 1, n)
    return n


def get_order(size, top: int = 20):
    """``get_order()``: the smallest order whose block of pages holds ``size`` bytes (size >= 1,
    size <= PAGE_SIZE << top).

    Contract:

    ```text
    pre: top in (20, 24) and 1 <= size <= PAGE_SIZE << top
    post: (PAGE_SIZE << __return__) >= size
    post: __return__ == 0 or (PAGE_SIZE << (__return__ - 1)) < size
    ```
    """
    order = 0
    for k in range(top):
        order = _if((PAGE_SIZE << k) < size, k + 1, order)
    return order


def order_objects(order, size):
    """``order_objects()``: objects of ``size`` bytes in a slab of 2^order pages."""
    return _udiv(PAGE_SIZE << order, size)


def leftover(order, size):
    """Bytes at the end of a slab of 2^order pages that no object uses."""
    return _urem(PAGE_SIZE << order, size)


def calc_slab_order(size, min_order, max_order: int, fraction: int):
    """``calc_slab_order()``: the first order in ``[min_order, max_order]`` whose leftover is at
    most 1/``fraction`` of the slab, or ``max_order + 1`` if none is."""
    order = max_order + 1
    for k in range(max_order, -1, -1):
        fits = leftover(k, size) <= _udiv(PAGE_SIZE << k, fraction)
        order = _if(k >= min_order, _if(fits, k, order), order)
    return order


def min_objects_for(nr_cpus: int, slab_min_objects: int = 0) -> int:
    """``calculate_order()``'s target: ``slab_min_objects=`` or 4 * (fls(nr_cpus) + 1).

    >>> min_objects_for(2), min_objects_for(4), min_objects_for(64)
    (12, 16, 32)
    """
    return slab_min_objects or 4 * (fls(nr_cpus) + 1)


def calculate_order(size, min_objects: int = 12, slab_max_order: int = SLAB_MAX_ORDER, slab_min_order: int = 0):
    """``calculate_order()`` (mm/slub.c, the form since Linux 6.8): the slab order for objects
    of ``size`` bytes.  ``min_objects`` comes from :func:`min_objects_for`.

    >>> tuple(calculate_order(s) for s in (8, 192, 512, 1024, 2048, 4096, 8192))
    (0, 0, 1, 2, 3, 3, 3)
    >>> calculate_order(832, min_objects=16)
    2

    Contract:

    ```text
    pre: 8 <= size <= 2 ** 20 and 1 <= min_objects <= 64
    pre: 0 <= slab_min_order <= slab_max_order <= 3
    post: 0 <= __return__ <= 10
    ```
    """
    max_objects = order_objects(slab_max_order, size)
    max_objects = _if(max_objects > 1, max_objects, 1)
    min_objects = _if(max_objects < min_objects, max_objects, min_objects)
    want = get_order(min_objects * size, 24)
    min_order = _if(want > slab_min_order, want, slab_min_order)
    too_many = order_objects(min_order, size) > MAX_OBJS_PER_PAGE
    result = get_order(size, 24)  # no fraction fits within slab_max_order: one object, lowest order
    for fraction in (2, 4, 8, 16):  # evaluated in reverse: 16 wins over 8 wins over ...
        order = calc_slab_order(size, min_order, slab_max_order, fraction)
        result = _if(order <= slab_max_order, order, result)
    return _if(too_many, get_order(size * MAX_OBJS_PER_PAGE, 24) - 1, result)


def align_up(x, a):
    """``ALIGN(x, a)`` for a power of two ``a``."""
    return (x + a - 1) & ~(a - 1)


def calculate_alignment(flags, align: int, size: int) -> int:
    """``calculate_alignment()``: the cache's object alignment.

    >>> calculate_alignment({"HWCACHE_ALIGN"}, 0, 24), calculate_alignment({"HWCACHE_ALIGN"}, 0, 200), calculate_alignment((), 0, 3)
    (32, 64, 8)
    """
    if "HWCACHE_ALIGN" in flags:
        ralign = CACHE_LINE
        while size <= ralign // 2:
            ralign //= 2
        align = max(align, ralign)
    align = max(align, ARCH_SLAB_MINALIGN)
    return align_up(align, WORD)


def object_address(slab_base, index, size, red_left_pad):
    """The address of object ``index`` of a slab at ``slab_base`` (``fixup_red_left()``)."""
    return slab_base + red_left_pad + index * size


def pfn_to_virt(pfn):
    """``page_address()``: the direct-map address of a page frame."""
    return PAGE_OFFSET + (pfn << PAGE_SHIFT)


def ilog2(x: int) -> int:
    return x.bit_length() - 1
