"""The running kernel as an oracle: run a program of memory system calls and watch what it does.

A *program* is a tuple of steps on a window of pages (the format :mod:`spec.vma` and
:mod:`spec.fault` share with the oracle; offsets and lengths are in pages relative to the
window's base)::

    ("mmap", off, n, prot, flags)           ("mmap_file", off, n, prot, flags, file_id, file_pgoff)
    ("munmap", off, n)                      ("mprotect", off, n, prot)
    ("mremap", off, old_n, new_n, flags, new_off)
    ("madvise", off, n, advice)             ("mlock", off, n)   ("mlock2", off, n, flags)
    ("munlock", off, n)                     ("mlockall", flags) ("munlockall",)
    ("touch", off, n, write)                ("brk", delta_bytes)
    ("fork",)                               ("exit", proc)      ("in", proc, step)

:func:`run` executes it on the live kernel and returns one observation per step: the return
value or errno name, the minor and major faults the step took (``ru_minflt`` / ``ru_majflt``
around a single libc call), and, for every live process, the VMAs inside the window as
``(start_page, end_page, perms, kind)`` and the pagemap entry of every window page as
``(present, exclusive, file, pfn_class)``.  This module only *observes*: it performs system
calls with :mod:`ctypes` and reads ``/proc``; every rule of memory management lives in the
spec.

How the observation is kept honest (the pitfalls of observing the kernel from Python):

* **A guarded arena.**  Each program runs in a fresh process forked for it (the *runner*,
  process 0), which reserves ``PROT_NONE`` memory at ``0x200000000000`` with
  ``MAP_FIXED_NOREPLACE | MAP_NORESERVE`` -- far below ``mmap_base``, so the interpreter's own
  mappings never land there -- and unmaps a 2 MiB-aligned window from the middle of it.  The
  guards on both sides are marked ``MADV_DONTDUMP`` (VmFlags ``dd``), a flag no program
  sets, so nothing in the window ever merges with them (a ``PROT_NONE`` window VMA would
  merge with a plain ``PROT_NONE`` guard).
* **Fault counts** are ``getrusage`` deltas read into a preallocated ``struct rusage``
  around one ``memset``/``memchr``/``syscall``; before every measurement the same sequence
  runs on a private scratch page until it measures 0 faults, because in a forked process
  the interpreter's own pages are copy-on-write and its first steps fault.
* **pagemap** is opened by the process that reads it (an inherited descriptor would show
  the parent's page tables), and PFNs are reduced to equality classes: ``none`` (not
  present), ``zero`` (the shared zero page), ``P0``, ``P1`` ... in first-seen order, a class
  being forgotten once no process maps its frame any more (freed frames are reused at once).
  Without ``CAP_SYS_ADMIN`` the kernel shows PFN 0: every present page is then class ``?``.
* **fork** runs parent and child in lock step: every process of a program has a command
  pipe and an observation pipe to the controller and exchanges one JSON line per command;
  children end with ``os._exit``.  A touch that kills its process (SIGSEGV, SIGBUS) is
  observed as the signal's name, read from the zombie's ``/proc/PID/stat``.
* **Files** are memfd files created by the runner before the program starts.
* **brk** programs (``heap=True``) run on the runner's own heap: the runner is a forked
  child, so its heap VMA is an inherited one (kernel-oracle rule S).  glibc's trimming is
  switched off and its arena topped up first, so malloc never moves the break underneath.

The host configuration (kernel release, THP mode, overcommit mode, page size, capabilities,
RLIMIT_MEMLOCK ...) is read, never assumed, and recorded with every run: :func:`host_config`.
:func:`unavailable` says why the oracle cannot run here (not Linux x86-64, no pagemap ...),
for tests to skip with.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import faulthandler
import gc
import json
import os
import platform
import select
import signal
import struct
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spec.mman import (
    MADV_DONTDUMP,
    MADV_POPULATE_WRITE,
    MAP_ANONYMOUS,
    MAP_FIXED_NOREPLACE,
    MAP_NORESERVE,
    MAP_PRIVATE,
    PROT_NONE,
    PROT_READ,
    SYS_brk,
    SYS_madvise,
    SYS_mlock,
    SYS_mlock2,
    SYS_mlockall,
    SYS_mmap,
    SYS_mprotect,
    SYS_mremap,
    SYS_munlock,
    SYS_munlockall,
    SYS_munmap,
)

PAGE = 4096
#: where the guarded arena is reserved: far below any mmap_base, above any brk heap
ARENA_BASE = 0x200000000000
#: the arena: a 2 MiB guard, the 2 MiB-aligned window, then at least a 2 MiB guard
GUARD = 2 << 20
WINDOW_BASE = ARENA_BASE + GUARD
#: pagemap bits (Documentation/admin-guide/mm/pagemap.rst)
PM_PRESENT = 1 << 63
PM_SWAP = 1 << 62
PM_FILE = 1 << 61
PM_EXCLUSIVE = 1 << 56
PM_PFN_MASK = (1 << 55) - 1
#: capability bits (include/uapi/linux/capability.h)
CAP_SETUID, CAP_IPC_LOCK, CAP_SYS_ADMIN = 7, 14, 21
#: mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
#: prctl option (include/uapi/linux/prctl.h)
PR_SET_PDEATHSIG = 1
#: the byte a write touch stores, and one a read touch searches for and never finds
WRITE_BYTE, ABSENT_BYTE = 0x5A, 0xA5
#: the result of a step addressed to a process that no longer runs
GONE = "no-process"
#: seconds a process may take to answer one command
TIMEOUT = 20.0


# ---------------------------------------------------------------- the host


def unavailable() -> str | None:
    """Why the live-kernel oracle cannot run on this host, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"the kernel oracle needs Linux; this host is {sys.platform}"
    if platform.machine() != "x86_64":
        return f"the oracle uses x86-64 system-call numbers; this host is {platform.machine()}"
    if os.sysconf("SC_PAGE_SIZE") != PAGE:
        return f"the programs assume 4 KiB pages; this host has {os.sysconf('SC_PAGE_SIZE')}"
    for path in ("/proc/self/maps", "/proc/self/pagemap"):
        if not os.access(path, os.R_OK):
            return f"{path} is not readable on this host"
    if not hasattr(os, "fork") or not hasattr(os, "memfd_create"):
        return "this Python has no os.fork or os.memfd_create"
    return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _bracketed(text: str | None) -> str | None:
    if text is None:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return text


