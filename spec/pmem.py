"""Persistent memory: the x86 persistency model and the crash images it allows.

**The problem.**  Persistent memory (Intel Optane DC PMEM, NVDIMM-N, CXL memory with a
persistence domain) is byte-addressable: a program stores to it with ``mov`` and the data
survives a power failure -- but only once it has left the CPU caches.  The caches are volatile,
they write lines back in whatever order eviction picks, and a store that is *visible* to every
CPU may still be lost.  Two orders therefore exist: the order in which stores become visible
(x86-TSO) and the order in which they become *persistent*.  A program that must survive a crash
(a log, an allocator, a database) has to reason about the second one, with four tools:

- ``CLFLUSH`` writes a line back and invalidates it; it is ordered with all stores and other
  ``CLFLUSH``es (Intel SDM Vol. 2A, CLFLUSH: "ordered with respect to each other and with
  respect to writes, locked read-modify-write instructions and fence instructions");
- ``CLFLUSHOPT`` and ``CLWB`` do the same (``CLWB`` keeps the line valid) but are ordered only
  by fences, locked instructions and earlier stores/flushes *to the same line* (SDM, CLFLUSHOPT:
  "not ordered with respect to ... executions of CLFLUSHOPT and CLWB to different cache lines");
- non-temporal stores (``MOVNTI``, ``MOVNTDQ``) bypass the cache through write-combining buffers
  and are ordered only by ``SFENCE``/``MFENCE``/locked instructions;
- ``SFENCE`` orders all of the above; ``MFENCE`` and locked instructions order everything.

**The model** is Px86 (Raad, Wickerson, Neiger, Vafeiadis, "Persistency semantics of the
Intel-x86 architecture", POPL 2020) with the non-temporal stores of its extension (Raad,
Maranget, Vafeiadis, "Extending Intel-x86 consistency and persistency", POPL 2022).  A
*trace* is one execution: events ``store``, ``nt_store``, ``rmw`` (locked xchg), ``load``,
``clflush``, ``clflushopt``, ``clwb``, ``sfence``, ``mfence``, each with the CPU (thread) that
issued it, in the order they were issued.  Three relations decide what a crash may leave:

1. **ppo** -- Px86's *preserved program order*: which pairs of one thread's instructions keep
   their order on the way out of the store buffer (:func:`ordered`, the paper's Fig. 2 and
   SDM Vol. 3A section 8.2.2: W->R may reorder; CLFLUSHOPT/CLWB/NT reorder with anything to
   another line except fences).
2. **prop** -- the propagation order: ppo, plus across threads ``rfe`` (a load after the store
   it read), ``fre`` (a load before a later store to its address) and ``coe`` (events on the
   same cache line are serialised by the line's ownership, in trace order).  Every edge points
   forward in the trace, so the trace is one linear extension of prop.
3. **persist-before** (:func:`requirements`): with ADR (the persistence domain is the memory
   controller), a store ``w2`` can only persist if (a) every earlier store to its line has --
   Px86's per-line FIFO *persistence buffer* -- and (b) for every flush ``f`` prop-before
   ``w2``, every store to ``f``'s line prop-before ``f`` has (the flush blocks the persistence
   buffer until its line is written back).  A non-temporal store acts as a store followed by
   a flush of its line (POPL 2022).  With **eADR** the caches are in the persistence domain:
   a store persists when it propagates, so prop alone orders persistence and flushes are not
   needed -- fences still are.

A crash image is the initial NVM content overwritten by a set ``S`` of persisted stores (per
address, the last one in trace order).  :func:`crash` returns exactly the images of the sets
``S`` that are downward closed under persist-before and contain the *durable* stores.  Which
stores are durable depends on when an instruction is taken to have completed:

- ``synchronous=True`` (the default, Intel's documented behaviour that PMDK's ``pmem_drain``
  relies on): a ``CLFLUSH`` retires when its line is written back; a fence or locked
  instruction retires when the flushes (and NT stores, and with eADR the stores) before it
  have reached the persistence domain;
- ``synchronous=False``: Px86's asynchronous reading, in which nothing is ever forced and only
  the relational guarantees above hold.  For one thread the union of the images over all
  crash points is the same in both readings when it has no non-temporal stores (proved in
  ``proofs/pmem.py``), so litmus outcomes agree; an NT store issued after a retired CLFLUSH of
  another line is not ordered after it, so only the asynchronous reading lets it persist
  without that line.

The checker that reports a user's trace's missing flushes and fences, its redundant flushes,
and the crash images that break a consistency predicate is :mod:`spec.pmemcheck`; its names
(``check_trace``, ``violating_points``, ``Finding``, ...) are also reachable from here.

**How this model simplifies.** Memory is 8-byte words (x86 guarantees 8-byte aligned stores
are atomic and PMEM persists them atomically); a load sees the last store in trace order (the
trace is one sequentially consistent interleaving, which x86-TSO allows); reads do not need
validating against TSO; ``WBINVD`` and write-combining memory types are left out.

>>> s = init(PmemConfig(words=16))
>>> s, _ = store(s, 0, 0, 1)        # x := 1      (line 0)
>>> s, _ = store(s, 0, 64, 1)       # y := 1      (line 1)
>>> sorted(show(i, (0, 64)) for i in crash(s)[1])
['x=0 y=0', 'x=0 y=1', 'x=1 y=0', 'x=1 y=1']
>>> t = init(PmemConfig(words=16))
>>> t, _ = store(t, 0, 0, 1)
>>> t, _ = clflush(t, 0, 0)          # x is written back before y may persist
>>> t, _ = store(t, 0, 64, 1)
>>> sorted(show(i, (0, 64)) for i in crash(t)[1])
['x=1 y=0', 'x=1 y=1']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from spec.errors import EINVAL

__all__ = [
    "PmemConfig", "Event", "PmemState", "init", "store", "nt_store", "rmw", "load", "clflush",
    "clflushopt", "clwb", "sfence", "mfence", "pmem_flush", "pmem_drain", "pmem_persist",
    "pmem_memcpy_persist", "crash", "crash_at", "recover", "render",
]

#: The trace checker lives in :mod:`spec.pmemcheck`; these names stay reachable from here.
CHECKER_NAMES = (
    "Finding", "check_trace", "violating_points", "redundant_flushes", "unpersisted_stores", "violations",
)


def __getattr__(name: str):
    """``pmem.check_trace`` and the other checker names, from :mod:`spec.pmemcheck` (imported
    on first use: that module builds on this one)."""
    if name in CHECKER_NAMES:
        from spec import pmemcheck

        return getattr(pmemcheck, name)
    raise AttributeError(f"module 'spec.pmem' has no attribute {name!r}")

# ---------------------------------------------------------------------------------------------
# Constants

CACHELINE = 64  # Intel SDM Vol. 2A CPUID leaf 01H: EBX[15:8] "CLFLUSH line size" x 8 = 64 bytes
LINE_SHIFT = 6  # log2(CACHELINE)
WORD = 8  # 8-byte aligned stores are single-copy atomic (SDM Vol. 3A 8.1.1) and persist atomically
WORDS_PER_LINE = CACHELINE // WORD

STORES = frozenset({"store", "nt_store", "rmw"})  # events that write memory
FLUSHES = frozenset({"clflush", "clflushopt", "clwb"})  # explicit write-backs of a line
FENCES = frozenset({"sfence", "mfence", "rmw"})  # events that complete earlier flushes
WEAK = frozenset({"clflushopt", "clwb", "nt_store"})  # ordered only by fences and their own line
KINDS = ("store", "nt_store", "rmw", "load", "clflush", "clflushopt", "clwb", "sfence", "mfence")
DOMAINS = ("adr", "eadr")  # where the persistence domain starts: memory controller, or caches


# ---------------------------------------------------------------------------------------------
# Arithmetic helpers: plain operators, so the proofs run them on z3 bit-vectors.


def line_of(addr):
    """The cache line of a byte address (``addr >> 6``).

    Contract:

    ```text
    pre: 0 <= addr < 2 ** 48
    post: __return__ * 64 <= addr < __return__ * 64 + 64
    ```
    """
    return addr >> LINE_SHIFT


def same_line(a, b):
    """Do two byte addresses lie in one cache line?"""
    return line_of(a) == line_of(b)


def line_base(addr):
    """The first byte of ``addr``'s cache line.

    Contract:

    ```text
    pre: 0 <= addr < 2 ** 48
    post: __return__ % 64 == 0 and 0 <= addr - __return__ < 64
    ```
    """
    return addr & ~(CACHELINE - 1)


def lines_spanned(addr, length):
    """How many cache lines ``[addr, addr + length)`` touches (the CLWBs ``pmem_flush`` issues).

    >>> lines_spanned(0, 64), lines_spanned(60, 8), lines_spanned(64, 1)
    (1, 2, 1)

    Contract:

    ```text
    pre: 0 <= addr < 2 ** 40 and 1 <= length < 2 ** 20
    post: __return__ >= 1
    post: __return__ * 64 >= length
    ```
    """
    return line_of(addr + length - 1) - line_of(addr) + 1


# ---------------------------------------------------------------------------------------------
# State


class PmemConfig(NamedTuple):
    """A persistent region of ``words`` 8-byte words, ``threads`` CPUs, a persistence domain
    (``"adr"`` or ``"eadr"``) and whether fences and CLFLUSH complete synchronously."""

    words: int = 16
    threads: int = 1
    domain: str = "adr"
    synchronous: bool = True


class Event(NamedTuple):
    """One executed instruction: its kind, CPU, byte address (-1 for a fence) and stored value."""

    kind: str
    tid: int
    addr: int = -1
    value: int = 0

    def __str__(self) -> str:
        name = {"store": "st", "nt_store": "ntst", "rmw": "xchg"}.get(self.kind, self.kind)
        if self.kind in STORES:
            return f"T{self.tid}: {name} [{self.addr:#x}] = {self.value}"
        if self.addr >= 0:
            return f"T{self.tid}: {name} [{self.addr:#x}]"
        return f"T{self.tid}: {name}"


@dataclass(frozen=True)
class PmemState:
    """The region's content at boot (its NVM image) and the trace executed since."""

    config: PmemConfig
    initial: tuple[int, ...]
    events: tuple[Event, ...] = ()


