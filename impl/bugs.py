"""Switchable historical defects: known bugs the verification suite must catch.

Each :class:`Defect` names a bug that Linux once had (with the commit that fixed it) or a
classic mistake a student makes (a *teaching defect*).  The impl carries the faulty code path
behind a switch; every switch is off by default, so the impl behaves as the spec does.  A test
turns one on with :func:`enabled` and checks that the suite's catcher (``Defect.check``, a
``"module:callable"``) finds a witness: an operation sequence after which impl and spec differ.

>>> from impl import bugs
>>> bugs.active("buddy-missed-merge")
False
>>> with bugs.enabled("buddy-missed-merge"):
...     bugs.active("buddy-missed-merge")
True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Defect:
    """One modelled bug: where it lives, what it does, where it comes from, what catches it."""

    name: str
    mechanism: str
    description: str
    source: str  # the Linux commit or CVE it reproduces, or "teaching defect"
    check: str  # "module:callable" of the catcher


_BUDDY_CATCH = "mmspec.mechanisms.buddy:catch"

_BUDDY = (
        Defect(
            "buddy-wrong-buddy",
            "buddy",
            "__find_buddy_pfn() computes the buddy as pfn + (1 << order) instead of pfn ^ (1 << order): "
            "a block that is the upper half of its pair looks for its buddy above itself, misses the "
            "real (lower) buddy and may 'merge' with the wrong block, so free pages appear and vanish.",
            "teaching defect",
            _BUDDY_CATCH,
        ),
        Defect(
            "buddy-missed-merge",
            "buddy",
            "__free_one_page() stops after the first merge: coalescing is missed at order >= 1, so the "
            "free lists fill with small buddies that should have formed larger blocks.",
            "teaching defect",
            _BUDDY_CATCH,
        ),
        Defect(
            "buddy-double-free-undetected",
            "buddy",
            "The free path skips the double-free and bad-page checks (free_pages_prepare()/bad_page()): "
            "freeing a free block or a non-head page links it again and corrupts the free lists and "
            "NR_FREE_PAGES.",
            "teaching defect",
            _BUDDY_CATCH,
        ),
        Defect(
            "buddy-merge-nonmergeable-pageblocks",
            "buddy",
            "__free_one_page() merges at or above pageblock order without checking that both pageblocks "
            "can merge, so a CMA (or HighAtomic) pageblock merges with an ordinary one and its pages land "
            "on the ordinary free list, where unmovable allocations can take them.",
            "Linux commit 1dd214b8f21c 'mm: page_alloc: avoid merging non-fallbackable pageblocks with "
            "others' (v5.18, Zi Yan)",
            _BUDDY_CATCH,
        ),

)



def _collect() -> dict[str, Defect]:
    """Every defect: the buddy allocator's above, and the ``DEFECTS`` tuple of every other
    ``impl`` module (a mechanism registers its defects in its own impl module)."""
    import importlib
    import pkgutil

    import impl

    found = {d.name: d for d in _BUDDY}
    for info in sorted(pkgutil.iter_modules(impl.__path__), key=lambda m: m.name):
        if info.name != "bugs":
            module = importlib.import_module(f"impl.{info.name}")
            for defect in getattr(module, "DEFECTS", ()):
                if defect.name in found:
                    raise ValueError(f"defect {defect.name!r} is registered twice")
                found[defect.name] = defect
    return dict(sorted(found.items()))


_registry: dict[str, Defect] | None = None


def __getattr__(name: str):
    """``DEFECTS`` is collected on first use, so impl modules can import this one."""
    global _registry
    if name == "DEFECTS":
        if _registry is None:
            _registry = _collect()
        return _registry
    raise AttributeError(name)


_active: dict[str, int] = {}  # name -> nesting depth of enabled()
_active_names: frozenset[str] = frozenset()


def _known(name: str) -> Defect:
    defects = __getattr__("DEFECTS")
    if name not in defects:
        raise KeyError(f"unknown defect {name!r}; known: {', '.join(defects)}")
    return defects[name]


def active(name: str) -> bool:
    """Is the defect ``name`` switched on?  ``KeyError`` for an unknown name."""
    _known(name)
    return name in _active_names


def active_names() -> frozenset[str]:
    """The names of every defect switched on now (empty, and cheap to test, when none is)."""
    return _active_names


@contextmanager
def enabled(name: str) -> Iterator[Defect]:
    """Switch the defect ``name`` on for the duration of a ``with`` block (nests)."""
    global _active_names
    defect = _known(name)
    _active[name] = _active.get(name, 0) + 1
    _active_names = frozenset(_active)
    try:
        yield defect
    finally:
        _active[name] -= 1
        if not _active[name]:
            del _active[name]
        _active_names = frozenset(_active)
