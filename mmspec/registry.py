"""The description of one mechanism, as the harness sees it.

A mechanism is registered by a module ``mmspec/mechanisms/<name>.py`` that
defines ``MECHANISM = Mechanism(...)``. The harness never names a mechanism
itself: the generic layer tests, ``mmspec verify`` and ``mmspec explain`` all
iterate over the registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType

#: The verification layers, in the order every table and report uses.
LAYERS: tuple[str, ...] = (
    "invariants",
    "lockstep",
    "theorems",
    "contracts",
    "oracle",
    "bugs",
    "doctests",
)


@dataclass(frozen=True)
class Mechanism:
    """One memory-management mechanism and the modules that describe it.

    Attributes:
        name: short name, also the test module's stem (``"buddy"`` for
            ``tests/test_buddy.py``).
        title: human title with the Linux source it models.
        spec: module name of the reference specification.
        impl: module name of the optimized implementation, if any.
        proofs: module name of the z3 theorems (a module-level ``THEOREMS``
            list), if any.
        explain: ``"module:callable"`` of the walk-through; the callable takes
            ``(seed: int, **options)`` and returns text.
        topics: extra topic names ``mmspec explain`` accepts for this
            mechanism (its name is always one).
        doctest_modules: modules whose doctests belong to this mechanism;
            empty means ``(spec,)``.
        contracts: modules CrossHair checks; empty means ``(spec,)``.
        not_applicable: layer name -> reason, for layers that do not fit.
    """

    name: str
    title: str
    spec: str
    impl: str | None = None
    proofs: str | None = None
    explain: str | None = None
    topics: tuple[str, ...] = ()
    doctest_modules: tuple[str, ...] = ()
    contracts: tuple[str, ...] = ()
    not_applicable: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.not_applicable) - set(LAYERS))
        if unknown:
            raise ValueError(f"{self.name}: not_applicable names unknown layers {unknown}")
        object.__setattr__(self, "not_applicable", MappingProxyType(dict(self.not_applicable)))

    @property
    def doctest_targets(self) -> tuple[str, ...]:
        """The modules whose doctests run for this mechanism."""
        return self.doctest_modules or (self.spec,)

    @property
    def contract_targets(self) -> tuple[str, ...]:
        """The modules CrossHair checks for this mechanism."""
        return self.contracts or (self.spec,)

    @property
    def topic_names(self) -> tuple[str, ...]:
        """Every name ``mmspec explain`` accepts for this mechanism."""
        return (self.name, *self.topics)

    def explainer(self) -> Callable[..., str]:
        """Import and return the ``explain`` callable."""
        if not self.explain:
            raise LookupError(f"mechanism {self.name!r} has no explain walk-through")
        return resolve(self.explain)


def import_module(name: str) -> ModuleType:
    """Import a module by dotted name."""
    return importlib.import_module(name)


def resolve(target: str) -> Callable[..., object]:
    """Return the object named by ``"package.module:attribute"``."""
    module_name, sep, attr = target.partition(":")
    if not sep or not attr:
        raise ValueError(f"expected 'module:callable', got {target!r}")
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj
