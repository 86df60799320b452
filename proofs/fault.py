"""Theorems about demand paging and copy-on-write (spec/fault.py).

The arithmetic theorems run the spec's own :func:`spec.fault.encode_pagemap` /
:func:`~spec.fault.decode_pagemap`, :func:`~spec.fault.access_error`,
:func:`~spec.fault.pgprot`, :func:`~spec.fault.pte_writable` and
:func:`~spec.fault.can_reuse_anon` on z3 values.  The protocol theorems explore every
interleaving of fork, write, read and exit of up to three processes on one or two pages, through
the spec's transitions, and check every invariant of the spec in every state reached --
copy-on-write isolation (each process reads back what it last wrote) and exact reference and
map counts among them.
"""

from __future__ import annotations

import z3

from proofs._z3 import ProofResult, explore, prove, registry
from spec import fault, pte
from spec.fault import FaultConfig
from spec.mman import MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE
from spec.vma import VM_EXEC, VM_MAYWRITE, VM_READ, VM_SHARED, VM_WRITE
from spec.zone import PAGE_SIZE

THEOREMS, theorem = registry()

present, excl, file, pfn, flags = z3.BitVecs("present exclusive file pfn flags", 64)
BIT = (z3.ULE(present, 1), z3.ULE(excl, 1), z3.ULE(file, 1), z3.ULT(pfn, 1 << 55))


@theorem("A pagemap entry decodes to the present, exclusive and file bits and the PFN it was built from, for every PFN below 2^55.")
def thm_pagemap_roundtrip() -> ProofResult:
    d = fault.decode_pagemap(fault.encode_pagemap(present, excl, file, pfn))
    return prove(z3.And(d[0] == present, d[1] == excl, d[2] == file, d[3] == pfn), BIT)


@theorem("A pagemap entry never sets the soft-dirty (55), uffd-wp (57), guard (58) or swap (62) bits, and bit 63 is exactly 'present'.")
def thm_pagemap_reserved_bits() -> ProofResult:
    e = fault.encode_pagemap(present, excl, file, pfn)
    others = (1 << 55) | (1 << 57) | (1 << 58) | (1 << 59) | (1 << 60) | (1 << 62)
    return prove(z3.And(e & others == 0, z3.LShR(e, 63) == present), BIT)


@theorem("access_error(): a write fault is allowed exactly when the VMA has VM_WRITE; a read fault when it has any of read, write, exec.")
def thm_access_error() -> ProofResult:
    w = fault.access_error(True, flags)
    r = fault.access_error(False, flags)
    return prove(z3.And(w == (flags & VM_WRITE == 0), r == (flags & (VM_READ | VM_WRITE | VM_EXEC) == 0)))


@theorem("Populating never meets an access error: a VMA MADV_POPULATE_* accepts allows that fault, mm_populate's write faults go only to writable VMAs, and its read faults only to accessible ones.")
def thm_populate_within_access() -> ProofResult:
    write = z3.Bool("write")
    accessible = flags & (VM_READ | VM_WRITE | VM_EXEC) != 0
    ok = z3.And(
        z3.Implies(z3.Not(fault.populate_refused(flags, write)), z3.Not(fault.access_error(write, flags))),
        z3.Implies(fault.gup_write(flags), z3.Not(fault.access_error(True, flags))),
        z3.Implies(accessible, z3.Not(fault.access_error(False, flags))),
    )
    return prove(ok)


@theorem("The PTE a fault installs never grants more than its VMA: user-accessible only if the VMA allows some access, executable only with VM_EXEC, writable only when asked and only with VM_WRITE.")
def thm_pgprot_within_vma() -> ProofResult:
    shmem, wf, ex = z3.Bools("shmem write_fault exclusive")
    ro, rw = fault.pgprot(flags, False), fault.pgprot(flags, True)
    ok = z3.And(
        z3.Implies(ro & pte._PAGE_USER != 0, flags & (VM_READ | VM_WRITE | VM_EXEC) != 0),
        z3.Implies(ro & pte._PAGE_NX == 0, flags & VM_EXEC != 0),
        ro & pte._PAGE_RW == 0, rw & pte._PAGE_RW != 0, rw & ~pte._PAGE_RW == ro,
        z3.Implies(fault.pte_writable(flags, shmem, wf, ex), flags & VM_WRITE != 0),
    )
    return prove(ok)


@theorem("A private mapping's PTE is writable only for an exclusive anonymous page, whatever the write fault or file kind.")
def thm_private_writable_only_if_exclusive() -> ProofResult:
    shmem, wf, ex = z3.Bools("shmem write_fault exclusive")
    writable = fault.pte_writable(flags, shmem, wf, ex)
    return prove(z3.Implies(z3.And(flags & VM_SHARED == 0, writable), ex))


@theorem("do_wp_page() reuses an anonymous page iff it is marked exclusive or holds exactly one reference (so never while another PTE or a pin holds it, unless exclusive).")
def thm_reuse_predicate() -> ProofResult:
    ex = z3.Bool("exclusive")
    ref, maps, pins = z3.Ints("refcount mapcount pins")
    reuse = fault.can_reuse_anon(ex, ref)
    pre = (ref == maps + pins, maps >= 1, pins >= 0)
    return prove(z3.And(z3.Implies(z3.And(z3.Not(ex), z3.Or(maps >= 2, pins >= 1)), z3.Not(reuse)),
                        z3.Implies(z3.Or(ex, ref == 1), reuse)), pre)


@theorem("is_cow_mapping() holds exactly for private mappings that may be written (VM_MAYWRITE without VM_SHARED).")
def thm_cow_mapping() -> ProofResult:
    c = fault.is_cow_mapping(flags)
    return prove(c == z3.And(flags & VM_SHARED == 0, flags & VM_MAYWRITE != 0))


P = PAGE_SIZE
BASE = 0x200000000000


def _start(pages: int, shared: bool = False):
    s = fault.init(FaultConfig(64, files=()))
    flags = (MAP_SHARED if shared else MAP_PRIVATE) | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
    s, _ = fault.mmap(s, 1, BASE, pages * P, PROT_READ | PROT_WRITE, flags)
    return s


def _successors(pages: int, max_procs: int, values=(1, 2)):
    def succ(s):
        for pid in sorted(s.procs):
            for i in range(pages):
                for v in values:
                    yield fault.write(s, pid, BASE + i * P, v)[0]
                yield fault.touch(s, pid, BASE + i * P, False)[0]
            if len(s.procs) < max_procs and s.next_pid <= max_procs:
                yield fault.fork(s, pid)[0]
            if len(s.procs) > 1:
                yield fault.exit(s, pid)[0]
    return succ


def _invariants():
    return [f for n, f in vars(fault).items() if n.startswith("inv_") and callable(f)]


@theorem("Every interleaving of up to 5 writes (two values), reads, forks and exits of at most 3 processes on one private page keeps copy-on-write isolation and exact counts.")
def thm_cow_three_processes_one_page() -> ProofResult:
    return explore(_start(1), _successors(1, 3), _invariants(), fault.render, 5)


@theorem("Every interleaving of up to 4 writes, reads, forks and exits of at most 2 processes on two private pages keeps copy-on-write isolation and exact counts.")
def thm_cow_two_processes_two_pages() -> ProofResult:
    return explore(_start(2), _successors(2, 2), _invariants(), fault.render, 4)


@theorem("Every interleaving of up to 4 writes, reads, forks and exits of at most 3 processes on a shared anonymous page keeps every write visible to every sharer.")
def thm_shared_stays_shared() -> ProofResult:
    return explore(_start(1, shared=True), _successors(1, 3), _invariants(), fault.render, 4)
