"""``mmspec verify``: run every layer for every mechanism, print one table.

The layers are pytest tests marked ``@pytest.mark.layer(...)`` (see
:mod:`mmspec.pytest_plugin`). ``verify`` runs pytest in-process on the
repository's ``tests/`` with only those tests selected, hides pytest's own
output, prints one progress line per finished test to stderr, and then
prints the table (or, with ``--json``, one JSON object) to stdout.

The table's counts, statuses and failure texts depend only on the code, the
profile and the seed; the times are in a separate table that ``--no-times``
leaves out, so ``mmspec verify --no-times --seed N`` prints the same bytes on
every run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mmspec import tally
from mmspec.registry import LAYERS, Mechanism

PROFILES = ("quick", "default", "thorough")

#: What the count in each layer's cell measures, for the legend.
UNITS = {
    "invariants": "steps",
    "lockstep": "steps",
    "theorems": "theorems proved",
    "contracts": "contract conditions",
    "oracle": "oracle cases",
    "bugs": "bugs caught/modelled",
    "doctests": "doc examples",
}

PASSED, FAILED, SKIPPED, NOT_APPLICABLE = "passed", "failed", "skipped", "not-applicable"


# ---------------------------------------------------------------- results


@dataclass
class TestResult:
    """One test's outcome, gathered from its setup, call and teardown reports."""

    nodeid: str
    mechanism: str
    layer: str | None
    outcome: str = PASSED  # passed | failed | skipped
    seconds: float = 0.0
    record: Mapping[str, Any] = field(default_factory=dict)
    failure: str = ""
    skip_reason: str = ""

    @property
    def witness(self) -> str | None:
        notes = self.record.get("notes", {}) or {}
        return notes.get("witness")


@dataclass
class Cell:
    """One mechanism × layer entry of the table."""

    status: str
    count: int = 0
    seconds: float = 0.0
    detail: str = ""
    failure: str = ""  # first failure's text, for the report under the table
    caught: int | None = None
    modelled: int | None = None

    def as_json(self, layer: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "count": self.count,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
        }
        if layer == "bugs":
            out["caught"] = self.caught or 0
            out["modelled"] = self.modelled or 0
        return out


@dataclass
class Outcome:
    """Everything ``verify`` found: cells, harness errors, the run's settings."""

    profile: str
    seed: int
    cells: dict[str, dict[str, Cell]]
    errors: list[str]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.errors and all(
            cell.status != FAILED for row in self.cells.values() for cell in row.values()
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "seed": self.seed,
            "profile": self.profile,
            "mechanisms": {
                name: {layer: row[layer].as_json(layer) for layer in LAYERS}
                for name, row in self.cells.items()
            },
            "errors": list(self.errors),
        }


def _first_lines(text: str, n: int) -> str:
    lines = text.strip().splitlines()
    more = len(lines) - n
    return "\n".join(lines[:n] + ([f"… ({more} more lines)"] if more > 0 else []))


def _test_name(nodeid: str) -> str:
    return nodeid[len("tests/"):] if nodeid.startswith("tests/") else nodeid


