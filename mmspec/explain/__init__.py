"""``mmspec explain TOPIC --seed N``: walk through one mechanism on an example.

Like the OSTEP homework simulators: a seed picks a concrete problem, and the
walk-through prints each step the kernel takes, in Linux's terms. Each
mechanism names its walk-through in its registration
(``Mechanism.explain = "mmspec.explain.buddy:explain"``); the callable takes
``(seed: int, **options)`` and returns the text. Extra command-line options
``--name value`` (or a bare ``--flag``) reach it as keyword arguments, with
integers converted.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from mmspec.registry import Mechanism


def topics(mechanisms: Sequence[Mechanism]) -> dict[str, Mechanism]:
    """Every topic name, mapped to the mechanism that explains it."""
    found: dict[str, Mechanism] = {}
    for mechanism in mechanisms:
        if not mechanism.explain:
            continue
        for name in mechanism.topic_names:
            found.setdefault(name, mechanism)
    return dict(sorted(found.items()))


def parse_options(extra: Sequence[str]) -> dict[str, object]:
    """Turn ``["--order", "3", "--verbose"]`` into ``{"order": 3, "verbose": True}``.

    Positional arguments before the first option (``mmspec explain walk 0x7ffd12345678
    --mode x86-64-4level``) reach the walk-through as ``args``, a tuple.

    >>> parse_options(["0x10", "--mode", "x86-64-4level", "--quiz"])
    {'args': (16,), 'mode': 'x86-64-4level', 'quiz': True}
    """
    options: dict[str, object] = {}
    positional = []
    while positional_ok(extra, len(positional)):
        positional.append(_value(extra[len(positional)]))
    if positional:
        options["args"] = tuple(positional)
    i = len(positional)
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or len(token) == 2:
            raise ValueError(f"unexpected argument {token!r} (options look like --name value)")
        name, sep, value = token[2:].partition("=")
        key = name.replace("-", "_")
        if sep:
            options[key] = _value(value)
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            options[key] = _value(extra[i + 1])
            i += 1
        else:
            options[key] = True
        i += 1
    return options


def positional_ok(extra: Sequence[str], i: int) -> bool:
    """Is ``extra[i]`` a positional argument (one before any ``--option``)?"""
    return i < len(extra) and not extra[i].startswith("--")


def _value(text: str) -> object:
    try:
        return int(text, 0)
    except ValueError:
        return text


def call(walk_through: Callable[..., object], topic: str, seed: int, **options: object) -> str:
    """Run a walk-through; one that serves several topics (it has a ``topic`` parameter) is
    told which one the reader asked for."""
    if "topic" in inspect.signature(walk_through).parameters:
        options = {**options, "topic": topic}
    return str(walk_through(seed, **options))


def explain(topic: str, seed: int, mechanisms: Sequence[Mechanism], **options: object) -> str:
    """The walk-through of ``topic`` for ``seed`` (``KeyError`` if unknown)."""
    known = topics(mechanisms)
    if topic not in known:
        raise KeyError(topic)
    return call(known[topic].explainer(), topic, seed, **options)
