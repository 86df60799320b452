"""VMAs: invariants, lockstep with the impl, the kernel-oracle table by hand, bad input.

The two state machines come from the shared harness fed with the VMA strategies
(:mod:`mmspec.mechanisms.vma`).  The scenario tests replay every VMA-level row of
kernel-oracle.md §1 (A–S) plus the placement, brk and mlock observations of §8–§10, as
programs in the oracle's step format on a window at ``WINDOW_BASE``; each runs on the spec and
on the impl and must give the VMA list the kernel showed, drawn as ``(start, end, perms)`` in
pages.  A failure prints the spec's maps.
"""

from __future__ import annotations

import pytest

from mmspec.machines import invariant_machine, lockstep_machine, run_machine
from mmspec.mechanisms import vma as reg
from spec import vma as spec
from spec.errors import EACCES, EEXIST, EFAULT, EINVAL, ENOMEM, EPERM, SIGSEGV
from spec.mman import (
    MADV_DOFORK, MADV_DONTFORK, MADV_DONTNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_WIPEONFORK,
    MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_GROWSDOWN, MAP_HUGETLB, MAP_LOCKED,
    MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE, MCL_CURRENT, MCL_FUTURE,
    MLOCK_ONFAULT, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, PROT_EXEC, PROT_READ, PROT_WRITE,
)
from impl.vma import VmaSpace

VmaInvariants = invariant_machine("VmaInvariants", spec, reg.config, reg.steps, reg.render)
VmaLockstep = lockstep_machine("VmaLockstep", spec, reg.impl_factory, reg.config, reg.steps, reg.render)

RW, R, RWX = PROT_READ | PROT_WRITE, PROT_READ, PROT_READ | PROT_WRITE | PROT_EXEC
FIX = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
SHFIX = MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
PG = 4096
W = spec.WINDOW_BASE


@pytest.mark.layer("invariants")
def test_invariants_hold_after_every_step():
    run_machine(VmaInvariants)


@pytest.mark.layer("lockstep")
def test_impl_agrees_with_spec_at_every_step():
    run_machine(VmaLockstep)


def play(program, mm=None, **config):
    """Run a program on the spec and on the impl; both must agree on every return value and
    on the final layout.  Returns (spec mm, returns, window layout as (start, end, perms))."""
    mm = mm or spec.new_mm(**config)
    impl, strict, rets = VmaSpace(mm), mm, []
    for step in program:
        if step == ("fork",):
            mm, r = spec.fork_child(mm, mm.pid + 1)
            strict = spec.fork_child(strict, strict.pid + 1)[0]
        else:
            mm, r = spec.apply_step(mm, step)  # after a failure: what Linux leaves (error.partial)
            new, r2 = spec.apply_step(strict, step)
            strict = strict if isinstance(r2, str) else new  # the spec's own rule: unchanged
        rets.append(r)
    assert impl.run(program) == rets
    assert impl.abstract() == strict, "\n" + spec.maps(strict) + "impl:\n" + spec.maps(impl.abstract())
    return mm, rets, [(s, e, p) for s, e, p, _ in spec.window_maps(mm)]


def layout(program, **config):
    return play(program, **config)[2]


# ---------------------------------------------------------------------------------------------
# kernel-oracle.md §1, row by row


def test_A_mprotect_splits_in_three_and_restoring_merges():
    assert layout([("mmap", 0, 8, RW, FIX), ("mprotect", 3, 2, R)]) == [(0, 3, "rw-p"), (3, 5, "r--p"), (5, 8, "rw-p")]
    for touched in ([], [("touch", 0, 8, True)]):
        assert layout([("mmap", 0, 8, RW, FIX), *touched, ("mprotect", 3, 2, R), ("mprotect", 3, 2, RW)]) == [(0, 8, "rw-p")]


def test_C_one_written_side_still_merges_back():
    prog = [("mmap", 0, 8, RW, FIX), ("mprotect", 3, 2, R), ("touch", 0, 3, True), ("mprotect", 3, 2, RW)]
    assert layout(prog) == [(0, 8, "rw-p")]


