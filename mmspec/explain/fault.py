"""``mmspec explain fault`` and ``mmspec explain fork``: demand paging, then copy-on-write.

The seed picks the number of pages (2 to 4) and which side writes first after the fork.  Part
one maps anonymous memory and follows each fault: a read maps the zero page, a write gives a
fresh zeroed frame (after ``anon_vma_prepare``), a file read is a major fault the first time
and a minor one (with fault-around) after.  Part two forks: which PTEs become read-only in both
processes, which write copies and which reuses, and what pagemap shows at each step.  All the
knowledge is in :mod:`spec.fault`; this module only tells the story.  The command line passes
the topic the reader typed: ``fault`` prints part one, ``fork`` part two (after setting up the
same written pages in one line).
"""

from __future__ import annotations

import random

from spec import fault
from spec.fault import FaultConfig
from spec.mman import MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_PRIVATE, PROT_READ, PROT_WRITE
from spec.zone import PAGE_SIZE

BASE = 0x200000000000


def _pm(s, pid, a, n) -> str:
    rows = []
    for i, (present, excl, file, cls) in enumerate(fault.pagemap(s, pid, a, n)):
        pte = fault.pte_at(s, pid, a + i * PAGE_SIZE)
        rw = "" if pte is None else (" rw" if pte[1] else " read-only")
        rows.append(f"     page {i}: present={present} exclusive={excl} file={file} {cls}{rw}")
    return "\n".join(rows)


TOPICS = ("fault", "fork")


def explain(seed: int = 0, topic: str = "fault", **options) -> str:
    """The walk-through text of ``topic`` (``fault``: demand paging; ``fork``: copy-on-write)
    for ``seed``."""
    if options:
        raise TypeError(f"unknown option(s) for explain {topic}: {', '.join(sorted(options))}")
    if topic not in TOPICS:
        raise TypeError(f"explain fault serves the topics {', '.join(TOPICS)}, not {topic!r}")
    rng = random.Random(seed)
    n = rng.randint(2, 4)
    child_first = rng.random() < 0.5
    if topic == "fault":
        s, a, out = _demand_paging(seed, n)
    else:
        s, a, out = _setup_for_fork(seed, n)
    if topic == "fork":
        out += _copy_on_write(s, a, n, child_first)
    return "\n".join(out) + "\n"


