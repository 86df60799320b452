"""The running kernel and CPU as an oracle for persistent memory.

Persistence itself cannot be observed without pulling the power, and this host has no NVDIMM.
What user space can observe, and these tests check against the spec:

- the CPU implements the instructions the model is written in (``clflush``, ``clflushopt``,
  ``clwb``, SSE2's ``movnti``, ``sfence``/``mfence``: /proc/cpuinfo flags), its CLFLUSH line
  size is the spec's ``CACHELINE``, and the instructions really execute (a child process runs
  them from an executable page) without changing what a load sees -- a flush moves data, never
  values, as the spec's ``load`` says;
- mmap's MAP_SYNC checks: for every combination of map type and MAP_SYNC on the file systems
  at hand (ext4, tmpfs) and on anonymous memory, :func:`spec.dax.mmap_flags` predicts the errno
  (``EOPNOTSUPP`` for MAP_SYNC on a file that is not DAX, ``EINVAL`` for anonymous
  MAP_SHARED_VALIDATE) or the success, and whether smaps shows ``sf`` (VM_SYNC);
- the nd bus's regions and their ``persistence_domain`` (ADR is ``memory_controller``, eADR
  ``cpu_cache``), when the host has any; and DAX mounts, when it has any.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mmspec.tally import tally
from spec import dax, pmem
from spec.errors import EINVAL, EOPNOTSUPP

pytestmark = pytest.mark.layer("oracle")

CPU_FLAG = {"clflush": "clflush", "clflushopt": "clflushopt", "clwb": "clwb", "nt_store": "sse2",
            "sfence": "sse", "mfence": "sse2"}


def _cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        pytest.skip("/proc/cpuinfo is not readable on this host")
    return path.read_text()


def _flags() -> set[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    pytest.skip("/proc/cpuinfo shows no flags line (not x86?)")


@pytest.mark.parametrize("kind", sorted(CPU_FLAG))
def test_cpu_implements_the_instruction(kind):
    flag = CPU_FLAG[kind]
    if flag not in _flags():
        pytest.skip(f"this CPU lacks {flag}: the model's {kind} cannot run here")
    assert kind in pmem.KINDS
    tally("cases")


def test_clflush_line_size_is_the_spec_cacheline():
    sizes = {int(line.split(":")[1]) for line in _cpuinfo().splitlines() if line.startswith("clflush size")}
    if not sizes:
        pytest.skip("/proc/cpuinfo has no 'clflush size' line")
    assert sizes == {pmem.CACHELINE}
    tally("cases")


# mov [rdi], rsi; clwb [rdi]; clflushopt [rdi]; clflush [rdi]; movnti [rdi+8], rsi;
# sfence; mfence; mov rax, [rdi]; add rax, [rdi+8]; ret
CODE = bytes.fromhex("488937" "660fae37" "660fae3f" "0fae3f" "480fc37708" "0faef8" "0faef0"
                     "488b07" "48034708" "c3")

CHILD = r"""
import ctypes, mmap, sys
code = bytes.fromhex(sys.argv[1])
buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buf.write(code)
addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
fn = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64)(addr)
data = (ctypes.c_int64 * 16)()
print(fn(ctypes.addressof(data), 21), data[0], data[1])
"""


def test_flush_and_fence_instructions_execute_and_keep_values():
    """The spec's instructions run on this CPU, and flushes never change what a load sees."""
    need = {"clwb", "clflushopt", "clflush", "sse2"}
    if not need <= _flags():
        pytest.skip(f"this CPU lacks {sorted(need - _flags())}")
    proc = subprocess.run([sys.executable, "-c", CHILD, CODE.hex()], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 and "PROT_EXEC" in proc.stderr + proc.stdout:
        pytest.skip("this host forbids executable anonymous mappings")
    assert proc.returncode == 0, f"the instructions faulted: rc {proc.returncode} {proc.stderr}"
    total, first, second = map(int, proc.stdout.split())
    s = pmem.init(pmem.PmemConfig(words=16))
    for op, args in [("store", (0, 21)), ("clwb", (0,)), ("clflushopt", (0,)), ("clflush", (0,)),
                     ("nt_store", (8, 21)), ("sfence", ()), ("mfence", ())]:
        s, _ = getattr(pmem, op)(s, 0, *args)
    s, x = pmem.load(s, 0, 0)
    s, y = pmem.load(s, 0, 8)
    assert (first, second, total) == (x, y, x + y)
    tally("cases")


# ---------------------------------------------------------------------------------------------
# MAP_SYNC

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FAILED = ctypes.c_void_p(-1).value
PROT_RW = 0x3

FLAG_CASES = {
    "MAP_SHARED": dax.MAP_SHARED,
    "MAP_SHARED|MAP_SYNC": dax.MAP_SHARED | dax.MAP_SYNC,
    "MAP_SHARED_VALIDATE": dax.MAP_SHARED_VALIDATE,
    "MAP_SHARED_VALIDATE|MAP_SYNC": dax.MAP_SHARED_VALIDATE | dax.MAP_SYNC,
    "MAP_PRIVATE|MAP_SYNC": dax.MAP_PRIVATE | dax.MAP_SYNC,
    "MAP_SHARED_VALIDATE|MAP_FIXED_NOREPLACE": dax.MAP_SHARED_VALIDATE | dax.MAP_FIXED_NOREPLACE,
}


def _fstype(path: str) -> tuple[str, bool]:
    """The file system type of the mount holding ``path``, and whether it is mounted with dax."""
    best, found = -1, ("", False)
    real = os.path.realpath(path)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        mnt, opts = fields[4], fields[5]
        fstype, super_opts = tail[0], tail[2] if len(tail) > 2 else ""
        if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) > best:
            best, found = len(mnt), (fstype, "dax" in (opts + "," + super_opts).split(","))
    return found


