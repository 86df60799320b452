"""SLUB: how Linux carves kernel objects out of buddy pages (mm/slub.c, mm/slab_common.c).

**The problem.**  The kernel allocates millions of small objects (inodes, dentries, socket
buffers, 64-byte kmallocs) whose sizes are nowhere near a page.  Handing each one a 4 KiB
buddy block would waste most of the page; searching a general-purpose heap would be slow and
fragment.  A *slab allocator* (Bonwick 1994) keeps one *cache* per object size: a cache owns
*slabs* (buddy blocks of 2^order pages) cut into equal *objects*, so an allocation is "take
any free object of this size" and a free is "give it back to its slab".

**Geometry** (``calculate_sizes()``, ``calculate_order()``): the object size rounded to the
cache's alignment, red zones and the free pointer's place, and the slab order that wastes at
most 1/16 of the slab; see :mod:`spec.slab_geometry`, whose names this module re-exports.

**Structure** (Linux 6.8 to 6.18).  Each CPU has a *cpu slab* with a lockless freelist and a
*per-CPU partial list*; each node has a *partial list* of slabs with free objects;
full slabs are on no list.  A free object holds the pointer to the next free object, so a
freelist is a LIFO stack: a new slab's list runs in address order, an allocation pops the
head, a free pushes at the head (:attr:`Slab.freelist`, :attr:`CpuSlab.freelist`).

*Allocation* (``slab_alloc_node()`` → ``___slab_alloc()``): pop the cpu freelist (fast path);
else take what remote frees put on the cpu slab's own freelist (``get_freelist()``); else make
the first per-CPU partial slab the cpu slab; else take the first node-partial slab and move up
to ``cpu_partial_slabs / 2`` more to the per-CPU list (``get_partial_node()``); else allocate
a new slab from the buddy allocator (``new_slab()``, falling back to the minimum order).

*Free* (``do_slab_free()`` → ``__slab_free()``): an object of this CPU's cpu slab is pushed on
the cpu freelist (fast path); otherwise on its slab's freelist.  A slab that was full goes to
this CPU's partial list (``put_cpu_partial()``, which first drains the whole list to the node
when it already holds ``cpu_partial_slabs``); a node-partial slab that becomes empty is given
back to the buddy allocator if the node keeps at least ``min_partial`` partial slabs.
``kmem_cache_shrink()`` flushes every CPU and frees every empty slab; ``kmem_cache_destroy()``
refuses while objects are live.

*Debugging* (``slab_debug=FZP``): a debug cache has no cpu slabs: objects come straight off
the node's partial slabs (``alloc_single_from_partial()``).  ``Z`` adds red zones, ``P`` poisons
free objects, ``F`` checks every alloc and free (``free_consistency_checks()``,
``check_object()``) and reports in Linux's words: "Invalid object pointer", "Object already
free", "Right Redzone overwritten", "Poison overwritten", "Wrong slab cache".

**How the model simplifies Linux, and why.**

- One NUMA node; CPUs are named by the caller of each operation (no preemption, so the
  lockless cmpxchg loops of Linux always succeed first time).
- No ``CONFIG_SLAB_FREELIST_RANDOM``: a new slab's freelist is in address order.  The hardened
  freelist's pointer obfuscation is invisible to the model; its naive double-free check
  (``BUG_ON(object == fp)``) is named in the error message.
- The model's memory holds no data.  :func:`write` records only which guard bytes a write hit
  (a red zone, the poison of a free object); without ``Z``/``P`` it records nothing, whereas
  real memory would be silently corrupted.
- Every misuse is refused with a typed error and changes nothing, also where Linux, not
  debugging, would corrupt its freelist (a double free, a free of an interior pointer), or
  where it reports and carries on (a wrong cache: Linux warns and frees to the right cache; a
  corrupt object found at allocation: Linux marks the slab full and leaks it).  The message
  says what Linux would print, or that it would not notice.
- No ``SLAB_STORE_USER`` (``U``) tracking, constructors, RCU freeing, memcg charging,
  KASAN/KFENCE, bulk allocation, or sheaves (the post-6.18 per-CPU object arrays).

>>> s = init(slub_preset("toy"))
>>> s, name = kmem_cache_create(s, "dentry", 192)
>>> s, a = kmem_cache_alloc(s, "dentry", cpu=0)
>>> s, b = kmem_cache_alloc(s, "dentry", cpu=0)
>>> hex(a), b - a
('0xffff888000000000', 192)
>>> print(slabinfo(s).splitlines()[2])
dentry                21     21    192   21    1 : tunables    0    0    0 : slabdata      1      1      0
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from immutables import Map

from spec import buddy as spec_buddy
from spec.buddy import BuddyState
from spec.errors import (
    EBUSY,
    EEXIST,
    EFAULT,
    EINVAL,
    ENOMEM,
    DoubleFree,
    InvalidObjectPointer,
    SlabCorruption,
    WrongSlabCache,
)
from spec.slab_geometry import *  # noqa: F403 - the geometry is part of this chapter's API
from spec.slab_geometry import (
    PAGE_OFFSET, WORD, SLAB_MAX_ORDER, get_order, order_objects, min_objects_for,
    calculate_order, align_up, calculate_alignment, object_address, pfn_to_virt, ilog2,
)
from spec.zone import MAX_PAGE_ORDER, PAGE_SHIFT, PAGE_SIZE, MachineConfig, preset

__all__ = [
    "SlubConfig", "slub_preset", "init", "kmem_cache_create", "kmem_cache_alloc", "kmem_cache_free",
    "kmem_cache_shrink", "kmem_cache_destroy", "write", "calculate_order", "slabinfo", "sysfs", "meminfo",
]

MIN_PARTIAL, MAX_PARTIAL = 5, 10  # mm/slub.c
SHRINK_PROMOTE_MAX = 32  # mm/slub.c: __kmem_cache_do_shrink()
KMALLOC_MAX_SIZE = 1 << (MAX_PAGE_ORDER + PAGE_SHIFT)  # include/linux/slab.h: 4 MiB

#: slab_flags_t bits the model knows (include/linux/slab.h), by their names without ``SLAB_``.
FLAGS = frozenset({
    "HWCACHE_ALIGN", "RECLAIM_ACCOUNT", "CACHE_DMA", "ACCOUNT", "KMALLOC", "NO_MERGE",
    "RED_ZONE", "POISON", "CONSISTENCY_CHECKS",
})
DEBUG_FLAGS = frozenset({"RED_ZONE", "POISON", "CONSISTENCY_CHECKS"})  # SLAB_DEBUG_FLAGS (no U, T)
NEVER_MERGE = DEBUG_FLAGS | {"NO_MERGE"}  # SLAB_NEVER_MERGE
MERGE_SAME = frozenset({"RECLAIM_ACCOUNT", "CACHE_DMA", "ACCOUNT"})  # SLAB_MERGE_SAME
DEBUG_LETTERS = {"F": "CONSISTENCY_CHECKS", "Z": "RED_ZONE", "P": "POISON"}  # slab_debug= letters


# ---------------------------------------------------------------------------------------------
# State


@dataclass(frozen=True)
class SlubConfig:
    """The machine and the boot parameters that shape SLUB."""

    name: str
    buddy: MachineConfig
    nr_cpus: int = 2
    slab_min_objects: int = 0  # slab_min_objects= (0: from the CPU count)
    slab_max_order: int = SLAB_MAX_ORDER  # slab_max_order=
    slab_min_order: int = 0  # slab_min_order=
    slab_debug: str = ""  # slab_debug= letters applied to every cache: F, Z, P
    slab_nomerge: bool = False  # slab_nomerge


SLUB_PRESETS = {
    c.name: c
    for c in (
        SlubConfig("toy", preset("toy-64")),
        SlubConfig("toy-debug", preset("toy-64"), slab_debug="FZP"),
        SlubConfig("toy-1cpu", preset("toy-64"), nr_cpus=1),
        SlubConfig("x86_64-1g", preset("x86_64-1g-cma"), nr_cpus=2),
        SlubConfig("x86_64-1g-64cpu", preset("x86_64-1g-cma"), nr_cpus=64),
    )
}


def slub_preset(name: str) -> SlubConfig:
    """Look up a SLUB preset by name; ``EINVAL`` for an unknown one."""
    if not isinstance(name, str) or name not in SLUB_PRESETS:
        raise EINVAL(f"unknown SLUB preset {name!r}; known: {', '.join(SLUB_PRESETS)}")
    return SLUB_PRESETS[name]


@dataclass(frozen=True)
class KmemCache:
    """``struct kmem_cache``: the geometry and tunables of one cache."""

    name: str
    object_size: int  # what the user asked for (max over merged aliases)
    size: int  # the stride: object, red zones, free pointer, padding
    align: int
    offset: int  # where the free pointer lives in a free object
    inuse: int  # object plus right red zone
    red_left_pad: int
    order: int  # oo: the preferred slab order ...
    objects: int  # ... and its objects per slab
    min_order: int  # min: the fallback order, one object at least
    min_partial: int
    cpu_partial: int  # objects (sysfs cpu_partial)
    cpu_partial_slabs: int
    flags: frozenset
    refcount: int = 1  # -1: never a merge target (kmalloc caches)

    @property
    def debug(self) -> bool:
        """``kmem_cache_debug()``: any debug flag (then there are no cpu slabs)."""
        return bool(self.flags & DEBUG_FLAGS)

    @property
    def gfp(self) -> str:
        """``s->allocflags`` as a GFP preset of :mod:`spec.zone`."""
        if "CACHE_DMA" in self.flags:
            return "GFP_DMA"
        return "GFP_KERNEL_RECLAIMABLE" if "RECLAIM_ACCOUNT" in self.flags else "GFP_KERNEL"


class Slab(NamedTuple):
    """``struct slab``: a buddy block cut into objects; ``freelist`` holds object indices,
    head first; ``inuse`` counts objects not on it (those on a cpu freelist included)."""

    cache: str
    order: int
    objects: int
    freelist: tuple
    inuse: int
    frozen: bool  # a cpu slab


class CpuSlab(NamedTuple):
    """``struct kmem_cache_cpu``: the cpu slab's pfn (-1: none), its lockless freelist and the
    per-CPU partial list (pfns, head first)."""

    slab: int = -1
    freelist: tuple = ()
    partial: tuple = ()


@dataclass(frozen=True)
class SlubState:
    """Every cache, slab and list, and the page allocator they are carved from."""

    config: SlubConfig
    buddy: BuddyState
    caches: Map  # name -> KmemCache
    cache_list: tuple  # slab_caches, oldest first
    aliases: Map  # alias name -> the cache it was merged into
    slabs: Map  # pfn -> Slab
    cpus: Map  # cache name -> tuple of CpuSlab, one per CPU
    partial: Map  # cache name -> node 0's partial list (pfns, head first)
    corrupt: Map  # object address -> frozenset of overwritten guard areas


def init(config: SlubConfig | str) -> SlubState:
    """Boot: an empty slab allocator on a freshly booted buddy allocator."""
    cfg = slub_preset(config) if isinstance(config, str) else config
    if not isinstance(cfg, SlubConfig) or not 1 <= cfg.nr_cpus <= 8192 or set(cfg.slab_debug) - set(DEBUG_LETTERS):
        raise EINVAL(f"bad SLUB configuration {cfg!r}")
    return SlubState(cfg, spec_buddy.init(cfg.buddy), Map(), (), Map(), Map(), Map(), Map(), Map())


# ---------------------------------------------------------------------------------------------
# Cache creation


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_name(state: SlubState, name) -> str:
    """The cache a name (or merged alias) stands for; ``EINVAL`` for an unknown one."""
    if not isinstance(name, str) or (name not in state.caches and name not in state.aliases):
        raise EINVAL(f"no slab cache named {name!r}")
    return state.aliases.get(name, name)


def _check_cpu(state: SlubState, cpu) -> None:
    if not _is_int(cpu) or not 0 <= cpu < state.config.nr_cpus:
        raise EINVAL(f"cpu {cpu!r} is outside 0..{state.config.nr_cpus - 1}")


def cache_geometry(config: SlubConfig, name: str, size: int, align: int, flags: frozenset, refcount: int = 1) -> KmemCache:
    """``calculate_sizes()``, ``set_min_partial()`` and ``set_cpu_partial()`` for a new cache."""
    align = calculate_alignment(flags, align, size)
    stride = align_up(size, WORD)
    if "RED_ZONE" in flags and stride == size:
        stride += WORD  # a non-empty right red zone
    inuse = stride
    if "POISON" in flags or ("RED_ZONE" in flags and size < WORD):
        offset, stride = stride, stride + WORD  # the free pointer goes behind the object
    else:
        offset = (size // 2) & ~(WORD - 1)  # ALIGN_DOWN(object_size / 2, sizeof(void *))
    red_left_pad = 0
    if "RED_ZONE" in flags:
        red_left_pad = align_up(WORD, align)
        stride += WORD + red_left_pad
    stride = align_up(stride, align)
    order = calculate_order(stride, min_objects_for(config.nr_cpus, config.slab_min_objects),
                            config.slab_max_order, config.slab_min_order)
    debug = bool(flags & DEBUG_FLAGS)
    nr = 0 if debug else 6 if stride >= PAGE_SIZE else 24 if stride >= 1024 else 52 if stride >= 256 else 120
    objects = order_objects(order, stride)
    return KmemCache(
        name, size, stride, align, offset, inuse, red_left_pad, order, objects, get_order(stride),
        min(max(ilog2(stride) // 2, MIN_PARTIAL), MAX_PARTIAL), nr, -(-nr * 2 // objects), frozenset(flags), refcount,
    )


def find_mergeable(state: SlubState, size: int, align: int, flags: frozenset) -> str | None:
    """``find_mergeable()``: the oldest cache a new one can share, or None."""
    if state.config.slab_nomerge or flags & NEVER_MERGE:
        return None
    size = align_up(size, WORD)
    align = calculate_alignment(flags, align, size)
    size = align_up(size, align)
    for name in state.cache_list:
        s = state.caches[name]
        if s.refcount < 0 or s.flags & NEVER_MERGE or size > s.size:
            continue
        if flags & MERGE_SAME != s.flags & MERGE_SAME or s.size - size >= WORD or s.size % align:
            continue
        return name
    return None


def check_cache_create(name, size, align, flags, slab_debug: str, names_in_use) -> frozenset:
    """The preconditions of :func:`kmem_cache_create`: the cache's flags with the ``slab_debug``
    ones added, or ``EINVAL``/``EEXIST``.  ``names_in_use`` is a tuple of containers of names."""
    if not isinstance(name, str) or not name or " " in name:
        raise EINVAL(f"bad cache name {name!r}")
    if any(name in names for names in names_in_use):
        raise EEXIST(f"a slab cache named {name!r} exists")
    if not _is_int(size) or not 1 <= size <= KMALLOC_MAX_SIZE:
        raise EINVAL(f"object size {size!r} is outside 1..{KMALLOC_MAX_SIZE}")
    if not _is_int(align) or align < 0 or align & (align - 1) or align > KMALLOC_MAX_SIZE:
        raise EINVAL(f"alignment {align!r} is not 0 or a power of two up to {KMALLOC_MAX_SIZE}")
    try:
        flags = frozenset(flags) | {DEBUG_LETTERS[c] for c in slab_debug}
    except TypeError:
        raise EINVAL(f"flags must be a collection of names, got {flags!r}") from None
    if not flags <= FLAGS:
        raise EINVAL(f"unknown slab flags {sorted(map(str, flags - FLAGS))}")
    return flags


def kmem_cache_create(state: SlubState, name: str, size: int, align: int = 0, flags=(), mergeable: bool = True):
    """``kmem_cache_create(name, size, align, flags, NULL)``: a new cache, or an alias of a
    compatible one (``__kmem_cache_alias()``); returns the name of the cache that serves it.

    ``EINVAL`` for a bad name, size (1..KMALLOC_MAX_SIZE), alignment (0 or a power of two up to
    KMALLOC_MAX_SIZE) or flag; ``EEXIST`` for a name in use.  ``mergeable=False`` is ``refcount = -1``:
    the cache is never a merge target (kmalloc's caches).
    """
    flags = check_cache_create(name, size, align, flags, state.config.slab_debug, (state.caches, state.aliases))
    target = find_mergeable(state, size, align, flags) if mergeable else None
    if target is not None:
        s = state.caches[target]
        s = replace(s, refcount=s.refcount + 1, object_size=max(s.object_size, size),
                    inuse=max(s.inuse, align_up(size, WORD)))
        return replace(state, caches=state.caches.set(target, s), aliases=state.aliases.set(name, target)), target
    s = cache_geometry(state.config, name, size, align, flags, 1 if mergeable else -1)
    if s.objects < 1 or s.min_order > state.buddy.config.max_order:
        raise EINVAL(f"objects of {s.size} bytes do not fit a slab of order <= {state.buddy.config.max_order}")
    cpus = (CpuSlab(),) * state.config.nr_cpus
    return replace(
        state, caches=state.caches.set(name, s), cache_list=state.cache_list + (name,),
        cpus=state.cpus.set(name, cpus), partial=state.partial.set(name, ()),
    ), name


# ---------------------------------------------------------------------------------------------
# Slab primitives: new_slab, discard_slab, the partial lists


def _set_slab(state: SlubState, pfn: int, slab: Slab) -> SlubState:
    return replace(state, slabs=state.slabs.set(pfn, slab))


def _set_cpu(state: SlubState, name: str, cpu: int, c: CpuSlab) -> SlubState:
    cpus = list(state.cpus[name])
    cpus[cpu] = c
    return replace(state, cpus=state.cpus.set(name, tuple(cpus)))


def _set_partial(state: SlubState, name: str, lst: tuple) -> SlubState:
    return replace(state, partial=state.partial.set(name, lst))


def _add_partial(state: SlubState, name: str, pfn: int, tail: bool) -> SlubState:
    """``add_partial()``: DEACTIVATE_TO_TAIL or DEACTIVATE_TO_HEAD."""
    lst = state.partial[name]
    return _set_partial(state, name, lst + (pfn,) if tail else (pfn,) + lst)


def _remove_partial(state: SlubState, name: str, pfn: int) -> SlubState:
    return _set_partial(state, name, tuple(p for p in state.partial[name] if p != pfn))


def new_slab(state: SlubState, s: KmemCache):
    """``allocate_slab()``: a buddy block of the cache's order, else of its minimum order; the
    freelist runs through the objects in address order.  ``ENOMEM`` if the buddy has neither."""
    try:
        b, pfn = spec_buddy.alloc_pages(state.buddy, s.order, s.gfp)
        order = s.order
    except ENOMEM:
        b, pfn = spec_buddy.alloc_pages(state.buddy, s.min_order, s.gfp)  # ENOMEM propagates
        order = s.min_order
    objects = order_objects(order, s.size)
    slab = Slab(s.name, order, objects, tuple(range(objects)), 0, False)
    return replace(state, buddy=b, slabs=state.slabs.set(pfn, slab)), pfn


def discard_slab(state: SlubState, pfn: int) -> SlubState:
    """``discard_slab()``: give the slab's pages back to the buddy allocator."""
    slab = state.slabs[pfn]
    b, _ = spec_buddy.free_pages(state.buddy, pfn, slab.order)
    base = pfn_to_virt(pfn)
    end = base + (PAGE_SIZE << slab.order)
    corrupt = state.corrupt
    for addr in [a for a in corrupt if base <= a < end]:
        corrupt = corrupt.delete(addr)
    return replace(state, buddy=b, slabs=state.slabs.delete(pfn), corrupt=corrupt)


def _put_partials(state: SlubState, s: KmemCache, pfns: tuple) -> SlubState:
    """``__put_partials()``: a per-CPU partial list to the node; empty slabs beyond
    ``min_partial`` are discarded afterwards, last seen first."""
    discard = []
    for pfn in pfns:
        if state.slabs[pfn].inuse == 0 and len(state.partial[s.name]) >= s.min_partial:
            discard.append(pfn)
        else:
            state = _add_partial(state, s.name, pfn, tail=True)
    for pfn in reversed(discard):
        state = discard_slab(state, pfn)
    return state


def put_cpu_partial(state: SlubState, s: KmemCache, cpu: int, pfn: int, drain: bool) -> SlubState:
    """``put_cpu_partial()``: push a slab on this CPU's partial list; when draining and the list
    already holds ``cpu_partial_slabs``, the old list goes to the node first."""
    c = state.cpus[s.name][cpu]
    if drain and c.partial and len(c.partial) >= s.cpu_partial_slabs:
        state = _set_cpu(state, s.name, cpu, c._replace(partial=(pfn,)))
        return _put_partials(state, s, c.partial)
    return _set_cpu(state, s.name, cpu, c._replace(partial=(pfn,) + c.partial))


def deactivate_slab(state: SlubState, s: KmemCache, pfn: int, freelist: tuple) -> SlubState:
    """``deactivate_slab()``: splice the cpu freelist at the head of the slab's own, unfreeze it,
    and put it where it belongs: discarded if empty beyond ``min_partial``, on the node partial
    list (at the tail if it had remote frees) if it has free objects, nowhere if full."""
    slab = state.slabs[pfn]
    tail = bool(slab.freelist)
    slab = slab._replace(freelist=freelist + slab.freelist, inuse=slab.inuse - len(freelist), frozen=False)
    state = _set_slab(state, pfn, slab)
    if slab.inuse == 0 and len(state.partial[s.name]) >= s.min_partial:
        return discard_slab(state, pfn)
    if slab.freelist:
        return _add_partial(state, s.name, pfn, tail)
    return state


def flush_cpu(state: SlubState, s: KmemCache, cpu: int) -> SlubState:
    """``__flush_cpu_slab()``: deactivate the cpu slab, then drain the per-CPU partial list."""
    c = state.cpus[s.name][cpu]
    state = _set_cpu(state, s.name, cpu, CpuSlab())
    if c.slab >= 0:
        state = deactivate_slab(state, s, c.slab, c.freelist)
    return _put_partials(state, s, c.partial)


def flush_all(state: SlubState, s: KmemCache) -> SlubState:
    """``flush_all()``: every CPU, in ascending order."""
    for cpu in range(state.config.nr_cpus):
        state = flush_cpu(state, s, cpu)
    return state


# ---------------------------------------------------------------------------------------------
# Objects: where they are, whether they are free, what a write touched


def slab_of(state: SlubState, addr):
    """The pfn of the slab whose pages hold ``addr``, or None (``virt_to_slab()``)."""
    if not _is_int(addr) or addr < PAGE_OFFSET:
        return None
    pfn = (addr - PAGE_OFFSET) >> PAGE_SHIFT
    for order in range(state.buddy.config.max_order + 1):
        head = pfn & ~((1 << order) - 1)
        slab = state.slabs.get(head)
        if slab is not None and slab.order == order:
            return head
    return None


def object_index(s: KmemCache, slab: Slab, pfn: int, addr: int):
    """``check_valid_pointer()``: the index of the object starting at ``addr``, or None."""
    off = addr - pfn_to_virt(pfn) - s.red_left_pad
    if off < 0 or off % s.size or off // s.size >= slab.objects:
        return None
    return off // s.size


def _is_free(state: SlubState, s: KmemCache, pfn: int, index: int) -> bool:
    """``on_freelist()``, extended to the cpu freelist of the CPU that holds the slab."""
    if index in state.slabs[pfn].freelist:
        return True
    return any(c.slab == pfn and index in c.freelist for c in state.cpus[s.name])


def _report(s: KmemCache, what: str) -> str:
    """The first line ``slab_bug()`` prints."""
    return f"BUG {s.name} (Not tainted): {what}"


def _check_object(state: SlubState, s: KmemCache, addr: int, active: bool) -> None:
    """``check_object()`` with SLAB_CONSISTENCY_CHECKS: red zones, and poison of a free object."""
    hit = state.corrupt.get(addr, frozenset())
    for what in ("Left Redzone", "Right Redzone") + (() if active else ("Poison",)):
        if what in hit:
            raise SlabCorruption(_report(s, f"{what} overwritten") + f" (object 0x{addr:x})")


def write(state: SlubState, addr: int, length: int):
    """A store of ``length`` bytes at ``addr`` by a slab user, legal or not: records which guard
    areas it hit (a red zone with ``Z``, the poison of a free object with ``P``), which
    ``check_object()`` reports at the next alloc or free of that object.  ``EFAULT`` unless the
    bytes lie inside one slab."""
    if not _is_int(length) or length < 1:
        raise EINVAL(f"length {length!r} must be a positive integer")
    pfn = slab_of(state, addr)
    if pfn is None or slab_of(state, addr + length - 1) != pfn:
        raise EFAULT(f"bytes 0x{addr:x}+{length} are not inside one slab" if _is_int(addr) else f"bad address {addr!r}")
    slab = state.slabs[pfn]
    s = state.caches[slab.cache]
    base = pfn_to_virt(pfn)
    corrupt = state.corrupt
    first, last = (addr - base) // s.size, (addr + length - 1 - base) // s.size
    for k in range(first, min(last, slab.objects - 1) + 1):
        obj = object_address(base, k, s.size, s.red_left_pad)
        lo, hi = max(addr, obj - s.red_left_pad), min(addr + length, obj - s.red_left_pad + s.size)
        hit = set()
        if "RED_ZONE" in s.flags and lo < obj:
            hit.add("Left Redzone")
        if "RED_ZONE" in s.flags and lo < obj + s.inuse and hi > obj + s.object_size:
            hit.add("Right Redzone")
        if "POISON" in s.flags and lo < obj + s.object_size and hi > obj and _is_free(state, s, pfn, k):
            hit.add("Poison")
        if hit:
            corrupt = corrupt.set(obj, corrupt.get(obj, frozenset()) | hit)
    return replace(state, corrupt=corrupt), None


# ---------------------------------------------------------------------------------------------
# Allocation


def _load_freelist(state: SlubState, name: str, cpu: int, pfn: int, freelist: tuple):
    """``load_freelist:``: make ``pfn`` the cpu slab and pop the head of ``freelist``."""
    state = _set_cpu(state, name, cpu, state.cpus[name][cpu]._replace(slab=pfn, freelist=freelist[1:]))
    return state, freelist[0]


def _take_freelist(state: SlubState, pfn: int):
    """``get_freelist()``/``freeze_slab()``: all the slab's free objects go to the CPU."""
    slab = state.slabs[pfn]
    state = _set_slab(state, pfn, slab._replace(freelist=(), inuse=slab.objects, frozen=bool(slab.freelist)))
    return state, slab.freelist


def _get_partial_node(state: SlubState, s: KmemCache, cpu: int):
    """``get_partial_node()``: the first node-partial slab, plus up to half the per-CPU limit
    more onto this CPU's partial list; None if the node has none."""
    lst = state.partial[s.name]
    if not lst:
        return state, None
    first, moved = None, 0
    for pfn in lst:
        state = _remove_partial(state, s.name, pfn)
        if first is None:
            first = pfn
            if s.cpu_partial_slabs == 0:
                break
        else:
            state = put_cpu_partial(state, s, cpu, pfn, drain=False)
            moved += 1
            if moved > s.cpu_partial_slabs // 2:
                break
    return state, first


def _slab_alloc(state: SlubState, s: KmemCache, cpu: int):
    """``slab_alloc_node()`` and ``___slab_alloc()`` for a cache with cpu slabs."""
    c = state.cpus[s.name][cpu]
    if c.slab >= 0 and c.freelist:
        return _load_freelist(state, s.name, cpu, c.slab, c.freelist)  # the fast path
    if c.slab >= 0:
        state, freelist = _take_freelist(state, c.slab)
        if freelist:
            return _load_freelist(state, s.name, cpu, c.slab, freelist)
        state = _set_cpu(state, s.name, cpu, c._replace(slab=-1, freelist=()))  # full: untracked
    c = state.cpus[s.name][cpu]
    if c.partial:
        pfn = c.partial[0]
        state = _set_cpu(state, s.name, cpu, c._replace(partial=c.partial[1:]))
        state, freelist = _take_freelist(state, pfn)
        return _load_freelist(state, s.name, cpu, pfn, freelist)
    state, pfn = _get_partial_node(state, s, cpu)
    if pfn is None:
        state, pfn = new_slab(state, s)
    state, freelist = _take_freelist(state, pfn)
    return _load_freelist(state, s.name, cpu, pfn, freelist)


def _debug_alloc(state: SlubState, s: KmemCache):
    """``alloc_single_from_partial()`` / ``alloc_single_from_new_slab()``: a debug cache."""
    lst = state.partial[s.name]
    if lst:
        pfn = lst[0]
    else:
        state, pfn = new_slab(state, s)
        state = _add_partial(state, s.name, pfn, tail=False)
    slab = state.slabs[pfn]
    addr = object_address(pfn_to_virt(pfn), slab.freelist[0], s.size, s.red_left_pad)
    if "CONSISTENCY_CHECKS" in s.flags:
        _check_object(state, s, addr, active=False)
    slab = slab._replace(freelist=slab.freelist[1:], inuse=slab.inuse + 1)
    state = _set_slab(state, pfn, slab)
    if not slab.freelist:
        state = _remove_partial(state, s.name, pfn)  # full: on no list without SLAB_STORE_USER
    return replace(state, corrupt=state.corrupt.delete(addr) if addr in state.corrupt else state.corrupt), addr


def kmem_cache_alloc(state: SlubState, name: str, cpu: int = 0):
    """``kmem_cache_alloc(s, GFP_KERNEL)`` on ``cpu``: the address of a free object.

    ``EINVAL`` for an unknown cache or CPU; ``ENOMEM`` if a new slab was needed and the buddy
    allocator had no block; ``SlabCorruption`` if consistency checks find the object's red zone
    or poison overwritten.
    """
    target = _check_name(state, name)
    _check_cpu(state, cpu)
    s = state.caches[target]
    if s.debug:
        return _debug_alloc(state, s)
    state, index = _slab_alloc(state, s, cpu)
    pfn = state.cpus[s.name][cpu].slab
    return state, object_address(pfn_to_virt(pfn), index, s.size, s.red_left_pad)


# ---------------------------------------------------------------------------------------------
# Free


def _check_free(state: SlubState, s: KmemCache, addr, cpu: int):
    """The checks of ``kmem_cache_free()``: (pfn, index) of a live object of cache ``s``."""
    checks = "CONSISTENCY_CHECKS" in s.flags
    pfn = slab_of(state, addr)
    if pfn is None:
        raise EINVAL(f"kmem_cache_free: 0x{addr:x} is not a slab object" if _is_int(addr) else f"bad address {addr!r}")
    slab = state.slabs[pfn]
    if slab.cache != s.name:
        raise WrongSlabCache(f"kmem_cache_free: Wrong slab cache. {s.name} but object is from {slab.cache}")
    index = object_index(s, slab, pfn, addr)
    quiet = "" if checks else " (not detected without slab_debug=F: the freelist would be corrupted)"
    if index is None:
        raise InvalidObjectPointer(_report(s, f"Invalid object pointer 0x{addr:x}") + quiet)
    if _is_free(state, s, pfn, index):
        c = state.cpus[s.name][cpu]
        head = c.freelist[:1] if c.slab == pfn else slab.freelist[:1]
        if not checks and head == (index,):
            quiet = " (kernel BUG at mm/slub.c: set_freepointer() naive double-free detection)"
        raise DoubleFree(_report(s, "Object already free") + f" (object 0x{addr:x})" + quiet)
    if checks:
        _check_object(state, s, addr, active=True)
    return pfn, index


def _slab_free(state: SlubState, s: KmemCache, cpu: int, pfn: int, index: int) -> SlubState:
    """``do_slab_free()`` and ``__slab_free()`` for a cache with cpu slabs."""
    c = state.cpus[s.name][cpu]
    if c.slab == pfn:
        return _set_cpu(state, s.name, cpu, c._replace(freelist=(index,) + c.freelist))  # the fast path
    slab = state.slabs[pfn]
    prior = slab.freelist
    slab = slab._replace(freelist=(index,) + prior, inuse=slab.inuse - 1)
    state = _set_slab(state, pfn, slab)
    if slab.frozen:
        return state  # another CPU's cpu slab: a remote free
    if not prior:
        return put_cpu_partial(state, s, cpu, pfn, drain=True)  # was full
    if pfn not in state.partial[s.name]:
        return state  # on some CPU's partial list
    if slab.inuse == 0 and len(state.partial[s.name]) >= s.min_partial:
        return discard_slab(_remove_partial(state, s.name, pfn), pfn)
    return state


def _debug_free(state: SlubState, s: KmemCache, pfn: int, index: int) -> SlubState:
    """``free_to_partial_list()``: a debug cache."""
    slab = state.slabs[pfn]
    prior = slab.freelist
    slab = slab._replace(freelist=(index,) + prior, inuse=slab.inuse - 1)
    state = _set_slab(state, pfn, slab)
    discard = slab.inuse == 0 and len(state.partial[s.name]) >= s.min_partial
    if not prior and not discard:
        state = _add_partial(state, s.name, pfn, tail=True)
    elif prior and discard:
        state = _remove_partial(state, s.name, pfn)
    return discard_slab(state, pfn) if discard else state


def kmem_cache_free(state: SlubState, name: str, addr: int, cpu: int = 0):
    """``kmem_cache_free(s, addr)`` on ``cpu``.

    ``EINVAL`` for an unknown cache or CPU or an address in no slab; ``WrongSlabCache``,
    ``InvalidObjectPointer``, ``DoubleFree`` and ``SlabCorruption`` as SLUB's checks name them.
    """
    target = _check_name(state, name)
    _check_cpu(state, cpu)
    s = state.caches[target]
    pfn, index = _check_free(state, s, addr, cpu)
    if s.debug:
        state = _debug_free(state, s, pfn, index)
        return replace(state, corrupt=state.corrupt.delete(addr) if addr in state.corrupt else state.corrupt), None
    return _slab_free(state, s, cpu, pfn, index), None


# ---------------------------------------------------------------------------------------------
# Shrink and destroy


def kmem_cache_shrink(state: SlubState, name: str):
    """``kmem_cache_shrink()``: flush every CPU, free every empty slab to the buddy allocator
    and sort the node partial list fullest first (``__kmem_cache_do_shrink()``).  Returns 1 if
    slabs remain, else 0."""
    s = state.caches[_check_name(state, name)]
    state = flush_all(state, s)
    discard, promote, rest = [], [[] for _ in range(SHRINK_PROMOTE_MAX)], []
    for pfn in state.partial[s.name]:
        slab = state.slabs[pfn]
        free = slab.objects - slab.inuse
        if free == slab.objects:
            discard.insert(0, pfn)
        elif free <= SHRINK_PROMOTE_MAX:
            promote[free - 1].insert(0, pfn)
        else:
            rest.append(pfn)
    state = _set_partial(state, s.name, tuple(p for bucket in promote for p in bucket) + tuple(rest))
    for pfn in discard:
        state = discard_slab(state, pfn)
    return state, int(any(slab.cache == s.name for slab in state.slabs.values()))


def live_objects(state: SlubState, name: str) -> int:
    """Objects of the cache handed out and not freed."""
    cpus = state.cpus[name]
    return sum(sl.inuse for sl in state.slabs.values() if sl.cache == name) - sum(len(c.freelist) for c in cpus)


def kmem_cache_destroy(state: SlubState, name: str):
    """``kmem_cache_destroy()``: drop one reference; the last one flushes the CPUs and frees
    every slab.  ``EBUSY`` while objects are live ("Slab cache still has objects")."""
    target = _check_name(state, name)
    s = state.caches[target]
    if s.refcount > 1:
        aliases = state.aliases.delete(name) if name in state.aliases else state.aliases
        return replace(state, caches=state.caches.set(target, replace(s, refcount=s.refcount - 1)), aliases=aliases), None
    if live_objects(state, target):
        raise EBUSY(f"kmem_cache_destroy {target}: Slab cache still has objects ({live_objects(state, target)} live)")
    state = flush_all(state, s)
    for pfn in reversed(state.partial[target]):
        state = discard_slab(state, pfn)
    aliases = Map({a: t for a, t in state.aliases.items() if t != target})
    return replace(
        state, caches=state.caches.delete(target), cache_list=tuple(n for n in state.cache_list if n != target),
        aliases=aliases, cpus=state.cpus.delete(target), partial=state.partial.delete(target),
    ), None


# ---------------------------------------------------------------------------------------------
# Invariants


def _cache_slabs(state: SlubState, name: str):
    return [(p, sl) for p, sl in state.slabs.items() if sl.cache == name]


def inv_slabs_are_buddy_blocks(state: SlubState) -> bool:
    """Every slab is a live buddy allocation of the cache's order (or its fallback minimum order)
    and holds exactly order_objects(order, size) objects."""
    for pfn, slab in state.slabs.items():
        s = state.caches.get(slab.cache)
        alloc = state.buddy.allocated.get(pfn)
        if s is None or alloc is None or alloc.order != slab.order or slab.order not in (s.order, s.min_order):
            return False
        if slab.objects != order_objects(slab.order, s.size):
            return False
    return True


def inv_free_counts(state: SlubState) -> bool:
    """Each slab's free objects (its freelist, and the cpu freelist if it is a cpu slab) are
    distinct object indices, and inuse + the slab's freelist = its capacity."""
    for name, cpus in state.cpus.items():
        held = {c.slab: c.freelist for c in cpus if c.slab >= 0}
        for pfn, slab in _cache_slabs(state, name):
            free = slab.freelist + held.get(pfn, ())
            if len(set(free)) != len(free) or any(not 0 <= i < slab.objects for i in free):
                return False
            if slab.inuse + len(slab.freelist) != slab.objects or (pfn not in held and slab.frozen):
                return False
    return True


def inv_lists(state: SlubState) -> bool:
    """The cpu slabs are exactly the frozen slabs; the node and per-CPU partial lists together hold
    each unfrozen slab with a free object exactly once, and nothing else; debug caches have no
    cpu slabs and no per-CPU partial slabs."""
    for name, cpus in state.cpus.items():
        s = state.caches[name]
        cpu_slabs = [c.slab for c in cpus if c.slab >= 0]
        listed = list(state.partial[name]) + [p for c in cpus for p in c.partial]
        slabs = dict(_cache_slabs(state, name))
        if s.debug and (cpu_slabs or any(c.partial or c.freelist for c in cpus)):
            return False
        if sorted(cpu_slabs) != sorted(p for p, sl in slabs.items() if sl.frozen):
            return False
        if any(c.slab < 0 and c.freelist for c in cpus):
            return False
        want = sorted(p for p, sl in slabs.items() if not sl.frozen and sl.freelist)
        if sorted(listed) != want:
            return False
        if len(state.partial[name]) and not all(slabs[p].freelist for p in state.partial[name]):
            return False
    return True


def inv_objects_aligned(state: SlubState) -> bool:
    """Every object starts inside its slab at a multiple of the cache's alignment and ends
    before the slab does; objects of a slab never overlap (the stride covers the object)."""
    for pfn, slab in state.slabs.items():
        s = state.caches[slab.cache]
        if s.size < s.object_size or s.size % s.align or s.red_left_pad % s.align:
            return False
        base = pfn_to_virt(pfn)
        last = object_address(base, slab.objects - 1, s.size, s.red_left_pad)
        if base % s.align or last + s.size - s.red_left_pad > base + (PAGE_SIZE << slab.order):
            return False
    return True


def inv_cache_names(state: SlubState) -> bool:
    """slab_caches lists every cache once; aliases point at caches; a cache's refcount is one
    more than its aliases (or -1 for an unmergeable kmalloc cache)."""
    if sorted(state.cache_list) != sorted(state.caches) or set(state.cpus) != set(state.caches):
        return False
    for name, s in state.caches.items():
        n = sum(1 for t in state.aliases.values() if t == name)
        if not (s.refcount == -1 and n == 0 or s.refcount >= max(1, n)):
            return False
    return all(t in state.caches for t in state.aliases.values())


def inv_buddy(state: SlubState) -> bool:
    """The page allocator underneath keeps its own partition invariant."""
    return spec_buddy.inv_partition(state.buddy) and spec_buddy.inv_free_counts(state.buddy)


# ---------------------------------------------------------------------------------------------
# Views


SLABINFO_HEADER = (
    "slabinfo - version: 2.1\n"
    "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
    " : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n"
)


def format_slabinfo_line(name: str, active: int, num: int, size: int, objperslab: int, pagesperslab: int, slabs: int) -> str:
    """One line of /proc/slabinfo as ``cache_show()`` prints it (SLUB: tunables and sharedavail 0)."""
    return (
        f"{name:<17s} {active:6d} {num:6d} {size:6d} {objperslab:4d} {pagesperslab:4d}"
        f" : tunables {0:4d} {0:4d} {0:4d} : slabdata {slabs:6d} {slabs:6d} {0:6d}\n"
    )


def cache_counts(state: SlubState, name: str) -> dict:
    """``get_slabinfo()``: num_objs and num_slabs over all slabs; active_objs = num_objs minus
    the free objects of node-partial slabs (objects on cpu freelists count as active)."""
    slabs = _cache_slabs(state, name)
    num = sum(sl.objects for _, sl in slabs)
    free = sum(state.slabs[p].objects - state.slabs[p].inuse for p in state.partial[name])
    return {"active_objs": num - free, "num_objs": num, "num_slabs": len(slabs),
            "pages": sum(1 << sl.order for _, sl in slabs)}


def slabinfo(state: SlubState) -> str:
    """``/proc/slabinfo``: the header, then every cache, newest first (``slab_caches`` order)."""
    lines = [SLABINFO_HEADER]
    for name in reversed(state.cache_list):
        s, n = state.caches[name], cache_counts(state, name)
        lines.append(format_slabinfo_line(name, n["active_objs"], n["num_objs"], s.size, s.objects, 1 << s.order, n["num_slabs"]))
    return "".join(lines)


def _per_node(x: int) -> str:
    """``show_slab_objects()``: the total, then `` N0=...`` when node 0 has any."""
    return f"{x} N0={x}" if x else f"{x}"


def sysfs(state: SlubState, name: str) -> dict:
    """The attributes of ``/sys/kernel/slab/<cache>/`` users read most, as the kernel prints them."""
    target = _check_name(state, name)
    s, n = state.caches[target], cache_counts(state, target)
    cpus = state.cpus[target]
    cpu_slabs = sum(1 for c in cpus if c.slab >= 0) + sum(len(c.partial) for c in cpus)
    pc = [(i, len(c.partial)) for i, c in enumerate(cpus) if c.partial]
    total_pc = sum(k for _, k in pc)
    parts = "".join(f" C{i}={k * s.objects // 2}({k})" for i, k in pc)
    partial = state.partial[target]
    return {
        "object_size": str(s.object_size), "slab_size": str(s.size), "align": str(s.align),
        "objs_per_slab": str(s.objects), "order": str(s.order), "min_partial": str(s.min_partial),
        "cpu_partial": str(s.cpu_partial), "partial": _per_node(len(partial)),
        "cpu_slabs": _per_node(cpu_slabs), "slabs": _per_node(n["num_slabs"]),
        "objects": _per_node(n["active_objs"]), "total_objects": _per_node(n["num_objs"]),
        "objects_partial": _per_node(sum(state.slabs[p].inuse for p in partial)),
        "slabs_cpu_partial": f"{total_pc * s.objects // 2}({total_pc}){parts}",
        "aliases": str(max(s.refcount - 1, 0)), "hwcache_align": str(int("HWCACHE_ALIGN" in s.flags)),
        "reclaim_account": str(int("RECLAIM_ACCOUNT" in s.flags)), "cache_dma": str(int("CACHE_DMA" in s.flags)),
        "red_zone": str(int("RED_ZONE" in s.flags)), "poison": str(int("POISON" in s.flags)),
        "sanity_checks": str(int("CONSISTENCY_CHECKS" in s.flags)),
    }


def meminfo(state: SlubState) -> str:
    """The ``Slab``, ``SReclaimable`` and ``SUnreclaim`` lines of /proc/meminfo (slab pages)."""
    rec = sum(1 << sl.order for sl in state.slabs.values() if "RECLAIM_ACCOUNT" in state.caches[sl.cache].flags)
    unrec = sum(1 << sl.order for sl in state.slabs.values()) - rec
    kb = PAGE_SIZE >> 10
    return "".join(f"{label:<16s}{pages * kb:8d} kB\n" for label, pages in
                   (("Slab:", rec + unrec), ("SReclaimable:", rec), ("SUnreclaim:", unrec)))


def slab_diagram(state: SlubState) -> str:
    """Every cache's slabs for humans: ``#`` a used object, ``.`` a free one, ``c`` one on a cpu
    freelist; where the slab is (cpu slab, per-CPU partial, node partial, full)."""
    out = []
    for name in state.cache_list:
        s = state.caches[name]
        cpus = state.cpus[name]
        out.append(f"{name}: size {s.size}, {s.objects} objects/slab, order {s.order}\n")
        for pfn, slab in sorted(_cache_slabs(state, name)):
            held = {i for c in cpus if c.slab == pfn for i in c.freelist}
            cells = "".join("." if i in slab.freelist else "c" if i in held else "#" for i in range(slab.objects))
            where = next((f"cpu{i} slab" for i, c in enumerate(cpus) if c.slab == pfn), None)
            where = where or next((f"cpu{i} partial" for i, c in enumerate(cpus) if pfn in c.partial), None)
            where = where or ("node partial" if pfn in state.partial[name] else "full")
            out.append(f"  pfn {pfn:>6} [{cells}] {where}\n")
    return "".join(out)


def render(state: SlubState) -> str:
    """How a counterexample shows SLUB: /proc/slabinfo, the slab diagram and buddyinfo."""
    return slabinfo(state) + slab_diagram(state) + spec_buddy.buddyinfo(state.buddy)