def _capabilities() -> int:
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


def host_config() -> dict[str, Any]:
    """The host's configuration as far as it conditions what the oracle sees (read, not assumed)."""
    caps = _capabilities()
    meminfo = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        name, _, rest = line.partition(":")
        if name in ("CommitLimit", "Committed_AS", "MemTotal", "SwapTotal"):
            meminfo[name] = int(rest.split()[0])
    import resource

    thp = "/sys/kernel/mm/transparent_hugepage"
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return {
        "kernel": os.uname().release,
        "machine": platform.machine(),
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "thp_enabled": _bracketed(_read(f"{thp}/enabled")),
        "thp_defrag": _bracketed(_read(f"{thp}/defrag")),
        "thp_use_zero_page": _int(f"{thp}/use_zero_page"),
        "overcommit_memory": _int("/proc/sys/vm/overcommit_memory"),
        "overcommit_ratio": _int("/proc/sys/vm/overcommit_ratio"),
        "overcommit_kbytes": _int("/proc/sys/vm/overcommit_kbytes"),
        "max_map_count": _int("/proc/sys/vm/max_map_count"),
        "mmap_min_addr": _int("/proc/sys/vm/mmap_min_addr"),
        "randomize_va_space": _int("/proc/sys/kernel/randomize_va_space"),
        "rlimit_memlock": soft if soft != resource.RLIM_INFINITY else -1,
        "rlimit_memlock_max": hard if hard != resource.RLIM_INFINITY else -1,
        "uid": os.getuid(),
        "cap_sys_admin": bool(caps >> CAP_SYS_ADMIN & 1),
        "cap_ipc_lock": bool(caps >> CAP_IPC_LOCK & 1),
        "cap_setuid": bool(caps >> CAP_SETUID & 1),
        **{k.lower(): v for k, v in meminfo.items()},
    }


# ---------------------------------------------------------------- libc through ctypes


class _Rusage(ctypes.Structure):
    _fields_ = [("ru_utime", ctypes.c_long * 2), ("ru_stime", ctypes.c_long * 2),
                ("ru_maxrss", ctypes.c_long), ("ru_ixrss", ctypes.c_long),
                ("ru_idrss", ctypes.c_long), ("ru_isrss", ctypes.c_long),
                ("ru_minflt", ctypes.c_long), ("ru_majflt", ctypes.c_long),
                ("ru_rest", ctypes.c_long * 8)]