def build_cell(mechanism: Mechanism, layer: str, results: Sequence[TestResult],
               collection_errors: Sequence[str] = ()) -> Cell:
    """Turn the tests of one mechanism and layer into its cell.

    ``collection_errors`` names test files of this mechanism or layer that
    could not be collected; they explain a cell without tests (the run fails
    on them anyway, through ``Outcome.errors``).
    """
    results = sorted(results, key=lambda r: r.nodeid)
    seconds = sum(r.seconds for r in results)
    if not results:
        reason = mechanism.not_applicable.get(layer)
        if reason:
            return Cell(NOT_APPLICABLE, detail=reason)
        if collection_errors:
            return Cell(FAILED, detail="collection error in " + ", ".join(collection_errors))
        return Cell(FAILED, detail="no tests for this layer")
    passed = [r for r in results if r.outcome == PASSED]
    failed = [r for r in results if r.outcome == FAILED]
    skipped = [r for r in results if r.outcome == SKIPPED]
    primary = tally.PRIMARY[layer]
    count = 0
    for r in passed:
        counters = tally.combine([r.record])
        count += counters.get(primary, 1)
    counters = tally.combine(r.record for r in passed)
    cell = Cell(PASSED, count=count, seconds=seconds)
    if layer == "bugs":
        cell.caught = sum(tally.combine([r.record]).get("caught", 0) for r in passed)
        cell.modelled = sum(tally.combine([r.record]).get("modelled", 0) for r in results)
    skip_reasons = sorted({r.skip_reason or "no reason given" for r in skipped})
    skip_text = f"{len(skipped)} skipped: " + "; ".join(skip_reasons) if skipped else ""
    if failed:
        first = failed[0]
        cell.status = FAILED
        cell.failure = first.failure or "failed without a message"
        cell.detail = (f"{len(failed)} of {len(results)} tests failed; "
                       f"first: {_test_name(first.nodeid)}\n{cell.failure}")
        return cell
    if not passed:
        cell.status = SKIPPED
        cell.detail = skip_text
        return cell
    parts = [tally.describe(counters) or f"{len(passed)} tests"]
    if skip_text:
        parts.append(skip_text)
    cell.detail = "; ".join(parts)
    witnesses = [(r.nodeid, r.witness) for r in passed if r.witness]
    if witnesses:
        cell.detail += "".join(
            f"\n{_test_name(nodeid)}:\n{_first_lines(text, 6)}" for nodeid, text in witnesses
        )
    return cell


def build_outcome(
    mechanisms: Sequence[Mechanism],
    results: Iterable[TestResult],
    *,
    profile: str,
    seed: int,
    layers: Sequence[str] = LAYERS,
    collection_errors: Mapping[str, str] | None = None,
    errors: Sequence[str] = (),
    seconds: float = 0.0,
) -> Outcome:
    """Aggregate test results into the mechanism × layer table.

    ``collection_errors`` maps a test file (node id) that could not be
    collected to its error text; each is an error of the run, and a file
    ``test_<layer>.py`` or ``test_<mechanism>.py`` (also under
    ``tests/oracle/``) is named in the matching cells that have no tests.
    ``layers`` are the layers that were run; the others are reported as
    skipped, "not selected".
    """
    names = [m.name for m in mechanisms]
    grouped: dict[tuple[str, str], list[TestResult]] = {}
    unregistered: dict[str, int] = {}
    for r in results:
        if r.layer is None:
            continue
        if r.mechanism not in names:
            unregistered[r.mechanism] = unregistered.get(r.mechanism, 0) + 1
            continue
        grouped.setdefault((r.mechanism, r.layer), []).append(r)
    all_errors = list(errors)
    for name, n in sorted(unregistered.items()):
        all_errors.append(
            f"{n} layer-marked tests belong to {name!r}, which is not a registered mechanism"
            f" (add mmspec/mechanisms/{name}.py or mark the tests with pytest.mark.mechanism)"
        )
    file_errors: dict[tuple[str | None, str | None], list[str]] = {}
    for nodeid, text in sorted((collection_errors or {}).items()):
        stem = Path(nodeid.split("::")[0]).stem
        stem = stem[len("test_"):] if stem.startswith("test_") else stem
        key = (stem if stem in names else None, stem if stem in LAYERS else None)
        file_errors.setdefault(key, []).append(nodeid)
        all_errors.append(f"collection error in {nodeid}:\n{_first_lines(text, 30)}")
    cells: dict[str, dict[str, Cell]] = {}
    for mechanism in mechanisms:
        row = {}
        for layer in LAYERS:
            if layer not in layers:
                row[layer] = Cell(SKIPPED, detail="not selected (--layer)")
                continue
            errs = file_errors.get((mechanism.name, None), []) + file_errors.get(
                (None, layer), []
            )
            row[layer] = build_cell(mechanism, layer, grouped.get((mechanism.name, layer), []),
                                    errs)
        cells[mechanism.name] = row
    return Outcome(profile=profile, seed=seed, cells=cells, errors=all_errors, seconds=seconds)


