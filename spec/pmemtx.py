"""An undo-log transaction library on persistent memory, in the style of libpmemobj.

**The problem.**  A program updates several words of persistent memory and wants all of the
updates or none of them to survive a crash.  CPUs persist one 8-byte word atomically, and the
persistency model (:mod:`spec.pmem`) lets unflushed stores to different lines persist in any
order, so the library must build atomicity out of flushes and fences.  libpmemobj's answer
(``pmemobj_tx_add_range`` / ``TX_BEGIN``) is an *undo log*: before a word is modified its old
value is logged and made durable; if a crash interrupts the transaction, recovery copies the
logged values back.

**The protocol** (:func:`tx_write`, every step on CPU 0), for writes ``(word, value)``:

1. store each log entry ``(address, old value)`` into the log area;
2. ``pmem_persist`` the log entries (CLWB each log line, SFENCE);
3. store the entry count into the header, ``pmem_persist`` it: *the log is now valid*;
4. store the new values into the heap (cached stores, or non-temporal stores with ``nt=True``);
5. make the data durable: CLWB each written heap line (nothing for NT stores), SFENCE;
6. commit: store 0 into the header and ``pmem_persist`` it, which also truncates the log.

**Recovery** (:func:`recovery`) reads the header; a non-zero count means a transaction was
interrupted, so the logged old values are written back (last entry first) and the count is
cleared.  Every fence above is load-bearing: without step 2's fence the count could persist
before the entries it counts; without step 3's, new data could persist while the log is still
invalid; without step 5, the commit could persist before the data.  ``impl/pmem.py`` carries
these mistakes as switchable defects and the suite catches each one.

The layout of the region: the header word at byte 0 (line 0), the log from byte 64 (two words
per entry), the heap after the log.  Heap words are named by index.

>>> s = init(TxConfig(entries=2, heap_words=8))
>>> s, _ = tx_write(s, ((0, 5), (3, 7)))
>>> heap(s.pmem, s.config, volatile=True)
(5, 0, 0, 7, 0, 0, 0, 0)
>>> inv_tx_atomicity(s)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from spec import pmem
from spec.errors import EINVAL

HDR = 0  # byte address of the log header: the number of valid entries (0 = no transaction)
LOG = pmem.CACHELINE  # byte address of the first log entry: (address, old value), 16 bytes each
ENTRY = 2 * pmem.WORD


class TxConfig(NamedTuple):
    """Log capacity (entries), heap size (words), persistence domain, and the fence reading."""

    entries: int = 4
    heap_words: int = 16
    domain: str = "adr"
    synchronous: bool = True


def log_lines(cfg: TxConfig) -> int:
    """Cache lines the log occupies.

    Contract:

    ```text
    pre: 1 <= cfg.entries <= 4096
    post: __return__ * 4 >= cfg.entries
    ```
    """
    return -(-cfg.entries * ENTRY // pmem.CACHELINE)


def heap_base(cfg: TxConfig) -> int:
    """Byte address of heap word 0: the line after the log."""
    return LOG + log_lines(cfg) * pmem.CACHELINE


def heap_addr(cfg: TxConfig, word: int) -> int:
    """Byte address of heap word ``word``."""
    return heap_base(cfg) + word * pmem.WORD


def region_words(cfg: TxConfig) -> int:
    """Words in the whole region: header line, log, heap."""
    return heap_base(cfg) // pmem.WORD + cfg.heap_words


class TxRecord(NamedTuple):
    """One transaction: the trace positions it spans and the heap before and after it."""

    start: int
    end: int
    before: tuple[int, ...]
    after: tuple[int, ...]


@dataclass(frozen=True)
class TxState:
    """The persistent region under the library, and the transactions run so far."""

    config: TxConfig
    pmem: pmem.PmemState
    txs: tuple[TxRecord, ...] = ()


def init(config: TxConfig | None = None) -> TxState:
    """An empty pool: zeroed header, log and heap."""
    cfg = config if config is not None else TxConfig()
    if not isinstance(cfg, TxConfig) or cfg.entries < 1 or cfg.heap_words < 1:
        raise EINVAL(f"bad transaction pool configuration {cfg!r}")
    return TxState(cfg, pmem.init(pmem.PmemConfig(region_words(cfg), 1, cfg.domain, cfg.synchronous)))


def heap(state: pmem.PmemState, cfg: TxConfig, image=None, volatile: bool = False) -> tuple[int, ...]:
    """The heap words of a crash image (or, with ``volatile``, of memory as CPUs see it)."""
    base = heap_base(cfg) // pmem.WORD
    if volatile:
        return tuple(pmem.volatile_value(state, len(state.events), (base + i) * pmem.WORD) for i in range(cfg.heap_words))
    return tuple(image[base : base + cfg.heap_words])


def check_writes(cfg: TxConfig, writes) -> tuple[tuple[int, int], ...]:
    """Validate a transaction's writes: 1..entries distinct heap words with integer values."""
    try:
        writes = tuple((w, v) for w, v in writes)
    except (TypeError, ValueError):
        raise EINVAL(f"writes {writes!r} are not (word, value) pairs") from None
    words = [w for w, _ in writes]
    if not 1 <= len(writes) <= cfg.entries or len(set(words)) != len(words):
        raise EINVAL(f"a transaction writes 1..{cfg.entries} distinct words, not {words!r}")
    for w, v in writes:
        if not pmem._is_int(w) or not 0 <= w < cfg.heap_words or not pmem._is_int(v):
            raise EINVAL(f"bad write ({w!r}, {v!r})")
    return writes


