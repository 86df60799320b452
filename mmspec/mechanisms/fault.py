"""Demand paging and copy-on-write's registration: its modules, and how tests drive it.

``config`` draws a small machine (128 or 256 frames) with a shmem file and a regular file of 8
pages.  ``steps(state)`` draws system calls on a 16-page window at the oracle arena's address
(``0x200000000000``), biased toward what copy-on-write is about: writes, reads and touches of
the mapped pages by every live process, fork while pages are shared, exit, pins taken before
fork, forced writes into private file mappings, and a few calls that must fail.  The lockstep
machines drive the impl through :class:`PartialChecked`, which also compares the states that
errors raised part way carry (``error.partial``); ``programs()`` draws whole programs in the
kernel oracle's step format for the ``run(program)`` lockstep test.
"""

from __future__ import annotations

from hypothesis import strategies as st

from mmspec.registry import Mechanism
from spec import fault
from spec.fault import FaultConfig
from spec.mman import (
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_FREE,
    MADV_NORMAL,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_WIPEONFORK,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_LOCKED,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MLOCK_ONFAULT,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
)
from spec.zone import PAGE_SIZE

MECHANISM = Mechanism(
    name="fault",
    title="Demand paging, the page cache, fork and copy-on-write (mm/memory.c, mm/gup.c, kernel/fork.c)",
    spec="spec.fault",
    impl="impl.fault",
    proofs="proofs.fault",
    explain="mmspec.explain.fault:explain",
    topics=("fork",),
    doctest_modules=("spec.fault", "spec.process", "spec.pagecache", "impl.fault"),
    contracts=("spec.process",),
)

#: the window the steps work on: the oracle's arena address, 16 pages
BASE = 0x200000000000
WINDOW = 16
config = st.sampled_from([FaultConfig(), FaultConfig(256), FaultConfig(128)])

RW = PROT_READ | PROT_WRITE
PROTS = (RW, RW, PROT_READ, PROT_NONE, PROT_READ | PROT_EXEC, PROT_WRITE)
ANON_FLAGS = (
    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
    MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_POPULATE,
    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_LOCKED,
)
FILE_FLAGS = (MAP_PRIVATE | MAP_FIXED_NOREPLACE, MAP_SHARED | MAP_FIXED_NOREPLACE, MAP_PRIVATE | MAP_FIXED,
              MAP_SHARED | MAP_FIXED_NOREPLACE | MAP_POPULATE)
ADVICE = (MADV_DONTNEED, MADV_DONTNEED, MADV_FREE, MADV_DONTFORK, MADV_DOFORK, MADV_WIPEONFORK, MADV_POPULATE_READ,
          MADV_POPULATE_WRITE, MADV_NORMAL, MADV_DODUMP)


def _page(i):
    return BASE + i * PAGE_SIZE


def steps(state: fault.System):
    """Operations for the state at hand: mostly accesses by live processes, fork, exit, and
    the system calls, with a few bad calls."""
    pids = sorted(state.procs)
    pid = st.sampled_from(pids)
    off = st.integers(0, WINDOW - 1)
    n = st.integers(1, 6)
    addr = off.map(_page)
    value = st.integers(1, 5)
    choices = [
        (3, st.tuples(pid, off, n, st.sampled_from(PROTS), st.sampled_from(ANON_FLAGS))
         .map(lambda a: ("mmap", (a[0], _page(a[1]), a[2] * PAGE_SIZE, a[3], a[4])))),
        (2, st.tuples(pid, off, n, st.sampled_from((RW, PROT_READ)), st.sampled_from(FILE_FLAGS), st.integers(0, 1),
                      st.integers(0, 6))
         .map(lambda a: ("mmap", (a[0], _page(a[1]), a[2] * PAGE_SIZE, a[3], a[4], a[5], a[6])))),
        (1, st.tuples(pid, off, n, st.sampled_from((0, 0, 1, -1)))
         .map(lambda a: ("munmap", (a[0], _page(a[1]), a[2] * PAGE_SIZE + a[3])))),
        (2, st.tuples(pid, off, n, st.sampled_from(PROTS)).map(lambda a: ("mprotect", (a[0], _page(a[1]), a[2] * PAGE_SIZE, a[3])))),
        (1, st.tuples(pid, off, n, n, off, st.sampled_from((0, MREMAP_MAYMOVE, MREMAP_MAYMOVE | MREMAP_FIXED)))
         .map(lambda a: ("mremap", (a[0], _page(a[1]), a[2] * PAGE_SIZE, a[3] * PAGE_SIZE, a[5], _page(a[4]) if a[5] & MREMAP_FIXED else 0)))),
        (2, st.tuples(pid, off, n, st.sampled_from(ADVICE)).map(lambda a: ("madvise", (a[0], _page(a[1]), a[2] * PAGE_SIZE, a[3])))),
        (1, st.tuples(pid, off, n).map(lambda a: ("mlock", (a[0], _page(a[1]), a[2] * PAGE_SIZE)))),
        (1, st.tuples(pid, off, n).map(lambda a: ("mlock2", (a[0], _page(a[1]), a[2] * PAGE_SIZE, MLOCK_ONFAULT)))),
        (1, st.tuples(pid, off, n).map(lambda a: ("munlock", (a[0], _page(a[1]), a[2] * PAGE_SIZE)))),
        (6, st.tuples(pid, addr, st.booleans()).map(lambda a: ("touch", a))),
        (4, st.tuples(pid, addr).map(lambda a: ("read", a))),
        (6, st.tuples(pid, addr, value).map(lambda a: ("write", a))),
        (1, st.tuples(pid, addr, value).map(lambda a: ("write_forced", a))),
        (1, st.tuples(pid, addr, st.booleans()).map(lambda a: ("pin", a))),
    ]
    if len(pids) < 3:
        choices.append((2, pid.map(lambda p: ("fork", (p,)))))
    if len(pids) > 1:
        choices.append((1, pid.map(lambda p: ("exit", (p,)))))
    if state.pins:
        pins = st.sampled_from(state.pins)
        choices.append((1, pins.map(lambda q: ("unpin", (q.pid, q.addr)))))
        choices.append((2, st.tuples(pins, value).map(lambda a: ("write_pin", (a[0].pid, a[0].addr, a[1])))))
    bad = st.sampled_from([("touch", (99, BASE, False)), ("write", (pids[0], BASE, "x")), ("mmap", (pids[0], BASE, 0, RW, MAP_PRIVATE | MAP_ANONYMOUS)),
                           ("touch", (pids[0], 0, True)), ("unpin", (pids[0], BASE)), ("mmap", (pids[0], BASE, PAGE_SIZE, RW, MAP_SHARED, 7))])
    choices.append((1, bad))
    return st.one_of(*[s for weight, s in choices for _ in range(weight)])


