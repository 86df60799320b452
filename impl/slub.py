"""SLUB on arrays: the fast twin of :mod:`spec.slub`.

:class:`SlubAllocator` makes exactly the spec's choices (which slab becomes the cpu slab, which
object is popped, which slabs go to which partial list and in what order, which slab is
discarded to the buddy allocator and when) and raises the same typed errors, so that
``abstract()`` equals the spec's state after every operation.  The cache geometry formulas
(``cache_geometry``, ``calculate_order``) are imported from the spec; the algorithms are
re-implemented as numba kernels over the arrays below, and the slabs come from
:class:`impl.buddy.BuddyAllocator` (whose kernels the slab kernels call directly).

``slabs[slot, column]`` (int64): one row per slab (``struct slab``)
    its pfn, cache, order, objects, ``inuse``, ``frozen``; the head, tail and length of its
    freelist; the links of the node partial list (doubly linked, so removing a slab is O(1)),
    whether it is on that list, and the link of a per-CPU partial list (a stack).  Free rows
    are chained through the ``next`` column.
``objs[slot, index]`` (int16; int32 for slabs of more than 32767 objects): the freelist
    itself, as Linux keeps it inside the free objects: the index of the next free object, -1
    at the end, ``IN_USE`` (-2) for an object on no freelist.  So "is this object free"
    (``on_freelist()``) is one load.
``cpus[cache, cpu, column]`` (int64): ``kmem_cache_cpu``: the cpu slab, the head, tail and
    length of the cpu freelist (always objects of the cpu slab), the per-CPU partial stack.
``params[cache, column]`` (int64): the geometry the kernels need, and the node partial list.
``page_slot[pfn]`` (int32): the slab row of every page of a slab (``virt_to_slab()``), -1.

Batched operations: :meth:`alloc_many`, :meth:`free_many` (and ``simulate`` in
:mod:`impl.kmalloc`) run inside one kernel call; anything unusual (a debug cache, a bad
pointer, an error) goes back to the Python operation for that one element, which raises the
typed error with the spec's message.

>>> a = SlubAllocator("toy")
>>> a.kmem_cache_create("dentry", 192)
'dentry'
>>> hex(a.kmem_cache_alloc("dentry", 0))
'0xffff888000000000'
>>> from spec import slub
>>> s = slub.kmem_cache_create(slub.init("toy"), "dentry", 192)[0]
>>> a.abstract() == slub.kmem_cache_alloc(s, "dentry", 0)[0]
True
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np
from immutables import Map

from impl import bugs
from impl.buddy import _GFP_INDEX, BuddyAllocator, _alloc_pages, _free_pages, kernel
from impl.bugs import Defect
from spec import slub as spec_slub
from spec.errors import EBUSY, EFAULT, EINVAL, ENOMEM, DoubleFree, InvalidObjectPointer, SlabCorruption, WrongSlabCache
from spec.slub import (
    MAX_OBJS_PER_PAGE,
    PAGE_OFFSET,
    SHRINK_PROMOTE_MAX,
    WORD,
    CpuSlab,
    Slab,
    SlubConfig,
    SlubState,
    align_up,
    cache_geometry,
    slub_preset,
)
from spec.zone import PAGE_SHIFT, PAGE_SIZE

__all__ = ["SlubAllocator", "DEFECTS"]
_CATCH = "mmspec.mechanisms.slub:catch"
DEFECTS = (
    Defect(
        "slub-debug-double-free-missed",
        "slub",
        "With slab_debug=F the free path's on_freelist() looks only at the head of the slab's "
        "freelist (the hardened naive check), so freeing an object that is free but not the head "
        "is accepted: it is linked twice and later handed out twice.",
        "teaching defect",
        _CATCH,
    ),
    Defect(
        "slub-freelist-loses-object",
        "slub",
        "The fast-path free (do_slab_free() onto the cpu freelist) links the freed object to the "
        "second free object instead of the head (set_freepointer(object, get_freepointer(head))): "
        "the old head drops off the freelist, is never handed out again, and its slab never "
        "becomes empty.",
        "teaching defect",
        _CATCH,
    ),
)

# ---------------------------------------------------------------------------------------------
# Layout

# slabs[slot, ...]
S_PFN, S_CACHE, S_ORDER, S_OBJECTS, S_INUSE, S_FROZEN, S_HEAD, S_TAIL, S_NFREE = range(9)
S_NEXT, S_PREV, S_ONNODE, S_CPNEXT = range(9, 13)
S_COLUMNS = 13
# cpus[cache, cpu, ...]
C_SLAB, C_HEAD, C_TAIL, C_COUNT, C_PHEAD, C_PCOUNT = range(6)
C_COLUMNS = 6
# params[cache, ...]
P_SIZE, P_RLP, P_ORDER, P_MIN_ORDER, P_MIN_PARTIAL, P_CPS, P_GFP, P_DEBUG = range(8)
P_NHEAD, P_NTAIL, P_NCOUNT = range(8, 11)
P_COLUMNS = 11
# meta[...]
M_FREE_SLOT, M_NR_FREE_SLOTS, M_DEFECTS, M_NR_CPUS = range(4)

IN_USE = -2  # objs[] of an object on no freelist
NO_MEM, NO_SLOT = -1, -2  # what an allocation kernel returns instead of a slot
D_LOSES_OBJECT = 1  # slub-freelist-loses-object


# ---------------------------------------------------------------------------------------------
# Slabs and lists


@kernel
def _new_slab(pages, pbmt, lists, zones, bcfg, gfp, slabs, objs, params, page_slot, meta, k):
    """``allocate_slab()``: the cache's order, else its minimum order; a free row must exist.
    The slot, or NO_MEM with nothing changed."""
    order = params[k, P_ORDER]
    pfn = _alloc_pages(pages, pbmt, lists, zones, bcfg, gfp, order, params[k, P_GFP])
    if pfn < 0:
        order = params[k, P_MIN_ORDER]
        pfn = _alloc_pages(pages, pbmt, lists, zones, bcfg, gfp, order, params[k, P_GFP])
        if pfn < 0:
            return NO_MEM
    j = meta[M_FREE_SLOT]
    meta[M_FREE_SLOT] = slabs[j, S_NEXT]
    meta[M_NR_FREE_SLOTS] -= 1
    n = (PAGE_SIZE << order) // params[k, P_SIZE]
    slabs[j, S_PFN], slabs[j, S_CACHE], slabs[j, S_ORDER], slabs[j, S_OBJECTS] = pfn, k, order, n
    slabs[j, S_INUSE], slabs[j, S_FROZEN] = 0, 0
    slabs[j, S_HEAD], slabs[j, S_TAIL], slabs[j, S_NFREE] = 0, n - 1, n
    slabs[j, S_NEXT], slabs[j, S_PREV], slabs[j, S_ONNODE], slabs[j, S_CPNEXT] = -1, -1, 0, -1
    for i in range(n - 1):
        objs[j, i] = i + 1
    objs[j, n - 1] = -1
    for p in range(pfn, pfn + (1 << order)):
        page_slot[p] = j
    return j


@kernel
def _discard(pages, pbmt, lists, zones, bcfg, slabs, page_slot, meta, j):
    """``discard_slab()``: the pages back to the buddy allocator, the row to the free rows."""
    pfn, order = slabs[j, S_PFN], slabs[j, S_ORDER]
    for p in range(pfn, pfn + (1 << order)):
        page_slot[p] = -1
    _free_pages(pages, pbmt, lists, zones, bcfg, pfn, order)
    slabs[j, S_CACHE] = -1
    slabs[j, S_NEXT] = meta[M_FREE_SLOT]
    meta[M_FREE_SLOT] = j
    meta[M_NR_FREE_SLOTS] += 1


@kernel
def _node_add(slabs, params, k, j, tail):
    """``add_partial()`` at the tail or the head of the node partial list."""
    slabs[j, S_ONNODE] = 1
    if params[k, P_NCOUNT] == 0:
        slabs[j, S_NEXT], slabs[j, S_PREV] = -1, -1
        params[k, P_NHEAD], params[k, P_NTAIL] = j, j
    elif tail:
        t = params[k, P_NTAIL]
        slabs[t, S_NEXT], slabs[j, S_PREV], slabs[j, S_NEXT] = j, t, -1
        params[k, P_NTAIL] = j
    else:
        h = params[k, P_NHEAD]
        slabs[h, S_PREV], slabs[j, S_NEXT], slabs[j, S_PREV] = j, h, -1
        params[k, P_NHEAD] = j
    params[k, P_NCOUNT] += 1


@kernel
def _node_remove(slabs, params, k, j):
    """``remove_partial()``."""
    nxt, prv = slabs[j, S_NEXT], slabs[j, S_PREV]
    if prv >= 0:
        slabs[prv, S_NEXT] = nxt
    else:
        params[k, P_NHEAD] = nxt
    if nxt >= 0:
        slabs[nxt, S_PREV] = prv
    else:
        params[k, P_NTAIL] = prv
    slabs[j, S_NEXT], slabs[j, S_PREV], slabs[j, S_ONNODE] = -1, -1, 0
    params[k, P_NCOUNT] -= 1


@kernel
def _push(slabs, objs, j, index):
    """Push a free object on the slab's own freelist."""
    if slabs[j, S_NFREE] == 0:
        objs[j, index] = -1
        slabs[j, S_TAIL] = index
    else:
        objs[j, index] = slabs[j, S_HEAD]
    slabs[j, S_HEAD] = index
    slabs[j, S_NFREE] += 1


