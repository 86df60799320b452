"""Crash-state enumeration at speed: the fast twin of :mod:`spec.pmem` and :mod:`spec.pmemtx`.

:class:`PmemMachine` executes the same instructions as the spec and keeps the trace in arrays.
The crash semantics is computed once per trace by numba kernels on **bitsets** (rows of
``uint64`` words, one bit per event): the propagation order (``_prop``), the persist-before
requirements and their closure, and the durable roots (``_semantics``).

**Full enumeration on packed rows.**  Stores to one cache line persist in trace order, so a
persisted set is fully described by one *version* per line (how many of its stores reached
NVM): an image is a row of small integers, one per line that a crash point leaves undecided.
:meth:`_Trace.versions` generates all rows of a crash point by mixed-radix counting over the
lines' allowed version ranges, pruned level by level with the persist-before constraints
(each version of a line requires minimum versions of other lines, precomputed from the
closures), in numpy: a level is a handful of array operations on every partial row at once,
and no level holds more rows than the answer.  The rows stay packed (:class:`ImageBatch`): a
predicate reads ``batch.word(w)`` -- one gather over all rows -- and returns one bool per row
(:func:`check_all`; :func:`tx_atomicity` is the undo-log recovery and atomicity check written
so).  The spec's representation (frozensets of word tuples, or persisted sets of event
indices) is built only on request (:func:`enumerate_crashes`, :meth:`ImageBatch.persisted`),
for the lockstep tests.

**Lazy checking.**  Enumerating every image is exponential in the number of unordered stores:
64 stores to 64 lines with no fence between them leave 2^64 images.  :func:`check` does not
enumerate images.  After Jaaru (Gorjiara, Xu, Demsky, ASPLOS 2021) it runs the recovery and the
predicate on a *lazy* image: a word that is read for the first time is given each of its
possible values in turn, branching only when more than one is possible; words recovery
overwrites, and words with one possible value, never branch.  A branch is a constraint "line L
persisted between lo and hi of its stores"; a set of such constraints is feasible iff the
closure of their lower bounds stays within every upper bound, which is one OR of precomputed
closures per line.  An undo-log transaction of 64 stores is checked at every crash point in
milliseconds.

:class:`TxPool` is the undo-log library of :mod:`spec.pmemtx` on a machine; it carries the
defects below (each off by default).

>>> m = PmemMachine(pmem.PmemConfig(words=16))
>>> m.store(0, 0, 1); m.store(0, 64, 1)
>>> sorted(m.crash())
[(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0), (1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), (1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0)]
>>> m.abstract() == pmem.store(pmem.store(pmem.init(pmem.PmemConfig(words=16)), 0, 0, 1)[0], 0, 64, 1)[0]
True
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

try:
    from numba import njit
except ImportError as exc:  # pragma: no cover
    raise ImportError("impl.pmem needs numba") from exc

from impl import bugs
from impl.bugs import Defect
from spec import pmem, pmemtx
from spec.errors import EINVAL
from spec.pmem import CACHELINE, KINDS, WORD, WORDS_PER_LINE, Event, PmemConfig, PmemState

_CATCH = "mmspec.mechanisms.pmem:catch"

DEFECTS = (
    Defect("pmem-tx-no-clwb-before-commit", "pmem",
           "The transaction library fences but never CLWBs the data lines before writing the commit "
           "record, so the commit can persist while the data is still in the cache.",
           "teaching defect (pmemcheck: 'store not made persistent')", _CATCH),
    Defect("pmem-tx-no-sfence-after-log", "pmem",
           "No SFENCE between persisting the log header and the first data store: a data store can "
           "persist before the log that would undo it is valid.",
           "teaching defect (PMDK undo-log ordering rule)", _CATCH),
    Defect("pmem-tx-flush-before-store", "pmem",
           "The library issues CLWB for a data line before the store it should cover, so the flush "
           "writes back the old line and the new value is never flushed.",
           "teaching defect (pmemcheck: flush of a clean line, then an unflushed store)", _CATCH),
    Defect("pmem-tx-nt-no-fence", "pmem",
           "Non-temporal data stores are not followed by SFENCE before the commit record: NT stores are "
           "weakly ordered, so the commit can persist first.",
           "teaching defect (Intel SDM: WC stores are ordered only by fences)", _CATCH),
    Defect("pmem-tx-commit-before-durable", "pmem",
           "The commit record is stored before the data's CLWB+SFENCE, so the one fence that follows "
           "orders neither against the other: the commit may persist before the data.",
           "teaching defect (libpmemobj commit protocol)", _CATCH),
)

CODE = {k: i for i, k in enumerate(KINDS)}
ST, NT, RMW, LD, FL, FO, WB, SF, MF = (CODE[k] for k in KINDS)

ONE = np.uint64(1)


# ---------------------------------------------------------------------------------------------
# Kernels on bitsets


@njit(cache=True)
def _bit(row, j):
    return (row[j >> 6] >> np.uint64(j & 63)) & np.uint64(1)


@njit(cache=True)
def _set(row, j):
    row[j >> 6] |= np.uint64(1) << np.uint64(j & 63)


@njit(cache=True)
def _is_store(k):
    return k == 0 or k == 1 or k == 2


@njit(cache=True)
def _ordered(a, b, same):
    if a == 8 or b == 8 or a == 2 or b == 2:  # mfence, rmw
        return True
    if a == 3:  # load first
        return True
    if b == 3:
        return False
    if a == 7 or b == 7:  # sfence
        return True
    if a == 1 or b == 1 or a == 5 or b == 5 or a == 6 or b == 6:  # nt, clflushopt, clwb
        return same
    return True


@njit(cache=True)
def _rf(kind, addr, n):
    rf = np.full(n, -1, np.int64)
    for i in range(n):
        if kind[i] == 3 or kind[i] == 2:
            for j in range(i - 1, -1, -1):
                if _is_store(kind[j]) and addr[j] == addr[i]:
                    rf[i] = j
                    break
    return rf


@njit(cache=True)
def _edge(kind, tid, addr, rf, j, i):
    a, b = kind[j], kind[i]
    if tid[j] == tid[i]:
        return _ordered(a, b, addr[j] >= 0 and addr[i] >= 0 and (addr[j] >> 6) == (addr[i] >> 6))
    if addr[j] >= 0 and addr[i] >= 0 and a != 3 and b != 3 and (addr[j] >> 6) == (addr[i] >> 6):
        return True
    if _is_store(a) and (b == 3 or b == 2) and addr[j] == addr[i]:
        return rf[i] == j
    if (a == 3 or a == 2) and _is_store(b) and addr[j] == addr[i]:
        return True
    return False


@njit(cache=True)
def _prop(kind, tid, addr, n, W):
    rf = _rf(kind, addr, n)
    preds = np.zeros((n, W), np.uint64)
    for i in range(n):
        for j in range(i - 1, -1, -1):
            if _bit(preds[i], j):
                continue
            if _edge(kind, tid, addr, rf, j, i):
                for w in range(W):
                    preds[i, w] |= preds[j, w]
                _set(preds[i], j)
    return preds


@njit(cache=True)
def _semantics(kind, addr, preds, n, W, eadr, synchronous):
    """Per event: cov (stores a flush writes back), req (persist-before, direct), full (closure
    of req, with itself), contrib (durable roots the event adds, closed)."""
    cov = np.zeros((n, W), np.uint64)
    req = np.zeros((n, W), np.uint64)
    full = np.zeros((n, W), np.uint64)
    contrib = np.zeros((n, W), np.uint64)
    for i in range(n):
        flushlike = kind[i] == 1 or kind[i] == 4 or kind[i] == 5 or kind[i] == 6
        if flushlike:
            for j in range(i):
                if _bit(preds[i], j) and _is_store(kind[j]) and (addr[j] >> 6) == (addr[i] >> 6):
                    _set(cov[i], j)
            if kind[i] == 1:
                _set(cov[i], i)
        if _is_store(kind[i]):
            for j in range(i):
                if not _bit(preds[i], j):
                    continue
                if eadr:
                    if _is_store(kind[j]):
                        _set(req[i], j)
                else:
                    if _is_store(kind[j]) and (addr[j] >> 6) == (addr[i] >> 6):
                        _set(req[i], j)
                    if kind[j] == 1 or kind[j] == 4 or kind[j] == 5 or kind[j] == 6:
                        for w in range(W):
                            req[i, w] |= cov[j, w]
            for w in range(W):
                full[i, w] = req[i, w]
            for j in range(i):
                if _bit(req[i], j):
                    for w in range(W):
                        full[i, w] |= full[j, w]
            _set(full[i], i)
        if synchronous:
            if kind[i] == 4:
                for w in range(W):
                    contrib[i, w] |= cov[i, w]
            if kind[i] == 7 or kind[i] == 8 or kind[i] == 2 or (eadr and kind[i] == 4):
                for j in range(i):
                    if _bit(preds[i], j):
                        if eadr:
                            if _is_store(kind[j]):
                                _set(contrib[i], j)
                        elif kind[j] == 1 or kind[j] == 4 or kind[j] == 5 or kind[j] == 6:
                            for w in range(W):
                                contrib[i, w] |= cov[j, w]
                if eadr and kind[i] == 2:
                    _set(contrib[i], i)
            for j in range(i + 1):
                if _bit(contrib[i], j):
                    for w in range(W):
                        contrib[i, w] |= full[j, w]
    return cov, req, full, contrib


@njit(cache=True)
def _need_counts(full, stores, store_line, nlines):
    """For each store (by rank), how many stores of each line its closure holds: the version
    every line must have reached before that store may persist (itself included)."""
    S = len(stores)
    out = np.zeros((S, nlines), np.int64)
    for a in range(S):
        row = full[stores[a]]
        for b in range(a + 1):
            if _bit(row, stores[b]):
                out[a, store_line[b]] += 1
    return out


@njit(cache=True)
def _enumerate_point(lo, hi, need, deps, ptr, out, start):
    """Every row of line versions one crash point allows, written from ``out[start]``: mixed-
    radix counting over the free lines (``lo < hi``), depth first, pruned as it goes.  A line
    may take version ``v`` only if ``v`` is at least what the lines already chosen require of
    it (``low``) and ``v`` requires no more of them than they have (``need[line, v]``).  Lines
    with one possible version constrain nothing: their version is every store issued, or the
    durable closure, which is closed.  Every partial row extends to a full one (a union of
    closed sets is closed), so the search never backtracks out of a dead end.  Returns the
    number of rows (written only while they fit)."""
    nl = len(lo)
    cap = out.shape[0]
    free = np.empty(nl, np.int64)
    pos = np.full(nl, -1, np.int64)
    m = 0
    for L in range(nl):
        if hi[L] > lo[L]:
            free[m] = L
            pos[L] = m
            m += 1
    row = lo.copy()
    if m == 0:
        if start < cap:
            for c in range(nl):
                out[start, c] = row[c]
        return 1
    low = np.empty((m + 1, nl), np.int64)
    low[0, :] = lo
    cur = np.empty(m + 1, np.int64)
    cur[0] = lo[free[0]]
    count = 0
    d = 0
    while d >= 0:
        if d == m:
            if start + count < cap:
                for c in range(nl):
                    out[start + count, c] = row[c]
            count += 1
            d -= 1
            continue
        L = free[d]
        v = cur[d]
        if v > hi[L]:
            d -= 1
            continue
        cur[d] = v + 1
        ok = True
        for e in range(ptr[L], ptr[L + 1]):
            q = deps[e]
            if pos[q] >= 0 and pos[q] < d and need[L, v, q] > row[q]:
                ok = False
                break
        if not ok:
            continue
        row[L] = v
        for j in range(d + 1, m):
            c = free[j]
            low[d + 1, c] = max(low[d, c], need[L, v, c])
        d += 1
        if d < m:
            nxt = free[d]
            cur[d] = max(lo[nxt], low[d, nxt])
    return count


@njit(cache=True)
def _enumerate_points(LO, HI, need, deps, ptr, out):
    """:func:`_enumerate_point` for each crash point (a row of ``LO``/``HI``), back to back."""
    P = LO.shape[0]
    counts = np.zeros(P, np.int64)
    start = 0
    for i in range(P):
        counts[i] = _enumerate_point(LO[i], HI[i], need, deps, ptr, out, start)
        start += counts[i]
    return counts


@njit(cache=True)
def _all_bounds(contrib, kind, stores, store_line, nl, n, W):
    """For every crash point k = 0..n: per line, how many of its stores the durable closure
    holds (``lo``) and how many were issued (``hi``)."""
    lo = np.zeros((n + 1, nl), np.int64)
    hi = np.zeros((n + 1, nl), np.int64)
    roots = np.zeros(W, np.uint64)
    issued = np.zeros(nl, np.int64)
    for k in range(n + 1):
        hi[k, :] = issued
        for a in range(len(stores)):
            s = stores[a]
            if s >= k:
                break
            if _bit(roots, s):
                lo[k, store_line[a]] += 1
        if k < n:
            for w in range(W):
                roots[w] |= contrib[k, w]
            if _is_store(kind[k]):
                for a in range(len(stores)):
                    if stores[a] == k:
                        issued[store_line[a]] += 1
    return lo, hi


# ---------------------------------------------------------------------------------------------
# Python side


def _row_int(row) -> int:
    return sum(int(w) << (64 * i) for i, w in enumerate(row))


class _Trace:
    """The semantics of one trace, computed once: the bitsets of the kernels above, and per
    cache line its chain of stores (stores to one line persist in trace order, so how far a
    line got is one *version* number), what each version requires of every other line
    (``need``), and the line's eight words at each version (``values``)."""

    def __init__(self, config: PmemConfig, initial, events) -> None:
        n = len(events)
        self.n, self.config, self.events = n, config, events
        self.W = max(1, (n + 63) // 64)
        self.kind = np.array([CODE[e.kind] for e in events], np.int64)
        self.addr = np.array([e.addr for e in events], np.int64)
        self.tid = np.array([e.tid for e in events], np.int64)
        self.value = np.array([e.value for e in events], np.int64)
        self.initial = np.array(initial, np.int64)
        preds = _prop(self.kind, self.tid, self.addr, n, self.W)
        self.cov, self.req, self.full, self.contrib = _semantics(
            self.kind, self.addr, preds, n, self.W, config.domain == "eadr", config.synchronous
        )
        self.stores = [i for i in range(n) if self.kind[i] <= RMW]
        st = np.array(self.stores, np.int64)
        self.store_idx = st
        self.lines, self.store_line = np.unique(self.addr[st] >> 6, return_inverse=True)
        self.store_line = self.store_line.astype(np.int64)
        nl = len(self.lines)
        self.line_pos = {int(L): p for p, L in enumerate(self.lines)}
        need = _need_counts(self.full, st, self.store_line, nl)
        version = np.zeros(len(st), np.int64)  # the version of its line a store's persisting makes
        seen = np.zeros(nl, np.int64)
        for a, p in enumerate(self.store_line.tolist()):
            seen[p] += 1
            version[a] = seen[p]
        self.chain_len = seen
        V = int(seen.max(initial=0)) + 1
        # need[line, v, other]: the version ``other`` must have reached for ``line`` to be at v
        self.need = np.zeros((nl, V, nl), np.int32)
        self.need[self.store_line, version] = need
        # values[line, v]: the line's eight words at version v (versions past its chain unused)
        padded = np.zeros(-(-len(initial) // WORDS_PER_LINE) * WORDS_PER_LINE, np.int64)
        padded[: len(initial)] = self.initial  # the region's last line may be partial
        self.values = np.repeat(padded.reshape(-1, WORDS_PER_LINE)[self.lines][:, None, :], V, axis=1)
        for a, (p, v) in enumerate(zip(self.store_line.tolist(), version.tolist(), strict=True)):
            self.values[p, v:, (int(self.addr[st[a]]) >> 3) % WORDS_PER_LINE] = self.value[st[a]]
        # per line: the words no store changes
        self.constant = (self.values == self.values[:, :1, :]).all(axis=1)
        dep = self.need.any(axis=1)
        np.fill_diagonal(dep, False)
        self.deps_ptr = np.concatenate([[0], np.cumsum(dep.sum(axis=1))]).astype(np.int64)
        self.deps = np.nonzero(dep)[1].astype(np.int64)
        self._possible: dict[int, set[int]] = {}

    @property
    def chain(self) -> list[np.ndarray]:
        """Per line, its stores' event indices in trace order."""
        if not hasattr(self, "_chain"):
            self._chain = [self.store_idx[self.store_line == p] for p in range(len(self.lines))]
        return self._chain

    def full_int(self) -> list[int]:
        """The closures as Python integers (for the lazy checker's many small ORs)."""
        if not hasattr(self, "_full_int"):
            self._full_int = [_row_int(self.full[i]) for i in range(self.n)]
        return self._full_int

    def roots(self, k: int) -> np.ndarray:
        r = np.zeros(self.W, np.uint64)
        if k:
            r = np.bitwise_or.reduce(self.contrib[:k], axis=0)
        return r

    def bounds(self, points) -> tuple[np.ndarray, np.ndarray]:
        """Per crash point (events executed) and line, the lowest and highest version a crash
        there can leave: the count of the line's stores in the closure of the durable roots,
        and of its stores issued.  Two ``(len(points), lines)`` arrays."""
        if not hasattr(self, "_bounds"):
            self._bounds = _all_bounds(self.contrib, self.kind, self.store_idx, self.store_line,
                                       len(self.lines), self.n, self.W)
        pts = np.asarray(points, np.int64)
        return self._bounds[0][pts], self._bounds[1][pts]

    def versions(self, points, bounds=None) -> ImageBatch:
        """Every persisted set of a crash after ``k`` events, for each ``k`` in ``points`` (or
        the one point ``points``), as rows of line versions."""
        pts = [points] if isinstance(points, (int, np.integer)) else list(points)
        lo, hi = self.bounds(pts) if bounds is None else bounds
        need, deps, ptr = self.need, self.deps, self.deps_ptr
        dtype = np.uint8 if hi.max(initial=0) < 255 else np.uint16
        cap = max(1, min(int(np.prod(hi - lo + 1, axis=1, dtype=np.float64).sum()), 1 << 16))
        while True:
            out = np.empty((cap, len(self.lines)), dtype)
            counts = _enumerate_points(lo, hi, need, deps, ptr, out)
            total = int(counts.sum())
            if total <= cap:
                break
            cap = total
        offsets = np.concatenate([[0], np.cumsum(counts)])
        rows = np.ascontiguousarray(out[:total].T).T  # column-major: word() reads one column
        return ImageBatch(self, pts, rows, offsets)

    def images(self, k: int) -> np.ndarray:
        """The image of every persisted set of a crash after ``k`` events (rows; two sets can
        give one image)."""
        return self.versions(k).images()


class ImageBatch:
    """The crash images of some crash points, packed: one row of line versions (how many of
    each line's stores persisted) per persisted set; rows ``offsets[i]:offsets[i + 1]`` belong
    to crash point ``points[i]``.

    ``word(w)`` is word ``w`` of every image at once (an array, or a plain int when no store
    changes it), so a predicate written with numpy operations checks all images in one pass;
    ``images()`` unpacks rows into full NVM images, ``persisted(i)`` into the spec's persisted
    set of event indices."""

    def __init__(self, trace: _Trace, points, rows, offsets) -> None:
        self.trace, self.points, self.rows, self.offsets = trace, points, rows, offsets
        self._words: dict[int, object] = {}
        self._uniform: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def point_of(self, rows) -> np.ndarray:
        """The crash point of each of ``rows`` (row indices)."""
        return np.asarray(self.points)[np.searchsorted(self.offsets, rows, side="right") - 1]

    def word(self, w: int):
        if w not in self._words:
            self._words[w] = self._word(w)
        return self._words[w]

    def _word(self, w: int):
        t = self.trace
        p = t.line_pos.get((w * WORD) >> 6)
        if p is None:
            return int(t.initial[w])
        column = t.values[p][:, w % WORDS_PER_LINE]
        if t.constant[p, w % WORDS_PER_LINE]:
            return int(column[0])
        v = self.uniform(p)
        if v >= 0:
            return int(column[v])
        return np.take(column, self.rows[:, p])

    def uniform(self, p: int) -> int:
        """Line ``p``'s version if every row has the same one, else -1."""
        if p not in self._uniform:
            col = self.rows[:, p]
            lo = int(col.min()) if len(col) else 0
            self._uniform[p] = lo if not len(col) or int(col.max()) == lo else -1
        return self._uniform[p]

    def constant_image(self) -> np.ndarray:
        """Every image's words where no store changes them (other words: their initial value)."""
        t = self.trace
        if not hasattr(t, "_constant_image"):
            img = t.initial.copy()
            for p, L in enumerate(t.lines):
                lo = int(L) * WORDS_PER_LINE
                n = min(WORDS_PER_LINE, len(img) - lo)
                img[lo : lo + n] = t.values[p, 0, :n]
            t._constant_image = img
        return t._constant_image

    def varying(self) -> list[int]:
        """The words some store changes (their value may differ between images)."""
        t = self.trace
        if not hasattr(t, "_varying"):
            p, o = np.nonzero(~t.constant)
            t._varying = (t.lines[p] * WORDS_PER_LINE + o).tolist()
        return t._varying

    def possible(self, w: int) -> set[int]:
        """The values word ``w`` can hold in these images (a superset: every version's)."""
        t = self.trace
        if w not in t._possible:
            p = t.line_pos.get((w * WORD) >> 6)
            if p is None:
                t._possible[w] = {int(t.initial[w])}
            else:
                t._possible[w] = {int(x) for x in t.values[p, : t.chain_len[p] + 1, w % WORDS_PER_LINE]}
        return t._possible[w]

    def images(self, select=slice(None)) -> np.ndarray:
        """The full NVM images of the rows ``select`` picks (all by default), one per row."""
        t = self.trace
        rows, words = self.rows[select], len(t.initial)
        out = np.empty((len(rows), -(-words // WORDS_PER_LINE) * WORDS_PER_LINE), np.int64)
        out[:, :words] = t.initial
        for p, L in enumerate(t.lines):
            lo = int(L) * WORDS_PER_LINE
            out[:, lo : lo + WORDS_PER_LINE] = t.values[p][rows[:, p]]
        return out[:, :words]

    def persisted(self, i: int) -> frozenset[int]:
        """Row ``i`` as the spec's persisted set (event indices)."""
        t = self.trace
        return frozenset(int(s) for p in range(len(t.lines)) for s in t.chain[p][: int(self.rows[i, p])])


class _Branch(BaseException):
    """Raised inside recovery when a read word has several possible values (not an Exception,
    so a recovery's own ``except Exception`` cannot swallow it)."""

    def __init__(self, alternatives) -> None:
        self.alternatives = alternatives


class _LazyPoint:
    """The crash point ``k`` of a trace, as constraints on how far each line persisted."""

    def __init__(self, trace: _Trace, k: int) -> None:
        self.trace, self.k = trace, k
        self.full = trace.full_int()
        self.roots = _row_int(trace.roots(k))
        self.chain: dict[int, list[int]] = {}
        for s in trace.stores:
            if s < k:
                self.chain.setdefault(int(trace.addr[s]) >> 6, []).append(s)
        self.linemask = {L: sum(1 << s for s in c) for L, c in self.chain.items()}

    def closure(self, assign) -> int:
        c = self.roots
        for L, (lo, _) in assign.items():
            if lo:
                c |= self.full[self.chain[L][lo - 1]]
        return c

    def feasible(self, assign) -> bool:
        c = self.closure(assign)
        return all((c & self.linemask.get(L, 0)).bit_count() <= hi for L, (_, hi) in assign.items())

    def candidates(self, w: int, assign):
        """``(value, lo, hi)`` for each possible last persisted store to word ``w``."""
        L = (w * WORD) >> 6
        chain = self.chain.get(L, ())
        pos = [p for p, s in enumerate(chain) if self.trace.addr[s] == w * WORD]
        lo0, hi0 = assign.get(L, (0, len(chain)))
        if not pos:
            return L, [(int(self.trace.initial[w]), lo0, hi0)]  # never stored: no new constraint
        vals = [(int(self.trace.initial[w]), 0, pos[0] if pos else len(chain))]
        for i, p in enumerate(pos):
            vals.append((int(self.trace.value[chain[p]]), p + 1, pos[i + 1] if i + 1 < len(pos) else len(chain)))
        out = []
        for v, lo, hi in vals:
            lo, hi = max(lo, lo0), min(hi, hi0)
            if lo <= hi and self.feasible({**assign, L: (lo, hi)}):
                out.append((v, lo, hi))
        return L, out

    def witness(self, assign) -> tuple[int, ...]:
        c = self.closure(assign)
        img = [int(v) for v in self.trace.initial]
        for s in self.trace.stores:
            if s < self.k and c >> s & 1:
                img[int(self.trace.addr[s]) // WORD] = int(self.trace.value[s])
        return tuple(img)


class _LazyMem:
    def __init__(self, point: _LazyPoint, assign) -> None:
        self.point, self.assign, self.overlay = point, dict(assign), {}

    def __getitem__(self, w: int) -> int:
        if w in self.overlay:
            return self.overlay[w]
        L, cands = self.point.candidates(w, self.assign)
        if len(cands) == 1:
            v, lo, hi = cands[0]
            if L in self.point.chain:
                self.assign[L] = (lo, hi)  # the only possibility: a constraint, not a branch
            return v
        if len({v for v, _, _ in cands}) == 1:
            return cands[0][0]  # every possibility reads the same value
        raise _Branch([{**self.assign, L: (lo, hi)} for _, lo, hi in cands])

    def __setitem__(self, w: int, v: int) -> None:
        self.overlay[w] = v

    def __len__(self) -> int:
        return len(self.point.trace.initial)


def _explore(point: _LazyPoint, recovery, predicate):
    """Depth-first over the reads: (first violating witness image or None, leaves explored)."""
    stack, leaves = [{}], 0
    while stack:
        assign = stack.pop()
        mem = _LazyMem(point, assign)
        try:
            if recovery is not None:
                recovery(mem)
            ok = predicate(mem)
        except _Branch as b:
            stack.extend(reversed(b.alternatives))
            continue
        leaves += 1
        if not ok:
            return point.witness(mem.assign), leaves
    return None, leaves


def _as_trace(state) -> _Trace:
    """The semantics of a spec state's or a machine's trace (memoised per trace, as the spec
    memoises its relations)."""
    if isinstance(state, _Trace):
        return state
    if isinstance(state, PmemMachine):
        return state.trace()
    return _trace_of(state.config, state.initial, state.events)


@lru_cache(maxsize=64)
def _trace_of(config: PmemConfig, initial, events) -> _Trace:
    return _Trace(config, initial, events)


def enumerate_crashes(state, k: int | None = None) -> frozenset[tuple[int, ...]]:
    """Every crash image after the first ``k`` events (default: all) of a spec state or machine,
    in the spec's representation (a frozenset of word tuples)."""
    t = _as_trace(state)
    return frozenset(map(tuple, np.unique(t.images(t.n if k is None else k), axis=0).tolist()))


def check(state, recovery, predicate, stats: dict | None = None) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """Lazily check every crash point: ``(point, image)`` for each point with an image that
    ``predicate`` rejects after ``recovery`` (one witness image per point)."""
    t = _as_trace(state)
    out, leaves = [], 0
    for k in range(t.n + 1):
        witness, n = _explore(_LazyPoint(t, k), recovery, predicate)
        leaves += n
        if witness is not None:
            out.append((k, witness))
    if stats is not None:
        stats["leaves"] = stats.get("leaves", 0) + leaves
        stats["points"] = stats.get("points", 0) + t.n + 1
    return tuple(out)


def check_all(state, predicate, points=None, stats: dict | None = None, batch_rows: int = 1 << 16):
    """Enumerate every image of every crash point (or of ``points``) as packed rows and run a
    *vectorised* ``predicate(batch)`` (an :class:`ImageBatch`) that returns one bool per row
    (or one bool for all); ``(point, first rejected image)`` for each point with a rejected
    image.  Crash points are enumerated together, about ``batch_rows`` rows at a time.
    Exponential in the unordered stores, like the spec, but an image costs a few array
    operations, not a Python object."""
    t = _as_trace(state)
    pts = list(range(t.n + 1) if points is None else points)
    lo, hi = t.bounds(pts) if pts else (np.zeros((0, 0)), np.zeros((0, 0)))
    sizes = np.prod((hi - lo + 1).astype(np.float64), axis=1) if pts else []
    groups, group, rows_in = [], [], 0.0
    for i, size in enumerate(sizes):
        if group and rows_in + size > batch_rows:
            groups.append(group)
            group, rows_in = [], 0.0
        group.append(i)
        rows_in += size
    if group:
        groups.append(group)
    rows = 0
    found: dict[int, tuple[int, ...]] = {}
    for group in groups:
        whole = t.versions([pts[i] for i in group], (lo[group], hi[group]))
        rows += len(whole)
        for a in range(0, len(whole), batch_rows):  # one point can exceed batch_rows: check it in slices
            batch = ImageBatch(t, whole.points, whole.rows[a : a + batch_rows], whole.offsets - a)
            ok = np.broadcast_to(np.asarray(predicate(batch), bool), (len(batch),))
            bad = np.flatnonzero(~ok)
            if len(bad):
                where = batch.point_of(bad)
                for i in np.unique(where, return_index=True)[1]:
                    if int(where[i]) not in found:
                        image = batch.images(slice(bad[i], bad[i] + 1))[0]
                        found[int(where[i])] = tuple(int(v) for v in image)
    out = list(found.items())
    if stats is not None:
        stats["rows"] = stats.get("rows", 0) + rows
    return tuple(sorted(out))


@njit(cache=True)
def _tx_rows(M, E, base, top, jmap, before_v, after_v, const_before, const_after):
    """The undo-log recovery and the atomicity test on every row of ``M``, the words each image
    holds in the slots that matter: slot 0 the header, slots 1 + 2i and 2 + 2i entry i's
    address and old value, slots 1 + 2E + j the heap words that can differ between images or
    be rolled back (``jmap``: heap word -> j)."""
    R = M.shape[0]
    J = len(before_v)
    out = np.zeros(R, np.bool_)
    h = np.empty(J, np.int64)
    for r in range(R):
        count = M[r, 0]
        for j in range(J):
            h[j] = M[r, 1 + 2 * E + j]
        if count > 0:
            for i in range(min(count, E) - 1, -1, -1):
                a = M[r, 1 + 2 * i]
                if base <= a < top and a % 8 == 0:
                    j = jmap[(a - base) // 8]
                    if j >= 0:
                        h[j] = M[r, 2 + 2 * i]
        ok = False
        if const_before:
            ok = True
            for j in range(J):
                if h[j] != before_v[j]:
                    ok = False
                    break
        if not ok and const_after:
            ok = True
            for j in range(J):
                if h[j] != after_v[j]:
                    ok = False
                    break
        out[r] = ok
    return out


def tx_atomicity(cfg: pmemtx.TxConfig, before, after):
    """:func:`spec.pmemtx.recovery_for` followed by :func:`spec.pmemtx.atomic_predicate`, on a
    whole :class:`ImageBatch` at once.  Only the heap words that can differ between images, or
    that some log entry can name (its address word holds one of the values stored to it), are
    tested row by row, in one compiled pass over the packed rows; every other heap word is the
    same in all images and is compared once.  When the log is the same in every image (it is
    durable before the data phase) recovery runs once and the rows are compared with array
    operations; otherwise the words that matter are gathered from the packed rows into one
    array and a compiled pass runs the recovery and the test on each row."""
    base, top = pmemtx.heap_base(cfg), pmemtx.heap_base(cfg) + cfg.heap_words * WORD
    b0, E = base // WORD, cfg.entries
    before, after = np.array(before, np.int64), np.array(after, np.int64)

    def predicate(batch: ImageBatch):
        targets = set()
        for i in range(E):
            targets |= {a // WORD - b0 for a in batch.possible((pmemtx.LOG + i * pmemtx.ENTRY) // WORD)
                        if base <= a < top and a % WORD == 0}
        vary = sorted(targets | {w - b0 for w in batch.varying() if b0 <= w < b0 + cfg.heap_words})
        fixed = np.ones(cfg.heap_words, bool)
        fixed[vary] = False
        const = batch.constant_image()[b0 : b0 + cfg.heap_words]
        log = [pmemtx.HDR // WORD]
        for i in range(E):
            log += [(pmemtx.LOG + i * pmemtx.ENTRY) // WORD, (pmemtx.LOG + i * pmemtx.ENTRY + WORD) // WORD]
        same_before = bool((const[fixed] == before[fixed]).all())
        same_after = bool((const[fixed] == after[fixed]).all())
        logv = [batch.word(w) for w in log]
        if all(isinstance(v, int) for v in logv):
            # the log is the same in every image (e.g. durable before the data phase): recover once
            rolled = {}
            for i in range(min(logv[0], E) - 1, -1, -1) if logv[0] > 0 else ():
                a = logv[1 + 2 * i]
                if base <= a < top and a % WORD == 0:
                    rolled[a // WORD - b0] = logv[2 + 2 * i]
            ok = np.zeros(len(batch), bool)
            for cand, same in ((before, same_before), (after, same_after)):
                eq = same
                for j in vary:
                    eq = eq & (rolled[j] == cand[j] if j in rolled else batch.word(b0 + j) == cand[j])
                    if not np.any(eq):
                        break
                ok |= eq
            return ok
        words = log + [b0 + j for j in vary]
        M = np.empty((len(words), len(batch)), np.int64).T
        for slot, w in enumerate(words):
            M[:, slot] = logv[slot] if slot < len(log) else batch.word(w)
        jmap = np.full(cfg.heap_words, -1, np.int64)
        jmap[vary] = np.arange(len(vary))
        idx = np.array(vary, np.int64)
        return _tx_rows(M, E, base, top, jmap, before[idx], after[idx], same_before, same_after)

    return predicate


# ---------------------------------------------------------------------------------------------
# The machine


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class PmemMachine:
    """A persistent region and its trace, with the spec's instructions as methods."""

    def __init__(self, config: PmemConfig | None = None, initial=None) -> None:
        cfg = config if config is not None else PmemConfig()
        if not isinstance(cfg, PmemConfig) or cfg.words < 1 or cfg.threads < 1 or cfg.domain not in pmem.DOMAINS:
            raise EINVAL(f"bad persistent-memory configuration {cfg!r}")
        values = tuple(initial) if initial is not None else (0,) * cfg.words
        if len(values) != cfg.words:
            raise EINVAL("initial image size mismatch")
        self.config, self.initial = cfg, values
        self.events: list[Event] = []
        self.memory = list(values)  # the volatile view: the last store to each word
        self._trace: _Trace | None = None

    # -- checks
    def _tid(self, tid) -> None:
        if not _is_int(tid) or not 0 <= tid < self.config.threads:
            raise EINVAL(f"no CPU {tid!r}")

    def _word(self, addr) -> None:
        if not _is_int(addr) or not 0 <= addr < self.config.words * WORD or addr % WORD:
            raise EINVAL(f"{addr!r} is not an aligned word address in the region")

    def _byte(self, addr) -> None:
        if not _is_int(addr) or not 0 <= addr < self.config.words * WORD:
            raise EINVAL(f"{addr!r} is not an address in the region")

    def _push(self, e: Event) -> None:
        self.events.append(e)
        self._trace = None
        if e.kind in pmem.STORES:
            self.memory[e.addr // WORD] = e.value

    # -- instructions
    def _write(self, kind, tid, addr, value) -> None:
        self._tid(tid)
        self._word(addr)
        if not _is_int(value):
            raise EINVAL(f"value {value!r} is not an integer")
        self._push(Event(kind, tid, addr, value))

    def store(self, tid, addr, value):
        self._write("store", tid, addr, value)

    def nt_store(self, tid, addr, value):
        self._write("nt_store", tid, addr, value)

    def load(self, tid, addr):
        self._tid(tid)
        self._word(addr)
        v = self.memory[addr // WORD]
        self._push(Event("load", tid, addr, v))
        return v

    def rmw(self, tid, addr, value):
        self._tid(tid)
        self._word(addr)
        old = self.memory[addr // WORD]
        self._write("rmw", tid, addr, value)
        return old

    def _flush(self, kind, tid, addr):
        self._tid(tid)
        self._byte(addr)
        self._push(Event(kind, tid, addr))

    def clflush(self, tid, addr):
        self._flush("clflush", tid, addr)

    def clflushopt(self, tid, addr):
        self._flush("clflushopt", tid, addr)

    def clwb(self, tid, addr):
        self._flush("clwb", tid, addr)

    def sfence(self, tid):
        self._tid(tid)
        self._push(Event("sfence", tid))

    def mfence(self, tid):
        self._tid(tid)
        self._push(Event("mfence", tid))

    def pmem_flush(self, tid, addr, length):
        self._tid(tid)
        self._byte(addr)
        if not _is_int(length) or length < 1 or addr + length > self.config.words * WORD:
            raise EINVAL("range outside the region")
        if self.config.domain == "adr":
            first, last = addr // CACHELINE, (addr + length - 1) // CACHELINE
            for line in range(first, last + 1):
                self.clwb(tid, line * CACHELINE)

    def pmem_drain(self, tid):
        self.sfence(tid)

    def pmem_persist(self, tid, addr, length):
        self.pmem_flush(tid, addr, length)
        self.pmem_drain(tid)

    def pmem_memcpy_persist(self, tid, addr, values):
        values = tuple(values)
        self._tid(tid)
        if not values:
            raise EINVAL("nothing to copy")
        for i in range(len(values)):
            self._word(addr + i * WORD if _is_int(addr) else addr)
        for i, v in enumerate(values):
            if not _is_int(v):
                raise EINVAL(f"value {v!r} is not an integer")
        for i, v in enumerate(values):
            self.nt_store(tid, addr + i * WORD, v)
        self.sfence(tid)

    # -- crashes
    def trace(self) -> _Trace:
        if self._trace is None:
            self._trace = _Trace(self.config, self.initial, tuple(self.events))
        return self._trace

    def crash(self) -> frozenset[tuple[int, ...]]:
        return enumerate_crashes(self.trace())

    def crash_at(self, k):
        if not _is_int(k) or not 0 <= k <= len(self.events):
            raise EINVAL(f"crash point {k!r} outside the trace")
        return enumerate_crashes(self.trace(), k)

    def violating_points(self, recovery, predicate) -> tuple[int, ...]:
        return tuple(k for k, _ in check(self.trace(), recovery, predicate))

    def abstract(self) -> PmemState:
        return PmemState(self.config, self.initial, tuple(self.events))


# ---------------------------------------------------------------------------------------------
# The undo-log library, with its defects


class TxPool:
    """:mod:`spec.pmemtx` on a :class:`PmemMachine`."""

    def __init__(self, config: pmemtx.TxConfig | None = None) -> None:
        cfg = config if config is not None else pmemtx.TxConfig()
        if not isinstance(cfg, pmemtx.TxConfig) or cfg.entries < 1 or cfg.heap_words < 1:
            raise EINVAL(f"bad transaction pool configuration {cfg!r}")
        self.config = cfg
        self.machine = PmemMachine(PmemConfig(pmemtx.region_words(cfg), 1, cfg.domain, cfg.synchronous))
        self.txs: list[pmemtx.TxRecord] = []
        self.base = pmemtx.heap_base(cfg)

    def heap(self) -> tuple[int, ...]:
        b = self.base // WORD
        return tuple(self.machine.memory[b : b + self.config.heap_words])

    def tx_write(self, writes, nt=False):
        writes = pmemtx.check_writes(self.config, writes)
        active = bugs.active_names()
        m, H = self.machine, pmemtx.HDR
        before, start = self.heap(), len(m.events)
        addrs = [self.base + w * WORD for w, _ in writes]
        for i, (a, (w, _)) in enumerate(zip(addrs, writes)):
            m.store(0, pmemtx.LOG + i * pmemtx.ENTRY, a)
            m.store(0, pmemtx.LOG + i * pmemtx.ENTRY + WORD, m.memory[a // WORD])
        m.pmem_persist(0, pmemtx.LOG, len(writes) * pmemtx.ENTRY)
        m.store(0, H, len(writes))
        m.pmem_flush(0, H, WORD)
        if "pmem-tx-no-sfence-after-log" not in active:
            m.pmem_drain(0)
        lines = sorted({a - a % CACHELINE for a in addrs})
        if "pmem-tx-flush-before-store" in active and not nt:
            for line in lines:
                m.pmem_flush(0, line, WORD)
        for a, (_, v) in zip(addrs, writes):
            (m.nt_store if nt else m.store)(0, a, v)
        commit_early = "pmem-tx-commit-before-durable" in active
        if commit_early:
            m.store(0, H, 0)
        if not nt and "pmem-tx-no-clwb-before-commit" not in active and "pmem-tx-flush-before-store" not in active:
            for line in lines:
                m.pmem_flush(0, line, WORD)
        if not (nt and "pmem-tx-nt-no-fence" in active) and not commit_early:
            m.pmem_drain(0)
        if not commit_early:
            m.store(0, H, 0)
        m.pmem_persist(0, H, WORD)
        self.txs.append(pmemtx.TxRecord(start, len(m.events), before, self.heap()))

    def crash_outcomes(self):
        recovery = pmemtx.recovery_for(self.config)
        b = self.base // WORD
        out = set()
        for img in self.machine.crash():
            mem = list(img)
            recovery(mem)
            out.add(tuple(mem[b : b + self.config.heap_words]))
        return frozenset(out)

    def violations(self, tx: int = -1, lazy: bool | None = None):
        """``(crash point, image)`` of the transaction's first violating image at each crash
        point that has one: by full packed enumeration (:func:`check_all`) while the
        transaction's crash points have at most ``2^16`` candidate images in all, else (or
        with ``lazy=True``) by the lazy checker."""
        if not self.txs:
            return ()
        rec = self.txs[tx]
        t = self.machine.trace()
        points = range(rec.start, rec.end + 1)
        if lazy is None:
            lo, hi = t.bounds(points)
            lazy = float(np.prod((hi - lo + 1).astype(np.float64), axis=1).sum()) > 1 << 16
        if not lazy:
            return check_all(t, tx_atomicity(self.config, rec.before, rec.after), points)
        recovery = pmemtx.recovery_for(self.config)
        ok = pmemtx.atomic_predicate(self.config, rec.before, rec.after)
        out = []
        for k in points:
            witness, _ = _explore(_LazyPoint(t, k), recovery, ok)
            if witness is not None:
                out.append((k, witness))
        return tuple(out)

    def abstract(self) -> pmemtx.TxState:
        return pmemtx.TxState(self.config, self.machine.abstract(), tuple(self.txs))