def test_D_two_anon_vmas_refuse_the_three_way_merge_and_prev_wins():
    prog = [("mmap", 0, 8, RW, FIX), ("mprotect", 3, 2, R), ("touch", 0, 3, True), ("touch", 5, 3, True)]
    assert layout([*prog, ("mprotect", 3, 2, RW)]) == [(0, 5, "rw-p"), (5, 8, "rw-p")]
    assert layout([*prog, ("mprotect", 4, 1, RW)]) == [(0, 3, "rw-p"), (3, 4, "r--p"), (4, 8, "rw-p")]  # D2


def test_E_new_mapping_next_to_an_old_one_always_merges():
    for touched in ([], [("touch", 4, 4, True)]):
        prog = [("mmap", 4, 4, RW, FIX), *touched, ("mmap", 0, 4, RW, FIX), ("mmap", 8, 4, RW, FIX)]
        assert layout(prog) == [(0, 12, "rw-p")]


def test_H_gap_filled_between_written_vmas_joins_the_lower():
    base = [("mmap", 0, 4, RW, FIX), ("mmap", 6, 4, RW, FIX), ("touch", 0, 4, True)]
    assert layout([*base, ("touch", 6, 4, True), ("mmap", 4, 2, RW, FIX)]) == [(0, 6, "rw-p"), (6, 10, "rw-p")]
    assert layout([*base, ("mmap", 4, 2, RW, FIX)]) == [(0, 10, "rw-p")]  # H2


def test_I_read_fault_assigns_no_anon_vma():
    prog = [("mmap", 0, 4, RW, FIX), ("mmap", 4, 4, R, FIX), ("touch", 4, 4, False)]
    assert layout(prog) == [(0, 4, "rw-p"), (4, 8, "r--p")]
    assert layout([*prog, ("mprotect", 4, 4, RW)]) == [(0, 8, "rw-p")]


def test_J_munmap_hole_and_refill():
    for touched in ([], [("touch", 0, 8, True)]):
        prog = [("mmap", 0, 8, RW, FIX), *touched, ("munmap", 3, 2)]
        assert layout(prog) == [(0, 3, "rw-p"), (5, 8, "rw-p")]
        assert layout([*prog, ("mmap", 3, 2, RW, FIX)]) == [(0, 8, "rw-p")]


def test_K_mremap_grows_and_shrinks_in_place():
    mm, rets, lay = play([("mmap", 0, 4, RW, FIX), ("mremap", 0, 4, 8, 0, 0)])
    assert rets[1] == 0 and lay == [(0, 8, "rw-p")]
    assert layout([("mmap", 0, 8, RW, FIX), ("mremap", 0, 8, 3, 0, 0)]) == [(0, 3, "rw-p")]


def test_K2_blocked_growth_is_enomem_or_a_move():
    prog = [("mmap", 0, 4, RW, FIX), ("touch", 0, 4, True), ("mmap", 4, 1, R, FIX)]
    mm, rets, lay = play([*prog, ("mremap", 0, 4, 8, 0, 0)])
    assert rets[-1] == "ENOMEM" and lay == [(0, 4, "rw-p"), (4, 5, "r--p")]
    mm, rets, lay = play([*prog, ("mremap", 0, 4, 8, MREMAP_MAYMOVE, 0)])
    moved = spec.vma_at(mm, W + rets[-1] * PG)
    assert lay == [(4, 5, "r--p")] and moved.pages == 8 and moved.start == W + rets[-1] * PG


def test_L_mremap_growth_into_a_neighbour_merges_unless_it_has_its_own_anon_vma():
    base = [("mmap", 0, 4, RW, FIX), ("mmap", 6, 4, RW, FIX), ("touch", 0, 4, True)]
    assert layout([*base, ("mremap", 0, 4, 6, 0, 0)]) == [(0, 10, "rw-p")]
    assert layout([*base, ("touch", 6, 4, True), ("mremap", 0, 4, 6, 0, 0)]) == [(0, 6, "rw-p"), (6, 10, "rw-p")]