@kernel
def _put_partials(pages, pbmt, lists, zones, bcfg, slabs, params, page_slot, meta, k, head):
    """``__put_partials()``: a per-CPU partial stack to the node tail; empty slabs beyond
    ``min_partial`` are discarded afterwards, last seen first."""
    d = -1
    p = head
    while p >= 0:
        nxt = slabs[p, S_CPNEXT]
        if slabs[p, S_INUSE] == 0 and params[k, P_NCOUNT] >= params[k, P_MIN_PARTIAL]:
            slabs[p, S_CPNEXT] = d
            d = p
        else:
            slabs[p, S_CPNEXT] = -1
            _node_add(slabs, params, k, p, True)
        p = nxt
    while d >= 0:
        nxt = slabs[d, S_CPNEXT]
        slabs[d, S_CPNEXT] = -1
        _discard(pages, pbmt, lists, zones, bcfg, slabs, page_slot, meta, d)
        d = nxt


@kernel
def _put_cpu_partial(pages, pbmt, lists, zones, bcfg, slabs, cpus, params, page_slot, meta, k, cpu, j, drain):
    """``put_cpu_partial()``."""
    if drain and cpus[k, cpu, C_PCOUNT] > 0 and cpus[k, cpu, C_PCOUNT] >= params[k, P_CPS]:
        old = cpus[k, cpu, C_PHEAD]
        slabs[j, S_CPNEXT] = -1
        cpus[k, cpu, C_PHEAD], cpus[k, cpu, C_PCOUNT] = j, 1
        _put_partials(pages, pbmt, lists, zones, bcfg, slabs, params, page_slot, meta, k, old)
    else:
        slabs[j, S_CPNEXT] = cpus[k, cpu, C_PHEAD]
        cpus[k, cpu, C_PHEAD] = j
        cpus[k, cpu, C_PCOUNT] += 1