def init(config: PmemConfig | None = None, initial: tuple[int, ...] | None = None) -> PmemState:
    """A region whose NVM holds ``initial`` (zeros by default) and no trace yet."""
    cfg = config if config is not None else PmemConfig()
    if not isinstance(cfg, PmemConfig) or cfg.words < 1 or cfg.threads < 1 or cfg.domain not in DOMAINS:
        raise EINVAL(f"bad persistent-memory configuration {cfg!r}")
    values = tuple(initial) if initial is not None else (0,) * cfg.words
    if len(values) != cfg.words:
        raise EINVAL(f"initial image has {len(values)} words, the region {cfg.words}")
    return PmemState(cfg, values)


# ---------------------------------------------------------------------------------------------
# Transitions: each executes one instruction, i.e. appends it to the trace.


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_tid(state: PmemState, tid) -> None:
    if not _is_int(tid) or not 0 <= tid < state.config.threads:
        raise EINVAL(f"no CPU {tid!r} (the machine has {state.config.threads})")


def _check_word(state: PmemState, addr) -> None:
    if not _is_int(addr) or not 0 <= addr < state.config.words * WORD or addr % WORD:
        raise EINVAL(f"{addr!r} is not an aligned word address in the region")


def _check_byte(state: PmemState, addr) -> None:
    if not _is_int(addr) or not 0 <= addr < state.config.words * WORD:
        raise EINVAL(f"{addr!r} is not an address in the region")


