"""Tests of the harness itself, on a toy mechanism: a pool of page frames.

The toy spec follows the spec convention (``init``, pure operations that
return ``(new_state, result)`` or raise a typed error, ``inv_*``
predicates); variants of it and of a toy implementation carry deliberate
bugs, and the generic machines must catch each with a shrunk witness. The
last tests run ``mmspec verify`` end to end on a scratch copy of the harness
in which the toy is the only registered mechanism.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from mmspec import machines, tally, verify
from mmspec.registry import LAYERS, Mechanism

ROOT = Path(__file__).resolve().parent.parent

TOY_SPEC = '''
"""A toy pool of page frames, for testing the harness.

>>> state, pfn = alloc(init(4))
>>> pfn, sorted(state.used)
(0, [0])
"""

from dataclasses import dataclass

from hypothesis import strategies as st


class ToyError(Exception):
    """Base of the toy's errors."""


class ENOMEM(ToyError):
    """No free frame."""


class DoubleFree(ToyError):
    """The frame is not allocated."""


@dataclass(frozen=True)
class Pool:
    size: int
    used: frozenset


def init(size):
    """An empty pool of ``size`` frames."""
    return Pool(size, frozenset())


def alloc(state):
    """Allocate the lowest free frame."""
    free = [pfn for pfn in range(state.size) if pfn not in state.used]
    if not free:
        raise ENOMEM(state.size)
    return Pool(state.size, state.used | {free[0]}), free[0]


def free(state, pfn):
    """Free an allocated frame."""
    if pfn not in state.used:
        raise DoubleFree(pfn)
    return Pool(state.size, state.used - {pfn}), None


def inv_in_range(state):
    """Every allocated frame lies inside the pool."""
    return all(0 <= pfn < state.size for pfn in state.used)


def inv_bounded(state):
    """No more frames are allocated than the pool has."""
    return len(state.used) <= state.size


def render(state):
    """The pool as a row of frames: # used, . free."""
    return "".join("#" if pfn in state.used else "." for pfn in range(state.size))


class PoolImpl:
    """The toy implementation: a mutable set."""

    def __init__(self, size):
        self.size, self.used = size, set()

    def alloc(self):
        for pfn in range(self.size):
            if pfn not in self.used:
                self.used.add(pfn)
                return pfn
        raise ENOMEM(self.size)

    def free(self, pfn):
        if pfn not in self.used:
            raise DoubleFree(pfn)
        self.used.remove(pfn)

    def abstract(self):
        return Pool(self.size, frozenset(self.used))


def steps(state):
    """Allocate, or free a frame near the pool (often a free one: DoubleFree)."""
    return st.one_of(
        st.just(("alloc", ())),
        st.integers(0, state.size).map(lambda pfn: ("free", (pfn,))),
    )