@kernel
def _flush_cpu(pages, pbmt, lists, zones, bcfg, slabs, objs, cpus, params, page_slot, meta, k, cpu):
    """``__flush_cpu_slab()``: ``deactivate_slab()`` of the cpu slab, then the partial stack."""
    j = cpus[k, cpu, C_SLAB]
    head, tail, count = cpus[k, cpu, C_HEAD], cpus[k, cpu, C_TAIL], cpus[k, cpu, C_COUNT]
    phead = cpus[k, cpu, C_PHEAD]
    cpus[k, cpu, C_SLAB], cpus[k, cpu, C_HEAD], cpus[k, cpu, C_TAIL] = -1, -1, -1
    cpus[k, cpu, C_COUNT], cpus[k, cpu, C_PHEAD], cpus[k, cpu, C_PCOUNT] = 0, -1, 0
    if j >= 0:
        to_tail = slabs[j, S_NFREE] > 0
        if count > 0:  # the cpu freelist goes in front of the slab's
            objs[j, tail] = slabs[j, S_HEAD] if slabs[j, S_NFREE] > 0 else -1
            if slabs[j, S_NFREE] == 0:
                slabs[j, S_TAIL] = tail
            slabs[j, S_HEAD] = head
            slabs[j, S_NFREE] += count
        slabs[j, S_INUSE] -= count
        slabs[j, S_FROZEN] = 0
        if slabs[j, S_INUSE] == 0 and params[k, P_NCOUNT] >= params[k, P_MIN_PARTIAL]:
            _discard(pages, pbmt, lists, zones, bcfg, slabs, page_slot, meta, j)
        elif slabs[j, S_NFREE] > 0:
            _node_add(slabs, params, k, j, to_tail)
    _put_partials(pages, pbmt, lists, zones, bcfg, slabs, params, page_slot, meta, k, phead)


@kernel
def _load(slabs, objs, cpus, k, cpu, j):
    """``get_freelist()`` + ``load_freelist:``: the slab's whole freelist becomes the cpu
    freelist of cpu slab ``j``, minus its head, which is returned."""
    head, tail, count = slabs[j, S_HEAD], slabs[j, S_TAIL], slabs[j, S_NFREE]
    slabs[j, S_HEAD], slabs[j, S_TAIL], slabs[j, S_NFREE] = -1, -1, 0
    slabs[j, S_INUSE], slabs[j, S_FROZEN] = slabs[j, S_OBJECTS], 1
    nxt = objs[j, head]
    objs[j, head] = IN_USE
    cpus[k, cpu, C_SLAB], cpus[k, cpu, C_HEAD], cpus[k, cpu, C_COUNT] = j, nxt, count - 1
    cpus[k, cpu, C_TAIL] = tail if count > 1 else -1
    return head


@kernel
def _slab_alloc(pages, pbmt, lists, zones, bcfg, gfp, slabs, objs, cpus, params, page_slot, meta, k, cpu):
    """``slab_alloc_node()``: (slot, index), or (NO_MEM or NO_SLOT, 0) with nothing changed."""
    j = cpus[k, cpu, C_SLAB]
    if j >= 0 and cpus[k, cpu, C_COUNT] > 0:  # the fast path
        index = cpus[k, cpu, C_HEAD]
        cpus[k, cpu, C_HEAD] = objs[j, index]
        objs[j, index] = IN_USE
        cpus[k, cpu, C_COUNT] -= 1
        if cpus[k, cpu, C_COUNT] == 0:
            cpus[k, cpu, C_TAIL] = -1
        return j, index
    return ___slab_alloc(pages, pbmt, lists, zones, bcfg, gfp, slabs, objs, cpus, params, page_slot, meta,
                         k, cpu)


@kernel
def ___slab_alloc(pages, pbmt, lists, zones, bcfg, gfp, slabs, objs, cpus, params, page_slot, meta,
                  k, cpu):
    """``___slab_alloc()``, the slow path (a separate function keeps the fast path small where
    it is inlined into a batch loop)."""
    j = cpus[k, cpu, C_SLAB]
    if j >= 0 and slabs[j, S_NFREE] > 0:  # remote frees to the cpu slab
        return j, _load(slabs, objs, cpus, k, cpu, j)
    fresh = -1
    if cpus[k, cpu, C_PCOUNT] == 0 and params[k, P_NCOUNT] == 0:  # new_slab() first: it may fail
        if meta[M_NR_FREE_SLOTS] == 0:
            return NO_SLOT, 0
        fresh = _new_slab(pages, pbmt, lists, zones, bcfg, gfp, slabs, objs, params, page_slot, meta, k)
        if fresh < 0:
            return NO_MEM, 0
    if j >= 0:  # full: untracked
        slabs[j, S_INUSE], slabs[j, S_FROZEN] = slabs[j, S_OBJECTS], 0
        cpus[k, cpu, C_SLAB], cpus[k, cpu, C_HEAD] = -1, -1
        cpus[k, cpu, C_TAIL], cpus[k, cpu, C_COUNT] = -1, 0
    if cpus[k, cpu, C_PCOUNT] > 0:
        j = cpus[k, cpu, C_PHEAD]
        cpus[k, cpu, C_PHEAD] = slabs[j, S_CPNEXT]
        cpus[k, cpu, C_PCOUNT] -= 1
        slabs[j, S_CPNEXT] = -1
    elif fresh < 0:  # get_partial_node()
        j = -1
        moved = 0
        while params[k, P_NCOUNT] > 0:
            p = params[k, P_NHEAD]
            _node_remove(slabs, params, k, p)
            if j < 0:
                j = p
                if params[k, P_CPS] == 0:
                    break
            else:
                _put_cpu_partial(pages, pbmt, lists, zones, bcfg, slabs, cpus, params, page_slot, meta,
                                 k, cpu, p, False)
                moved += 1
                if moved > params[k, P_CPS] // 2:
                    break
    else:
        j = fresh
    return j, _load(slabs, objs, cpus, k, cpu, j)