def tx_events(s: pmem.PmemState, cfg: TxConfig, writes, nt: bool = False) -> pmem.PmemState:
    """Append the protocol's instructions for one transaction to the trace."""
    s0 = s
    for i, (w, _) in enumerate(writes):
        s, _ = pmem.store(s, 0, LOG + i * ENTRY, heap_addr(cfg, w))
        s, _ = pmem.store(s, 0, LOG + i * ENTRY + pmem.WORD, pmem.volatile_value(s0, len(s0.events), heap_addr(cfg, w)))
    s, _ = pmem.pmem_persist(s, 0, LOG, len(writes) * ENTRY)  # 2: the entries are durable
    s, _ = pmem.store(s, 0, HDR, len(writes))
    s, _ = pmem.pmem_persist(s, 0, HDR, pmem.WORD)  # 3: the log is valid
    for w, v in writes:  # 4: the data
        s, _ = (pmem.nt_store if nt else pmem.store)(s, 0, heap_addr(cfg, w), v)
    if not nt:
        for line in sorted({pmem.line_base(heap_addr(cfg, w)) for w, _ in writes}):
            s, _ = pmem.pmem_flush(s, 0, line, pmem.WORD)
    s, _ = pmem.pmem_drain(s, 0)  # 5: the data is durable
    s, _ = pmem.store(s, 0, HDR, 0)  # 6: commit and truncate the log
    return pmem.pmem_persist(s, 0, HDR, pmem.WORD)[0]


def tx_write(state: TxState, writes, nt: bool = False):
    """Run one transaction that writes ``(heap word, value)`` pairs atomically."""
    cfg = state.config
    writes = check_writes(cfg, writes)
    before = heap(state.pmem, cfg, volatile=True)
    s = tx_events(state.pmem, cfg, writes, bool(nt))
    record = TxRecord(len(state.pmem.events), len(s.events), before, heap(s, cfg, volatile=True))
    return TxState(cfg, s, state.txs + (record,)), None


def recovery_for(cfg: TxConfig):
    """The recovery function of a pool: it rolls an interrupted transaction back, in place."""
    base, top = heap_base(cfg), heap_base(cfg) + cfg.heap_words * pmem.WORD

    def recovery(mem) -> None:
        count = mem[HDR // pmem.WORD]
        if count == 0:
            return
        for i in reversed(range(min(count, cfg.entries))):
            addr = mem[(LOG + i * ENTRY) // pmem.WORD]
            if base <= addr < top and addr % pmem.WORD == 0:
                mem[addr // pmem.WORD] = mem[(LOG + i * ENTRY + pmem.WORD) // pmem.WORD]
        mem[HDR // pmem.WORD] = 0

    return recovery


def atomic_predicate(cfg: TxConfig, before: tuple[int, ...], after: tuple[int, ...]):
    """The consistency predicate of one transaction: the recovered heap is ``before`` or ``after``."""
    base = heap_base(cfg) // pmem.WORD

    def predicate(mem) -> bool:
        for candidate in (before, after):
            if all(mem[base + i] == v for i, v in enumerate(candidate)):
                return True
        return False

    return predicate


def violations(state: TxState, tx: int = -1) -> tuple[tuple[int, tuple[int, ...], tuple[int, ...]], ...]:
    """For one transaction (default: the last), every ``(crash point, image, recovered heap)``
    whose recovered heap is neither the heap before nor the heap after it."""
    if not state.txs:
        return ()
    cfg, rec = state.config, state.txs[tx]
    recovery, ok = recovery_for(cfg), atomic_predicate(cfg, rec.before, rec.after)
    bad = []
    for k in range(rec.start, rec.end + 1):
        for img in sorted(pmem.crash_at(state.pmem, k)[1]):
            mem = list(pmem.recovered(img, recovery))
            if not ok(mem):
                bad.append((k, img, heap(state.pmem, cfg, mem)))
    return tuple(bad)


def crash_outcomes(state: TxState):
    """Power fails now: every heap a restarted program can see after recovery."""
    recovery = recovery_for(state.config)
    return state, frozenset(heap(state.pmem, state.config, pmem.recovered(i, recovery)) for i in pmem.crash(state.pmem)[1])


def inv_tx_atomicity(state: TxState) -> bool:
    """Every crash image of the latest transaction recovers to the heap before it or after it."""
    return not violations(state)


def inv_committed_is_durable(state: TxState) -> bool:
    """Once a transaction has returned, every crash recovers to the heap it committed."""
    if not state.txs:
        return True
    return crash_outcomes(state)[1] == {state.txs[-1].after}


def render(state: TxState) -> str:
    """The trace with transaction boundaries, and the recovered heaps of a crash now."""
    starts = {r.start: i for i, r in enumerate(state.txs)}
    lines = [f"undo-log pool: {state.config}"]
    for i, e in enumerate(state.pmem.events):
        if i in starts:
            lines.append(f"  -- transaction {starts[i]}: heap before {list(state.txs[starts[i]].before)}")
        lines.append(f"  {i:3d}  {e}")
    lines.append(f"recovered heaps after a crash now: {sorted(crash_outcomes(state)[1])}")
    return "\n".join(lines) + "\n"
