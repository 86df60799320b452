"""Linux's TLB protocol on x86-64 (arch/x86/mm/tlb.c, mm/mmu_gather.c): ASIDs, lazy TLB, shootdowns.

**ASIDs and PCIDs.**  With PCID, a CR3 write need not flush: entries are tagged with the PCID
they were filled under, and only the current PCID's are used.  Linux gives each CPU
``TLB_NR_DYN_ASIDS`` = 6 ASID slots, each remembering which mm (``ctx_id``) it holds and up
to which of that mm's flush generations (``tlb_gen``) it is clean.  ``switch_mm_irqs_off``
(:func:`switch_mm`) asks ``choose_new_asid``: a slot already holding the mm is reused, and
flushed only if its tlb_gen is behind the mm's; otherwise the next slot round-robin is taken,
with a flush (CR3 without the no-flush bit 63).  Without PCID every switch flushes.

**Lazy TLB.**  A kernel thread has no user address space, so the scheduler does not switch
CR3 for it: ``enter_lazy_tlb`` (:func:`enter_lazy`) just sets ``is_lazy`` and keeps the
previous mm loaded.  Flush IPIs skip lazy CPUs (``should_flush_tlb``); a lazy CPU that gets
one anyway switches to init_mm; when it returns to the same mm, ``switch_mm_irqs_off``
compares the slot's tlb_gen with the mm's and flushes if it fell behind.

**The flush** (``flush_tlb_mm_range``, ``flush_tlb_func``).  Changing a user mapping
(:func:`munmap`, :func:`mprotect`) runs as an *mmu_gather*: the PTEs are changed first, then
:func:`advance` takes the steps of the flush one at a time so that other CPUs can act in
between: (1) ``inc_mm_tlb_gen`` bumps the mm's generation; a range of more than
``tlb_single_page_flush_ceiling`` = 33 strides becomes a full flush; (2) IPIs are queued for
every other CPU in ``mm_cpumask`` that runs the mm and is not lazy; (3) the initiator flushes
its own TLB; (4) it waits until every target has acknowledged, and *returns*: from here on no
CPU running the mm may hold a translation the page tables no longer give; (5)
``tlb_finish_mmu`` frees the gathered frames to the buddy allocator, only now.  A target
handles an IPI (:func:`deliver_ipi`) and acknowledges it (:func:`ack_ipi`) as separate steps.
``flush_tlb_func`` catches a CPU up: if its slot is already at the mm's generation nothing is
done; a *partial* flush (INVLPG per stride) is done only if the request is ranged and exactly
one generation ahead of the CPU and the newest; otherwise the whole PCID is flushed.

**Reclaim's deferred flush** (mm/rmap.c, mm/vmscan.c, arch/x86/mm/tlb.c).  Reclaim unmaps
pages of many mms and cannot afford a shootdown per page.  ``try_to_unmap_one`` with
``TTU_BATCH_FLUSH`` clears the PTE and calls ``set_tlb_ubc_flush_pending``:
``arch_tlbbatch_add_pending`` bumps the mm's tlb_gen and ORs ``mm_cpumask(mm)`` into the
reclaiming task's batch, and a dirty PTE marks the batch *writable*
(:func:`reclaim_unmap`).  ``shrink_folio_list`` then calls ``try_to_unmap_flush``
(:func:`reclaim_flush`): x86 ``arch_tlbbatch_flush`` sends one *full* flush (a
``flush_tlb_info`` with no mm, ``TLB_FLUSH_ALL`` and no generation) to every CPU of the mask
that is not lazy, itself included if it is in the mask, and clears the mask.  It runs in the
same steps as any flush (:func:`advance`); only when it returns are the clean frames freed.
A dirty page must not be written back while a CPU may still write to it through a stale
entry (the write would be lost): ``pageout`` is preceded by ``try_to_unmap_flush_dirty``
(``reclaim_flush(..., dirty_only=True)``), and :func:`reclaim_pageout` refuses (``EBUSY``) a
frame whose flush has not returned; written back, the frame is freed.

**How this model simplifies, and why.**

- ``mm_cpumask`` is exact: a CPU leaves it when it switches away, as Linux did before 6.13.
  Newer kernels clear the bit lazily (at the first flush IPI for an mm the CPU no longer
  runs, trimmed at most once a second); the set of CPUs that must flush is the same.
- Reclaim always batches.  Linux batches only when ``arch_tlbbatch_should_defer`` sees
  another CPU in ``mm_cpumask`` and otherwise flushes the one page at once
  (``ptep_clear_flush``); a batch whose mask holds at most the reclaimer is the same flush,
  later.  Pages are 4 KiB; the page's only mapping is the one unmapped (no rmap walk over
  several mms per page), and writeback completes at once.
- No INVLPGB/global ASIDs (AMD broadcast flush), no PTI, no ``freed_tables`` (page tables of
  a live mm are never freed here, so lazy CPUs are always skipped), no kernel-range flushes
  (``flush_tlb_kernel_range``), no secondary MMUs.
- The range flushed is the span of the leaves actually changed (mmu_gather's
  ``tlb->start/end``), and nothing is flushed when no leaf changed; the stride is 2 MiB when
  only huge leaves were cleared (``tlb_get_unmap_shift``).
- A CPU inside a flush runs nothing else: it takes IPIs (IRQs are on while it waits) but does
  not switch, go lazy, or access user memory until the flush is done.

>>> from spec import tlb
>>> s = tlb.init(tlb.TlbConfig(ncpus=2, nr_mm=1))
>>> s = populated(s, 1, 0x7F0000000000, 0x1000)
>>> for c in (0, 1):
...     s, _ = switch_mm(s, c, 1)
...     s, _ = tlb.access(s, c, 0x7F0000000000)
>>> s, n = munmap(s, 0, 0x7F0000000000, 0x1000)
>>> s, _ = advance(s, 0)            # bump tlb_gen
>>> s, _ = advance(s, 0)            # queue the IPI for cpu1
>>> s, _ = advance(s, 0)            # flush cpu0's own TLB
>>> s, r = tlb.access(s, 1, 0x7F0000000000)   # cpu1 still hits the stale entry
>>> r.hit, r.paddr is not None
(True, True)
>>> s, what = deliver_ipi(s, 1)
>>> what
'partial flush of 1 page'
>>> s, _ = ack_ipi(s, 1)
>>> s, _ = advance(s, 0)            # all acknowledged: flush_tlb_mm_range returns
>>> s, _ = advance(s, 0)            # tlb_finish_mmu frees the frame
>>> tlb.inv_coherent_after_flush(s) and tlb.inv_no_usable_entry_to_free_frame(s)
True
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from spec import paging, pte
from spec import tlb as hw
from spec.errors import EBUSY, EINVAL

__all__ = ["switch_mm", "enter_lazy", "populate", "populated", "munmap", "mprotect", "advance", "deliver_ipi",
           "ack_ipi", "choose_new_asid", "flush_tlb_func", "CostModel", "flush_cost", "reclaim_unmap", "reclaim_flush",
           "reclaim_pageout"]


#: arch/x86/include/asm/tlbflush.h: TLB_GENERATION_INVALID -- a flush that catches up to no
#: particular generation (reclaim's batch flush).
TLB_GENERATION_INVALID = 0
#: A flush_tlb_info with no mm (``info->mm == NULL``): every CPU that gets it flushes.
NO_MM = -1


def _stats(state, **add):
    return replace(state, stats=state.stats._replace(**{k: getattr(state.stats, k) + v for k, v in add.items()}))


def _set_mm(state, i: int, **changes):
    return replace(state, mms=hw._set(state.mms, i, state.mms[i]._replace(**changes)))


def _idle(state, cpu: int) -> None:
    if state.flushes[cpu] is not None:
        raise EBUSY(f"cpu{cpu} is inside a flush and runs no other code")


# ---------------------------------------------------------------------------------------------
# Context switches


def choose_new_asid(state, cpu: int, mm: int, next_tlb_gen: int):
    """``choose_new_asid()``: ``(asid, need_flush, next_asid)``.  Reuse the slot holding the
    mm (flush only if it is behind ``next_tlb_gen``), else take ``next_asid`` round-robin
    (wrapping to 0) and flush; without PCID always ASID 0 and a flush.

    >>> from spec import tlb
    >>> s = tlb.init(tlb.TlbConfig(ncpus=1, nr_mm=1))
    >>> choose_new_asid(s, 0, 1, 1)
    (1, True, 2)
    """
    c = state.cpus[cpu]
    if not state.config.pcid:
        return 0, True, c.next_asid
    ctx = state.mms[mm].ctx_id
    for asid, slot in enumerate(c.ctxs):
        if slot.ctx_id == ctx:
            return asid, slot.tlb_gen < next_tlb_gen, c.next_asid
    asid = c.next_asid
    if asid >= hw.TLB_NR_DYN_ASIDS:
        return 0, True, 1
    return asid, True, asid + 1


def _switch(state, cpu: int, mm: int, lazy_catch_up: bool = True):
    """``switch_mm_irqs_off(prev, next)`` without the checks: ``(state, (asid, flushed))``."""
    c = state.cpus[cpu]
    prev, was_lazy = c.loaded_mm, c.is_lazy
    state = hw._with_cpu(state, cpu, is_lazy=False)
    c = state.cpus[cpu]
    if prev == mm:
        if not was_lazy or not lazy_catch_up:
            return state, (c.loaded_asid, False)
        next_gen = state.mms[mm].tlb_gen
        if c.ctxs[c.loaded_asid].tlb_gen == next_gen:
            return state, (c.loaded_asid, False)
        asid, need_flush, next_asid = c.loaded_asid, True, c.next_asid  # fell behind while lazy
    else:
        if prev != hw.INIT_MM:
            state = _set_mm(state, prev, cpumask=state.mms[prev].cpumask - {cpu})
        if mm != hw.INIT_MM:
            state = _set_mm(state, mm, cpumask=state.mms[mm].cpumask | {cpu})
        next_gen = state.mms[mm].tlb_gen
        asid, need_flush, next_asid = choose_new_asid(state, cpu, mm, next_gen)
    ctxs = c.ctxs
    if need_flush:
        ctxs = hw._set(ctxs, asid, hw.Slot(state.mms[mm].ctx_id, next_gen))
        state = _stats(state, switch_flushes=1)
    state = hw._with_cpu(state, cpu, ctxs=ctxs, next_asid=next_asid, loaded_mm=mm, loaded_asid=asid)
    pcid = hw.pcid_of(state, asid)
    state, _ = hw.write_cr3(state, cpu, state.mms[mm].root, pcid, noflush=state.config.pcid and not need_flush)
    return state, (asid, need_flush)


def switch_mm(state, cpu: int, mm: int):
    """``switch_mm_irqs_off()``: run ``mm`` (0 = init_mm) on ``cpu``; returns ``(asid,
    flushed)``.  Switching to the mm already loaded is free unless the CPU was lazy and fell
    behind the mm's tlb_gen, in which case it flushes (the lazy catch-up)."""
    hw._check_cpu(state, cpu)
    hw._check_mm(state, mm, user=False)
    _idle(state, cpu)
    return _switch(state, cpu, mm)


