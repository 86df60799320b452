"""Generic hypothesis state machines: one invariant check, one lockstep check.

Every mechanism's tests build their state machines here, so that all
mechanisms are checked the same way (after Serval's single refinement
template). A spec module follows one convention:

* ``init(config) -> State`` builds the initial state;
* each operation is ``op(state, *args) -> (new_state, result)``, pure, or
  raises a subclass of ``spec.errors.MMError`` and changes nothing;
* every function named ``inv_*`` is an invariant: ``inv_x(state) -> bool``
  with a one-line docstring stating the property.

A test module supplies the strategies: ``config`` draws a configuration and
``steps(state)`` returns a strategy of ``(op_name, args)`` pairs suited to
that state (bias it toward collisions: the same pfn, buddy boundaries …),
and ``render(state)`` prints a state the way the kernel shows it.

:func:`invariant_machine` checks every ``inv_*`` after every step, failing
steps included; :func:`lockstep_machine` runs an implementation beside the
spec and compares results, errors and ``impl.abstract()`` after every step.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import hypothesis
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from hypothesis.reporting import with_reporter
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from hypothesis.strategies import SearchStrategy

from mmspec.tally import gauge, tally

__all__ = [
    "invariant_machine",
    "lockstep_machine",
    "run_machine",
    "catch_witness",
    "spec_invariants",
    "describe_failure",
    "lockstep_scenario_step",
]

State = Any
Step = tuple[str, tuple]
StepsFn = Callable[[State], SearchStrategy[Step]]
RenderFn = Callable[[State], str]


def _module(spec_module: ModuleType | str) -> ModuleType:
    if isinstance(spec_module, str):
        return importlib.import_module(spec_module)
    return spec_module


def _error_base(error_base: type[BaseException] | None) -> type[BaseException]:
    if error_base is not None:
        return error_base
    from spec.errors import MMError  # imported late: the harness works without it

    return MMError


def spec_invariants(
    spec_module: ModuleType | str,
) -> list[tuple[str, Callable[[State], bool], str]]:
    """The ``inv_*`` predicates of a spec module, in source order.

    Returns ``(name, predicate, summary)`` triples, where the summary is the
    first paragraph of the docstring on one line.
    A predicate without a docstring is an error: the docstring is the
    property in words, and the failure message quotes it.
    """
    module = _module(spec_module)
    found = []
    for name, value in vars(module).items():
        if name.startswith("inv_") and callable(value):
            summary = " ".join((value.__doc__ or "").strip().split("\n\n")[0].split())
            if not summary:
                raise ValueError(f"{module.__name__}.{name} has no docstring stating its property")
            found.append((name, value, summary))
    return found


def _call(op: str, args: tuple) -> str:
    return f"{op}({', '.join(repr(a) for a in args)})"


def _safe_render(render: RenderFn, state: State) -> str:
    try:
        return render(state)
    except Exception as exc:  # a broken renderer must not hide the real failure
        return f"{state!r}\n(render failed: {exc!r})"


def _outcome(result: Any = None, error: BaseException | None = None) -> str:
    if error is not None:
        return f"raises {type(error).__name__}({', '.join(repr(a) for a in error.args)})"
    return f"returns {result!r}"


def _apply_spec(
    spec: ModuleType, state: State, op: str, args: tuple, errors: type[BaseException]
) -> tuple[State, Any, BaseException | None]:
    """Apply one spec operation: ``(new_state, result, None)`` or ``(state, None, error)``."""
    try:
        out = getattr(spec, op)(state, *args)
    except errors as exc:
        return state, None, exc
    assert isinstance(out, tuple) and len(out) == 2, (
        f"{spec.__name__}.{_call(op, args)} must return (new_state, result), got {out!r}"
    )
    new_state, result = out
    assert type(new_state) is type(state), (
        f"{spec.__name__}.{_call(op, args)} returned a {type(new_state).__name__} "
        f"as the new state, not a {type(state).__name__}"
    )
    return new_state, result, None


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (ValueError, TypeError):  # e.g. numpy arrays: compare element-wise
        import numpy as np

        return bool(np.array_equal(a, b))


def _add_invariants(
    namespace: dict[str, Any], invariants: list[tuple[str, Callable, str]], render: RenderFn
) -> None:
    for inv_name, predicate, doc in invariants:

        def check(self: Any, predicate: Callable = predicate, inv_name: str = inv_name,
                  doc: str = doc) -> None:
            try:
                holds = predicate(self.state)
            except Exception as exc:
                raise AssertionError(
                    f"{inv_name} raised {exc!r}\n{_safe_render(render, self.state)}"
                ) from exc
            assert holds, f"{inv_name}: {doc}\n{_safe_render(render, self.state)}"

        check.__name__ = check.__qualname__ = inv_name
        check.__doc__ = doc
        namespace[inv_name] = invariant()(check)


def invariant_machine(
    name: str,
    spec_module: ModuleType | str,
    config: SearchStrategy,
    steps: StepsFn,
    render: RenderFn,
    *,
    error_base: type[BaseException] | None = None,
) -> type[RuleBasedStateMachine]:
    """A state machine that checks every ``inv_*`` of the spec after every step.

    It initializes ``state = spec.init(config)``, then repeatedly draws
    ``(op, args)`` from ``steps(state)`` and applies ``spec.op(state, *args)``.
    A step that raises ``error_base`` (default ``spec.errors.MMError``) leaves
    the state as it was; any other exception fails the test. After every
    step, one hypothesis invariant per ``inv_*`` (named after it) asserts it,
    with the message ``"inv_x: <docstring>\\n<render(state)>"``.

    Counts ``examples`` (initializations) and ``steps``; sets the gauge
    ``invariants`` to the number of predicates.
    """
    spec = _module(spec_module)
    invariants = spec_invariants(spec)
    errors = _error_base(error_base)

    def init(self: Any, config: Any) -> None:
        tally("examples")
        gauge("invariants", len(invariants))
        self.state = spec.init(config)

    def step(self: Any, data: st.DataObject) -> None:
        op, args = data.draw(steps(self.state), label="step")
        tally("steps")
        self.state, result, error = _apply_spec(spec, self.state, op, tuple(args), errors)
        hypothesis.note(f"  {_call(op, tuple(args))} {_outcome(result, error)}")

    namespace: dict[str, Any] = {
        "__doc__": f"Invariants of {spec.__name__} after every step.",
        "__module__": __name__,
        "init": initialize(config=config)(init),
        "step": rule(data=st.data())(step),
    }
    _add_invariants(namespace, invariants, render)
    return type(name, (RuleBasedStateMachine,), namespace)


def lockstep_machine(
    name: str,
    spec_module: ModuleType | str,
    impl_factory: Callable[[Any], Any],
    config: SearchStrategy,
    steps: StepsFn,
    render: RenderFn,
    *,
    error_base: type[BaseException] | None = None,
    check_invariants: bool = False,
) -> type[RuleBasedStateMachine]:
    """A state machine that runs an implementation in lockstep with the spec.

    ``impl_factory(config)`` builds the implementation object, which has the
    spec's operations as methods and ``abstract() -> State``. After
    initialization ``impl.abstract() == spec.init(config)``. At every step
    the spec operation and ``getattr(impl, op)(*args)`` must both raise an
    error of the same type or both return equal results, and afterwards
    ``impl.abstract()`` must equal the spec's new state (the old one after a
    failed step). A mismatch shows the operation, both outcomes and both
    states rendered. With ``check_invariants`` the spec's ``inv_*`` are also
    checked (the invariant machine already does that on the same steps).

    Counts ``examples`` and ``steps``.
    """
    spec = _module(spec_module)
    errors = _error_base(error_base)
    invariants = spec_invariants(spec) if check_invariants else []

    def mismatch(self: Any, what: str, spec_side: str, impl_side: str, spec_state: State,
                 impl_state: State) -> str:
        return (
            f"lockstep mismatch {what}\n"
            f"  spec: {spec_side}\n"
            f"  impl: {impl_side}\n"
            f"spec state:\n{_safe_render(render, spec_state)}\n"
            f"impl state (abstract):\n{_safe_render(render, impl_state)}"
        )

    def init(self: Any, config: Any) -> None:
        tally("examples")
        if invariants:
            gauge("invariants", len(invariants))
        self.state = spec.init(config)
        self.impl = impl_factory(config)
        abstract = self.impl.abstract()
        assert _equal(abstract, self.state), mismatch(
            self, "after init", "init", "init", self.state, abstract
        )

    def step(self: Any, data: st.DataObject) -> None:
        op, args = data.draw(steps(self.state), label="step")
        args = tuple(args)
        tally("steps")
        call = _call(op, args)
        new_state, result, error = _apply_spec(spec, self.state, op, args, errors)
        impl_result: Any = None
        impl_error: BaseException | None = None
        try:
            impl_result = getattr(self.impl, op)(*args)
        except Exception as exc:
            impl_error = exc
        abstract = self.impl.abstract()
        spec_side, impl_side = _outcome(result, error), _outcome(impl_result, impl_error)
        hypothesis.note(f"  {call} {spec_side}")
        if error is not None:
            same = impl_error is not None and type(impl_error) is type(error)
        else:
            same = impl_error is None and _equal(impl_result, result)
        if not same:
            raise AssertionError(
                mismatch(self, f"at {call}", spec_side, impl_side, new_state, abstract)
            ) from impl_error
        assert _equal(abstract, new_state), mismatch(
            self, f"in state after {call}", spec_side, impl_side, new_state, abstract
        )
        self.state = new_state

    namespace: dict[str, Any] = {
        "__doc__": f"{spec.__name__} and its implementation in lockstep.",
        "__module__": __name__,
        "init": initialize(config=config)(init),
        "step": rule(data=st.data())(step),
    }
    _add_invariants(namespace, invariants, render)
    return type(name, (RuleBasedStateMachine,), namespace)


def run_machine(
    machine_cls: type[RuleBasedStateMachine], settings: hypothesis.settings | None = None
) -> None:
    """Run a state machine as a test under ``settings`` (default: the profile)."""
    run_state_machine_as_test(machine_cls, settings=settings)


def describe_failure(exc: BaseException) -> str:
    """A failure as a reader wants it: the shrunk steps, then the message.

    Hypothesis attaches the falsifying example to the exception as notes;
    this keeps those (without hypothesis's "Explanation" of covered lines,
    which names source files) and ends with ``Type: message``.
    """
    if isinstance(exc, BaseExceptionGroup):
        parts = [describe_failure(e) for e in exc.exceptions]
        head = _notes(exc)
        return "\n\n".join(p for p in [head, *parts] if p)
    notes = _notes(exc)
    message = f"{type(exc).__name__}: {exc}".rstrip()
    return f"{notes}\n{message}" if notes else message


def _notes(exc: BaseException) -> str:
    kept: list[str] = []
    skipping = False
    for note in getattr(exc, "__notes__", ()) or ():
        for line in str(note).splitlines():
            if line.startswith("Explanation:"):
                skipping = True
                continue
            if skipping and (line.startswith(" ") or not line.strip()):
                continue
            skipping = False
            kept.append(line)
    return "\n".join(kept)


def catch_witness(
    machine_cls: type[RuleBasedStateMachine], settings: hypothesis.settings | None = None
) -> str | None:
    """Run a state machine; return the shrunk witness if it fails, else None.

    Hypothesis's own errors (a failed health check, a flaky test, invalid
    arguments) are not witnesses: they propagate.  The witness is shrunk as
    usual, but hypothesis's "explain" phase (which reruns the failure many
    times to say which lines it covered) is skipped: the witness needs none.
    """
    if settings is None:
        current = hypothesis.settings()
        settings = hypothesis.settings(current, phases=[p for p in current.phases if p != hypothesis.Phase.explain])
    printed: list[str] = []
    try:
        with with_reporter(printed.append):
            run_state_machine_as_test(machine_cls, settings=settings)
    except HypothesisException:
        raise
    except Exception as exc:
        text = describe_failure(exc)
        extra = "\n".join(str(p) for p in printed if str(p).strip())
        return f"{extra}\n{text}" if extra else text
    return None


def lockstep_scenario_step(spec_module, state, impl, op: str, args: tuple, render: RenderFn,
                           done: list[str], title: str):
    """One step of a hand-written scenario on the spec and the impl side by side.

    Appends the step to ``done`` and returns ``(new spec state, spec result, mismatch)``, where
    ``mismatch`` is the whole scenario so far with both outcomes and both states if the two
    disagree (as the lockstep machine judges it), else None.  Mechanisms whose random lockstep
    hunt rarely reaches a defect use it for a fixed table of scenarios in ``catch()``.
    """
    from spec.errors import MMError

    new_state, result, error = _apply_spec(spec_module, state, op, args, MMError)
    try:
        got, got_error = getattr(impl, op)(*args), None
    except MMError as exc:
        got, got_error = None, exc
    done.append(f"  {op}{args!r} {_outcome(result, error)}")
    same = type(error) is type(got_error) if error or got_error else _equal(got, result)
    if same and _equal(impl.abstract(), new_state):
        return new_state, result, None
    return new_state, result, (
        f"scenario '{title}': spec and impl disagree after\n" + "\n".join(done)
        + f"\n  impl: {_outcome(got, got_error)}\nspec state:\n{render(new_state)}"
        f"impl state:\n{render(impl.abstract())}"
    )
