"""TLBs: per-CPU caches of the page walk, and what the hardware lets software do about them.

**The problem.**  A page walk (:mod:`spec.paging`) costs four dependent memory reads on
x86-64.  Every CPU therefore keeps a *translation lookaside buffer*: a small cache of complete
translations (virtual page -> frame, with the rights of the whole path).  The TLB is not kept
coherent with the page tables by the hardware.  After software changes a page-table entry, a
CPU whose TLB holds the old translation goes on using it: a *hit returns the cached entry even
though the page tables changed*.  That is the hazard the software protocol
(:mod:`spec.tlbflush`) exists to cover.

**What an entry holds** (Intel SDM vol. 3A §4.10.2): the PCID it was filled under (or the
global bit), the virtual page and page size (4 KiB, 2 MiB, 1 GiB), the frame, the combined
rights of the walk (R/W and U/S ANDed over all levels, XD ORed), the protection key, and the
leaf's dirty flag.  An entry is created only from a walk that succeeds (:func:`access`); a
write through an entry whose dirty flag is clear walks again to set the PTE's Dirty bit
(§4.8); a page fault invalidates the entries for the faulting address (§4.10.4.1); a hit
whose cached rights forbid the access faults without walking (the "spurious" fault Linux
tolerates).  The CPU may *evict* any entry at any time; :func:`evict` makes that an explicit
step, so that a test can drive it and the lockstep harness can mirror the impl's replacement.

**Invalidation instructions** (§4.10.4.1):

- ``INVLPG addr`` (:func:`invlpg`): the entries for the page of ``addr`` in the *current*
  PCID, and global entries for it, whatever their PCID.
- ``INVPCID`` (:func:`invpcid`) type 0: one address in one PCID, global entries kept; type 1:
  every non-global entry of one PCID; type 2: everything, global entries included; type 3:
  every non-global entry of every PCID.
- ``MOV CR3`` (:func:`write_cr3`): without CR4.PCIDE, every non-global entry; with PCIDE and
  bit 63 (``CR3_NOFLUSH``) clear, the non-global entries of the *new* PCID; with bit 63 set,
  nothing.  Global entries survive every CR3 write.
- Toggling CR4.PGE (:func:`toggle_pge`): everything, global entries included
  (``native_flush_tlb_global``).

**How this model simplifies, and why.**

- One TLB per CPU as a *set* of entries: no capacity, no levels, no associativity.  Which
  entry the hardware evicts is a property of the implementation (``impl/tlb.py`` has
  set-associative L1 and STLB arrays with LRU); the spec only requires that eviction removes
  an entry and nothing else, which is what every correctness argument needs.
- No paging-structure caches (PML4E/PDPTE/PDE caches).  They matter when page-table *pages*
  are freed and reused while a CPU may still walk through them (Linux's ``freed_tables``,
  and the 2018 "tlb-fixes"); in this model page tables of a live mm are never freed (unmap
  keeps them, as ``zap_page_range`` does; only exit frees them), so a cached upper-level entry
  would always point at a live table of the same mm, and caching it changes no outcome.
- x86-64 4-level paging only, user and supervisor data accesses and fetches under the
  default control state of :class:`spec.paging.Access` (WP, SMEP, SMAP, NXE on; PKE off).
- No page-table isolation (PTI): one PCID per ASID, no user/kernel PCID pair.

>>> from spec.tlbflush import populated, switch_mm
>>> s = init(TlbConfig(ncpus=2, nr_mm=1))
>>> s = populated(s, 1, 0x7F0000000000, 0x1000)
>>> s, _ = switch_mm(s, 0, 1)
>>> s, r = access(s, 0, 0x7F0000000123)
>>> r
Lookup(paddr=..., hit=False, fault=None, error_code=0)
>>> s, r = access(s, 0, 0x7F0000000123)
>>> r.hit
True
>>> print(tlb_view(s, 0), end="")
cpu0 (mm 1, asid 1, pcid 2): 1 entries
  pcid 2  0x7f0000000000 4K -> pfn ... rw user nx dirty=0
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from spec import paging, pte
from spec.errors import EBUSY, EINVAL, GeneralProtection, MMError
from spec.paging import Access, PagingConfig, PagingState
from spec.zone import MachineConfig, ZoneSpec

__all__ = [
    "TlbConfig", "TlbState", "Cpu", "Mm", "Entry", "Lookup", "Ipi", "Flush", "Batch", "Stats",
    "init", "access", "evict", "invlpg", "invpcid", "write_cr3", "toggle_pge",
    "switch_mm", "enter_lazy", "populate", "munmap", "mprotect", "advance", "deliver_ipi", "ack_ipi",
    "reclaim_unmap", "reclaim_flush", "reclaim_pageout",
    "tlb_view", "render", "flush_cost", "CostModel",
]

# ---------------------------------------------------------------------------------------------
# Constants

#: arch/x86/include/asm/tlbflush.h: TLB_NR_DYN_ASIDS -- dynamic ASIDs per CPU.
TLB_NR_DYN_ASIDS = 6
#: arch/x86/mm/tlb.c: tlb_single_page_flush_ceiling -- above this many strides, flush all.
TLB_SINGLE_PAGE_FLUSH_CEILING = 33
#: include/asm-generic/tlb.h / arch/x86: TLB_FLUSH_ALL, the "end" of a full flush.
TLB_FLUSH_ALL = -1
#: arch/x86/include/asm/processor-flags.h: X86_CR3_PCID_NOFLUSH (bit 63).
CR3_NOFLUSH = 1 << 63
#: Intel SDM vol. 2A, INVPCID: the four invalidation types.
INVPCID_TYPE_INDIV_ADDR, INVPCID_TYPE_SINGLE_CTXT, INVPCID_TYPE_ALL_INCL_GLOBAL, INVPCID_TYPE_ALL_NON_GLOBAL = 0, 1, 2, 3
#: The id of init_mm (the kernel's own address space, ``swapper_pg_dir``), always mm 0 here.
INIT_MM = 0
PAGE_4K, PAGE_2M, PAGE_1G = 1 << 12, 1 << 21, 1 << 30

#: The machine every small configuration runs on: 2048 pages, orders up to 9 (2 MiB frames).
TLB_MACHINE = MachineConfig("tlb-2048", (ZoneSpec(), ZoneSpec(), ZoneSpec(0, 2048), ZoneSpec(), ZoneSpec()),
                            max_order=9, pageblock_order=9, min_free_kbytes=0)


# ---------------------------------------------------------------------------------------------
# State


class Entry(NamedTuple):
    """One TLB entry: what a successful walk returned, tagged with the PCID it ran under."""

    pcid: int
    vbase: int  # first virtual address of the page
    size: int  # 4 KiB, 2 MiB or 1 GiB
    pfn: int  # first frame of the page
    write: bool
    user: bool
    nx: bool
    pkey: int
    glob: bool  # the PTE's G bit (and CR4.PGE): survives CR3 writes
    dirty: bool  # the leaf's Dirty bit as it was cached


class Slot(NamedTuple):
    """``cpu_tlbstate.ctxs[asid]``: which mm (by ctx_id) an ASID holds, and how far it is
    flushed (the mm's tlb_gen it has caught up to)."""

    ctx_id: int
    tlb_gen: int


class Cpu(NamedTuple):
    """One CPU: its hardware (CR3, TLB) and Linux's ``cpu_tlbstate`` for it."""

    cr3_root: int  # the page-table root CR3 points at
    cr3_pcid: int
    pcide: bool  # CR4.PCIDE
    tlb: frozenset  # of Entry
    loaded_mm: int  # cpu_tlbstate.loaded_mm (an mm id)
    loaded_asid: int  # cpu_tlbstate.loaded_mm_asid
    is_lazy: bool  # cpu_tlbstate_shared.is_lazy
    next_asid: int  # cpu_tlbstate.next_asid
    ctxs: tuple  # of Slot, TLB_NR_DYN_ASIDS of them


class Mm(NamedTuple):
    """The TLB-relevant part of an ``mm_struct``: its root, ``context.ctx_id``,
    ``context.tlb_gen`` and ``mm_cpumask``."""

    root: int
    ctx_id: int
    tlb_gen: int
    cpumask: frozenset


class Ipi(NamedTuple):
    """A flush request in flight to one CPU (``struct flush_tlb_info`` plus the sender)."""

    sender: int
    mm: int
    start: int
    end: int  # TLB_FLUSH_ALL for a full flush
    stride: int
    new_tlb_gen: int


class Flush(NamedTuple):
    """An mmu_gather in progress on its initiating CPU: the changed range, the stage reached,
    the IPIs sent and acknowledged, and the frames to free at the end (``tlb_finish_mmu``)."""

    mm: int
    kind: str  # "munmap" or "mprotect"
    start: int
    end: int  # the span of the changed leaves; start == end when nothing changed
    stride: int
    stage: str  # one of STAGES
    new_tlb_gen: int
    full: bool
    targets: frozenset
    acked: frozenset
    frames: tuple  # (pfn, order) to free once flushed
    local: bool = True  # the initiator flushes its own TLB (a reclaim batch: only if in its mask)


class Batch(NamedTuple):
    """Reclaim's deferred flush on one CPU (``current->tlb_ubc``, x86
    ``arch_tlbflush_unmap_batch``): the CPUs that may cache a page unmapped since the last
    flush, the frames unmapped and not yet flushed ``(pfn, order, dirty)``, the dirty frames
    inside a flush in progress, and the dirty frames flushed and ready for ``pageout``."""

    cpumask: frozenset = frozenset()
    frames: tuple = ()
    flushing: tuple = ()  # (pfn, order): dirty frames inside the batch flush now running
    ready: tuple = ()  # (pfn, order): dirty frames flushed, waiting for writeback

    @property
    def writable(self) -> bool:
        """``tlb_ubc->writable``: a dirty PTE was cleared since the last flush."""
        return any(d for _, _, d in self.frames)


#: The stages of a flush, in order (see :func:`advance`).
STAGES = ("cleared", "bumped", "sent", "flushed_local", "returned")


class Stats(NamedTuple):
    """What the flushes cost so far: IPIs sent, INVLPGs and full flushes, local and remote."""

    ipis: int = 0
    local_invlpg: int = 0
    remote_invlpg: int = 0
    local_full: int = 0
    remote_full: int = 0
    switch_flushes: int = 0


class TlbConfig(NamedTuple):
    """How many CPUs and user mms, whether CPUs have PCID, and the machine's memory."""

    ncpus: int = 2
    nr_mm: int = 2
    pcid: bool = True
    machine: MachineConfig = TLB_MACHINE


@dataclass(frozen=True)
class TlbState:
    """The page tables, the CPUs, the mms, flushes in progress, IPIs in flight, the cost."""

    config: TlbConfig
    paging: PagingState
    cpus: tuple  # of Cpu
    mms: tuple  # of Mm; mms[0] is init_mm
    flushes: tuple  # per CPU: Flush or None
    queues: tuple  # per CPU: tuple of Ipi not yet handled
    handled: tuple  # per CPU: tuple of Ipi handled, not yet acknowledged
    stats: Stats
    batches: tuple = ()  # per CPU: Batch, reclaim's deferred flush


def kern_pcid(asid):
    """``kern_pcid()``: PCID = ASID + 1 (PCID 0 is left to code that knows nothing of PCIDs).

    Contract:

    ```text
    pre: 0 <= asid < TLB_NR_DYN_ASIDS
    post: 1 <= __return__ <= TLB_NR_DYN_ASIDS
    post: __return__ != 0
    ```
    """
    return asid + 1


def is_full_flush(start, end, stride):
    """``get_flush_tlb_info()``: does a flush of [start, end) in strides of ``stride`` bytes
    become a full flush?  Yes above ``tlb_single_page_flush_ceiling`` strides.

    Contract:

    ```text
    pre: stride in (4096, 2097152)
    pre: 0 <= start <= end <= 2 ** 48
    post: __return__ == ((end - start) // stride >= TLB_SINGLE_PAGE_FLUSH_CEILING + 1)
    post: not __return__ or end - start > 33 * stride
    ```
    """
    return (end - start) // stride > TLB_SINGLE_PAGE_FLUSH_CEILING


def pcid_of(state: TlbState, asid: int) -> int:
    """The PCID of an ASID: :func:`kern_pcid`, or 0 when the CPUs have no PCID."""
    return kern_pcid(asid) if state.config.pcid else 0


def asid_of(state: TlbState, pcid: int) -> int:
    """The ASID whose PCID is ``pcid``."""
    return pcid - 1 if state.config.pcid else 0


def init(config: TlbConfig = TlbConfig()) -> TlbState:
    """Boot: init_mm plus ``nr_mm`` user mms (ctx_id 1 for init_mm, then 2, 3, ... as
    ``init_new_context`` hands them out from ``last_mm_ctx_id``); every CPU runs init_mm in
    ASID 0 with an empty TLB (``initialize_tlbstate_and_flush``)."""
    if not (isinstance(config, TlbConfig) and 1 <= config.ncpus <= 8 and 0 <= config.nr_mm <= 6):
        raise EINVAL(f"bad TLB configuration {config!r}")
    pg = paging.init(PagingConfig("x86-64-4level", config.machine, 1 + config.nr_mm))
    mms = tuple(Mm(root, i + 1, 1, frozenset(range(config.ncpus)) if i == INIT_MM else frozenset())
                for i, root in enumerate(pg.mms))
    ctxs = (Slot(1, 1),) + (Slot(0, 0),) * (TLB_NR_DYN_ASIDS - 1)
    cpu = Cpu(pg.mms[0], 1 if config.pcid else 0, config.pcid, frozenset(), INIT_MM, 0, False, 1, ctxs)
    n = config.ncpus
    return TlbState(config, pg, (cpu,) * n, mms, (None,) * n, ((),) * n, ((),) * n, Stats(), (Batch(),) * n)


def _set(tup: tuple, i: int, value) -> tuple:
    return tup[:i] + (value,) + tup[i + 1:]


def _with_cpu(state: TlbState, c: int, **changes) -> TlbState:
    return replace(state, cpus=_set(state.cpus, c, state.cpus[c]._replace(**changes)))


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_cpu(state: TlbState, c) -> None:
    if not _is_int(c) or not 0 <= c < len(state.cpus):
        raise EINVAL(f"{c!r} is not a CPU (0..{len(state.cpus) - 1})")


def _check_mm(state: TlbState, mm, user: bool = True) -> None:
    if not _is_int(mm) or not (1 if user else 0) <= mm < len(state.mms):
        raise EINVAL(f"{mm!r} is not {'a user' if user else 'an'} mm")


# ---------------------------------------------------------------------------------------------
# Hardware: entries, and the predicates the invalidation instructions apply.  Plain operators
# (``&``, ``|``, ``==``), so the proofs run these very predicates on z3 booleans.


def _not(x):
    return x == False  # noqa: E712 -- works on Python and z3 booleans alike


def covers(vbase, size, vaddr):
    """Does a page of ``size`` at ``vbase`` contain ``vaddr``?

    Contract:

    ```text
    pre: size == 4096 or size == 2097152
    pre: vbase % size == 0
    pre: 0 <= vbase < 2 ** 48 and 0 <= vaddr < 2 ** 48
    post: __return__ == (vbase <= vaddr < vbase + size)
    ```

    Written as ``vaddr - vaddr % size`` (the page's base) rather than ``vaddr & ~(size - 1)``:
    the same value for these sizes, and the form every checker handles (z3, CrossHair).
    """
    return vaddr - vaddr % size == vbase


def invlpg_removes(e_pcid, e_glob, e_hit, cur_pcid):
    """SDM §4.10.4.1, INVLPG: an entry that covers the address goes if it is global or in the
    current PCID (``e_hit`` says whether it covers the address)."""
    return e_hit & (e_glob | (e_pcid == cur_pcid))


def invpcid_removes(kind, e_pcid, e_glob, e_hit, pcid):
    """SDM vol. 2A, INVPCID: which entries each type removes (``e_hit``: the entry covers the
    given address; only type 0 looks at it)."""
    t0 = (kind == 0) & e_hit & (e_pcid == pcid) & _not(e_glob)
    t1 = (kind == 1) & (e_pcid == pcid) & _not(e_glob)
    t3 = (kind == 3) & _not(e_glob)
    return t0 | t1 | (kind == 2) | t3


def cr3_write_removes(pcide, noflush, e_pcid, e_glob, new_pcid):
    """SDM §4.10.4.1, MOV to CR3: without PCIDE every non-global entry; with PCIDE and bit 63
    clear the non-global entries of the new PCID; with bit 63 set, none.  Global entries stay."""
    flush_pcid = pcide & _not(noflush) & (e_pcid == new_pcid)
    return _not(e_glob) & (_not(pcide) | flush_pcid)


def _drop(state: TlbState, c: int, removes) -> tuple[TlbState, int]:
    """Remove the entries of CPU ``c`` for which ``removes(entry)`` holds; also how many."""
    tlb = state.cpus[c].tlb
    keep = frozenset(e for e in tlb if not removes(e))
    return (_with_cpu(state, c, tlb=keep) if len(keep) != len(tlb) else state), len(tlb) - len(keep)


class Leaf(NamedTuple):
    """What a walk finds for an address: the leaf's page, frame, combined rights and bits."""

    vbase: int
    size: int
    pfn: int
    write: bool
    user: bool
    nx: bool
    pkey: int
    glob: bool
    dirty: bool


def leaf_of(pg: PagingState, root: int, vaddr: int) -> Leaf | None:
    """The present leaf that maps ``vaddr`` under ``root``, with the rights of its whole path
    (read-only; None if the walk ends at a non-present or reserved entry)."""
    w = paging.walk(pg, root, vaddr, Access("r", user=False, smap=False))
    if not w.steps:
        return None
    last = w.steps[-1]
    d = last.decoded
    if not (d.present and d.leaf) or any(s.decoded.rsvd for s in w.steps):
        return None
    size = pg.mode.leaf_size(last.level)
    return Leaf(vaddr & ~(size - 1), size, d.pfn, all(s.decoded.write for s in w.steps),
                all(s.decoded.user for s in w.steps), any(s.decoded.nx for s in w.steps), d.pkey,
                bool(last.raw & pte._PAGE_GLOBAL), bool(last.raw & pte._PAGE_DIRTY))


def agrees(e: Entry, leaf: Leaf | None) -> bool:
    """An entry agrees with the page tables if they map its page to the same frame with at
    least its rights (a cached entry with *fewer* rights only causes a spurious fault)."""
    return (leaf is not None and leaf.vbase == e.vbase and leaf.size == e.size and leaf.pfn == e.pfn
            and (leaf.write or not e.write) and (leaf.user or not e.user) and (e.nx or not leaf.nx))


class Lookup(NamedTuple):
    """The result of one access: the physical address or the #PF error code, and whether the
    TLB supplied the translation (``hit``)."""

    paddr: int | None
    hit: bool
    fault: str | None  # None, "#PF" or "#GP"
    error_code: int


def _usable(cpu: Cpu, e: Entry) -> bool:
    return e.glob or e.pcid == cpu.cr3_pcid


def lookup(cpu: Cpu, vaddr: int) -> Entry | None:
    """The entry a CPU would use for ``vaddr``: global or in the current PCID, covering it."""
    for e in cpu.tlb:
        if _usable(cpu, e) and covers(e.vbase, e.size, vaddr):
            return e
    return None


def entry_fault(e: Entry, access: Access) -> int:
    """The #PF error code an access gets from an entry's cached rights (0 if allowed): the
    rules of :func:`spec.paging.x86_permission` applied to the entry."""
    ok, _ = paging.x86_permission(e.write, e.user, e.nx, e.pkey, access)
    if ok:
        return 0
    code = paging.X86_PF_PROT | (paging.X86_PF_WRITE if access.op == "w" else 0)
    code |= paging.X86_PF_USER if access.user else 0
    return code | (paging.X86_PF_INSTR if access.op == "x" else 0)


def _check_vaddr(vaddr) -> None:
    if not _is_int(vaddr) or not 0 <= vaddr < 1 << 64:
        raise EINVAL(f"{vaddr!r} is not a 64-bit address")


def access(state: TlbState, cpu: int, vaddr: int, op: str = "r", user: bool = True):
    """One memory access by ``cpu``: a TLB hit returns the cached translation (*even if the
    page tables changed*); a miss, or a write through an entry whose dirty flag is clear,
    walks the page tables of CR3 (:func:`spec.paging.translate`, which sets Accessed/Dirty)
    and fills an entry in the current PCID (global if the leaf has G).  A page fault, from
    the walk or from the cached rights, invalidates the entries for the address; it is
    returned as a value, as is the #GP of a non-canonical address.  A user access needs a user mm loaded and the CPU not lazy (``EINVAL``)."""
    _check_cpu(state, cpu)
    _check_vaddr(vaddr)
    if op not in ("r", "w", "x") or not isinstance(user, bool):
        raise EINVAL(f"bad access {op!r}, user={user!r}")
    c = state.cpus[cpu]
    if user and (c.loaded_mm == INIT_MM or c.is_lazy):
        raise EINVAL(f"cpu{cpu} runs no user task (init_mm or lazy)")
    if state.flushes[cpu] is not None:
        raise EBUSY(f"cpu{cpu} is inside a flush and runs no other code")
    acc = Access(op, user=user)
    e = lookup(c, vaddr)
    if e is not None and not (op == "w" and not e.dirty):
        code = entry_fault(e, acc)
        if code:
            state, _ = invlpg(state, cpu, vaddr)
            return state, Lookup(None, True, "#PF", code)
        return state, Lookup((e.pfn << 12) + (vaddr - e.vbase), True, None, 0)
    if e is not None:  # a write through a clean entry: walk again to set Dirty
        state, _ = invlpg(state, cpu, vaddr)
        c = state.cpus[cpu]
    try:
        pg, paddr = paging.translate(state.paging, c.cr3_root, vaddr, acc)
    except GeneralProtection:  # a non-canonical address: no walk, no TLB change
        return state, Lookup(None, False, "#GP", 0)
    except MMError as err:
        state, _ = invlpg(state, cpu, vaddr)
        return state, Lookup(None, False, "#PF", err.error_code)
    leaf = leaf_of(pg, c.cr3_root, vaddr)
    new = Entry(c.cr3_pcid, leaf.vbase, leaf.size, leaf.pfn, leaf.write, leaf.user, leaf.nx, leaf.pkey,
                leaf.glob, leaf.dirty)
    state = replace(state, paging=pg)
    return _with_cpu(state, cpu, tlb=c.tlb | {new}), Lookup(paddr, False, None, 0)


def evict(state: TlbState, cpu: int, entry: Entry):
    """The hardware drops one entry (capacity, replacement, or any reason at all); ``EINVAL``
    if the CPU holds no such entry."""
    _check_cpu(state, cpu)
    if entry not in state.cpus[cpu].tlb:
        raise EINVAL(f"cpu{cpu} holds no entry {entry!r}")
    return _with_cpu(state, cpu, tlb=state.cpus[cpu].tlb - {entry}), None


def invlpg(state: TlbState, cpu: int, vaddr: int):
    """``INVLPG vaddr``: drop the entries for that page in the current PCID and the global
    ones; returns how many went."""
    _check_cpu(state, cpu)
    _check_vaddr(vaddr)
    cur = state.cpus[cpu].cr3_pcid
    return _drop(state, cpu, lambda e: invlpg_removes(e.pcid, e.glob, covers(e.vbase, e.size, vaddr), cur))


def invpcid(state: TlbState, cpu: int, kind: int, pcid: int = 0, vaddr: int = 0):
    """``INVPCID`` of type ``kind`` (0..3) for ``pcid`` (and ``vaddr`` for type 0); returns how
    many entries went.  ``EINVAL`` (#GP in hardware) for a bad type or PCID."""
    _check_cpu(state, cpu)
    _check_vaddr(vaddr)
    if kind not in (0, 1, 2, 3) or not _is_int(pcid) or not 0 <= pcid < 1 << 12:
        raise EINVAL(f"bad INVPCID type {kind!r} or PCID {pcid!r}")
    return _drop(state, cpu, lambda e: invpcid_removes(kind, e.pcid, e.glob, covers(e.vbase, e.size, vaddr), pcid))


def write_cr3(state: TlbState, cpu: int, root: int, pcid: int = 0, noflush: bool = False):
    """``MOV CR3``: point the CPU at ``root`` with ``pcid`` (bit 63 = ``noflush``), dropping
    what the SDM says; returns how many entries went.  Only the hardware changes: Linux's
    bookkeeping is :func:`switch_mm`'s."""
    _check_cpu(state, cpu)
    c = state.cpus[cpu]
    if root not in state.paging.mms or not _is_int(pcid) or not 0 <= pcid < 1 << 12 or not isinstance(noflush, bool):
        raise EINVAL(f"bad CR3 value: root {root!r}, pcid {pcid!r}, noflush {noflush!r}")
    if not c.pcide and (pcid or noflush):
        raise EINVAL("PCID bits in CR3 without CR4.PCIDE")  # #GP for bit 63; PCID bits are PWT/PCD
    state, n = _drop(state, cpu, lambda e: cr3_write_removes(c.pcide, noflush, e.pcid, e.glob, pcid))
    return _with_cpu(state, cpu, cr3_root=root, cr3_pcid=pcid), n


def toggle_pge(state: TlbState, cpu: int):
    """Clear and set CR4.PGE (``native_flush_tlb_global`` without INVPCID): every entry goes,
    global ones included; returns how many."""
    _check_cpu(state, cpu)
    return _drop(state, cpu, lambda e: True)


#: The Linux protocol lives in spec/tlbflush.py; its operations belong to this state machine too.
PROTOCOL = ("switch_mm", "enter_lazy", "populate", "populated", "munmap", "mprotect", "advance", "deliver_ipi",
            "ack_ipi", "flush_cost", "CostModel", "reclaim_unmap", "reclaim_flush", "reclaim_pageout")


def __getattr__(name: str):
    """``spec.tlb.switch_mm`` and the other protocol operations, from :mod:`spec.tlbflush`."""
    if name in PROTOCOL:
        from spec import tlbflush

        return getattr(tlbflush, name)
    raise AttributeError(name)


# ---------------------------------------------------------------------------------------------
# Invariants


def owner_of(state: TlbState, cpu: int, e: Entry) -> int | None:
    """The mm whose translations a non-global entry caches: the one whose ctx_id holds the
    entry's ASID slot on that CPU (None for a global entry or a slot of no mm)."""
    if e.glob:
        return None
    slot = state.cpus[cpu].ctxs[asid_of(state, e.pcid)]
    for i, mm in enumerate(state.mms):
        if mm.ctx_id == slot.ctx_id:
            return i
    return None


def stale_entries(state: TlbState):
    """Every (cpu, entry, mm) whose non-global entry disagrees with its mm's page tables."""
    out = []
    for c, cpu in enumerate(state.cpus):
        for e in sorted(cpu.tlb):
            mm = owner_of(state, c, e)
            if mm is not None and not agrees(e, leaf_of(state.paging, state.mms[mm].root, e.vbase)):
                out.append((c, e, mm))
    return out


def _excused(state: TlbState, c: int, e: Entry, mm: int) -> bool:
    """A stale entry is allowed while a flush of its mm that covers it has not returned, or
    while its CPU will flush before using it: its ASID slot is behind the mm's tlb_gen and the
    CPU does not run the mm non-lazily in that ASID."""
    for f in state.flushes:
        if f is not None and f.mm == mm and f.stage != "returned" and (f.full or f.start <= e.vbase < f.end
                                                                       or e.vbase <= f.start < e.vbase + e.size):
            return True
    if e.pfn in reclaim_pending_frames(state):
        return True
    cpu = state.cpus[c]
    asid = asid_of(state, e.pcid)
    running = cpu.loaded_mm == mm and not cpu.is_lazy and cpu.loaded_asid == asid
    return cpu.ctxs[asid].tlb_gen < state.mms[mm].tlb_gen and not running


def reclaim_pending_frames(state: TlbState) -> frozenset:
    """The frames reclaim has unmapped whose batch flush has not returned yet."""
    out = set()
    for b in state.batches:
        out.update(pfn for pfn, _, _ in b.frames)
        out.update(pfn for pfn, _ in b.flushing)
    for f in state.flushes:
        if f is not None and f.kind == "reclaim" and f.stage != "returned":
            out.update(pfn for pfn, _ in f.frames)
    return frozenset(out)


def inv_reclaim_batch_covers(state: TlbState) -> bool:
    """Every CPU that can still use an entry for a frame in a reclaim batch not yet flushed is
    in that batch's cpumask (``arch_tlbbatch_add_pending`` ORs in ``mm_cpumask``), and no
    frame is back in the buddy allocator while a batch holds it."""
    free = state.paging.buddy.buddy
    for b in state.batches:
        held = {pfn for pfn, _, _ in b.frames} | {pfn for pfn, _ in b.flushing + b.ready}
        if any(pfn in free for pfn in held):
            return False
        pending = {pfn for pfn, _, _ in b.frames}
        for c, cpu in enumerate(state.cpus):
            if c in b.cpumask:
                continue
            for e in cpu.tlb:
                if e.pfn in pending and (e.glob or (e.pcid == cpu.cr3_pcid and not cpu.is_lazy)):
                    return False
    return True


def inv_coherent_after_flush(state: TlbState) -> bool:
    """TLB coherence: once a flush returns, no CPU running the mm holds an entry that
    disagrees with its page tables, and every other stale entry sits in an ASID that is
    behind the mm's tlb_gen (so its CPU flushes before it next uses the mm)."""
    return all(_excused(state, c, e, mm) for c, e, mm in stale_entries(state))


def inv_no_usable_entry_to_free_frame(state: TlbState) -> bool:
    """A frame is never back in the buddy allocator while an entry its CPU can use (global, or
    in the current PCID of a CPU that is not lazy) still maps it."""
    free = state.paging.buddy.buddy
    for cpu in state.cpus:
        for e in cpu.tlb:
            if e.glob or (e.pcid == cpu.cr3_pcid and not cpu.is_lazy):
                for head, order in free.items():
                    if head < e.pfn + (e.size >> 12) and e.pfn < head + (1 << order):
                        return False
    return True


def inv_entries_tagged_by_live_slot(state: TlbState) -> bool:
    """Every non-global entry is tagged with the PCID of an ASID slot that holds an mm."""
    return all(e.glob or owner_of(state, c, e) is not None for c, cpu in enumerate(state.cpus) for e in cpu.tlb)


def inv_one_entry_per_address(state: TlbState) -> bool:
    """A CPU never holds two entries that it could both use for one address."""
    for cpu in state.cpus:
        es = sorted(cpu.tlb)
        for i, a in enumerate(es):
            for b in es[i + 1:]:
                same_space = a.glob or b.glob or a.pcid == b.pcid
                if same_space and (covers(a.vbase, a.size, b.vbase) or covers(b.vbase, b.size, a.vbase)):
                    return False
    return True


def inv_cr3_matches_loaded_mm(state: TlbState) -> bool:
    """CR3 holds the loaded mm's root and the PCID of the loaded ASID, whose slot holds that mm."""
    for cpu in state.cpus:
        mm = state.mms[cpu.loaded_mm]
        if (cpu.cr3_root, cpu.cr3_pcid) != (mm.root, pcid_of(state, cpu.loaded_asid)):
            return False
        if cpu.ctxs[cpu.loaded_asid].ctx_id != mm.ctx_id:
            return False
    return True


def inv_asids_distinct(state: TlbState) -> bool:
    """No mm holds two ASID slots on one CPU, and no slot is ahead of its mm's tlb_gen."""
    ctx = {mm.ctx_id: mm for mm in state.mms}
    for cpu in state.cpus:
        used = [s.ctx_id for s in cpu.ctxs if s.ctx_id]
        if len(used) != len(set(used)) or any(s.ctx_id in ctx and s.tlb_gen > ctx[s.ctx_id].tlb_gen for s in cpu.ctxs):
            return False
    return True


def inv_cpumask_exact(state: TlbState) -> bool:
    """``mm_cpumask`` of a user mm holds exactly the CPUs whose loaded mm it is, lazy or not."""
    return all(mm.cpumask == frozenset(c for c, cpu in enumerate(state.cpus) if cpu.loaded_mm == i)
               for i, mm in enumerate(state.mms) if i != INIT_MM)


def inv_ipis_belong_to_flushes(state: TlbState) -> bool:
    """Every IPI queued or awaiting its acknowledgement belongs to a flush that sent it and
    waits for it; acknowledgements come only from targets."""
    for c, (queue, done) in enumerate(zip(state.queues, state.handled)):
        for ipi in queue + done:
            f = state.flushes[ipi.sender]
            if f is None or c not in f.targets or c in f.acked or f.stage not in ("sent", "flushed_local"):
                return False
    return all(f is None or f.acked <= f.targets for f in state.flushes)


# ---------------------------------------------------------------------------------------------
# Views


def _flags(e: Entry) -> str:
    return " ".join(("rw" if e.write else "ro", "user" if e.user else "kernel", "nx" if e.nx else "x")
                    + (("global",) if e.glob else ()) + (f"dirty={int(e.dirty)}",))


def tlb_view(state: TlbState, cpu: int) -> str:
    """One CPU's TLB as a table: PCID, page, size, frame, cached rights."""
    c = state.cpus[cpu]
    lines = [f"cpu{cpu} (mm {c.loaded_mm}{', lazy' if c.is_lazy else ''}, asid {c.loaded_asid}, pcid {c.cr3_pcid}): "
             f"{len(c.tlb)} entries"]
    for e in sorted(c.tlb):
        size = {PAGE_4K: "4K", PAGE_2M: "2M", PAGE_1G: "1G"}.get(e.size, hex(e.size))
        lines.append(f"  pcid {e.pcid}  {e.vbase:#x} {size} -> pfn {e.pfn} {_flags(e)}")
    return "\n".join(lines) + "\n"


def render(state: TlbState) -> str:
    """How a counterexample shows the state: mms, CPUs with their TLBs (stale entries
    marked), flushes and IPIs in flight, and the mapped pages."""
    stale = {(c, e) for c, e, _ in stale_entries(state)}
    out = []
    for i, mm in enumerate(state.mms):
        mask = "" if i == INIT_MM else f" cpumask {sorted(mm.cpumask)}"
        out.append(f"mm {i}{' (init_mm)' if i == INIT_MM else ''}: root pfn {mm.root} ctx_id {mm.ctx_id} "
                   f"tlb_gen {mm.tlb_gen}{mask}")
        if i != INIT_MM:
            for level, _, _, raw, start in paging._overlapping_leaves(state.paging, mm.root, 0, 1 << 47):
                out.append(f"  maps {start:#x} -> pfn {paging._decode(state.paging.mode, raw, level).pfn}")
    for c, cpu in enumerate(state.cpus):
        slots = " ".join(f"[{a}]={s.ctx_id}@{s.tlb_gen}" for a, s in enumerate(cpu.ctxs) if s.ctx_id)
        out.append(tlb_view(state, c).rstrip() + f"  slots {slots}")
        for e in sorted(cpu.tlb):
            if (c, e) in stale:
                out.append(f"  STALE: cpu{c} {e.vbase:#x} -> pfn {e.pfn} no longer matches the page tables")
        if state.flushes[c]:
            out.append(f"  flush in progress: {state.flushes[c]}")
        for ipi in state.queues[c]:
            out.append(f"  IPI queued: {ipi}")
        for ipi in state.handled[c]:
            out.append(f"  IPI handled, not acked: {ipi}")
        if state.batches and state.batches[c] != Batch():
            out.append(f"  reclaim batch: {state.batches[c]}")
    free = sorted(state.paging.buddy.buddy.items())
    out.append(f"free blocks (pfn, order): {free[:8]}{' ...' if len(free) > 8 else ''}")
    out.append(f"stats: {state.stats}")
    return "\n".join(out) + "\n"
