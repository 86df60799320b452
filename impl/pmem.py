"""Crash-state enumeration at speed: the fast twin of :mod:`spec.pmem` and :mod:`spec.pmemtx`.

:class:`PmemMachine` executes the same instructions as the spec and keeps the trace in arrays.
Everything the crash semantics needs is computed on **bitsets** (rows of ``uint64`` words, one
bit per event) by numba kernels: the propagation order (``_prop``), the persist-before
requirements and their closure, the durable roots, and the depth-first enumeration of every
persisted set, which then becomes NVM images in one vectorised pass (:func:`enumerate_crashes`).

Enumerating every image is exponential in the number of unordered stores: 64 stores to 64 lines
with no fence between them leave 2^64 images.  :func:`check` does not enumerate images.  After
Jaaru (Gorjiara, Xu, Demsky, ASPLOS 2021) it runs the recovery and the predicate on a *lazy*
image: a word that is read for the first time is given each of its possible values in turn,
branching only when more than one is possible; words recovery overwrites, and words with one
possible value, never branch.  A branch is a constraint "line L persisted between lo and hi of
its stores"; a set of such constraints is feasible iff the closure of their lower bounds stays
within every upper bound, which is one OR of precomputed closures per line.  An undo-log
transaction of 64 stores is checked at every crash point in milliseconds.

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

import numpy as np

try:
    from numba import njit
except ImportError as exc:  # pragma: no cover
    raise ImportError("impl.pmem needs numba") from exc

from impl import bugs
from impl.bugs import Defect
from spec import pmem, pmemtx
from spec.errors import EINVAL
from spec.pmem import CACHELINE, KINDS, WORD, Event, PmemConfig, PmemState

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
def _enumerate(order, full, must0, W, cap):
    """Every persisted set: decide stores from last to first (requirements point backwards), a
    forced store is included, a free one is first left out, then put in with its closure.
    Returns (sets, count); count > cap means the buffer was too small."""
    m = len(order)
    out = np.zeros((cap, W), np.uint64)
    count = 0
    must = np.zeros((m + 1, W), np.uint64)
    chosen = np.zeros((m + 1, W), np.uint64)
    state = np.zeros(m + 1, np.int64)  # 0 fresh, 1 excluded (include next), 2 done
    must[0, :] = must0
    k = 0
    while k >= 0:
        if k == m:
            if count < cap:
                out[count, :] = chosen[k]
            count += 1
            k -= 1
            continue
        s = order[k]
        if state[k] == 0 and _bit(must[k], s) == 0:
            must[k + 1, :] = must[k]
            chosen[k + 1, :] = chosen[k]
            state[k] = 1
        elif state[k] < 2:
            must[k + 1, :] = must[k] | full[s]
            chosen[k + 1, :] = chosen[k]
            _set(chosen[k + 1], s)
            state[k] = 2
        else:
            state[k] = 0
            k -= 1
            continue
        k += 1
        state[k] = 0
    return out, count


@njit(cache=True)
def _images(sets, count, st_idx, st_word, st_val, initial):
    out = np.empty((count, len(initial)), np.int64)
    for c in range(count):
        out[c, :] = initial
        for t in range(len(st_idx)):
            if _bit(sets[c], st_idx[t]):
                out[c, st_word[t]] = st_val[t]
    return out


# ---------------------------------------------------------------------------------------------
# Python side


def _row_int(row) -> int:
    return sum(int(w) << (64 * i) for i, w in enumerate(row))


class _Trace:
    """The bitset semantics of one trace, computed once."""

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

    def images(self, k: int, cap: int = 1 << 16) -> np.ndarray:
        """The image of every persisted set of a crash after the first ``k`` events (rows;
        two sets can give one image)."""
        order = np.array(sorted((s for s in self.stores if s < k), reverse=True), np.int64)
        must0 = self.roots(k)
        while True:
            sets, count = _enumerate(order, self.full, must0, self.W, cap)
            if count <= cap:
                break
            cap = count
        st = np.array([s for s in self.stores if s < k], np.int64)
        return _images(sets, count, st, self.addr[st] // WORD, self.value[st], self.initial)


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
    if isinstance(state, _Trace):
        return state
    if isinstance(state, PmemMachine):
        state = state.abstract()
    return _Trace(state.config, state.initial, state.events)


def enumerate_crashes(state, k: int | None = None) -> frozenset[tuple[int, ...]]:
    """Every crash image after the first ``k`` events (default: all) of a spec state or machine."""
    t = _as_trace(state)
    return frozenset(map(tuple, t.images(t.n if k is None else k).tolist()))


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

    def violations(self, tx: int = -1):
        """Lazily: ``(crash point, image)`` of the transaction's first violating images."""
        if not self.txs:
            return ()
        rec = self.txs[tx]
        t = self.machine.trace()
        recovery = pmemtx.recovery_for(self.config)
        ok = pmemtx.atomic_predicate(self.config, rec.before, rec.after)
        out = []
        for k in range(rec.start, rec.end + 1):
            witness, _ = _explore(_LazyPoint(t, k), recovery, ok)
            if witness is not None:
                out.append((k, witness))
        return tuple(out)

    def abstract(self) -> pmemtx.TxState:
        return pmemtx.TxState(self.config, self.machine.abstract(), tuple(self.txs))