def enter_lazy(state, cpu: int):
    """``enter_lazy_tlb()``: a kernel thread starts on ``cpu``; the user mm stays loaded, and
    the CPU is marked lazy (nothing happens if init_mm is loaded)."""
    hw._check_cpu(state, cpu)
    _idle(state, cpu)
    if state.cpus[cpu].loaded_mm == hw.INIT_MM:
        return state, None
    return hw._with_cpu(state, cpu, is_lazy=True), None


# ---------------------------------------------------------------------------------------------
# Changing mappings: the mmu_gather


def populate(state, mm: int, vaddr: int, size: int = hw.PAGE_4K):
    """A page fault that maps a fresh frame (4 KiB, or a 2 MiB THP) read-write at ``vaddr`` in
    ``mm``.  Not-present to present needs no flush on x86.  Returns the frame."""
    hw._check_mm(state, mm)
    if size not in (hw.PAGE_4K, hw.PAGE_2M):
        raise EINVAL(f"size {size!r} is neither 4 KiB nor 2 MiB")
    pg, pfn = paging.alloc_data(state.paging, 0 if size == hw.PAGE_4K else 9)
    pg, _ = paging.map(pg, state.mms[mm].root, vaddr, pfn, size, pte.PAGE_SHARED, size)
    return replace(state, paging=pg), pfn


