"""vmalloc: virtually contiguous kernel memory from scattered frames (mm/vmalloc.c).

**The problem.**  The buddy allocator hands out physically contiguous blocks, and a large one
is hard to find once memory is fragmented (an order-9 block needs 512 free neighbours).  Most
kernel users of a big buffer (module text, BPF programs, large hash tables, thread stacks) only
need it to be contiguous in *virtual* memory.  ``vmalloc(size)`` therefore takes order-0 frames
wherever the buddy allocator finds them and maps them one after another into a reserved range
of kernel virtual addresses, the *vmalloc range*, through the kernel's own page tables
(``init_mm``).  Physically scattered, virtually one piece.

**The range** (arch/x86/include/asm/pgtable_64_types.h): ``VMALLOC_START`` =
0xffffc90000000000 with 4-level paging and 0xffa0000000000000 with 5-level, ``VMALLOC_SIZE_TB``
= 32 and 12800, ``VMALLOC_END = VMALLOC_START + (VMALLOC_SIZE_TB << 40) - 1``.  /proc/meminfo
shows ``VmallocTotal`` = (VMALLOC_END - VMALLOC_START) >> 10.

**Reserving a range** (``__get_vm_area_node``, ``alloc_vmap_area``, ``__alloc_vmap_area``).
The request is page-aligned, and unless the caller asks for ``VM_NO_GUARD`` one more page is
added: the *guard page*, left unmapped, so that running off the end of one area faults instead
of scribbling over the next.  The range [va_start, va_end) is a ``vmap_area``; free space is
kept as an address-sorted set of free blocks and ``find_vmap_lowest_match`` picks the
*lowest-addressed* block in which the aligned start plus the size fits (``is_within_this_va``).
If nothing fits, ``alloc_vmap_area`` purges the lazily freed areas (below) and tries once more;
then the allocation fails.

**Filling it** (``__vmalloc_area_node``, ``vm_area_alloc_pages``, ``vmap_pages_range``): first
every frame is allocated, order 0, ``GFP_KERNEL``; then each is mapped, page by page, with
``PAGE_KERNEL`` in ``init_mm`` (missing page tables come from the buddy allocator as well).
``nr_vmalloc_pages`` counts the frames: /proc/meminfo's ``VmallocUsed``.

**Freeing lazily** (``vfree``, ``remove_vm_area``, ``free_vmap_area_noflush``,
``__purge_vmap_area_lazy``, ``lazy_max_pages``).  ``vfree`` clears the area's page-table
entries and gives the frames back to the buddy allocator at once, but it does *not* flush the
TLBs: a global TLB shootdown of the kernel range is an IPI to every CPU, far too expensive per
free.  Instead the range goes on a *purge list* and is not reused: another CPU may still hold a
stale translation for it, and if a new area were mapped there, that CPU could read or write
through the stale entry into the old frame -- which by now belongs to someone else.  Frames can
go back early because no correct code touches a vfree'd address; the *range* cannot.  When the
lazily freed pages (guard pages included) exceed ``lazy_max_pages()`` = fls(num_online_cpus())
× 32 MiB worth of pages, the purge runs: one ``flush_tlb_kernel_range`` over the span of the
list, then every range on it becomes free space again.  The purge also runs when an
allocation does not fit.  /proc/vmallocinfo lists the purge list as ``unpurged vm_area`` lines.

**How this model simplifies, and why.**

- One vmap node, no per-node pools of small free areas (``vn->pool``, Linux 6.9+) and no
  per-CPU ``vmap_block``s (``vm_map_ram``): they change which address a reuse picks, not the
  rules above.  vmallocinfo lists the busy areas, then the purge list, each by address.
- The drain work item (``drain_vmap_work``) runs at once, at the end of the vfree that pushes
  the lazy count over the limit; Linux runs it soon after on a workqueue.
- Base pages only: no ``vmalloc_huge``/PMD mappings, no KASAN shadow, no memcg charge.
- The ``pages[]`` array of an area is not allocated (Linux kmallocs it, or vmallocs it above
  one page and prints ``vpages``).  Data frames are ``GFP_KERNEL`` (no ``__GFP_HIGHMEM`` on
  x86-64).
- A failed vmalloc changes nothing; Linux may have purged and leaves the half-built area on the
  purge list.
- ``window_pages`` and ``lazy_max`` in :class:`VmallocConfig` shrink the 32 TiB range and the
  lazy limit so that tests reach exhaustion and the purge on a machine of 64 pages.
- x86-64 only (4- and 5-level); the kernel address space is the first address space of the
  paging state (``init_mm``, ``swapper_pg_dir``).

>>> s = init(VmallocConfig())
>>> s, a = vmalloc(s, 10000, caller="demo_init+0x1c/0x40")
>>> hex(a)
'0xffffc90000000000'
>>> print(vmallocinfo(s), end="")
0xffffc90000000000-0xffffc90000004000   16384 demo_init+0x1c/0x40 pages=3 vmalloc N0=3
>>> s, b = vmalloc(s, 4096)
>>> hex(b)                        # after a's 3 pages and its guard page
'0xffffc90000004000'
>>> s, _ = vfree(s, a)
>>> s, c = vmalloc(s, 4096)       # a's range waits for the TLB flush: not reused yet
>>> hex(c)
'0xffffc90000006000'
>>> print(vmallocinfo(s).splitlines()[-1])
0xffffc90000000000-0xffffc90000004000   16384 unpurged vm_area
>>> s, purged = purge_vmap_area_lazy(s)
>>> s, d = vmalloc(s, 4096)       # after the flush, the lowest fit is a's old start
>>> purged, hex(d)
(4, '0xffffc90000000000')
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from immutables import Map

from spec import buddy, paging, pte
from spec.errors import EINVAL, ENOMEM, DoubleFree
from spec.paging import Access, PagingConfig, PagingState
from spec.slab_geometry import _if, fls
from spec.zone import PAGE_SHIFT, PAGE_SIZE

__all__ = [
    "VMALLOC_START", "VMALLOC_END", "VMALLOC_LAYOUT", "VmallocConfig", "VmallocState", "VmArea",
    "init", "vmalloc", "vfree", "purge_vmap_area_lazy", "vmalloc_to_pfn", "lazy_max_pages",
    "vm_area_size", "align_up", "fits_in_block", "vmallocinfo", "meminfo_vmalloc",
    "format_vmallocinfo_line", "parse_vmallocinfo_line", "VmInfoLine",
]

# arch/x86/include/asm/pgtable_64_types.h: __VMALLOC_BASE_L4/L5, VMALLOC_SIZE_TB_L4/L5.
VMALLOC_LAYOUT = {
    "x86-64-4level": (0xFFFFC90000000000, 32),
    "x86-64-5level": (0xFFA0000000000000, 12800),
}
VMALLOC_START = VMALLOC_LAYOUT["x86-64-4level"][0]
VMALLOC_END = VMALLOC_START + (VMALLOC_LAYOUT["x86-64-4level"][1] << 40) - 1  # VMALLOC_END: inclusive

#: mm/vmalloc.c lazy_max_pages(): 32 MiB worth of pages per fls(num_online_cpus()).
LAZY_PAGES_PER_LOG = (32 * 1024 * 1024) // PAGE_SIZE

# include/linux/vmalloc.h: the vm_struct flags the model uses, and how vmallocinfo names them
# (vmalloc_info_show(), in its order).
VM_IOREMAP, VM_ALLOC, VM_MAP, VM_USERMAP, VM_DMA_COHERENT, VM_NO_GUARD, VM_SPARSE = (
    "VM_IOREMAP", "VM_ALLOC", "VM_MAP", "VM_USERMAP", "VM_DMA_COHERENT", "VM_NO_GUARD", "VM_SPARSE")
FLAG_WORDS = ((VM_IOREMAP, "ioremap"), (VM_SPARSE, "sparse"), (VM_ALLOC, "vmalloc"), (VM_MAP, "vmap"),
              (VM_USERMAP, "user"), (VM_DMA_COHERENT, "dma-coherent"))

DEFAULT_CALLER = "mmspec_caller+0x0/0x0"


# ---------------------------------------------------------------------------------------------
# Arithmetic: plain operators, so the proofs run these on z3 values.


def lazy_max_pages(cpus: int):
    """``lazy_max_pages()``: fls(num_online_cpus()) * (32 MiB / PAGE_SIZE).

    >>> lazy_max_pages(1), lazy_max_pages(2), lazy_max_pages(4)
    (8192, 16384, 24576)

    Contract:

    ```text
    pre: 1 <= cpus <= 8192
    post: __return__ >= 8192
    ```
    """
    return fls(cpus) * LAZY_PAGES_PER_LOG


def align_up(x: int, align: int):
    """``ALIGN(x, align)`` for a power-of-two ``align``.

    Contract:

    ```text
    pre: 0 <= x < 2 ** 62 and align in (1, 4096, 8192, 16384)
    post: __return__ >= x and __return__ % align == 0 and __return__ - x < align
    ```
    """
    return (x + align - 1) & ~(align - 1)


def vm_area_size(size: int, guard: bool):
    """``__get_vm_area_node()``: the reserved bytes of a request of ``size``: page-aligned, plus
    one guard page unless VM_NO_GUARD.

    >>> vm_area_size(1, True), vm_area_size(4096, True), vm_area_size(4097, False)
    (8192, 8192, 8192)

    Contract:

    ```text
    pre: 1 <= size < 2 ** 50
    post: __return__ % 4096 == 0 and __return__ >= size
    ```
    """
    return align_up(size, PAGE_SIZE) + _if(guard, PAGE_SIZE, 0)


def fits_in_block(block_start, block_end, size, align, vstart):
    """``is_within_this_va()``: does an area of ``size`` with ``align`` fit in the free block
    [block_start, block_end) at or above ``vstart``?  Returns the start it would get, or -1."""
    start = align_up(_if(block_start > vstart, block_start, vstart), align)
    return _if(start + size <= block_end, start, -1)


# ---------------------------------------------------------------------------------------------
# State


class VmallocConfig(NamedTuple):
    """The paging machine, the online CPUs, and the test knobs that shrink the vmalloc range
    (``window_pages``) and the lazy limit (``lazy_max``, pages)."""

    paging: PagingConfig = PagingConfig("x86-64-4level", "toy-64")
    cpus: int = 1
    window_pages: int | None = None
    lazy_max: int | None = None
    numa: bool = True  # CONFIG_NUMA: vmallocinfo ends each line with N0=<pages>


class VmArea(NamedTuple):
    """A busy ``vmap_area`` and its ``vm_struct``: the reserved range (guard page included, as
    ``vm->size`` counts it), the frames mapped at its start, the caller and the flags."""

    va_start: int
    va_end: int
    pages: tuple[int, ...]
    caller: str | None
    flags: frozenset


@dataclass(frozen=True)
class VmallocState:
    """The kernel page tables (over the buddy allocator), the busy areas, the purge list."""

    config: VmallocConfig
    paging: PagingState
    vstart: int
    vend: int  # exclusive
    busy: Map  # va_start -> VmArea
    lazy: Map  # va_start -> va_end of every lazily freed, not yet purged, range
    lazy_nr: int  # vmap_lazy_nr: pages on the purge list
    nr_vmalloc_pages: int
    nr_purges: int  # TLB flushes of the kernel range done by purges

    @property
    def root(self) -> int:
        """The kernel address space (``init_mm.pgd``)."""
        return self.paging.mms[0]

    @property
    def lazy_limit(self) -> int:
        return self.config.lazy_max if self.config.lazy_max is not None else lazy_max_pages(self.config.cpus)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def init(config: VmallocConfig | str = VmallocConfig()) -> VmallocState:
    """Boot: the kernel address space over the machine's buddy allocator, an empty vmalloc range."""
    if isinstance(config, str):
        config = VmallocConfig(PagingConfig("x86-64-4level", config))
    if not isinstance(config, VmallocConfig):
        raise EINVAL(f"bad vmalloc configuration {config!r}")
    mode = paging.mode_of(config.paging.mode)
    if mode.name not in VMALLOC_LAYOUT:
        raise EINVAL(f"no vmalloc layout for {mode.name}; known: {', '.join(VMALLOC_LAYOUT)}")
    if not _is_int(config.cpus) or config.cpus < 1:
        raise EINVAL(f"bad CPU count {config.cpus!r}")
    for knob in (config.window_pages, config.lazy_max):
        if knob is not None and (not _is_int(knob) or knob < 1):
            raise EINVAL(f"bad test knob {knob!r}")
    start, tb = VMALLOC_LAYOUT[mode.name]
    end = start + (tb << 40) if config.window_pages is None else start + (config.window_pages << PAGE_SHIFT)
    ps = paging.init(config.paging._replace(nr_mm=max(1, config.paging.nr_mm)))
    return VmallocState(config, ps, start, end, Map(), Map(), 0, 0, 0)