def _append(state: PmemState, event: Event) -> PmemState:
    return PmemState(state.config, state.initial, state.events + (event,))


def _write(state: PmemState, kind: str, tid, addr, value) -> PmemState:
    _check_tid(state, tid)
    _check_word(state, addr)
    if not _is_int(value):
        raise EINVAL(f"value {value!r} is not an integer")
    return _append(state, Event(kind, tid, addr, value))


def store(state: PmemState, tid: int, addr: int, value: int):
    """``mov [addr], value``: a cached (write-back) store."""
    return _write(state, "store", tid, addr, value), None


def nt_store(state: PmemState, tid: int, addr: int, value: int):
    """``movnti [addr], value``: a non-temporal store through the write-combining buffers."""
    return _write(state, "nt_store", tid, addr, value), None


def load(state: PmemState, tid: int, addr: int):
    """``mov reg, [addr]``: the value of the last store to ``addr`` in the trace (or the initial one)."""
    _check_tid(state, tid)
    _check_word(state, addr)
    value = volatile_value(state, len(state.events), addr)
    return _append(state, Event("load", tid, addr, value)), value


def rmw(state: PmemState, tid: int, addr: int, value: int):
    """``xchg [addr], value`` (locked, so also a full fence); returns the old value."""
    _check_tid(state, tid)
    _check_word(state, addr)
    old = volatile_value(state, len(state.events), addr)
    return _write(state, "rmw", tid, addr, value), old


