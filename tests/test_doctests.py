"""Layer ``doctests``: every example in the documentation runs.

For each mechanism, the doctests of its ``doctest_modules`` (default: its
spec module) run with ``ELLIPSIS``. A module without examples fails, unless
the mechanism marks the layer not applicable.
"""

from __future__ import annotations

import doctest
import importlib
import io

import pytest

from mmspec.mechanisms import all_mechanisms
from mmspec.tally import tally


def _params() -> list:
    return [
        pytest.param(module, marks=[pytest.mark.mechanism(m.name), pytest.mark.layer("doctests")],
                     id=f"{m.name}-{module}")
        for m in all_mechanisms()
        if "doctests" not in m.not_applicable
        for module in m.doctest_targets
    ]


def run_doctests(module_name: str) -> tuple[int, int, str]:
    """Run a module's doctests: ``(failed, attempted, report)``."""
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = io.StringIO()
    failed = attempted = 0
    for test in sorted(finder.find(module), key=lambda t: t.name):
        result = runner.run(test, out=report.write)
        failed += result.failed
        attempted += result.attempted
    return failed, attempted, report.getvalue()


@pytest.mark.parametrize("module_name", _params())
def test_doctests(module_name: str) -> None:
    """Every ``>>>`` example in the module gives the output it shows."""
    failed, attempted, report = run_doctests(module_name)
    if failed:
        pytest.fail(f"{failed} of {attempted} doc examples in {module_name} failed:\n{report}",
                    pytrace=False)
    if attempted == 0:
        pytest.fail(f"{module_name} has no doc examples", pytrace=False)
    tally("examples", attempted)