# ---------------------------------------------------------------- rendering


def _mark(layer: str, cell: Cell) -> str:
    if cell.status == NOT_APPLICABLE:
        return "–"
    if cell.status == SKIPPED:
        return "skip"
    sign = "✓" if cell.status == PASSED else "✗"
    if layer == "bugs" and cell.modelled is not None:
        return f"{sign} {cell.caught or 0}/{cell.modelled}"
    return f"{sign} {cell.count:,}"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return lines


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def render_text(outcome: Outcome, *, times: bool = True) -> str:
    """The human report: the table, totals, failures, witnesses, reasons."""
    out = [f"mmspec verify: profile {outcome.profile}, seed {outcome.seed}", ""]
    header = ["mechanism", *LAYERS]
    rows = [[name, *(_mark(layer, row[layer]) for layer in LAYERS)]
            for name, row in outcome.cells.items()]
    out += _grid(header, rows)
    statuses = [c.status for row in outcome.cells.values() for c in row.values()]
    verdict = "PASSED" if outcome.passed else "FAILED"
    out += [
        "",
        "counts: " + "; ".join(f"{layer}: {unit}" for layer, unit in UNITS.items()),
        "cells: ✓ passed, ✗ failed, skip skipped, – not applicable",
        f"total: {statuses.count(PASSED)} passed, {statuses.count(FAILED)} failed, "
        f"{statuses.count(SKIPPED)} skipped, {statuses.count(NOT_APPLICABLE)} not applicable"
        f" — {verdict}",
    ]
    if times:
        out += ["", "seconds (vary from run to run; --no-times leaves them out)"]
        out += _grid(["mechanism", *LAYERS],
                     [[name, *(f"{row[layer].seconds:.1f}" for layer in LAYERS)]
                      for name, row in outcome.cells.items()])
        out.append(f"wall time: {outcome.seconds:.1f} s")
    if outcome.errors:
        out += ["", "errors", "------"]
        out += [_indent(e) for e in outcome.errors]
    failures = [(n, layer, c) for n, row in outcome.cells.items() for layer, c in row.items()
                if c.status == FAILED]
    if failures:
        out += ["", "failures (first counterexample of each failed cell)", "--------"]
        for name, layer, cell in failures:
            out.append(f"{name}/{layer}: {cell.detail.splitlines()[0]}")
            if cell.failure:
                out.append(_indent(cell.failure))
    witnessed = [(n, c) for n, row in outcome.cells.items()
                 for layer, c in row.items() if layer == "bugs" and c.status == PASSED
                 and "\n" in c.detail]
    if witnessed:
        out += ["", "bugs caught (first lines of each witness)", "-----------"]
        for name, cell in witnessed:
            out.append(f"{name}/bugs: {cell.detail.splitlines()[0]}")
            out.append(_indent("\n".join(cell.detail.splitlines()[1:])))
    notes = [(n, layer, c) for n, row in outcome.cells.items() for layer, c in row.items()
             if c.status in (SKIPPED, NOT_APPLICABLE)
             or (c.status == PASSED and "skipped:" in c.detail)]
    if notes:
        out += ["", "skipped and not applicable", "--------------------------"]
        for name, layer, cell in notes:
            detail = cell.detail.splitlines()[0] if cell.detail else ""
            out.append(f"{name}/{layer}: {cell.status}: {detail}")
    return "\n".join(out) + "\n"