def _occupied(state: VmallocState):
    """Busy and lazily freed ranges, by address."""
    return sorted([(a.va_start, a.va_end) for a in state.busy.values()] + list(state.lazy.items()))


def free_blocks(state: VmallocState):
    """The free space of the vmalloc range as address-sorted [start, end) blocks: what Linux's
    ``free_vmap_area_root`` holds."""
    blocks, cursor = [], state.vstart
    for s, e in _occupied(state):
        if s > cursor:
            blocks.append((cursor, s))
        cursor = max(cursor, e)
    if cursor < state.vend:
        blocks.append((cursor, state.vend))
    return blocks


def find_vmap_lowest_match(state: VmallocState, size: int, align: int):
    """``find_vmap_lowest_match()``: the start of the lowest free block that holds the area,
    or None."""
    for s, e in free_blocks(state):
        start = fits_in_block(s, e, size, align, state.vstart)
        if start >= 0:
            return start
    return None


# ---------------------------------------------------------------------------------------------
# Operations


def _check_request(state: VmallocState, size, align, caller, guard) -> int:
    if not _is_int(size) or size <= 0:
        raise EINVAL(f"vmalloc size {size!r}: WARN_ON_ONCE(!size) or not a byte count")
    if not _is_int(align) or align < 1 or align & (align - 1) or align > 1 << 30:
        raise EINVAL(f"alignment {align!r} is not a power of two")
    if caller is not None and (not isinstance(caller, str) or not caller or any(c.isspace() for c in caller)):
        raise EINVAL(f"bad caller {caller!r}")
    if not isinstance(guard, bool):
        raise EINVAL(f"guard must be a bool, not {guard!r}")
    totalram = sum(z.managed for z in state.paging.buddy.zones)
    if size >> PAGE_SHIFT > totalram:
        raise ENOMEM(f"vmalloc error: size {size}, exceeds total pages")
    return vm_area_size(size, guard)