'''


def load_toy(name: str = "toy_pool_spec") -> types.ModuleType:
    """The toy spec as a module (registered so dataclasses can find it)."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(TOY_SPEC, f"<{name}>", "exec"), module.__dict__)
    return module


toy = load_toy()
SIZES = st.integers(1, 6)
FAST = settings(max_examples=60, stateful_step_count=20, database=None, deadline=None,
                derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def invariants_of(spec: types.ModuleType, name: str = "ToyInvariants"):
    return machines.invariant_machine(name, spec, SIZES, spec.steps, spec.render,
                                      error_base=spec.ToyError)


def lockstep_of(impl_cls, name: str = "ToyLockstep"):
    return machines.lockstep_machine(name, toy, impl_cls, SIZES, toy.steps, toy.render,
                                     error_base=toy.ToyError)


# ---------------------------------------------------------------- the machines


def test_spec_invariants_in_source_order() -> None:
    found = machines.spec_invariants(toy)
    assert [(name, doc) for name, _, doc in found] == [
        ("inv_in_range", "Every allocated frame lies inside the pool."),
        ("inv_bounded", "No more frames are allocated than the pool has."),
    ]


def test_invariant_without_docstring_is_rejected() -> None:
    spec = load_toy("toy_nodoc")
    spec.inv_silent = lambda state: True
    with pytest.raises(ValueError, match="inv_silent has no docstring"):
        machines.spec_invariants(spec)


def test_invariant_machine_passes_on_the_toy_and_counts() -> None:
    machine = invariants_of(toy)
    assert {"inv_in_range", "inv_bounded"} <= set(dir(machine))
    tally.reset()
    machines.run_machine(machine, FAST)
    counted = tally.snapshot()
    assert counted["counters"]["examples"] > 0
    assert counted["counters"]["steps"] > counted["counters"]["examples"]
    assert counted["gauges"] == {"invariants": 2}


def test_invariant_machine_catches_a_broken_invariant_with_a_shrunk_witness() -> None:
    broken = load_toy("toy_off_by_one")

    def alloc(state):  # off by one: hands out the frame past the pool for the last one
        state, pfn = toy.alloc(state)
        if pfn == state.size - 1:
            pfn = state.size
        used = (state.used - {state.size - 1}) | {pfn}
        return broken.Pool(state.size, used), pfn

    broken.alloc = alloc
    witness = machines.catch_witness(invariants_of(broken, "OffByOne"), FAST)
    assert witness is not None
    assert "inv_in_range: Every allocated frame lies inside the pool." in witness
    assert "state.init(config=1)" in witness  # shrunk to the smallest pool
    assert witness.count("alloc()") == 1, witness  # and the shortest history
    assert "alloc() returns 1" in witness
    assert "Explanation" not in witness


def test_a_failed_step_leaves_the_state_unchanged() -> None:
    state, _ = toy.alloc(toy.init(2))
    new, result, error = machines._apply_spec(toy, state, "free", (1,), toy.ToyError)
    assert new is state and result is None and isinstance(error, toy.DoubleFree)
    new, result, error = machines._apply_spec(toy, state, "free", (0,), toy.ToyError)
    assert error is None and new == toy.init(2)


def test_a_spec_that_returns_the_wrong_shape_is_reported() -> None:
    spec = load_toy("toy_bad_shape")
    spec.alloc = lambda state: state  # forgot the result
    with pytest.raises(AssertionError, match="must return"):
        machines._apply_spec(spec, spec.init(2), "alloc", (), spec.ToyError)


def test_other_exceptions_are_not_treated_as_spec_errors() -> None:
    spec = load_toy("toy_crash")

    def alloc(state):
        raise ZeroDivisionError("bug in the spec")

    spec.alloc = alloc
    witness = machines.catch_witness(invariants_of(spec, "Crash"), FAST)
    assert witness is not None and "ZeroDivisionError: bug in the spec" in witness


def test_lockstep_passes_on_a_correct_impl() -> None:
    tally.reset()
    assert machines.catch_witness(lockstep_of(toy.PoolImpl), FAST) is None
    assert tally.snapshot()["counters"]["steps"] > 0


class WrongResult(toy.PoolImpl):
    def alloc(self):  # hands out the highest free frame
        for pfn in reversed(range(self.size)):
            if pfn not in self.used:
                self.used.add(pfn)
                return pfn
        raise toy.ENOMEM(self.size)


class WrongError(toy.PoolImpl):
    def free(self, pfn):
        if pfn not in self.used:
            raise toy.ENOMEM(pfn)
        self.used.remove(pfn)


class WrongState(toy.PoolImpl):
    def free(self, pfn):  # returns the right thing but forgets frame 0
        if pfn not in self.used:
            raise toy.DoubleFree(pfn)
        if pfn != 0:
            self.used.remove(pfn)


class ChangesOnError(toy.PoolImpl):
    def free(self, pfn):  # frees everything before noticing the double free
        if pfn not in self.used:
            self.used.clear()
            raise toy.DoubleFree(pfn)
        self.used.remove(pfn)


class BadInit(toy.PoolImpl):
    def __init__(self, size):
        super().__init__(size)
        self.used = {0}


@pytest.mark.parametrize(("impl", "expected"), [
    (WrongResult, ["at alloc()", "spec: returns 0", "impl: returns 1"]),
    (WrongError, ["at free(", "spec: raises DoubleFree(", "impl: raises ENOMEM("]),
    (WrongState, ["in state after free(0)", "spec state:\n.", "impl state (abstract):\n#"]),
    (ChangesOnError, ["in state after free(", "raises DoubleFree"]),
    (BadInit, ["after init"]),
], ids=["result", "error-type", "state", "state-after-error", "init"])
def test_lockstep_catches_each_kind_of_divergence(impl, expected: list[str]) -> None:
    witness = machines.catch_witness(lockstep_of(impl, f"Lockstep{impl.__name__}"), FAST)
    assert witness is not None
    assert "lockstep mismatch" in witness
    for text in expected:
        assert text in witness, witness


def test_describe_failure_keeps_steps_and_message_only() -> None:
    exc = AssertionError("inv_x: property\n..#")
    exc.add_note("Falsifying example:\nstate = M()\nstate.step()")
    exc.add_note("Explanation:\n    These lines were always and only run by failing test cases:\n"
                 "        somewhere.py:12")
    text = machines.describe_failure(exc)
    assert text == ("Falsifying example:\nstate = M()\nstate.step()\n"
                    "AssertionError: inv_x: property\n..#")


# ---------------------------------------------------------------- tally


def test_tally_counts_and_gauges() -> None:
    tally.reset()
    tally.tally("steps", 3)
    tally.tally("steps")
    tally.gauge("invariants", 5)
    tally.gauge("invariants", 2)
    tally.note("witness", "w")
    assert tally.snapshot() == {"counters": {"steps": 4}, "gauges": {"invariants": 5},
                                "notes": {"witness": "w"}}
    tally.reset()
    assert tally.snapshot() == {"counters": {}, "gauges": {}, "notes": {}}


def test_combine_adds_counters_and_maxes_gauges() -> None:
    records = [{"counters": {"steps": 10, "examples": 2}, "gauges": {"invariants": 3}},
               {"counters": {"steps": 5}, "gauges": {"invariants": 4}}]
    combined = tally.combine(records)
    assert combined == {"steps": 15, "examples": 2, "invariants": 4}
    assert tally.describe(combined) == "2 examples, 15 steps, 4 invariants"
    assert tally.describe({"steps": 1200, "examples": 40}) == "40 examples, 1,200 steps"


# ---------------------------------------------------------------- verify's aggregation


TOY = Mechanism(name="toy", title="Toy pool", spec="toy_pool_spec",
                not_applicable={"oracle": "a toy has no kernel"})


def result(nodeid: str, layer: str, outcome: str = "passed", mechanism: str = "toy",
           **counters: int) -> verify.TestResult:
    record = {"mechanism": mechanism, "layer": layer, "counters": counters, "gauges": {},
              "notes": {}}
    return verify.TestResult(nodeid, mechanism, layer, outcome, seconds=0.5, record=record)


def sample_results() -> list[verify.TestResult]:
    failing = result("tests/test_toy.py::test_lockstep", "lockstep", "failed", steps=7)
    failing.failure = "state = ToyLockstep()\nAssertionError: lockstep mismatch"
    skipped = result("tests/test_contracts.py::test_contracts[toy]", "contracts", "skipped")
    skipped.skip_reason = "crosshair is not installed"
    caught = result("tests/test_bugs.py::test_defect_is_caught[leak]", "bugs",
                    caught=1, modelled=1)
    caught.record["notes"] = {"witness": "state.init(config=1)\nAssertionError: leak"}
    return [
        result("tests/test_toy.py::test_invariants", "invariants", steps=1200, examples=40),
        result("tests/test_toy.py::test_invariants_big", "invariants", steps=300, examples=10),
        failing,
        result("tests/test_toy.py::test_lockstep_small", "lockstep", steps=50),
        result("tests/test_theorems.py::test_theorem[toy-a]", "theorems", theorems=1),
        result("tests/test_theorems.py::test_theorem[toy-b]", "theorems"),
        skipped,
        caught,
        result("tests/test_doctests.py::test_doctests[toy]", "doctests", examples=3),
        result("tests/test_ghost.py::test_x", "invariants", mechanism="ghost"),
        result("tests/test_toy.py::test_plain", None),  # no layer: ignored
    ]


def test_cells_follow_the_counting_rules() -> None:
    outcome = verify.build_outcome([TOY], sample_results(), profile="quick", seed=7)
    row = outcome.cells["toy"]
    assert list(row) == list(LAYERS)
    assert (row["invariants"].status, row["invariants"].count) == ("passed", 1500)
    assert row["invariants"].detail == "50 examples, 1,500 steps"
    assert (row["lockstep"].status, row["lockstep"].count) == ("failed", 50)
    assert row["lockstep"].detail.startswith(
        "1 of 2 tests failed; first: test_toy.py::test_lockstep")
    assert row["theorems"].count == 2  # a passed test without the counter counts 1
    assert (row["contracts"].status, row["contracts"].detail) == (
        "skipped", "1 skipped: crosshair is not installed")
    assert (row["oracle"].status, row["oracle"].detail) == ("not-applicable", "a toy has no kernel")
    assert (row["bugs"].caught, row["bugs"].modelled) == (1, 1)
    assert row["doctests"].count == 3
    assert any("'ghost', which is not a registered mechanism" in e for e in outcome.errors)
    assert not outcome.passed


def test_missing_layer_fails_and_collection_errors_are_attributed() -> None:
    outcome = verify.build_outcome(
        [TOY], [], profile="default", seed=0,
        collection_errors={"tests/test_theorems.py": "SyntaxError: boom"})
    row = outcome.cells["toy"]
    assert (row["invariants"].status, row["invariants"].detail) == (
        "failed", "no tests for this layer")
    assert row["theorems"].detail == "collection error in tests/test_theorems.py"
    assert row["oracle"].status == "not-applicable"
    assert any("SyntaxError: boom" in e for e in outcome.errors)


def test_unselected_layers_are_skipped() -> None:
    outcome = verify.build_outcome([TOY], sample_results(), profile="quick", seed=0,
                                   layers=("invariants",))
    assert outcome.cells["toy"]["theorems"].status == "skipped"
    assert outcome.cells["toy"]["theorems"].detail == "not selected (--layer)"


def test_json_schema() -> None:
    outcome = verify.build_outcome([TOY], sample_results(), profile="quick", seed=7)
    data = json.loads(verify.render_json(outcome))
    assert set(data) == {"passed", "seed", "profile", "mechanisms", "errors"}
    assert (data["passed"], data["seed"], data["profile"]) == (False, 7, "quick")
    assert list(data["mechanisms"]["toy"]) == list(LAYERS)
    for layer, cell in data["mechanisms"]["toy"].items():
        keys = {"status", "count", "seconds", "detail"} | (
            {"caught", "modelled"} if layer == "bugs" else set())
        assert set(cell) == keys
        assert cell["status"] in ("passed", "failed", "not-applicable", "skipped")
        assert isinstance(cell["count"], int) and isinstance(cell["seconds"], float)


def test_text_report_is_deterministic_without_times() -> None:
    outcome = verify.build_outcome([TOY], sample_results(), profile="quick", seed=7)
    text = verify.render_text(outcome, times=False)
    again = verify.build_outcome([TOY], list(reversed(sample_results())), profile="quick", seed=7,
                                 seconds=99.0)
    assert verify.render_text(again, times=False) == text
    lines = text.splitlines()
    assert lines[0] == "mmspec verify: profile quick, seed 7"
    assert lines[2].split() == ["mechanism", *LAYERS]
    assert lines[4].split() == ["toy", "✓", "1,500", "✗", "50", "✓", "2", "skip", "–",
                                "✓", "1/1", "✓", "3"]
    assert "seconds" not in text
    assert "toy/lockstep: 1 of 2 tests failed" in text
    assert "    AssertionError: lockstep mismatch" in text
    assert "toy/oracle: not-applicable: a toy has no kernel" in text
    assert "AssertionError: leak" in text  # the bug's witness
    assert "seconds (vary" in verify.render_text(outcome, times=True)


def _options(**overrides) -> argparse.Namespace:
    values = dict(profile="quick", only="", layer="", seed=0, json=False, jobs=0,
                  no_times=True, verbose=False)
    values.update(overrides)
    return argparse.Namespace(**values)


def test_verify_without_mechanisms_exits_1() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert verify.run(_options(), mechanisms=(), stdout=out, stderr=err) == 1
    assert "no mechanisms are registered" in err.getvalue()


def test_verify_rejects_unknown_names() -> None:
    err = io.StringIO()
    assert verify.run(_options(only="nope"), mechanisms=[TOY], stderr=err) == 2
    assert "unknown mechanism(s) nope" in err.getvalue()
    assert verify.run(_options(layer="nope"), mechanisms=[TOY], stderr=err) == 2


# ---------------------------------------------------------------- end to end


E2E_TESTS = '''
import pytest
from hypothesis import strategies as st

