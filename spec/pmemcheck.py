"""Checking a persistent-memory trace: what pmemcheck and pmreorder do for C programs.

**The problem.**  A program for persistent memory can be wrong in two ways that no test run
shows, because a run that does not crash never looks at the NVM image:

- a store is never made *durable*: no flush of its line follows it (a **missing flush**), or a
  CLFLUSHOPT/CLWB follows but no fence completes it (a **missing fence**).  After the program
  returns, a crash may still lose the store.  PMDK's *pmemcheck* (a Valgrind tool) reports
  these as "stores not made persistent";
- every store is eventually durable, but some *crash point* leaves an image from which the
  program's recovery builds an inconsistent state -- the commit record persisted before the
  data it commits.  PMDK's *pmreorder* replays a recorded trace, reorders the unordered stores,
  and runs a user-supplied consistency check on each image.

A third report is about speed, not correctness: a **redundant flush** writes back a line with
no store since its last flush (a flush of a clean line costs a memory round trip).  pmemcheck
reports those apart, and so does :func:`check_trace` (``kind == "redundant-flush"``, listed
in :data:`PERFORMANCE`).

**How it works.**  Everything comes from :mod:`spec.pmem`'s model, so the checker agrees with
the crash semantics by construction: a store is durable at the end of the trace iff it is in
the closure (under persist-before) of the stores that retired CLFLUSHes and fences made
durable (:func:`spec.pmem.durable_roots`); a flush *covers* the stores to its line that are
propagation-ordered before it (:func:`spec.pmem.covered_by`), so a flush issued before the store
it was meant for covers nothing; and a consistency predicate is checked on every image of
every crash point (:func:`spec.pmem.crash_at`), after the user's recovery has run on it.  A
store that a later durable store to the same address overwrites is not reported: its value
can no longer be the one recovery needs.

**How this simplifies pmemcheck.**  The trace is the model's (one interleaving of the CPUs'
instructions), not a Valgrind log; there are no "regions registered with pmemcheck", only the
persistent region; and pmreorder's reordering engines (``ReorderFull``,
``ReorderAccumulative``, ...) are replaced by the exact set of images the model allows.  For
long traces, :func:`impl.pmem.check` does the last step lazily, branching only on the words
recovery reads.

>>> from spec import pmem
>>> s = pmem.init(pmem.PmemConfig(words=16))
>>> for op, *args in [("clwb", 0), ("store", 0, 1), ("sfence",)]:
...     s, _ = getattr(pmem, op)(s, 0, *args)
>>> for f in check_trace(s):
...     print(f.kind, "at event", f.event)
redundant-flush at event 0
missing-flush at event 1
"""

from __future__ import annotations

from typing import NamedTuple

from spec import pmem

__all__ = [
    "Finding", "CORRECTNESS", "PERFORMANCE", "redundant_flushes", "unpersisted_stores", "violations",
    "violating_points", "check_trace",
]

CORRECTNESS = ("missing-flush", "missing-fence", "violation")  # a crash can lose or corrupt data
PERFORMANCE = ("redundant-flush",)  # correct, but slower than it needs to be


class Finding(NamedTuple):
    """One problem in a trace: its kind, the event it is about (for a violation, the crash
    point: how many events had executed), and why."""

    kind: str  # "missing-flush" | "missing-fence" | "redundant-flush" | "violation"
    event: int
    detail: str


def redundant_flushes(state: pmem.PmemState) -> tuple[Finding, ...]:
    """Flushes (CLFLUSH, CLFLUSHOPT, CLWB) that cover no store an earlier flush did not.

    >>> s = pmem.init(pmem.PmemConfig(words=16))
    >>> for op, *args in [("store", 0, 1), ("clwb", 0), ("clwb", 8), ("sfence",)]:
    ...     s, _ = getattr(pmem, op)(s, 0, *args)
    >>> [f.event for f in redundant_flushes(s)]   # clwb [0x8]: same line, nothing new
    [2]
    """
    events = state.events
    preds = pmem.prop_before(events)
    out: list[Finding] = []
    flushed: set[int] = set()
    for i, e in enumerate(events):
        if e.kind in pmem.FLUSHES:
            covers = pmem.covered_by(events, preds, i)
            if not covers - flushed:
                out.append(Finding("redundant-flush", i, f"{e}: no store to the line since its last flush"))
            flushed |= covers
    return tuple(out)


def unpersisted_stores(state: pmem.PmemState) -> tuple[Finding, ...]:
    """Stores not durable when the trace ends: ``missing-flush`` when no flush covers them (on
    ADR), ``missing-fence`` when one does but nothing completes it -- unless a later durable
    store to the same address supersedes them.  Nothing is reported for eADR in the
    asynchronous reading, where no instruction forces anything."""
    events, cfg = state.events, state.config
    if cfg.domain == "eadr" and not cfg.synchronous:
        return ()
    preds = pmem.prop_before(events)
    req = pmem.requirements(events, cfg.domain)
    durable = pmem._closure(pmem.durable_roots(events, cfg.domain, cfg.synchronous), req)
    flushers = [f for f, e in enumerate(events) if pmem._flush_like(e)]
    out: list[Finding] = []
    for i, e in enumerate(events):
        if e.kind not in pmem.STORES or i in durable:
            continue
        if any(events[j].kind in pmem.STORES and events[j].addr == e.addr for j in durable if j > i):
            continue  # a later durable store to the address supersedes it
        if cfg.domain == "adr" and not any(i in pmem.covered_by(events, preds, f) for f in flushers):
            out.append(Finding("missing-flush", i, f"{e}: no flush of its line follows"))
        else:
            out.append(Finding("missing-fence", i, f"{e}: flushed, but no fence makes it durable"))
    return tuple(out)


def violations(state: pmem.PmemState, recovery=None, predicate=None) -> tuple[Finding, ...]:
    """Every crash point and image whose recovered state ``predicate(mem)`` rejects (pmreorder's
    consistency check), images in sorted order within a point."""
    if predicate is None:
        return ()
    out: list[Finding] = []
    for k in range(len(state.events) + 1):
        for img in sorted(pmem.crash_at(state, k)[1]):
            if not predicate(list(pmem.recovered(img, recovery))):
                out.append(Finding("violation", k, f"crash after {k} events: image {list(img)}"))
    return tuple(out)


def violating_points(state: pmem.PmemState, recovery, predicate):
    """The crash points (events executed before the crash) at which some image, once
    ``recovery`` has run on it, fails ``predicate(mem)``; returned as ``(state, points)``, a
    query in the shape of the model's transitions."""
    return state, tuple(
        k for k in range(len(state.events) + 1)
        if any(not predicate(list(pmem.recovered(img, recovery))) for img in pmem.crash_at(state, k)[1])
    )


def check_trace(state: pmem.PmemState, recovery=None, predicate=None) -> tuple[Finding, ...]:
    """All reports, in this order: redundant flushes (a performance bug), stores never made
    durable (missing flush or fence), and -- given ``predicate`` and optionally ``recovery`` --
    the crash points and images whose recovered state the predicate rejects."""
    return redundant_flushes(state) + unpersisted_stores(state) + violations(state, recovery, predicate)
