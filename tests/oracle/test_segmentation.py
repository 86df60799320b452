"""The running processor and kernel as an oracle for segmentation.

User space on x86-64 Linux runs at CPL 3 and can make the processor itself check segments:
``MOV Sreg`` loads, ``LAR``/``LSL`` probes, and memory references through DS, SS (an
RBP-based operand) and GS.  These tests place a few instructions in an executable page and call
them through ctypes, in a forked child (so that changed segment registers, an LDT and the
signal handlers never touch the test process).  A fault is caught by a tiny signal handler,
also machine code, that records the trap number and error code the kernel saves in the signal
frame (``uc_mcontext.gregs[REG_TRAPNO]``, ``[REG_ERR]``) and resumes at a landing pad.  The
spec's prediction is then compared with:

- the selectors of this process (``__USER_CS`` 0x33, ``__USER_DS`` 0x2b, null DS/ES/FS/GS);
- ``LAR``/``LSL`` for every GDT selector (the kernel's GDT, as far as ring 3 can see it);
- the fault (vector and error code) or success of loading each GDT and LDT selector into DS,
  ES, SS and GS;
- the descriptors ``modify_ldt()`` writes (Linux's ``fill_ldt()``), read back byte for byte;
- the 64-bit rules: GS base used and no limit checked, DS base ignored, FS/GS bases through
  ``arch_prctl``, #GP(0) for a non-canonical DS or GS reference and #SS(0) for a stack one;
- whether loading a null selector clears the hidden base on this CPU.

A host that is not x86-64 Linux, or that refuses an executable mapping or ``modify_ldt``,
skips with the reason.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import struct
from pathlib import Path

import pytest

from mmspec.tally import tally
from spec import segmentation as seg
from spec.errors import MMError

pytestmark = pytest.mark.layer("oracle")

if platform.machine() != "x86_64" or platform.system() != "Linux":
    pytest.skip("segment probes need an x86-64 Linux host", allow_module_level=True)

SYS_MODIFY_LDT, SYS_ARCH_PRCTL = 154, 158
ARCH_SET_GS, ARCH_GET_GS = 0x1001, 0x1004
TRAP_PF = 14

# Machine code (System V: argument in rdi); each probe returns in rax.
PROBES = {
    "lar": "31c00f02c7740748c7c0ffffffffc3",  # xor eax,eax; lar eax,edi; jz ok; mov rax,-1; ok: ret
    "lsl": "31c00f03c7740748c7c0ffffffffc3",
    "mov_ds": "8edf31c0c3", "mov_es": "8ec731c0c3", "mov_ss": "8ed731c0c3", "mov_gs": "8eef31c0c3",
    "rd_cs": "8cc8c3", "rd_ss": "8cd0c3", "rd_ds": "8cd8c3", "rd_es": "8cc0c3", "rd_fs": "8ce0c3", "rd_gs": "8ce8c3",
    "ld": "488b07c3",  # mov rax,[rdi] (DS)
    "ld_gs": "65488b07c3",  # mov rax,gs:[rdi]
    "ld_rbp": "4989eb4889fd488b45004c89ddc3",  # mov r11,rbp; mov rbp,rdi; mov rax,[rbp] (SS); mov rbp,r11
}
LANDING = "48c7c0ffffffffc3"  # mov rax,-1; ret
LANDING_RBP = "4c89dd48c7c0ffffffffc3"  # mov rbp,r11; mov rax,-1; ret
NO_FAULT = 0xDEAD


class Probes:
    """An RWX page of probes and a SIGSEGV/SIGBUS handler that records (trapno, err)."""

    def __init__(self):
        self.libc = libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.syscall.restype = ctypes.c_long
        page = libc.mmap(None, 4096, 7, 0x22, -1, 0)
        if page in (None, ctypes.c_void_p(-1).value):
            raise OSError("no RWX mapping")
        self.page = page
        self.trap, self.err, self.land = page + 0x800, page + 0x808, page + 0x810
        self._put(0x100, bytes.fromhex(LANDING))
        self._put(0x120, bytes.fromhex(LANDING_RBP))
        handler = (bytes.fromhex("488b82c8000000") + b"\x48\xa3" + struct.pack("<Q", self.trap)
                   + bytes.fromhex("488b82c0000000") + b"\x48\xa3" + struct.pack("<Q", self.err)
                   + b"\x48\xa1" + struct.pack("<Q", self.land) + bytes.fromhex("488982a8000000") + b"\xc3")
        self._put(0x200, handler)
        self.fns, off = {}, 0x300
        for name, code in PROBES.items():
            self._put(off, bytes.fromhex(code))
            self.fns[name] = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_ulong)(page + off)
            off += 0x20

        class SigAction(ctypes.Structure):
            _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
                        ("restorer", ctypes.c_void_p)]

        act = SigAction()
        act.handler, act.flags = page + 0x200, 4  # SA_SIGINFO
        for signo in (11, 7):  # SIGSEGV (#GP, #PF), SIGBUS (#NP, #SS)
            if libc.sigaction(signo, ctypes.byref(act), None) != 0:
                raise OSError("sigaction failed")

    def _put(self, off: int, code: bytes) -> None:
        ctypes.memmove(self.page + off, code, len(code))

    def run(self, name: str, arg: int):
        """("ok", rax) or ("fault", trapno, err)."""
        ctypes.c_uint64.from_address(self.trap).value = NO_FAULT
        ctypes.c_uint64.from_address(self.land).value = self.page + (0x120 if name == "ld_rbp" else 0x100)
        rax = self.fns[name](arg) & seg.MASK64
        trap = ctypes.c_uint64.from_address(self.trap).value
        if trap == NO_FAULT:
            return ["ok", rax]
        return ["fault", trap, ctypes.c_uint64.from_address(self.err).value]

    def modify_ldt(self, func: int, data: bytes | ctypes.Array) -> int:
        ret = self.libc.syscall(SYS_MODIFY_LDT, func, data, len(data) if isinstance(data, bytes) else ctypes.sizeof(data))
        return ctypes.c_int(ret & 0xFFFFFFFF).value  # modify_ldt returns (unsigned int)ret

    def arch_prctl(self, code: int, arg) -> int:
        return self.libc.syscall(SYS_ARCH_PRCTL, code, arg)


def in_child(experiment):
    """Run ``experiment(probes)`` in a forked child; return its JSON result (or skip)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(read_fd)
            result = experiment(Probes())
        except OSError as exc:
            result, code = {"skip": str(exc)}, 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result, code = {"error": repr(exc)}, 1
        os.write(write_fd, json.dumps(result).encode())
        os._exit(code)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        pytest.fail(f"the probe child died with status {status:#x}")
    result = json.loads(b"".join(chunks))
    if isinstance(result, dict) and "skip" in result:
        pytest.skip(result["skip"])
    if isinstance(result, dict) and "error" in result:
        pytest.fail(result["error"])
    return result