def _kernel_prot(state: VmallocState) -> int:
    return pte.PAGE_KERNEL


def vmalloc(state: VmallocState, size: int, align: int = 1, caller: str | None = DEFAULT_CALLER, guard: bool = True):
    """``__vmalloc_node_range(size, align, VMALLOC_START, VMALLOC_END, GFP_KERNEL, PAGE_KERNEL,
    guard ? 0 : VM_NO_GUARD, NUMA_NO_NODE, caller)``: the start of the new area.

    ``EINVAL`` for a zero, negative or non-integer size, an alignment that is not a power of
    two, a bad caller; ``ENOMEM`` above the machine's total RAM, when no free block fits even
    after a purge, or when the buddy allocator runs out of frames or page-table pages.  A
    failure changes nothing.
    """
    total = _check_request(state, size, align, caller, guard)
    start = find_vmap_lowest_match(state, total, align)
    if start is None and state.lazy:
        state, _ = purge_vmap_area_lazy(state)
        start = find_vmap_lowest_match(state, total, align)
    if start is None:
        raise ENOMEM(f"vmap allocation for size {total} failed: use vmalloc=<size> to increase size")
    nr = align_up(size, PAGE_SIZE) >> PAGE_SHIFT
    ps, pages = state.paging, []
    b = ps.buddy
    for _ in range(nr):  # vm_area_alloc_pages(): every frame first
        b, pfn = buddy.alloc_pages(b, 0, "GFP_KERNEL")
        pages.append(pfn)
    ps = replace(ps, buddy=b)
    for i, pfn in enumerate(pages):  # then vmap_pages_range(), page by page
        ps, _ = paging.map(ps, state.root, start + (i << PAGE_SHIFT), pfn, PAGE_SIZE, _kernel_prot(state))
    flags = frozenset({VM_ALLOC} | (set() if guard else {VM_NO_GUARD}))
    area = VmArea(start, start + total, tuple(pages), caller, flags)
    return replace(state, paging=ps, busy=state.busy.set(start, area), nr_vmalloc_pages=state.nr_vmalloc_pages + nr), start