def populated(state, mm: int, vaddr: int, size: int = hw.PAGE_4K):
    """:func:`populate`, keeping only the state (for examples)."""
    return populate(state, mm, vaddr, size)[0]


def _begin(state, cpu: int, kind: str, vaddr: int, size: int, change):
    hw._check_cpu(state, cpu)
    _idle(state, cpu)
    c = state.cpus[cpu]
    if c.loaded_mm == hw.INIT_MM or c.is_lazy:
        raise EINVAL(f"cpu{cpu} runs no user task: {kind} is a system call of the mm's own thread")
    mm = c.loaded_mm
    root = state.mms[mm].root
    pg, _ = change(state.paging, root)  # validates the range first: raises before anything changes
    leaves = paging._leaves_within(state.paging, root, vaddr, size)
    if not leaves:
        return replace(state, paging=pg), 0
    spans = [(start, state.paging.mode.leaf_size(level)) for level, _, _, _, start in leaves]
    start, end = min(s for s, _ in spans), max(s + n for s, n in spans)
    stride = hw.PAGE_2M if all(n == hw.PAGE_2M for _, n in spans) else hw.PAGE_4K
    frames = ()
    if kind == "munmap":
        frames = tuple(sorted((paging._decode(state.paging.mode, raw, level).pfn, 0 if level == 1 else 9)
                              for level, _, _, raw, _ in leaves))
    f = hw.Flush(mm, kind, start, end, stride, "cleared", 0, False, frozenset(), frozenset(), frames)
    return replace(state, paging=pg, flushes=hw._set(state.flushes, cpu, f)), len(leaves)