def predicted(call, *args):
    """The spec's outcome in the probes' terms: ["ok", value] or ["fault", vector, error code]."""
    try:
        _, value = call(*args)
    except MMError as err:
        return ["fault", seg.fault_vector(err), getattr(err, "error_code", 0)]
    return ["ok", value]


def observed_as(outcome, value=0):
    """A probe outcome with the success value replaced (a load returns 0, a LAR its rights)."""
    return outcome if outcome[0] == "fault" else ["ok", value]


# ---------------------------------------------------------------------------------------------


def test_selectors_of_this_process():
    got = in_child(lambda p: [p.run(f"rd_{r.lower()}", 0)[1] for r in seg.SEG_NAMES])
    state = seg.init("linux-user")
    assert got == [r.selector for r in state.regs]  # ES 0, CS 0x33, SS 0x2b, DS 0, FS 0, GS 0
    assert seg.USER_CS == 0x33 and seg.USER_DS == 0x2B and seg.USER32_CS == 0x23
    tally("cases", len(got))


def _pinned_cpu() -> int:
    cpu = min(os.sched_getaffinity(0))
    node = next(Path("/sys/devices/system/cpu").glob(f"cpu{cpu}/node*"), None)
    return cpu, int(node.name[4:]) if node else 0


def test_lar_and_lsl_see_the_spec_gdt():
    cpu, node = _pinned_cpu()

    def probe(p):
        os.sched_setaffinity(0, {cpu})
        return [[p.run("lar", sel), p.run("lsl", sel)] for sel in range(0, 8 * (seg.GDT_ENTRIES + 2))]

    got = in_child(probe)
    state = seg.init(seg.SegConfig("live", True, 3, seg._linux_gdt(cpu, node), (), (0, 0x33, 0x2B, 0, 0, 0)))
    for sel, (lar_out, lsl_out) in enumerate(got):
        lar_want, lsl_want = seg.lar(state, sel)[1], seg.lsl(state, sel)[1]
        lar_got = None if lar_out[1] == seg.MASK64 else lar_out[1] & seg.LAR_MASK
        lsl_got = None if lsl_out[1] == seg.MASK64 else lsl_out[1]
        assert (lar_got, lsl_got) == (lar_want, lsl_want), f"selector {sel:#x}"
    tally("cases", 2 * len(got))