def render(state: fault.System) -> str:
    return fault.render(state)


def impl_factory(cfg: FaultConfig):
    from impl.fault import FaultSystem

    return FaultSystem(cfg)


class PartialChecked:
    """The impl as the lockstep machines drive it, with the check the shared harness does not
    make: the generic lockstep step compares error *types* and the (unchanged) states, not the
    state Linux leaves after a failure part way.  So whenever the impl raises, the spec runs
    the same call from the impl's state (unchanged by the failure) and the two
    ``error.partial`` states must be equal, both absent or both the same :class:`System`, in
    which every invariant of the spec holds; a difference or a broken invariant is raised as
    an AssertionError, which the harness reports as a mismatch."""

    def __init__(self, impl):
        self.impl = impl

    def abstract(self):
        return self.impl.abstract()

    def __getattr__(self, op):
        method = getattr(self.impl, op)
        if not callable(method) or not hasattr(fault, op):
            return method

        def call(*args):
            from spec.errors import MMError

            try:
                return method(*args)
            except MMError as err:
                got = getattr(err, "partial", None)
                before = self.impl.abstract()
                try:
                    getattr(fault, op)(before, *args)
                    want = None
                except MMError as spec_err:
                    want = getattr(spec_err, "partial", None)
                for name, holds, doc in (_invariants() if want is not None else ()):
                    if not holds(want):
                        raise AssertionError(f"{op}{args!r}: the state left part way breaks {name}: {doc}\n"
                                             f"{fault.render(want)}") from err
                if (want is None) != (got is None) or (want is not None and want != got):
                    raise AssertionError(
                        f"{op}{args!r} raises {type(err).__name__} on both sides, but the state left part way "
                        f"differs\nspec error.partial:\n{'(none)' if want is None else fault.render(want)}"
                        f"impl error.partial:\n{'(none)' if got is None else fault.render(got)}") from err
                raise

        return call


def _invariants():
    from mmspec.machines import spec_invariants

    return spec_invariants(fault)


def lockstep_factory(cfg: FaultConfig) -> PartialChecked:
    """The impl for the lockstep machines: :func:`impl_factory` wrapped in :class:`PartialChecked`."""
    return PartialChecked(impl_factory(cfg))


_window = st.integers(0, WINDOW - 1)
_npages = st.integers(1, 4)
_prog_syscall = st.one_of(
    st.tuples(st.just("mmap"), _window, _npages, st.sampled_from(PROTS), st.sampled_from(ANON_FLAGS)),
    st.tuples(st.just("mmap_file"), _window, _npages, st.sampled_from((RW, PROT_READ)), st.sampled_from(FILE_FLAGS),
              st.integers(0, 1), st.integers(0, 6)),
    st.tuples(st.just("munmap"), _window, _npages),
    st.tuples(st.just("mprotect"), _window, _npages, st.sampled_from(PROTS)),
    st.tuples(st.just("madvise"), _window, _npages, st.sampled_from(ADVICE)),
    st.tuples(st.just("mlock"), _window, _npages),
    st.tuples(st.just("mlock2"), _window, _npages, st.just(MLOCK_ONFAULT)),
    st.tuples(st.just("munlock"), _window, _npages),
    st.tuples(st.just("mremap"), _window, _npages, _npages, st.sampled_from((0, MREMAP_MAYMOVE)), _window),
)
_prog_touch = st.tuples(st.just("touch"), _window, st.integers(1, 3), st.booleans())