def test_M_moved_vma_merges_iff_it_was_never_written():
    move = ("mremap", 10, 4, 4, MREMAP_MAYMOVE | MREMAP_FIXED, 4)
    for a_touched in ([], [("touch", 0, 4, True)]):
        base = [("mmap", 0, 4, RW, FIX), *a_touched, ("mmap", 10, 4, RW, FIX)]
        assert layout([*base, move]) == [(0, 8, "rw-p")]
        assert layout([*base, ("touch", 10, 4, True), move]) == [(0, 4, "rw-p"), (4, 8, "rw-p")]


def test_N_growsdown_never_merges_and_hints_respect_the_guard_gap():
    mm, _, lay = play([("mmap", 300, 4, RW, FIX | MAP_GROWSDOWN), ("mmap", 296, 4, RW, FIX)])
    assert lay == [(296, 300, "rw-p"), (300, 304, "rw-p")]
    assert "gd" in spec.vmflags(spec.vma_at(mm, W + 300 * PG).flags).split()
    hint = MAP_PRIVATE | MAP_ANONYMOUS
    for gap, honoured in ((0, False), (255, False), (256, True), (257, True)):
        mm, rets, _ = play([("mmap", 300, 4, RW, FIX | MAP_GROWSDOWN), ("mmap", 300 - gap - 4, 4, RW, hint)])
        assert (rets[1] == 300 - gap - 4) == honoured, gap


def test_N_stack_grows_to_exactly_the_faulting_page():
    prog = [("mmap", 300, 4, RW, FIX | MAP_GROWSDOWN), ("fork",)]
    assert layout([*prog, ("touch", 299, 1, True)]) == [(299, 304, "rw-p")]
    assert layout([*prog, ("touch", 199, 1, True)]) == [(199, 304, "rw-p")]
    assert layout([*prog, ("touch", 189, 1, False)]) == [(189, 304, "rw-p")]


def test_N_stack_growth_stops_at_the_guard_gap():
    prog = [("mmap", 0, 2, RW, FIX), ("mmap", 300, 4, RW, FIX | MAP_GROWSDOWN)]
    mm, rets, lay = play([*prog, ("touch", 2 + 256, 1, True)])
    assert rets[-1] == 0 and lay[-1] == (258, 304, "rw-p")
    mm, rets, lay = play([*prog, ("touch", 2 + 255, 1, True)])
    assert rets[-1] == "SIGSEGV" and lay[-1] == (300, 304, "rw-p")


def test_O_shared_anonymous_mappings_are_separate_files():
    prog = [("mmap", 0, 4, RW, SHFIX), ("mmap", 4, 4, RW, SHFIX), ("mmap", 8, 4, RW, FIX)]
    assert layout(prog) == [(0, 4, "rw-s"), (4, 8, "rw-s"), (8, 12, "rw-p")]
    assert layout([*prog, ("mprotect", 1, 1, R), ("mprotect", 1, 1, RW)]) == [(0, 4, "rw-s"), (4, 8, "rw-s"), (8, 12, "rw-p")]
    mm = play(prog)[0]
    assert "/dev/zero (deleted)" in spec.maps(mm)


def test_P_file_mappings_merge_iff_offsets_are_contiguous():
    for kind in (MAP_SHARED, MAP_PRIVATE):
        f = kind | MAP_FIXED_NOREPLACE
        assert layout([("mmap_file", 0, 4, RW, f, 1, 0), ("mmap_file", 4, 4, RW, f, 1, 4)])[0][:2] == (0, 8)
        assert len(layout([("mmap_file", 0, 4, RW, f, 1, 0), ("mmap_file", 4, 4, RW, f, 1, 5)])) == 2
    f = MAP_PRIVATE | MAP_FIXED_NOREPLACE
    assert layout([("mmap_file", 0, 4, RW, f, 1, 0), ("touch", 0, 1, True), ("mmap_file", 4, 4, RW, f, 1, 4)]) == [(0, 8, "rw-p")]


