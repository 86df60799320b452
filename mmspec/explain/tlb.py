"""``mmspec explain shootdown``: one TLB shootdown step by step, then what shootdowns cost.

``mmspec explain shootdown --cpus 64 --pages 1,16,64,1024`` first runs a small example on the
spec (three CPUs, one of them lazy, running one mm; the seed picks which pages are cached and
which page is unmapped): every step of ``munmap`` -> ``flush_tlb_mm_range`` -> IPIs ->
``flush_tlb_func`` -> acknowledgements -> ``tlb_finish_mmu``, with the TLBs after each, and
the stale entry a CPU keeps using until its IPI arrives.  Then the cost table of
:func:`spec.tlbflush.flush_cost` for 1, 2, 4 ... up to ``--cpus`` CPUs and each number of
``--pages``: IPIs, INVLPGs or full flushes, how long the caller waits and how much CPU time
the machine spends, with the point where ``tlb_single_page_flush_ceiling`` (33) turns a
ranged flush into a full one.  ``--quiz`` prints the problem only.
"""

from __future__ import annotations

import random

from spec import tlb, tlbflush
from spec.tlb import PAGE_4K, TlbConfig
from spec.tlbflush import CostModel, flush_cost

BASE = 0x7F0000000000


def _pages(pages) -> list[int]:
    if isinstance(pages, int):
        return [pages]
    try:
        return [int(p, 0) for p in str(pages).split(",") if p]
    except ValueError:
        raise TypeError(f"--pages takes numbers separated by commas, got {pages!r}") from None


def _tlbs(s) -> list[str]:
    return ["    " + line for c in range(len(s.cpus)) for line in tlb.tlb_view(s, c).rstrip().splitlines()]


def _walkthrough(seed: int) -> list[str]:
    rng = random.Random(seed)
    s = tlb.init(TlbConfig(ncpus=3, nr_mm=1))
    npages = rng.randint(2, 4)
    for k in range(npages):
        s = tlbflush.populated(s, 1, BASE + k * PAGE_4K)
    victim = BASE + rng.randrange(npages) * PAGE_4K
    out = [f"Set-up: mm 1 maps {npages} pages at {BASE:#x}; cpu0, cpu1 and cpu2 run it and touch pages;",
           "cpu2 then runs a kernel thread (lazy TLB: mm 1 stays loaded).", ""]
    for c in range(3):
        s, _ = tlbflush.switch_mm(s, c, 1)
        for k in range(npages):
            if c == 0 and k == (victim - BASE) // PAGE_4K or rng.random() < 0.7:
                s, _ = tlb.access(s, c, BASE + k * PAGE_4K)
    s, _ = tlb.access(s, 1, victim)
    s, _ = tlb.access(s, 2, victim)
    s, _ = tlbflush.enter_lazy(s, 2)
    out += ["TLBs before:", *_tlbs(s), "", f"Problem: cpu0 calls munmap({victim:#x}, 4096). Which CPUs flush, how, and when",
            "may the frame go back to the buddy allocator?", ""]
    return out, s, victim


