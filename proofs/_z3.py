"""The small kit every proof module uses: a theorem registry and a prover.

A theorem is a function that builds a claim about the spec's own functions applied to z3
values, together with the premises under which the claim must hold.  :func:`prove` asks z3
whether ``premises and not claim`` is satisfiable: ``unsat`` is a proof for all inputs, a model
is a counterexample.  Bounded theorems (exhaustive exploration of every history up to a depth)
return their own :class:`ProofResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import z3


@dataclass(frozen=True)
class ProofResult:
    """What a proof attempt found."""

    proved: bool
    detail: str
    counterexample: str | None = None


@dataclass(frozen=True)
class Theorem:
    """A named claim with its statement in words and the function that proves it."""

    name: str
    statement: str
    check: Callable[[], ProofResult] = field(repr=False)

    def prove(self) -> ProofResult:
        return self.check()


def prove(claim: z3.BoolRef, premises: tuple = (), timeout_ms: int = 60_000) -> ProofResult:
    """Prove ``premises -> claim`` for all values of its free variables."""
    solver = z3.Solver()
    solver.set("timeout", timeout_ms)
    solver.add(*premises)
    solver.add(z3.Not(claim))
    start = time.perf_counter()
    verdict = solver.check()
    ms = (time.perf_counter() - start) * 1000
    if verdict == z3.unsat:
        return ProofResult(True, f"z3: unsat in {ms:.1f} ms")
    if verdict == z3.sat:
        model = solver.model()
        shown = ", ".join(f"{d.name()} = {model[d]}" for d in sorted(model.decls(), key=str))
        return ProofResult(False, "z3 found a counterexample", shown)
    return ProofResult(False, f"z3: unknown ({solver.reason_unknown()})")


def registry() -> tuple[list[Theorem], Callable]:
    """A module-level list of theorems and the decorator that appends to it."""
    theorems: list[Theorem] = []

    def theorem(statement: str):
        def register(fn: Callable[[], ProofResult]) -> Callable[[], ProofResult]:
            theorems.append(Theorem(fn.__name__.removeprefix("thm_"), statement, fn))
            return fn

        return register

    return theorems, theorem


def explore(initial, successors: Callable, invariants: list[Callable], render: Callable, depth: int) -> ProofResult:
    """Bounded exhaustive proof: breadth-first search over every history of up to ``depth``
    transitions from ``initial`` (``successors(state)`` yields the next states, through the
    spec's own transitions), checking every invariant in every new state; states are
    deduplicated, so the proof visits each reachable state once."""
    start = time.perf_counter()
    frontier = {initial}
    seen, transitions = set(frontier), 0
    for _ in range(depth):
        nxt = set()
        for state in frontier:
            for succ in successors(state):
                transitions += 1
                if succ not in seen:
                    bad = [inv.__name__ for inv in invariants if not inv(succ)]
                    if bad:
                        return ProofResult(False, f"{', '.join(bad)} violated", render(succ))
                    seen.add(succ)
                    nxt.add(succ)
        frontier = nxt
    secs = time.perf_counter() - start
    return ProofResult(True, f"exhaustive: {depth} ops, {len(seen)} states, {transitions} transitions, {secs:.1f} s")
