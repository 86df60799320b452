"""Layer ``contracts``: CrossHair finds no violation of any contract.

Contracts are PEP 316 conditions in the spec's docstrings, written in a
fenced ``text`` block so that the documentation shows them verbatim::

    ```text
    pre: 0 <= order <= MAX_ORDER
    post: __return__ ^ (1 << order) == pfn
    ```

For each module in a mechanism's ``contracts`` (default: its spec module)
this runs ``crosshair check MODULE --report_all`` with a per-condition time
budget that grows with the profile (1 s quick, 2 s default, 10 s
thorough). Each postcondition CrossHair reports on is one checked condition;
"Not confirmed" means no counterexample was found in the budget. A module
without conditions fails, unless the mechanism marks the layer not
applicable.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmspec.mechanisms import all_mechanisms
from mmspec.profiles import crosshair_timeout
from mmspec.tally import tally

ROOT = Path(__file__).resolve().parent.parent

#: ``path:line: kind: message``, CrossHair's report format.
LINE = re.compile(r"^(?P<where>.+?:\d+): (?P<kind>info|error|warning): (?P<message>.*)$")

CHECKED = ("Not confirmed.", "Confirmed over all paths.")


def _params() -> list:
    return [
        pytest.param(module, marks=[pytest.mark.mechanism(m.name), pytest.mark.layer("contracts")],
                     id=f"{m.name}-{module}")
        for m in all_mechanisms()
        if "contracts" not in m.not_applicable
        for module in m.contract_targets
    ]


def parse_report(text: str) -> tuple[int, list[str]]:
    """CrossHair's output: ``(conditions checked without error, error lines)``."""
    checked, errors = 0, []
    for line in text.splitlines():
        match = LINE.match(line.strip())
        if not match:
            continue
        if match["kind"] == "error":
            errors.append(line.strip())
        elif match["kind"] == "info" and match["message"].strip() in CHECKED:
            checked += 1
    return checked, errors


def crosshair_check(module_name: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``crosshair check`` on one module from the repository root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "crosshair", "check", module_name, "--report_all",
               f"--per_condition_timeout={timeout:g}"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600 + 200 * timeout)


@pytest.mark.parametrize("module_name", _params())
def test_contracts(module_name: str) -> None:
    """CrossHair checks every contract of the module and finds no counterexample."""
    proc = crosshair_check(module_name, crosshair_timeout())
    output = (proc.stdout + proc.stderr).replace(f"{ROOT}{os.sep}", "")
    checked, errors = parse_report(output)
    if errors:
        pytest.fail("CrossHair found a counterexample:\n" + "\n".join(
            e.replace(f"{ROOT}{os.sep}", "") for e in errors), pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"crosshair check {module_name} exited with {proc.returncode}:\n{output}",
                    pytrace=False)
    if checked == 0:
        pytest.fail(f"no contracts: CrossHair found no conditions to check in {module_name}\n"
                    f"{output}", pytrace=False)
    tally("conditions", checked)