def vfree(state: VmallocState, addr: int):
    """``vfree(addr)``: nothing for NULL; otherwise unmap the area (``vunmap_range_noflush``, no
    TLB flush), put its range on the purge list, give its frames back to the buddy allocator in
    order, and purge if the lazy pages now exceed the limit.  ``DoubleFree`` for an area already
    on the purge list, ``EINVAL`` for any other address that does not start an area ("Trying to
    vfree() nonexistent vm area")."""
    if addr is None or addr == 0:
        return state, None
    if not _is_int(addr) or addr not in state.busy:
        if _is_int(addr) and addr in state.lazy:
            raise DoubleFree(f"vfree(0x{addr:x}): the area is already freed (unpurged)")
        shown = f"0x{addr:x}" if _is_int(addr) and addr >= 0 else repr(addr)
        raise EINVAL(f"Trying to vfree() nonexistent vm area ({shown})")
    area = state.busy[addr]
    ps, _ = paging.unmap(state.paging, state.root, area.va_start, area.va_end - area.va_start)
    b = ps.buddy
    for pfn in area.pages:  # __free_page() of each page, in array order
        b, _ = buddy.free_pages(b, pfn, 0)
    npages = (area.va_end - area.va_start) >> PAGE_SHIFT
    state = replace(state, paging=replace(ps, buddy=b), busy=state.busy.delete(addr),
                    lazy=state.lazy.set(area.va_start, area.va_end), lazy_nr=state.lazy_nr + npages,
                    nr_vmalloc_pages=state.nr_vmalloc_pages - len(area.pages))
    if state.lazy_nr > state.lazy_limit:  # schedule_work(&drain_vmap_work)
        state, _ = purge_vmap_area_lazy(state)
    return state, None


