"""SLUB on mutable arrays: the fast twin of :mod:`spec.slub`.

:class:`SlubAllocator` makes exactly the spec's choices (which slab becomes the cpu slab, which
object is popped, which slabs go to which partial list and in what order, which slab is
discarded to the buddy allocator and when) and raises the same typed errors, so that
``abstract()`` equals the spec's state after every operation.  The cache geometry formulas
(``cache_geometry``, ``calculate_order``) are imported from the spec; the algorithms are
re-implemented on mutable structures, and the slabs come from :class:`impl.buddy.BuddyAllocator`.

Layout: a freelist is a Python list with its head at the END (pop and push are O(1)); so are
the per-CPU partial lists.  ``page_slab`` maps every page of a slab to the slab's first pfn
(``virt_to_slab()`` in one lookup).  Batched operations: :meth:`alloc_many`,
:meth:`free_many` and :meth:`simulate` run a trace in one call without the per-call checks of
the Python API.

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

from dataclasses import replace

import numpy as np
from immutables import Map

from impl import bugs
from impl.buddy import BuddyAllocator
from impl.bugs import Defect
from spec import slub as spec_slub
from spec.errors import EBUSY, EEXIST, EFAULT, EINVAL, ENOMEM, DoubleFree, InvalidObjectPointer, SlabCorruption, WrongSlabCache
from spec.slub import (
    DEBUG_LETTERS,
    FLAGS,
    KMALLOC_MAX_SIZE,
    MERGE_SAME,
    NEVER_MERGE,
    PAGE_OFFSET,
    SHRINK_PROMOTE_MAX,
    WORD,
    CpuSlab,
    Slab,
    SlubConfig,
    SlubState,
    align_up,
    cache_geometry,
    calculate_alignment,
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

_NO_CPU = -1


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


class SlubAllocator:
    """The slab allocator on mutable structures; the same operations, results and errors as
    :mod:`spec.slub`.  ``SlubAllocator(config)`` boots like ``spec.slub.init(config)``."""

    def __init__(self, config: SlubConfig | str):
        cfg = slub_preset(config) if isinstance(config, str) else config
        spec_slub.init(cfg)  # validates, raises EINVAL like the spec
        self.config = cfg
        self.nr_cpus = cfg.nr_cpus
        self.buddy = BuddyAllocator(cfg.buddy)
        self.caches: dict = {}
        self.cache_list: list = []
        self.aliases: dict = {}
        self.slabs: dict = {}  # pfn -> [cache, order, objects, freelist (head last), inuse, frozen]
        self.page_slab: dict = {}  # every pfn of a slab -> its first pfn
        self.cpus: dict = {}  # cache -> list of [slab pfn, freelist (head last), partial (head last)]
        self.partial: dict = {}  # cache -> node partial list, head first
        self.corrupt: dict = {}

    # -- names ---------------------------------------------------------------------------------

    def _target(self, name) -> str:
        if not isinstance(name, str) or (name not in self.caches and name not in self.aliases):
            raise EINVAL(f"no slab cache named {name!r}")
        return self.aliases.get(name, name)

    def _check_cpu(self, cpu) -> None:
        if not _is_int(cpu) or not 0 <= cpu < self.nr_cpus:
            raise EINVAL(f"cpu {cpu!r} is outside 0..{self.nr_cpus - 1}")

    # -- cache creation -------------------------------------------------------------------------

    def _find_mergeable(self, size: int, align: int, flags: frozenset):
        if self.config.slab_nomerge or flags & NEVER_MERGE:
            return None
        size = align_up(size, WORD)
        align = calculate_alignment(flags, align, size)
        size = align_up(size, align)
        for name in self.cache_list:
            s = self.caches[name]
            if s.refcount < 0 or s.flags & NEVER_MERGE or size > s.size:
                continue
            if flags & MERGE_SAME != s.flags & MERGE_SAME or s.size - size >= WORD or s.size % align:
                continue
            return name
        return None

    def kmem_cache_create(self, name: str, size: int, align: int = 0, flags=(), mergeable: bool = True) -> str:
        """``kmem_cache_create()``: the name of the cache that serves ``name``."""
        if not isinstance(name, str) or not name or " " in name:
            raise EINVAL(f"bad cache name {name!r}")
        if name in self.caches or name in self.aliases:
            raise EEXIST(f"a slab cache named {name!r} exists")
        if not _is_int(size) or not 1 <= size <= KMALLOC_MAX_SIZE:
            raise EINVAL(f"object size {size!r} is outside 1..{KMALLOC_MAX_SIZE}")
        if not _is_int(align) or align < 0 or align & (align - 1) or align > KMALLOC_MAX_SIZE:
            raise EINVAL(f"alignment {align!r} is not 0 or a power of two up to {KMALLOC_MAX_SIZE}")
        try:
            flags = frozenset(flags) | {DEBUG_LETTERS[c] for c in self.config.slab_debug}
        except TypeError:
            raise EINVAL(f"flags must be a collection of names, got {flags!r}") from None
        if not flags <= FLAGS:
            raise EINVAL(f"unknown slab flags {sorted(map(str, flags - FLAGS))}")
        target = self._find_mergeable(size, align, flags) if mergeable else None
        if target is not None:
            s = self.caches[target]
            self.caches[target] = replace(s, refcount=s.refcount + 1, object_size=max(s.object_size, size),
                                          inuse=max(s.inuse, align_up(size, WORD)))
            self.aliases[name] = target
            return target
        s = cache_geometry(self.config, name, size, align, flags, 1 if mergeable else -1)
        if s.objects < 1 or s.min_order > self.buddy.max_order:
            raise EINVAL(f"objects of {s.size} bytes do not fit a slab of order <= {self.buddy.max_order}")
        self.caches[name] = s
        self.cache_list.append(name)
        self.cpus[name] = [[_NO_CPU, [], []] for _ in range(self.nr_cpus)]
        self.partial[name] = []
        return name

    # -- slabs ----------------------------------------------------------------------------------

    def _new_slab(self, s) -> int:
        try:
            pfn = self.buddy.alloc_pages(s.order, s.gfp)
            order = s.order
        except ENOMEM:
            pfn = self.buddy.alloc_pages(s.min_order, s.gfp)
            order = s.min_order
        objects = (PAGE_SIZE << order) // s.size
        self.slabs[pfn] = [s.name, order, objects, list(range(objects - 1, -1, -1)), 0, False]
        for p in range(pfn, pfn + (1 << order)):
            self.page_slab[p] = pfn
        return pfn

    def _discard(self, pfn: int) -> None:
        order = self.slabs.pop(pfn)[1]
        for p in range(pfn, pfn + (1 << order)):
            del self.page_slab[p]
        self.buddy.free_pages(pfn, order)
        if self.corrupt:
            base = PAGE_OFFSET + (pfn << PAGE_SHIFT)
            for a in [a for a in self.corrupt if base <= a < base + (PAGE_SIZE << order)]:
                del self.corrupt[a]

    def _put_partials(self, s, pfns_head_first) -> None:
        discard = []
        lst = self.partial[s.name]
        for pfn in pfns_head_first:
            if self.slabs[pfn][4] == 0 and len(lst) >= s.min_partial:
                discard.append(pfn)
            else:
                lst.append(pfn)
        for pfn in reversed(discard):
            self._discard(pfn)

    def _put_cpu_partial(self, s, cpu: int, pfn: int, drain: bool) -> None:
        c = self.cpus[s.name][cpu]
        if drain and c[2] and len(c[2]) >= s.cpu_partial_slabs:
            old = c[2]
            c[2] = [pfn]
            self._put_partials(s, old[::-1])
        else:
            c[2].append(pfn)

    def _deactivate(self, s, pfn: int, freelist: list) -> None:
        slab = self.slabs[pfn]
        tail = bool(slab[3])
        slab[3] = slab[3] + freelist  # head last: the cpu freelist goes in front
        slab[4] -= len(freelist)
        slab[5] = False
        lst = self.partial[s.name]
        if slab[4] == 0 and len(lst) >= s.min_partial:
            self._discard(pfn)
        elif slab[3]:
            if tail:
                lst.append(pfn)
            else:
                lst.insert(0, pfn)

    def _flush_cpu(self, s, cpu: int) -> None:
        c = self.cpus[s.name][cpu]
        pfn, freelist, partial = c
        self.cpus[s.name][cpu] = [_NO_CPU, [], []]
        if pfn >= 0:
            self._deactivate(s, pfn, freelist)
        self._put_partials(s, partial[::-1])

    def _flush_all(self, s) -> None:
        for cpu in range(self.nr_cpus):
            self._flush_cpu(s, cpu)

    # -- objects --------------------------------------------------------------------------------

    def _slab_of(self, addr):
        if not _is_int(addr) or addr < PAGE_OFFSET:
            return None
        return self.page_slab.get((int(addr) - PAGE_OFFSET) >> PAGE_SHIFT)

    def _is_free(self, s, pfn: int, index: int) -> bool:
        if index in self.slabs[pfn][3]:
            return True
        return any(c[0] == pfn and index in c[1] for c in self.cpus[s.name])

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
        pfn = self._slab_of(addr)
        if pfn is None or self._slab_of(addr + length - 1) != pfn:
            raise EFAULT(f"bytes 0x{addr:x}+{length} are not inside one slab" if _is_int(addr) else f"bad address {addr!r}")
        slab = self.slabs[pfn]
        s = self.caches[slab[0]]
        base = PAGE_OFFSET + (pfn << PAGE_SHIFT)
        first, last = (addr - base) // s.size, (addr + length - 1 - base) // s.size
        for k in range(first, min(last, slab[2] - 1) + 1):
            obj = base + s.red_left_pad + k * s.size
            lo, hi = max(addr, obj - s.red_left_pad), min(addr + length, obj - s.red_left_pad + s.size)
            hit = set()
            if "RED_ZONE" in s.flags and lo < obj:
                hit.add("Left Redzone")
            if "RED_ZONE" in s.flags and lo < obj + s.inuse and hi > obj + s.object_size:
                hit.add("Right Redzone")
            if "POISON" in s.flags and lo < obj + s.object_size and hi > obj and self._is_free(s, pfn, k):
                hit.add("Poison")
            if hit:
                self.corrupt[obj] = self.corrupt.get(obj, frozenset()) | hit

    # -- allocation -----------------------------------------------------------------------------

    def _take_freelist(self, pfn: int) -> list:
        slab = self.slabs[pfn]
        freelist = slab[3]
        slab[3] = []
        slab[4] = slab[2]
        slab[5] = bool(freelist)
        return freelist

    def _get_partial_node(self, s, cpu: int):
        lst = self.partial[s.name]
        if not lst:
            return None
        first, moved, taken = None, 0, 0
        for pfn in list(lst):
            taken += 1
            if first is None:
                first = pfn
                if s.cpu_partial_slabs == 0:
                    break
            else:
                self._put_cpu_partial(s, cpu, pfn, drain=False)
                moved += 1
                if moved > s.cpu_partial_slabs // 2:
                    break
        del lst[:taken]
        return first

    def _alloc(self, s, cpu: int) -> int:
        c = self.cpus[s.name][cpu]
        if c[0] >= 0 and c[1]:
            return c[0], c[1].pop()
        if c[0] >= 0:
            freelist = self._take_freelist(c[0])
            if freelist:
                c[1] = freelist
                return c[0], freelist.pop()
            c[0], c[1] = _NO_CPU, []
        if c[2]:
            pfn = c[2].pop()
        else:
            pfn = self._get_partial_node(s, cpu)
            if pfn is None:
                pfn = self._new_slab(s)
        freelist = self._take_freelist(pfn)
        c[0], c[1] = pfn, freelist
        return pfn, freelist.pop()

    def _debug_alloc(self, s) -> int:
        lst = self.partial[s.name]
        if lst:
            pfn = lst[0]
        else:
            pfn = self._new_slab(s)
            lst.insert(0, pfn)
        slab = self.slabs[pfn]
        addr = PAGE_OFFSET + (pfn << PAGE_SHIFT) + s.red_left_pad + slab[3][-1] * s.size
        if "CONSISTENCY_CHECKS" in s.flags:
            self._check_object(s, addr, active=False)
        slab[3].pop()
        slab[4] += 1
        if not slab[3]:
            lst.remove(pfn)
        self.corrupt.pop(addr, None)
        return addr

    def kmem_cache_alloc(self, name: str, cpu: int = 0) -> int:
        """``kmem_cache_alloc()`` on ``cpu``: the address of a free object."""
        s = self.caches[self._target(name)]
        self._check_cpu(cpu)
        if s.debug:
            return self._debug_alloc(s)
        pfn, index = self._alloc(s, cpu)
        return PAGE_OFFSET + (pfn << PAGE_SHIFT) + s.red_left_pad + index * s.size

    # -- free -----------------------------------------------------------------------------------

    def _check_free(self, s, addr, cpu: int):
        checks = "CONSISTENCY_CHECKS" in s.flags
        pfn = self._slab_of(addr)
        if pfn is None:
            raise EINVAL(f"kmem_cache_free: 0x{addr:x} is not a slab object" if _is_int(addr) else f"bad address {addr!r}")
        slab = self.slabs[pfn]
        if slab[0] != s.name:
            raise WrongSlabCache(f"kmem_cache_free: Wrong slab cache. {s.name} but object is from {slab[0]}")
        off = addr - (PAGE_OFFSET + (pfn << PAGE_SHIFT)) - s.red_left_pad
        quiet = "" if checks else " (not detected without slab_debug=F: the freelist would be corrupted)"
        if off < 0 or off % s.size or off // s.size >= slab[2]:
            raise InvalidObjectPointer(self._report(s, f"Invalid object pointer 0x{addr:x}") + quiet)
        index = off // s.size
        free = self._is_free(s, pfn, index)
        if free and checks and bugs.active_names() and bugs.active("slub-debug-double-free-missed"):
            free = slab[3][-1:] == [index]  # only the head is looked at
        if free:
            c = self.cpus[s.name][cpu]
            head = c[1][-1:] if c[0] == pfn else slab[3][-1:]
            if not checks and head == [index]:
                quiet = " (kernel BUG at mm/slub.c: set_freepointer() naive double-free detection)"
            raise DoubleFree(self._report(s, "Object already free") + f" (object 0x{addr:x})" + quiet)
        if checks:
            self._check_object(s, addr, active=True)
        return pfn, index

    def _free(self, s, cpu: int, pfn: int, index: int) -> None:
        c = self.cpus[s.name][cpu]
        if c[0] == pfn:
            if c[1] and bugs.active_names() and bugs.active("slub-freelist-loses-object"):
                c[1][-1] = index  # linked past the old head, which is lost
                return
            c[1].append(index)
            return
        slab = self.slabs[pfn]
        prior = bool(slab[3])
        slab[3].append(index)
        slab[4] -= 1
        if slab[5]:
            return
        if not prior:
            self._put_cpu_partial(s, cpu, pfn, drain=True)
            return
        lst = self.partial[s.name]
        if slab[4] == 0 and len(lst) >= s.min_partial and pfn in lst:
            lst.remove(pfn)
            self._discard(pfn)

    def _debug_free(self, s, pfn: int, index: int) -> None:
        slab = self.slabs[pfn]
        prior = bool(slab[3])
        slab[3].append(index)
        slab[4] -= 1
        lst = self.partial[s.name]
        discard = slab[4] == 0 and len(lst) >= s.min_partial
        if not prior and not discard:
            lst.append(pfn)
        elif prior and discard:
            lst.remove(pfn)
        if discard:
            self._discard(pfn)

    def kmem_cache_free(self, name: str, addr: int, cpu: int = 0) -> None:
        """``kmem_cache_free()`` on ``cpu``."""
        s = self.caches[self._target(name)]
        self._check_cpu(cpu)
        pfn, index = self._check_free(s, addr, cpu)
        if s.debug:
            self._debug_free(s, pfn, index)
            self.corrupt.pop(addr, None)
        else:
            self._free(s, cpu, pfn, index)

    # -- shrink and destroy ---------------------------------------------------------------------

    def kmem_cache_shrink(self, name: str) -> int:
        """``kmem_cache_shrink()``: 1 if slabs remain, else 0."""
        s = self.caches[self._target(name)]
        self._flush_all(s)
        discard, promote, rest = [], [[] for _ in range(SHRINK_PROMOTE_MAX)], []
        for pfn in self.partial[s.name]:
            slab = self.slabs[pfn]
            free = slab[2] - slab[4]
            if free == slab[2]:
                discard.insert(0, pfn)
            elif free <= SHRINK_PROMOTE_MAX:
                promote[free - 1].insert(0, pfn)
            else:
                rest.append(pfn)
        self.partial[s.name] = [p for bucket in promote for p in bucket] + rest
        for pfn in discard:
            self._discard(pfn)
        return int(any(slab[0] == s.name for slab in self.slabs.values()))

    def live_objects(self, name: str) -> int:
        """Objects of the cache handed out and not freed."""
        inuse = sum(slab[4] for slab in self.slabs.values() if slab[0] == name)
        return inuse - sum(len(c[1]) for c in self.cpus[name])

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
        self._flush_all(s)
        for pfn in reversed(self.partial[target]):
            self._discard(pfn)
        self.aliases = {a: t for a, t in self.aliases.items() if t != target}
        del self.caches[target], self.cpus[target], self.partial[target]
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
        c = self.cpus[s.name][cpu]
        base_off = PAGE_OFFSET + s.red_left_pad
        for i in range(int(n)):
            if c[0] >= 0 and c[1]:
                pfn, index = c[0], c[1].pop()
            else:
                pfn, index = self._alloc(s, cpu)
            out[i] = base_off + (pfn << PAGE_SHIFT) + index * s.size
        return out

    def free_many(self, addrs, cpu: int = 0) -> None:
        """Free objects of any caches in order, as repeated :meth:`kmem_cache_free` to their
        own caches would (stops at the first error, which is raised)."""
        self._check_cpu(cpu)
        for addr in np.asarray(addrs, dtype=np.uint64).tolist():
            pfn = self._slab_of(addr)
            if pfn is None:
                raise EINVAL(f"kmem_cache_free: 0x{addr:x} is not a slab object")
            self.kmem_cache_free(self.slabs[pfn][0], addr, cpu)

    # -- views and the abstraction function -------------------------------------------------------

    def abstract(self) -> SlubState:
        """The :class:`spec.slub.SlubState` this object represents."""
        slabs = Map({pfn: Slab(c, o, n, tuple(reversed(fl)), inuse, fz) for pfn, (c, o, n, fl, inuse, fz) in self.slabs.items()})
        cpus = Map({name: tuple(CpuSlab(p, tuple(reversed(fl)), tuple(reversed(pl))) for p, fl, pl in cs)
                    for name, cs in self.cpus.items()})
        return SlubState(
            self.config, self.buddy.abstract(), Map(self.caches), tuple(self.cache_list), Map(self.aliases),
            slabs, cpus, Map({k: tuple(v) for k, v in self.partial.items()}), Map(self.corrupt),
        )

    def slabinfo(self) -> str:
        """``/proc/slabinfo`` from the counters."""
        lines = [spec_slub.SLABINFO_HEADER]
        for name in reversed(self.cache_list):
            s = self.caches[name]
            mine = [sl for sl in self.slabs.values() if sl[0] == name]
            num = sum(sl[2] for sl in mine)
            free = sum(self.slabs[p][2] - self.slabs[p][4] for p in self.partial[name])
            lines.append(spec_slub.format_slabinfo_line(name, num - free, num, s.size, s.objects, 1 << s.order, len(mine)))
        return "".join(lines)

    def render(self) -> str:
        return spec_slub.render(self.abstract())
