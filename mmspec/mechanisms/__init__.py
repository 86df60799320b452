"""The registry: every module in this package registers one mechanism.

A module ``mmspec/mechanisms/<name>.py`` defines ``MECHANISM``, a
:class:`mmspec.registry.Mechanism`. Modules are imported in name order, so
every listing is deterministic. Adding a mechanism never edits the harness.
"""

from __future__ import annotations

import importlib
import pkgutil

from mmspec.registry import Mechanism

__all__ = ["all_mechanisms", "get", "Mechanism"]


def all_mechanisms() -> tuple[Mechanism, ...]:
    """Every registered mechanism, sorted by module name."""
    found: dict[str, Mechanism] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        mechanism = getattr(module, "MECHANISM", None)
        if not isinstance(mechanism, Mechanism):
            raise TypeError(f"{module.__name__} must define MECHANISM = Mechanism(...)")
        if mechanism.name in found:
            raise ValueError(f"mechanism {mechanism.name!r} registered twice")
        found[mechanism.name] = mechanism
    return tuple(found.values())


def get(name: str) -> Mechanism:
    """The registered mechanism called ``name`` (``KeyError`` if none)."""
    for mechanism in all_mechanisms():
        if mechanism.name == name:
            return mechanism
    known = ", ".join(m.name for m in all_mechanisms()) or "none"
    raise KeyError(f"no mechanism {name!r} (registered: {known})")