def purge_vmap_area_lazy(state: VmallocState):
    """``__purge_vmap_area_lazy()``: one ``flush_tlb_kernel_range`` over the span of the purge
    list, then every range on it is free space again.  Returns the pages purged (0: nothing to
    do, no flush)."""
    if not state.lazy:
        return state, 0
    nr = state.lazy_nr
    return replace(state, lazy=Map(), lazy_nr=0, nr_purges=state.nr_purges + 1), nr


def vmalloc_to_pfn(state: VmallocState, addr: int):
    """``vmalloc_to_pfn()``: the frame behind a vmalloc address (a kernel page walk), or None
    where nothing is mapped; ``EINVAL`` outside the vmalloc range."""
    if not _is_int(addr) or not state.vstart <= addr < state.vend:
        raise EINVAL(f"{addr!r} is not a vmalloc address")
    w = paging.walk(state.paging, state.root, addr, Access("r", user=False))
    return state, None if w.fault else w.paddr >> PAGE_SHIFT


def find_vm_area(state: VmallocState, addr: int):
    """``find_vm_area()``: the busy area starting at ``addr``, or None."""
    return state.busy.get(addr) if _is_int(addr) else None


# ---------------------------------------------------------------------------------------------
# Invariants


def _mapped_pfn(state: VmallocState, va: int):
    w = paging.walk(state.paging, state.root, va, Access("r", user=False))
    return None if w.fault else w.paddr >> PAGE_SHIFT


def inv_areas_disjoint(state: VmallocState) -> bool:
    """Busy and lazily freed areas never overlap, are page-aligned and lie inside the range:
    in particular no range is reused before the purge's TLB flush."""
    prev = state.vstart
    for s, e in _occupied(state):
        if s < prev or e <= s or s % PAGE_SIZE or e % PAGE_SIZE or e > state.vend:
            return False
        prev = e
    return True


def inv_guard_unmapped(state: VmallocState) -> bool:
    """The guard page at the end of every busy area (unless VM_NO_GUARD) is never mapped, and
    an area holds exactly its pages plus its guard."""
    for a in state.busy.values():
        guard = 0 if VM_NO_GUARD in a.flags else PAGE_SIZE
        if a.va_end - a.va_start != (len(a.pages) << PAGE_SHIFT) + guard:
            return False
        if guard and _mapped_pfn(state, a.va_end - PAGE_SIZE) is not None:
            return False
    return True


def inv_pages_mapped(state: VmallocState) -> bool:
    """Page i of every busy area is mapped, kernel-only, to the area's i-th frame."""
    for a in state.busy.values():
        for i, pfn in enumerate(a.pages):
            va = a.va_start + (i << PAGE_SHIFT)
            if _mapped_pfn(state, va) != pfn:
                return False
            w = paging.walk(state.paging, state.root, va, Access("r", user=True, smap=False))
            if not w.fault:
                return False
    return True