def test_Q_madvise_and_mlock_split_and_restore():
    base = [("mmap", 0, 8, RW, FIX)]
    three = [(0, 3, "rw-p"), (3, 5, "rw-p"), (5, 8, "rw-p")]
    assert layout([*base, ("madvise", 3, 2, MADV_DONTFORK)]) == three
    assert layout([*base, ("madvise", 3, 2, MADV_DONTFORK), ("madvise", 3, 2, MADV_DOFORK)]) == [(0, 8, "rw-p")]
    assert layout([*base, ("madvise", 3, 2, MADV_HUGEPAGE)]) == three
    assert layout([*base, ("madvise", 3, 2, MADV_HUGEPAGE), ("madvise", 3, 2, MADV_NOHUGEPAGE)]) == three
    assert layout([*base, ("madvise", 3, 2, MADV_DONTNEED)]) == [(0, 8, "rw-p")]
    assert layout([*base, ("mlock", 3, 2)]) == three
    assert layout([*base, ("mlock", 3, 2), ("munlock", 3, 2)]) == [(0, 8, "rw-p")]


def test_R_first_write_reuses_the_neighbours_anon_vma():
    prog = [("mmap", 0, 5, RW, FIX), ("touch", 0, 5, True), ("mmap", 5, 4, RWX, FIX), ("touch", 5, 4, True)]
    assert layout(prog) == [(0, 5, "rw-p"), (5, 9, "rwxp")]
    assert layout([*prog, ("mprotect", 5, 4, RW)]) == [(0, 9, "rw-p")]
    control = [("mmap", 0, 5, RW, FIX), ("touch", 0, 5, True), ("mmap", 6, 3, RWX, FIX), ("touch", 6, 3, True),
               ("mprotect", 6, 3, RW), ("mmap", 5, 1, RW, FIX)]
    assert layout(control) == [(0, 6, "rw-p"), (6, 9, "rw-p")]


def test_S_fork_child_keeps_inherited_written_vmas_apart():
    prog = [("mmap", 0, 4, RW, FIX), ("touch", 0, 4, True), ("mmap", 10, 4, RW, FIX), ("fork",)]
    assert layout([*prog, ("mmap", 4, 4, RW, FIX)]) == [(0, 4, "rw-p"), (4, 8, "rw-p"), (10, 14, "rw-p")]
    assert layout([*prog, ("mmap", 14, 4, RW, FIX)]) == [(0, 4, "rw-p"), (10, 18, "rw-p")]
    assert layout([*prog, ("mprotect", 1, 1, R), ("mprotect", 1, 1, RW)]) == [(0, 4, "rw-p"), (10, 14, "rw-p")]
    parent = [("mmap", 0, 4, RW, FIX), ("touch", 0, 4, True), ("mmap", 4, 4, RW, FIX)]
    assert layout(parent) == [(0, 8, "rw-p")]


def test_fork_chains_dontfork_and_wipeonfork():
    mm, _, _ = play([("mmap", 0, 4, RW, FIX), ("touch", 0, 4, True), ("mmap", 6, 2, RW, FIX),
                     ("madvise", 6, 2, MADV_DONTFORK), ("mmap", 10, 2, RW, FIX), ("touch", 10, 2, True),
                     ("madvise", 10, 2, MADV_WIPEONFORK), ("mlock", 0, 4)])
    parent, child = spec.fork(mm, 7)
    inherited = spec.vma_at(child, W)
    assert len(inherited.chain) == 2 and inherited.chain[0] == spec.vma_at(mm, W).anon_vma
    assert inherited.anon_vma >> spec.ID_SHIFT == 7
    assert spec.vma_at(child, W + 6 * PG) is None
    assert spec.vma_at(child, W + 10 * PG).anon_vma is None
    assert child.locked_vm == 0 and not inherited.flags & spec.VM_LOCKED and parent.locked_vm == 4


# ---------------------------------------------------------------------------------------------
# Placement (§8), brk (§9), mlock (§10), overcommit


