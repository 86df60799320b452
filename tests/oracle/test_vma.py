"""The running kernel as an oracle for VMAs: merge and split rules, errnos, placement, brk, mlock.

Each hand scenario is a program on a guarded window of the live kernel (see
:mod:`mmspec.livekernel`) with the results ``kernel-oracle.md`` recorded on this kernel written
next to its steps (sections 1, 8, 9, 10 and "Further observations").  The kernel must show them
-- a check of the driver as much as of the facts -- and then :mod:`spec.vma` runs the same
program in an address space seeded with the same layout and must agree with the kernel after
every step: return value or errno, the VMA list of the window as ``(start_page, end_page,
perms, kind)``, and the VmFlags of each VMA.

The randomly generated programs (about 20 steps over 16 pages: mmap, mprotect, munmap,
mremap, madvise, mlock, munlock, touch) are compared with the spec step by step; each is also
run twice on the kernel, which must give the same observations (the oracle is deterministic).
A divergence fails the test with the step and both ``maps`` listings.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmspec import livekernel as lk
from mmspec import oracle_spec as osp
from mmspec.oracle_spec import M, scenario
from mmspec.profiles import by_profile
from mmspec.tally import tally
from spec.mman import (
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MADV_NORMAL,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_RANDOM,
    MADV_SEQUENTIAL,
    MADV_WIPEONFORK,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_HUGETLB,
    MAP_LOCKED,
    MAP_PRIVATE,
    MAP_SHARED,
    MAP_SHARED_VALIDATE,
    MAP_SYNC,
    MLOCK_ONFAULT,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
)

pytestmark = pytest.mark.layer("oracle")

R, RW, RWX = PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_WRITE | PROT_EXEC
PA = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
SA = MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
PF = MAP_PRIVATE | MAP_FIXED_NOREPLACE
SF = MAP_SHARED | MAP_FIXED_NOREPLACE
MOVE = MREMAP_MAYMOVE | MREMAP_FIXED
SEC1 = "kernel-oracle.md section 1"


def W(off, n):
    return ("touch", off, n, True)


def Rd(off, n):
    return ("touch", off, n, False)


def skip_unless_available(family=None):
    reason = lk.unavailable()
    if reason:
        if family:
            osp.record(family, osp.SKIPPED, reason)
        pytest.skip(reason)


def outside(obs):
    return isinstance(obs["ret"], int) and not 0 <= obs["ret"] < 16


# ---------------------------------------------------------------- section 1: merge and split

MERGE = [
    scenario("A", "vma-merge",
             (("mmap", 0, 8, RW, PA), {"ret": 0, "maps": M("0-8 rw-p")}),
             (("mprotect", 3, 2, R), {"ret": 0, "maps": M("0-3 rw-p", "3-5 r--p", "5-8 rw-p")}),
             (("mprotect", 3, 2, RW), {"ret": 0, "maps": M("0-8 rw-p")}), source=SEC1),
    scenario("A-touched", "vma-merge", ("mmap", 0, 8, RW, PA), W(0, 8),
             (("mprotect", 3, 2, R), {"maps": M("0-3 rw-p", "3-5 r--p", "5-8 rw-p")}),
             (("mprotect", 3, 2, RW), {"maps": M("0-8 rw-p")}), source=SEC1),
    scenario("C", "vma-merge", ("mmap", 0, 8, RW, PA), ("mprotect", 3, 2, R), W(0, 3),
             (("mprotect", 3, 2, RW), {"maps": M("0-8 rw-p")}), source=SEC1),
    scenario("D", "vma-merge", ("mmap", 0, 8, RW, PA), ("mprotect", 3, 2, R), W(0, 1), W(5, 1),
             (("mprotect", 3, 2, RW), {"maps": M("0-5 rw-p", "5-8 rw-p")}), source=SEC1),
    scenario("D2", "vma-merge", ("mmap", 0, 8, RW, PA), ("mprotect", 3, 2, R), W(0, 1), W(5, 1),
             (("mprotect", 4, 1, RW), {"maps": M("0-3 rw-p", "3-4 r--p", "4-8 rw-p")}),
             source=SEC1),
    scenario("E-above", "vma-merge", ("mmap", 0, 4, RW, PA), W(0, 4),
             (("mmap", 4, 4, RW, PA), {"ret": 4, "maps": M("0-8 rw-p")}), source=SEC1),
    scenario("E-below", "vma-merge", ("mmap", 4, 4, RW, PA), W(4, 4),
             (("mmap", 0, 4, RW, PA), {"ret": 0, "maps": M("0-8 rw-p")}), source=SEC1),
    scenario("E-untouched", "vma-merge", ("mmap", 4, 4, RW, PA),
             (("mmap", 0, 4, RW, PA), {"maps": M("0-8 rw-p")}), source=SEC1),
    scenario("H", "vma-merge", ("mmap", 0, 4, RW, PA), W(0, 4), ("mmap", 6, 4, RW, PA), W(6, 4),
             (("mmap", 4, 2, RW, PA), {"maps": M("0-6 rw-p", "6-10 rw-p")}), source=SEC1),
    scenario("H2", "vma-merge", ("mmap", 0, 4, RW, PA), W(0, 4), ("mmap", 6, 4, RW, PA),
             (("mmap", 4, 2, RW, PA), {"maps": M("0-10 rw-p")}), source=SEC1),
    scenario("I", "vma-merge", ("mmap", 0, 4, RW, PA), W(0, 4), ("mmap", 4, 4, R, PA),
             (Rd(4, 4), {"maps": M("0-4 rw-p", "4-8 r--p")}),
             (("mprotect", 4, 4, RW), {"maps": M("0-8 rw-p")}), source=SEC1),
    scenario("J", "vma-merge", ("mmap", 0, 8, RW, PA), W(0, 8),
             (("munmap", 3, 2), {"ret": 0, "maps": M("0-3 rw-p", "5-8 rw-p")}),
             (("mmap", 3, 2, RW, PA), {"maps": M("0-8 rw-p")}), source=SEC1),
    scenario("J-untouched", "vma-merge", ("mmap", 0, 8, RW, PA),
             (("munmap", 3, 2), {"maps": M("0-3 rw-p", "5-8 rw-p")}),
             (("mmap", 3, 2, RW, PA), {"maps": M("0-8 rw-p")}), source=SEC1),
    scenario("K", "vma-merge", ("mmap", 0, 4, RW, PA), W(0, 4),
             (("mremap", 0, 4, 8, 0, 0), {"ret": 0, "maps": M("0-8 rw-p")}),
             (("mremap", 0, 8, 3, 0, 0), {"ret": 0, "maps": M("0-3 rw-p")}), source=SEC1),
    scenario("K2", "vma-merge", ("mmap", 0, 4, RW, PA), W(0, 4), ("mmap", 4, 1, R, PA),
             (("mremap", 0, 4, 8, 0, 0), {"ret": "ENOMEM", "maps": M("0-4 rw-p", "4-5 r--p")}),
             (("mremap", 0, 4, 8, MREMAP_MAYMOVE, 0),
              {"maps": M("4-5 r--p"), "check": outside, "says": "moved out of the window"}),
             source=SEC1),
    scenario("L", "vma-merge", ("mmap", 0, 4, RW, PA), W(0, 4), ("mmap", 6, 4, RW, PA),
             (("mremap", 0, 4, 6, 0, 0), {"ret": 0, "maps": M("0-10 rw-p")}), source=SEC1),
    scenario("L-touched", "vma-merge", ("mmap", 0, 4, RW, PA), W(0, 4), ("mmap", 6, 4, RW, PA),
             W(6, 4), (("mremap", 0, 4, 6, 0, 0), {"ret": 0, "maps": M("0-6 rw-p", "6-10 rw-p")}),
             source=SEC1),
    scenario("M", "vma-merge", ("mmap", 0, 4, RW, PA), W(0, 4), ("mmap", 10, 4, RW, PA),
             (("mremap", 10, 4, 4, MOVE, 4), {"ret": 4, "maps": M("0-8 rw-p")}), source=SEC1),
    scenario("M-untouched", "vma-merge", ("mmap", 0, 4, RW, PA), ("mmap", 10, 4, RW, PA),
             (("mremap", 10, 4, 4, MOVE, 4), {"ret": 4, "maps": M("0-8 rw-p")}), source=SEC1),
    scenario("M-touched", "vma-merge", ("mmap", 0, 4, RW, PA), ("mmap", 10, 4, RW, PA), W(10, 4),
             (("mremap", 10, 4, 4, MOVE, 4), {"ret": 4, "maps": M("0-4 rw-p", "4-8 rw-p")}),
             source=SEC1),
    scenario("N", "vma-merge",
             (("mmap", 12, 4, RW, PA | MAP_GROWSDOWN), {"vmflags": {12: "gd"}}),
             (("mmap", 8, 4, RW, PA), {"ret": 8, "maps": M("8-12 rw-p", "12-16 rw-p")}),
             source=SEC1),
    scenario("N-grow", "vma-merge", ("mmap", 12, 4, RW, PA | MAP_GROWSDOWN),
             (W(11, 1), {"ret": 0, "maps": M("11-16 rw-p")}),
             (Rd(5, 1), {"ret": 0, "maps": M("5-16 rw-p")}),
             (("mmap", 3, 2, RW, PA), {"maps": M("3-5 rw-p", "5-16 rw-p")}),
             (("mprotect", 3, 2, RW), {"maps": M("3-5 rw-p", "5-16 rw-p")}),
             source=SEC1 + " N and Further observations (stack growth)"),
    scenario("N-hint-256", "vma-merge", ("mmap", 590, 10, RW, PA | MAP_GROWSDOWN),
             (("mmap", 330, 4, RW, MAP_PRIVATE | MAP_ANONYMOUS), {"ret": 330}),
             pages=600, source=SEC1 + " N (a hint 256 pages below is honoured)"),
    scenario("N-hint-255", "vma-merge", ("mmap", 590, 10, RW, PA | MAP_GROWSDOWN),
             (("mmap", 331, 4, RW, MAP_PRIVATE | MAP_ANONYMOUS),
              {"check": lambda o: not 0 <= o["ret"] < 600, "says": "the hint is not honoured"}),
             pages=600, source=SEC1 + " N (a hint 255 pages below is rejected)"),
    scenario("O", "vma-merge", ("mmap", 0, 4, RW, SA), ("mmap", 4, 4, RW, SA),
             (("mmap", 8, 4, RW, PA), {"maps": M("0-4 rw-s shmem", "4-8 rw-s shmem", "8-12 rw-p")}),
             (("mprotect", 1, 1, R), {"maps": M("0-1 rw-s shmem", "1-2 r--s shmem",
                                                "2-4 rw-s shmem", "4-8 rw-s shmem", "8-12 rw-p")}),
             (("mprotect", 1, 1, RW), {"maps": M("0-4 rw-s shmem", "4-8 rw-s shmem", "8-12 rw-p")}),
             source=SEC1),
    scenario("P-shared", "vma-merge", ("mmap_file", 0, 4, RW, SF, 0, 0),
             (("mmap_file", 4, 4, RW, SF, 0, 4), {"maps": M("0-8 rw-s file")}), source=SEC1),
    scenario("P-private", "vma-merge", ("mmap_file", 0, 4, RW, PF, 0, 0), W(0, 1),
             (("mmap_file", 4, 4, RW, PF, 0, 4), {"maps": M("0-8 rw-p file")}), source=SEC1),
    scenario("P-gap", "vma-merge", ("mmap_file", 0, 4, RW, SF, 0, 0),
             (("mmap_file", 4, 4, RW, SF, 0, 5), {"maps": M("0-4 rw-s file", "4-8 rw-s file")}),
             source=SEC1),
    scenario("P-other-file", "vma-merge", ("mmap_file", 0, 4, RW, SF, 0, 0),
             (("mmap_file", 4, 4, RW, SF, 1, 4), {"maps": M("0-4 rw-s file", "4-8 rw-s file")}),
             source=SEC1),
    scenario("Q-dontfork", "vma-merge", ("mmap", 0, 8, RW, PA),
             (("madvise", 3, 2, MADV_DONTFORK),
              {"maps": M("0-3 rw-p", "3-5 rw-p", "5-8 rw-p"), "vmflags": {3: "dc", 0: "!dc"}}),
             (("madvise", 3, 2, MADV_DOFORK), {"maps": M("0-8 rw-p")}), source=SEC1),
    scenario("Q-hugepage", "vma-merge", ("mmap", 0, 8, RW, PA),
             (("madvise", 3, 2, MADV_HUGEPAGE),
              {"maps": M("0-3 rw-p", "3-5 rw-p", "5-8 rw-p"), "vmflags": {3: "hg"}}),
             (("madvise", 3, 2, MADV_NOHUGEPAGE),
              {"maps": M("0-3 rw-p", "3-5 rw-p", "5-8 rw-p"), "vmflags": {3: "nh"}}),
             source=SEC1),
    scenario("Q-dontneed", "vma-merge", ("mmap", 0, 8, RW, PA), W(0, 8),
             (("madvise", 3, 2, MADV_DONTNEED), {"ret": 0, "maps": M("0-8 rw-p")}), source=SEC1),
    scenario("Q-mlock", "vma-merge", ("mmap", 0, 8, RW, PA),
             (("mlock", 3, 2), {"maps": M("0-3 rw-p", "3-5 rw-p", "5-8 rw-p"), "vmflags": {3: "lo"}}),
             (("munlock", 3, 2), {"maps": M("0-8 rw-p")}), source=SEC1),
    scenario("Q-advice-flags", "vma-merge", ("mmap", 0, 8, RW, PA),
             (("madvise", 0, 2, MADV_RANDOM), {"vmflags": {0: "rr"}}),
             (("madvise", 6, 2, MADV_SEQUENTIAL), {"vmflags": {6: "sr"}}),
             ("madvise", 2, 2, MADV_WIPEONFORK),
             (("madvise", 0, 8, MADV_NORMAL), {"vmflags": {0: "!rr", 6: "!sr", 2: "wf"}}),
             ("madvise", 0, 8, MADV_DODUMP), source="VmFlags mnemonics of madvise"),
    scenario("R", "vma-merge", ("mmap", 0, 5, RW, PA), W(0, 5),
             (("mmap", 5, 4, RWX, PA), {"maps": M("0-5 rw-p", "5-9 rwxp")}), W(5, 4),
             (("mprotect", 5, 4, RW), {"maps": M("0-9 rw-p")}), source=SEC1),
    scenario("S-child-touched", "vma-merge", ("mmap", 0, 4, RW, PA), W(0, 4), ("fork",),
             (("in", 1, ("mmap", 4, 4, RW, PA)), {"procs": {1: M("0-4 rw-p", "4-8 rw-p"),
                                                         0: M("0-4 rw-p")}}), source=SEC1),
    scenario("S-child-untouched", "vma-merge", ("mmap", 0, 4, RW, PA), ("fork",),
             (("in", 1, ("mmap", 4, 4, RW, PA)), {"procs": {1: M("0-8 rw-p")}}), source=SEC1),
    scenario("S-child-split", "vma-merge", ("mmap", 0, 8, RW, PA), W(0, 8), ("fork",),
             ("in", 1, ("mprotect", 3, 2, R)),
             (("in", 1, ("mprotect", 3, 2, RW)), {"procs": {1: M("0-8 rw-p")}}), source=SEC1),
    scenario("S-parent", "vma-merge", ("mmap", 0, 4, RW, PA), W(0, 4), ("fork",),
             (("mmap", 4, 4, RW, PA), {"procs": {0: M("0-8 rw-p"), 1: M("0-4 rw-p")}}),
             source=SEC1),
    scenario("S-dontfork", "vma-merge", ("mmap", 0, 4, RW, PA), ("mmap", 8, 4, RW, PA),
             ("madvise", 8, 4, MADV_DONTFORK),
             (("fork",), {"procs": {0: M("0-4 rw-p", "8-12 rw-p"), 1: M("0-4 rw-p")}}),
             source="kernel-oracle.md section 4 (DONTFORK)"),
]

FURTHER = "kernel-oracle.md Further observations"
ERRNO = [
    scenario("noreplace-occupied", "vma-errno", ("mmap", 0, 4, RW, PA),
             (("mmap", 2, 4, RW, PA), {"ret": "EEXIST", "maps": M("0-4 rw-p")}),
             (("mmap", 2, 4, RW, MAP_ANONYMOUS | MAP_FIXED_NOREPLACE), {"ret": "EEXIST"}),
             (("mmap", 2, 4, RW, MAP_SHARED_VALIDATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_SYNC),
              {"ret": "EEXIST"}),
             (("mmap", 2, 4, RW, SA | MAP_GROWSDOWN), {"ret": "EEXIST"}),
             (("mmap", 2, 0, RW, PA), {"ret": "EINVAL"}),
             (("mmap", 2, 4, RW, PA | MAP_HUGETLB), {"ret": "EINVAL"}),
             source=FURTHER + " (errno precedence)"),
    scenario("fixed-replaces", "vma-errno", ("mmap", 0, 8, RW, PA), W(0, 8),
             (("mmap", 2, 4, R, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED),
              {"ret": 2, "maps": M("0-2 rw-p", "2-6 r--p", "6-8 rw-p")}),
             source="MAP_FIXED replaces what was there"),
    scenario("populate-errors", "vma-errno", ("mmap", 0, 4, R, PA), ("mmap", 8, 2, RW, PA),
             (("madvise", 0, 4, MADV_POPULATE_WRITE), {"ret": "EINVAL"}),
             (("madvise", 8, 4, MADV_POPULATE_WRITE), {"ret": "ENOMEM"}),
             (("madvise", 0, 4, MADV_POPULATE_READ), {"ret": 0}),
             source=FURTHER + " (MADV_POPULATE_READ/WRITE)"),
    scenario("mremap-dup", "vma-errno", ("mmap", 0, 4, RW, PA),
             (("mremap", 0, 0, 4, MOVE, 8), {"ret": "EINVAL", "maps": M("0-4 rw-p")}),
             source=FURTHER + " (mremap old length 0 on a private mapping)"),
    scenario("dontunmap-shared", "vma-merge", ("mmap", 0, 4, RW, SA),
             (("mremap", 0, 4, 4, MOVE | MREMAP_DONTUNMAP, 8),
              {"ret": 8, "maps": M("0-4 rw-s shmem", "8-12 rw-s shmem")}),
             source=FURTHER + " (MREMAP_DONTUNMAP works on shared and memfd mappings)"),
    scenario("dontunmap-memfd", "vma-merge", ("mmap_file", 0, 4, RW, SF, 0, 0),
             (("mremap", 0, 4, 4, MOVE | MREMAP_DONTUNMAP, 8),
              {"ret": 8, "maps": M("0-4 rw-s file", "8-12 rw-s file")}),
             source=FURTHER + " (MREMAP_DONTUNMAP works on shared and memfd mappings)"),
    scenario("mremap-dup-shared", "vma-merge", ("mmap", 0, 4, RW, SA),
             (("mremap", 0, 0, 4, MOVE, 8), {"ret": 8, "maps": M("0-4 rw-s shmem", "8-12 rw-s shmem")}),
             source=FURTHER + " (an old length of 0 duplicates a shared mapping)"),
    scenario("mremap-move-several", "vma-merge", ("mmap", 0, 2, RW, PA), ("mmap", 3, 2, R, PA),
             (("mremap", 0, 6, 6, MOVE, 8), {"ret": 8, "maps": M("8-10 rw-p", "11-13 r--p")}),
             source="mm/mremap.c remap_move() (6.17+): a MREMAP_FIXED move of unchanged length "
                    "takes every VMA of the range, keeping the holes between them"),
    scenario("mremap-move-gap-first", "vma-errno", ("mmap", 1, 2, RW, PA), ("mmap", 3, 2, R, PA),
             (("mremap", 0, 6, 6, MOVE, 8), {"ret": "EFAULT", "maps": M("1-3 rw-p", "3-5 r--p")}),
             source="mm/mremap.c remap_move(): no hole at the start of the range"),
    scenario("mremap-in-place-over-hole", "vma-errno", ("mmap", 0, 2, RW, PA),
             (("mremap", 0, 6, 6, 0, 0), {"ret": 0, "maps": M("0-2 rw-p")}),
             (("mremap", 0, 6, 2, 0, 0), {"ret": 0, "maps": M("0-2 rw-p")}),
             (("mremap", 0, 6, 8, 0, 0), {"ret": "EFAULT", "maps": M("0-2 rw-p")}),
             source="mm/mremap.c mremap_at(): no resize and shrink need only a VMA at addr"),
    scenario("holes", "vma-errno",
             (("mprotect", 0, 4, R), {"ret": "ENOMEM"}),
             (("mlock", 0, 4), {"ret": "ENOMEM"}),
             (("munmap", 0, 4), {"ret": 0}),
             (("mremap", 0, 4, 8, 0, 0), {"ret": "EFAULT"}),
             ("madvise", 0, 4, MADV_DONTNEED),
             source="system calls on a range with no VMA"),
]

# ---------------------------------------------------------------- section 9: brk
SEC9 = "kernel-oracle.md section 9"
_BRK = (1, 4095, 1, 4096, 4097, 10000, 65536, -65536, -4097, -1, -10000)
_ENDS = (1, 1, 2, 3, 4, 6, 22, 6, 5, 5, 2)


def _brk_steps():
    steps, total = [], 0
    for delta, end in zip(_BRK, _ENDS, strict=True):
        total += delta
        steps.append((("brk", delta), {"ret": total, "minflt": 0,
                                       "maps": M("-1-0 rw-p", f"0-{end} rw-p")}))
    return steps


BRK = [
    scenario("brk-sequence", "brk", *_brk_steps(), heap=True, pages=32, source=SEC9),
    scenario("brk-touch", "brk", (("brk", 16 * 4096), {"ret": 65536, "minflt": 0}),
             (W(0, 16), {"minflt": 16, "pagemap": {0: (1, 1, 0, "P0")}}),
             (("brk", -16 * 4096), {"ret": 0, "maps": M("-1-0 rw-p")}),
             (("brk", 16 * 4096), {"ret": 65536, "pagemap": {0: (0, 0, 0, "none")}}),
             (Rd(0, 16), {"minflt": 16, "pagemap": {0: (1, 0, 0, "zero")}}),
             heap=True, pages=32, fields=("ret", "maps", "minflt", "pagemap"), source=SEC9),
    scenario("brk-blocked", "brk", ("mmap", 20, 4, RW, PA),
             (("brk", 24 * 4096), {"ret": 0, "maps": M("-1-0 rw-p", "20-24 rw-p")}),
             (("brk", 19 * 4096), {"ret": 19 * 4096, "maps": M("-1-0 rw-p", "0-19 rw-p",
                                                                "20-24 rw-p")}),
             (("brk", 4096), {"ret": 19 * 4096}),  # brk keeps a page free below the next VMA
             (("brk", -(1 << 40)), {"ret": 19 * 4096}),
             heap=True, pages=32, source=SEC9 + " (brk into the next mapping, below the heap)"),
]

# ---------------------------------------------------------------- section 10: mlock
SEC10 = "kernel-oracle.md section 10"
MLOCK = [
    scenario("mlock-split", "mlock", ("mmap", 0, 8, RW, PA),
             (("mlock", 2, 3), {"ret": 0, "minflt": 3, "maps": M("0-2 rw-p", "2-5 rw-p", "5-8 rw-p"),
                                "smaps": {0: (0, 0), 2: (12, 12), 5: (0, 0)}}),
             (("munlock", 2, 3), {"maps": M("0-8 rw-p"), "smaps": {0: (12, 0)}}),
             fields=("ret", "maps", "vmflags", "minflt", "pagemap"), source=SEC10),
    scenario("map-locked", "mlock",
             (("mmap", 0, 64, RW, PA | MAP_LOCKED), {"minflt": 64, "vmflags": {0: "lo"},
                                                     "smaps": {0: (256, 256)}}),
             pages=64, fields=("ret", "maps", "vmflags", "minflt", "pagemap"), source=SEC10),
    scenario("mlock2-onfault", "mlock", ("mmap", 0, 16, RW, PA),
             (("mlock2", 0, 16, MLOCK_ONFAULT), {"ret": 0, "minflt": 0, "vmflags": {0: "lf"},
                                                  "smaps": {0: (0, 0)}}),
             (W(0, 10), {"minflt": 10, "smaps": {0: (40, 40)}}),
             fields=("ret", "maps", "vmflags", "minflt", "pagemap"), source=SEC10),
    scenario("mlock-readonly", "mlock", ("mmap", 0, 16, R, PA),
             (("mlock", 0, 16), {"ret": 0, "minflt": 16, "smaps": {0: (0, 0)},
                                 "pagemap": {0: (1, 0, 0, "zero"), 15: (1, 0, 0, "zero")}}),
             fields=("ret", "maps", "vmflags", "minflt", "pagemap"), source=SEC10),
    scenario("mlock-16MiB-root", "mlock", ("mmap", 0, 4096, RW, PA),
             (("mlock", 0, 4096), {"ret": 0, "minflt": 4096, "smaps": {0: (16384, 16384)}}),
             (("munlock", 0, 4096), {"ret": 0, "smaps": {0: (16384, 0)}}),
             (W(0, 4096), {"minflt": 0}),
             # compared at the VMA level: 4096 pages through the paging spec take minutes
             pages=4096, fields=("ret", "maps", "vmflags"), source=SEC10),
    scenario("mlock-not-inherited", "mlock", ("mmap", 0, 4, RW, PA), ("mlock", 0, 4),
             (("fork",), {"procs": {0: M("0-4 rw-p"), 1: M("0-4 rw-p")}, "vmflags": {0: "lo"}}),
             source=SEC10 + " (locks are not inherited across fork)"),
]
MLOCK_UNPRIVILEGED = [
    scenario("mlock-limit", "mlock", ("mmap", 0, 4096, RW, PA),
             (("mlock", 0, 4096), {"ret": "ENOMEM"}),
             (("mlock", 0, 1024), {"ret": 0}),
             (("mlock", 1024, 1024), {"ret": 0}),
             (("mlock", 2048, 1), {"ret": "ENOMEM"}),
             (("mmap", 4095, 1, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_LOCKED),
              {"ret": "EAGAIN"}),
             pages=4096, unprivileged=True, fields=("ret", "maps", "vmflags"), source=SEC10),
]


def _unprivileged_reason():
    host = lk.host_config()
    if host["uid"] != 0 or not host["cap_setuid"]:
        return "the unprivileged mlock branch needs root to setuid(65534) in the runner"
    if host["rlimit_memlock"] != 8 << 20:
        return (f"the scenario's numbers assume RLIMIT_MEMLOCK = 8 MiB; this host has "
                f"{host['rlimit_memlock']}")
    return None


SCENARIOS = MERGE + ERRNO + BRK + MLOCK


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(sc):
    skip_unless_available(sc.family)
    if sc.name == "mlock-16MiB-root" and not lk.host_config()["cap_ipc_lock"]:
        osp.record(sc.family, osp.SKIPPED, "no CAP_IPC_LOCK")
        pytest.skip("mlock beyond RLIMIT_MEMLOCK needs CAP_IPC_LOCK")
    _, divergence = osp.run_scenario(sc)
    assert divergence is None, divergence


@pytest.mark.parametrize("sc", MLOCK_UNPRIVILEGED, ids=[s.name for s in MLOCK_UNPRIVILEGED])
def test_unprivileged_scenario(sc):
    skip_unless_available(sc.family)
    reason = _unprivileged_reason()
    if reason:
        osp.record(sc.family, osp.SKIPPED, reason)
        pytest.skip(reason)
    _, divergence = osp.run_scenario(sc)
    assert divergence is None, divergence


# ---------------------------------------------------------------- section 8: placement


def test_host_configuration_is_read_and_recorded():
    """The oracle reads the configuration it depends on rather than assuming it."""
    skip_unless_available()
    host = lk.host_config()
    assert host["page_size"] == 4096
    assert host["thp_enabled"] in ("always", "madvise", "never")
    assert host["overcommit_memory"] in (0, 1, 2)
    assert host["kernel"]
    run = lk.run([("mmap", 0, 1, RW, PA)])
    assert run.host["kernel"] == host["kernel"] and run.setup["base"] == lk.WINDOW_BASE
    tally("cases", 4)


def test_placement_is_top_down_first_fit():
    """Section 8: an un-hinted mmap takes the top of the highest gap below mmap_base that fits,
    2 MiB-aligned when the length is a multiple of 2 MiB; predicted from a maps snapshot."""
    skip_unless_available("placement")
    flags = MAP_PRIVATE | MAP_ANONYMOUS
    sizes = [4096, 12288, 65536, 2 << 20, (2 << 20) + 4096, 4 << 20, 4096, 16384]
    results = lk.placement([(n, None, RW, flags) for n in sizes])
    agreed = diverged = 0
    first = None
    for n, got in zip(sizes, results, strict=True):
        predicted = predict_top_down(got["maps"], n)
        tally("cases")
        assert got["ret"] == predicted, (
            f"mmap({n}) returned {got['ret']:#x}; top-down first fit predicts {predicted:#x}")
        spec_addr, reason = spec_placement(got["maps"], n, RW, flags)
        if reason:
            osp.record("placement", osp.SKIPPED, reason)
            continue
        if spec_addr == got["ret"]:
            agreed += 1
            osp.record("placement", osp.AGREED)
        else:
            diverged += 1
            text = (f"mmap(NULL, {n}) on the kernel: {got['ret']:#x}, on the spec: {spec_addr}\n"
                    f"maps before the call:\n{got['maps']}")
            osp.record("placement", osp.DIVERGED, text)
            first = first or text
    assert first is None, first


def predict_top_down(maps_text: str, length: int) -> int:
    """kernel-oracle.md section 8's rule, worked from the snapshot alone (the driver's check)."""
    entries = lk.parse_maps(maps_text)
    stack = next(e for e in entries if e[6] == "[stack]")
    below = [e for e in entries if e[1] <= stack[0]]
    mmap_base = max(e[1] for e in below)
    top = mmap_base
    for start, end, *_ in sorted(below, key=lambda e: -e[1]):
        if end < top:  # a gap [end, top)
            addr = top - length
            if length % (2 << 20) == 0:
                addr &= ~((2 << 20) - 1)
            if addr >= end:
                return addr
        top = min(top, start)
    raise AssertionError("no gap fits")


def spec_placement(maps_text: str, length: int, prot: int, flags: int):
    """Where spec.vma.mmap places the request in an address space seeded from the snapshot."""
    try:
        from spec import vma
    except ImportError as exc:
        return None, f"spec.vma cannot be imported: {exc}"
    entries = lk.parse_maps(maps_text)
    stack = next(e for e in entries if e[6] == "[stack]")
    mmap_base = max(e[1] for e in entries if e[1] <= stack[0])
    seed = [(e[0], e[1], e[2], lk.kind_of(e[6])) for e in entries if e[1] <= 1 << 47]
    try:
        mm = vma.from_maps(seed, mmap_base=mmap_base)
        _, addr = vma.mmap(mm, 0, length, prot, flags)
    except NotImplementedError as exc:
        return None, f"spec.vma placement is not implemented yet ({exc})"
    except Exception as exc:  # noqa: BLE001 - a typed error is an answer
        return type(exc).__name__, None
    return addr, None


# ---------------------------------------------------------------- random programs

PAGES = 16
_off = st.integers(0, PAGES - 1)
_n = st.integers(1, 6)
_prot = st.sampled_from([PROT_NONE, R, RW, RW, RW, RWX, PROT_READ | PROT_EXEC])
_mflags = st.sampled_from([PA, PA, PA, SA, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                           PA | MAP_GROWSDOWN, PA | MAP_LOCKED])
_advice = st.sampled_from([MADV_DONTNEED, MADV_DONTFORK, MADV_DOFORK, MADV_HUGEPAGE,
                           MADV_NOHUGEPAGE, MADV_NORMAL, MADV_RANDOM, MADV_WIPEONFORK,
                           MADV_POPULATE_READ, MADV_POPULATE_WRITE])


def _step(with_files: bool = True):
    mmap = st.tuples(st.just("mmap"), _off, _n, _prot, _mflags)
    choices = [
        mmap, mmap,
        st.tuples(st.just("munmap"), _off, _n),
        st.tuples(st.just("mprotect"), _off, _n, _prot),
        st.tuples(st.just("mremap"), _off, _n, _n, st.sampled_from([0, 0, MOVE]), _off),
        st.tuples(st.just("madvise"), _off, _n, _advice),
        st.tuples(st.just("mlock"), _off, _n),
        st.tuples(st.just("munlock"), _off, _n),
        st.tuples(st.just("touch"), _off, st.integers(1, 3), st.booleans()),
    ]
    if with_files:
        choices.append(st.tuples(st.just("mmap_file"), _off, _n, st.sampled_from([R, RW]),
                                 st.sampled_from([PF, SF]), st.integers(0, 1), st.integers(0, 8)))
    return st.one_of(*choices)


def clip(step):
    """Keep a generated step inside the window (offset + length <= 16 pages)."""
    op = step[0]
    if op in ("mmap", "mmap_file", "munmap", "mprotect", "madvise", "mlock", "munlock", "touch"):
        n = min(step[2], PAGES - step[1])
        return (op, step[1], n, *step[3:])
    if op == "mremap":
        _, off, old, new, flags, dest = step
        old = min(old, PAGES - off)
        if flags & MREMAP_FIXED:
            new = min(new, PAGES - dest)
        else:
            new = min(new, PAGES - off)
        return (op, off, old, new, flags, dest)
    return step


PROGRAMS = st.lists(_step().map(clip), min_size=5, max_size=20).map(tuple)


def sane(run):
    """What must hold of any kernel observation: VMAs sorted, disjoint, inside the window;
    present pages only inside VMAs; fault counts non-negative."""
    problems = []
    for i, obs in enumerate(run.observations):
        if obs["minflt"] is not None and obs["minflt"] < 0:
            problems.append(f"step {i}: negative fault count")
        for p, seen in obs["procs"].items():
            maps = seen["maps"]
            for (a, b, *_), (c, d, *_) in zip(maps, maps[1:], strict=False):
                if not a < b <= c < d:
                    problems.append(f"step {i} process {p}: VMAs out of order {maps}")
            inside = {pg for a, b, *_ in maps for pg in range(a, b)}
            for pg, entry in enumerate(seen["pagemap"]):
                if entry[0] and pg not in inside:
                    problems.append(f"step {i} process {p}: page {pg} present outside any VMA")
    return problems


@settings(max_examples=by_profile(25, 60, 400), deadline=None)
@given(program=PROGRAMS)
def test_random_programs_agree_with_the_spec(program):
    """Random programs of mmap/munmap/mprotect/mremap/madvise/mlock/touch: the kernel is
    deterministic (two runs give the same observations, or a third repeats one of them) and
    the spec agrees step by step on the return values, the window's VMAs and their VmFlags."""
    skip_unless_available("random-vma")
    try:
        first, repeated = lk.stable_run(program)
    except lk.OracleError as exc:
        osp.record("determinism", osp.DIVERGED, str(exc))
        raise
    osp.record("determinism", osp.AGREED if repeated else osp.DIVERGED,
               "" if repeated else "two runs differed (measurement noise); a third repeated one "
                                   "of them\n" + osp.show_program(program))
    problems = sane(first)
    assert not problems, "\n".join(problems) + "\n" + osp.show_program(program)
    tally("cases")
    try:
        divergence = osp.compare("random-vma", first, fields=("ret", "maps", "vmflags"))
    except osp.SpecNotReady:
        tally("uncompared")
        return
    assert divergence is None, divergence