import toyspec
from mmspec.machines import invariant_machine, lockstep_machine, run_machine

SIZES = st.integers(1, 5)
PRELUDE
Invariants = invariant_machine("ToyInvariants", toyspec, SIZES, toyspec.steps, toyspec.render,
                               error_base=toyspec.ToyError)
Lockstep = lockstep_machine("ToyLockstep", toyspec, IMPL, SIZES, toyspec.steps,
                            toyspec.render, error_base=toyspec.ToyError)


@pytest.mark.layer("invariants")
def test_invariants():
    run_machine(Invariants)


@pytest.mark.layer("lockstep")
def test_lockstep():
    run_machine(Lockstep)


def test_ordinary():
    assert True
'''

E2E_MECHANISM = '''
from mmspec.registry import Mechanism

MECHANISM = Mechanism(
    name="NAME", title="Toy pool", spec="toyspec",
    not_applicable={"theorems": "no proofs", "contracts": "no contracts",
                    "oracle": "a toy has no kernel", "bugs": "no defects"},
)
'''


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A scratch checkout: the harness, the toy as mechanism ``toy``, and ``broken``."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT / "mmspec", root / "mmspec",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in (root / "mmspec" / "mechanisms").glob("*.py"):
        if path.name != "__init__.py":
            path.unlink()
    (root / "tests").mkdir()
    for name in ("conftest.py", "test_doctests.py"):
        shutil.copy(ROOT / "tests" / name, root / "tests" / name)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "toyspec.py").write_text(TOY_SPEC)
    broken_impl = textwrap.dedent('''
        class Broken(toyspec.PoolImpl):
            def free(self, pfn):  # the wrong error for a double free
                if pfn not in self.used:
                    raise toyspec.ENOMEM(pfn)
                self.used.remove(pfn)
        ''')
    for name, impl, prelude in (("toy", "toyspec.PoolImpl", ""),
                                ("broken", "Broken", broken_impl)):
        (root / "mmspec" / "mechanisms" / f"{name}.py").write_text(
            E2E_MECHANISM.replace("NAME", name))
        source = E2E_TESTS.replace("IMPL", impl).replace("PRELUDE\n", prelude)
        (root / "tests" / f"test_{name}.py").write_text(source)
    return root


def run_verify(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS_"))}
    env["PYTHONPATH"] = str(root)
    return subprocess.run([sys.executable, "-m", "mmspec", "verify", "--profile", "quick",
                           "-j", "0", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def test_verify_end_to_end(scratch: Path) -> None:
    proc = run_verify(scratch, "--json")
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["passed"] is False and data["profile"] == "quick" and data["errors"] == []
    assert list(data["mechanisms"]) == ["broken", "toy"]
    toy_row = data["mechanisms"]["toy"]
    assert {layer: cell["status"] for layer, cell in toy_row.items()} == {
        "invariants": "passed", "lockstep": "passed", "theorems": "not-applicable",
        "contracts": "not-applicable", "oracle": "not-applicable", "bugs": "not-applicable",
        "doctests": "passed"}
    assert toy_row["invariants"]["count"] > 0
    assert "invariants" in toy_row["invariants"]["detail"]
    broken = data["mechanisms"]["broken"]
    assert broken["invariants"]["status"] == "passed"
    assert broken["lockstep"]["status"] == "failed"
    assert "impl: raises ENOMEM(" in broken["lockstep"]["detail"]
    assert "state.init(config=1)" in broken["lockstep"]["detail"]
    assert "[" in proc.stderr and "toy/invariants" in proc.stderr  # progress lines


def test_verify_end_to_end_is_reproducible(scratch: Path) -> None:
    first = run_verify(scratch, "--only", "broken", "--layer", "lockstep", "--no-times",
                       "--seed", "3")
    second = run_verify(scratch, "--only", "broken", "--layer", "lockstep", "--no-times",
                        "--seed", "3")
    assert first.returncode == second.returncode == 1
    assert first.stdout == second.stdout
    assert "broken/lockstep: 1 of 1 tests failed" in first.stdout
    ok = run_verify(scratch, "--only", "toy", "--layer", "invariants,lockstep")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASSED" in ok.stdout


# ---------------------------------------------------------------- explain and the command line


def test_explain_options_and_topics() -> None:
    from mmspec import explain

    assert explain.parse_options(["--order", "3", "--gfp=GFP_KERNEL", "--verbose"]) == {
        "order": 3, "gfp": "GFP_KERNEL", "verbose": True}
    assert explain.parse_options(["0x7ffd12345678", "--mode", "x86-64-4level"]) == {
        "args": (0x7FFD12345678,), "mode": "x86-64-4level"}
    with pytest.raises(ValueError):
        explain.parse_options(["--order", "3", "stray", "extra"])
    walk = Mechanism(name="toy", title="Toy", spec="toy_pool_spec",
                     explain="mmspec.explain:parse_options", topics=("pool",))
    silent = Mechanism(name="quiet", title="Quiet", spec="toy_pool_spec")
    assert list(explain.topics([walk, silent])) == ["pool", "toy"]


def test_cli_unknown_topic_lists_known_ones(capsys) -> None:
    from mmspec import cli

    assert cli.main(["explain", "no-such-topic"]) == 2
    assert "unknown topic 'no-such-topic'; known topics:" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_mechanism_registration_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown layers"):
        Mechanism(name="x", title="X", spec="x", not_applicable={"proofs": "no"})
    m = Mechanism(name="x", title="X", spec="spec.x")
    assert m.doctest_targets == ("spec.x",) and m.contract_targets == ("spec.x",)
    assert hash(m) == hash(Mechanism(name="x", title="X", spec="spec.x"))