@st.composite
def programs(draw, max_steps: int = 20):
    """Programs in the kernel oracle's step format (``spec.fault.run``) on the 16-page window:
    system calls and touches, forks, steps of children (``("in", proc, step)``) and exits."""
    # a first mapping over most of the window, so that touches mostly land on memory
    program, procs = [("mmap", draw(st.integers(0, 2)), draw(st.integers(8, WINDOW - 2)), RW,
                       draw(st.sampled_from(ANON_FLAGS[:4])))], 1
    for _ in range(draw(st.integers(1, max_steps - 1))):
        kind = draw(st.integers(0, 9))
        if kind == 0 and procs < 4:
            program.append(("fork",))
            procs += 1
            continue
        if kind == 1 and procs > 1:
            program.append(("exit", draw(st.integers(1, procs - 1))))
            continue
        step = draw(st.one_of(_prog_touch, _prog_touch, _prog_syscall))
        who = draw(st.integers(0, procs - 1))
        program.append(step if who == 0 else ("in", who, step))
    return tuple(program)


P = PAGE_SIZE
#: Scenario table run in lockstep before the random hunt, each on a fresh state; each ends
#: with the read that shows the defect.
SCENARIOS = (
    ("Dirty COW: a forced write to a private read-only file mapping, then a fresh read",
     [("mmap", (1, BASE, 4 * P, PROT_READ, MAP_PRIVATE | MAP_FIXED_NOREPLACE, 0, 0)),
      ("write_forced", (1, BASE, 7)), ("madvise", (1, BASE, P, MADV_DONTNEED)), ("read", (1, BASE))]),
    ("a pin taken before fork, the parent writes, the device writes through the pin, the child reads",
     [("mmap", (1, BASE, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)), ("write", (1, BASE, 1)),
      ("pin", (1, BASE, True)), ("fork", (1,)), ("write", (1, BASE, 2)), ("write_pin", (1, BASE, 3)),
      ("read", (2, BASE))]),
    ("fork, then the parent writes, then the child reads",
     [("mmap", (1, BASE, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)), ("write", (1, BASE, 1)),
      ("fork", (1,)), ("write", (1, BASE, 2)), ("read", (2, BASE))]),
)


def _outcome(fn, *args):
    from spec.errors import MMError

    try:
        return fn(*args), None
    except MMError as exc:
        return None, f"raises {type(exc).__name__}"


def run_scenarios() -> str | None:
    """Every scenario on the spec and the impl side by side, to its end: the first scenario in
    which they disagree, shown as the steps with both outcomes, each process's maps (the
    impl's), and the offending read -- the last step."""
    for title, ops in SCENARIOS:
        cfg = FaultConfig()
        state, impl, lines, differ = fault.init(cfg), impl_factory(cfg), [], False
        for op, args in ops:
            out, err = _outcome(getattr(fault, op), state, *args)
            spec_res = err or repr(out[1])
            if out is not None:
                state = out[0]
            got, ierr = _outcome(getattr(impl, op), *args)
            impl_res = ierr or repr(got)
            same = spec_res == impl_res
            differ = differ or not same
            lines.append(f"  {op}{args!r}: {'' if same else 'spec '}{spec_res}{'' if same else ', impl ' + impl_res}")
        if differ or impl.abstract() != state:
            a = impl.abstract()
            maps = "".join(f"maps of pid {pid} (impl):\n{fault.maps(a, pid)}" for pid in sorted(a.procs))
            op, args = ops[-1]
            return (f"scenario '{title}': the impl disagrees with the spec\n" + "\n".join(lines) + "\n" + maps
                    + f"offending read: {op}{args!r} returns {lines[-1].split(': ', 1)[1]}\n")
    return None


def catch() -> str | None:
    """The scenario table in lockstep, then a short random lockstep hunt, with whatever defect
    is enabled: the first witness, or None."""
    from hypothesis import settings

    from mmspec.machines import catch_witness, lockstep_machine

    witness = run_scenarios()
    if witness:
        return witness
    machine = lockstep_machine("FaultDefectHunt", fault, lockstep_factory, config, steps, render)
    return catch_witness(machine, settings(max_examples=20, stateful_step_count=20, derandomize=True, database=None,
                                           deadline=None))