def munmap(state, cpu: int, vaddr: int, size: int):
    """``munmap()`` by the task on ``cpu``: ``tlb_gather_mmu`` + ``zap_page_range`` clear every
    leaf in the range now; the flush and the freeing of the frames follow step by step
    (:func:`advance`).  Returns the number of leaves cleared (0: nothing to flush)."""
    return _begin(state, cpu, "munmap", vaddr, size, lambda pg, root: paging.unmap(pg, root, vaddr, size))


def mprotect(state, cpu: int, vaddr: int, size: int, prot: int):
    """``mprotect()`` by the task on ``cpu``: ``change_protection`` rewrites the leaves now;
    the flush follows (:func:`advance`).  Returns the number of leaves changed."""
    return _begin(state, cpu, "mprotect", vaddr, size, lambda pg, root: paging.protect(pg, root, vaddr, size, prot))


def flush_tlb_func(state, cpu: int, f: hw.Ipi, local: bool):
    """``flush_tlb_func()`` on ``cpu`` for the request ``f``: ``(state, what it did)``."""
    c = state.cpus[cpu]
    if not local and f.mm != NO_MM and f.mm != c.loaded_mm:
        return state, "nothing: the mm is no longer loaded"
    if c.loaded_mm == hw.INIT_MM:
        return state, "nothing: init_mm"
    if c.is_lazy:
        state, _ = _switch(state, cpu, hw.INIT_MM)
        return state, "lazy: switched to init_mm"
    mm_gen = state.mms[c.loaded_mm].tlb_gen
    local_gen = c.ctxs[c.loaded_asid].tlb_gen
    if local_gen == mm_gen or (f.new_tlb_gen != TLB_GENERATION_INVALID and f.new_tlb_gen <= local_gen):
        return state, "nothing: already up to date"
    partial = f.end != hw.TLB_FLUSH_ALL and f.new_tlb_gen == local_gen + 1 and f.new_tlb_gen == mm_gen
    if partial:
        pages = range(f.start, f.end, f.stride)
        for addr in pages:
            state, _ = hw.invlpg(state, cpu, addr)
        state = _stats(state, **{("local_invlpg" if local else "remote_invlpg"): len(pages)})
        what = f"partial flush of {len(pages)} page{'s' if len(pages) != 1 else ''}"
    else:  # flush_tlb_local(): rewrite CR3 without the no-flush bit
        state, _ = hw.write_cr3(state, cpu, c.cr3_root, c.cr3_pcid, noflush=False)
        state = _stats(state, **{("local_full" if local else "remote_full"): 1})
        what = "full flush"
    c = state.cpus[cpu]
    ctxs = hw._set(c.ctxs, c.loaded_asid, c.ctxs[c.loaded_asid]._replace(tlb_gen=mm_gen))
    return hw._with_cpu(state, cpu, ctxs=ctxs), what