class _Libc:
    """The few libc entry points the driver calls, typed once.

    Only ``syscall`` keeps errno (``use_errno``); the calls around it come from a second
    handle without it, so that nothing between the system call and :func:`ctypes.get_errno`
    can change the saved value.
    """

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        plain = ctypes.CDLL(None)
        self.syscall = libc.syscall
        self.syscall.restype = ctypes.c_long
        self.memset = plain.memset
        self.memset.restype = ctypes.c_void_p
        self.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
        self.memchr = plain.memchr
        self.memchr.restype = ctypes.c_void_p
        self.memchr.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
        self.getrusage = plain.getrusage
        self.getrusage.argtypes = [ctypes.c_int, ctypes.c_void_p]
        self.mallopt = plain.mallopt
        self.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        self.malloc = plain.malloc
        self.malloc.restype = ctypes.c_void_p
        self.malloc.argtypes = [ctypes.c_size_t]
        self.free = plain.free
        self.free.argtypes = [ctypes.c_void_p]
        self.prctl = plain.prctl
        self.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                               ctypes.c_ulong]
        self.before, self.after = _Rusage(), _Rusage()
        self.before_p, self.after_p = ctypes.byref(self.before), ctypes.byref(self.after)

    @staticmethod
    def _result(r: int) -> int | str:
        if r == -1:
            e = ctypes.get_errno()
            return _errno.errorcode.get(e, str(e))
        return r

    def sys(self, nr: int, *args: int) -> int | str:
        """A raw system call: its result, or the errno's name on failure."""
        return self.measured_sys(nr, *args)[0]

    def measured_sys(self, nr: int, *args: int) -> tuple[int | str, int, int]:
        """A raw system call between two getrusage calls: (result, minor, major faults)."""
        cargs = [ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)]
        ctypes.set_errno(0)
        self.getrusage(0, self.before_p)
        r = self.syscall(*cargs)
        self.getrusage(0, self.after_p)
        return (self._result(r), self.after.ru_minflt - self.before.ru_minflt,
                self.after.ru_majflt - self.before.ru_majflt)

    def measured(self, fn: Any, *args: Any) -> tuple[Any, int, int]:
        """``fn(*args)`` between two getrusage calls: (result, minor faults, major faults)."""
        self.getrusage(0, self.before_p)
        r = fn(*args)
        self.getrusage(0, self.after_p)
        return (r, self.after.ru_minflt - self.before.ru_minflt,
                self.after.ru_majflt - self.before.ru_majflt)


# ---------------------------------------------------------------- reading /proc


def parse_maps(text: str) -> list[tuple[int, int, str, int, str, int, str]]:
    """``/proc/PID/maps`` as ``(start, end, perms, offset, dev, inode, name)`` byte addresses."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        name = parts[5].strip() if len(parts) > 5 else ""
        out.append((lo, hi, parts[1], int(parts[2], 16), parts[3], int(parts[4]), name))
    return out


def kind_of(name: str) -> str:
    """The kind of a maps line: ``shmem`` (shared anonymous), ``file``, or ``anon``."""
    if name.startswith("/dev/zero") or name.startswith("/SYSV"):
        return "shmem"
    if name.startswith("/"):
        return "file"
    return "anon"


def window_vmas(entries: Iterable[tuple], base: int, pages: int, *, below: int = 0
                ) -> list[tuple[int, int, str, str]]:
    """The VMAs meeting ``[base - below pages, base + pages)`` as relative, clipped page ranges."""
    lo, hi = base - below * PAGE, base + pages * PAGE
    out = []
    for start, end, perms, _off, _dev, _ino, name in entries:
        if end <= lo or start >= hi:
            continue
        out.append(((max(start, lo) - base) // PAGE, (min(end, hi) - base) // PAGE, perms,
                    kind_of(name)))
    return out


def window_lines(text: str, base: int, pages: int, *, below: int = 0) -> list[str]:
    """The maps lines meeting the window, as the kernel printed them."""
    lo, hi = base - below * PAGE, base + pages * PAGE
    keep = []
    for line, entry in zip(text.splitlines(), parse_maps(text), strict=False):
        if entry[1] > lo and entry[0] < hi:
            keep.append(line)
    return keep


def window_smaps(text: str, base: int, pages: int, *, below: int = 0
                 ) -> list[tuple[int, int, int | None, int | None, str]]:
    """``/proc/PID/smaps`` of the window's VMAs: ``(start_page, end_page, Rss kB, Locked kB,
    VmFlags)``, pages relative to ``base`` and clipped like :func:`window_vmas` (the sizes are
    None for a VMA that reaches outside the window)."""
    lo, hi = base - below * PAGE, base + pages * PAGE
    out: list[tuple[int, int, int | None, int | None, str]] = []
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        head = line.split(None, 1)[0] if line else ""
        if "-" in head and not head.endswith(":"):
            start, end = (int(x, 16) for x in head.split("-"))
            current = None
            if end > lo and start < hi:
                current = {"range": ((max(start, lo) - base) // PAGE, (min(end, hi) - base) // PAGE),
                           "Rss": 0, "Locked": 0, "whole": lo <= start and end <= hi}
        elif current is not None and head in ("Rss:", "Locked:"):
            # sizes of a VMA reaching outside the window (the inherited heap) are not the window's
            current[head[:-1]] = int(line.split()[1]) if current["whole"] else None
        elif current is not None and head == "VmFlags:":
            out.append((*current["range"], current["Rss"], current["Locked"],
                        line.partition(":")[2].strip()))
            current = None
    return out


class PfnClasses:
    """Names physical frames by equality class, in first-seen order, across processes and steps.

    A snapshot is ``{proc: [(present, exclusive, file, raw)]}``, ``raw`` being a PFN, the
    string ``"zero"``, ``"?"`` (present, PFN hidden) or None.  A frame that no process maps
    any more is forgotten, so a frame the kernel frees and reuses gets a new class, as a
    fresh frame would in the spec; the spec adapters name their frame ids with this same
    class.

    >>> c = PfnClasses()
    >>> c.label({0: [(1, 1, 0, 77), (1, 0, 0, "zero"), (0, 0, 0, None)]})
    {0: [(1, 1, 0, 'P0'), (1, 0, 0, 'zero'), (0, 0, 0, 'none')]}
    >>> c.label({0: [(1, 0, 0, 77)], 1: [(1, 0, 0, 77)]})
    {0: [(1, 0, 0, 'P0')], 1: [(1, 0, 0, 'P0')]}
    >>> c.label({0: [(0, 0, 0, None)]}); c.label({0: [(1, 1, 0, 77)]})
    {0: [(0, 0, 0, 'none')]}
    {0: [(1, 1, 0, 'P1')]}
    """

    def __init__(self) -> None:
        self.names: dict[Any, str] = {}
        self.serial = 0

    def _name(self, raw: Any) -> str:
        if raw is None:
            return "none"
        if raw in ("zero", "?"):
            return raw
        if raw not in self.names:
            self.names[raw] = f"P{self.serial}"
            self.serial += 1
        return self.names[raw]

    def label(self, snapshot: Mapping[int, Sequence[tuple]]) -> dict[int, list[tuple]]:
        """Name every entry of one step's snapshot, then forget the frames nobody maps."""
        out = {p: [(e[0], e[1], e[2], self._name(e[3])) for e in entries]
               for p, entries in snapshot.items()}
        seen = {e[3] for entries in snapshot.values() for e in entries}
        for raw in [r for r in self.names if r not in seen]:
            del self.names[raw]
        return out