def _vmflags(addr: int) -> str:
    lines = Path("/proc/self/smaps").read_text().splitlines()
    start = f"{addr:x}-"
    for i, line in enumerate(lines):
        if line.startswith(start):
            for nxt in lines[i + 1 :]:
                if nxt.startswith("VmFlags:"):
                    return nxt.split(":", 1)[1].strip()
    return ""


def _try_mmap(fd: int, flags: int):
    """(errno name or None, VmFlags) of a one-page read-write mapping."""
    p = libc.mmap(None, 4096, PROT_RW, flags, fd, 0)
    if p in (None, MAP_FAILED):
        return errno.errorcode[ctypes.get_errno()], ""
    try:
        return None, _vmflags(p)
    finally:
        libc.munmap(p, 4096)


def _predicted(flags: int, fs: str | None, is_dax: bool):
    try:
        return None, dax.mmap_flags(flags, fs, is_dax)
    except EOPNOTSUPP:
        return "EOPNOTSUPP", None
    except EINVAL:
        return "EINVAL", None


DIRS = {"ext4": tempfile.gettempdir(), "tmpfs": "/dev/shm"}


@pytest.mark.parametrize("where", ["ext4", "tmpfs", "anonymous"])
@pytest.mark.parametrize("name", sorted(FLAG_CASES))
def test_mmap_map_sync_errno_and_vm_sync_match_the_spec(where, name):
    flags = FLAG_CASES[name]
    if where == "anonymous":
        if flags & dax.MAP_FIXED_NOREPLACE:
            pytest.skip("MAP_FIXED_NOREPLACE without an address is a placement test, not a flag check")
        fs, is_dax, fd = None, False, -1
        got = _try_mmap(-1, flags | dax.MAP_ANONYMOUS)
    else:
        directory = DIRS[where]
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
            pytest.skip(f"{directory} is not a writable directory here")
        fs, is_dax = _fstype(directory)
        if fs != where:
            pytest.skip(f"{directory} is {fs or 'unknown'}, not {where}, on this host")
        fd, path = tempfile.mkstemp(dir=directory)
        try:
            os.ftruncate(fd, 4096)
            got = _try_mmap(fd, flags)
        finally:
            os.close(fd)
            os.unlink(path)
    want_err, vm_sync = _predicted(flags, fs, is_dax)
    err, vmflags = got
    errname = {"ENOTSUP": "EOPNOTSUPP"}.get(err, err)
    assert errname == want_err, f"{name} on {where}: kernel {err}, spec {want_err}"
    if err is None:
        assert ("sf" in vmflags.split()) == vm_sync, f"{name} on {where}: VmFlags {vmflags!r}"
    tally("cases")


def test_map_sync_constants_match_the_c_headers():
    """MAP_SYNC and MAP_SHARED_VALIDATE as Python's mmap module knows them (3.13+), else the
    kernel's own answer: an unknown flag with MAP_SHARED_VALIDATE fails where MAP_SYNC does not."""
    import mmap

    known = {n: getattr(mmap, n) for n in ("MAP_SHARED", "MAP_PRIVATE") if hasattr(mmap, n)}
    assert known == {"MAP_SHARED": dax.MAP_SHARED, "MAP_PRIVATE": dax.MAP_PRIVATE}
    for n in ("MAP_SYNC", "MAP_SHARED_VALIDATE"):
        if hasattr(mmap, n):
            assert getattr(mmap, n) == getattr(dax, n)
    # anonymous MAP_SHARED|MAP_SYNC succeeds with VM_SYNC ("sf") only if 0x80000 is MAP_SYNC
    err, vmflags = _try_mmap(-1, dax.MAP_SHARED | dax.MAP_SYNC | dax.MAP_ANONYMOUS)
    assert err is None and "sf" in vmflags.split()
    tally("cases", 2)


# ---------------------------------------------------------------------------------------------
# NVDIMM regions and DAX mounts


def test_nd_regions_persistence_domain():
    bus = Path("/sys/bus/nd")
    if not bus.is_dir():
        pytest.skip("this kernel has no nd (NVDIMM) bus")
    regions = sorted(bus.glob("devices/region*"))
    if not regions:
        pytest.skip("the nd bus has no regions: this host has no NVDIMM / persistent memory")
    for r in regions:
        dom = (r / "persistence_domain").read_text().strip() if (r / "persistence_domain").exists() else ""
        assert dom in ("", "cpu_cache", "memory_controller"), f"{r.name}: {dom!r}"
        tally("cases")


def test_dax_mount_accepts_map_sync():
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if "dax" in line.split(" - ")[-1].split()[-1].split(",") or "dax" in line.split()[5].split(",")]
    if not mounts:
        pytest.skip("no file system is mounted with -o dax on this host")
    mnt = mounts[0].split()[4]
    if not os.access(mnt, os.W_OK):
        pytest.skip(f"the DAX mount {mnt} is not writable")
    fs, is_dax = _fstype(mnt)
    fd, path = tempfile.mkstemp(dir=mnt)
    try:
        os.ftruncate(fd, 4096)
        err, vmflags = _try_mmap(fd, dax.MAP_SHARED_VALIDATE | dax.MAP_SYNC)
    finally:
        os.close(fd)
        os.unlink(path)
    assert err is None and dax.mmap_flags(dax.MAP_SHARED_VALIDATE | dax.MAP_SYNC, fs, True) and "sf" in vmflags.split()
    tally("cases")
