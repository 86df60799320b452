"""The pytest side of the harness: layer markers, counters, selection.

Loaded by ``tests/conftest.py`` (and by ``mmspec verify`` with ``-p``). It

* resets :mod:`mmspec.tally` before each test and attaches what the test
  counted, its mechanism and layer, and a readable failure text to
  ``report.user_properties`` (so it travels back from xdist workers);
* with ``--mmspec-verify``, deselects every test without a ``layer`` marker,
  and with ``--mmspec-only`` / ``--mmspec-layer`` those of other mechanisms
  or layers.

A test belongs to a layer by ``@pytest.mark.layer("invariants")`` and to a
mechanism by ``@pytest.mark.mechanism("buddy")``, or else by its file name
``test_<mechanism>.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmspec import tally
from mmspec.registry import LAYERS

PROPERTY = tally.PROPERTY


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mmspec")
    group.addoption("--mmspec-verify", action="store_true", default=False,
                    help="run only tests with a layer marker (used by mmspec verify)")
    group.addoption("--mmspec-only", default="",
                    help="comma-separated mechanisms to keep (with --mmspec-verify)")
    group.addoption("--mmspec-layer", default="",
                    help="comma-separated layers to keep (with --mmspec-verify)")


def _split(text: str) -> set[str]:
    return {part.strip() for part in text.split(",") if part.strip()}


def layer_of(item: pytest.Item) -> str | None:
    """The layer an item is marked with, or None."""
    marker = item.get_closest_marker("layer")
    if marker is None:
        return None
    name = marker.args[0] if marker.args else marker.kwargs.get("name")
    if name not in LAYERS:
        raise pytest.UsageError(
            f"{item.nodeid}: unknown layer {name!r}; layers are {', '.join(LAYERS)}"
        )
    return name


def mechanism_of(item: pytest.Item) -> str:
    """The mechanism an item belongs to: its marker, else its file's stem."""
    marker = item.get_closest_marker("mechanism")
    if marker is not None:
        return marker.args[0] if marker.args else marker.kwargs["name"]
    stem = Path(str(item.path)).stem
    return stem[len("test_"):] if stem.startswith("test_") else stem


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("mmspec_verify"):
        for item in items:  # still validate layer names
            layer_of(item)
        return
    only = _split(config.getoption("mmspec_only"))
    layers = _split(config.getoption("mmspec_layer"))
    keep, drop = [], []
    for item in items:
        layer = layer_of(item)
        if layer is None or (layers and layer not in layers) or (
            only and mechanism_of(item) not in only
        ):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    tally.reset()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    layer = layer_of(item)
    record: dict[str, object] = {
        "mechanism": mechanism_of(item),
        "layer": layer,
        **tally.snapshot(),
    }
    if call.excinfo is not None and report.failed:
        from mmspec.machines import describe_failure

        record["failure"] = describe_failure(call.excinfo.value)
    # A fresh list: the item's own list is shared by its setup, call and
    # teardown reports, and each report should carry one record.
    report.user_properties = [*report.user_properties, (PROPERTY, record)]
