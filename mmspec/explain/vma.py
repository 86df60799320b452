"""``mmspec explain vma`` (or ``mmap``): placement, split and merge on a concrete address space.

A seed picks a short program on a 16-page window: mappings placed with MAP_FIXED_NOREPLACE,
an un-hinted mapping placed top-down, an mprotect that splits a VMA, writes that give VMAs
anon_vmas, and an mprotect that restores the protection, which merges the pieces back or, when
the two sides have different anon_vmas, merges only with the previous one.  Every step prints
``/proc/PID/maps`` as the spec computes it and says which rule decided.  All the knowledge is
in :mod:`spec.vma`: this module only draws the program and narrates what the spec reports.
"""

from __future__ import annotations

import random

from spec import vma
from spec.mman import MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_PRIVATE, PROT_READ, PROT_WRITE

PG = 4096
W = vma.WINDOW_BASE
RW = PROT_READ | PROT_WRITE
FIX = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE


def _maps(mm) -> str:
    lines = []
    for v in mm.vmas:
        av = "no anon_vma" if v.anon_vma is None else f"anon_vma #{v.anon_vma & 0xFFFFF}"
        lines.append(f"    {vma.maps_line(mm, v).rstrip():<56} ({av}, pgoff {v.pgoff:#x})")
    return "\n".join(lines)


def explain(seed: int = 0, quiz: bool = False, **options) -> str:
    """The walk-through for ``seed``; ``--quiz`` prints the program only (work it out first)."""
    if options:
        raise TypeError(f"unknown option(s) for explain vma: {', '.join(sorted(options))}")
    rng = random.Random(seed)
    n = rng.choice([6, 8, 10])
    cut = rng.randrange(2, n - 3)
    width = rng.choice([1, 2])
    write_left, write_right = rng.random() < 0.8, rng.random() < 0.6
    mm = vma.new_mm(mmap_base=W + 64 * PG)
    plan = [
        (f"mmap {n} pages RW at the window (MAP_FIXED_NOREPLACE)", "mmap", (W, n * PG, RW, FIX)),
        ("mmap 2 pages RW directly above it", "mmap", (W + n * PG, 2 * PG, RW, FIX)),
        ("mmap 3 pages RW with no hint", "mmap", (0, 3 * PG, RW, MAP_PRIVATE | MAP_ANONYMOUS)),
        (f"mprotect pages [{cut},{cut + width}) to PROT_READ", "mprotect", (W + cut * PG, width * PG, PROT_READ)),
    ]
    if write_left:
        plan.append(("write page 0 (left of the hole)", "fault", (W, True)))
    if write_right:
        plan.append((f"write page {cut + width} (right of the hole)", "fault", (W + (cut + width) * PG, True)))
    plan.append((f"mprotect pages [{cut},{cut + width}) back to RW", "mprotect", (W + cut * PG, width * PG, RW)))
    out = [
        f"mmspec explain vma --seed {seed}: a window at {W:#x}, mmap_base at {mm.mmap_base:#x}",
        "",
        "The program (predict /proc/PID/maps after each step before reading on):",
        *(f"{i + 1:2d}. {text}" for i, (text, _, _) in enumerate(plan)),
        "",
    ]
    if quiz:
        return "\n".join(out)
    for i, (text, op, args) in enumerate(plan):
        before = mm
        mm, result = getattr(vma, op)(mm, *args)
        out.append(f"{i + 1:2d}. {text} -> {hex(result) if op == 'mmap' else result}")
        out.append("    " + _why(op, args, before, mm, result))
        out.append(_maps(mm))
        out.append("")
    out.append("Final /proc/PID/maps:")
    out.append(vma.maps(mm).rstrip("\n"))
    return "\n".join(out)


def _why(op, args, before, after, result) -> str:
    """The rule of spec.vma that decided this step, in the kernel's words."""
    grew = len(after.vmas) - len(before.vmas)
    if op == "mmap" and not args[0]:
        return (f"get_unmapped_area: no hint, so top-down first fit: the highest gap below mmap_base "
                f"that fits 3 pages; the range ends at {result + 3 * PG:#x}.")
    if op == "mmap":
        if grew == 0:
            return ("vma_merge_new_range: the new range is adjacent to a VMA with equal flags, no "
                    "file, contiguous pgoff and a compatible (here: no) anon_vma, so that VMA grows: merge.")
        return "no neighbour to merge with: a new VMA is inserted."
    if op == "fault":
        v = vma.vma_at(after, args[0])
        return (f"the first write fault calls anon_vma_prepare(): the VMA gets anon_vma "
                f"#{v.anon_vma & 0xFFFFF} (a neighbour's is reused only if it differs just in R/W/X).")
    if op == "mprotect" and args[2] == PROT_READ:
        return (f"vma_modify_flags: the range is inside one VMA with other flags, so split_vma cuts it "
                f"out ({'+' if grew >= 0 else ''}{grew} VMAs).")
    if grew == -2:
        return ("vma_merge_existing_range: prev, the range and next all agree (anon_vmas equal or "
                "absent), so all three merge into one VMA.")
    if grew == -1:
        return ("vma_merge_existing_range: prev and next carry different anon_vmas, so the 3-way merge "
                "is refused and the range merges with prev first (prev-first preference).")
    return "no merge was possible; the flags changed in place."