def test_gdt_loads_fault_as_the_spec_predicts():
    sels = list(range(0, 8 * (seg.GDT_ENTRIES + 2)))
    got = in_child(lambda p: [[observed_as(p.run(f"mov_{r}", sel)) for r in ("ds", "es", "gs", "ss")] for sel in sels])
    state = seg.init("linux-user")
    for sel, outcomes in zip(sels, got, strict=True):
        want = [observed_as(predicted(seg.load_segment, state, r, sel), None) for r in ("DS", "ES", "GS", "SS")]
        want = [w if w[0] == "fault" else ["ok", 0] for w in want]
        assert outcomes == want, f"selector {sel:#x}"
    tally("cases", 4 * len(sels))


LDT_ENTRIES = [
    seg.UserDesc(0, 0x1000, 0xFF),  # data, byte-granular
    seg.UserDesc(1, 0x2000, 0xFF, seg_not_present=1),  # not present
    seg.UserDesc(2, 0, 5, contents=3),  # present conforming code: refused
    seg.UserDesc(3, 0, 5, contents=3, seg_not_present=1),
    seg.UserDesc(4, 0x12345678, 0xABCDE, contents=1, limit_in_pages=1, useable=1),  # expand-down, G = 1
    seg.UserDesc(5, 0, 0xFFFFF, contents=2, limit_in_pages=1),  # code (readable)
    seg.UserDesc(6, 0, 0xFFFFF, contents=2, read_exec_only=1),  # execute-only code
    seg.UserDesc(7, 0x4000, 0xF, read_exec_only=1, seg_32bit=0),  # read-only data
]


def _write_ldt(p: Probes, info: seg.UserDesc) -> int:
    flags = (info.seg_32bit | info.contents << 1 | info.read_exec_only << 3 | info.limit_in_pages << 4
             | info.seg_not_present << 5 | info.useable << 6)
    return p.modify_ldt(0x11, struct.pack("<IIII", info.entry_number, info.base_addr, info.limit, flags))


def test_modify_ldt_writes_what_fill_ldt_says_and_loads_check_it():
    n = len(LDT_ENTRIES)

    def probe(p):
        empty = p.modify_ldt(0, bytes(8 * n))
        rets = [_write_ldt(p, info) for info in LDT_ENTRIES]
        buf = ctypes.create_string_buffer(8 * n)
        read = p.modify_ldt(0, buf)
        words = list(struct.unpack(f"<{n}Q", buf.raw[: 8 * n]))
        loads = [[observed_as(p.run(f"mov_{r}", (i << 3) | 7)) for r in ("ds", "ss")] for i in range(n)]
        probes = [[p.run("lar", (i << 3) | 7), p.run("lsl", (i << 3) | 7)] for i in range(n)]
        return {"empty": empty, "rets": rets, "read": read, "words": words, "loads": loads, "probes": probes}

    got = in_child(probe)
    if got["rets"][0] < 0:
        pytest.skip(f"modify_ldt refused to write (errno {-got['rets'][0]})")
    assert got["empty"] == 0  # modify_ldt(0) with no LDT reads nothing
    assert got["read"] == 8 * n
    ldt = []
    for info, ret, word in zip(LDT_ENTRIES, got["rets"], got["words"], strict=True):
        allowed = seg.ldt_entry_allowed(info)
        assert (ret == 0) == allowed, info
        assert word == (seg.fill_ldt(info) if allowed else 0), f"{info}: {word:#x}"
        ldt.append(word)
    state = seg.init(seg.SegConfig("live", True, 3, seg.LINUX_GDT, tuple(ldt), (0, 0x33, 0x2B, 0, 0, 0)))
    for i in range(n):
        sel = (i << 3) | 7
        want = [observed_as(predicted(seg.load_segment, state, r, sel), 0) for r in ("DS", "SS")]
        assert got["loads"][i] == want, f"LDT entry {i}"
        lar_out, lsl_out = got["probes"][i]
        lar_got = None if lar_out[1] == seg.MASK64 else lar_out[1] & seg.LAR_MASK
        lsl_got = None if lsl_out[1] == seg.MASK64 else lsl_out[1]
        assert (lar_got, lsl_got) == (seg.lar(state, sel)[1], seg.lsl(state, sel)[1]), f"LDT entry {i}"
    tally("cases", 4 * n)