def _ipi_of(f: hw.Flush, cpu: int) -> hw.Ipi:
    mm = NO_MM if f.kind == "reclaim" else f.mm
    return hw.Ipi(cpu, mm, 0 if f.full else f.start, hw.TLB_FLUSH_ALL if f.full else f.end, f.stride, f.new_tlb_gen)


# ---------------------------------------------------------------------------------------------
# Reclaim: the deferred, batched flush


def reclaim_unmap(state, cpu: int, mm: int, vaddr: int):
    """Reclaim on ``cpu`` unmaps the 4 KiB page at ``vaddr`` of ``mm`` (``try_to_unmap_one``
    with ``TTU_BATCH_FLUSH``): the PTE is cleared now; ``set_tlb_ubc_flush_pending`` bumps the
    mm's tlb_gen, ORs its ``mm_cpumask`` into the batch and records the frame (and whether the
    PTE was dirty).  Nothing is flushed.  Returns the frame.  The reclaimer may be any CPU
    (kswapd is a kernel thread: usually lazy) that is not inside a flush."""
    hw._check_cpu(state, cpu)
    hw._check_mm(state, mm)
    hw._check_vaddr(vaddr)
    _idle(state, cpu)
    root = state.mms[mm].root
    base = vaddr & ~(hw.PAGE_4K - 1)
    leaves = paging._leaves_within(state.paging, root, base, hw.PAGE_4K) if base < 1 << 47 else []
    if len(leaves) != 1 or leaves[0][0] != 1:
        raise EINVAL(f"no 4 KiB page of mm {mm} is mapped at {vaddr:#x}")
    level, _, _, raw, _ = leaves[0]
    pfn = paging._decode(state.paging.mode, raw, level).pfn
    pg, _ = paging.unmap(state.paging, root, base, hw.PAGE_4K)
    m = state.mms[mm]
    state = _set_mm(replace(state, paging=pg), mm, tlb_gen=m.tlb_gen + 1)  # inc_mm_tlb_gen()
    b = state.batches[cpu]
    b = b._replace(cpumask=b.cpumask | m.cpumask, frames=b.frames + ((pfn, 0, bool(raw & pte._PAGE_DIRTY)),))
    return replace(state, batches=hw._set(state.batches, cpu, b)), pfn


def reclaim_flush(state, cpu: int, dirty_only: bool = False):
    """``try_to_unmap_flush()`` (``try_to_unmap_flush_dirty()`` with ``dirty_only``: only if a
    dirty PTE was cleared) on ``cpu``: start ``arch_tlbbatch_flush``, one full flush of every
    CPU in the batch's mask, as a flush that :func:`advance` takes through its steps; its clean
    frames are freed when it is done, its dirty frames become ready for :func:`reclaim_pageout`.
    Returns ``"started"``, or ``"nothing"`` when no flush is required."""
    hw._check_cpu(state, cpu)
    if not isinstance(dirty_only, bool):
        raise EINVAL(f"dirty_only {dirty_only!r} is not a bool")
    _idle(state, cpu)
    b = state.batches[cpu]
    if not b.frames or (dirty_only and not b.writable):
        return state, "nothing"
    clean = tuple((pfn, order) for pfn, order, dirty in b.frames if not dirty)
    dirty = tuple((pfn, order) for pfn, order, d in b.frames if d)
    f = hw.Flush(hw.INIT_MM, "reclaim", 0, hw.TLB_FLUSH_ALL, hw.PAGE_4K, "bumped", TLB_GENERATION_INVALID, True,
                 b.cpumask, frozenset(), clean, cpu in b.cpumask)
    b = hw.Batch(frozenset(), (), b.flushing + dirty, b.ready)  # cpumask_clear(): the flush has the mask
    return replace(state, flushes=hw._set(state.flushes, cpu, f), batches=hw._set(state.batches, cpu, b)), "started"