@kernel
def _slab_free(pages, pbmt, lists, zones, bcfg, slabs, objs, cpus, params, page_slot, meta, k, cpu, j, index):
    """``do_slab_free()`` of a live object of a cache with cpu slabs."""
    if cpus[k, cpu, C_SLAB] == j:  # the fast path
        count = cpus[k, cpu, C_COUNT]
        if count > 0 and meta[M_DEFECTS] & D_LOSES_OBJECT:
            old = cpus[k, cpu, C_HEAD]  # linked past the old head, which is lost
            objs[j, index] = objs[j, old]
            objs[j, old] = IN_USE
            cpus[k, cpu, C_HEAD] = index
            if cpus[k, cpu, C_TAIL] == old:
                cpus[k, cpu, C_TAIL] = index
            return
        objs[j, index] = cpus[k, cpu, C_HEAD] if count > 0 else -1
        if count == 0:
            cpus[k, cpu, C_TAIL] = index
        cpus[k, cpu, C_HEAD] = index
        cpus[k, cpu, C_COUNT] = count + 1
        return
    __slab_free(pages, pbmt, lists, zones, bcfg, slabs, objs, cpus, params, page_slot, meta, k, cpu, j, index)


@kernel
def __slab_free(pages, pbmt, lists, zones, bcfg, slabs, objs, cpus, params, page_slot, meta,
                k, cpu, j, index):
    """``__slab_free()``: an object of a slab that is not this CPU's cpu slab."""
    prior = slabs[j, S_NFREE] > 0
    _push(slabs, objs, j, index)
    slabs[j, S_INUSE] -= 1
    if slabs[j, S_FROZEN]:
        return  # another CPU's cpu slab: a remote free
    if not prior:  # was full
        _put_cpu_partial(pages, pbmt, lists, zones, bcfg, slabs, cpus, params, page_slot, meta,
                         k, cpu, j, True)
        return
    if not slabs[j, S_ONNODE]:
        return  # on some CPU's partial list
    if slabs[j, S_INUSE] == 0 and params[k, P_NCOUNT] >= params[k, P_MIN_PARTIAL]:
        _node_remove(slabs, params, k, j)
        _discard(pages, pbmt, lists, zones, bcfg, slabs, page_slot, meta, j)


@kernel
def _object_of(slabs, objs, params, page_slot, rel):
    """The (slot, index) of the live object of a cache with cpu slabs that starts ``rel`` bytes
    into the direct map, or (-1, 0) if it is anything else (no slab, an interior pointer, a free
    object, a debug cache)."""
    pfn = rel >> PAGE_SHIFT
    if rel < 0 or pfn >= page_slot.shape[0]:
        return -1, 0
    j = page_slot[pfn]
    if j < 0:
        return -1, 0
    k = slabs[j, S_CACHE]
    off = rel - (slabs[j, S_PFN] << PAGE_SHIFT) - params[k, P_RLP]
    size = params[k, P_SIZE]
    index = off // size
    if params[k, P_DEBUG] or off < 0 or index * size != off:
        return -1, 0
    if index >= slabs[j, S_OBJECTS] or objs[j, index] != IN_USE:
        return -1, 0
    return j, index


@kernel
def _alloc_many(pages, pbmt, lists, zones, bcfg, gfp, slabs, objs, cpus, params, page_slot, meta,
                k, cpu, out, start):
    """Allocations into ``out[start:]`` (offsets into the direct map); (index, NO_MEM or
    NO_SLOT) where it stopped, or (len, 0)."""
    for i in range(start, out.shape[0]):
        j, index = _slab_alloc(pages, pbmt, lists, zones, bcfg, gfp, slabs, objs, cpus, params, page_slot,
                               meta, k, cpu)
        if j < 0:
            return i, j
        out[i] = (slabs[j, S_PFN] << PAGE_SHIFT) + params[k, P_RLP] + index * params[k, P_SIZE]
    return out.shape[0], 0


@kernel
def _free_many(pages, pbmt, lists, zones, bcfg, slabs, objs, cpus, params, page_slot, meta, rels, cpu, start):
    """Frees of ``rels[start:]`` (offsets into the direct map) to their own caches; the index of
    the first one that is not a plain live object, or len."""
    for i in range(start, rels.shape[0]):
        j, index = _object_of(slabs, objs, params, page_slot, rels[i])
        if j < 0:
            return i
        _slab_free(pages, pbmt, lists, zones, bcfg, slabs, objs, cpus, params, page_slot, meta,
                   slabs[j, S_CACHE], cpu, j, index)
    return rels.shape[0]


# numba's on-disk cache is keyed on the file of each kernel only, but these kernels have the
# kernels of impl.buddy and constants of the spec compiled into them: a checksum of those,
# frozen into a kernel, tells at import whether the cached code is stale.


def dependencies_checksum(modules, constants) -> int:
    """A checksum of the source files of ``modules``, of impl.buddy's constants and of
    ``constants``."""
    import impl.buddy as buddy

    data = b"".join(open(m.__file__, "rb").read() for m in (buddy, *modules))
    return zlib.crc32(data + repr((buddy._constants_fingerprint.py_func(), constants)).encode())