def explain(seed: int = 0, cpus: int = 64, pages="1,16,64,1024", quiz: bool = False, **options) -> str:
    """The walk-through text for ``seed``."""
    if options:
        raise TypeError(f"unknown option(s) for explain shootdown: {', '.join(sorted(options))}")
    if not isinstance(cpus, int) or cpus < 1:
        raise TypeError(f"--cpus takes a positive number, got {cpus!r}")
    sizes = _pages(pages)
    out, s, victim = _walkthrough(seed)
    if quiz:
        return "\n".join(out + ["Run again without --quiz for the answer."]) + "\n"
    s, n = tlbflush.munmap(s, 0, victim, PAGE_4K)
    out.append(f"1. munmap: tlb_gather_mmu + zap_pte_range clear {n} PTE; the frame is gathered, not freed.")
    s, _ = tlbflush.advance(s, 0)
    out.append(f"2. flush_tlb_mm_range: inc_mm_tlb_gen -> mm 1 tlb_gen {s.mms[1].tlb_gen}; 1 page <= 33: a ranged flush.")
    s, _ = tlbflush.advance(s, 0)
    targets = sorted(s.flushes[0].targets)
    out.append(f"3. flush_tlb_multi: mm_cpumask = {sorted(s.mms[1].cpumask)}; IPIs to {targets} "
               "(should_flush_tlb skips cpu2: it is lazy, and catches up when it next runs mm 1).")
    s, _ = tlbflush.advance(s, 0)
    out.append("4. cpu0 runs flush_tlb_func locally: INVLPG, its slot now at the new tlb_gen.")
    s, r = tlb.access(s, 1, victim)
    out.append(f"5. Meanwhile cpu1 still hits its stale entry: access({victim:#x}) -> hit={r.hit}, "
               f"paddr {r.paddr:#x} -- the frame is still allocated, so this is harmless *only because* it is not freed yet.")
    for c in targets:
        s, what = tlbflush.deliver_ipi(s, c)
        out.append(f"6. The IPI reaches cpu{c}: flush_tlb_func -> {what}.")
        s, _ = tlbflush.ack_ipi(s, c)
        out.append(f"7. cpu{c} acknowledges (csd unlock).")
    s, _ = tlbflush.advance(s, 0)
    out.append("8. Every target acknowledged: flush_tlb_mm_range returns. No CPU running mm 1 can use the old translation.")
    s, _ = tlbflush.advance(s, 0)
    out.append("9. tlb_finish_mmu frees the frame to the buddy allocator -- only now.")
    out += ["", "TLBs after (cpu2's entry is stale but its ASID is behind tlb_gen, so it cannot be used):", *_tlbs(s)]
    s, (asid, flushed) = tlbflush.switch_mm(s, 2, 1)
    out += [f"10. cpu2 leaves the kernel thread: switch_mm_irqs_off sees its slot behind -> flush={flushed}.",
            f"    Invariants hold: coherence {tlb.inv_coherent_after_flush(s)}, "
            f"no usable entry to a free frame {tlb.inv_no_usable_entry_to_free_frame(s)}.", ""]
    out += _cost_table(cpus, sizes)
    return "\n".join(out) + "\n"


def _cost_table(cpus: int, sizes: list[int]) -> list[str]:
    m = CostModel()
    out = [f"What a shootdown costs (INVLPG {m.invlpg_ns} ns per page, a full flush {m.full_ns} ns with its refills, "
           f"an IPI round trip {m.ipi_ns} ns, {m.ipi_send_ns} ns per extra target, interrupt entry {m.irq_ns} ns on each target):",
           f"{'cpus':>5} {'pages':>6} {'flush':>7} {'IPIs':>5} {'INVLPGs':>8} {'full':>5} {'caller waits':>13} {'all CPUs spend':>15}"]
    counts, c = [], 1
    while c < cpus:
        counts.append(c)
        c *= 2
    counts.append(cpus)
    for n in counts:
        for p in sizes:
            k = flush_cost(n, p, m)
            out.append(f"{n:>5} {p:>6} {'full' if k.full else 'ranged':>7} {k.ipis:>5} {k.invlpgs:>8} {k.full_flushes:>5} "
                       f"{k.initiator_ns / 1000:>10.1f} us {k.total_cpu_ns / 1000:>12.1f} us")
    below, above = flush_cost(1, 33, m), flush_cost(1, 34, m)
    out += ["", f"The ceiling: 33 pages are flushed page by page ({below.initiator_ns / 1000:.1f} us locally); 34 pages "
            f"become one full flush ({above.initiator_ns / 1000:.1f} us), whatever the range.",
            "The cost grows with the CPUs that run the mm (one IPI and one interrupt each) far more than with the pages:",
            "that is why Linux skips lazy CPUs, batches flushes (mmu_gather, reclaim's deferred flush) and, on AMD,",
            "uses INVLPGB broadcasts for mms that run on many CPUs."]
    return out
