"""Persistency litmus tests: small programs, a crash outcome, and whether Px86 allows it.

Each vector is a trace (one interleaving of the threads, which also fixes what each load
reads), an outcome (values of some words after the crash and recovery), and the verdict:
*allowed* means some crash point and some persisted set give the outcome.  ``x`` is at byte 0
(line 0), ``y`` at 64 (line 1), ``x2`` at 8 (x's line).

The models: Raad, Wickerson, Neiger, Vafeiadis, "Persistency semantics of the Intel-x86
architecture", POPL 2020 (PACMPL 4, article 11; Px86: unflushed writes persist in any order
across lines and in order within one; CLFLUSH orders; CLFLUSHOPT/CLWB need a fence; flushes
by another thread that observed the write), and Raad, Maranget, Vafeiadis, "Extending
Intel-x86 consistency and persistency", POPL 2022 (PACMPL 6; non-temporal stores need a fence;
an NT store to a line writes back earlier cached stores to it).  Khyzha and Lahav, "Taming
x86-TSO persistency", is POPL **2021** (PACMPL 5, article 47), not 2022: it proves Px86
equivalent, in reachable states, to a model whose flushes complete synchronously -- the
``synchronous`` reading of :mod:`spec.pmem`, which the tests check against the asynchronous
one on every vector.  The eADR vectors follow Intel's eADR guidance (flushes unnecessary,
fences still needed).

**Names.**  ``name`` is a descriptive name of ours (the instructions, in program order:
``W`` store, ``FL`` CLFLUSH, ``FO`` CLFLUSHOPT, ``WB`` CLWB, ``SF``/``MF`` fences, ``NT``
non-temporal store, ``MP`` message passing between two CPUs).  ``paper_name`` is for the
papers' own name of the test and is ``None`` on every vector: the papers' names could not be
found.  What was searched: the stored public pages hold only the title pages and abstracts of
the three papers (a copy of the POPL 2020 paper, copies of the POPL 2021 paper and of its
extended arXiv version 2010.13593, the HAL and ACM pages of the POPL 2022 paper), not the
sections that present the examples; no repository in the stored index holds the litmus files
of the Alloy-generated Px86 tests or of the POPL 2022 artefact ("X86_64 Memory Type Tests",
doi 10.1145/3462312); herdtools7 and the fork of the POPL 2021 paper's first author hold no x86 persistency tests;
"Px86" and "PTSOsyn" occur in no stored source file.  The nearest artefact found, the model
checker of Cho, Lee, Raad, Kang, "Revamping hardware persistency models" (PLDI 2021;
repositories kaist-cp/view-hw and kaist-cp/rmem-persistency), names its examples (COMMIT1),
(COMMIT WEAK), (FOB), ... but ships them for ARMv8 only and belongs to another paper, so its
names are not attached here either.
``source`` therefore names the paper whose rules decide the verdict, not a figure in it, and
the verdicts are checked against the model (both readings, the impl, and the z3 encoding of
``proofs/pmem.py``), not against a table of the papers.
"""

from __future__ import annotations

from typing import NamedTuple

X, Y, X2 = 0, 64, 8


class Litmus(NamedTuple):
    """A litmus vector: our descriptive name, source, trace ``(tid, op, args)``, outcome,
    verdict, domain, CPUs, the values its loads read, and the paper's name for it (if known)."""

    name: str
    source: str
    trace: tuple
    outcome: tuple  # ((addr, value), ...)
    allowed: bool
    domain: str = "adr"
    threads: int = 1
    loads: tuple = ()  # the values the trace's loads must read, in order
    paper_name: str | None = None  # the paper's own name for the test, where known (none is)


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