# ---------------------------------------------------------------- one process of a program


class _Process:
    """The code every process of a program runs: execute commands, answer with observations."""

    def __init__(self, proc: int, ctx: dict[str, Any], libc: _Libc) -> None:
        self.proc, self.ctx, self.libc = proc, ctx, libc
        self.base, self.pages, self.below = ctx["base"], ctx["pages"], ctx["below"]
        # pitfall 3: pagemap (and maps) opened by the process that reads them
        self.maps_fd = os.open("/proc/self/maps", os.O_RDONLY)
        self.smaps_fd = os.open("/proc/self/smaps", os.O_RDONLY)
        self.pagemap_fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        self.buf = bytearray(1 << 20)
        self.scratch = libc.sys(SYS_mmap, 0, PAGE, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        libc.memset(self.scratch, 1, PAGE)
        # pitfall 2, the C stack: after fork its pages are copy-on-write, and a measured call
        # that reaches one page deeper than the warm-up did would count a fault of its own
        for start, end, perms, *_rest, name in parse_maps(self.read_maps()):
            if name == "[stack]" and perms.startswith("rw"):
                libc.sys(SYS_madvise, start, end - start, MADV_POPULATE_WRITE)

    # -- measuring

    def warm(self) -> None:
        """Pitfall 2: run the measuring sequence on the scratch page until it takes no fault."""
        libc = self.libc
        for _ in range(50):
            _, a, _ = libc.measured(libc.memset, self.scratch, WRITE_BYTE, PAGE)
            _, b, _ = libc.measured(libc.memchr, self.scratch, ABSENT_BYTE, PAGE)
            _, c, _ = libc.measured_sys(SYS_madvise, self.scratch, PAGE, 0, 0, 0, 0)
            _, d, _ = libc.measured_sys(SYS_madvise, self.scratch, PAGE, -1, 0, 0, 0)  # errno
            # a call returning an address (a new int object), as mmap and mremap do
            addr, e, _ = libc.measured_sys(SYS_mmap, 0, PAGE, PROT_NONE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            libc.sys(SYS_munmap, addr, PAGE)
            if a == b == c == d == e == 0:
                return

    def addr(self, off: int) -> int:
        return self.base + off * PAGE

    def read_maps(self, fd: int | None = None) -> str:
        fd = self.maps_fd if fd is None else fd
        chunks, view = [], memoryview(self.buf)
        os.lseek(fd, 0, os.SEEK_SET)
        while True:
            n = os.readv(fd, [view])
            if n <= 0:
                break
            chunks.append(bytes(view[:n]))
        return b"".join(chunks).decode()

    def pagemap(self) -> list[tuple]:
        n = self.pages
        data = os.pread(self.pagemap_fd, 8 * n, self.base // PAGE * 8)
        zero = self.ctx.get("zero_pfn")
        out = []
        for entry in struct.unpack(f"<{n}Q", data):
            present = bool(entry & PM_PRESENT)
            pfn = entry & PM_PFN_MASK
            raw = None
            if present:
                raw = "zero" if zero and pfn == zero else (pfn if pfn and zero else "?")
            out.append((int(present), int(bool(entry & PM_EXCLUSIVE)), int(bool(entry & PM_FILE)),
                        raw))
        return out

    def observe(self) -> dict[str, Any]:
        text = self.read_maps()
        entries = parse_maps(text)
        return {"maps": window_vmas(entries, self.base, self.pages, below=self.below),
                "lines": window_lines(text, self.base, self.pages, below=self.below),
                "smaps": window_smaps(self.read_maps(self.smaps_fd), self.base, self.pages,
                                      below=self.below),
                "pagemap": self.pagemap()}

    # -- the steps

    def rel(self, r: int | str) -> int | str:
        """A returned address as a page offset from the window (errno names pass through)."""
        return r if isinstance(r, str) else (r - self.base) // PAGE

    def step(self, step: Sequence[Any]) -> dict[str, Any]:
        op, args = step[0], list(step[1:])
        libc, a = self.libc, self.addr
        self.warm()
        if op == "touch":
            off, n, write = args
            if write:
                r, minflt, majflt = libc.measured(libc.memset, a(off), WRITE_BYTE, n * PAGE)
            else:
                r, minflt, majflt = libc.measured(libc.memchr, a(off), ABSENT_BYTE, n * PAGE)
            return {"ret": 0, "minflt": minflt, "majflt": majflt}
        if op == "mmap":
            off, n, prot, flags = args
            call = (SYS_mmap, a(off), n * PAGE, prot, flags, -1, 0)
        elif op == "mmap_file":
            off, n, prot, flags, file_id, pgoff = args
            call = (SYS_mmap, a(off), n * PAGE, prot, flags, self.ctx["files"][file_id],
                    pgoff * PAGE)
        elif op == "munmap":
            call = (SYS_munmap, a(args[0]), args[1] * PAGE)
        elif op == "mprotect":
            call = (SYS_mprotect, a(args[0]), args[1] * PAGE, args[2])
        elif op == "mremap":
            off, old_n, new_n, flags, new_off = args
            call = (SYS_mremap, a(off), old_n * PAGE, new_n * PAGE, flags, a(new_off))
        elif op == "madvise":
            call = (SYS_madvise, a(args[0]), args[1] * PAGE, args[2])
        elif op == "mlock":
            call = (SYS_mlock, a(args[0]), args[1] * PAGE)
        elif op == "mlock2":
            call = (SYS_mlock2, a(args[0]), args[1] * PAGE, args[2])
        elif op == "munlock":
            call = (SYS_munlock, a(args[0]), args[1] * PAGE)
        elif op == "mlockall":
            call = (SYS_mlockall, args[0])
        elif op == "munlockall":
            call = (SYS_munlockall,)
        elif op == "brk":
            self.ctx["brk"] += args[0]
            call = (SYS_brk, self.ctx["brk"])
        else:
            raise ValueError(f"unknown step {step!r}")
        r, minflt, majflt = libc.measured_sys(*call)
        if op in ("mmap", "mmap_file", "mremap"):
            r = self.rel(r)
        elif op == "brk":
            self.ctx["brk"] = r  # the kernel's break after the call (the old one on failure)
            r = r - self.base
        return {"ret": r, "minflt": minflt, "majflt": majflt}


def _send(fd: int, message: Mapping[str, Any]) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


class _LineReader:
    def __init__(self, fd: int) -> None:
        self.fd, self.pending = fd, b""

    def read(self, timeout: float | None = None) -> dict[str, Any] | None:
        """One JSON line, or None at end of file (or timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.pending:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                    return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return json.loads(line)


def _serve(proc: int, ctx: dict[str, Any], pipes: dict[int, tuple[int, int, int, int]],
           keep: set[int], tree: Mapping[int, set[int]], me: _Process | None = None) -> None:
    """The body of process ``proc``: answer commands until told to exit; never returns."""
    code = 0
    try:
        for k, (cmd_r, cmd_w, obs_r, obs_w) in pipes.items():
            os.close(cmd_w) if cmd_w >= 0 else None
            os.close(obs_r) if obs_r >= 0 else None
            if k not in keep:
                os.close(cmd_r)
                os.close(obs_w)
        mine = {k: pipes[k] for k in keep}
        gc.disable()  # a collection inside a measured call would fault on copy-on-write pages
        if me is None:
            me = _Process(proc, ctx, _Libc())
        me.warm()
        reader = _LineReader(mine[proc][0])
        out = mine[proc][3]
        _send(out, {"hello": proc, "pid": os.getpid()})
        while True:
            command = reader.read()
            if command is None:
                break
            op = command["op"]
            if op == "observe":
                _send(out, me.observe())
            elif op == "step":
                _send(out, me.step(command["step"]))
            elif op == "fork":
                child = command["child"]
                sub = {child} | tree.get(child, set())
                pid = os.fork()
                if pid == 0:
                    for fd in (me.maps_fd, me.smaps_fd, me.pagemap_fd):
                        os.close(fd)
                    _serve(child, ctx, {k: (mine[k][0], -1, -1, mine[k][3]) for k in keep},
                           sub, tree)
                for k in sub:
                    os.close(mine[k][0])
                    os.close(mine[k][3])
                keep = keep - sub
                _send(out, {"ret": child, "pid": pid, "minflt": 0, "majflt": 0})
            elif op == "exit":
                _send(out, {"ret": 0, "minflt": 0, "majflt": 0})
                break
            else:
                raise ValueError(f"unknown command {command!r}")
    except BaseException as exc:  # noqa: BLE001 - report, then leave without unwinding pytest
        try:
            sys.stderr.write(f"livekernel process {proc}: {type(exc).__name__}: {exc}\n")
        except Exception:  # noqa: BLE001
            pass
        code = 70
    finally:
        os._exit(code)


# ---------------------------------------------------------------- the controller


@dataclass
class Run:
    """What one program did on the live kernel."""

    program: tuple
    host: dict[str, Any]
    observations: list[dict[str, Any]] = field(default_factory=list)
    setup: dict[str, Any] = field(default_factory=dict)

    def listing(self, i: int, proc: int = 0) -> str:
        """The maps lines of ``proc`` in the window after step ``i``, as the kernel printed them."""
        procs = self.observations[i]["procs"]
        return "\n".join(procs[proc]["lines"]) if proc in procs else f"(process {proc} is gone)"


class OracleError(RuntimeError):
    """The live-kernel driver could not carry out a program (not a divergence)."""


def comparable(obs: Mapping[str, Any]) -> dict[str, Any]:
    """An observation without what differs between runs by design (inode numbers in lines)."""
    return {"ret": obs["ret"], "minflt": obs["minflt"], "majflt": obs["majflt"],
            "procs": {p: (s["maps"], s["pagemap"], s["smaps"]) for p, s in obs["procs"].items()}}


def stable_run(program: Sequence[tuple], **options: Any) -> tuple[Run, bool]:
    """Run ``program`` until two runs agree (at most three): the run, and whether the first
    two agreed.

    A fault count is a difference of two getrusage readings, and once in a few hundred runs
    the interpreter itself takes a page fault between them on a loaded machine.  The kernel's
    answer is the one that repeats; if no two of three runs agree, the kernel (or the driver)
    is not deterministic for this program and :class:`OracleError` says so.
    """
    first = run(program, **options)
    second = run(program, **options)
    a, b = ([comparable(o) for o in r.observations] for r in (first, second))
    if a == b:
        return first, True
    third = run(program, **options)
    c = [comparable(o) for o in third.observations]
    if c in (a, b):
        return third, False
    raise OracleError(f"three runs of the program gave three different observations: {program!r}")


def _process_tree(program: Sequence[tuple]) -> tuple[dict[int, set[int]], int]:
    """Which processes each process forks (transitively), and how many processes there are."""
    parent_of: dict[int, int] = {}
    n = 1
    for step in program:
        proc, inner = (step[1], step[2]) if step[0] == "in" else (0, step)
        if inner[0] == "fork":
            parent_of[n] = proc
            n += 1
    tree: dict[int, set[int]] = {p: set() for p in range(n)}
    for child, parent in parent_of.items():
        p: int | None = parent
        while p is not None:
            tree[p].add(child)
            p = parent_of.get(p)
    return tree, n


def _proc_state(pid: int) -> tuple[str, int]:
    """A process's state letter and its exit code (for zombies) from /proc/PID/stat."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return "X", 0
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[49]) if len(fields) > 49 else 0


def _wait_gone(pid: int, timeout: float = 5.0) -> int:
    """Wait until ``pid`` has exited (its mm released); return its wait status if still known."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, status = _proc_state(pid)
        if state in ("Z", "X"):
            return status
        time.sleep(0.001)
    raise OracleError(f"process {pid} did not exit within {timeout} s")


def _death(status: int) -> str:
    if status & 0x7F:
        sig = status & 0x7F
        try:
            return signal.Signals(sig).name
        except ValueError:
            return f"signal {sig}"
    return f"exit {status >> 8}"


def run(program: Sequence[tuple], *, pages: int = 16, file_pages: int = 32, files: int = 2,
        heap: bool = False, unprivileged: bool = False) -> Run:
    """Run ``program`` on the live kernel in fresh processes; one observation per step.

    Each observation holds ``proc`` (who acted), ``ret``, ``minflt``, ``majflt`` and
    ``procs``: for every live process its window ``maps``, the raw ``lines``, ``smaps`` and
    its ``pagemap`` with PFN classes (window pages 0 .. pages-1).  ``heap=True`` observes the
    runner's heap instead of the arena window: page 0 is the page-aligned break the program
    starts from, and the maps show the inherited heap below it as page -1.
    ``unprivileged=True`` drops to uid 65534 before the program (no CAP_IPC_LOCK;
    RLIMIT_MEMLOCK applies).  ``files`` memfd files of ``file_pages`` pages are made for
    ``mmap_file`` steps.
    """
    reason = unavailable()
    if reason:
        raise OracleError(reason)
    program = tuple(tuple(s) for s in program)
    tree, nprocs = _process_tree(program)
    if unprivileged and nprocs > 1:
        raise OracleError("unprivileged programs cannot fork: the child could not open pagemap")
    host = host_config()
    pipes = {}
    for k in range(nprocs):
        cmd_r, cmd_w = os.pipe()
        obs_r, obs_w = os.pipe()
        pipes[k] = (cmd_r, cmd_w, obs_r, obs_w)
    setup_r, setup_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    runner = os.fork()
    if runner == 0:
        os.close(setup_r)
        if heap:
            _heap_parent(pipes, setup_w)
        _runner(pipes, tree, setup_w, pages=pages, file_pages=file_pages, files=files, heap=heap,
                unprivileged=unprivileged)
    os.close(setup_w)
    for cmd_r, _cmd_w, _obs_r, obs_w in pipes.values():
        os.close(cmd_r)
        os.close(obs_w)
    readers = {k: _LineReader(pipes[k][2]) for k in pipes}
    pids: dict[int, int] = {}
    try:
        setup = _LineReader(setup_r).read(TIMEOUT)
        if setup is None or "error" in setup:
            raise OracleError(f"the runner could not set up: {setup and setup['error']}")
        hello = readers[0].read(TIMEOUT)
        if hello is None:
            raise OracleError("the runner died before its first command")
        pids[0] = hello["pid"]
        result = Run(program, host, setup=setup)
        classes = PfnClasses()
        live = {0}
        next_child = 1

        def ask(proc: int, command: dict[str, Any]) -> dict[str, Any] | None:
            try:
                _send(pipes[proc][1], command)
            except BrokenPipeError:
                return None
            return readers[proc].read(TIMEOUT)

        for step in program:
            proc, inner = (step[1], tuple(step[2])) if step[0] == "in" else (0, step)
            if inner[0] == "exit":
                proc = inner[1]
            if proc not in live:  # killed by an earlier step (or never forked)
                reply: dict[str, Any] | None = {"ret": GONE, "minflt": None, "majflt": None}
                if inner[0] == "fork":
                    next_child += 1  # the child's number is taken all the same
            elif inner[0] == "fork":
                reply = ask(proc, {"op": "fork", "child": next_child})
                if reply is None:
                    raise OracleError(f"process {proc} died while forking")
                hello = readers[next_child].read(TIMEOUT)
                if hello is None:
                    raise OracleError(f"child process {next_child} died before its first command")
                pids[next_child] = hello["pid"]
                live.add(next_child)
                next_child += 1
            elif inner[0] == "exit":
                reply = ask(proc, {"op": "exit"})
                _wait_gone(pids[proc])
                live.discard(proc)
            else:
                reply = ask(proc, {"op": "step", "step": list(inner)})
                if reply is None:
                    status = _wait_gone(pids[proc])
                    reply = {"ret": _death(status), "minflt": None, "majflt": None}
                    live.discard(proc)
            if reply is None:
                raise OracleError(f"process {proc} gave no answer to {step!r}")
            snapshot = {}
            for q in sorted(live):
                seen = ask(q, {"op": "observe"})
                if seen is None:
                    raise OracleError(f"process {q} gave no observation after {step!r}")
                snapshot[q] = seen
            labelled = classes.label({q: [tuple(e) for e in s["pagemap"]]
                                      for q, s in snapshot.items()})
            obs = {"step": step, "proc": proc, "ret": reply["ret"], "minflt": reply["minflt"],
                   "majflt": reply["majflt"],
                   "procs": {q: {"maps": [tuple(m) for m in s["maps"]], "lines": s["lines"],
                                 "smaps": [tuple(m) for m in s["smaps"]],
                                 "pagemap": labelled[q]} for q, s in snapshot.items()}}
            result.observations.append(obs)
        for q in sorted(live, reverse=True):
            ask(q, {"op": "exit"})
            _wait_gone(pids[q])
        return result
    finally:
        for _cmd_r, cmd_w, obs_r, _obs_w in pipes.values():
            os.close(cmd_w)
            os.close(obs_r)
        os.close(setup_r)
        try:
            os.kill(runner, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(runner, 0)


def _heap_parent(pipes: Mapping[int, tuple[int, int, int, int]], setup_w: int) -> None:
    """For a heap program: prepare glibc's heap, fork the runner, and stay its parent.

    glibc caches the break: if malloc grew or trimmed the heap itself it would move the
    kernel's break under the program.  This process gives glibc's arena 16 MiB of free top
    chunk (from brk, not mmap) and forbids trimming, so malloc never calls brk again; the
    runner forked next inherits all of the heap, which is what kernel-oracle.md section 9
    observed "in a forked child".  This process then keeps the runner's zombie (for its exit
    status in /proc/PID/stat) until the controller kills it, or dies with the controller.
    """
    try:
        faulthandler.disable()
        libc = _Libc()
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
        libc.mallopt(M_TOP_PAD, 1 << 20)
        libc.free(libc.malloc(16 << 20))
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.fork() == 0:
            return
        for fds in pipes.values():
            for fd in fds:
                os.close(fd)
        os.close(setup_w)
        while True:
            signal.pause()
    except BaseException:  # noqa: BLE001 - never unwind into the forking interpreter
        os._exit(70)


def arena_size(pages: int) -> int:
    """Bytes reserved for a window of ``pages``: guards of at least 2 MiB on both sides."""
    window = (pages * PAGE + GUARD - 1) // GUARD * GUARD
    return GUARD + window + GUARD


def _runner(pipes: dict[int, tuple[int, int, int, int]], tree: Mapping[int, set[int]],
            setup_w: int, *, pages: int, file_pages: int, files: int, heap: bool,
            unprivileged: bool) -> None:
    """Process 0: reserve the arena, make the files, then serve the program; never returns."""
    import resource

    try:
        faulthandler.disable()  # a touch may kill this process with SIGSEGV: no traceback, no core
        gc.disable()
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        libc = _Libc()
        ctx: dict[str, Any] = {"pages": pages, "below": 0}
        # the zero page's PFN, to name its class
        ro = libc.sys(SYS_mmap, 0, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        libc.memchr(ro, ABSENT_BYTE, PAGE)
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(ro // PAGE * 8)
            entry = struct.unpack("<Q", f.read(8))[0]
        ctx["zero_pfn"] = entry & PM_PFN_MASK
        if heap:
            cur = libc.sys(SYS_brk, 0)
            base = (cur + PAGE - 1) // PAGE * PAGE
            libc.sys(SYS_brk, base)
            stat = (_read("/proc/self/stat") or "").rpartition(")")[2].split()
            ctx.update(base=base, brk=base, below=1, start_brk=int(stat[44]))
        else:
            size = arena_size(pages)
            r = libc.sys(SYS_mmap, ARENA_BASE, size, PROT_NONE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0)
            if r != ARENA_BASE:
                raise OracleError(f"cannot reserve the arena at {ARENA_BASE:#x}: {r}")
            for what in (libc.sys(SYS_madvise, ARENA_BASE, size, MADV_DONTDUMP),
                         libc.sys(SYS_munmap, WINDOW_BASE, pages * PAGE)):
                if what != 0:
                    raise OracleError(f"cannot carve the window: {what}")
            ctx.update(base=WINDOW_BASE, arena=(ARENA_BASE, ARENA_BASE + size))
        ctx["files"] = []
        for i in range(files):
            fd = os.memfd_create(f"mmspec{i}")
            os.ftruncate(fd, file_pages * PAGE)
            ctx["files"].append(fd)
        me = _Process(0, ctx, libc)  # opens maps and pagemap while still privileged
        if unprivileged:
            os.setgid(65534)
            os.setuid(65534)
        setup = {k: ctx[k] for k in ("base", "pages", "below")}
        setup.update(zero_pfn=ctx["zero_pfn"], files=[os.fstat(fd).st_ino for fd in ctx["files"]],
                     rlimit_memlock=resource.getrlimit(resource.RLIMIT_MEMLOCK)[0],
                     uid=os.getuid())
        if heap:
            setup.update(start_brk=ctx["start_brk"] - ctx["base"])
        else:
            setup.update(arena=list(ctx["arena"]))
        _send(setup_w, setup)
    except BaseException as exc:  # noqa: BLE001
        _send(setup_w, {"error": f"{type(exc).__name__}: {exc}"})
        os._exit(70)
    os.close(setup_w)
    _serve(0, ctx, pipes, {0} | tree.get(0, set()), tree, me)


# ---------------------------------------------------------------- placement


def placement(requests: Sequence[tuple[int, int | None, int, int]]) -> list[dict[str, Any]]:
    """For each ``(length, hint, prot, flags)``: the full maps just before, and mmap's answer.

    Runs in a fresh forked process.  The maps snapshot is read into a preallocated buffer
    directly before the call, so the interpreter does not map anything in between.
    """
    reason = unavailable()
    if reason:
        raise OracleError(reason)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            libc = _Libc()
            fd = os.open("/proc/self/maps", os.O_RDONLY)
            buf = bytearray(1 << 20)
            view = memoryview(buf)
            out = []
            for length, hint, prot, flags in requests:
                os.lseek(fd, 0, os.SEEK_SET)
                used = 0
                while True:
                    n = os.readv(fd, [view[used:]])
                    if n <= 0:
                        break
                    used += n
                ret = libc.sys(SYS_mmap, hint or 0, length, prot, flags, -1, 0)
                out.append({"maps": bytes(view[:used]).decode(), "ret": ret})
            _send(w, {"results": out})
        except BaseException as exc:  # noqa: BLE001
            _send(w, {"error": f"{type(exc).__name__}: {exc}"})
            code = 70
        finally:
            os._exit(code)
    os.close(w)
    try:
        reply = _LineReader(r).read(TIMEOUT)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    if reply is None or "error" in reply:
        raise OracleError(f"the placement process failed: {reply and reply.get('error')}")
    return reply["results"]
