"""Layer ``theorems``: every z3 theorem of every mechanism is proved.

A mechanism's ``proofs`` module has a list ``THEOREMS``; each item has a
``name``, a ``statement`` and ``prove()``, which returns an object with
``proved``, ``detail`` and ``counterexample``. One test per theorem.
"""

from __future__ import annotations

import importlib

import pytest

from mmspec.mechanisms import all_mechanisms
from mmspec.tally import tally


def _params() -> list:
    params = []
    for mechanism in all_mechanisms():
        if not mechanism.proofs or "theorems" in mechanism.not_applicable:
            continue
        marks = [pytest.mark.mechanism(mechanism.name), pytest.mark.layer("theorems")]
        try:
            theorems = list(importlib.import_module(mechanism.proofs).THEOREMS)
        except Exception as exc:  # reported by the test, not hidden at collection
            problem = f"cannot load {mechanism.proofs}.THEOREMS: {type(exc).__name__}: {exc}"
            params.append(pytest.param(None, problem, marks=marks, id=f"{mechanism.name}-load"))
            continue
        if not theorems:
            problem = f"{mechanism.proofs}.THEOREMS is empty"
            params.append(pytest.param(None, problem, marks=marks, id=f"{mechanism.name}-empty"))
        for theorem in theorems:
            params.append(pytest.param(theorem, None, marks=marks,
                                       id=f"{mechanism.name}-{theorem.name}"))
    return params


@pytest.mark.parametrize(("theorem", "problem"), _params())
def test_theorem(theorem, problem: str | None) -> None:
    """The theorem is proved; otherwise z3's counterexample is the failure."""
    if problem:
        pytest.fail(problem, pytrace=False)
    result = theorem.prove()
    if not result.proved:
        pytest.fail(
            f"theorem {theorem.name} not proved: {theorem.statement}\n"
            f"{result.detail}\ncounterexample: {result.counterexample}",
            pytrace=False,
        )
    tally("theorems")
