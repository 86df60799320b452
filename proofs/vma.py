"""Theorems about VMAs (spec/vma.py).

The arithmetic theorems run the spec's own helpers on z3 values: page rounding
(:func:`spec.vma.page_align`, :func:`~spec.vma.page_down`), the THP placement of large anonymous
mappings (:func:`~spec.vma.thp_aligned_start`), the stack guard gap as placement and as stack
growth see it (:func:`~spec.vma.hint_fits`, :func:`~spec.vma.stack_gap_ok`), and the overcommit
formula (:func:`~spec.vma.commit_limit`, :func:`~spec.vma.vm_enough_memory`).  Addresses are
64-bit bit-vectors bounded by 2^48 (the 47-bit user address space with room to spare), so the
signed comparisons z3 uses agree with Linux's unsigned ones.

The merge predicate is checked exhaustively over a small universe of VMA pairs (every mix of
flags, file, pgoff and anon_vma / chain shapes that matters), and the bounded theorem explores
every history of up to four system calls on a four-page window, checking every ``inv_*`` of
the spec in every reachable state.
"""

from __future__ import annotations

import itertools

import z3

from proofs._z3 import ProofResult, prove, registry
from proofs._z3 import explore as explore_histories
from spec import vma
from spec.mman import MADV_DONTFORK, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_GROWSDOWN, MAP_PRIVATE, PROT_READ, PROT_WRITE

THEOREMS, theorem = registry()

BITS = 64
x, gap_top, length, s = z3.BitVecs("x gap_top length s", BITS)
hint, start, guard, addr, prev_end, size = z3.Ints("hint start guard addr prev_end size")
LIMIT = 1 << 48


def _bounded(*values):
    return tuple(z3.And(v >= 0, v < LIMIT) for v in values)


@theorem("PAGE_ALIGN(x) is page aligned, at least x and less than a page above it; x & PAGE_MASK is the aligned address at or below x.")
def thm_page_rounding() -> ProofResult:
    up, down = vma.page_align(x), vma.page_down(x)
    claim = z3.And(up % 4096 == 0, up >= x, up - x < 4096, down % 4096 == 0, down <= x, x - down < 4096)
    return prove(claim, _bounded(x))


@theorem("A 2 MiB-multiple anonymous mapping is placed 2 MiB aligned, inside the gap the padded search found, and as high as any aligned start that fits.")
def thm_thp_placement() -> ProofResult:
    pmd = vma.PMD_SIZE
    got = vma.thp_aligned_start(gap_top, length)
    premises = _bounded(gap_top, length, s) + (
        length > 0, length % pmd == 0, gap_top % 4096 == 0, gap_top >= length + pmd,
        s % pmd == 0, s + length <= gap_top)
    claim = z3.And(got % pmd == 0, got + length <= gap_top, got >= gap_top - length - pmd, s <= got)
    return prove(claim, premises)


@theorem("A hint accepted below a GROWSDOWN VMA leaves at least the stack guard gap free below it; below any other VMA it only has to end at its start.")
def thm_hint_guard_gap() -> ProofResult:
    grows = vma.hint_fits(hint, size, start, vma.VM_GROWSDOWN, guard)
    plain = vma.hint_fits(hint, size, start, 0, guard)
    claim = z3.And(z3.Implies(z3.And(grows, start >= guard), start - (hint + size) >= guard),
                   plain == (hint + size <= start))
    return prove(claim, _bounded(hint, size, start, guard))


@theorem("Stack growth next to an accessible non-GROWSDOWN VMA is allowed exactly when the guard gap stays free, and allowing an address allows every higher one.")
def thm_stack_guard_gap() -> ProofResult:
    ok = vma.stack_gap_ok(addr, prev_end, vma.VM_READ | vma.VM_WRITE, guard)
    higher = vma.stack_gap_ok(addr + 4096, prev_end, vma.VM_READ | vma.VM_WRITE, guard)
    none = vma.stack_gap_ok(addr, prev_end, 0, guard)
    claim = z3.And(ok == (addr - prev_end >= guard), z3.Implies(ok, higher), none)
    return prove(claim, _bounded(addr, prev_end, guard) + (addr >= prev_end,))


@theorem("CommitLimit lies between swap and RAM + swap for ratios up to 100; in mode 2 a granted request never takes Committed_AS to CommitLimit; in mode 0 any request up to RAM + swap is granted.")
def thm_overcommit() -> ProofResult:
    ram, swap, ratio, pages, committed, total = z3.Ints("ram swap ratio pages committed total")
    limit = vma.commit_limit(ram, swap, ratio, 0)
    never = vma.vm_enough_memory(vma.OVERCOMMIT_NEVER, pages, committed, limit, total, ram, swap, False)
    guess = vma.vm_enough_memory(vma.OVERCOMMIT_GUESS, pages, committed, limit, total, ram, swap, True)
    premises = tuple(v >= 0 for v in (ram, swap, pages, committed, total)) + (ratio >= 0, ratio <= 100)
    claim = z3.And(swap <= limit, limit <= ram + swap, z3.Implies(never, committed + pages < limit),
                   z3.Implies(pages <= ram + swap, guess))
    return prove(claim, premises)


