"""Persistency litmus tests: small programs, a crash outcome, and whether Px86 allows it.

Each vector is a trace (one interleaving of the threads, which also fixes what each load
reads), an outcome (values of some words after the crash and recovery), and the verdict of
the paper it comes from: *allowed* means some crash point and some persisted set give the
outcome.  ``x`` is at byte 0 (line 0), ``y`` at 64 (line 1), ``x2`` at 8 (x's line).

Sources: Raad, Wickerson, Neiger, Vafeiadis, "Persistency semantics of the Intel-x86
architecture", POPL 2020, section 2 (the examples explaining Px86: unflushed writes persist in
any order; CLFLUSH orders; CLFLUSHOPT needs SFENCE; same-line writes persist in order; flushes
by another thread that observed the write), and Raad, Maranget, Vafeiadis, "Extending
Intel-x86 consistency and persistency", POPL 2022 (non-temporal stores need SFENCE; an NT
store to a line writes back earlier cached stores to it).  The eADR vectors follow the Intel
eADR guidance (flushes unnecessary, fences still needed), also stated by Raad et al. 2022.
"""

from __future__ import annotations

from typing import NamedTuple

X, Y, X2 = 0, 64, 8


class Litmus(NamedTuple):
    """A litmus vector: name, source, trace ``(tid, op, args)``, loads' values, outcome, verdict."""

    name: str
    source: str
    trace: tuple
    outcome: tuple  # ((addr, value), ...)
    allowed: bool
    domain: str = "adr"
    threads: int = 1
    loads: tuple = ()  # the values the trace's loads must read, in order


P20 = "Raad et al. POPL 2020, sec. 2"
P22 = "Raad, Maranget, Vafeiadis POPL 2022"
EADR = "Intel eADR guidance; Raad et al. POPL 2022"

LITMUS = (
    Litmus("W-W-unflushed", P20, ((0, "store", (X, 1)), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), True),
    Litmus("W-W-same-line", P20, ((0, "store", (X, 1)), (0, "store", (X2, 1))), ((X, 0), (X2, 1)), False),
    Litmus("W-W-same-loc", P20, ((0, "store", (X, 1)), (0, "store", (X, 2))), ((X, 1),), True),
    Litmus("W-FL-W", P20, ((0, "store", (X, 1)), (0, "clflush", (X,)), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), False),
    Litmus("W-FO-W", P20, ((0, "store", (X, 1)), (0, "clflushopt", (X,)), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), True),
    Litmus("W-WB-W", P20, ((0, "store", (X, 1)), (0, "clwb", (X,)), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), True),
    Litmus("W-FO-SF-W", P20, ((0, "store", (X, 1)), (0, "clflushopt", (X,)), (0, "sfence", ()), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), False),
    Litmus("W-WB-MF-W", P20, ((0, "store", (X, 1)), (0, "clwb", (X,)), (0, "mfence", ()), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), False),
    Litmus("W-WB-RMW-W", P20, ((0, "store", (X, 1)), (0, "clwb", (X,)), (0, "rmw", (Y + 8, 1)), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), False),
    Litmus("FO-before-W", P20, ((0, "clflushopt", (X,)), (0, "store", (X, 1)), (0, "sfence", ()), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), True),
    Litmus("W-FOy-SF-W", P20, ((0, "store", (X, 1)), (0, "clflushopt", (Y,)), (0, "sfence", ()), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), True),
    Litmus("W-SF-W", P20, ((0, "store", (X, 1)), (0, "sfence", ()), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), True),
    Litmus("W-FL-crash", P20, ((0, "store", (X, 1)), (0, "clflush", (X,))), ((X, 1),), True),
    Litmus("MP-FL", P20, ((0, "store", (X, 1)), (1, "load", (X,)), (1, "clflush", (X,)), (1, "store", (Y, 1))),
           ((X, 0), (Y, 1)), False, threads=2, loads=(1,)),
    Litmus("MP-FO", P20, ((0, "store", (X, 1)), (1, "load", (X,)), (1, "clflushopt", (X,)), (1, "store", (Y, 1))),
           ((X, 0), (Y, 1)), True, threads=2, loads=(1,)),
    Litmus("MP-FO-SF", P20, ((0, "store", (X, 1)), (1, "load", (X,)), (1, "clflushopt", (X,)), (1, "sfence", ()), (1, "store", (Y, 1))),
           ((X, 0), (Y, 1)), False, threads=2, loads=(1,)),
    Litmus("MP-noflush", P20, ((0, "store", (X, 1)), (1, "load", (X,)), (1, "store", (Y, 1))),
           ((X, 0), (Y, 1)), True, threads=2, loads=(1,)),
    Litmus("NT-W", P22, ((0, "nt_store", (X, 1)), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), True),
    Litmus("NT-SF-W", P22, ((0, "nt_store", (X, 1)), (0, "sfence", ()), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), False),
    Litmus("W-NT", P22, ((0, "store", (X, 1)), (0, "nt_store", (Y, 1))), ((X, 0), (Y, 1)), True),
    Litmus("W-NT-same-line", P22, ((0, "store", (X, 1)), (0, "nt_store", (X2, 1))), ((X, 0), (X2, 1)), False),
    Litmus("NT-NT", P22, ((0, "nt_store", (X, 1)), (0, "nt_store", (Y, 1))), ((X, 0), (Y, 1)), True),
    Litmus("NT-SF-crash", P22, ((0, "nt_store", (X, 1)), (0, "sfence", ())), ((X, 1),), True),
    Litmus("eADR-W-W", EADR, ((0, "store", (X, 1)), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), False, "eadr"),
    Litmus("eADR-NT-W", EADR, ((0, "nt_store", (X, 1)), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), True, "eadr"),
    Litmus("eADR-NT-SF-W", EADR, ((0, "nt_store", (X, 1)), (0, "sfence", ()), (0, "store", (Y, 1))), ((X, 0), (Y, 1)), False, "eadr"),
    Litmus("eADR-MP", EADR, ((0, "store", (X, 1)), (1, "load", (X,)), (1, "store", (Y, 1))),
           ((X, 0), (Y, 1)), False, "eadr", threads=2, loads=(1,)),
)


def run(vector: Litmus, synchronous: bool = True):
    """Execute a vector's trace on the spec: the final state and the values its loads read."""
    from spec import pmem

    state = pmem.init(pmem.PmemConfig(words=16, threads=vector.threads, domain=vector.domain, synchronous=synchronous))
    reads = []
    for tid, op, args in vector.trace:
        state, result = getattr(pmem, op)(state, tid, *args)
        if op == "load":
            reads.append(result)
    return state, tuple(reads)


def outcome_allowed(vector: Litmus, synchronous: bool = True) -> bool:
    """Does some crash point and some persisted set give the vector's outcome?

    >>> outcome_allowed(LITMUS[0]), outcome_allowed(LITMUS[3])
    (True, False)
    """
    from spec import pmem

    state, _ = run(vector, synchronous)
    for k in range(len(state.events) + 1):
        for img in pmem.crash_at(state, k)[1]:
            if all(img[a // pmem.WORD] == v for a, v in vector.outcome):
                return True
    return False