def render_json(outcome: Outcome) -> str:
    """The machine report: exactly one JSON object."""
    return json.dumps(outcome.as_json(), indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- running pytest


class Collector:
    """A pytest plugin (in the controlling process) that gathers reports."""

    def __init__(self, progress: TextIO | None) -> None:
        self.progress = progress
        self.results: dict[str, TestResult] = {}
        self.collection_errors: dict[str, str] = {}
        self.total: int | None = None
        self.done = 0

    def pytest_collection_finish(self, session: Any) -> None:
        self.total = len(session.items)

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.collection_errors[report.nodeid or "<session>"] = str(report.longreprtext)

    def pytest_runtest_logreport(self, report: Any) -> None:
        record: Mapping[str, Any] = {}
        for key, value in report.user_properties:
            if key == tally.PROPERTY:
                record = value
        result = self.results.get(report.nodeid)
        if result is None:
            result = TestResult(report.nodeid, record.get("mechanism", "?"), record.get("layer"))
            self.results[report.nodeid] = result
        if record:
            result.record = record
            result.mechanism = record.get("mechanism", result.mechanism)
            result.layer = record.get("layer", result.layer)
        result.seconds += report.duration
        if report.failed:
            if result.outcome != FAILED:
                result.failure = record.get("failure") or str(report.longreprtext)
                if report.when != "call":
                    result.failure = f"error in {report.when}:\n{result.failure}"
            result.outcome = FAILED
        elif report.skipped and result.outcome != FAILED:
            result.outcome = SKIPPED
            longrepr = report.longrepr
            if isinstance(longrepr, tuple) and len(longrepr) == 3:
                reason = str(longrepr[2])
            else:
                reason = str(getattr(report, "wasxfail", "") or longrepr or "")
            result.skip_reason = reason.removeprefix("Skipped: ")
        if report.when == "teardown":
            self.done += 1
            self._progress(result)

    def _progress(self, result: TestResult) -> None:
        if self.progress is None:
            return
        total = self.total if self.total is not None else "?"
        width = len(str(total))
        where = f"{result.mechanism}/{result.layer}"
        self.progress.write(
            f"[{self.done:>{width}}/{total}] {where:<20} {_test_name(result.nodeid)}  "
            f"{result.outcome} {result.seconds:.1f}s\n"
        )
        self.progress.flush()


class _XdistTotals:
    """Learns the number of selected tests when pytest-xdist runs them."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def pytest_xdist_node_collection_finished(self, node: Any, ids: Sequence[str]) -> None:
        if self.collector.total is None:
            self.collector.total = len(ids)


def repo_root() -> Path:
    """The source checkout this package runs from (it holds ``tests/``)."""
    return Path(__file__).resolve().parent.parent


def _xdist_available() -> bool:
    try:
        import xdist  # noqa: F401
    except ImportError:
        return False
    return True


def run_pytest(*, profile: str, seed: int, only: Sequence[str], layers: Sequence[str],
               jobs: int, progress: TextIO | None) -> tuple[Collector, int, str]:
    """Run the layer tests; return the collector, pytest's exit code and its output."""
    import pytest

    root = repo_root()
    args = [
        str(root / "tests"),
        "--rootdir", str(root),
        "-p", "mmspec.pytest_plugin",
        "-p", "no:cacheprovider",
        "-q",
        "-o", "addopts=",
        "--import-mode=importlib",
        "--continue-on-collection-errors",
        "-W", "ignore::pytest.PytestAssertRewriteWarning",
        "--mmspec-verify",
        f"--hypothesis-seed={seed}",
        f"--hypothesis-profile={profile}",
    ]
    if only:
        args.append("--mmspec-only=" + ",".join(only))
    if layers != LAYERS:
        args.append("--mmspec-layer=" + ",".join(layers))
    if jobs > 0:
        args += ["-n", str(jobs)]
    collector = Collector(progress)
    plugins: list[object] = [collector]
    if jobs > 0:
        plugins.append(_XdistTotals(collector))
    captured = io.StringIO()
    saved_env = os.environ.get("HYPOTHESIS_PROFILE")
    saved_cwd = os.getcwd()
    os.environ["HYPOTHESIS_PROFILE"] = profile
    try:
        os.chdir(root)
        with contextlib.redirect_stdout(captured):
            code = int(pytest.main(args, plugins=plugins))
    finally:
        os.chdir(saved_cwd)
        if saved_env is None:
            os.environ.pop("HYPOTHESIS_PROFILE", None)
        else:
            os.environ["HYPOTHESIS_PROFILE"] = saved_env
    return collector, code, captured.getvalue()


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mmspec verify``."""
    parser.add_argument("--profile", choices=PROFILES, default="default",
                        help="how hard to try: quick, default or thorough (default: default)")
    parser.add_argument("--only", metavar="MECH[,MECH]", default="",
                        help="verify only these mechanisms")
    parser.add_argument("--layer", metavar="LAYER[,LAYER]", default="",
                        help="run only these layers: " + ", ".join(LAYERS))
    parser.add_argument("--seed", type=int, default=0,
                        help="hypothesis seed; the same seed gives the same report (default 0)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of the table")
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help="pytest-xdist workers (default 2 if available; 0 runs in-process)")
    parser.add_argument("--no-times", action="store_true",
                        help="leave out the times, so that the output is byte-identical per seed")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also print pytest's own output to stderr")


def _names(text: str) -> list[str]:
    return sorted({part.strip() for part in text.split(",") if part.strip()})


def run(options: argparse.Namespace, *, mechanisms: Sequence[Mechanism] | None = None,
        stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run ``mmspec verify`` with parsed options; return the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if mechanisms is None:
        from mmspec.mechanisms import all_mechanisms

        mechanisms = all_mechanisms()
    if not mechanisms:
        print("mmspec verify: no mechanisms are registered "
              "(a mechanism registers itself in mmspec/mechanisms/<name>.py)", file=stderr)
        if options.json:
            stdout.write(render_json(Outcome(options.profile, options.seed, {},
                                             ["no mechanisms are registered"])))
        return 1
    known = [m.name for m in mechanisms]
    only = _names(options.only)
    unknown = [n for n in only if n not in known]
    if unknown:
        print(f"mmspec verify: unknown mechanism(s) {', '.join(unknown)}; "
              f"registered: {', '.join(known)}", file=stderr)
        return 2
    layers = tuple(layer for layer in LAYERS if layer in _names(options.layer)) or LAYERS
    bad = [n for n in _names(options.layer) if n not in LAYERS]
    if bad:
        print(f"mmspec verify: unknown layer(s) {', '.join(bad)}; layers: {', '.join(LAYERS)}",
              file=stderr)
        return 2
    jobs = options.jobs
    if jobs is None:
        jobs = 2 if _xdist_available() else 0
    if jobs > 0 and not _xdist_available():
        print("mmspec verify: -j needs pytest-xdist; running in-process", file=stderr)
        jobs = 0
    selected = [m for m in mechanisms if not only or m.name in only]
    start = time.monotonic()
    collector, code, output = run_pytest(profile=options.profile, seed=options.seed, only=only,
                                         layers=layers, jobs=jobs, progress=stderr)
    elapsed = time.monotonic() - start
    errors = []
    # 0: all passed, 1: some failed, 5: nothing collected (cells say "no tests").
    if code not in (0, 1, 5):
        errors.append(f"pytest stopped with exit code {code}; its output is on stderr")
    if code not in (0, 1, 5) or collector.collection_errors or options.verbose:
        stderr.write(output)
    outcome = build_outcome(selected, collector.results.values(), profile=options.profile,
                            seed=options.seed, layers=layers,
                            collection_errors=collector.collection_errors, errors=errors,
                            seconds=elapsed)
    if options.json:
        stdout.write(render_json(outcome))
    else:
        stdout.write(render_text(outcome, times=not options.no_times))
    return 0 if outcome.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``mmspec verify`` on its own (``python -m mmspec.verify``)."""
    parser = argparse.ArgumentParser(prog="mmspec verify", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
