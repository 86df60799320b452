"""The spec side of the kernel oracle: run a program on the spec, compare with the live kernel.

:func:`mmspec.livekernel.run` executes a program (the step format of :mod:`spec.vma`) on the
running kernel.  :func:`spec_run` executes the same program on the spec -- :mod:`spec.vma` for
the VMA layout and, where it models them, :mod:`spec.fault` for pages, faults and fork -- in
an address space seeded with the runner's layout: the window between two guard VMAs that
never merge (``PROT_NONE``, ``VM_DONTDUMP``), the memfd files, the host's limits and
policies.  It yields observations in the kernel's format, so :func:`first_divergence` can
compare the two step by step: the return value or errno, the VMAs of every process, and,
when the spec models pages, the fault counts and pagemap classes.

The module also keeps the oracle's bookkeeping: :func:`record` notes, per scenario family
(``vma-merge``, ``placement``, ``cow-fork`` ...), whether the spec agreed with the kernel,
diverged, or could not be compared; ``mmspec oracle`` prints the table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import re
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from mmspec import tally
from mmspec.livekernel import GONE, PAGE, PfnClasses, Run

#: the families the report lists, in order
FAMILIES = ("vma-merge", "vma-errno", "placement", "brk", "mlock", "demand-paging", "pagemap",
            "cow-fork", "random-vma", "random-fault", "determinism")
#: the note under which a test's family outcomes travel to ``mmspec oracle``
NOTE = "oracle-families"
AGREED, DIVERGED, SKIPPED = "agreed", "diverged", "skipped"


# ---------------------------------------------------------------- notation


def M(*items: str) -> list[tuple[int, int, str, str]]:
    """Window VMAs in a short notation: ``M("0-3 rw-p", "3-5 r--p", "8-12 rw-s file")``.

    >>> M("0-3 rw-p", "4-8 rw-s shmem")
    [(0, 3, 'rw-p', 'anon'), (4, 8, 'rw-s', 'shmem')]
    """
    out = []
    for item in items:
        parts = item.split()
        lo, hi = (int(x) for x in re.fullmatch(r"(-?\d+)-(-?\d+)", parts[0]).groups())
        out.append((lo, hi, parts[1], parts[2] if len(parts) > 2 else "anon"))
    return out


def show_maps(vmas: Sequence[Sequence[Any]]) -> str:
    """Window VMAs as lines ``[start, end) perms kind`` (pages)."""
    if not vmas:
        return "    (no VMA in the window)"
    return "\n".join(f"    [{v[0]}, {v[1]}) {v[2]} {v[3]}" for v in vmas)


def show_step(step: Sequence[Any]) -> str:
    from spec import mman

    names = {k: v for k, v in vars(mman).items() if k.isupper()}

    def flags(value: int, prefix: str) -> str:
        parts = [k for k, v in names.items() if k.startswith(prefix) and v and value & v == v
                 and k not in ("MAP_TYPE", "MAP_SHARED_VALIDATE", "LEGACY_MAP_MASK")]
        return "|".join(parts) or str(value)

    op = step[0]
    if op == "in":
        return f"in process {step[1]}: {show_step(step[2])}"
    args = list(step[1:])
    if op in ("mmap", "mmap_file"):
        args[2] = flags(args[2], "PROT_") if args[2] else "PROT_NONE"
        args[3] = flags(args[3], "MAP_")
    elif op == "mprotect":
        args[2] = flags(args[2], "PROT_") if args[2] else "PROT_NONE"
    elif op == "madvise":
        args[2] = next((k for k, v in names.items() if k.startswith("MADV_") and v == args[2]),
                       args[2])
    elif op == "mremap":
        args[3] = flags(args[3], "MREMAP_") if args[3] else 0
    return f"{op}({', '.join(str(a) for a in args)})"


def show_program(program: Sequence[Sequence[Any]]) -> str:
    return "\n".join(f"  {i:2}: {show_step(s)}" for i, s in enumerate(program))


# ---------------------------------------------------------------- bookkeeping


def record(family: str, outcome: str, text: str = "") -> None:
    """Note one comparison of ``family`` (agreed / diverged / skipped) for ``mmspec oracle``."""
    notes = tally.snapshot()["notes"]
    data = json.loads(notes.get(NOTE, "{}"))
    row = data.setdefault(family, {AGREED: 0, DIVERGED: 0, SKIPPED: 0})
    row[outcome] += 1
    if outcome == DIVERGED:  # the last of a test: hypothesis replays its shrunk example last
        row["first"] = text
    if outcome == SKIPPED and text and "reason" not in row:
        row["reason"] = text
    tally.note(NOTE, json.dumps(data, sort_keys=True))


# ---------------------------------------------------------------- reference expectations


def pfns_shown(run: Run) -> bool:
    """Whether the kernel showed PFNs in pagemap (it shows 0 without CAP_SYS_ADMIN): then
    the zero page's PFN was seen, and classes are ``zero``/``P<n>``; otherwise every present
    page is ``?`` on both sides."""
    return bool(run.setup.get("zero_pfn"))


def check_reference(run: Run, expect: Sequence[Mapping[str, Any] | None]) -> list[str]:
    """Where the kernel's observations differ from written-down expectations (one per step).

    An expectation may give ``ret``, ``minflt``, ``maps`` (of process 0, or ``procs`` as
    ``{proc: maps}``), ``pagemap`` as ``{page: (present, exclusive, file, class)}`` or
    ``{proc: {page: ...}}`` under ``pagemaps``, ``vmflags`` as ``{page: flag that must
    be in the VMA's VmFlags}``, ``smaps`` as ``{page: (Rss kB, Locked kB)}``, and ``check``, a
    predicate on the whole observation.
    """
    problems = []
    for i, (obs, want) in enumerate(zip(run.observations, expect, strict=False)):
        if not want:
            continue
        where = f"step {i} {show_step(obs['step'])}"
        for key in ("ret", "minflt", "majflt"):
            if key in want and obs[key] != want[key]:
                problems.append(f"{where}: {key} {obs[key]!r}, expected {want[key]!r}")
        procs = dict(want.get("procs", {}))
        if "maps" in want:
            procs[0] = want["maps"]
        for p, maps in procs.items():
            got = obs["procs"].get(p, {}).get("maps")
            if got != [tuple(m) for m in maps]:
                problems.append(f"{where}: process {p} maps\n{show_maps(got or [])}\n"
                                f"  expected\n{show_maps(maps)}")
        pagemaps = dict(want.get("pagemaps", {}))
        if "pagemap" in want:
            pagemaps[0] = want["pagemap"]
        for p, pages in pagemaps.items():
            got = obs["procs"].get(p, {}).get("pagemap", [])
            for page, entry in pages.items():
                j = page
                if not pfns_shown(run) and entry[3] != "none":
                    entry = (*entry[:3], "?")  # without CAP_SYS_ADMIN: present, class unknown
                if j >= len(got) or got[j] != tuple(entry):
                    problems.append(f"{where}: process {p} pagemap of page {page} "
                                    f"{got[j] if j < len(got) else None}, expected {entry}")
        smaps = obs["procs"].get(0, {}).get("smaps", [])
        for page, flag in want.get("vmflags", {}).items():
            row = next((r for r in smaps if r[0] <= page < r[1]), None)
            present = flag.lstrip("!")
            has = row is not None and present in row[4].split()
            if has == flag.startswith("!"):
                problems.append(f"{where}: VmFlags of page {page}: {row and row[4]!r}, "
                                f"expected {'no ' if flag.startswith('!') else ''}{present}")
        for page, (rss, locked) in want.get("smaps", {}).items():
            row = next((r for r in smaps if r[0] <= page < r[1]), None)
            if row is None or (row[2], row[3]) != (rss, locked):
                problems.append(f"{where}: smaps Rss/Locked of the VMA at page {page}: "
                                f"{row and (row[2], row[3])}, expected {(rss, locked)}")
        if "check" in want and not want["check"](obs):
            problems.append(f"{where}: {want.get('says', 'the check failed')}: ret {obs['ret']!r}")
    return problems


# ---------------------------------------------------------------- the spec adapter


class SpecNotReady(Exception):
    """The spec cannot run this program yet (a module or function is missing)."""


def _errname(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        name = cls.__name__
        if name.startswith("E") and name.isupper() or name in ("SIGSEGV", "SIGBUS"):
            return name
    return type(exc).__name__


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise SpecNotReady(f"{name} cannot be imported: {exc}") from exc


def _perms_kind(vma_mod: Any, v: Any) -> tuple[str, str]:
    perms = vma_mod.perms(v)
    if v.file is None:
        kind = "anon"
    elif getattr(v.file, "path", "").startswith("/dev/zero"):
        kind = "shmem"
    else:
        kind = "file"
    return perms, kind


def _window(vma_mod: Any, mm: Any, base: int, pages: int, below: int) -> list[tuple]:
    lo, hi = base - below * PAGE, base + pages * PAGE
    out = []
    for v in mm.vmas:
        if v.end <= lo or v.start >= hi:
            continue
        perms, kind = _perms_kind(vma_mod, v)
        out.append(((max(v.start, lo) - base) // PAGE, (min(v.end, hi) - base) // PAGE, perms,
                    kind))
    return out


def _vmflags(vma_mod: Any, mm: Any, base: int, pages: int, below: int) -> list[str]:
    lo, hi = base - below * PAGE, base + pages * PAGE
    return [vma_mod.vmflags(v.flags) for v in mm.vmas if v.end > lo and v.start < hi]


#: anon_vma ids for VMAs the runner inherited (the controller's, then its own); chosen far from
#: the ids the spec hands out (``pid << 20 | serial``)
INHERITED = ((1 << 40) + 1, (1 << 40) + 2)


def seed_mm(setup: Mapping[str, Any], host: Mapping[str, Any], *, heap: bool = False) -> Any:
    """A :mod:`spec.vma` address space laid out as the runner's: guards, limits, policies."""
    vma = _module("spec.vma")
    config = {
        "max_map_count": host.get("max_map_count"),
        "mmap_min_addr": host.get("mmap_min_addr"),
        "rlimit_memlock": setup.get("rlimit_memlock"),
        "cap_ipc_lock": bool(host.get("cap_ipc_lock")) and setup.get("uid") == 0,
        "overcommit_memory": host.get("overcommit_memory"),
        "overcommit_ratio": host.get("overcommit_ratio"),
        "overcommit_kbytes": host.get("overcommit_kbytes"),
        "totalram_pages": (host.get("memtotal") or 0) // 4 or None,
        "total_swap_pages": (host.get("swaptotal") or 0) // 4,
    }
    fields = {f.name for f in dataclasses.fields(vma.Mm)}
    config = {k: v for k, v in config.items() if k in fields and v is not None}
    try:
        mm = vma.new_mm(**config)
    except NotImplementedError as exc:
        raise SpecNotReady("spec.vma.new_mm is not implemented yet") from exc
    base = setup["base"]
    if heap:
        start_brk = base + setup["start_brk"]
        # the runner's heap, inherited across fork with its anon_vma: a chain of two (the
        # parent's anon_vma and the child's own), so it never absorbs a new neighbour
        heap_vma = vma.Vma(start_brk, base, _flags(vma, 3) | vma.VM_ACCOUNT, None,
                           start_brk >> 12, anon_vma=INHERITED[1], chain=INHERITED)
        return dataclasses.replace(mm, vmas=(heap_vma,), start_brk=start_brk, brk=base), True
    lo, hi = setup["arena"]
    window_end = base + setup["pages"] * PAGE
    guard_flags = _flags(vma, 0) | vma.VM_NORESERVE | vma.VM_DONTDUMP
    guards = (vma.Vma(lo, base, guard_flags, None, lo >> 12),
              vma.Vma(window_end, hi, guard_flags, None, window_end >> 12))
    return dataclasses.replace(mm, vmas=guards), False


def _flags(vma: Any, prot: int) -> int:
    out = vma.VM_MAYREAD | vma.VM_MAYWRITE | vma.VM_MAYEXEC
    out |= (vma.VM_READ if prot & 1 else 0) | (vma.VM_WRITE if prot & 2 else 0)
    out |= vma.VM_EXEC if prot & 4 else 0
    return out


def file_refs(setup: Mapping[str, Any], file_pages: int) -> list[Any]:
    """The runner's memfd files as :class:`spec.vma.FileRef` values."""
    vma = _module("spec.vma")
    fields = vma.FileRef._fields
    out = []
    for i, ino in enumerate(setup.get("files", [])):
        values = {"ino": ino, "path": f"/memfd:mmspec{i} (deleted)", "dev": "00:01",
                  "shmem": True, "size": file_pages * PAGE}
        out.append(vma.FileRef(**{k: v for k, v in values.items() if k in fields}))
    return out


def _vma_step(vma: Any, mm: Any, step: Sequence[Any], base: int, files: Sequence[Any],
              pid: int) -> tuple[Any, Any]:
    """One step on :mod:`spec.vma` alone: ``(new_mm, ret)``; errors raise."""
    op, args = step[0], list(step[1:])

    def a(off: int) -> int:
        return base + off * PAGE

    if op == "mmap":
        mm, r = vma.mmap(mm, a(args[0]), args[1] * PAGE, args[2], args[3])
        return mm, (r - base) // PAGE
    if op == "mmap_file":
        mm, r = vma.mmap(mm, a(args[0]), args[1] * PAGE, args[2], args[3], files[args[4]],
                         args[5])
        return mm, (r - base) // PAGE
    if op == "munmap":
        return vma.munmap(mm, a(args[0]), args[1] * PAGE)
    if op == "mprotect":
        return vma.mprotect(mm, a(args[0]), args[1] * PAGE, args[2])
    if op == "mremap":
        mm, r = vma.mremap(mm, a(args[0]), args[1] * PAGE, args[2] * PAGE, args[3], a(args[4]))
        return mm, (r - base) // PAGE
    if op == "madvise":
        return vma.madvise(mm, a(args[0]), args[1] * PAGE, args[2])
    if op == "mlock":
        return vma.mlock(mm, a(args[0]), args[1] * PAGE)
    if op == "mlock2":
        return vma.mlock(mm, a(args[0]), args[1] * PAGE, args[2])
    if op == "munlock":
        return vma.munlock(mm, a(args[0]), args[1] * PAGE)
    if op == "mlockall":
        return vma.mlockall(mm, args[0])
    if op == "munlockall":
        return vma.munlockall(mm)
    if op == "brk":
        mm, r = vma.brk(mm, mm.brk + args[0])
        return mm, r - base
    raise SpecNotReady(f"no spec.vma step for {op!r}")


def _touch_vmas(vma: Any, mm: Any, off: int, n: int, write: bool, base: int) -> tuple[Any, Any]:
    """A touch seen from the VMA layer only: stack growth, access checks, anon_vma_prepare."""
    for page in range(off, off + n):
        addr = base + page * PAGE
        v = vma.vma_at(mm, addr)
        if v is None:
            nxt = vma.find_vma(mm, addr)
            if nxt is None or not nxt.flags & vma.VM_GROWSDOWN:
                return mm, "SIGSEGV"
            try:
                mm = vma.expand_stack(mm, addr)
            except Exception as exc:  # noqa: BLE001 - the spec's typed error is the answer
                return mm, _errname(exc) if _errname(exc).startswith("SIG") else "SIGSEGV"
            v = vma.vma_at(mm, addr)
        needed = vma.VM_WRITE if write else (vma.VM_READ | vma.VM_WRITE | vma.VM_EXEC)
        if not v.flags & needed:
            return mm, "SIGSEGV"
        if write and v.anon_vma is None and not v.flags & vma.VM_SHARED:
            mm = vma.anon_vma_prepare(mm, addr)
    return mm, 0


def spec_run(program: Sequence[Sequence[Any]], run: Run, *, heap: bool = False,
             file_pages: int = 32, level: str = "vma") -> list[dict[str, Any]]:
    """The program on the spec, one observation per step in the kernel's format.

    ``level="vma"`` runs :mod:`spec.vma` alone (return values, VMAs, VmFlags; a touch only
    grows stacks, checks access and prepares anon_vmas); ``level="fault"`` runs the processes
    of :mod:`spec.fault` (also fault counts and pagemap classes).
    """
    if level == "fault":
        return _fault_run(program, run, heap=heap, file_pages=file_pages)
    vma = _module("spec.vma")
    setup, host = run.setup, run.host
    mm0, _ = seed_mm(setup, host, heap=heap)
    base, pages, below = setup["base"], setup["pages"], setup.get("below", 0)
    files = file_refs(setup, file_pages)
    procs: dict[int, Any] = {0: mm0}
    observations = []
    next_child = 1
    for step in program:
        proc, inner = _who(step)
        mm = procs.get(proc)
        try:
            if mm is None:
                ret: Any = GONE
                next_child += inner[0] == "fork"
            elif inner[0] == "fork":
                parent, child = vma.fork(mm, next_child + 1)
                procs[proc], procs[next_child] = parent, child
                ret = next_child
                next_child += 1
            elif inner[0] == "exit":
                del procs[proc]
                ret = 0
            elif inner[0] == "touch":
                procs[proc], ret = _touch_vmas(vma, mm, *inner[1:], base)
                if ret != 0:
                    del procs[proc]
            else:
                procs[proc], ret = _vma_step(vma, mm, inner, base, files, proc)
        except NotImplementedError as exc:
            raise SpecNotReady(f"spec.vma: {show_step(inner)} is not implemented yet: "
                               f"{exc}") from exc
        except Exception as exc:  # noqa: BLE001 - typed errors are results
            if type(exc).__module__ != "spec.errors":
                raise
            ret = _errname(exc)
            # Linux's mprotect/madvise/mlock are not atomic: the spec hands the state Linux
            # leaves after a failure part way as ``error.partial``
            partial = getattr(exc, "partial", None)
            if partial is not None and proc in procs:
                procs[proc] = partial
        observations.append({
            "step": step, "proc": proc, "ret": ret, "minflt": None, "majflt": None,
            "procs": {p: {"maps": _window(vma, m, base, pages, below),
                          "vmflags": _vmflags(vma, m, base, pages, below),
                          "pagemap": None, "mm": m}
                      for p, m in sorted(procs.items())},
        })
    return observations


def _who(step: Sequence[Any]) -> tuple[int, tuple]:
    proc, inner = (step[1], tuple(step[2])) if step[0] == "in" else (0, tuple(step))
    if inner[0] == "exit":
        proc = inner[1]
    return proc, inner


def _fault_system(run: Run, *, heap: bool, file_pages: int) -> Any:
    """A :mod:`spec.fault` system whose process 1 has the runner's layout and files."""
    fault = _module("spec.fault")
    setup = run.setup
    mm0, _ = seed_mm(setup, run.host, heap=heap)
    frames = 4 * (setup["pages"] + setup.get("below", 0)) + 1024
    config = fault.FaultConfig(pages=frames,
                               files=tuple((file_pages, True) for _ in setup.get("files", [])))
    try:
        s = fault.init(config)
    except NotImplementedError as exc:
        raise SpecNotReady(f"spec.fault.init: {exc}") from exc
    p = s.procs[1]
    mm = dataclasses.replace(mm0, pid=p.mm.pid, next_id=p.mm.next_id)
    return fault, dataclasses.replace(s, procs=s.procs.set(1, p._replace(mm=mm)))


#: the program steps :func:`spec.fault.program_step` runs (fork and exit are handled here)
_FAULT_STEPS = frozenset({"mmap", "mmap_file", "mremap", "brk", "touch", "munmap", "mprotect",
                          "madvise", "mlock", "mlock2", "munlock", "mlockall", "munlockall"})


def _fault_step(fault: Any, s: Any, pid: int, step: Sequence[Any], base: int) -> tuple[Any, Any]:
    """One system call or touch of the program on :mod:`spec.fault`: ``(system, ret)``; a step
    that fails part way raises with ``error.partial`` (the pages touched before)."""
    if step[0] not in _FAULT_STEPS:
        raise SpecNotReady(f"no spec.fault step for {step[0]!r}")
    return fault.program_step(s, pid, tuple(step), base)


def _fault_run(program: Sequence[Sequence[Any]], run: Run, *, heap: bool,
               file_pages: int) -> list[dict[str, Any]]:
    """The program on :mod:`spec.fault`: processes with pages, fault counts, pagemap classes."""
    vma = _module("spec.vma")
    fault, s = _fault_system(run, heap=heap, file_pages=file_pages)
    setup = run.setup
    base, pages, below = setup["base"], setup["pages"], setup.get("below", 0)
    pfns_visible = pfns_shown(run)
    pids: dict[int, int] = {0: 1}
    classes = PfnClasses()
    out = []
    next_child = 1
    for step in program:
        proc, inner = _who(step)
        pid = pids.get(proc)
        minflt = majflt = 0
        before = s.procs.get(pid) if pid is not None else None
        try:
            if pid is None:
                ret: Any = GONE
                minflt = majflt = None
                next_child += inner[0] == "fork"
            elif inner[0] == "fork":
                s, child = fault.fork(s, pid)
                pids[next_child] = child
                ret = next_child
                next_child += 1
            elif inner[0] == "exit":
                s, ret = fault.exit(s, pid)
                del pids[proc]
            else:
                before = s.procs[pid]
                s, ret = _fault_step(fault, s, pid, inner, base)
                after = s.procs[pid]
                minflt, majflt = after.minflt - before.minflt, after.majflt - before.majflt
        except NotImplementedError as exc:
            raise SpecNotReady(f"spec.fault: {show_step(inner)} is not implemented yet: "
                               f"{exc}") from exc
        except Exception as exc:  # noqa: BLE001 - typed errors are results
            if type(exc).__module__ != "spec.errors":
                raise
            ret = _errname(exc)
            minflt = majflt = None
            if ret in ("SIGSEGV", "SIGBUS"):  # the kernel kills the process
                if isinstance(getattr(exc, "partial", None), type(s)):  # the pages touched before
                    s = exc.partial
                s, _ = fault.exit(s, pid)
                del pids[proc]
            else:
                partial = getattr(exc, "partial", None)
                if partial is not None and pid in s.procs:
                    if isinstance(partial, vma.Mm):
                        partial = dataclasses.replace(
                            s, procs=s.procs.set(pid, s.procs[pid]._replace(mm=partial)))
                    s = partial
                if inner[0] not in ("touch",):  # the faults taken before the failure
                    after = s.procs.get(pid)
                    if before is not None and after is not None:
                        minflt, majflt = after.minflt - before.minflt, after.majflt - before.majflt
                    else:
                        minflt = majflt = 0
        snapshot = {}
        for q, qpid in sorted(pids.items()):
            entries = []
            for present, excl, file, cls in fault.pagemap(s, qpid, base, pages):
                raw = None if cls == "none" else cls
                if raw is not None and not pfns_visible:
                    raw = "?"
                entries.append((present, excl, file, raw))
            snapshot[q] = entries
        labelled = classes.label(snapshot)
        out.append({"step": step, "proc": proc, "ret": ret, "minflt": minflt, "majflt": majflt,
                    "procs": {q: {"maps": _window(vma, s.procs[qpid].mm, base, pages, below),
                                  "vmflags": _vmflags(vma, s.procs[qpid].mm, base, pages, below),
                                  "pagemap": labelled[q], "mm": s.procs[qpid].mm}
                              for q, qpid in sorted(pids.items())}})
    return out


# ---------------------------------------------------------------- comparing


#: the fields a comparison may look at
FIELDS = ("ret", "maps", "vmflags", "minflt", "pagemap")


def _kernel_flags(smaps: Sequence[Sequence[Any]], ignore: frozenset[str]) -> list[str]:
    return [" ".join(f for f in row[4].split() if f not in ignore) for row in smaps]


#: VmFlags the spec is not asked to reproduce: "ac" (VM_ACCOUNT is shown as "ac"), soft-dirty
#: and the arena's own flags are all compared; nothing is ignored unless named here.
IGNORED_FLAGS: frozenset[str] = frozenset()


def _ret(kernel: Run, obs: Mapping[str, Any]) -> Any:
    """The return value, with an address outside the window shown as ``"outside"`` (where an
    un-hinted mmap lands depends on the whole address space, not on the window)."""
    step = obs["step"]
    op = step[2][0] if step[0] == "in" else step[0]
    ret = obs["ret"]
    lo, hi = -kernel.setup.get("below", 0), kernel.setup["pages"]
    if op in ("mmap", "mmap_file", "mremap") and isinstance(ret, int) and not lo <= ret < hi:
        return "outside"
    return ret


def first_divergence(kernel: Run, spec: Sequence[Mapping[str, Any]],
                     fields: Sequence[str] = ("ret", "maps")) -> str | None:
    """The first step where the spec's observation differs from the kernel's, described with
    the program, the step, and both ``maps`` listings; None when they agree throughout."""
    for i, (k, s) in enumerate(zip(kernel.observations, spec, strict=False)):
        diffs = []
        if "ret" in fields and _ret(kernel, k) != _ret(kernel, s):
            diffs.append(f"returned: kernel {k['ret']!r}, spec {s['ret']!r}")
        if "minflt" in fields and s.get("minflt") is not None and k["minflt"] is not None:
            if k["minflt"] != s["minflt"]:
                diffs.append(f"minor faults: kernel {k['minflt']}, spec {s['minflt']}")
            if k["majflt"] != s["majflt"]:
                diffs.append(f"major faults: kernel {k['majflt']}, spec {s['majflt']}")
        kp, sp = sorted(k["procs"]), sorted(s["procs"])
        if kp != sp:
            diffs.append(f"live processes: kernel {kp}, spec {sp}")
        for p in sorted(set(kp) & set(sp)):
            kk, ss = k["procs"][p], s["procs"][p]
            who = f"process {p}: " if len(kp) > 1 or p else ""
            if "maps" in fields and [tuple(m) for m in kk["maps"]] != [tuple(m) for m in ss["maps"]]:
                diffs.append(f"{who}VMAs differ")
            if "vmflags" in fields and ss.get("vmflags") is not None:
                kf = _kernel_flags(kk["smaps"], IGNORED_FLAGS)
                sf = [" ".join(f for f in x.split() if f not in IGNORED_FLAGS)
                      for x in ss["vmflags"]]
                if kf != sf and [tuple(m) for m in kk["maps"]] == [tuple(m) for m in ss["maps"]]:
                    diffs.append(f"{who}VmFlags: kernel {kf}, spec {sf}")
            if "pagemap" in fields and ss.get("pagemap") is not None:
                bad = [j for j, (a, b) in enumerate(zip(kk["pagemap"], ss["pagemap"], strict=False))
                       if tuple(a) != tuple(b)]
                if bad:
                    j = bad[0]
                    diffs.append(f"{who}pagemap of page {j}: "
                                 f"kernel {tuple(kk['pagemap'][j])}, spec {tuple(ss['pagemap'][j])}"
                                 f" ({len(bad)} pages differ)")
        if diffs:
            return _describe(kernel, s, i, diffs)
    return None


def _describe(kernel: Run, s: Mapping[str, Any], i: int, diffs: Sequence[str]) -> str:
    k = kernel.observations[i]
    lines = [f"kernel and spec diverge at step {i}: {show_step(k['step'])}"]
    lines += [f"  {d}" for d in diffs]
    lines.append("program:")
    lines.append(show_program(kernel.program[: i + 1]))
    for p in sorted(set(k["procs"]) | set(s["procs"])):
        lines.append(f"process {p}, kernel /proc/PID/maps (window at page 0 = "
                     f"{kernel.setup['base']:#x}):")
        if p in k["procs"]:
            lines += [f"    {line}" for line in k["procs"][p]["lines"]] or ["    (none)"]
            lines.append("  as window pages:")
            lines.append(show_maps(k["procs"][p]["maps"]))
        else:
            lines.append("    (process gone)")
        lines.append(f"process {p}, spec maps:")
        if p in s["procs"]:
            lines += _spec_listing(s["procs"][p], kernel)
            lines.append("  as window pages:")
            lines.append(show_maps(s["procs"][p]["maps"]))
        else:
            lines.append("    (process gone)")
    return "\n".join(lines)


def _spec_listing(proc: Mapping[str, Any], kernel: Run) -> list[str]:
    mm = proc.get("mm")
    if mm is None:
        return []
    try:
        vma = importlib.import_module("spec.vma")
        text = vma.maps(mm)
    except Exception:  # noqa: BLE001 - the listing is a courtesy; the pages form follows
        return []
    base = kernel.setup["base"]
    lo = base - kernel.setup.get("below", 0) * PAGE
    hi = base + kernel.setup["pages"] * PAGE
    keep = []
    for line in text.splitlines():
        start, _, end = line.split()[0].partition("-")
        if int(end, 16) > lo and int(start, 16) < hi:
            keep.append(f"    {line}")
    return keep or ["    (none)"]


#: seconds the spec may take for one program before the oracle calls it stuck
SPEC_SECONDS = 10


class SpecTimeout(Exception):
    """The spec did not finish a program in time."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`SpecTimeout` in this (main) thread after ``seconds``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise SpecTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def compare(family: str, kernel: Run, *, heap: bool = False, file_pages: int = 32,
            fields: Sequence[str] = ("ret", "maps"), level: str | None = None,
            spec_runner: Callable[..., list[dict[str, Any]]] | None = None) -> str | None:
    """Run the kernel's program on the spec, compare, record the family's outcome.

    Returns the divergence text (also recorded) or None; raises :class:`SpecNotReady` after
    recording a skip when the spec cannot run the program.
    """
    runner = spec_runner or spec_run
    try:
        with _deadline(SPEC_SECONDS):
            if level is None:
                level = "fault" if {"minflt", "pagemap"} & set(fields) else "vma"
            spec = runner(kernel.program, kernel, heap=heap, file_pages=file_pages, level=level)
    except SpecNotReady as exc:
        record(family, SKIPPED, str(exc))
        raise
    except SpecTimeout:
        text = (f"the spec did not finish the program within {SPEC_SECONDS} s (a step that "
                f"never returns?); the kernel ran it in full\nprogram:\n"
                + show_program(kernel.program))
        record(family, DIVERGED, text)
        tally.tally("cases")
        return text
    text = first_divergence(kernel, spec, fields)
    record(family, DIVERGED if text else AGREED, text or "")
    tally.tally("cases")
    return text


# ---------------------------------------------------------------- scenarios


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A hand-written program with what kernel-oracle.md recorded for (some of) its steps.

    ``steps`` pairs each step with its expectation (see :func:`check_reference`) or None.
    The kernel must show the expectations (a check of the driver and of the recorded facts);
    then the spec must agree with the kernel on ``fields``.
    """

    name: str
    family: str
    steps: tuple[tuple[tuple, Mapping[str, Any] | None], ...]
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    fields: tuple[str, ...] = ("ret", "maps", "vmflags")
    source: str = ""

    @property
    def program(self) -> tuple[tuple, ...]:
        return tuple(step for step, _ in self.steps)

    @property
    def expect(self) -> list[Mapping[str, Any] | None]:
        return [want for _, want in self.steps]


def scenario(name: str, family: str, *steps: Any, source: str = "",
             fields: tuple[str, ...] = ("ret", "maps", "vmflags"), **options: Any) -> Scenario:
    """``scenario("A", "vma-merge", step, (step, expect), ...)``: bare steps expect nothing."""
    pairs = []
    for item in steps:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], tuple) \
                and (item[1] is None or isinstance(item[1], Mapping)):
            pairs.append(item)
        else:
            pairs.append((item, None))
    return Scenario(name, family, tuple(pairs), options, fields, source)


def run_scenario(sc: Scenario) -> tuple[Run, str | None]:
    """Run a scenario on the kernel, check its expectations, compare with the spec.

    Returns the kernel run and the divergence (None when the spec agreed or could not run:
    the latter is recorded as a skip and counted as ``uncompared``).  A kernel that does not
    show the expectations raises AssertionError.
    """
    from mmspec import livekernel

    run, _ = livekernel.stable_run(sc.program, **sc.options)
    problems = check_reference(run, sc.expect)
    checked = sum(1 for want in sc.expect if want)
    assert not problems, (
        f"scenario {sc.name}: the kernel does not show what was recorded ({sc.source}):\n"
        + "\n".join(problems) + "\nprogram:\n" + show_program(sc.program))
    tally.tally("cases", checked)
    try:
        text = compare(sc.family, run, heap=bool(sc.options.get("heap")),
                       file_pages=sc.options.get("file_pages", 32), fields=sc.fields)
    except SpecNotReady:
        tally.tally("uncompared")
        return run, None
    return run, text