def _universe():
    """Small VMA pairs: a below b, with every shape of flags, file, pgoff and anon_vma that the
    merge rules distinguish."""
    f1 = vma.FileRef(7, "/f")
    flags = (vma.VM_READ | vma.VM_WRITE | vma.VM_MAYREAD | vma.VM_MAYWRITE,
             vma.VM_READ | vma.VM_MAYREAD, vma.VM_READ | vma.VM_WRITE | vma.VM_MAYREAD | vma.VM_MAYWRITE | vma.VM_IO)
    anons = ((None, ()), (1, (1,)), (2, (2,)), (3, (1, 3)), (1, (9, 1)))
    for fa, fb, file, gap, pg, (aa, ca), (ab, cb) in itertools.product(flags, flags, (None, f1), (0, 1), (0, 1), anons, anons):
        a = vma.Vma(0x1000, 0x3000, fa, file, 1, aa, ca)
        b = vma.Vma(0x3000 + gap * 0x1000, 0x5000, fb, file, 3 + pg, ab, cb)
        yield a, b


@theorem("The merge predicate holds only for adjacent VMAs with equal flags, the same file and contiguous pgoff; it is the same whichever side is taken as the range (can_merge_after == can_merge_before for two VMAs); and merged anon_vmas are never two different ones.")
def thm_merge_predicate() -> ProofResult:
    checked = 0
    for a, b in _universe():
        checked += 1
        m = vma.mergeable(a, b)
        if vma.can_merge_after(a, b) != vma.can_merge_before(a, b):
            return ProofResult(False, "asymmetric", f"{a}\n{b}")
        if m and not (a.end == b.start and a.flags == b.flags and a.file == b.file
                      and a.pgoff + a.pages == b.pgoff and not a.flags & vma.VM_SPECIAL):
            return ProofResult(False, "merges a non-adjacent or different pair", f"{a}\n{b}")
        if m and a.anon_vma is not None and b.anon_vma is not None and a.anon_vma != b.anon_vma:
            return ProofResult(False, "merges two anon_vmas", f"{a}\n{b}")
        if m and (len(a.chain) > 1 and b.anon_vma is None or len(b.chain) > 1 and a.anon_vma is None):
            return ProofResult(False, "a fork child's VMA absorbs an anon_vma-less one", f"{a}\n{b}")
    return ProofResult(True, f"exhaustive over {checked} VMA pairs")


W = vma.WINDOW_BASE
PG = 4096


def _successors(mm):
    """Every system call on a four-page window: fixed mmaps (RW, R, GROWSDOWN), munmap,
    mprotect, write faults, DONTFORK, and fork-and-continue-in-the-child."""
    calls = []
    for off in range(4):
        for n in (1, 2):
            a, ln = W + off * PG, n * PG
            calls.append(("mmap", (a, ln, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)))
            calls.append(("mmap", (a, ln, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)))
            calls.append(("munmap", (a, ln)))
            calls.append(("mprotect", (a, ln, PROT_READ)))
            calls.append(("mprotect", (a, ln, PROT_READ | PROT_WRITE)))
            calls.append(("madvise", (a, ln, MADV_DONTFORK)))
        calls.append(("fault", (W + off * PG, True)))
    calls.append(("mmap", (W + 3 * PG, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_GROWSDOWN)))
    calls.append(("fork_child", (mm.pid + 1,)))
    for op, args in calls:
        try:
            yield getattr(vma, op)(mm, *args)[0]
        except vma.SIGSEGV:
            continue
        except Exception as err:  # noqa: BLE001 - typed errors leave the state as it was
            if not hasattr(err, "errno") and type(err).__module__ != "spec.errors":
                raise
            continue


@theorem("Every history of up to four system calls (mmap, munmap, mprotect, madvise, write faults, fork) on a four-page window keeps every invariant of spec.vma, with max_map_count 3 and a guard gap of one page.")
def thm_bounded_histories() -> ProofResult:
    initial = vma.new_mm(max_map_count=3, stack_guard_gap=PG, mmap_base=W + 8 * PG)
    invariants = [getattr(vma, n) for n in dir(vma) if n.startswith("inv_")]
    return explore_histories(initial, _successors, invariants, vma.render, 4)
