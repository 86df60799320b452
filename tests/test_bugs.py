"""Layer ``bugs``: every modelled historical bug is caught, with a witness.

``impl.bugs.DEFECTS`` maps a name to a defect with ``mechanism``,
``description``, ``source`` (the Linux commit or CVE) and ``check``, a
``"module:callable"`` naming a zero-argument function that runs the part of
the suite that should catch the defect and returns the shrunk witness if it
fails, else None (``mmspec.machines.catch_witness`` does exactly that for a
state machine). For each defect this test

1. runs the check with the defect off: it must find nothing (a check that
   always fails proves nothing);
2. runs it again inside ``impl.bugs.enabled(name)``: it must return a witness;
3. checks that the defect is off again afterwards.
"""

from __future__ import annotations

import importlib

import pytest

from mmspec import tally as counters
from mmspec.mechanisms import all_mechanisms
from mmspec.registry import resolve

BUGS = "impl.bugs"


def _params() -> list:
    def marks(mechanism: str) -> list:
        return [pytest.mark.mechanism(mechanism), pytest.mark.layer("bugs")]

    try:
        defects = importlib.import_module(BUGS).DEFECTS
    except Exception as exc:  # every mechanism with an impl reports it
        problem = f"cannot load {BUGS}.DEFECTS: {type(exc).__name__}: {exc}"
        return [pytest.param(None, None, problem, marks=marks(m.name), id=f"{m.name}-load")
                for m in all_mechanisms() if m.impl and "bugs" not in m.not_applicable]
    return [pytest.param(name, defects[name], None, marks=marks(defects[name].mechanism), id=name)
            for name in sorted(defects)]


def is_enabled(bugs, name: str) -> bool:
    """Whether a defect is switched on: ``impl.bugs.active(name)`` (or ``is_enabled``)."""
    for query in ("active", "is_enabled"):
        if callable(getattr(bugs, query, None)):
            return bool(getattr(bugs, query)(name))
    pytest.fail(f"{BUGS} must provide active(name) -> bool", pytrace=False)


@pytest.mark.parametrize(("name", "defect", "problem"), _params())
def test_defect_is_caught(name: str, defect, problem: str | None) -> None:
    """The suite catches the defect when it is on, and only then."""
    if problem:
        pytest.fail(problem, pytrace=False)
    bugs = importlib.import_module(BUGS)
    check = resolve(defect.check)
    counters.tally("modelled")
    assert not is_enabled(bugs, name), f"defect {name} is on before its test"
    control = check()
    if control is not None:
        pytest.fail(f"the check {defect.check} fails with {name} off, so it proves nothing:\n"
                    f"{control}", pytrace=False)
    with bugs.enabled(name):
        assert is_enabled(bugs, name), f"{BUGS}.enabled({name!r}) did not switch it on"
        witness = check()
    assert not is_enabled(bugs, name), f"defect {name} is still on after enabled() exited"
    if witness is None:
        pytest.fail(f"defect {name} was not caught: {defect.description} ({defect.source})",
                    pytrace=False)
    counters.tally("caught")
    counters.note("witness", witness)