def test_topdown_first_fit_and_thp_alignment():
    mm = spec.new_mm()
    anon = MAP_PRIVATE | MAP_ANONYMOUS
    mm, a = spec.mmap(mm, 0, PG, RW, anon)
    assert a == spec.MMAP_BASE_NORANDOM - PG
    mm, b = spec.mmap(mm, 0, 3 * PG, RW, anon)
    assert b == a - 3 * PG and len(mm.vmas) == 1  # directly below, merged
    mm, c = spec.mmap(mm, 0, 2 << 20, RW, anon)
    assert c % (2 << 20) == 0 and c + (2 << 20) <= b
    mm, d = spec.mmap(mm, 0, (2 << 20) + PG, RW, anon)
    assert d == c - (2 << 20) - PG  # not a multiple of 2 MiB: not aligned
    mm, e = spec.mmap(mm, 0, PG, R, anon)
    assert e == b - PG  # small mappings fill the hole the alignment left higher up
    assert len(mm.vmas) == 3  # d merged with c below; e (R-only) adjacent to b (RW), not merged
    impl = VmaSpace()
    for length, prot in ((PG, RW), (3 * PG, RW), (2 << 20, RW), ((2 << 20) + PG, RW), (PG, R)):
        impl.mmap(0, length, prot, anon)
    assert impl.abstract() == mm


