"""Counters of what a test checked: steps, examples, theorems, conditions …

A test (or the state machines it runs) calls :func:`tally` as it works; the
pytest plugin (:mod:`mmspec.pytest_plugin`) resets the counters before each
test and attaches them to the test's report, so ``mmspec verify`` can say how
much each layer checked, also when the tests ran in pytest-xdist workers.

Counters are summed over the tests of a cell. A *gauge* (:func:`gauge`) is a
size rather than an amount, such as the number of invariants a machine
checks; gauges combine by maximum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: The counter that measures each layer; a passed test that recorded none
#: counts 1.
PRIMARY: Mapping[str, str] = {
    "invariants": "steps",
    "lockstep": "steps",
    "theorems": "theorems",
    "contracts": "conditions",
    "oracle": "cases",
    "bugs": "caught",
    "doctests": "examples",
}

#: The order counters are listed in; others follow alphabetically.
ORDER: tuple[str, ...] = (
    "examples",
    "steps",
    "invariants",
    "theorems",
    "conditions",
    "cases",
    "caught",
    "modelled",
)

#: The key under which a test's counters travel in ``report.user_properties``.
PROPERTY = "mmspec"

_counters: dict[str, int] = {}
_gauges: dict[str, int] = {}
_notes: dict[str, str] = {}


def tally(counter: str, n: int = 1) -> None:
    """Add ``n`` to the named counter of the running test."""
    _counters[counter] = _counters.get(counter, 0) + n


def gauge(counter: str, value: int) -> None:
    """Set a size-like counter of the running test (combined by maximum)."""
    _gauges[counter] = max(_gauges.get(counter, 0), value)


def note(key: str, text: str) -> None:
    """Attach a text (e.g. ``"witness"``) to the running test's report."""
    _notes[key] = text


def reset() -> None:
    """Forget everything recorded so far (the plugin calls this per test)."""
    _counters.clear()
    _gauges.clear()
    _notes.clear()


def snapshot() -> dict[str, dict[str, object]]:
    """What the running test recorded, as plain data for the report."""
    return {
        "counters": dict(_counters),
        "gauges": dict(_gauges),
        "notes": dict(_notes),
    }


def combine(records: Iterable[Mapping[str, Mapping[str, int]]]) -> dict[str, int]:
    """Combine the records of several tests: counters add, gauges take the max."""
    total: dict[str, int] = {}
    gauges: dict[str, int] = {}
    for record in records:
        for key, value in record.get("counters", {}).items():
            total[key] = total.get(key, 0) + int(value)
        for key, value in record.get("gauges", {}).items():
            gauges[key] = max(gauges.get(key, 0), int(value))
    for key, value in gauges.items():
        total.setdefault(key, value)
    return total


def ordered(counters: Mapping[str, int]) -> list[tuple[str, int]]:
    """The counters in display order."""
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(counters.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


def describe(counters: Mapping[str, int]) -> str:
    """``"40 examples, 1,200 steps, 6 invariants"``."""
    return ", ".join(f"{value:,} {name}" for name, value in ordered(counters))