def reclaim_pageout(state, cpu: int, pfn: int):
    """``pageout()`` of a dirty frame reclaim on ``cpu`` unmapped: write it back and free it.
    ``EBUSY`` while its flush has not returned (``try_to_unmap_flush_dirty`` must come first: a
    CPU could still write through a stale entry and the write would be lost); ``EINVAL`` if the
    frame is not a dirty frame of this batch."""
    hw._check_cpu(state, cpu)
    _idle(state, cpu)
    b = state.batches[cpu]
    ready = [i for i, (p, _) in enumerate(b.ready) if p == pfn]
    if not ready:
        if any(p == pfn and d for p, _, d in b.frames) or any(p == pfn for p, _ in b.flushing):
            raise EBUSY(f"frame {pfn} is dirty and not flushed yet: try_to_unmap_flush_dirty() first")
        raise EINVAL(f"frame {pfn} is not a dirty frame of cpu{cpu}'s reclaim batch")
    i = ready[0]
    pg, _ = paging.free_data(state.paging, pfn, b.ready[i][1])
    b = b._replace(ready=b.ready[:i] + b.ready[i + 1:])
    return replace(state, paging=pg, batches=hw._set(state.batches, cpu, b)), None


def advance(state, cpu: int):
    """The flush on ``cpu`` takes its next step (see the module text); returns the stage
    reached, ``"done"`` after the frames are freed.  ``EINVAL`` if no flush is in progress,
    ``EBUSY`` while a target has not acknowledged."""
    hw._check_cpu(state, cpu)
    f = state.flushes[cpu]
    if f is None:
        raise EINVAL(f"no flush in progress on cpu{cpu}")
    if f.stage == "cleared":  # inc_mm_tlb_gen(); get_flush_tlb_info()
        gen = state.mms[f.mm].tlb_gen + 1
        state = _set_mm(state, f.mm, tlb_gen=gen)
        full = hw.is_full_flush(f.start, f.end, f.stride)
        f = f._replace(stage="bumped", new_tlb_gen=gen, full=full)
    elif f.stage == "bumped":  # flush_tlb_multi(): IPIs to the CPUs should_flush_tlb() picks
        mask = f.targets if f.kind == "reclaim" else state.mms[f.mm].cpumask  # the batch's mask, or the mm's
        targets = frozenset(c for c in mask if c != cpu and not state.cpus[c].is_lazy)
        queues = tuple(q + (_ipi_of(f, cpu),) if c in targets else q for c, q in enumerate(state.queues))
        state = _stats(replace(state, queues=queues), ipis=len(targets))
        f = f._replace(stage="sent", targets=targets)
    elif f.stage == "sent":  # the initiator's own flush_tlb_func(local=True)
        if f.local:
            state, _ = flush_tlb_func(state, cpu, _ipi_of(f, cpu), local=True)
        f = f._replace(stage="flushed_local")
    elif f.stage == "flushed_local":  # wait for every csd to unlock; flush_tlb_mm_range() returns
        if f.acked != f.targets:
            raise EBUSY(f"cpu{cpu} waits for acknowledgements from {sorted(f.targets - f.acked)}")
        f = f._replace(stage="returned")
    else:  # tlb_finish_mmu(): only now the gathered frames go back to the buddy
        pg = state.paging
        for pfn, order in f.frames:
            pg, _ = paging.free_data(pg, pfn, order)
        state = replace(state, paging=pg, flushes=hw._set(state.flushes, cpu, None))
        if f.kind == "reclaim":  # the dirty frames may now be written back
            b = state.batches[cpu]
            b = b._replace(flushing=(), ready=b.ready + b.flushing)
            state = replace(state, batches=hw._set(state.batches, cpu, b))
        return state, "done"
    return replace(state, flushes=hw._set(state.flushes, cpu, f)), f.stage