def test_hints_round_down_and_are_ignored_when_occupied():
    mm, a = spec.mmap(spec.new_mm(), W + 123, PG, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    assert a == W  # rounded down to its page (checked on the live 6.18 kernel)
    mm2, b = spec.mmap(mm, W, PG, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    assert b == spec.MMAP_BASE_NORANDOM - PG  # occupied: where an un-hinted mmap goes


def test_fixed_replaces_and_noreplace_is_eexist_with_linux_errno_precedence():
    mm, _, lay = play([("mmap", 0, 8, RW, FIX), ("touch", 0, 8, True), ("mmap", 2, 2, R, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)])
    assert lay == [(0, 2, "rw-p"), (2, 4, "r--p"), (4, 8, "rw-p")]
    mm = play([("mmap", 0, 8, RW, FIX)])[0]
    occupied = W + PG
    assert pytest.raises(EEXIST, spec.mmap, mm, occupied, PG, RW, MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)  # no type
    assert pytest.raises(EEXIST, spec.mmap, mm, occupied, PG, RW, MAP_SHARED_VALIDATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | 0x40)
    assert pytest.raises(EEXIST, spec.mmap, mm, occupied, PG, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_FIXED_NOREPLACE)
    assert pytest.raises(EEXIST, spec.mmap, mm, occupied, 100, RW, FIX)  # unaligned length
    assert pytest.raises(EINVAL, spec.mmap, mm, occupied + 1, PG, RW, FIX)  # unaligned address
    assert pytest.raises(EINVAL, spec.mmap, mm, occupied, 0, RW, FIX)
    assert pytest.raises(EINVAL, spec.mmap, mm, occupied, PG, RW, FIX | MAP_HUGETLB)


def test_mmap_min_addr_needs_cap_sys_rawio():
    mm = spec.new_mm(cap_sys_rawio=False, mmap_min_addr=65536)
    with pytest.raises(EPERM):
        spec.mmap(mm, 4096, PG, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    mm2, a = spec.mmap(mm, 4096, PG, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    assert a == 65536  # round_hint_to_min


def test_max_map_count_limits_splits():
    mm, rets, lay = play([("mmap", 0, 8, RW, FIX), ("mprotect", 3, 2, R)], max_map_count=2)
    assert rets[-1] == "ENOMEM"
    assert lay == [(0, 3, "rw-p"), (3, 8, "rw-p")]  # Linux's partial result: the first split stays
    impl = VmaSpace(spec.new_mm(max_map_count=2))
    impl.mmap(W, 8 * PG, RW, FIX)
    with pytest.raises(ENOMEM):
        impl.mprotect(W + 3 * PG, 2 * PG, R)
    assert len(impl) == 1  # the impl rolls back
    mm, rets, _ = play([("mmap", 0, 8, RW, FIX), ("madvise", 3, 2, MADV_DONTFORK)], max_map_count=2)
    assert rets[-1] == "EAGAIN"
    mm, rets, _ = play([("mmap", 0, 8, RW, FIX), ("munmap", 3, 2)], max_map_count=1)
    assert rets[-1] == "ENOMEM"


def test_mprotect_errors():
    mm, rets, lay = play([("mmap", 0, 2, RW, FIX), ("mmap", 3, 2, RW, FIX), ("mprotect", 0, 5, R)])
    assert rets[-1] == "ENOMEM" and lay == [(0, 2, "r--p"), (3, 5, "rw-p")]  # changed up to the hole
    mm = spec.new_mm()
    mm, _ = spec.mmap(mm, W, PG, R, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    mm = replace_flags(mm, W, spec.vma_at(mm, W).flags & ~spec.VM_MAYWRITE)
    with pytest.raises(EACCES):
        spec.mprotect(mm, W, PG, RW)


def replace_flags(mm, addr, flags):
    from dataclasses import replace

    v = spec.vma_at(mm, addr)
    return replace(mm, vmas=tuple(replace(x, flags=flags) if x is v else x for x in mm.vmas))


def test_brk_heap_end_and_return_values():
    start = spec.new_mm().start_brk
    mm, ends = spec.new_mm(), []
    for delta in (1, 4095, 1, 4096, 4097, 10000, 65536, -65536, -4097, -1, -10000):
        want = mm.brk + delta
        mm, r = spec.brk(mm, want)
        assert r == want
        heap = [v for v in mm.vmas if v.start >= start]
        ends.append((heap[-1].end - start) // PG if heap else 0)
    assert ends == [1, 1, 2, 3, 4, 6, 22, 6, 5, 5, 2]
    assert "[heap]" in spec.maps(mm)
    mm2, r = spec.brk(mm, start - 1)
    assert r == mm.brk and mm2 == mm  # below start_brk: the old break


def test_brk_in_a_fork_child_makes_a_second_heap_vma():
    mm = spec.new_mm()
    mm, _ = spec.brk(mm, mm.brk + 4 * PG)
    mm = spec.touch(mm, mm.start_brk, True)
    mm, _ = spec.brk(mm, mm.brk + 4 * PG)
    assert maps_count(mm, "[heap]") == 1
    child, _ = spec.fork_child(mm, 2)
    child, _ = spec.brk(child, child.brk + 4 * PG)
    assert maps_count(child, "[heap]") == 2
    impl = VmaSpace(mm)
    impl.fork_child(2)
    impl.brk(impl.brk_ + 4 * PG)
    assert impl.abstract() == child


def maps_count(mm, label):
    return sum(line.endswith(label) for line in spec.maps(mm).splitlines())


def test_brk_into_the_next_mapping_fails_with_the_old_break():
    mm = spec.new_mm()
    mm, _ = spec.mmap(mm, mm.start_brk + 4 * PG, PG, R, FIX)
    mm2, r = spec.brk(mm, mm.brk + 3 * PG + 1)
    assert r == mm.brk and mm2 == mm


def test_mlock_limits_without_cap_ipc_lock():
    cfg = dict(cap_ipc_lock=False, rlimit_memlock=8 * PG)
    mm, rets, _ = play([("mmap", 0, 16, RW, FIX), ("mlock", 0, 16), ("mlock", 0, 4), ("mlock", 4, 4), ("mlock", 8, 1)], **cfg)
    assert rets[1:] == ["ENOMEM", 0, 0, "ENOMEM"]
    assert mm.locked_vm == 8
    mm, rets, _ = play([("mmap", 0, 16, RW, FIX | MAP_LOCKED)], **cfg)
    assert rets == ["EAGAIN"]
    mm, rets, _ = play([("mmap", 0, 16, RW, FIX), ("mlock", 0, 16)])  # root: the rlimit does not apply
    assert rets[-1] == 0 and mm.locked_vm == 16


def test_mlock2_onfault_and_mlockall():
    mm, rets, _ = play([("mmap", 0, 8, RW, FIX), ("mlock2", 0, 8, MLOCK_ONFAULT)])
    assert spec.vmflags(mm.vmas[0].flags).split()[-2:] == ["lf", "ac"] and "lo" in spec.vmflags(mm.vmas[0].flags)
    mm, _ = spec.mlockall(spec.new_mm(), MCL_FUTURE)
    mm, a = spec.mmap(mm, W, PG, RW, FIX)
    assert mm.vmas[0].flags & spec.VM_LOCKED and mm.locked_vm == 1
    mm, _ = spec.munlockall(mm)
    assert mm.locked_vm == 0 and mm.def_flags == 0
    mm, _ = spec.mlockall(mm, MCL_CURRENT)
    assert mm.locked_vm == 1


def test_overcommit_modes_and_meminfo():
    small = dict(totalram_pages=100, overcommit_memory=2)  # CommitLimit = 50 pages
    mm = spec.new_mm(**small)
    assert spec.meminfo(mm) == "CommitLimit:         200 kB\nCommitted_AS:          0 kB\n"
    mm, rets, _ = play([("mmap", 0, 40, RW, FIX), ("mmap", 40, 40, RW, FIX), ("mmap", 80, 40, R, FIX),
                        ("mprotect", 80, 40, RW)], **small)
    assert rets == [0, "ENOMEM", 80, "ENOMEM"]
    assert spec.committed_as(mm) == 40
    mm, rets, _ = play([("mmap", 0, 90, RW, FIX | MAP_NORESERVE)], **small)  # NORESERVE is ignored in mode 2
    assert rets == ["ENOMEM"]
    mm, rets, _ = play([("mmap", 0, 90, RW, FIX | MAP_NORESERVE)], totalram_pages=100)
    assert rets == [0] and spec.committed_as(mm) == 0
    mm, rets, _ = play([("mmap", 0, 101, RW, FIX)], totalram_pages=100)  # mode 0: more than RAM
    assert rets == ["ENOMEM"]
    mm, rets, _ = play([("mmap", 0, 101, RW, FIX)], totalram_pages=100, overcommit_memory=1)
    assert rets == [0]


def test_mremap_dontunmap_keeps_an_empty_old_vma():
    mm, rets, lay = play([("mmap", 0, 4, RW, SHFIX), ("mremap", 0, 4, 4, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0)])
    assert lay[0] == (0, 4, "rw-s") and isinstance(rets[-1], int)
    mm, rets, _ = play([("mmap", 0, 4, RW, FIX), ("mremap", 0, 0, 4, MREMAP_MAYMOVE, 0)])
    assert rets[-1] == "EINVAL"  # old_len 0 on a private mapping


def test_maps_and_vmflags_formats():
    mm = spec.new_mm()
    mm, _ = spec.brk(mm, mm.brk + PG)
    line = spec.maps(mm).splitlines()[0]
    assert line == "555555559000-55555555a000 rw-p 00000000 00:00 0" + " " * 26 + "[heap]"
    mm, _ = spec.mmap(mm, W, PG, RW, FIX)
    assert spec.maps(mm).splitlines()[0] == "200000000000-200000001000 rw-p 00000000 00:00 0 "
    assert spec.smaps_vmflags_line(mm.vmas[0].flags) == "VmFlags: rd wr mr mw me ac \n"


# ---------------------------------------------------------------------------------------------
# Bad input: a typed error and nothing changed, in spec and impl


BAD = [
    ("mmap", (W, 0, RW, FIX), EINVAL),
    ("mmap", (W + 1, PG, RW, FIX), EINVAL),
    ("mmap", (W, PG, RW, MAP_ANONYMOUS | MAP_FIXED), EINVAL),
    ("mmap", (W, PG, RW, FIX | MAP_HUGETLB), EINVAL),
    ("mmap", (W, -PG, RW, FIX), ENOMEM),
    ("mmap", (W, PG, RW, "x"), EINVAL),
    ("munmap", (W + 1, PG), EINVAL),
    ("munmap", (W, 0), EINVAL),
    ("mprotect", (W + 1, PG, R), EINVAL),
    ("mprotect", (W, PG, 0x40), EINVAL),
    ("mprotect", (W + 40 * PG, PG, R), ENOMEM),
    ("madvise", (W, PG, 1234), EINVAL),
    ("madvise", (W + 1, PG, MADV_DONTNEED), EINVAL),
    ("madvise", (W + 40 * PG, PG, MADV_DONTFORK), ENOMEM),
    ("mlock", (W, PG, 8), EINVAL),
    ("mlock", (W + 40 * PG, PG, 0), ENOMEM),
    ("mremap", (W, PG, 2 * PG, 99, 0), EINVAL),
    ("mremap", (W, PG, PG, MREMAP_FIXED, W + 20 * PG), EINVAL),
    ("mremap", (W + 1, PG, PG, 0, 0), EINVAL),
    ("mremap", (W + 40 * PG, PG, PG, 0, 0), EFAULT),
    ("mremap", (W, 9 * PG, 10 * PG, 0, 0), EFAULT),
    ("mremap", (W, PG, 0, 0, 0), EINVAL),
    ("mlockall", (0,), EINVAL),
    ("fault", (W + 40 * PG, True), SIGSEGV),
    ("fault", (W + 9 * PG, True), SIGSEGV),
    ("fork_child", (1,), EINVAL),
]


@pytest.fixture
def busy():
    prog = [("mmap", 0, 8, RW, FIX), ("touch", 0, 4, True), ("mprotect", 2, 1, R), ("mmap", 9, 2, R, FIX)]
    return play(prog)[0]


@pytest.mark.parametrize("op,args,error", BAD, ids=[f"{op}-{i}" for i, (op, _, _) in enumerate(BAD)])
def test_bad_input_raises_a_typed_error_and_changes_nothing(busy, op, args, error):
    impl = VmaSpace(busy)
    before = impl.abstract()
    with pytest.raises(error):
        getattr(spec, op)(busy, *args)
    with pytest.raises(error):
        getattr(impl, op)(*args)
    assert impl.abstract() == before == busy


def test_failed_calls_in_the_middle_roll_back_in_the_impl(busy):
    impl = VmaSpace(busy)
    with pytest.raises(ENOMEM):
        impl.mprotect(W, 12 * PG, RW)
    assert impl.abstract() == busy
    with pytest.raises(ENOMEM):
        spec.mprotect(busy, W, 12 * PG, RW)


def test_impl_scales_and_finds_gaps_by_index():
    impl = VmaSpace()
    for i in range(2000):
        impl.mmap(0, PG * (1 + i % 3), RW if i % 2 else R, MAP_PRIVATE | MAP_ANONYMOUS)
    for v in list(impl.vmas)[::7]:
        impl.munmap(v.start, v.end - v.start)
    mm = impl.abstract()
    for length in (PG, 2 * PG, 5 * PG):
        assert impl.mmap(0, length, PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS) == spec.mmap(mm, 0, length, PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS)[1]
        mm = impl.abstract()
    assert all(p(mm) for _, p in spec_invariants())


def spec_invariants():
    from mmspec.machines import spec_invariants as all_inv

    return [(name, p) for name, p, _ in all_inv(spec)]


def test_explain_is_deterministic_and_shows_maps():
    from mmspec.explain.vma import explain

    a = explain(seed=3)
    assert a == explain(seed=3)
    assert "rw-p" in a and "merge" in a


@pytest.mark.layer("doctests")
def test_docs_page_examples_run():
    """Every >>> example of docs/vma.md runs and prints what the page says."""
    import doctest
    from pathlib import Path

    from mmspec.tally import tally

    page = Path(__file__).resolve().parent.parent / "docs" / "vma.md"
    result = doctest.testfile(str(page), module_relative=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in docs/vma.md failed"
    tally("examples", result.attempted)