def _flush(state: PmemState, kind: str, tid, addr):
    _check_tid(state, tid)
    _check_byte(state, addr)
    return _append(state, Event(kind, tid, addr)), None


def clflush(state: PmemState, tid: int, addr: int):
    """``clflush [addr]``: write back and invalidate ``addr``'s line; ordered with all stores."""
    return _flush(state, "clflush", tid, addr)


def clflushopt(state: PmemState, tid: int, addr: int):
    """``clflushopt [addr]``: as CLFLUSH, but ordered only by fences and same-line accesses."""
    return _flush(state, "clflushopt", tid, addr)


def clwb(state: PmemState, tid: int, addr: int):
    """``clwb [addr]``: write the line back and keep it cached; ordered as CLFLUSHOPT."""
    return _flush(state, "clwb", tid, addr)


def _fence(state: PmemState, kind: str, tid):
    _check_tid(state, tid)
    return _append(state, Event(kind, tid)), None


def sfence(state: PmemState, tid: int):
    """``sfence``: orders every store, flush and NT store before it with every one after it."""
    return _fence(state, "sfence", tid)


def mfence(state: PmemState, tid: int):
    """``mfence``: orders every memory instruction before it with every one after it."""
    return _fence(state, "mfence", tid)


def volatile_value(state: PmemState, upto: int, addr: int) -> int:
    """The value a load issued after the first ``upto`` events sees at ``addr``."""
    for e in reversed(state.events[:upto]):
        if e.kind in STORES and e.addr == addr:
            return e.value
    return state.initial[addr // WORD]


# ---------------------------------------------------------------------------------------------
# The programming models: libpmem (PMDK) on ADR and on eADR


def _flush_range_checked(state: PmemState, tid, addr, length) -> None:
    _check_tid(state, tid)
    _check_byte(state, addr)
    if not _is_int(length) or length < 1 or addr + length > state.config.words * WORD:
        raise EINVAL(f"range [{addr!r}, +{length!r}) is not inside the region")


def pmem_flush(state: PmemState, tid: int, addr: int, length: int):
    """libpmem ``pmem_flush()``: CLWB every line of the range -- or nothing when the platform
    has eADR (PMDK reads ``persistence_domain`` = ``cpu_cache`` from the nd region)."""
    _flush_range_checked(state, tid, addr, length)
    if state.config.domain == "eadr":
        return state, None
    for i in range(lines_spanned(addr, length)):
        state, _ = clwb(state, tid, line_base(addr) + i * CACHELINE)
    return state, None


def pmem_drain(state: PmemState, tid: int):
    """libpmem ``pmem_drain()``: SFENCE (on ADR and eADR alike)."""
    return sfence(state, tid)


def pmem_persist(state: PmemState, tid: int, addr: int, length: int):
    """libpmem ``pmem_persist()`` = ``pmem_flush()`` + ``pmem_drain()``."""
    state, _ = pmem_flush(state, tid, addr, length)
    return pmem_drain(state, tid)


def pmem_memcpy_persist(state: PmemState, tid: int, addr: int, values: tuple[int, ...]):
    """libpmem ``pmem_memcpy_persist()`` on its non-temporal path (taken above
    ``PMEM_MOVNT_THRESHOLD``): one NT store per word, then SFENCE."""
    values = tuple(values)
    _check_tid(state, tid)
    if not values:
        raise EINVAL("nothing to copy")
    for i in range(len(values)):
        _check_word(state, addr + i * WORD if _is_int(addr) else addr)
    for i, v in enumerate(values):
        state, _ = nt_store(state, tid, addr + i * WORD, v)
    return sfence(state, tid)


# ---------------------------------------------------------------------------------------------
# The ordering rules


def ordered(earlier: str, later: str, same_cache_line: bool) -> bool:
    """Px86's preserved program order: do two instructions of one thread keep their order?

    The table of Raad et al. (POPL 2020, Fig. 2), with NT stores (POPL 2022), read off the SDM:

    - MFENCE and locked instructions are ordered with everything;
    - a load is ordered with everything after it; before it only loads, MFENCE, locked ops
      (a store, flush or SFENCE followed by a load may reorder: the TSO store buffer);
    - SFENCE is ordered with every store, flush and NT store;
    - stores and CLFLUSHes are ordered with each other;
    - CLFLUSHOPT, CLWB and NT stores are ordered with stores and flushes only on the same line.

    >>> ordered("store", "clwb", False), ordered("store", "clwb", True), ordered("clflush", "store", False)
    (False, True, True)
    """
    if "mfence" in (earlier, later) or "rmw" in (earlier, later):
        return True
    if earlier == "load":
        return True
    if later == "load":
        return False
    if "sfence" in (earlier, later):
        return True
    if earlier in WEAK or later in WEAK:
        return same_cache_line
    return True


def _line_event(e: Event) -> bool:
    return e.addr >= 0 and e.kind != "load"


def _direct_edge(events: tuple[Event, ...], j: int, i: int) -> bool:
    """Is there a prop edge from event j to a later event i (ppo, rfe, fre or coe)?"""
    a, b = events[j], events[i]
    if a.tid == b.tid:
        return ordered(a.kind, b.kind, a.addr >= 0 and b.addr >= 0 and same_line(a.addr, b.addr))
    if _line_event(a) and _line_event(b) and same_line(a.addr, b.addr):
        return True  # coe: one line's events are serialised by its ownership
    if a.kind in STORES and b.kind in ("load", "rmw") and a.addr == b.addr:
        return _last_store_before(events, i, b.addr) == j  # rfe
    if a.kind in ("load", "rmw") and b.kind in STORES and a.addr == b.addr:
        return True  # fre: the load read a store coherence-before b
    return False


def _last_store_before(events: tuple[Event, ...], i: int, addr: int) -> int:
    for j in range(i - 1, -1, -1):
        if events[j].kind in STORES and events[j].addr == addr:
            return j
    return -1


@lru_cache(maxsize=512)
def prop_before(events: tuple[Event, ...]) -> tuple[frozenset[int], ...]:
    """For each event, the events propagation-ordered before it (the transitive closure;
    memoised, as are the next two functions: they are pure functions of the trace)."""
    preds: list[frozenset[int]] = []
    for i in range(len(events)):
        acc: set[int] = set()
        for j in range(i):
            if j not in acc and _direct_edge(events, j, i):
                acc |= preds[j] | {j}
        preds.append(frozenset(acc))
    return tuple(preds)


def _flush_like(e: Event) -> bool:
    return e.kind in FLUSHES or e.kind == "nt_store"


def covered_by(events: tuple[Event, ...], preds, f: int) -> frozenset[int]:
    """The stores a flush (or NT store) ``f`` writes back: those to its line prop-before it."""
    line = line_of(events[f].addr)
    own = {f} if events[f].kind == "nt_store" else set()
    return frozenset({j for j in preds[f] if events[j].kind in STORES and line_of(events[j].addr) == line} | own)


@lru_cache(maxsize=512)
def _covers(events: tuple[Event, ...]) -> dict[int, frozenset[int]]:
    preds = prop_before(events)
    return {f: covered_by(events, preds, f) for f, e in enumerate(events) if _flush_like(e)}


@lru_cache(maxsize=512)
def requirements(events: tuple[Event, ...], domain: str = "adr") -> dict[int, frozenset[int]]:
    """Persist-before: for each store, the stores that must persist before it may (direct)."""
    preds, cov = prop_before(events), _covers(events)
    req: dict[int, frozenset[int]] = {}
    for i, e in enumerate(events):
        if e.kind not in STORES:
            continue
        if domain == "eadr":
            req[i] = frozenset(j for j in preds[i] if events[j].kind in STORES)
            continue
        need = {j for j in preds[i] if events[j].kind in STORES and same_line(events[j].addr, e.addr)}
        for f in preds[i]:
            if f in cov:
                need |= cov[f]
        req[i] = frozenset(need)
    return req


def root_contribution(events: tuple[Event, ...], i: int, domain: str = "adr") -> frozenset[int]:
    """The stores that are durable once event ``i`` has retired (synchronous reading): a
    CLFLUSH's line; for a fence or locked op, what the flushes and NT stores before it cover.
    With eADR a retired CLFLUSH or fence has also propagated -- hence persisted -- every store
    prop-before it."""
    preds, cov, e = prop_before(events), _covers(events), events[i]
    roots: set[int] = set()
    if e.kind == "clflush":
        roots |= cov[i]
    if e.kind in FENCES or e.kind == "clflush" and domain == "eadr":
        if domain == "eadr":
            roots |= {j for j in preds[i] if events[j].kind in STORES} | ({i} if e.kind == "rmw" else set())
        else:
            for f in preds[i]:
                roots |= cov.get(f, frozenset())
    return frozenset(roots)


@lru_cache(maxsize=512)
def durable_roots(events: tuple[Event, ...], domain: str = "adr", synchronous: bool = True, upto: int | None = None) -> frozenset[int]:
    """The stores every crash image must hold once the first ``upto`` events have retired."""
    if not synchronous:
        return frozenset()
    n = len(events) if upto is None else upto
    return frozenset().union(*(root_contribution(events, i, domain) for i in range(n)))


def _closure(seed: frozenset[int], req: dict[int, frozenset[int]]) -> frozenset[int]:
    out, todo = set(seed), list(seed)
    while todo:
        for j in req[todo.pop()]:
            if j not in out:
                out.add(j)
                todo.append(j)
    return frozenset(out)


def persisted_sets(state: PmemState, upto: int | None = None) -> Iterator[frozenset[int]]:
    """Every set of stores (event indices) that may have persisted at a crash after the first
    ``upto`` events (default: all), each once."""
    events, cfg = state.events, state.config
    n = len(events) if upto is None else upto
    req = requirements(events, cfg.domain)
    full = {i: _closure(frozenset({i}), req) for i in req if i < n}
    order = sorted(full, reverse=True)  # requirements point backwards: decide later stores first

    def walk(k: int, must: frozenset[int], chosen: frozenset[int]):
        if k == len(order):
            yield chosen
            return
        s = order[k]
        if s in must:
            yield from walk(k + 1, must, chosen | {s})
            return
        yield from walk(k + 1, must, chosen)
        yield from walk(k + 1, must | full[s], chosen | {s})

    yield from walk(0, _closure(durable_roots(events, cfg.domain, cfg.synchronous, n), req), frozenset())


def image_of(state: PmemState, persisted) -> tuple[int, ...]:
    """The NVM content after a crash in which exactly the stores ``persisted`` reached it."""
    words = list(state.initial)
    for i in sorted(persisted):
        e = state.events[i]
        words[e.addr // WORD] = e.value
    return tuple(words)


@lru_cache(maxsize=256)
def _crash_images(state: PmemState, upto: int) -> frozenset[tuple[int, ...]]:
    return frozenset(image_of(state, s) for s in persisted_sets(state, upto))


def crash(state: PmemState):
    """Power fails now: every NVM image the model allows, exactly (a frozenset of word tuples)."""
    return state, _crash_images(state, len(state.events))


def prefix(state: PmemState, k: int) -> PmemState:
    """The state after only the first ``k`` events of the trace."""
    if not _is_int(k) or not 0 <= k <= len(state.events):
        raise EINVAL(f"crash point {k!r} is outside 0..{len(state.events)}")
    return PmemState(state.config, state.initial, state.events[:k])


def crash_at(state: PmemState, k: int):
    """The crash images if power fails once the first ``k`` events have retired."""
    prefix(state, k)  # validates k
    return state, _crash_images(state, k)


def recovered(image: tuple[int, ...], recovery=None) -> tuple[int, ...]:
    """Run ``recovery(mem)`` -- it reads and writes ``mem[word]`` in place -- on a copy of ``image``."""
    mem = list(image)
    if recovery is not None:
        recovery(mem)
    return tuple(mem)


def recover(state: PmemState, recovery: Callable[[list[int]], None]):
    """Run ``recovery`` on every crash image: the set of states a restarted program can see."""
    return state, frozenset(recovered(img, recovery) for img in crash(state)[1])


# ---------------------------------------------------------------------------------------------
# Invariants


def _must_precede(events, preds, w1: int, w2: int, domain: str) -> bool:
    """Rule-by-rule, without the closure: must store w1 persist before store w2 may?"""
    if w1 not in preds[w2]:
        return False
    if domain == "eadr" or same_line(events[w1].addr, events[w2].addr):
        return True
    return any(_flush_like(events[f]) and w1 in covered_by(events, preds, f) for f in preds[w2])


def inv_persist_order(state: PmemState) -> bool:
    """No crash image holds a store without every store the model orders before it."""
    events, dom = state.events, state.config.domain
    preds = prop_before(events)
    stores = [i for i, e in enumerate(events) if e.kind in STORES]
    before = {w2: [w1 for w1 in stores if _must_precede(events, preds, w1, w2, dom)] for w2 in stores}
    return all(all(w1 in s for w2 in s for w1 in before[w2]) for s in persisted_sets(state))


def inv_flush_ordering(state: PmemState) -> bool:
    """A store followed by CLFLUSH of its line, or CLFLUSHOPT/CLWB and then a fence, is in every
    crash image (when instructions complete synchronously)."""
    events = state.events
    if not state.config.synchronous or state.config.domain == "eadr":
        return True
    preds = prop_before(events)
    must: set[int] = set()
    for f, e in enumerate(events):
        fenced = any(events[m].kind in FENCES and f in preds[m] for m in range(f + 1, len(events)))
        if e.kind == "clflush" or (_flush_like(e) and fenced):
            must |= covered_by(events, preds, f)
    return all(must <= s for s in persisted_sets(state))


def inv_images_from_stores(state: PmemState) -> bool:
    """Every word of every crash image is its initial value or a value stored to it."""
    stored = {(e.addr // WORD, e.value) for e in state.events if e.kind in STORES}
    return all(
        v == state.initial[w] or (w, v) in stored for img in crash(state)[1] for w, v in enumerate(img)
    )


def inv_everything_persisted_is_an_image(state: PmemState) -> bool:
    """The volatile memory (every store persisted) is always one of the crash images."""
    full = tuple(volatile_value(state, len(state.events), w * WORD) for w in range(state.config.words))
    return full in crash(state)[1]


# ---------------------------------------------------------------------------------------------
# Views


def show(image: tuple[int, ...], addrs=(0, 64), names: str = "xyzw") -> str:
    """A crash image as the litmus papers print outcomes: ``x=1 y=0``."""
    return " ".join(f"{names[i]}={image[a // WORD]}" for i, a in enumerate(addrs))


def render(state: PmemState) -> str:
    """The trace, one instruction a line, then the crash images (at most 16)."""
    lines = [f"pmem: {state.config.words} words, {state.config.threads} CPU(s), {state.config.domain}"
             f"{'' if state.config.synchronous else ', asynchronous'}; initial {list(state.initial)}"]
    lines += [f"  {i:3d}  {e}" for i, e in enumerate(state.events)]
    images = sorted(crash(state)[1])
    lines.append(f"crash images ({len(images)}):")
    lines += [f"  {list(img)}" for img in images[:16]]
    if len(images) > 16:
        lines.append(f"  ... {len(images) - 16} more")
    return "\n".join(lines) + "\n"