def inv_frames_owned_once(state: VmallocState) -> bool:
    """Every vmalloc'd frame is a live order-0 buddy allocation, not a page table, in exactly
    one area, and mapped exactly once in the kernel range."""
    frames = [p for a in state.busy.values() for p in a.pages]
    if len(set(frames)) != len(frames):
        return False
    for p in frames:
        al = state.paging.buddy.allocated.get(p)
        if al is None or al.order != 0 or p in state.paging.tables:
            return False
    counts = {}
    for _, _, pfn, n in paging._all_leaves(state.paging):
        for k in range(n):
            counts[pfn + k] = counts.get(pfn + k, 0) + 1
    return all(counts.get(p) == 1 for p in frames)


def inv_lazy_unmapped(state: VmallocState) -> bool:
    """Every range on the purge list is unmapped, and vmap_lazy_nr counts its pages (at most
    the lazy limit)."""
    total = 0
    for s, e in state.lazy.items():
        total += (e - s) >> PAGE_SHIFT
        if any(_mapped_pfn(state, va) is not None for va in range(s, e, PAGE_SIZE)):
            return False
    return total == state.lazy_nr <= state.lazy_limit


def inv_vmalloc_used(state: VmallocState) -> bool:
    """nr_vmalloc_pages (VmallocUsed) is the number of frames of the busy areas."""
    return state.nr_vmalloc_pages == sum(len(a.pages) for a in state.busy.values())


def inv_paging(state: VmallocState) -> bool:
    """Every invariant of the page tables (and buddy allocator) underneath holds."""
    ok = all(getattr(paging, n)(state.paging) for n in dir(paging) if n.startswith("inv_"))
    return ok and all(getattr(buddy, n)(state.paging.buddy) for n in dir(buddy) if n.startswith("inv_"))


# ---------------------------------------------------------------------------------------------
# Views


class VmInfoLine(NamedTuple):
    """One line of /proc/vmallocinfo, as ``vmalloc_info_show()``/``show_purge_info()`` print it."""

    start: int
    end: int
    size: int
    caller: str | None = None
    nr_pages: int = 0
    phys: int | None = None
    words: tuple[str, ...] = ()  # ioremap, sparse, vmalloc, vmap, user, dma-coherent, vpages
    numa: tuple[tuple[int, int], ...] = ()  # (node, pages)
    kind: str = "vm"  # "vm", "vm_map_ram", "unpurged"


def format_vmallocinfo_line(line: VmInfoLine) -> str:
    """``seq_printf(m, "0x%pK-0x%pK %7ld", ...)`` and what follows, without the newline.

    >>> format_vmallocinfo_line(VmInfoLine(0xffffc90000000000, 0xffffc90000005000, 20480,
    ...                         "kernel_clone+0x94/0x3e0", 4, None, ("vmalloc",), ((0, 4),)))
    '0xffffc90000000000-0xffffc90000005000   20480 kernel_clone+0x94/0x3e0 pages=4 vmalloc N0=4'
    """
    head = f"0x{line.start:016x}-0x{line.end:016x} {line.size:7d}"
    if line.kind == "unpurged":
        return head + " unpurged vm_area"
    if line.kind == "vm_map_ram":
        return head + " vm_map_ram"
    text = head + (f" {line.caller}" if line.caller else "")
    text += f" pages={line.nr_pages}" if line.nr_pages else ""
    text += f" phys=0x{line.phys:016x}" if line.phys else ""
    text += "".join(" " + w for w in line.words)
    return text + "".join(f" N{n}={c}" for n, c in line.numa)


_WORDS = tuple(w for _, w in FLAG_WORDS) + ("vpages",)


def parse_vmallocinfo_line(text: str) -> VmInfoLine:
    """The inverse of :func:`format_vmallocinfo_line`; ``EINVAL`` for a line it cannot read.

    >>> parse_vmallocinfo_line('0x0000000000001000-0x0000000000003000    8192 f+0x1/0x2 phys=0x00000000000a0000 ioremap').phys
    655360
    """
    try:
        rng, size, *rest = text.split()
        a, b = rng.split("-")
        if not (a.startswith("0x") and b.startswith("0x")):
            raise ValueError(rng)
        start, end, size = int(a, 16), int(b, 16), int(size)
    except ValueError as exc:
        raise EINVAL(f"not a vmallocinfo line: {text!r}") from exc
    if rest == ["unpurged", "vm_area"]:
        return VmInfoLine(start, end, size, kind="unpurged")
    if rest == ["vm_map_ram"]:
        return VmInfoLine(start, end, size, kind="vm_map_ram")
    caller = nr = phys = None
    words, numa = [], []
    for i, tok in enumerate(rest):
        if tok.startswith("pages="):
            nr = int(tok[6:])
        elif tok.startswith("phys="):
            phys = int(tok[5:], 16)
        elif tok in _WORDS:
            words.append(tok)
        elif tok[0] == "N" and "=" in tok and tok[1:].split("=")[0].isdigit():
            n, c = tok[1:].split("=")
            numa.append((int(n), int(c)))
        elif i == 0:
            caller = tok
        else:
            raise EINVAL(f"unknown field {tok!r} in {text!r}")
    return VmInfoLine(start, end, size, caller, nr or 0, phys, tuple(words), tuple(numa))