def _setup_for_fork(seed: int, n: int):
    """The pages part one leaves (page 0 written after a read, the others written), in one line."""
    s = fault.init(FaultConfig(128))
    s, a = fault.mmap(s, 1, BASE, n * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
    s, _ = fault.touch(s, 1, a, False)
    for i in range(n):
        s, _ = fault.write(s, 1, a + i * PAGE_SIZE, i + 1)
    out = [f"mmspec explain fork --seed {seed}: copy-on-write across fork on {n} pages of private anonymous memory",
           "", f"Setup: the parent maps {n} pages and writes each (page i holds i+1; `mmspec explain fault` shows "
           "how each got its frame):", fault.maps(s, 1).rstrip(), _pm(s, 1, a, n),
           f"   minflt = {s.procs[1].minflt}", ""]
    return s, a, out


def _demand_paging(seed: int, n: int):
    """Part one: the zero page, the first write, a fresh write, a file's major and minor faults."""
    s = fault.init(FaultConfig(128))
    out = [f"mmspec explain fault --seed {seed}: demand paging on {n} pages of private anonymous memory", ""]
    s, a = fault.mmap(s, 1, BASE, n * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
    out += ["mmap() creates the VMA only; no page exists yet:", fault.maps(s, 1).rstrip(), _pm(s, 1, a, n), ""]
    s, kind = fault.touch(s, 1, a, False)
    out += [f"1. Read page 0: #PF, handle_mm_fault -> do_anonymous_page ({kind}): a read of never-written "
            "anonymous memory maps the one shared zero page, read-only; no frame is allocated and no anon_vma.",
            _pm(s, 1, a, 1), f"   minflt = {s.procs[1].minflt}", ""]
    s, kind = fault.write(s, 1, a, 1)
    out += [f"2. Write page 0: the PTE is read-only, so #PF again -> do_wp_page on the zero page ({kind}): "
            "anon_vma_prepare(), a zeroed frame, mapped writable and exclusive.  Two faults for one page.",
            _pm(s, 1, a, 1), f"   minflt = {s.procs[1].minflt}", ""]
    for i in range(1, n):
        s, kind = fault.write(s, 1, a + i * PAGE_SIZE, i + 1)
    pages = "page 1" if n == 2 else f"pages 1..{n - 1}"
    out += [f"3. Write {pages} without reading first: one fault each, straight to a fresh frame ({kind}).",
            _pm(s, 1, a, n), f"   minflt = {s.procs[1].minflt}", ""]
    f = fault.init(FaultConfig(128))
    f, b = fault.mmap(f, 1, BASE, 4 * PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_FIXED_NOREPLACE, 1, 0)
    f, k1 = fault.touch(f, 1, b, False)
    f, _ = fault.munmap(f, 1, b, 4 * PAGE_SIZE)
    f, b = fault.mmap(f, 1, BASE, 4 * PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_FIXED_NOREPLACE, 1, 0)
    f, k2 = fault.touch(f, 1, b + PAGE_SIZE, False)
    out += [f"4. A file: the first read of page 0 of a regular file reads it from the disk into the page cache "
            f"({k1}: a major fault, majflt = 1).  Mapped again and page 1 read: do_read_fault first maps "
            f"the pages already cached around it (fault-around over an aligned 64 KiB window), then reads page 1 "
            f"in ({k2}, majflt = {f.procs[1].majflt}); page 0 came back without a fault of its own:",
            _pm(f, 1, b, 2), ""]
    return s, a, out


def _copy_on_write(s, a: int, n: int, child_first: bool) -> list[str]:
    """Part two: fork write-protects, the first writer copies, the second reuses, exit frees."""
    out = []
    s, c = fault.fork(s, 1)
    out += [f"1. fork() -> child {c}.  copy_page_range copies the PTEs of private VMAs that have an anon_vma; "
            "copy_present_pte clears PageAnonExclusive and write-protects the PTE in BOTH processes "
            "(is_cow_mapping).  Each frame now has mapcount 2:",
            "   parent:", _pm(s, 1, a, n), "   child:", _pm(s, c, a, n), ""]
    first, second = (c, 1) if child_first else (1, c)
    name = {1: "parent", c: "child"}
    s, kind = fault.write(s, first, a, 10)
    out += [f"2. The {name[first]} writes page 0 first: a write-protect fault; do_wp_page finds the page shared "
            f"(not exclusive, refcount 2), so wp_page_copy gives the {name[first]} its own copy ({kind}).  "
            f"The {name[second]} keeps the original, now mapped once:",
            f"   {name[first]}:", _pm(s, first, a, 1), f"   {name[second]}:", _pm(s, second, a, 1), ""]
    s, kind = fault.write(s, second, a, 20)
    out += [f"3. The {name[second]} writes page 0: still a fault (its PTE is read-only), but the page is now "
            f"referenced only by this mapping, so wp_can_reuse_anon_folio() lets it keep the page ({kind}): "
            "no copy.  Who copies is decided by who writes first, not by parent or child.",
            f"   {name[second]}:", _pm(s, second, a, 1), ""]
    s, _ = fault.exit(s, c)
    s, kind = fault.write(s, 1, a + PAGE_SIZE, 30)
    out += [f"4. The child exits; the parent writes page 1, which the child never touched: the child's exit "
            f"dropped its reference, so the parent reuses it ({kind}).",
            _pm(s, 1, a, n), "",
            f"Reads: parent page 0 = {fault.read(s, 1, a)[1]}, page 1 = {fault.read(s, 1, a + PAGE_SIZE)[1]}.  "
            f"Faults: parent minflt = {s.procs[1].minflt}.", ""]
    return out