def drop_stale_cache(fingerprint, namespace: dict) -> None:
    """Throw away the cached code of every kernel defined in the module of ``namespace`` if the
    cached ``fingerprint()`` is not what it computes now."""
    if fingerprint() == fingerprint.py_func():
        return
    for obj in list(namespace.values()):
        own = getattr(getattr(obj, "py_func", None), "__module__", None) == namespace["__name__"]
        if own and getattr(obj, "_cache", None) is not None:
            obj._cache.flush()


_DEPENDENCIES = dependencies_checksum((), (PAGE_SIZE, PAGE_SHIFT))


@kernel
def _fingerprint():
    return _DEPENDENCIES


drop_stale_cache(_fingerprint, globals())


def _walk(objs_row, head: int, count: int) -> tuple:
    """A freelist from its head, ``count`` objects."""
    out = []
    for _ in range(count):
        out.append(head)
        head = int(objs_row[head])
    return tuple(out)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

class SlubAllocator:
    """The slab allocator on arrays; the same operations, results and errors as
    :mod:`spec.slub`.  ``SlubAllocator(config)`` boots like ``spec.slub.init(config)``."""

    def __init__(self, config: SlubConfig | str):
        cfg = slub_preset(config) if isinstance(config, str) else config
        spec_slub.init(cfg)  # validates, raises EINVAL like the spec
        self.config = cfg
        self.nr_cpus = cfg.nr_cpus
        self.buddy = BuddyAllocator(cfg.buddy)
        self.caches: dict = {}  # name -> spec.slub.KmemCache
        self.cache_list: list = []
        self.aliases: dict = {}
        self.cache_id: dict = {}  # name -> row of params and cpus
        self.cache_names: list = []  # row -> name (None once destroyed)
        self.params = np.zeros((0, P_COLUMNS), dtype=np.int64)
        self.cpus = np.zeros((0, self.nr_cpus, C_COLUMNS), dtype=np.int64)
        self.slabs = np.zeros((0, S_COLUMNS), dtype=np.int64)
        self.objs = np.zeros((0, 1), dtype=np.int16)
        self.page_slot = np.full(self.buddy.pages.shape[0], -1, dtype=np.int32)
        self.meta = np.array([-1, 0, 0, self.nr_cpus], dtype=np.int64)
        self.corrupt: dict = {}
        self._grow_slots(64)

    # -- arrays ---------------------------------------------------------------------------------

    def _grow_slots(self, extra: int) -> None:
        old = self.slabs.shape[0]
        cap = max(2 * old, old + extra, 64)
        slabs = np.zeros((cap, S_COLUMNS), dtype=np.int64)
        slabs[:old] = self.slabs
        slabs[old:, S_CACHE] = -1
        slabs[old:, S_NEXT] = np.arange(old + 1, cap + 1)
        slabs[cap - 1, S_NEXT] = self.meta[M_FREE_SLOT]
        self.meta[M_FREE_SLOT] = old
        self.meta[M_NR_FREE_SLOTS] += cap - old
        objs = np.empty((cap, self.objs.shape[1]), dtype=self.objs.dtype)  # a row is written by _new_slab
        objs[:old] = self.objs
        self.slabs, self.objs = slabs, objs

    def _ensure_slots(self, n: int = 1) -> None:
        if self.meta[M_NR_FREE_SLOTS] < n:
            self._grow_slots(n)

    def _ensure_stride(self, objects: int) -> None:
        if objects > self.objs.shape[1]:
            stride = max(objects, 2 * self.objs.shape[1])
            dtype = np.int16 if stride <= MAX_OBJS_PER_PAGE else np.int32
            objs = np.empty((self.objs.shape[0], stride), dtype=dtype)
            objs[:, : self.objs.shape[1]] = self.objs
            self.objs = objs

    def _sync(self) -> None:
        self.buddy._sync_defects()
        names = bugs.active_names()
        self.meta[M_DEFECTS] = D_LOSES_OBJECT if names and bugs.active("slub-freelist-loses-object") else 0

    def _b(self) -> tuple:
        b = self.buddy
        return b.pages, b.pageblock_mt, b.lists, b.zone_table, b.cfg

    def _gfp(self):
        return self.buddy.gfp_table

    def _arrays(self) -> tuple:
        """The slab arrays, in the order the kernels take them (``_flush_cpu`` and on)."""
        return self.slabs, self.objs, self.cpus, self.params, self.page_slot, self.meta

    # -- names ---------------------------------------------------------------------------------

    def _target(self, name) -> str:
        if not isinstance(name, str) or (name not in self.caches and name not in self.aliases):
            raise EINVAL(f"no slab cache named {name!r}")
        return self.aliases.get(name, name)

    def _check_cpu(self, cpu) -> None:
        if not _is_int(cpu) or not 0 <= cpu < self.nr_cpus:
            raise EINVAL(f"cpu {cpu!r} is outside 0..{self.nr_cpus - 1}")

    # -- cache creation -------------------------------------------------------------------------

    def kmem_cache_create(self, name: str, size: int, align: int = 0, flags=(), mergeable: bool = True) -> str:
        """``kmem_cache_create()``: the name of the cache that serves ``name``."""
        names_in_use = (self.caches, self.aliases)
        flags = spec_slub.check_cache_create(name, size, align, flags, self.config.slab_debug, names_in_use)
        target = spec_slub.find_mergeable(self, size, align, flags) if mergeable else None  # reads config, cache_list, caches
        if target is not None:
            s = self.caches[target]
            self.caches[target] = replace(s, refcount=s.refcount + 1, object_size=max(s.object_size, size),
                                          inuse=max(s.inuse, align_up(size, WORD)))
            self.aliases[name] = target
            return target
        s = cache_geometry(self.config, name, size, align, flags, 1 if mergeable else -1)
        if s.objects < 1 or s.min_order > self.buddy.max_order:
            raise EINVAL(f"objects of {s.size} bytes do not fit a slab of order <= {self.buddy.max_order}")
        self._ensure_stride(max(s.objects, (PAGE_SIZE << s.min_order) // s.size))
        k = len(self.cache_names)
        row = np.zeros(P_COLUMNS, dtype=np.int64)
        row[[P_SIZE, P_RLP, P_ORDER, P_MIN_ORDER, P_MIN_PARTIAL, P_CPS, P_GFP, P_DEBUG]] = (
            s.size, s.red_left_pad, s.order, s.min_order, s.min_partial, s.cpu_partial_slabs,
            _GFP_INDEX[s.gfp], s.debug)
        row[[P_NHEAD, P_NTAIL, P_NCOUNT]] = -1, -1, 0
        cpu_rows = np.zeros((1, self.nr_cpus, C_COLUMNS), dtype=np.int64)
        cpu_rows[..., [C_SLAB, C_HEAD, C_TAIL, C_PHEAD]] = -1
        self.params = np.concatenate([self.params, row[None]])
        self.cpus = np.concatenate([self.cpus, cpu_rows])
        self.cache_names.append(name)
        self.cache_id[name] = k
        self.caches[name] = s
        self.cache_list.append(name)
        return name

    # -- slabs ----------------------------------------------------------------------------------

    def _rows_of(self, k: int) -> np.ndarray:
        return np.flatnonzero(self.slabs[:, S_CACHE] == k)

    def _node_list(self, k: int) -> list:
        out, j = [], int(self.params[k, P_NHEAD])
        while j >= 0:
            out.append(j)
            j = int(self.slabs[j, S_NEXT])
        return out

    def _discard(self, j: int) -> None:
        pfn, order = int(self.slabs[j, S_PFN]), int(self.slabs[j, S_ORDER])
        _discard(*self._b(), self.slabs, self.page_slot, self.meta, j)
        if self.corrupt:
            base = PAGE_OFFSET + (pfn << PAGE_SHIFT)
            for a in [a for a in self.corrupt if base <= a < base + (PAGE_SIZE << order)]:
                del self.corrupt[a]

    def _flush_all(self, k: int) -> None:
        self._sync()
        for cpu in range(self.nr_cpus):
            _flush_cpu(*self._b(), *self._arrays(), k, cpu)

    # -- objects --------------------------------------------------------------------------------

    def _slot_of(self, addr) -> int:
        """The slab row whose pages hold ``addr``, or -1 (``virt_to_slab()``)."""
        if not _is_int(addr) or addr < PAGE_OFFSET:
            return -1
        pfn = (int(addr) - PAGE_OFFSET) >> PAGE_SHIFT
        return int(self.page_slot[pfn]) if pfn < self.page_slot.shape[0] else -1

    def _cache_of_slot(self, j: int) -> str:
        return self.cache_names[int(self.slabs[j, S_CACHE])]

    def _base(self, j: int) -> int:
        return PAGE_OFFSET + (int(self.slabs[j, S_PFN]) << PAGE_SHIFT)

    def _is_free(self, j: int, index: int) -> bool:
        return int(self.objs[j, index]) != IN_USE

    def _report(self, s, what: str) -> str:
        return f"BUG {s.name} (Not tainted): {what}"

    def _check_object(self, s, addr: int, active: bool) -> None:
        hit = self.corrupt.get(addr, frozenset())
        for what in ("Left Redzone", "Right Redzone") + (() if active else ("Poison",)):
            if what in hit:
                raise SlabCorruption(self._report(s, f"{what} overwritten") + f" (object 0x{addr:x})")

    def write(self, addr: int, length: int) -> None:
        """:func:`spec.slub.write`: record the guard areas a store hits."""
        if not _is_int(length) or length < 1:
            raise EINVAL(f"length {length!r} must be a positive integer")
        j = self._slot_of(addr)
        if j < 0 or self._slot_of(addr + length - 1) != j:
            raise EFAULT(f"bytes 0x{addr:x}+{length} are not inside one slab" if _is_int(addr) else f"bad address {addr!r}")
        s = self.caches[self._cache_of_slot(j)]
        base = self._base(j)
        first, last = (addr - base) // s.size, (addr + length - 1 - base) // s.size
        for k in range(first, min(last, int(self.slabs[j, S_OBJECTS]) - 1) + 1):
            obj = base + s.red_left_pad + k * s.size
            lo, hi = max(addr, obj - s.red_left_pad), min(addr + length, obj - s.red_left_pad + s.size)
            hit = set()
            if "RED_ZONE" in s.flags and lo < obj:
                hit.add("Left Redzone")
            if "RED_ZONE" in s.flags and lo < obj + s.inuse and hi > obj + s.object_size:
                hit.add("Right Redzone")
            if "POISON" in s.flags and lo < obj + s.object_size and hi > obj and self._is_free(j, k):
                hit.add("Poison")
            if hit:
                self.corrupt[obj] = self.corrupt.get(obj, frozenset()) | hit

    # -- allocation -----------------------------------------------------------------------------

    def _debug_alloc(self, s) -> int:
        k = self.cache_id[s.name]
        sl, objs = self.slabs, self.objs
        if self.params[k, P_NCOUNT]:
            j = int(self.params[k, P_NHEAD])
        else:
            self._ensure_slots()
            self._sync()
            sl, objs = self.slabs, self.objs
            j = _new_slab(*self._b(), self._gfp(), sl, objs, self.params, self.page_slot, self.meta, k)
            if j < 0:
                raise ENOMEM(f"no memory for a new slab of {s.name} (order {s.order} or {s.min_order})")
            _node_add(sl, self.params, k, j, False)
        index = int(sl[j, S_HEAD])
        addr = self._base(j) + s.red_left_pad + index * s.size
        if "CONSISTENCY_CHECKS" in s.flags:
            self._check_object(s, addr, active=False)
        sl[j, S_HEAD] = objs[j, index]
        objs[j, index] = IN_USE
        sl[j, S_NFREE] -= 1
        sl[j, S_INUSE] += 1
        if sl[j, S_NFREE] == 0:
            sl[j, S_TAIL] = -1
            _node_remove(sl, self.params, k, j)
        self.corrupt.pop(addr, None)
        return addr

    def _alloc_rel(self, s, cpu: int) -> int:
        """One allocation from a cache with cpu slabs: the offset into the direct map."""
        k = self.cache_id[s.name]
        self._sync()
        while True:
            j, index = _slab_alloc(*self._b(), self._gfp(), *self._arrays(), k, cpu)
            if j == NO_SLOT:
                self._grow_slots(1)
                continue
            if j == NO_MEM:
                raise ENOMEM(f"no memory for a new slab of {s.name} (order {s.order} or {s.min_order})")
            return (int(self.slabs[j, S_PFN]) << PAGE_SHIFT) + s.red_left_pad + int(index) * s.size

    def kmem_cache_alloc(self, name: str, cpu: int = 0) -> int:
        """``kmem_cache_alloc()`` on ``cpu``: the address of a free object."""
        s = self.caches[self._target(name)]
        self._check_cpu(cpu)
        if s.debug:
            return self._debug_alloc(s)
        return PAGE_OFFSET + self._alloc_rel(s, cpu)

    # -- free -----------------------------------------------------------------------------------

    def _check_free(self, s, addr, cpu: int):
        checks = "CONSISTENCY_CHECKS" in s.flags
        j = self._slot_of(addr)
        if j < 0:
            raise EINVAL(f"kmem_cache_free: 0x{addr:x} is not a slab object" if _is_int(addr) else f"bad address {addr!r}")
        cache = self._cache_of_slot(j)
        if cache != s.name:
            raise WrongSlabCache(f"kmem_cache_free: Wrong slab cache. {s.name} but object is from {cache}")
        off = addr - self._base(j) - s.red_left_pad
        quiet = "" if checks else " (not detected without slab_debug=F: the freelist would be corrupted)"
        if off < 0 or off % s.size or off // s.size >= self.slabs[j, S_OBJECTS]:
            raise InvalidObjectPointer(self._report(s, f"Invalid object pointer 0x{addr:x}") + quiet)
        index = int(off // s.size)
        free = self._is_free(j, index)
        if free and checks and bugs.active_names() and bugs.active("slub-debug-double-free-missed"):
            free = self.slabs[j, S_NFREE] > 0 and self.slabs[j, S_HEAD] == index  # only the head is looked at
        if free:
            k = self.cache_id[s.name]
            c = self.cpus[k, cpu]
            if c[C_SLAB] == j:
                head = c[C_COUNT] > 0 and c[C_HEAD] == index
            else:
                head = self.slabs[j, S_NFREE] > 0 and self.slabs[j, S_HEAD] == index
            if not checks and head:
                quiet = " (kernel BUG at mm/slub.c: set_freepointer() naive double-free detection)"
            raise DoubleFree(self._report(s, "Object already free") + f" (object 0x{addr:x})" + quiet)
        if checks:
            self._check_object(s, addr, active=True)
        return j, index

    def _debug_free(self, s, j: int, index: int) -> None:
        k = self.cache_id[s.name]
        sl = self.slabs
        prior = sl[j, S_NFREE] > 0
        _push(sl, self.objs, j, index)
        sl[j, S_INUSE] -= 1
        discard = sl[j, S_INUSE] == 0 and self.params[k, P_NCOUNT] >= s.min_partial
        if not prior and not discard:
            _node_add(sl, self.params, k, j, True)
        elif prior and discard:
            _node_remove(sl, self.params, k, j)
        if discard:
            self._sync()
            self._discard(j)

    def kmem_cache_free(self, name: str, addr: int, cpu: int = 0) -> None:
        """``kmem_cache_free()`` on ``cpu``."""
        s = self.caches[self._target(name)]
        self._check_cpu(cpu)
        j, index = self._check_free(s, addr, cpu)
        if s.debug:
            self._debug_free(s, j, index)
            self.corrupt.pop(addr, None)
        else:
            self._sync()
            _slab_free(*self._b(), *self._arrays(), self.cache_id[s.name], cpu, j, index)

    # -- shrink and destroy ---------------------------------------------------------------------

    def kmem_cache_shrink(self, name: str) -> int:
        """``kmem_cache_shrink()``: 1 if slabs remain, else 0."""
        s = self.caches[self._target(name)]
        k = self.cache_id[s.name]
        self._flush_all(k)
        discard, promote, rest = [], [[] for _ in range(SHRINK_PROMOTE_MAX)], []
        for j in self._node_list(k):
            free = int(self.slabs[j, S_OBJECTS] - self.slabs[j, S_INUSE])
            if free == self.slabs[j, S_OBJECTS]:
                discard.insert(0, j)
            elif free <= SHRINK_PROMOTE_MAX:
                promote[free - 1].insert(0, j)
            else:
                rest.append(j)
        for j in self._node_list(k):
            _node_remove(self.slabs, self.params, k, j)
        for j in [j for bucket in promote for j in bucket] + rest:
            _node_add(self.slabs, self.params, k, j, True)
        for j in discard:
            self._discard(j)
        return int(self._rows_of(k).size > 0)

    def live_objects(self, name: str) -> int:
        """Objects of the cache handed out and not freed."""
        k = self.cache_id[name]
        return int(self.slabs[self._rows_of(k), S_INUSE].sum() - self.cpus[k, :, C_COUNT].sum())

    def kmem_cache_destroy(self, name: str) -> None:
        """``kmem_cache_destroy()``; ``EBUSY`` while objects are live."""
        target = self._target(name)
        s = self.caches[target]
        if s.refcount > 1:
            self.aliases.pop(name, None)
            self.caches[target] = replace(s, refcount=s.refcount - 1)
            return
        live = self.live_objects(target)
        if live:
            raise EBUSY(f"kmem_cache_destroy {target}: Slab cache still has objects ({live} live)")
        k = self.cache_id[target]
        self._flush_all(k)
        for j in reversed(self._node_list(k)):
            _node_remove(self.slabs, self.params, k, j)
            self._discard(j)
        self.aliases = {a: t for a, t in self.aliases.items() if t != target}
        del self.caches[target], self.cache_id[target]
        self.cache_names[k] = None
        self.cache_list.remove(target)

    # -- batches --------------------------------------------------------------------------------

    def alloc_many(self, name: str, n: int, cpu: int = 0) -> np.ndarray:
        """``n`` allocations from one cache on one CPU, as repeated :meth:`kmem_cache_alloc`
        would; stops at the first error (raised, with the earlier allocations kept)."""
        s = self.caches[self._target(name)]
        self._check_cpu(cpu)
        out = np.empty(int(n), dtype=np.uint64)
        if s.debug:
            for i in range(int(n)):
                out[i] = self._debug_alloc(s)
            return out
        rel = np.empty(int(n), dtype=np.int64)
        k = self.cache_id[s.name]
        self._sync()
        done = 0
        while done < rel.shape[0]:
            done, code = _alloc_many(*self._b(), self._gfp(), *self._arrays(), k, cpu, rel, done)
            if code == NO_SLOT:
                self._grow_slots(max(64, (rel.shape[0] - done) // max(1, s.objects) + 1))
            elif code == NO_MEM:
                raise ENOMEM(f"no memory for a new slab of {s.name} (order {s.order} or {s.min_order})")
        out[:] = rel.astype(np.uint64) + np.uint64(PAGE_OFFSET)
        return out

    def free_many(self, addrs, cpu: int = 0) -> None:
        """Free objects of any caches in order, as repeated :meth:`kmem_cache_free` to their
        own caches would (stops at the first error, which is raised)."""
        self._check_cpu(cpu)
        addrs = np.asarray(addrs, dtype=np.uint64)
        rels = (addrs - np.uint64(PAGE_OFFSET)).view(np.int64)  # below PAGE_OFFSET: huge, hence no slab
        rels = np.where(addrs < np.uint64(PAGE_OFFSET), -1, rels)
        self._sync()
        i = 0
        while i < rels.shape[0]:
            i = _free_many(*self._b(), *self._arrays(), rels, cpu, i)
            if i < rels.shape[0]:
                addr = int(addrs[i])
                j = self._slot_of(addr)
                if j < 0:
                    raise EINVAL(f"kmem_cache_free: 0x{addr:x} is not a slab object")
                self.kmem_cache_free(self._cache_of_slot(j), addr, cpu)
                self._sync()
                i += 1

    # -- views and the abstraction function -------------------------------------------------------

    def _pfns(self, slots) -> tuple:
        return tuple(int(self.slabs[j, S_PFN]) for j in slots)

    def _cpu_partial(self, k: int, cpu: int) -> tuple:
        out, j = [], int(self.cpus[k, cpu, C_PHEAD])
        while j >= 0:
            out.append(int(self.slabs[j, S_PFN]))
            j = int(self.slabs[j, S_CPNEXT])
        return tuple(out)

    def abstract(self) -> SlubState:
        """The :class:`spec.slub.SlubState` this object represents."""
        slabs = {}
        for j in np.flatnonzero(self.slabs[:, S_CACHE] >= 0).tolist():
            pfn, k, order, n, inuse, frozen, head, _, nfree = self.slabs[j, :S_NEXT].tolist()
            freelist = _walk(self.objs[j], head, nfree)
            slabs[pfn] = Slab(self.cache_names[k], order, n, freelist, inuse, bool(frozen))
        cpus, partial = {}, {}
        for name, k in self.cache_id.items():
            rows = []
            for cpu in range(self.nr_cpus):
                j, head, _, count, _, _ = self.cpus[k, cpu].tolist()
                pfn = int(self.slabs[j, S_PFN]) if j >= 0 else -1
                freelist = _walk(self.objs[j], head, count) if j >= 0 else ()
                rows.append(CpuSlab(pfn, freelist, self._cpu_partial(k, cpu)))
            cpus[name] = tuple(rows)
            partial[name] = self._pfns(self._node_list(k))
        return SlubState(
            self.config, self.buddy.abstract(), Map(self.caches), tuple(self.cache_list), Map(self.aliases),
            Map(slabs), Map(cpus), Map(partial), Map(self.corrupt),
        )

    def slabinfo(self) -> str:
        """``/proc/slabinfo`` from the counters."""
        lines = [spec_slub.SLABINFO_HEADER]
        live = self.slabs[:, S_CACHE]
        for name in reversed(self.cache_list):
            s = self.caches[name]
            k = self.cache_id[name]
            mine = live == k
            num = int(self.slabs[mine, S_OBJECTS].sum())
            node = self._node_list(k)
            free = int((self.slabs[node, S_OBJECTS] - self.slabs[node, S_INUSE]).sum()) if node else 0
            line = spec_slub.format_slabinfo_line
            lines.append(line(name, num - free, num, s.size, s.objects, 1 << s.order, int(mine.sum())))
        return "".join(lines)

    def render(self) -> str:
        return spec_slub.render(self.abstract())