def info_lines(state: VmallocState) -> list[VmInfoLine]:
    """The lines of /proc/vmallocinfo: busy areas by address, then the purge list."""
    out = []
    for start in sorted(state.busy):
        a = state.busy[start]
        words = tuple(w for flag, w in FLAG_WORDS if flag in a.flags)
        numa = ((0, len(a.pages)),) if state.config.numa and a.pages else ()
        out.append(VmInfoLine(a.va_start, a.va_end, a.va_end - a.va_start, a.caller, len(a.pages), None, words, numa))
    for s in sorted(state.lazy):
        out.append(VmInfoLine(s, state.lazy[s], state.lazy[s] - s, kind="unpurged"))
    return out


def vmallocinfo(state: VmallocState) -> str:
    """/proc/vmallocinfo, with real addresses (as root with kptr_restrict = 1)."""
    return "".join(format_vmallocinfo_line(line) + "\n" for line in info_lines(state))


def vmalloc_total_kb(mode_name: str) -> int:
    """``VMALLOC_TOTAL >> 10``: (VMALLOC_END - VMALLOC_START) in kB, VMALLOC_END inclusive."""
    tb = VMALLOC_LAYOUT[mode_name][1]
    return ((tb << 40) - 1) >> 10


def format_meminfo_vmalloc(total_kb: int, used_pages: int) -> str:
    """The three Vmalloc lines of /proc/meminfo (fs/proc/meminfo.c; VmallocChunk is always 0)."""
    return (f"VmallocTotal:   {total_kb:8d} kB\n"
            f"VmallocUsed:    {used_pages << (PAGE_SHIFT - 10):8d} kB\n"
            f"VmallocChunk:   {0:8d} kB\n")


def meminfo_vmalloc(state: VmallocState) -> str:
    """VmallocTotal (of the paging mode's real range), VmallocUsed, VmallocChunk.

    >>> print(meminfo_vmalloc(init(VmallocConfig())), end="")
    VmallocTotal:   34359738367 kB
    VmallocUsed:           0 kB
    VmallocChunk:          0 kB
    """
    return format_meminfo_vmalloc(vmalloc_total_kb(state.paging.mode.name), state.nr_vmalloc_pages)


def area_diagram(state: VmallocState) -> str:
    """The vmalloc range as a row of pages: ``#`` mapped, ``g`` guard, ``~`` awaiting the
    purge, ``.`` free, up to the end of the last area."""
    occ = _occupied(state)
    if not occ:
        return "(empty)\n"
    last = max(e for _, e in occ)
    cells = []
    for va in range(state.vstart, last, PAGE_SIZE):
        ch = "."
        for a in state.busy.values():
            if a.va_start <= va < a.va_end:
                ch = "#" if va < a.va_start + (len(a.pages) << PAGE_SHIFT) else "g"
        for s, e in state.lazy.items():
            if s <= va < e:
                ch = "~"
        cells.append(ch)
    return f"0x{state.vstart:x} |{''.join(cells)}|\n"


def render(state: VmallocState) -> str:
    """A counterexample: vmallocinfo, the page diagram, the lazy count, meminfo, buddyinfo."""
    return (vmallocinfo(state) + area_diagram(state)
            + f"vmap_lazy_nr {state.lazy_nr} (limit {state.lazy_limit}), purges {state.nr_purges}\n"
            + meminfo_vmalloc(state) + buddy.buddyinfo(state.paging.buddy))


__all__ += ["free_blocks", "find_vmap_lowest_match", "find_vm_area", "info_lines", "area_diagram",
            "vmalloc_total_kb", "format_meminfo_vmalloc"]
