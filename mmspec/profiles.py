"""Hypothesis profiles, and budgets that scale with them.

``tests/conftest.py`` registers these profiles and loads the one named by the
environment variable ``HYPOTHESIS_PROFILE`` (default ``dev``).

========  =============================================================
profile   use
========  =============================================================
dev       ``./run test`` on a laptop: 50 examples, the example database on
ci        ``.ci/run``: derandomized, no database, about 100 examples
quick     ``mmspec verify --profile quick``: seconds per layer
default   ``mmspec verify``: the normal run
thorough  ``mmspec verify --profile thorough``: a long soak
========  =============================================================

The verify profiles have no database and no deadline, and are not
derandomized: ``--seed`` chooses the examples, so the same seed gives the
same run.
"""

from __future__ import annotations

import os
from typing import TypeVar

from hypothesis import HealthCheck, settings

T = TypeVar("T")

#: Environment variable that names the profile.
ENV = "HYPOTHESIS_PROFILE"

#: Profile loaded when the environment names none.
DEFAULT = "dev"

#: Profiles ``mmspec verify`` accepts, from cheapest to most thorough.
VERIFY_PROFILES: tuple[str, ...] = ("quick", "default", "thorough")

#: Every profile, and which size class it belongs to (0 small, 1 medium, 2 large).
SIZE: dict[str, int] = {"dev": 0, "quick": 0, "ci": 1, "default": 1, "thorough": 2}

_SLOW = [HealthCheck.too_slow]

#: Hypothesis's own defaults, which every mmspec profile starts from.
_BASE = settings.get_profile("default")


def register() -> None:
    """Register every mmspec profile with hypothesis (idempotent)."""
    settings.register_profile("dev", parent=_BASE, max_examples=50, deadline=None)
    settings.register_profile(
        "ci",
        parent=_BASE,
        max_examples=100,
        stateful_step_count=30,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=_SLOW,
    )
    for name, examples, steps in (
        ("quick", 25, 25),
        ("default", 100, 50),
        ("thorough", 1000, 100),
    ):
        settings.register_profile(
            name,
            parent=_BASE,
            max_examples=examples,
            stateful_step_count=steps,
            derandomize=False,
            database=None,
            deadline=None,
            print_blob=True,
            suppress_health_check=_SLOW,
        )


def load(name: str | None = None) -> str:
    """Register the profiles and load ``name`` (default: from the environment)."""
    register()
    name = name or os.environ.get(ENV) or DEFAULT
    if name not in SIZE:
        raise ValueError(f"unknown hypothesis profile {name!r}; known: {', '.join(SIZE)}")
    settings.load_profile(name)
    return name


def profile_name() -> str:
    """The name of the hypothesis profile in force."""
    current = settings.get_current_profile_name()
    if current in SIZE:
        return current
    return os.environ.get(ENV) or DEFAULT


def by_profile(small: T, medium: T, large: T) -> T:
    """Pick a budget by profile size: dev/quick, ci/default, thorough.

    >>> by_profile(1, 2, 10) in (1, 2, 10)
    True
    """
    return (small, medium, large)[SIZE.get(profile_name(), 1)]


def crosshair_timeout() -> float:
    """CrossHair's ``--per_condition_timeout`` for the profile in force."""
    return by_profile(1.0, 2.0, 10.0)