def deliver_ipi(state, cpu: int):
    """The oldest flush IPI queued for ``cpu`` interrupts it and ``flush_tlb_func`` runs;
    returns what it did.  ``EINVAL`` if none is queued."""
    hw._check_cpu(state, cpu)
    if not state.queues[cpu]:
        raise EINVAL(f"no IPI queued for cpu{cpu}")
    ipi = state.queues[cpu][0]
    state = replace(state, queues=hw._set(state.queues, cpu, state.queues[cpu][1:]),
                    handled=hw._set(state.handled, cpu, state.handled[cpu] + (ipi,)))
    return flush_tlb_func(state, cpu, ipi, local=False)


def ack_ipi(state, cpu: int):
    """``cpu`` acknowledges the oldest IPI it has handled (``csd_unlock``): the sender's
    flush sees it.  ``EINVAL`` if none awaits acknowledgement."""
    hw._check_cpu(state, cpu)
    if not state.handled[cpu]:
        raise EINVAL(f"cpu{cpu} has no handled IPI to acknowledge")
    ipi = state.handled[cpu][0]
    f = state.flushes[ipi.sender]
    state = replace(state, handled=hw._set(state.handled, cpu, state.handled[cpu][1:]),
                    flushes=hw._set(state.flushes, ipi.sender, f._replace(acked=f.acked | {cpu})))
    return state, None


# ---------------------------------------------------------------------------------------------
# The cost of a shootdown


class CostModel(NamedTuple):
    """Rough costs in nanoseconds.  ``invlpg_ns``: arch/x86/mm/tlb.c says of the ceiling
    "each single flush is about 100 ns, so this caps the maximum overhead at _about_ 3,000 ns";
    ``full_ns``: the CR3 write plus refilling the working set, taken as the break-even that
    the ceiling of 33 implies (33 x 100 ns); ``ipi_ns``: one IPI round trip (send, interrupt
    entry on the target, acknowledgement seen by the sender), a few microseconds;
    ``ipi_send_ns``: the sender's extra cost per target (writing the ICR, one csd each)."""

    invlpg_ns: int = 100
    full_ns: int = 3300
    ipi_ns: int = 2500
    ipi_send_ns: int = 60
    irq_ns: int = 1000  # interrupt entry and exit on the target, paid by every target


class Cost(NamedTuple):
    """One shootdown: the decision, the work counted, and the time it takes."""

    full: bool
    ipis: int
    invlpgs: int  # INVLPGs executed, over all CPUs
    full_flushes: int  # full flushes, over all CPUs
    initiator_ns: int  # how long the caller of flush_tlb_mm_range waits
    total_cpu_ns: int  # CPU time spent on all CPUs together


def flush_cost(cpus: int, pages: int, model: CostModel = CostModel(), stride_pages: int = 1) -> Cost:
    """The cost of flushing ``pages`` pages of an mm running on ``cpus`` CPUs (the initiator
    among them): ranged below the ceiling, full above it; targets flush in parallel.

    >>> flush_cost(1, 33).full, flush_cost(1, 34).full
    (False, True)
    >>> flush_cost(64, 16).ipis
    63
    """
    full = hw.is_full_flush(0, pages * hw.PAGE_4K, stride_pages * hw.PAGE_4K)
    per_cpu = model.full_ns if full else (pages // stride_pages) * model.invlpg_ns
    ipis = cpus - 1
    remote = model.ipi_ns + per_cpu if ipis else 0
    initiator = per_cpu + ipis * model.ipi_send_ns + remote
    total = initiator + ipis * (model.irq_ns + per_cpu)
    return Cost(full, ipis, 0 if full else cpus * (pages // stride_pages), cpus if full else 0, initiator, total)