def test_64bit_base_rules_and_canonical_faults():
    def probe(p):
        libc = p.libc
        buf = libc.mmap(None, 4096, 3, 0x22 | 0x40, -1, 0)  # MAP_32BIT: a base a descriptor can hold
        ctypes.c_uint64.from_address(buf + 0x800).value = 0xFEEDFACE
        if _write_ldt(p, seg.UserDesc(0, buf, 0)) != 0:  # base = buf, limit 0: one byte
            raise OSError("modify_ldt refused")
        out = {"buf": buf}
        out["ds"] = p.run("mov_ds", 0x7)
        out["ds_read"] = p.run("ld", buf + 0x800)  # DS base ignored: reads buf + 0x800 itself
        out["gs"] = p.run("mov_gs", 0x7)
        out["gs_read"] = p.run("ld_gs", 0x800)  # base + 0x800, far beyond the limit
        base = ctypes.c_ulong()
        p.arch_prctl(ARCH_GET_GS, ctypes.byref(base))
        out["gs_base"] = base.value
        top = (1 << 47) - 0x2000  # below TASK_SIZE_MAX
        out["set_gs"] = p.arch_prctl(ARCH_SET_GS, ctypes.c_ulong(top))
        out["gs_canonical"] = p.run("ld_gs", 0x1FF8)  # last canonical qword: unmapped -> #PF
        out["gs_noncanonical"] = p.run("ld_gs", 0x2000)
        out["ds_noncanonical"] = p.run("ld", 1 << 47)
        out["ss_noncanonical"] = p.run("ld_rbp", 1 << 47)
        out["kernel_half"] = p.run("ld", 0xFFFF800000000000)  # canonical: #PF, not #GP
        return out

    got = in_child(probe)
    buf = got["buf"]
    cfg = seg.PRESETS["linux-user"]
    state = seg.init(seg.SegConfig("live", True, 3, cfg.gdt, (seg.fill_ldt(seg.UserDesc(0, buf, 0)),), cfg.selectors))
    state, _ = seg.load_segment(state, "DS", 0x7)
    assert got["ds"] == ["ok", 0]
    assert seg.access(state, "DS", buf + 0x800, 8, "read")[1] == buf + 0x800
    assert got["ds_read"] == ["ok", 0xFEEDFACE]
    state, _ = seg.load_segment(state, "GS", 0x7)
    assert got["gs"] == ["ok", 0] and got["gs_base"] == buf == state.regs[seg.GS].base
    assert seg.access(state, "GS", 0x800, 8, "read")[1] == buf + 0x800 and got["gs_read"] == ["ok", 0xFEEDFACE]
    assert got["set_gs"] == 0
    state, _ = seg.write_base(state, "GS", (1 << 47) - 0x2000)
    assert predicted(seg.access, state, "GS", 0x1FF8, 8, "read")[0] == "ok"
    assert got["gs_canonical"][:2] == ["fault", TRAP_PF]  # segmentation passed it on to paging
    assert got["gs_noncanonical"] == predicted(seg.access, state, "GS", 0x2000, 8, "read")  # #GP(0)
    assert got["ds_noncanonical"] == predicted(seg.access, state, "DS", 1 << 47, 8, "read")  # #GP(0)
    assert got["ss_noncanonical"] == predicted(seg.access, state, "SS", 1 << 47, 8, "read")  # #SS(0)
    assert predicted(seg.access, state, "DS", 0xFFFF800000000000, 8, "read")[0] == "ok"
    assert got["kernel_half"][:2] == ["fault", TRAP_PF]
    tally("cases", 12)


def test_null_selector_and_the_hidden_base():
    """Loading a null selector into GS clears the hidden base on Intel and on AMD from Zen 3
    (CPUID 0x80000021 EAX bit 6, NullSelectorClearsBase) and keeps it on older AMD (Linux's
    X86_BUG_NULL_SEG): ``null_clears_base`` in the spec's config.  Linux sets the bug flag
    whenever that CPUID bit is absent, which a virtual machine may hide even when the processor
    clears the base, so the flag does not decide the case: the test checks that the processor
    does one of the two things the spec models, and which one."""

    def probe(p):
        buf = p.libc.mmap(None, 4096, 3, 0x22 | 0x40, -1, 0)
        if _write_ldt(p, seg.UserDesc(0, buf, 0xFFF)) != 0:
            raise OSError("modify_ldt refused")
        loaded, nulled = p.run("mov_gs", 0x7), p.run("mov_gs", 0)
        base = ctypes.c_ulong()
        p.arch_prctl(ARCH_GET_GS, ctypes.byref(base))
        return {"buf": buf, "loaded": loaded, "nulled": nulled, "base": base.value}

    got = in_child(probe)
    assert got["loaded"] == got["nulled"] == ["ok", 0]
    cfg = seg.PRESETS["linux-user"]
    outcomes = {}
    for clears in (True, False):
        live = seg.SegConfig("live", True, 3, cfg.gdt, (seg.fill_ldt(seg.UserDesc(0, got["buf"], 0xFFF)),),
                             cfg.selectors, null_clears_base=clears)
        state, _ = seg.load_segment(seg.init(live), "GS", 0x7)
        state, _ = seg.load_segment(state, "GS", 0)
        outcomes[clears] = state.regs[seg.GS].base
    assert outcomes[True] != outcomes[False]
    assert got["base"] in outcomes.values(), f"GS base {got['base']:#x} after a null load"
    tally("cases", 1)
