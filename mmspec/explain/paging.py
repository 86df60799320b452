"""``mmspec explain walk``: a page walk from virtual address to physical frame, level by level.

``mmspec explain walk 0x7ffd12345678 --mode x86-64-4level`` (or ``--mode x86-64-5level``,
``--mode arm64-4k``, ``arm64-16k``, ``arm64-64k``, ``x86-32``, ``x86-pae``, ``toy``,
``toy-3level``: every preset of :data:`spec.paging.MODES`) builds a small address space in which that address is
mapped (the seed picks the frames, and whether a neighbouring address is left unmapped, mapped
read-only or with a 2 MiB leaf: 4 MiB, 32 MiB or 512 MiB where that is the mode's), then prints the walk: each level's table address, the index
bits, the entry read and its decoded bits, the next table, and the physical address or the
fault with its error code.  ``--access w|r|x``, ``--kernel`` (a supervisor access) and
``--quiz`` (the problem only) are the other options; ``--vaddr`` works as well as the
positional address.  All the knowledge is in :mod:`spec.paging`.
"""

from __future__ import annotations

import random

from spec import paging, pte
from spec.errors import MMError
from spec.paging import Access, PagingConfig
from spec.zone import MachineConfig, ZoneSpec

_E = ZoneSpec()
DEFAULTS = {"toy": 0x611C, "toy-3level": 0xBEEF, "x86-32": 0x0804A123, "x86-pae": 0x0804A123}


def _machine(m: paging.Mode) -> MachineConfig:
    """Four blocks of the mode's huge-leaf order (at least 256 pages): room for tables and frames."""
    if m.fmt == "toy":
        return paging.toy_machine(1 << min(10, m.phys_bits - m.page_shift))
    order = max(8, (m.leaf_size(2) >> m.page_shift).bit_length() - 1)
    return MachineConfig(f"walk-{order}", (_E, _E, ZoneSpec(0, 4 << order), _E, _E), max_order=order,
                         pageblock_order=min(order, 10), min_free_kbytes=0)


def _prot(mode: paging.Mode, read_only: bool) -> int:
    if mode.x86:
        return (pte.PAGE_READONLY if read_only else pte.PAGE_SHARED) & paging._prot_mask(mode)
    if mode.fmt == "arm64":
        return pte.ARM64_PAGE_READONLY if read_only else pte.ARM64_PAGE_SHARED
    return 0


def explain(seed: int = 0, mode: str = "x86-64-4level", access: str = "r", kernel: bool = False,
            quiz: bool = False, vaddr: int | None = None, args: tuple = (), **options) -> str:
    """The walk-through text for ``seed``."""
    if options:
        raise TypeError(f"unknown option(s) for explain walk: {', '.join(sorted(options))}")
    if args:
        vaddr = args[0]
    m = paging.mode_of(mode)
    vaddr = DEFAULTS.get(m.name, 0x7FFD12345678) if vaddr is None else vaddr
    if not isinstance(vaddr, int):
        raise TypeError(f"the address must be a number, got {vaddr!r}")
    rng = random.Random(seed)
    state = paging.init(PagingConfig(m, _machine(m), 1))
    root = state.mms[0]
    out = [f"mmspec explain walk --seed {seed} --mode {m.name}: {m.levels} levels of "
           f"{'/'.join(str(b) for b in m.level_bits)} index bits, {m.page_size}-byte pages, "
           f"{m.va_bits}-bit virtual addresses", ""]
    page = vaddr & ~(m.page_size - 1)
    huge = m.fmt != "toy" and rng.random() < 0.3
    read_only = rng.random() < 0.3
    try:
        for _ in range(rng.randrange(4)):
            state, _ = paging.alloc_data(state, 0)
        if huge:
            size = m.leaf_size(2)
            state, frame = paging.alloc_data(state, (size >> m.page_shift).bit_length() - 1)
            state, _ = paging.map(state, root, vaddr & ~(size - 1), frame, size, _prot(m, read_only), size)
            what = f"a {size >> 20} MiB leaf at pfn {frame}"
        else:
            state, frame = paging.alloc_data(state, 0)
            state, _ = paging.map(state, root, page, frame, m.page_size, _prot(m, read_only))
            what = f"one page at pfn {frame}"
        out.append(f"Set-up: the page of {vaddr:#x} is mapped{' read-only' if read_only else ''} as {what}; "
                   f"the tables came from the buddy allocator ({paging.meminfo_pagetables(state).strip()}).")
    except MMError as err:
        out.append(f"Set-up: {vaddr:#x} could not be mapped ({type(err).__name__}: {err}); the walk will fault.")
    acc = Access(access, user=not kernel)
    out += [f"Problem: translate {vaddr:#x} for a {'supervisor' if kernel else 'user'} "
            f"{ {'r': 'read', 'w': 'write', 'x': 'instruction fetch'}[access] }.", ""]
    if quiz:
        out.append("Work out each level's index, the entry read, and the physical address or the fault;")
        out.append("run again without --quiz for the answer.")
        return "\n".join(out) + "\n"
    out.append(paging.walk_diagram(state, root, vaddr, acc).rstrip())
    neighbour = vaddr + m.leaf_size(3 if m.levels > 2 else 1)
    if paging.is_canonical(m, neighbour):
        out += ["", f"For contrast, {neighbour:#x} (one {m.name_of(3 if m.levels > 2 else 1)} entry further):",
                paging.walk_diagram(state, root, neighbour, acc).rstrip()]
    return "\n".join(out) + "\n"
