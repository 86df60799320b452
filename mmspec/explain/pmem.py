"""``mmspec explain pmem``: one undo-log transaction, instruction by instruction, with its crashes.

A seed picks a transaction (two or three heap words and their new values).  The walk-through
prints every instruction the library issues (:mod:`spec.pmemtx`), and after each one the crash
images possible at that point and what recovery makes of them -- first on ADR, then the same
transaction with the SFENCE after the log header left out (the crash point and image that
break atomicity), then on eADR, where the CLWBs disappear but the fences stay.  All knowledge
is in the spec; this module only prints what it reports.
"""

from __future__ import annotations

import random

from spec import pmem, pmemtx


def _problem(rng: random.Random, cfg: pmemtx.TxConfig):
    words = rng.sample(range(cfg.heap_words), rng.choice((2, 3)))
    return tuple((w, rng.randint(1, 9)) for w in sorted(words))


def _walk(state: pmemtx.TxState, start: int, out: list[str]) -> None:
    cfg, s = state.config, state.pmem
    recovery = pmemtx.recovery_for(cfg)
    for k in range(start, len(s.events) + 1):
        imgs = pmem.crash_at(s, k)[1]
        heaps = sorted({pmemtx.heap(s, cfg, pmem.recovered(i, recovery)) for i in imgs})
        what = f"{k - 1:3d}  {s.events[k - 1]}" if k > start else "     (before the transaction)"
        out.append(f"  {what:<34} {len(imgs):3d} image(s); recovery gives {', '.join(str(list(h)) for h in heaps)}")


def _without_log_fence(cfg: pmemtx.TxConfig, writes) -> pmemtx.TxState:
    """The same transaction with the SFENCE after the log header's CLWB left out."""
    s = pmemtx.init(cfg).pmem
    good = pmemtx.tx_events(s, cfg, writes)
    hdr_fence = [i for i, e in enumerate(good.events) if e.kind == "sfence"][1]
    events = good.events[:hdr_fence] + good.events[hdr_fence + 1 :]
    bad = pmem.PmemState(good.config, good.initial, events)
    before = pmemtx.heap(s, cfg, volatile=True)
    rec = pmemtx.TxRecord(0, len(events), before, pmemtx.heap(bad, cfg, volatile=True))
    return pmemtx.TxState(cfg, bad, (rec,))


def explain(seed: int = 0, heap_words: int = 8, **options) -> str:
    """The walk-through for ``seed``; ``--heap-words`` sizes the heap."""
    if options:
        raise TypeError(f"unknown option(s) for explain pmem: {', '.join(sorted(options))}")
    rng = random.Random(seed)
    cfg = pmemtx.TxConfig(entries=3, heap_words=heap_words)
    writes = _problem(rng, cfg)
    out = [
        f"mmspec explain pmem --seed {seed}: an undo-log transaction writing "
        + ", ".join(f"heap[{w}] = {v}" for w, v in writes),
        f"Layout: log header at 0x0, log entries from 0x{pmemtx.LOG:x}, heap from 0x{pmemtx.heap_base(cfg):x}"
        " (one 8-byte word per heap index).",
        "Each line: the instruction just executed; how many NVM images a crash right then may leave;",
        "the heaps recovery (roll back if the header counts entries) turns them into.",
        "",
        "ADR (the persistence domain is the memory controller: stores need CLWB + SFENCE):",
    ]
    s, _ = pmemtx.tx_write(pmemtx.init(cfg), writes)
    _walk(s, 0, out)
    out.append(f"  atomic at every crash point: {pmemtx.inv_tx_atomicity(s)}")
    out += ["", "The same transaction without the fence after the log header (a data store may now",
            "persist before the log that undoes it is valid):"]
    bad = _without_log_fence(cfg, writes)
    _walk(bad, 0, out)
    found = pmemtx.violations(bad)
    if found:
        k, img, heap = found[0]
        out.append(f"  broken: a crash after instruction {k - 1} can leave header = {img[0]} with new data in the heap;")
        out.append(f"  recovery does nothing and the heap is {list(heap)}: neither before nor after.")
    else:
        out.append("  (with this transaction the missing fence happens to be harmless)")
    ecfg = cfg._replace(domain="eadr")
    e, _ = pmemtx.tx_write(pmemtx.init(ecfg), writes)
    out += ["", "eADR (the caches are in the persistence domain: libpmem skips the CLWBs, the fences remain):"]
    _walk(e, 0, out)
    out.append(f"  {len(s.pmem.events)} instructions on ADR, {len(e.pmem.events)} on eADR; atomic: {pmemtx.inv_tx_atomicity(e)}")
    return "\n".join(out) + "\n"