# ---------------------------------------------------------------- the mmspec oracle report


def test_oracle_report_sums_families_and_shows_the_first_divergence():
    """``mmspec oracle`` sums the families the tests recorded and prints the first divergence
    (a harness test: no kernel needed)."""
    import json

    from mmspec import oracle_report, verify

    def result(nodeid, families, outcome="passed"):
        record = {"mechanism": "vma", "layer": "oracle", "counters": {}, "gauges": {},
                  "notes": {osp.NOTE: json.dumps(families)}}
        return verify.TestResult(nodeid, "vma", "oracle", outcome, record=record)

    results = [
        result("tests/oracle/test_vma.py::b", {"vma-merge": {"agreed": 2, "diverged": 1,
                                                             "skipped": 0, "first": "maps B"}}),
        result("tests/oracle/test_vma.py::a", {"vma-merge": {"agreed": 1, "diverged": 1,
                                                             "skipped": 0, "first": "maps A"},
                                               "brk": {"agreed": 0, "diverged": 0, "skipped": 1,
                                                       "reason": "no heap"}}),
    ]
    table = oracle_report.families(results)
    assert list(table) == ["vma-merge", "brk"]  # in the order of FAMILIES
    assert table["vma-merge"] == {"agreed": 3, "diverged": 2, "skipped": 0, "first": "maps A"}
    text = oracle_report.render_families(table, [], {"kernel": "6.x", "thp_enabled": "madvise"})
    rows = [line.split() for line in text.splitlines()]
    assert ["vma-merge", "3", "2", "0"] in rows and ["total", "3", "2", "1"] in rows
    assert "vma-merge:\n    maps A" in text and "brk: no heap" in text
    assert "host: kernel 6.x" in text
