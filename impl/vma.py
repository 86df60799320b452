"""VMAs on a mutable, indexed structure: the address-space layout at the scale of real processes.

The spec keeps the VMAs in a tuple and rebuilds it on every call.  Here an address space is a
:class:`VmaSpace`: the VMAs live in a ``sortedcontainers.SortedKeyList`` keyed by start (the
role the maple tree plays in Linux: ``find_vma`` in O(log n)), and the free gaps live in a
treap keyed by the start of the VMA above each gap, every node knowing the largest gap in its
subtree (the maple tree's gap tracking), so that top-down placement finds the highest gap that
fits in O(log n) instead of walking the VMAs (only non-empty gaps are stored).  Counters
(``locked_vm``, accounted pages, shmem charges, total_vm) are kept incrementally.

The hot path avoids Python-level work that does not scale or does not pay: neighbours are
found by bisecting the sorted list's blocks directly (never its positional index, which
sortedcontainers would otherwise rebuild after every change), the gap index is brought up to
date once per call around the boundaries that changed, and a new VMA is a copy of the old
one's field dict rather than a ``dataclasses.replace``.  :meth:`VmaSpace.calls` and
:meth:`VmaSpace.run` run a batch of calls with the cyclic garbage collector paused.

Every mutation goes through :meth:`VmaSpace._add` / :meth:`VmaSpace._drop`, which also log the
change; a system call that fails part way rolls its log back, so a failed call leaves the
object unchanged (the spec reports Linux's partial result separately, as ``error.partial``).

Defects (:data:`DEFECTS`, off by default):

- ``vma-merge-ignores-anon-vma``: the merge test forgets anon_vma compatibility, so VMAs with
  different anon_vmas (or a fork child's VMA and a fresh one) are glued together;
- ``vma-stack-guard-off-by-one``: stack growth refuses only when the gap to the VMA below is
  strictly smaller than ``stack_guard_gap`` minus a page.
"""

from __future__ import annotations

import gc
import random
from bisect import bisect_left, bisect_right
from contextlib import contextmanager
from dataclasses import fields

from sortedcontainers import SortedKeyList

from impl import bugs
from impl.bugs import Defect
from spec.errors import EACCES, EAGAIN, EEXIST, EFAULT, EINVAL, ENOMEM, EOPNOTSUPP, EPERM, MMError, SIGSEGV
from spec.mman import (
    LEGACY_MAP_MASK, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_GROWSDOWN, MAP_HUGETLB,
    MAP_LOCKED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE, MAP_STACK, MAP_TYPE,
    MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT, MREMAP_DONTUNMAP, MREMAP_FIXED,
    MREMAP_MAYMOVE, PROT_EXEC, PROT_READ, PROT_SEM, PROT_WRITE,
    MADV_COLD, MADV_DODUMP, MADV_DOFORK, MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE, MADV_MERGEABLE, MADV_PAGEOUT, MADV_POPULATE_READ,
    MADV_POPULATE_WRITE, MADV_REMOVE, MADV_WIPEONFORK,
)
from spec.vma import _MADV_FLAG_EFFECTS, _MADV_PAGE_ADVICE
from spec.vma import (
    ADMIN_RESERVE_KBYTES, ID_SHIFT, OVERCOMMIT_ALWAYS, OVERCOMMIT_GUESS, OVERCOMMIT_NEVER,
    PMD_SIZE, USER_RESERVE_KBYTES, VM_ACCESS_FLAGS, VM_ACCOUNT, VM_DATA_DEFAULT_FLAGS,
    VM_DONTCOPY, VM_DONTEXPAND, VM_GROWSDOWN, VM_HUGETLB,
    VM_IO, VM_LOCKED, VM_LOCKED_MASK, VM_LOCKONFAULT, VM_MAYEXEC, VM_MAYREAD, VM_MAYSHARE,
    VM_MAYWRITE, VM_MERGEABLE, VM_NOHUGEPAGE, VM_NORESERVE, VM_PFNMAP, VM_READ,
    VM_SHARED, VM_SOFTDIRTY, VM_SPECIAL, VM_WIPEONFORK, VM_WRITE, FileRef, Mm, Vma,
    new_mm,
)
from spec.zone import PAGE_SHIFT, PAGE_SIZE

_CATCH = "mmspec.mechanisms.vma:catch"
DEFECTS = (
    Defect(
        "vma-merge-ignores-anon-vma",
        "vma",
        "is_mergeable_anon_vma() always says yes: adjacent VMAs with equal flags and contiguous "
        "pgoff merge even when their anon_vmas differ, or when one is a fork child's VMA with a "
        "non-singular anon_vma_chain, so rmap can no longer find the pages of one half.",
        "mm/vma.c is_mergeable_anon_vma(); cf. CVE-2022-42703 (anon_vma reuse)",
        _CATCH,
    ),
    Defect(
        "vma-stack-guard-off-by-one",
        "vma",
        "expand_downwards() enforces the stack guard gap one page short: a stack may grow to "
        "within stack_guard_gap - 1 page of the mapping below it.",
        "teaching defect (cf. CVE-2017-1000364, the Stack Clash fix that added stack_guard_gap)",
        _CATCH,
    ),
)

_MM_SETTINGS = tuple(f.name for f in fields(Mm) if f.name not in ("vmas", "locked_vm", "next_id", "brk", "seams"))
_TOP = 1 << 64  # key of the gap above the last VMA


# ---------------------------------------------------------------------------------------------
# The gap index: a treap keyed by the start of the VMA above each gap, augmented with the
# largest gap of each subtree.


class _Node:
    __slots__ = ("key", "lo", "hi", "size", "prio", "left", "right", "mx")

    def __init__(self, key, lo, hi, prio):
        self.key, self.lo, self.hi, self.prio = key, lo, hi, prio
        self.size = hi - lo
        self.left = self.right = None
        self.mx = self.size


def _pull(n):
    m = n.size
    if n.left is not None and n.left.mx > m:
        m = n.left.mx
    if n.right is not None and n.right.mx > m:
        m = n.right.mx
    n.mx = m


def _split(n, key):
    """(keys < key, keys >= key)."""
    if n is None:
        return None, None
    if n.key < key:
        a, b = _split(n.right, key)
        n.right = a
        _pull(n)
        return n, b
    a, b = _split(n.left, key)
    n.left = b
    _pull(n)
    return a, n


