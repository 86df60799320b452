"""``mmspec explain vmalloc``: one area's scattered frames behind its contiguous range.

The seed fragments a small machine (it allocates some frames and frees every other one), then
vmallocs an area of a few pages: the frames come from wherever the buddy allocator finds
order-0 pages, yet the area is one run of virtual addresses.  The walk-through prints the area
in /proc/vmallocinfo's format, the page-by-page map (virtual page -> pfn), the guard page, the
page walk of one address of the area, and what vfree and the lazy purge then do.
``--pages N`` sets the area's size, ``--mode x86-64-5level`` the paging mode.  All the
knowledge is in :mod:`spec.vmalloc`, :mod:`spec.paging` and :mod:`spec.buddy`.
"""

from __future__ import annotations

import random

from spec import buddy, paging, vmalloc
from spec.paging import Access, PagingConfig
from spec.vmalloc import VmallocConfig
from spec.zone import PAGE_SHIFT, PAGE_SIZE, MachineConfig, ZoneSpec

_E = ZoneSpec()
MACHINE = MachineConfig("vmalloc-256", (_E, _E, ZoneSpec(0, 256), _E, _E), max_order=6, pageblock_order=6,
                        min_free_kbytes=0)


def explain(seed: int = 0, pages: int | None = None, mode: str = "x86-64-4level", **options) -> str:
    """The walk-through text for ``seed``."""
    if options:
        raise TypeError(f"unknown option(s) for explain vmalloc: {', '.join(sorted(options))}")
    rng = random.Random(seed)
    pages = rng.randint(3, 6) if pages is None else pages
    if not isinstance(pages, int) or not 1 <= pages <= 64:
        raise ValueError("--pages must be 1..64")
    s = vmalloc.init(VmallocConfig(PagingConfig(mode, MACHINE), cpus=2))
    out = [f"mmspec explain vmalloc --seed {seed}: vmalloc({pages * PAGE_SIZE}) on a {MACHINE.end_pfn}-page machine, "
           f"{s.paging.mode.name}", ""]
    # Fragment physical memory: take some frames, give every other one back.
    b, taken = s.paging.buddy, []
    for _ in range(rng.randint(10, 20)):
        b, pfn = buddy.alloc_pages(b, 0, "GFP_KERNEL")
        taken.append(pfn)
    for pfn in taken[rng.randint(0, 1)::2]:
        b, _ = buddy.free_pages(b, pfn, 0)
    s = vmalloc.replace(s, paging=vmalloc.replace(s.paging, buddy=b))
    s, first = vmalloc.vmalloc(s, PAGE_SIZE, caller="early_init+0x10/0x80")
    s, addr = vmalloc.vmalloc(s, pages * PAGE_SIZE, caller="demo_probe+0x2c/0x90")
    area = s.busy[addr]
    out += ["1. alloc_vmap_area(): the lowest free block of the vmalloc range that holds "
            f"{pages} pages + 1 guard page.  The range starts at VMALLOC_START = {s.vstart:#x}; "
            f"an earlier one-page area (and its guard) sits below, so the new area starts at {addr:#x}.",
            "2. vm_area_alloc_pages(): order-0 GFP_KERNEL frames, wherever the buddy allocator has them "
            "(physical memory was fragmented on purpose).",
            "3. vmap_pages_range(): one PAGE_KERNEL PTE per page in init_mm.", "",
            "   virtual page            pfn    physical address"]
    for i, pfn in enumerate(area.pages):
        out.append(f"   {addr + (i << PAGE_SHIFT):#x}  {pfn:5d}    {pfn << PAGE_SHIFT:#010x}")
    guard = area.va_end - PAGE_SIZE
    out += [f"   {guard:#x}  guard  (never mapped: running off the end faults)", "",
            "/proc/vmallocinfo:", vmalloc.vmallocinfo(s).rstrip(), "",
            vmalloc.meminfo_vmalloc(s).rstrip(), ""]
    k = rng.randrange(pages)
    va = addr + (k << PAGE_SHIFT) + rng.randrange(0, PAGE_SIZE, 8)
    out += [f"The page walk of {va:#x} (page {k} of the area), a kernel read through init_mm:",
            paging.walk_diagram(s.paging, s.root, va, Access("r", user=False)).rstrip(), ""]
    s, _ = vmalloc.vfree(s, addr)
    out += [f"4. vfree({addr:#x}): the PTEs are cleared and the {pages} frames go back to the buddy allocator at once, "
            "but no TLB is flushed: another CPU may still cache the old translations, so the range goes on the "
            f"purge list (vmap_lazy_nr = {s.lazy_nr} pages, purged above lazy_max_pages() = {s.lazy_limit}).",
            vmalloc.vmallocinfo(s).rstrip()]
    s, c = vmalloc.vmalloc(s, pages * PAGE_SIZE)
    out += [f"   A new vmalloc of the same size does not reuse it: it gets {c:#x}."]
    s, _ = vmalloc.vfree(s, c)
    s, n = vmalloc.purge_vmap_area_lazy(s)
    s, d = vmalloc.vmalloc(s, pages * PAGE_SIZE)
    out += [f"5. __purge_vmap_area_lazy(): one flush_tlb_kernel_range over the purge list ({n} pages); the ranges are "
            f"free again, and the next vmalloc of {pages} pages gets the lowest fit, {d:#x}.", ""]
    del first
    return "\n".join(out) + "\n"