def _join(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if a.prio > b.prio:
        a.right = _join(a.right, b)
        _pull(a)
        return a
    b.left = _join(a, b.left)
    _pull(b)
    return b


class GapIndex:
    """Gaps ``[lo, hi)`` by key; :meth:`highest_fit` finds the highest gap of a given size.

    A treap (a binary search tree on keys, a heap on random priorities): an update of an
    existing gap walks one root-to-node path; an insertion splits only the subtree it lands in;
    a deletion joins the node's two subtrees in its place; every subtree knows its largest gap.
    Only non-empty gaps are stored: VMAs placed top-down sit back to back, and the empty gaps
    between them would otherwise fill the tree.
    """

    def __init__(self, seed=0):
        self.root = None
        self.nodes = {}
        self.rng = random.Random(seed)

    def _path(self, key):
        path, n = [], self.root
        while n is not None and n.key != key:
            path.append(n)
            n = n.left if key < n.key else n.right
        return path, n

    @staticmethod
    def _repull(path):
        """Recompute subtree maxima up the path, stopping where nothing changes any more."""
        for n in reversed(path):
            m = n.size
            left, right = n.left, n.right
            if left is not None and left.mx > m:
                m = left.mx
            if right is not None and right.mx > m:
                m = right.mx
            if m == n.mx:
                return
            n.mx = m

    def _replace_child(self, parent, key, new):
        if parent is None:
            self.root = new
        elif key < parent.key:
            parent.left = new
        else:
            parent.right = new

    def set(self, key, lo, hi):
        if hi <= lo:  # an empty gap (adjacent VMAs) can hold nothing: keep it out of the tree
            if key in self.nodes:
                self.discard(key)
            return
        node = self.nodes.get(key)
        if node is not None:
            if node.lo == lo and node.hi == hi:
                return
            path, node = self._path(key)
            node.lo, node.hi, node.size = lo, hi, hi - lo
            _pull(node)
            self._repull(path)
            return
        node = _Node(key, lo, hi, self.rng.random())
        self.nodes[key] = node
        path, n = [], self.root
        while n is not None and n.prio > node.prio:
            path.append(n)
            n = n.left if key < n.key else n.right
        node.left, node.right = _split(n, key)
        _pull(node)
        self._replace_child(path[-1] if path else None, key, node)
        self._repull(path)

    def discard(self, key):
        if self.nodes.pop(key, None) is None:
            return
        path, node = self._path(key)
        self._replace_child(path[-1] if path else None, key, _join(node.left, node.right))
        self._repull(path)

    def highest_fit(self, length, below_key):
        """The node with the largest key < ``below_key`` whose gap is at least ``length``."""
        return self._find(self.root, length, below_key)

    def _find(self, n, length, below_key):
        while n is not None:
            if n.mx < length:
                return None
            if n.key >= below_key:
                n = n.left
                continue
            hit = self._find(n.right, length, below_key)
            if hit is not None:
                return hit
            if n.size >= length:
                return n
            n = n.left
        return None


# ---------------------------------------------------------------------------------------------


def _is_fork_child(v):
    return v is not None and v.anon_vma is not None and len(v.chain) != 1


def _anon_ok(src_anon, src_vma, tgt):
    """Can a range carrying ``src_anon`` (from VMA ``src_vma``, or None for a new range) join
    ``tgt``?"""
    if bugs.active("vma-merge-ignores-anon-vma"):
        return True
    t = tgt.anon_vma
    if src_anon is None:
        return t is None or not _is_fork_child(tgt)
    if t is None:
        return not _is_fork_child(src_vma)
    return t == src_anon


def _joinable(lower, upper, anon, src_vma, src_is_lower):
    """lower.end == upper.start with compatible flags/file/pgoff and anon_vmas; ``anon`` and
    ``src_vma`` describe whichever side is the range being placed."""
    if lower.end != upper.start or lower.file != upper.file:
        return False
    if (lower.flags ^ upper.flags) & ~VM_SOFTDIRTY or lower.flags & VM_SPECIAL:
        return False
    if lower.pgoff + ((lower.end - lower.start) >> PAGE_SHIFT) != upper.pgoff:
        return False
    return _anon_ok(anon, src_vma, upper if src_is_lower else lower)


def _pair_ok(a, b):
    if bugs.active("vma-merge-ignores-anon-vma"):
        return True
    return a.anon_vma is None or b.anon_vma is None or a.anon_vma == b.anon_vma


@contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector for a batch (reference counting still frees
    everything the batch drops); it is re-enabled afterwards if it was on."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


_new_object = object.__new__
_set_attr = object.__setattr__


def replace(v, **changes):
    """``dataclasses.replace`` for a :class:`Vma`, without the generic machinery: a copy of its
    field dict with ``changes`` applied (the hot path builds several VMAs per call)."""
    d = v.__dict__.copy()
    d.update(changes)
    out = _new_object(Vma)
    _set_attr(out, "__dict__", d)
    return out


def _page_up(x):
    return -(-x // PAGE_SIZE) * PAGE_SIZE


class VmaSpace:
    """One address space; the spec's system calls as methods, ``abstract()`` the spec's Mm."""

    def __init__(self, config=None, **settings):
        base = new_mm(**dict(config or {}), **settings) if not isinstance(config, Mm) else config
        for name in _MM_SETTINGS:
            setattr(self, name, getattr(base, name))
        self.brk_ = base.brk
        self.next_id = base.next_id
        self.vmas = SortedKeyList(key=lambda v: v.start)
        self.gaps = GapIndex()
        self.locked_vm = 0
        self.total_pages = 0
        self.account_pages = 0
        self.shmem = {}  # FileRef -> number of VMAs mapping it (charged ones only)
        self.log = None
        self.dirty = set()
        self.seams = set(base.seams)
        self.gaps.set(_TOP, PAGE_SIZE, self.task_size)
        for v in base.vmas:
            self._add(v)
        self._flush()

    # --- structure primitives --------------------------------------------------------------

    # The sorted list's blocks are searched directly (its ``_maxes``/``_keys``/``_lists``):
    # positional indexing would build and maintain sortedcontainers' index tree on every change.

    def _floor(self, x):
        """The VMA with the largest start <= ``x``, or None."""
        sl = self.vmas
        maxes = sl._maxes
        if not maxes:
            return None
        b = bisect_left(maxes, x)
        if b == len(maxes):
            return sl._lists[-1][-1]
        j = bisect_right(sl._keys[b], x)
        if j:
            return sl._lists[b][j - 1]
        return sl._lists[b - 1][-1] if b else None

    def _ceil(self, x):
        """The VMA with the smallest start >= ``x``, or None."""
        sl = self.vmas
        maxes = sl._maxes
        b = bisect_left(maxes, x)
        if b == len(maxes):
            return None
        return sl._lists[b][bisect_left(sl._keys[b], x)]

    def _flush(self):
        """Bring the gap index up to date around every boundary a change touched.

        ``dirty`` holds the start and end addresses of each VMA added or dropped.  The gap of a
        VMA depends on its own start and flags and on the end of the VMA below it, so the gaps
        that can have changed are those of the first VMA at or above each such address (or the
        gap at the top); a gap keyed by an address where no VMA starts any more goes.
        """
        sl = self.vmas
        maxes, keys, lists = sl._maxes, sl._keys, sl._lists
        n = len(maxes)
        gaps = self.gaps
        nodes = gaps.nodes
        for x in self.dirty:
            b = bisect_left(maxes, x)
            if b == n:
                v, prev = None, (lists[-1][-1] if n else None)
            else:
                j = bisect_left(keys[b], x)
                v = lists[b][j]
                prev = lists[b][j - 1] if j else (lists[b - 1][-1] if b else None)
            # the gap below v (or the gap at the top): from the end of the VMA below to v's start,
            # lowered by the guard gap when v grows down
            lo = prev.end if prev is not None and prev.end > PAGE_SIZE else PAGE_SIZE
            if v is None:
                key, hi = _TOP, self.task_size
            else:
                key = hi = v.start
                if v.flags & VM_GROWSDOWN:
                    hi = max(hi - self.stack_guard_gap, 0)
            if hi > lo:
                node = nodes.get(key)
                if node is None or node.lo != lo or node.hi != hi:
                    gaps.set(key, lo, hi)
            elif key in nodes:
                gaps.discard(key)
            if x in nodes and (v is None or v.start != x):
                gaps.discard(x)
        self.dirty.clear()

    def _count(self, v, sign):
        pages = (v.end - v.start) >> PAGE_SHIFT
        self.total_pages += sign * pages
        if v.flags & VM_LOCKED:
            self.locked_vm += sign * pages
        if v.flags & VM_ACCOUNT:
            self.account_pages += sign * pages
        if v.file is not None and v.file.shmem and not v.flags & VM_NORESERVE:
            n = self.shmem.get(v.file, 0) + sign
            if n:
                self.shmem[v.file] = n
            else:
                del self.shmem[v.file]

    def _add(self, v, mark=True):
        self.vmas.add(v)
        self._count(v, 1)
        if mark:
            dirty = self.dirty
            dirty.add(v.start)
            dirty.add(v.end)
        if self.log is not None:
            self.log.append((1, v))

    def _drop(self, v, mark=True):
        sl, k = self.vmas, v.start
        b = bisect_left(sl._maxes, k)
        sl._delete(b, bisect_left(sl._keys[b], k))
        self._count(v, -1)
        if mark:
            dirty = self.dirty
            dirty.add(k)
            dirty.add(v.end)
        if self.log is not None:
            self.log.append((0, v))

    def _swap(self, old, *new):
        self._drop(old)
        for v in new:
            self._add(v)

    def _retile(self, olds, news):
        """Replace the back-to-back VMAs ``olds`` by ``news`` covering exactly the same range
        (both in address order).  No gap changes, so the gap index is left alone, unless the
        lowest VMA gains or loses VM_GROWSDOWN (which moves the guard gap below it)."""
        mark = bool((olds[0].flags ^ news[0].flags) & VM_GROWSDOWN)
        for v in olds:
            self._drop(v, mark)
        for v in news:
            self._add(v, mark)

    def _txn(self, fn, *args):
        """Run ``fn`` with an undo log: on any error every change is undone."""
        # seams are replaced, never changed in place, so the saved reference is a snapshot
        saved = (self.log, self.next_id, self.brk_, self.def_flags, self.committed_base, self.seams)
        self.log = []
        try:
            return fn(*args)
        except BaseException:
            log, self.log = self.log, None
            for added, v in reversed(log):
                if added:
                    self._drop(v)
                else:
                    self._add(v)
            _, self.next_id, self.brk_, self.def_flags, self.committed_base, self.seams = saved
            raise
        finally:
            self.log = saved[0]
            if self.dirty:
                self._flush()
            if self.seams:
                self.seams = {s for s in self.seams if self._is_boundary(s)}

    def _is_boundary(self, s):
        v, prev = self._ceil(s), self._floor(s - 1)
        return v is not None and v.start == s and prev is not None and prev.end == s

    # --- queries -------------------------------------------------------------------------------

    def find_vma(self, addr):
        v = self._floor(addr)
        if v is not None and v.end > addr:
            return v
        return self._ceil(addr + 1)

    def vma_at(self, addr):
        v = self._floor(addr)
        return v if v is not None and v.end > addr else None

    def _intersects(self, start, end):
        v = self.find_vma(start)
        return v is not None and v.start < end

    def _covering(self, start, end):
        """VMAs meeting [start, end), in order (a snapshot)."""
        sl = self.vmas
        maxes, keys, lists = sl._maxes, sl._keys, sl._lists
        if not maxes:
            return []
        b = bisect_left(maxes, start)
        if b == len(maxes):
            b -= 1
            j = len(keys[b])
        else:
            j = bisect_left(keys[b], start)  # (b, j): the first VMA starting at or above start
        out = []
        below = lists[b][j - 1] if j else (lists[b - 1][-1] if b else None)
        if below is not None and below.end > start:
            out.append(below)
        while b < len(lists):
            block = lists[b]
            while j < len(block):
                v = block[j]
                if v.start >= end:
                    return out
                out.append(v)
                j += 1
            b, j = b + 1, 0
        return out

    def committed_as(self):
        return self.committed_base + self.account_pages + sum(f.size for f in self.shmem)

    def abstract(self):
        """The spec's Mm for this address space."""
        settings = {name: getattr(self, name) for name in _MM_SETTINGS}
        return Mm(vmas=tuple(self.vmas), next_id=self.next_id, brk=self.brk_, locked_vm=self.locked_vm,
                  seams=frozenset(self.seams), **settings)

    def __len__(self):
        return len(self.vmas)

    # --- policy helpers --------------------------------------------------------------------------

    def _new_id(self):
        n = self.next_id
        self.next_id += 1
        return (self.pid << ID_SHIFT) | n

    def _enough(self, pages):
        if pages <= 0 or self.overcommit_memory == OVERCOMMIT_ALWAYS:
            return
        if self.overcommit_memory == OVERCOMMIT_GUESS:
            if pages > self.totalram_pages + self.total_swap_pages:
                raise ENOMEM("overcommit: request larger than RAM + swap")
            return
        if self.overcommit_kbytes:
            limit = self.overcommit_kbytes // (PAGE_SIZE // 1024)
        else:
            limit = self.totalram_pages * self.overcommit_ratio // 100
        limit += self.total_swap_pages
        if not self.cap_sys_admin:
            limit -= ADMIN_RESERVE_KBYTES // (PAGE_SIZE // 1024)
        limit -= min(self.total_pages // 32, USER_RESERVE_KBYTES // (PAGE_SIZE // 1024))
        if self.committed_as() + pages >= limit:
            raise ENOMEM("overcommit: CommitLimit reached")

    def _lock_ok(self, flags, nbytes):
        if not flags & VM_LOCKED or self.cap_ipc_lock:
            return True
        return self.locked_vm + nbytes // PAGE_SIZE <= self.rlimit_memlock // PAGE_SIZE

    # --- merging ---------------------------------------------------------------------------------

    def _place(self, new, from_vma=False, expand_only=False):
        """Insert a range that overlaps nothing, merging it with its neighbours if possible."""
        prev = self._floor(new.start - 1)
        if prev is not None and prev.end != new.start:
            prev = None
        nxt = self._ceil(new.start)
        if nxt is not None and nxt.start != new.end:
            nxt = None
        if new.flags & VM_SPECIAL:
            prev = nxt = None
        src = new if from_vma else None
        left = prev is not None and _joinable(prev, new, new.anon_vma, src, False)
        right = (nxt is not None and not expand_only and _joinable(new, nxt, new.anon_vma, src, True)
                 and (not left or _pair_ok(prev, nxt)))
        if left and right:
            grown = self._inherit(replace(prev, end=nxt.end), new, nxt)
            self._drop(nxt)
            self._swap(prev, grown)
        elif left:
            self._swap(prev, self._inherit(replace(prev, end=new.end), new))
        elif right:
            self._swap(nxt, self._inherit(replace(nxt, start=new.start, pgoff=new.pgoff), new))
        else:
            self._add(new)

    @staticmethod
    def _inherit(target, *others):
        if target.anon_vma is not None:
            return target
        for o in others:
            if o.anon_vma is not None:
                return replace(target, anon_vma=o.anon_vma, chain=o.chain)
        return target

    @staticmethod
    def _piece(v, start, end):
        return replace(v, start=start, end=end, pgoff=v.pgoff + (start - v.start) // PAGE_SIZE)

    def _reflag(self, v, start, end, flags):
        """vma_modify_flags on [start, end) within v."""
        at_start, at_end = start == v.start, end == v.end
        prev = self._floor(v.start - 1) if at_start else None
        if prev is not None and prev.end != start:
            prev = None
        nxt = self._ceil(v.end) if at_end else None
        if nxt is not None and nxt.start != end:
            nxt = None
        mid = replace(self._piece(v, start, end), flags=flags)
        if flags & VM_SPECIAL:
            prev = nxt = None
        left = prev is not None and _joinable(prev, mid, v.anon_vma, v, False)
        right = nxt is not None and _joinable(mid, nxt, v.anon_vma, v, True) and (not left or _pair_ok(prev, nxt))
        if left or right:
            lo = prev.start if left else start
            hi = nxt.end if right else end
            keeper = prev if left else nxt
            merged = self._inherit(replace(keeper, start=lo, end=hi, pgoff=keeper.pgoff if left else mid.pgoff), v, *(
                [nxt] if left and right else []))
            olds = [prev] if left else []
            olds.append(v)
            if right:
                olds.append(nxt)
            news = [] if at_start else [self._piece(v, v.start, start)]
            news.append(merged)
            if not at_end:
                news.append(self._piece(v, end, v.end))
            self._retile(olds, news)
            return
        pieces = []
        count = len(self.vmas)
        if not at_start:
            if count >= self.max_map_count:
                raise ENOMEM("split: max_map_count")
            count += 1
        if not at_end and count >= self.max_map_count:
            if not at_start:
                self._retile([v], [self._piece(v, v.start, start), self._piece(v, start, v.end)])
            raise ENOMEM("split: max_map_count")
        if not at_start:
            pieces.append(self._piece(v, v.start, start))
        pieces.append(mid)
        if not at_end:
            pieces.append(self._piece(v, end, v.end))
        self._retile([v], pieces)

    def _cut_out(self, start, end):
        """munmap's core: remove [start, end), splitting the VMAs at its edges."""
        if end <= start:
            return
        hit = self._covering(start, end)
        if not hit:
            return
        first, last = hit[0], hit[-1]
        if first.start < start < first.end and end < first.end and len(self.vmas) >= self.max_map_count:
            raise ENOMEM("munmap: max_map_count")
        for v in hit:
            self._drop(v)
        if first.start < start:
            self._add(self._piece(first, first.start, start))
        if last.end > end:
            self._add(self._piece(last, end, last.end))

    # --- placement -------------------------------------------------------------------------------

    def _top_down(self, length):
        if self.dirty:
            self._flush()
        above = self._ceil(self.mmap_base)
        key = above.start if above is not None else _TOP
        node = self.gaps.nodes.get(key)
        if node is not None:
            top = min(node.hi, self.mmap_base)
            if top - node.lo >= length:
                return top - length
        node = self.gaps.highest_fit(length, key)
        return None if node is None else node.hi - length

    def _bottom_up(self, length):
        addr = _page_up(self.task_size // 3)
        for v in self.vmas.irange_key(min_key=0):
            if v.end <= addr:
                continue
            limit = v.start
            if v.flags & VM_GROWSDOWN:
                limit = max(limit - self.stack_guard_gap, 0)
            if addr + length <= limit:
                return addr
            addr = max(addr, v.end)
        return addr if addr + length <= self.task_size else None

    def _search(self, hint, length):
        if hint:
            hint -= hint % PAGE_SIZE
            if length <= self.task_size and hint <= self.task_size - length:
                nxt = self.find_vma(hint)
                if nxt is None:
                    return hint
                limit = nxt.start
                if nxt.flags & VM_GROWSDOWN:
                    limit = max(limit - self.stack_guard_gap, 0)
                if hint + length <= limit:
                    return hint
        addr = self._top_down(length)
        if addr is None:
            addr = self._bottom_up(length)
        if addr is None:
            raise ENOMEM("no room")
        return addr

    def _area(self, addr, length, fixed, thp):
        if length > self.task_size:
            raise ENOMEM("longer than TASK_SIZE")
        if fixed:
            found = addr
        elif thp:
            top = self._top_down(length + PMD_SIZE)
            if top is not None:
                gap_top = top + length + PMD_SIZE
                found = (gap_top - length) // PMD_SIZE * PMD_SIZE
            else:
                found = self._search(0, length)
        else:
            found = self._search(addr, length)
        if found > self.task_size - length:
            raise ENOMEM("beyond TASK_SIZE")
        if found % PAGE_SIZE:
            raise EINVAL("unaligned")
        if found < self.mmap_min_addr and not self.cap_sys_rawio:
            raise EPERM("below mmap_min_addr")
        return found

    # --- system calls ----------------------------------------------------------------------------

    def mmap(self, addr, length, prot, flags, file=None, pgoff=0):
        _ints(addr, length, prot, flags, pgoff)
        if file is not None and not isinstance(file, FileRef):
            raise EINVAL("bad file")
        return self._txn(self._mmap, addr, length, prot, flags, file, pgoff)

    def _mmap(self, addr, length, prot, flags, file, pgoff):
        if flags & MAP_ANONYMOUS:
            file = None
        fixed = bool(flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))
        if length == 0 or addr < 0 or pgoff < 0:
            raise EINVAL("mmap: bad argument")
        if length < 0 or _page_up(length) > self.task_size:
            raise ENOMEM("mmap: too long")
        if flags & MAP_HUGETLB:
            raise EINVAL("hugetlb")
        if not fixed and addr and addr - addr % PAGE_SIZE < self.mmap_min_addr:
            addr = _page_up(self.mmap_min_addr)
        length = _page_up(length)
        if len(self.vmas) > self.max_map_count:
            raise ENOMEM("map count")
        vm = (prot & 7) | self.def_flags | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
        vm |= (VM_GROWSDOWN if flags & MAP_GROWSDOWN else 0) | (VM_LOCKED if flags & MAP_LOCKED else 0)
        vm |= VM_NOHUGEPAGE if flags & MAP_STACK else 0
        kind = flags & MAP_TYPE
        shared = kind in (MAP_SHARED, MAP_SHARED_VALIDATE)
        addr = self._area(addr, length, fixed, not addr and file is None and not shared and length % PMD_SIZE == 0)
        if flags & MAP_FIXED_NOREPLACE and self._intersects(addr, addr + length):
            raise EEXIST("occupied")
        if flags & MAP_LOCKED and self.rlimit_memlock == 0 and not self.cap_ipc_lock:
            raise EPERM("no mlock")
        if not self._lock_ok(vm, length):
            raise EAGAIN("mlock limit")
        if file is not None and kind == MAP_SHARED_VALIDATE and flags & ~LEGACY_MAP_MASK:
            raise EOPNOTSUPP("unsupported flag")
        if not (kind in (MAP_SHARED, MAP_PRIVATE) or (file is not None and kind == MAP_SHARED_VALIDATE)):
            raise EINVAL("bad type")
        if shared and file is None and vm & VM_GROWSDOWN:
            raise EINVAL("growsdown shared")
        if shared:
            vm |= VM_SHARED | VM_MAYSHARE
        if file is None:
            pgoff = 0 if shared else addr // PAGE_SIZE
        if flags & MAP_NORESERVE and self.overcommit_memory != OVERCOMMIT_NEVER:
            vm |= VM_NORESERVE
        self._cut_out(addr, addr + length)
        if (vm & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE:
            self._enough(length // PAGE_SIZE)
            vm |= VM_ACCOUNT
        if file is None and shared:
            file = FileRef(self._new_id(), "/dev/zero (deleted)", "00:01", True, length // PAGE_SIZE)
            if not vm & VM_NORESERVE:
                self._enough(length // PAGE_SIZE)
        self._place(Vma(addr, addr + length, vm, file, pgoff))
        return addr

    def munmap(self, addr, length):
        _ints(addr, length)
        if addr % PAGE_SIZE or addr > self.task_size or length > self.task_size - addr or length <= 0:
            raise EINVAL("munmap")
        self._txn(self._cut_out, addr, addr + _page_up(length))
        return 0

    def _each(self, start, end, newflags, check=None, skip_holes=False):
        """The mprotect/mlock/madvise loop over the pieces of [start, end)."""
        first = self.find_vma(start)
        if first is None or (not skip_holes and first.start > start):
            raise ENOMEM("unmapped start")
        pos, hole, v = start, False, first
        while pos < end:
            if v is None or v.start >= end:
                break
            if v.start > pos:
                if not skip_holes:
                    raise ENOMEM("hole")
                hole = True
            lo, hi = max(pos, v.start), min(end, v.end)
            if check is not None:
                check(v)
            flags = newflags(v, lo, hi)
            if flags != v.flags:
                self._reflag(v, lo, hi, flags)
            pos = hi
            if pos < end:
                v = self.find_vma(pos)
        if pos < end or hole:
            raise ENOMEM("range not mapped")

    def mprotect(self, addr, length, prot):
        _ints(addr, length, prot)
        if addr % PAGE_SIZE or prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM):
            raise EINVAL("mprotect")
        if length == 0:
            return 0
        end = addr + _page_up(length)
        if length < 0 or end <= addr:
            raise ENOMEM("wrap")
        bits = prot & 7

        def check(v):
            new = bits | (v.flags & ~VM_ACCESS_FLAGS)
            if bits & ~(new >> 4) & VM_ACCESS_FLAGS:
                raise EACCES("VM_MAY*")

        def newflags(v, lo, hi):
            new = bits | (v.flags & ~VM_ACCESS_FLAGS)
            if new == v.flags:
                return new
            if new & VM_WRITE:
                if not v.flags & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE):
                    self._enough((hi - lo) // PAGE_SIZE)
                    new |= VM_ACCOUNT
            elif v.flags & VM_ACCOUNT and v.file is None and v.anon_vma is None:
                new &= ~VM_ACCOUNT
            return new

        self._txn(self._each, addr, end, newflags, check)
        return 0

    def madvise(self, addr, length, advice):
        _ints(addr, length, advice)
        if advice not in _ADVICE:
            raise EINVAL("advice")
        if addr % PAGE_SIZE or length < 0:
            raise EINVAL("madvise")
        end = addr + _page_up(length)
        if end == addr:
            return 0
        clear, add = _ADVICE[advice]
        if advice in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
            need = VM_WRITE if advice == MADV_POPULATE_WRITE else VM_READ

            def check_pop(v):
                if v.flags & (VM_IO | VM_PFNMAP) or not v.flags & need:
                    raise EINVAL("populate")

            self._txn(self._each, addr, end, lambda v, lo, hi: v.flags, check_pop)
            return 0

        def newflags(v, lo, hi):
            if advice == MADV_MERGEABLE and v.flags & (VM_MERGEABLE | VM_SHARED | VM_MAYSHARE | VM_SPECIAL | VM_HUGETLB):
                return v.flags
            return (v.flags & ~clear) | add

        def check(v):
            _advice_refusal(advice, v)

        try:
            self._txn(self._each, addr, end, newflags, check, True)
        except ENOMEM as err:
            if "max_map_count" in str(err):
                raise EAGAIN("madvise split") from None
            raise
        return 0

    def _lock(self, start, end, add):
        def newflags(v, lo, hi):
            if v.flags & (VM_SPECIAL | VM_HUGETLB):
                return v.flags
            return (v.flags & ~VM_LOCKED_MASK) | add

        if self.log is None:
            self._txn(self._each, start, end, newflags)
        else:
            self._each(start, end, newflags)

    def mlock(self, addr, length, flags=0):
        _ints(addr, length, flags)
        if flags & ~MLOCK_ONFAULT or addr < 0 or length < 0:
            raise EINVAL("mlock2")
        if self.rlimit_memlock == 0 and not self.cap_ipc_lock:
            raise EPERM("mlock")
        off = addr % PAGE_SIZE
        start, length = addr - off, _page_up(length + off)
        end = start + length
        limit = self.rlimit_memlock // PAGE_SIZE
        want = length // PAGE_SIZE + self.locked_vm
        if want > limit and not self.cap_ipc_lock:
            for v in self._covering(start, end):
                if v.flags & VM_LOCKED:
                    want -= (min(end, v.end) - max(start, v.start)) // PAGE_SIZE
            if want > limit:
                raise ENOMEM("RLIMIT_MEMLOCK")
        if end == start:
            return 0
        self._txn(self._lock_populate, start, end, VM_LOCKED | (VM_LOCKONFAULT if flags & MLOCK_ONFAULT else 0))
        return 0

    def _lock_populate(self, start, end, add):
        self._lock(start, end, add)
        for v in self._covering(start, end):
            if not v.flags & (VM_ACCESS_FLAGS | VM_LOCKONFAULT | VM_IO | VM_PFNMAP):
                raise ENOMEM("mlock: PROT_NONE cannot be populated")

    def munlock(self, addr, length):
        _ints(addr, length)
        if addr < 0 or length < 0:
            raise EINVAL("munlock")
        off = addr % PAGE_SIZE
        start, length = addr - off, _page_up(length + off)
        if length:
            self._lock(start, start + length, 0)
        return 0

    def mlockall(self, flags):
        _ints(flags)
        if not flags or flags & ~(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) or flags == MCL_ONFAULT:
            raise EINVAL("mlockall")
        if self.rlimit_memlock == 0 and not self.cap_ipc_lock:
            raise EPERM("mlockall")
        if flags & MCL_CURRENT and self.total_pages > self.rlimit_memlock // PAGE_SIZE and not self.cap_ipc_lock:
            raise ENOMEM("mlockall")
        self._txn(self._lockall, flags)
        return 0

    def _lockall(self, flags):
        onfault = VM_LOCKONFAULT if flags & MCL_ONFAULT else 0
        self.def_flags = (self.def_flags & ~VM_LOCKED_MASK) | (VM_LOCKED | onfault if flags & MCL_FUTURE else 0)
        if flags & MCL_FUTURE and not flags & MCL_CURRENT:
            return
        add = VM_LOCKED | onfault if flags & MCL_CURRENT else 0
        pos = 0
        while True:
            v = self.find_vma(pos)
            if v is None:
                break
            pos = v.end
            if v.flags & (VM_SPECIAL | VM_HUGETLB):
                continue
            new = (v.flags & ~VM_LOCKED_MASK) | add
            if new != v.flags:
                try:
                    self._reflag(v, v.start, v.end, new)
                except ENOMEM:
                    pass

    def munlockall(self):
        self._txn(self._lockall, 0)
        return 0

    def brk(self, new):
        _ints(new)
        old = self.brk_
        if new < self.start_brk:
            return old
        nb, ob = _page_up(new), _page_up(old)
        if nb == ob:
            self.brk_ = new
            return new
        try:
            self._txn(self._brk, new, nb, ob)
        except MMError:
            return old
        self.brk_ = new
        return new

    def _brk(self, new, nb, ob):
        if new <= self.brk_:
            v = self.find_vma(nb)
            if v is None or v.start >= ob:
                raise ENOMEM("no brk vma")
            self._cut_out(nb, ob)
            return
        length = nb - ob
        if nb > self.task_size or not self._lock_ok(self.def_flags, length):
            raise ENOMEM("brk limits")
        nxt = self.find_vma(ob)
        if nxt is not None:
            limit = nxt.start - (self.stack_guard_gap if nxt.flags & VM_GROWSDOWN else 0)
            if nb + PAGE_SIZE > max(limit, 0):
                raise ENOMEM("brk hits a mapping")
        if len(self.vmas) > self.max_map_count:
            raise ENOMEM("map count")
        self._enough(length // PAGE_SIZE)
        flags = VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT | self.def_flags
        new_vma = Vma(ob, nb, flags, None, ob // PAGE_SIZE)
        below = self._floor(ob - 1)
        if below is not None and below.end == ob and below.end > self.start_brk and _joinable(below, new_vma, None, None, False) \
                and not flags & VM_SPECIAL:
            self._swap(below, replace(below, end=nb))
        else:
            self._add(new_vma)

    def anon_vma_prepare(self, addr):
        v = self.vma_at(addr)
        if v is None:
            raise EFAULT("no vma")
        if v.anon_vma is not None:
            return None
        nxt = self._ceil(v.end)
        prev = self._floor(v.start - 1)
        reuse = None
        for lower, upper, other in ((v, nxt, nxt), (prev, v, prev)):
            if other is None or other.anon_vma is None or len(other.chain) != 1:
                continue
            if lower.end == upper.start and lower.file == upper.file \
                    and not (lower.flags ^ upper.flags) & ~(VM_ACCESS_FLAGS | VM_SOFTDIRTY) \
                    and upper.pgoff == lower.pgoff + (upper.start - lower.start) // PAGE_SIZE:
                reuse = other.anon_vma
                break
        if reuse is None:
            reuse = self._new_id()
        self._retile([v], [replace(v, anon_vma=reuse, chain=(reuse,))])
        return None

    def expand_stack(self, addr):
        _ints(addr)
        return self._txn(self._expand_stack, addr)

    def _expand_stack(self, addr):
        addr -= addr % PAGE_SIZE
        v = self.find_vma(addr)
        if v is not None and v.start <= addr:
            return None
        if v is None or not v.flags & VM_GROWSDOWN:
            raise SIGSEGV("no stack")
        if addr < self.mmap_min_addr:
            raise SIGSEGV("below mmap_min_addr")
        prev = self._floor(v.start - 1)
        if prev is not None and not prev.flags & VM_GROWSDOWN and prev.flags & VM_ACCESS_FLAGS:
            gap = self.stack_guard_gap - (PAGE_SIZE if bugs.active("vma-stack-guard-off-by-one") else 0)
            if addr - prev.end < gap:
                raise SIGSEGV("guard gap")
        grow = (v.start - addr) // PAGE_SIZE
        if grow > v.pgoff or v.end - addr > self.rlimit_stack or not self._lock_ok(v.flags, grow * PAGE_SIZE):
            raise SIGSEGV("limits")
        self.anon_vma_prepare(v.start)
        v = self.vma_at(v.start)
        if v.flags & VM_ACCOUNT:
            try:
                self._enough(grow)
            except ENOMEM:
                raise SIGSEGV("not chargeable") from None
        self._swap(v, replace(v, start=addr, pgoff=v.pgoff - grow))
        return None

    def fault(self, addr, write):
        """A user access (see spec.vma.fault): stack growth, SIGSEGV, anon_vma on write."""
        _ints(addr)
        return self._txn(self._fault, addr, write)

    def _fault(self, addr, write):
        v = self.vma_at(addr)
        if v is None:
            self._expand_stack(addr)
            v = self.vma_at(addr)
        if not v.flags & (VM_WRITE if write else VM_READ):
            raise SIGSEGV("access error")
        if write and not v.flags & VM_SHARED:
            self.anon_vma_prepare(addr)
        return 0

    def mremap(self, old_addr, old_len, new_len, flags, new_addr=0):
        _ints(old_addr, old_len, new_len, flags, new_addr)
        return self._txn(self._mremap, old_addr, old_len, new_len, flags, new_addr)

    def _mremap(self, old_addr, old_len, new_len, flags, new_addr):
        if flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP):
            raise EINVAL("flags")
        if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
            raise EINVAL("fixed without maymove")
        if flags & MREMAP_DONTUNMAP and (not flags & MREMAP_MAYMOVE or old_len != new_len):
            raise EINVAL("dontunmap")
        if old_addr % PAGE_SIZE or old_addr < 0 or old_len < 0 or new_len < 0:
            raise EINVAL("unaligned")
        old_len, new_len = _page_up(old_len), _page_up(new_len)
        if not new_len:
            raise EINVAL("zero")
        if flags & MREMAP_FIXED:
            if new_addr % PAGE_SIZE or new_addr < 0:
                raise EINVAL("unaligned new")
            if new_len > self.task_size or new_addr > self.task_size - new_len:
                raise EINVAL("beyond")
            if new_addr < old_addr + old_len and old_addr < new_addr + new_len:
                raise EINVAL("overlap")
        v = self.vma_at(old_addr)
        if v is None:
            raise EFAULT("no vma")
        if not flags & (MREMAP_FIXED | MREMAP_DONTUNMAP) and new_len <= old_len:
            self._cut_out(old_addr + new_len, old_addr + old_len)
            return old_addr
        if old_len == 0:
            if not v.flags & VM_MAYSHARE:
                raise EINVAL("dup of private")
        elif old_len > v.end - old_addr and not (flags & MREMAP_FIXED and new_len <= old_len):
            raise EFAULT("spans")
        if v.flags & (VM_DONTEXPAND | VM_PFNMAP) and new_len > old_len:
            raise EFAULT("special")
        if v.flags & VM_LOCKED and not self._lock_ok(v.flags, new_len - old_len):
            raise EAGAIN("mlock limit")
        if flags & MREMAP_FIXED:
            self._cut_out(new_addr, new_addr + new_len)
            if old_len > new_len:
                self._cut_out(old_addr + new_len, old_addr + old_len)
                old_len = new_len
            v = self.vma_at(old_addr)
            if v is None:
                raise EFAULT("gone")
            if old_addr + old_len > v.end:
                for x in self._covering(old_addr, old_addr + old_len):
                    lo, hi = max(x.start, old_addr), min(x.end, old_addr + old_len)
                    self._move(self.vma_at(lo), lo, hi - lo, hi - lo, flags, new_addr + (lo - old_addr))
                return new_addr
            return self._move(v, old_addr, old_len, new_len, flags, new_addr)
        if old_len >= new_len and not flags & MREMAP_DONTUNMAP:
            self._cut_out(old_addr + new_len, old_addr + old_len)
            return old_addr
        delta = new_len - old_len
        if not flags & MREMAP_DONTUNMAP and old_addr + old_len == v.end and v.end + delta <= self.task_size \
                and not self._intersects(v.end, v.end + delta):
            if v.flags & VM_ACCOUNT:
                self._enough(delta // PAGE_SIZE)
            nxt = self._ceil(v.end)
            ext = Vma(v.end, v.end + delta, v.flags, v.file, v.pgoff + (v.end - v.start) // PAGE_SIZE, v.anon_vma, v.chain, v.name)
            if nxt is not None and nxt.start == ext.end and not v.flags & VM_SPECIAL \
                    and _joinable(ext, nxt, v.anon_vma, None, True) and _pair_ok(v, nxt):
                grown = self._inherit(replace(v, end=nxt.end), nxt)
                self._drop(nxt)
            else:
                grown = replace(v, end=v.end + delta)
            self._swap(v, grown)
            return old_addr
        if not flags & MREMAP_MAYMOVE:
            raise ENOMEM("cannot grow")
        shared = bool(v.flags & VM_MAYSHARE)
        target = self._area(0, new_len, False, v.file is None and not shared and new_len % PMD_SIZE == 0)
        return self._move(v, old_addr, old_len, new_len, flags, target)

    def _move(self, v, old_addr, old_len, new_len, flags, new_addr):
        if len(self.vmas) >= self.max_map_count - 3:
            raise ENOMEM("map count")
        if v.flags & VM_ACCOUNT:
            if flags & MREMAP_DONTUNMAP:
                self._enough(new_len // PAGE_SIZE)
            elif new_len > old_len:
                self._enough((new_len - old_len) // PAGE_SIZE)
        pgoff = v.pgoff + (old_addr - v.start) // PAGE_SIZE
        if v.file is None and v.anon_vma is None:
            pgoff = new_addr // PAGE_SIZE
        moved = Vma(new_addr, new_addr + new_len, v.flags, v.file, pgoff, v.anon_vma, v.chain, v.name)
        if flags & MREMAP_DONTUNMAP:
            self.seams = self.seams | {old_addr, old_addr + old_len}  # a new set: _txn keeps the old one
            if old_addr == v.start and old_len == v.end - v.start:
                self._swap(v, replace(v, flags=v.flags & ~VM_LOCKED_MASK, anon_vma=None, chain=()))
            else:
                self._reflag(v, old_addr, old_addr + old_len, v.flags & ~VM_LOCKED_MASK)
        elif old_len:
            self._cut_out(old_addr, old_addr + old_len)
        self._place(moved)
        return new_addr

    def fork_child(self, child_pid):
        """fork, then continue as the child: this object becomes the child's address space."""
        _ints(child_pid)
        if child_pid == self.pid or child_pid <= 0:
            raise EINVAL("pid")
        charge = sum((v.end - v.start) // PAGE_SIZE for v in self.vmas if v.flags & VM_ACCOUNT and not v.flags & VM_DONTCOPY)
        self._enough(charge)
        parent_committed = self.committed_as()
        self.pid, self.next_id = child_pid, 1
        kept = []
        for v in self.vmas:
            if v.flags & VM_DONTCOPY:
                continue
            c = replace(v, flags=v.flags & ~VM_LOCKED_MASK)
            if v.flags & VM_WIPEONFORK or v.anon_vma is None:
                c = replace(c, anon_vma=None, chain=())
            else:
                n = self._new_id()
                c = replace(c, anon_vma=n, chain=(*v.chain, n))
            kept.append(c)
        self.def_flags &= VM_NOHUGEPAGE
        self.vmas = SortedKeyList(key=lambda v: v.start)
        self.gaps = GapIndex()
        self.gaps.set(_TOP, PAGE_SIZE, self.task_size)
        self.locked_vm = self.total_pages = self.account_pages = 0
        self.shmem = {}
        self.seams = set()
        self.dirty = set()
        for c in kept:
            self._add(c)
        self._flush()
        for a, b in zip(kept, kept[1:]):
            if a.end == b.start and _joinable(a, b, b.anon_vma, b, False) and _joinable(a, b, a.anon_vma, a, True):
                self.seams.add(a.end)
        self.committed_base = parent_committed - sum(f.size for f in self.shmem)
        return 0

    def calls(self, trace):
        """Run a batch of system calls ``(name, args)`` (byte addresses, as the methods take
        them) and return each one's result, or its errno name when it is refused.

        The batch runs with the cyclic garbage collector paused (and restored after): a call
        allocates a handful of VMAs and gap nodes, and with tens of thousands of long-lived
        VMAs the collector's periodic full scans would otherwise cost more than the calls.
        """
        out = []
        append = out.append
        methods = {}
        with _gc_paused():
            for op, args in trace:
                f = methods.get(op)
                if f is None:
                    f = methods[op] = getattr(self, op)
                try:
                    append(f(*args))
                except MMError as err:
                    append(type(err).__name__)
        return out

    def run(self, program, base=None):
        """Run a program (the oracle's step format) and return each step's return value."""
        with _gc_paused():
            return self._run(program, base)

    def _run(self, program, base):
        from spec.vma import WINDOW_BASE

        base = WINDOW_BASE if base is None else base
        out = []
        for step in program:
            op, *a = step
            pg = lambda n: n * PAGE_SIZE  # noqa: E731
            try:
                if op == "mmap":
                    r = (self.mmap(base + pg(a[0]), pg(a[1]), a[2], a[3]) - base) // PAGE_SIZE
                elif op == "mmap_file":
                    from spec.vma import memfd

                    r = (self.mmap(base + pg(a[0]), pg(a[1]), a[2], a[3], memfd(a[4]), a[5]) - base) // PAGE_SIZE
                elif op == "munmap":
                    r = self.munmap(base + pg(a[0]), pg(a[1]))
                elif op == "mprotect":
                    r = self.mprotect(base + pg(a[0]), pg(a[1]), a[2])
                elif op == "mremap":
                    to = base + pg(a[4]) if a[3] & MREMAP_FIXED else 0
                    r = (self.mremap(base + pg(a[0]), pg(a[1]), pg(a[2]), a[3], to) - base) // PAGE_SIZE
                elif op == "madvise":
                    r = self.madvise(base + pg(a[0]), pg(a[1]), a[2])
                elif op in ("mlock", "mlock2"):
                    r = self.mlock(base + pg(a[0]), pg(a[1]), a[2] if op == "mlock2" else 0)
                elif op == "munlock":
                    r = self.munlock(base + pg(a[0]), pg(a[1]))
                elif op == "touch":
                    for p in range(a[0], a[0] + a[1]):
                        self.fault(base + pg(p), a[2])
                    r = 0
                elif op == "brk":
                    r = self.brk(self.brk_ + a[0])
                elif op == "fork":
                    r = self.fork_child(self.pid + 1)
                else:
                    raise EINVAL(op)
            except MMError as err:
                r = type(err).__name__
            out.append(r)
        return out


#: advice -> (VM_* flags cleared, VM_* flags set): the spec's table, plus the page-level advice
#: (and MADV_POPULATE_*) that change no flag
_ADVICE = {**_MADV_FLAG_EFFECTS,
           **{a: (0, 0) for a in _MADV_PAGE_ADVICE | {MADV_POPULATE_READ, MADV_POPULATE_WRITE}}}


def _advice_refusal(advice, v):
    f = v.flags
    refusals = (
        (advice == MADV_DOFORK and f & VM_IO, EINVAL),
        (advice == MADV_WIPEONFORK and (v.file is not None or f & VM_SHARED), EINVAL),
        (advice == MADV_DODUMP and f & VM_SPECIAL, EINVAL),
        (advice in (MADV_DONTNEED, MADV_FREE) and f & (VM_LOCKED | VM_PFNMAP), EINVAL),
        (advice == MADV_DONTNEED_LOCKED and f & VM_PFNMAP, EINVAL),
        (advice == MADV_FREE and v.file is not None, EINVAL),
        (advice in (MADV_COLD, MADV_PAGEOUT) and f & (VM_LOCKED | VM_PFNMAP | VM_HUGETLB), EINVAL),
        (advice == MADV_REMOVE and (f & VM_LOCKED or v.file is None), EINVAL),
        (advice == MADV_REMOVE and not (f & VM_SHARED and f & VM_WRITE), EACCES),
    )
    for refused, error in refusals:
        if refused:
            raise error(f"madvise {advice} refused")


def _ints(*values):
    for v in values:
        if type(v) is not int:
            raise EINVAL(f"not an integer: {v!r}")
