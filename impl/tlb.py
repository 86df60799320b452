"""TLBs on arrays: the fast twin of :mod:`spec.tlb` and :mod:`spec.tlbflush`.

Each CPU has three set-associative arrays with LRU replacement, as numpy ``int64`` arrays of
shape ``(fields, cpus, sets, ways)``: an L1 dTLB for 4 KiB pages, an L1 dTLB for 2 MiB pages,
and a second-level STLB that holds both sizes (the :class:`Geometry` defaults are a Skylake
core's: 64 entries 4-way, 32 entries 4-way, 1536 entries 12-way).  The STLB is *inclusive*:
an entry evicted from it is also dropped from the L1 arrays, so the set of translations a CPU
caches is exactly the STLB's contents -- :meth:`TlbMachine.abstract` reads it as the spec's
set of entries.  The spec lets the hardware evict any entry at any time (:func:`spec.tlb.evict`);
every operation here reports what its replacement evicted in :attr:`TlbMachine.evicted`, so the
lockstep harness tells the spec to evict the same entries.

Each way has seven ``int64`` fields, stored as a structure of arrays (one plane per field, so
the tags of a set are contiguous); the *tag* (page number, PCID or a global marker, page size)
lets a lookup compare one integer per way, and LRU is a per-way stamp from a counter that
grows by one per reference.  Lookups, fills, invalidations and LRU updates are one numba
kernel, :func:`_run` (a fast path for hits and plain misses, the general path inlined once),
that serves
both a single :meth:`TlbMachine.access` (a trace of one reference, with the walk's result
supplied) and :meth:`TlbMachine.simulate` (millions of references against a snapshot of the
leaves of every loaded mm, sorted by virtual page and searched by bisection).  Accessed and
Dirty bits are written back to the page tables after the kernel, once per leaf it walked.

The protocol (ASID slots, lazy TLB, flushes in steps, IPIs) runs on plain Python objects with
the same names as the spec's; page tables are :class:`impl.paging.PageTables`.

>>> m = TlbMachine(TlbConfig(ncpus=2, nr_mm=1))
>>> m.populate(1, 0x7F0000000000)
512
>>> m.switch_mm(0, 1)
(1, True)
>>> m.access(0, 0x7F0000000010).hit, m.access(0, 0x7F0000000010).hit
(False, True)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from impl import bugs
from impl.bugs import Defect
from impl.paging import PageTables
from spec import pte
from spec.errors import EBUSY, EINVAL
from spec.paging import Access, PagingConfig
from spec.tlb import (
    INIT_MM,
    PAGE_2M,
    PAGE_4K,
    TLB_FLUSH_ALL,
    TLB_NR_DYN_ASIDS,
    TLB_SINGLE_PAGE_FLUSH_CEILING,
    Batch,
    Cpu,
    Entry,
    Flush,
    Ipi,
    Lookup,
    Mm,
    Slot,
    Stats,
    TlbConfig,
    TlbState,
)

_CATCH = "mmspec.mechanisms.tlb:catch"
TLB_GENERATION_INVALID, NO_MM = 0, -1  # as in spec.tlbflush

DEFECTS = (
    Defect("tlb-munmap-no-flush", "tlb",
           "munmap clears the PTEs and frees the frames but never flushes: no tlb_gen bump, no IPI, no local "
           "flush, so every CPU that cached a translation keeps using the unmapped page.",
           "teaching defect (the classic forgotten flush_tlb_range() after zapping PTEs)", _CATCH),
    Defect("tlb-pte-cleared-after-flush", "tlb",
           "The flush runs before the PTEs are cleared: a CPU that touches the page between its flush and the "
           "PTE write refills the old translation, and keeps it after munmap returns.",
           "Linux commit 60bae7370896 'mm/migrate_device.c: flush TLB while holding PTL' (the same ordering rule)",
           _CATCH),
    Defect("tlb-lazy-no-catch-up", "tlb",
           "switch_mm_irqs_off() back to the mm a lazy CPU still has loaded skips the tlb_gen check, so the "
           "flushes it missed while lazy (IPIs skip lazy CPUs) are never done.",
           "Linux commit 145f573b89a6 'x86/mm/tlb: Revert retpoline avoidance approach' era fixes; teaching defect",
           _CATCH),
    Defect("tlb-free-before-flush", "tlb",
           "munmap frees the frames to the buddy allocator right after clearing the PTEs, before the TLB flush: "
           "another CPU can still reach the freed (and reusable) frame through its TLB.",
           "CVE-2018-18281 (mremap moved PTEs and dropped the lock before flushing; fixed by eb66ae030829)",
           _CATCH),
    Defect("tlb-partial-flush-behind", "tlb",
           "flush_tlb_func() does a partial (INVLPG) flush even when the CPU is more than one tlb_gen behind, and "
           "then claims the newest generation: the flush it skipped for another range is lost.",
           "arch/x86/mm/tlb.c flush_tlb_func() comment, condition 1 (f->new_tlb_gen == local_tlb_gen + 1)",
           _CATCH),
)

# Fields of one TLB way, and the bits of F_FLAGS (the protection key sits above them).
F_VPN, F_PCID, F_SIZE, F_PFN, F_FLAGS, F_STAMP, F_TAG = range(7)
NF = 7
GLOBAL_TAG = 0x1000  # the PCID field of a global entry's tag: matches under every PCID
FL_WRITE, FL_USER, FL_NX, FL_GLOB, FL_DIRTY = 1, 2, 4, 8, 16
PKEY_SHIFT = 8
OP_READ, OP_WRITE, OP_FETCH, OP_INVLPG, OP_FLUSH = 0, 1, 2, 3, 4
CODE_OK, CODE_GP = -1, -2
#: Counters of :func:`_run`, in order.
COUNTERS = ("hits", "misses", "walks", "faults", "l1_hits", "stlb_hits", "evictions", "invlpgs", "full_flushes", "gp")

TRACE_DTYPE = np.dtype([("cpu", np.int64), ("vaddr", np.uint64), ("access", np.uint8)])


class Geometry(NamedTuple):
    """(entries, ways) of each array; an L1 array of 0 entries is absent."""

    l1_4k: tuple = (64, 4)
    l1_2m: tuple = (32, 4)
    stlb: tuple = (1536, 12)


class SimResult(NamedTuple):
    """What :meth:`TlbMachine.simulate` counted."""

    hits: int
    misses: int
    walks: int
    faults: int
    l1_hits: int
    stlb_hits: int
    evictions: int
    invlpgs: int
    full_flushes: int
    gp: int


# ---------------------------------------------------------------------------------------------
# The kernel
#
# Every array is indexed ``arr[field, cpu, set, way]``: a structure of arrays, so that the tags
# of one set (the only field a lookup reads before it hits) are contiguous -- a 12-way STLB set
# is 96 bytes of tags, two cache lines, and all tags of a 1536-entry STLB fit in 12 KiB.


@njit(cache=True, inline="always")
def _tag(vpn, pcid, size, glob):
    """One int64 a lookup compares: page number, PCID (GLOBAL_TAG for a global entry), size."""
    return (vpn << 15) | ((GLOBAL_TAG if glob else pcid) << 2) | (1 if size == PAGE_2M else 0)


@njit(cache=True, inline="always")
def _find(arr, c, s, key, gkey):
    for w in range(arr.shape[3]):
        t = arr[F_TAG, c, s, w]
        if t == key or t == gkey:
            return w
    return -1


@njit(cache=True, inline="always")
def _set_of(arr, vpn, size):
    """The set of a page: the low bits of its page number (the sets are a power of two)."""
    if size == PAGE_2M:
        return (vpn >> 9) & (arr.shape[2] - 1)
    return vpn & (arr.shape[2] - 1)


@njit(cache=True, inline="always")
def _probe(arr, c, vpn, pcid, size):
    """The set and way of the entry of ``size`` covering ``vpn`` under ``pcid`` (or global)."""
    base = vpn & -(size >> 12)
    s = _set_of(arr, base, size)
    return s, _find(arr, c, s, _tag(base, pcid, size, False), _tag(base, pcid, size, True))


@njit(cache=True, inline="always")
def _drop_addr(arr, c, vpn, pcid, size):
    n = 0
    s, w = _probe(arr, c, vpn, pcid, size)
    while w >= 0:
        arr[F_SIZE, c, s, w] = 0
        arr[F_TAG, c, s, w] = -1
        n += 1
        s, w = _probe(arr, c, vpn, pcid, size)
    return n


@njit(cache=True, inline="always")
def _invlpg(l1s, l1h, st, c, vpn, pcid):
    """INVLPG: drop the entries covering the page, in the current PCID or global."""
    _drop_addr(l1s, c, vpn, pcid, PAGE_4K)
    _drop_addr(l1h, c, vpn, pcid, PAGE_2M)
    return _drop_addr(st, c, vpn, pcid, PAGE_4K) + _drop_addr(st, c, vpn, pcid, PAGE_2M)


@njit(cache=True, inline="always")
def _flush_pcid(l1s, l1h, st, c, pcid, everything):
    """Drop the non-global entries of ``pcid`` (all non-global ones if ``everything``)."""
    for arr in (l1s, l1h, st):
        for s in range(arr.shape[2]):
            for w in range(arr.shape[3]):
                if arr[F_SIZE, c, s, w] != 0 and (arr[F_FLAGS, c, s, w] & FL_GLOB) == 0 and (
                        everything or arr[F_PCID, c, s, w] == pcid):
                    arr[F_SIZE, c, s, w] = 0
                    arr[F_TAG, c, s, w] = -1


@njit(cache=True, inline="always")
def _victim(arr, c, s):
    """LRU: an empty way if there is one, else the way with the oldest stamp.  Stamps grow
    monotonically (one per reference), so no way's stamp is ever shifted or aged."""
    best, stamp = 0, np.int64(1) << 62
    for w in range(arr.shape[3]):
        if arr[F_TAG, c, s, w] == -1:  # empty (its size is 0 too)
            return w
        if arr[F_STAMP, c, s, w] < stamp:
            best, stamp = w, arr[F_STAMP, c, s, w]
    return best


@njit(cache=True, inline="always")
def _put(arr, c, s, w, vpn, pcid, size, pfn, flags, now):
    arr[F_VPN, c, s, w] = vpn
    arr[F_PCID, c, s, w] = pcid
    arr[F_SIZE, c, s, w] = size
    arr[F_PFN, c, s, w] = pfn
    arr[F_FLAGS, c, s, w] = flags
    arr[F_STAMP, c, s, w] = now
    arr[F_TAG, c, s, w] = _tag(vpn, pcid, size, (flags & FL_GLOB) != 0)


@njit(cache=True, inline="always")
def _fill_l1(l1, c, vpn, pcid, size, pfn, flags, now):
    if l1.shape[3] == 0:
        return
    s = _set_of(l1, vpn, size)
    _put(l1, c, s, _victim(l1, c, s), vpn, pcid, size, pfn, flags, now)


@njit(cache=True, inline="always")
def _drop_exact(arr, c, vpn, size, tag):
    if arr.shape[3] == 0:
        return
    s = _set_of(arr, vpn, size)
    for w in range(arr.shape[3]):
        if arr[F_TAG, c, s, w] == tag:
            arr[F_SIZE, c, s, w] = 0
            arr[F_TAG, c, s, w] = -1


@njit(cache=True, inline="always")
def _fill(l1s, l1h, st, c, vpn, pcid, size, pfn, flags, now, evbuf, nev):
    """Insert an entry into the STLB (evicting LRU, dropping the victim from L1 too) and the L1
    array of its size.  Returns the number of evictions recorded so far."""
    s = _set_of(st, vpn, size)
    w = _victim(st, c, s)
    if st[F_SIZE, c, s, w] != 0:
        vv, vs, vt = st[F_VPN, c, s, w], st[F_SIZE, c, s, w], st[F_TAG, c, s, w]
        if nev < evbuf.shape[0]:
            for f in range(NF):
                evbuf[nev, f] = st[f, c, s, w]
        nev += 1
        if vs == PAGE_4K:
            _drop_exact(l1s, c, vv, vs, vt)
        else:
            _drop_exact(l1h, c, vv, vs, vt)
    _put(st, c, s, w, vpn, pcid, size, pfn, flags, now)
    if size == PAGE_4K:
        _fill_l1(l1s, c, vpn, pcid, size, pfn, flags, now)
    else:
        _fill_l1(l1h, c, vpn, pcid, size, pfn, flags, now)
    return nev


@njit(cache=True, inline="always")
def _fields(arr, c, s, w):
    return arr[F_VPN, c, s, w], arr[F_SIZE, c, s, w], arr[F_PFN, c, s, w], arr[F_PCID, c, s, w], arr[F_FLAGS, c, s, w]


@njit(cache=True, inline="always")
def _perm_code(flags, write, fetch, user):
    """0 if the rights allow the access, else the #PF error code (P set): SDM §4.6 with WP,
    SMEP, SMAP and NXE on, EFLAGS.AC and PKE off."""
    rw, us, nx = (flags & FL_WRITE) != 0, (flags & FL_USER) != 0, (flags & FL_NX) != 0
    if user:
        ok = us and (rw or not write) and not (fetch and nx)
    else:
        ok = not (us and not fetch) and not (write and not rw) and not (fetch and (nx or us))
    if ok:
        return 0
    return 1 | (2 if write else 0) | (4 if user else 0) | (16 if fetch else 0)


@njit(cache=True, inline="always")
def _leaf(snap_vpn, snap_size, lo, hi, vpn):
    """Index of the snapshot leaf covering ``vpn`` in [lo, hi) (by bisection), or -1."""
    for key in (vpn, vpn & -512):
        a, b = lo, hi
        while a < b:
            mid = (a + b) >> 1
            if snap_vpn[mid] < key:
                a = mid + 1
            else:
                b = mid
        if a < hi and snap_vpn[a] == key and vpn & -(snap_size[a] >> 12) == key:
            return a
    return -1


@njit(cache=True, inline="always")
def _step(l1s, l1h, st, big, i, c, v, op, user, pcid, pcide, snap_lo, snap_hi, snap_vpn, snap_size, snap_pfn,
          snap_flags, dense, dbase, doff, dlen, snap_walked, now, evbuf, nev, counts, out_paddr, out_code, out_hit,
          record):
    """One reference, every case (flushes, #GP, faults, dirty re-walks, misses): the general
    path that :func:`_run` takes whenever its fast path does not apply.  Returns ``nev``."""
    top = np.int64(v >> np.uint64(47))  # int64: comparing uint64 with int64 would go through float
    vpn = np.int64((v & np.uint64(0xFFFFFFFFFFFF)) >> np.uint64(12))
    if op == OP_FLUSH:
        _flush_pcid(l1s, l1h, st, c, pcid, not pcide)
        counts[8] += 1
        return nev
    if top != 0 and top != 0x1FFFF:
        counts[9] += 1
        if record:
            out_code[i] = CODE_GP
        return nev
    if op == OP_INVLPG:
        _invlpg(l1s, l1h, st, c, vpn, pcid)
        counts[7] += 1
        return nev
    write, fetch = op == OP_WRITE, op == OP_FETCH
    level = 0
    s, w = _probe(l1s, c, vpn, pcid, PAGE_4K)
    if w < 0 and big[c]:
        level = 1
        s, w = _probe(l1h, c, vpn, pcid, PAGE_2M)
    if w < 0:
        level = 2
        s, w = _probe(st, c, vpn, pcid, PAGE_4K)
    if w < 0 and big[c]:
        s, w = _probe(st, c, vpn, pcid, PAGE_2M)
    if w >= 0:
        if level == 0:
            ev, size, pfn, epcid, flags = _fields(l1s, c, s, w)
        elif level == 1:
            ev, size, pfn, epcid, flags = _fields(l1h, c, s, w)
        else:
            ev, size, pfn, epcid, flags = _fields(st, c, s, w)
        if not (write and (flags & FL_DIRTY) == 0):
            code = _perm_code(flags, write, fetch, user)
            if record:
                out_hit[i] = 1
            if code != 0:
                _invlpg(l1s, l1h, st, c, vpn, pcid)
                counts[3] += 1
                if record:
                    out_code[i] = code
                return nev
            counts[0] += 1
            if level == 2:
                st[F_STAMP, c, s, w] = now
                counts[5] += 1
                if size == PAGE_4K:
                    _fill_l1(l1s, c, ev, epcid, size, pfn, flags, now)
                else:
                    _fill_l1(l1h, c, ev, epcid, size, pfn, flags, now)
            else:
                if level == 0:
                    l1s[F_STAMP, c, s, w] = now
                else:
                    l1h[F_STAMP, c, s, w] = now
                counts[4] += 1
                s2 = _set_of(st, ev, size)
                t = _tag(ev, epcid, size, (flags & FL_GLOB) != 0)
                for w2 in range(st.shape[3]):
                    if st[F_TAG, c, s2, w2] == t:
                        st[F_STAMP, c, s2, w2] = now
            if record:
                out_paddr[i] = (pfn << 12) + (np.int64(v & np.uint64(0xFFFFFFFFFFFF)) - (ev << 12))
                out_code[i] = CODE_OK
            return nev
        _invlpg(l1s, l1h, st, c, vpn, pcid)  # a write through a clean entry walks again
    counts[1] += 1
    counts[2] += 1
    if dlen[c] > 0:
        k = vpn - dbase[c]
        j = dense[doff[c] + k] if 0 <= k < dlen[c] else -1
    else:
        j = _leaf(snap_vpn, snap_size, snap_lo[c], snap_hi[c], vpn)
    code = (2 if write else 0) | (4 if user else 0) | (16 if fetch else 0)
    if j >= 0:
        code = _perm_code(snap_flags[j], write, fetch, user)
    if code != 0:
        _invlpg(l1s, l1h, st, c, vpn, pcid)
        counts[3] += 1
        if record:
            out_code[i] = code
        return nev
    snap_walked[j] |= 1 | (2 if write else 0)
    if write:
        snap_flags[j] |= FL_DIRTY
    if snap_size[j] != PAGE_4K:
        big[c] = 1
    nev = _fill(l1s, l1h, st, c, snap_vpn[j], pcid, snap_size[j], snap_pfn[j], snap_flags[j], now, evbuf, nev)
    if record:
        out_paddr[i] = (snap_pfn[j] << 12) + (np.int64(v & np.uint64(0xFFFFFFFFFFFF)) - (snap_vpn[j] << 12))
        out_code[i] = CODE_OK
    return nev


@njit(cache=True, nogil=True, boundscheck=False)
def _trace_cpus(trace, ncpus):
    """How many references of ``trace`` each CPU makes; -1 first if one names no CPU."""
    seen = np.zeros(ncpus + 1, dtype=np.int64)
    for i in range(trace.shape[0]):
        c = trace[i].cpu
        if c < 0 or c >= ncpus:
            seen[0] = -1
            return seen
        seen[c + 1] += 1
    return seen


@njit(cache=True, nogil=True, boundscheck=False, fastmath=True)
def _run(l1s, l1h, st, big, trace, user, cr3_pcid, pcide, snap_lo, snap_hi, snap_vpn, snap_size, snap_pfn,
         snap_flags, dense, dbase, doff, dlen, snap_walked, now, evbuf, out_paddr, out_code, out_hit, record):
    """Run the references of ``trace`` (``TRACE_DTYPE`` records, read in place) through the
    TLBs.  With ``record`` every reference takes :func:`_step` and its outcome is written to
    ``out_*``.  Otherwise the fast path, taken for a read, write or fetch of a canonical
    lower-half address, is a hit whose cached rights allow the access: a tag scan of one set,
    the flags of the way found, two stamp stores and, on an STLB hit, the L1 fill.  Everything
    else (misses, faults, a write through a clean entry, INVLPG, CR3 reloads, #GP) goes through
    :func:`_step`, which probes again from the start; probing changes nothing, so both paths
    give the same outcome.  A plain miss (nothing cached, the walk finds the page with the
    rights the access needs) also stays on the fast path: through ``_step`` it cost about
    200 ns, inside the fast path about 60 ns.  Measured, not explained: removing any one part
    of ``_step`` did not close the gap."""
    counts = np.zeros(10, dtype=np.int64)
    nev = 0
    l1_hits = stlb_hits = 0
    # The flags a hit's entry must have and must not have, per access type: the rights check
    # of _perm_code and the "dirty before a write hits" rule as two masks.
    need = np.zeros(3, dtype=np.int64)
    forbid = np.zeros(3, dtype=np.int64)
    need[OP_WRITE] = FL_WRITE | FL_DIRTY
    if user:
        need[OP_READ] |= FL_USER
        need[OP_WRITE] |= FL_USER
        need[OP_FETCH] |= FL_USER
        forbid[OP_FETCH] = FL_NX
    else:
        forbid[OP_READ] = FL_USER
        forbid[OP_WRITE] = FL_USER
        forbid[OP_FETCH] = FL_USER | FL_NX
    pkey = cr3_pcid << 2  # the PCID field of every CPU's tags
    w1, wh, ws = l1s.shape[3], l1h.shape[3], st.shape[3]
    m1, mh, ms = l1s.shape[2] - 1, l1h.shape[2] - 1, st.shape[2] - 1
    gtag = np.int64(GLOBAL_TAG << 2)
    lowhalf = np.uint64(1) << np.uint64(47)
    huge = ~np.int64(511 << 15)  # clears the low 9 bits of a tag's page number
    fast = not record
    for i in range(trace.shape[0]):
        now += 1
        r = trace[i]
        c = r.cpu
        v = r.vaddr
        op = np.int64(r.access)
        go = 0  # 0: not served yet, 1: served by the fast path, 2: an entry found that cannot serve
        if fast and op <= OP_FETCH and v < lowhalf:
            vpn = np.int64(v >> np.uint64(12))
            nd, fb = need[op], forbid[op]
            key = (vpn << 15) | pkey[c]
            gkey = (vpn << 15) | gtag
            hb = big[c] != 0
            if w1:  # the L1 of 4 KiB pages
                s = vpn & m1
                w = _find(l1s, c, s, key, gkey)
                if w >= 0:
                    go = 2
                    f = l1s[F_FLAGS, c, s, w]
                    if (f & nd) == nd and (f & fb) == 0:
                        l1s[F_STAMP, c, s, w] = now
                        t = l1s[F_TAG, c, s, w]
                        s2 = vpn & ms
                        for w2 in range(ws):  # inclusive: the STLB's copy is used too
                            if st[F_TAG, c, s2, w2] == t:
                                st[F_STAMP, c, s2, w2] = now
                                break
                        l1_hits += 1
                        go = 1
            if go == 0 and hb and wh:  # the L1 of 2 MiB pages
                s = ((vpn & -512) >> 9) & mh
                w = _find(l1h, c, s, (key & huge) | 1, (gkey & huge) | 1)
                if w >= 0:
                    go = 2
                    f = l1h[F_FLAGS, c, s, w]
                    if (f & nd) == nd and (f & fb) == 0:
                        l1h[F_STAMP, c, s, w] = now
                        t = l1h[F_TAG, c, s, w]
                        s2 = ((vpn & -512) >> 9) & ms
                        for w2 in range(ws):
                            if st[F_TAG, c, s2, w2] == t:
                                st[F_STAMP, c, s2, w2] = now
                                break
                        l1_hits += 1
                        go = 1
            if go == 0:  # the STLB: 4 KiB, then 2 MiB
                s = vpn & ms
                w = _find(st, c, s, key, gkey)
                if w < 0 and hb:
                    s = ((vpn & -512) >> 9) & ms
                    w = _find(st, c, s, (key & huge) | 1, (gkey & huge) | 1)
                if w >= 0:
                    f = st[F_FLAGS, c, s, w]
                    if (f & nd) == nd and (f & fb) == 0:
                        st[F_STAMP, c, s, w] = now
                        if st[F_SIZE, c, s, w] == PAGE_4K:
                            if w1:
                                _fill_l1(l1s, c, st[F_VPN, c, s, w], st[F_PCID, c, s, w], PAGE_4K,
                                         st[F_PFN, c, s, w], f, now)
                        elif wh:
                            _fill_l1(l1h, c, st[F_VPN, c, s, w], st[F_PCID, c, s, w], PAGE_2M, st[F_PFN, c, s, w],
                                     f, now)
                        stlb_hits += 1
                        go = 1
                elif dlen[c] > 0:  # a miss everywhere: walk (the dense table) and fill, if allowed
                    k = vpn - dbase[c]
                    j = dense[doff[c] + k] if 0 <= k < dlen[c] else -1
                    if j >= 0:
                        f = snap_flags[j]
                        if (f & (nd & ~FL_DIRTY)) == (nd & ~FL_DIRTY) and (f & fb) == 0:
                            counts[1] += 1
                            counts[2] += 1
                            if op == OP_WRITE:
                                snap_walked[j] |= 3
                                snap_flags[j] |= FL_DIRTY
                            else:
                                snap_walked[j] |= 1
                            if snap_size[j] != PAGE_4K:
                                big[c] = 1
                            nev = _fill(l1s, l1h, st, c, snap_vpn[j], cr3_pcid[c], snap_size[j], snap_pfn[j],
                                        snap_flags[j], now, evbuf, nev)
                            go = 1
        if go != 1:
            nev = _step(l1s, l1h, st, big, i, c, v, r.access, user, cr3_pcid[c], pcide, snap_lo, snap_hi, snap_vpn,
                        snap_size, snap_pfn, snap_flags, dense, dbase, doff, dlen, snap_walked, now, evbuf, nev,
                        counts, out_paddr, out_code, out_hit, record)
    counts[0] += l1_hits + stlb_hits
    counts[4] += l1_hits
    counts[5] += stlb_hits
    counts[6] = nev
    return counts, now


# ---------------------------------------------------------------------------------------------
# The machine


class _Cpu:
    __slots__ = ("cr3_root", "cr3_pcid", "pcide", "loaded_mm", "loaded_asid", "is_lazy", "next_asid", "ctx_id",
                 "ctx_gen")

    def __init__(self, root: int, pcid: bool):
        self.cr3_root, self.cr3_pcid, self.pcide = root, 1 if pcid else 0, pcid
        self.loaded_mm, self.loaded_asid, self.is_lazy, self.next_asid = INIT_MM, 0, False, 1
        self.ctx_id = [1] + [0] * (TLB_NR_DYN_ASIDS - 1)
        self.ctx_gen = [1] + [0] * (TLB_NR_DYN_ASIDS - 1)


class _Mm:
    __slots__ = ("root", "ctx_id", "tlb_gen", "cpumask")

    def __init__(self, root: int, ctx_id: int, cpumask: set):
        self.root, self.ctx_id, self.tlb_gen, self.cpumask = root, ctx_id, 1, cpumask


class _Flush:
    __slots__ = ("mm", "kind", "start", "end", "stride", "stage", "new_tlb_gen", "full", "targets", "acked", "frames",
                 "pending", "local")

    def __init__(self, mm, kind, start, end, stride, frames, pending=None):
        self.mm, self.kind, self.start, self.end, self.stride = mm, kind, start, end, stride
        self.stage, self.new_tlb_gen, self.full = "cleared", 0, False
        self.targets, self.acked, self.frames = set(), set(), frames
        self.pending = pending  # the PTE change still to make (only with tlb-pte-cleared-after-flush)
        self.local = True


class TlbMachine:
    """CPUs with set-associative TLBs, mms, and Linux's flush protocol; the operations of
    :mod:`spec.tlb` and :mod:`spec.tlbflush` as methods."""

    def __init__(self, config: TlbConfig = TlbConfig(), geometry: Geometry = Geometry()):
        if not (isinstance(config, TlbConfig) and 1 <= config.ncpus <= 8 and 0 <= config.nr_mm <= 6):
            raise EINVAL(f"bad TLB configuration {config!r}")
        self.config, self.geometry = config, geometry
        self.pt = PageTables(PagingConfig("x86-64-4level", config.machine, 1 + config.nr_mm))
        n = config.ncpus
        self.mms = [_Mm(root, i + 1, set(range(n)) if i == INIT_MM else set()) for i, root in enumerate(self.pt.mms)]
        self.cpus = [_Cpu(self.pt.mms[0], config.pcid) for _ in range(n)]
        self.arrays = [self._array(n, *g) for g in (geometry.l1_4k, geometry.l1_2m, geometry.stlb)]
        self.big = np.zeros(n, dtype=np.int64)  # 1 once a CPU may hold a 2 MiB entry: probe for them
        if self.arrays[2].shape[3] == 0:
            raise EINVAL("the STLB needs at least one way")
        self.flushes: list[_Flush | None] = [None] * n
        self.queues: list[list[Ipi]] = [[] for _ in range(n)]
        self.handled: list[list[Ipi]] = [[] for _ in range(n)]
        self.stats = dict(Stats()._asdict())
        self.batches = [Batch()] * n  # reclaim's deferred flush, per CPU (immutable values)
        self.now = 0
        self.evicted: list[tuple[int, Entry]] = []

    @staticmethod
    def _array(n: int, entries: int, ways: int) -> np.ndarray:
        if entries == 0:
            return np.zeros((NF, n, 1, 0), dtype=np.int64)
        if ways <= 0 or entries % ways or (entries // ways) & (entries // ways - 1):
            raise EINVAL(f"{entries} entries do not make a power of two of sets of {ways} ways")
        arr = np.zeros((NF, n, entries // ways, ways), dtype=np.int64)  # field, cpu, set, way
        arr[F_TAG] = -1  # no tag: never matches
        return arr

    # -- checks ---------------------------------------------------------------------------------

    @staticmethod
    def _is_int(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    def _check_cpu(self, c) -> None:
        if not self._is_int(c) or not 0 <= c < len(self.cpus):
            raise EINVAL(f"{c!r} is not a CPU")

    def _check_mm(self, mm, user: bool = True) -> None:
        if not self._is_int(mm) or not (1 if user else 0) <= mm < len(self.mms):
            raise EINVAL(f"{mm!r} is not an mm")

    def _check_vaddr(self, vaddr) -> None:
        if not self._is_int(vaddr) or not 0 <= vaddr < 1 << 64:
            raise EINVAL(f"{vaddr!r} is not a 64-bit address")

    def _idle(self, c: int) -> None:
        if self.flushes[c] is not None:
            raise EBUSY(f"cpu{c} is inside a flush")

    def _pcid_of(self, asid: int) -> int:
        return asid + 1 if self.config.pcid else 0

    # -- hardware -------------------------------------------------------------------------------

    def _leaf(self, root: int, vaddr: int):
        """The leaf for ``vaddr`` with the rights of its path: (vbase, size, pfn, flags) or None."""
        pt, table = self.pt, root
        rw = us = True
        nx = False
        if not pt._canonical(vaddr):
            return None
        for level in range(4, 0, -1):
            raw = pt._get(table, pt._index(vaddr, level))
            d = pt._decode(raw, level)
            if not d.present or d.rsvd:
                return None
            rw, us, nx = rw and d.write, us and d.user, nx or d.nx
            if d.leaf:
                size = 1 << pt._shift(level)
                flags = (FL_WRITE * rw) | (FL_USER * us) | (FL_NX * nx) | (d.pkey << PKEY_SHIFT)
                flags |= FL_GLOB if raw & pte._PAGE_GLOBAL else 0
                flags |= FL_DIRTY if raw & pte._PAGE_DIRTY else 0
                return vaddr & ~(size - 1) & ((1 << 48) - 1), size, d.pfn, flags
            table = d.pfn
        return None

    def _kernel(self, trace, user: bool, snaps, record: bool, evcap: int):
        lo, hi, svpn, ssize, spfn, sflags, walked, dense, dbase, doff, dlen = snaps
        n = len(trace) if record else 1
        out_pa, out_code, out_hit = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
        evbuf = np.zeros((evcap, NF), dtype=np.int64)
        pcids = np.array([c.cr3_pcid for c in self.cpus], dtype=np.int64)
        counts, self.now = _run(*self.arrays, self.big, trace, user, pcids, self.config.pcid, lo, hi, svpn, ssize,
                                spfn, sflags, dense, dbase, doff, dlen, walked, self.now, evbuf, out_pa, out_code,
                                out_hit, record)
        for row in evbuf[:min(int(counts[6]), evcap)]:
            self.evicted.append((int(trace[0]["cpu"]), self._entry(row)))
        return counts, walked, out_pa, out_code, out_hit

    def _entry(self, row) -> Entry:
        f = int(row[F_FLAGS])
        return Entry(int(row[F_PCID]), self.pt._canon(int(row[F_VPN]) << 12), int(row[F_SIZE]), int(row[F_PFN]),
                     bool(f & FL_WRITE), bool(f & FL_USER), bool(f & FL_NX), f >> PKEY_SHIFT, bool(f & FL_GLOB),
                     bool(f & FL_DIRTY))

    def _snapshot(self, leaves_by_root: dict) -> tuple:
        """Concatenate the leaf lists (vbase, size, pfn, flags) of each root, sorted by page, and
        point every CPU at the range of its CR3's root (CPUs on one mm share its leaves).  A root
        whose leaves span at most 2^22 pages also gets a dense table page -> leaf index, so a
        walk is one load instead of a bisection (whose unpredictable branches cost more than
        the rest of a miss)."""
        start, rows, dense, where = {}, [], [], {}
        for root, leaves in leaves_by_root.items():
            first = len(rows)
            start[root] = (first, first + len(leaves))
            rows.extend(sorted(leaves))
            if leaves:
                lo_vpn = min(v for v, _, _, _ in leaves) >> 12
                hi_vpn = max((v + size) >> 12 for v, size, _, _ in leaves)
                if hi_vpn - lo_vpn <= 1 << 22:
                    table = np.full(hi_vpn - lo_vpn, -1, dtype=np.int64)
                    for j, (v, size, _, _) in enumerate(rows[first:], first):
                        table[(v >> 12) - lo_vpn:((v + size) >> 12) - lo_vpn] = j
                    where[root] = (lo_vpn, sum(len(d) for d in dense), len(table))
                    dense.append(table)
        span = [start.get(c.cr3_root, (0, 0)) for c in self.cpus]
        dspan = [where.get(c.cr3_root, (0, 0, 0)) for c in self.cpus]
        # One 64-byte row per leaf (page, size, frame, flags, walked): a miss reads one line.
        arr = np.zeros((len(rows), 8), dtype=np.int64)
        if rows:
            arr[:, :4] = np.array(rows, dtype=np.int64)
            arr[:, 0] >>= 12
        return (np.array([a for a, _ in span], np.int64), np.array([b for _, b in span], np.int64), arr[:, 0],
                arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4],
                np.concatenate(dense) if dense else np.zeros(0, np.int64),
                *(np.array([d[k] for d in dspan], np.int64) for k in range(3)))

    def access(self, cpu: int, vaddr: int, op: str = "r", user: bool = True) -> Lookup:
        """One access (:func:`spec.tlb.access`); evictions in :attr:`evicted`."""
        self.evicted = []
        self._check_cpu(cpu)
        self._check_vaddr(vaddr)
        if op not in ("r", "w", "x") or not isinstance(user, bool):
            raise EINVAL(f"bad access {op!r}")
        c = self.cpus[cpu]
        if user and (c.loaded_mm == INIT_MM or c.is_lazy):
            raise EINVAL(f"cpu{cpu} runs no user task")
        self._idle(cpu)
        leaf = self._leaf(c.cr3_root, vaddr)
        snaps = self._snapshot({c.cr3_root: [leaf] if leaf is not None else []})
        code = {"r": OP_READ, "w": OP_WRITE, "x": OP_FETCH}[op]
        counts, walked, pa, codes, hit = self._kernel(np.array([(cpu, vaddr, code)], TRACE_DTYPE), user, snaps, True,
                                                      1)
        if walked.size and walked[0]:
            self.pt.translate(c.cr3_root, vaddr, Access(op, user=user))  # Accessed/Dirty, as the walk did
        if codes[0] == CODE_GP:
            return Lookup(None, False, "#GP", 0)
        if codes[0] != CODE_OK:
            return Lookup(None, bool(hit[0]), "#PF", int(codes[0]))
        return Lookup(int(pa[0]), bool(hit[0]), None, 0)

    def simulate(self, trace: np.ndarray) -> SimResult:
        """Run a trace of user references (``TRACE_DTYPE``: cpu, vaddr, access = 0 read, 1 write,
        2 fetch, 3 INVLPG of the address, 4 CR3 reload flushing the current PCID) against
        every CPU's loaded mm; Accessed/Dirty bits are written back at the end.  The result is
        what :func:`spec.tlb.access` would give reference by reference, counted."""
        self.evicted = []
        trace = _as_trace(trace)
        seen = _trace_cpus(trace, len(self.cpus))
        if seen[0] < 0:
            raise EINVAL("the trace names a CPU that does not exist")
        used = np.flatnonzero(seen[1:]).tolist()
        for c in used:
            if self.cpus[c].loaded_mm == INIT_MM or self.cpus[c].is_lazy or self.flushes[c] is not None:
                raise EINVAL(f"cpu{c} runs no user task")
        roots = sorted({self.cpus[c].cr3_root for c in used})
        found = {r: self._all_leaves(r) for r in roots}
        snaps = self._snapshot({r: leaves for r, (leaves, _) in found.items()})
        counts, walked, _, _, _ = self._kernel(trace, True, snaps, False, 0)
        paths = np.array([p for r in roots for p in found[r][1]], dtype=np.int64).reshape(-1, 4)
        self._write_back(paths, walked)
        return SimResult(*(int(x) for x in counts))

    def _all_leaves(self, root: int) -> tuple[list, list]:
        """Every present leaf under ``root`` as (vbase, size, pfn, flags), sorted by page, with
        the positions (in the flattened entries array) of the entries its walk reads, padded
        with -1.  Bottom-level tables are decoded 512 entries at a time with numpy."""
        pt, width, rows = self.pt, self.pt.width, []

        def visit(table: int, level: int, base: int, rw: bool, us: bool, nx: bool, path: tuple) -> None:
            tid = int(pt.tid_of_pfn[table])
            if tid < 0:
                return
            row = pt.entries[tid]
            idx = np.flatnonzero(row)
            if level == 1:
                raws = row[idx]
                keep = (raws & np.uint64(1)) != 0
                idx, raws = idx[keep], raws[keep].astype(np.int64)  # a view of the bits; NX is the sign
                flags = ((raws >> 1) & 1 & int(rw)) * FL_WRITE | ((raws >> 2) & 1 & int(us)) * FL_USER
                flags |= (((raws >> 63) & 1) | int(nx)) * FL_NX | ((raws >> 8) & 1) * FL_GLOB
                flags |= ((raws >> 6) & 1) * FL_DIRTY | ((raws >> 59) & 0xF) << PKEY_SHIFT
                pfns = (raws >> 12) & ((1 << 40) - 1)
                for i, pfn, f in zip(idx.tolist(), pfns.tolist(), flags.tolist()):
                    rows.append((base + i * PAGE_4K, PAGE_4K, pfn, f, path + (tid * width + i,)))
                return
            span = 1 << pt._shift(level)
            for index in idx.tolist():
                raw = int(row[index])
                d = pt._decode(raw, level)
                if not d.present or d.rsvd:
                    continue
                w, u, x, pos = rw and d.write, us and d.user, nx or d.nx, path + (tid * width + index,)
                if d.leaf:
                    f = (FL_WRITE * w) | (FL_USER * u) | (FL_NX * x) | (d.pkey << PKEY_SHIFT)
                    f |= (FL_GLOB if raw & pte._PAGE_GLOBAL else 0) | (FL_DIRTY if raw & pte._PAGE_DIRTY else 0)
                    rows.append((base + index * span, span, d.pfn, f, pos + (-1,) * (level - 1)))
                else:
                    visit(d.pfn, level - 1, base + index * span, w, u, x, pos)

        visit(root, 4, 0, True, True, False, ())
        rows.sort()
        return [r[:4] for r in rows], [r[4] for r in rows]

    def _write_back(self, paths: np.ndarray, walked: np.ndarray) -> None:
        """What the walks of a simulation wrote: Accessed in every entry read, Dirty in the leaf
        of every walk for a write (as :func:`spec.paging.translate` does)."""
        flat = self.pt.entries.reshape(-1)
        read = paths[walked != 0]
        flat[read[read >= 0]] |= np.uint64(pte._PAGE_ACCESSED)
        wrote = paths[(walked & 2) != 0]
        if len(wrote):
            last = wrote[np.arange(len(wrote)), (wrote >= 0).sum(axis=1) - 1]
            flat[last] |= np.uint64(pte._PAGE_DIRTY)

    def _entries(self, cpu: int) -> frozenset:
        st = self.arrays[2][:, cpu].reshape(NF, -1).T
        return frozenset(self._entry(row) for row in st[st[:, F_SIZE] != 0])

    def _drop(self, cpu: int, keep) -> int:
        """Drop the entries for which ``keep(entry)`` is false, in every array; how many went."""
        n = 0
        for k, arr in enumerate(self.arrays):
            a = arr[:, cpu]
            for s, w in zip(*np.nonzero(a[F_SIZE])):
                if not keep(self._entry(a[:, s, w])):
                    a[F_SIZE, s, w] = 0
                    a[F_TAG, s, w] = -1
                    n += k == 2
        return n

    def evict(self, cpu: int, entry: Entry) -> None:
        """Drop one entry (:func:`spec.tlb.evict`)."""
        self.evicted = []
        self._check_cpu(cpu)
        if entry not in self._entries(cpu):
            raise EINVAL(f"cpu{cpu} holds no entry {entry!r}")
        self._drop(cpu, lambda e: e != entry)

    def _covers(self, e: Entry, vaddr: int) -> bool:
        return (vaddr & ~(e.size - 1)) == e.vbase

    def invlpg(self, cpu: int, vaddr: int) -> int:
        """INVLPG (:func:`spec.tlb.invlpg`)."""
        self.evicted = []
        self._check_cpu(cpu)
        self._check_vaddr(vaddr)
        cur = self.cpus[cpu].cr3_pcid
        return self._drop(cpu, lambda e: not (self._covers(e, vaddr) and (e.glob or e.pcid == cur)))

    def invpcid(self, cpu: int, kind: int, pcid: int = 0, vaddr: int = 0) -> int:
        """INVPCID (:func:`spec.tlb.invpcid`)."""
        self.evicted = []
        self._check_cpu(cpu)
        self._check_vaddr(vaddr)
        if kind not in (0, 1, 2, 3) or not self._is_int(pcid) or not 0 <= pcid < 1 << 12:
            raise EINVAL(f"bad INVPCID type {kind!r} or PCID {pcid!r}")
        gone = {0: lambda e: self._covers(e, vaddr) and e.pcid == pcid and not e.glob,
                1: lambda e: e.pcid == pcid and not e.glob, 2: lambda e: True, 3: lambda e: not e.glob}[kind]
        return self._drop(cpu, lambda e: not gone(e))

    def write_cr3(self, cpu: int, root: int, pcid: int = 0, noflush: bool = False) -> int:
        """MOV CR3 (:func:`spec.tlb.write_cr3`)."""
        self.evicted = []
        self._check_cpu(cpu)
        c = self.cpus[cpu]
        if root not in self.pt.mms or not self._is_int(pcid) or not 0 <= pcid < 1 << 12 or not isinstance(noflush, bool):
            raise EINVAL("bad CR3 value")
        if not c.pcide and (pcid or noflush):
            raise EINVAL("PCID bits in CR3 without CR4.PCIDE")
        n = 0
        if not noflush:
            n = self._drop(cpu, lambda e: e.glob or (c.pcide and e.pcid != pcid))
        c.cr3_root, c.cr3_pcid = root, pcid
        return n

    def toggle_pge(self, cpu: int) -> int:
        """Toggle CR4.PGE (:func:`spec.tlb.toggle_pge`)."""
        self.evicted = []
        self._check_cpu(cpu)
        return self._drop(cpu, lambda e: False)

    # -- the protocol ---------------------------------------------------------------------------

    def _choose_new_asid(self, c: _Cpu, mm: int, next_gen: int):
        if not self.config.pcid:
            return 0, True, c.next_asid
        for asid in range(TLB_NR_DYN_ASIDS):
            if c.ctx_id[asid] == self.mms[mm].ctx_id:
                return asid, c.ctx_gen[asid] < next_gen, c.next_asid
        asid = c.next_asid
        return (0, True, 1) if asid >= TLB_NR_DYN_ASIDS else (asid, True, asid + 1)

    def _switch(self, cpu: int, mm: int):
        c = self.cpus[cpu]
        prev, was_lazy = c.loaded_mm, c.is_lazy
        c.is_lazy = False
        if prev == mm:
            if not was_lazy or bugs.active("tlb-lazy-no-catch-up"):
                return c.loaded_asid, False
            next_gen = self.mms[mm].tlb_gen
            if c.ctx_gen[c.loaded_asid] == next_gen:
                return c.loaded_asid, False
            asid, need_flush, next_asid = c.loaded_asid, True, c.next_asid
        else:
            if prev != INIT_MM:
                self.mms[prev].cpumask.discard(cpu)
            if mm != INIT_MM:
                self.mms[mm].cpumask.add(cpu)
            next_gen = self.mms[mm].tlb_gen
            asid, need_flush, next_asid = self._choose_new_asid(c, mm, next_gen)
        if need_flush:
            c.ctx_id[asid], c.ctx_gen[asid] = self.mms[mm].ctx_id, next_gen
            self.stats["switch_flushes"] += 1
        c.next_asid, c.loaded_mm, c.loaded_asid = next_asid, mm, asid
        self.write_cr3(cpu, self.mms[mm].root, self._pcid_of(asid), noflush=self.config.pcid and not need_flush)
        return asid, need_flush

    def switch_mm(self, cpu: int, mm: int):
        """``switch_mm_irqs_off()`` (:func:`spec.tlbflush.switch_mm`)."""
        self.evicted = []
        self._check_cpu(cpu)
        self._check_mm(mm, user=False)
        self._idle(cpu)
        return self._switch(cpu, mm)

    def enter_lazy(self, cpu: int) -> None:
        """``enter_lazy_tlb()``."""
        self.evicted = []
        self._check_cpu(cpu)
        self._idle(cpu)
        if self.cpus[cpu].loaded_mm != INIT_MM:
            self.cpus[cpu].is_lazy = True

    def populate(self, mm: int, vaddr: int, size: int = PAGE_4K) -> int:
        """Map a fresh frame at ``vaddr`` (:func:`spec.tlbflush.populate`)."""
        self.evicted = []
        self._check_mm(mm)
        if size not in (PAGE_4K, PAGE_2M):
            raise EINVAL(f"size {size!r} is neither 4 KiB nor 2 MiB")
        snap = self.pt._snapshot()
        try:
            pfn = self.pt.alloc_data(0 if size == PAGE_4K else 9)
            self.pt.map(self.mms[mm].root, vaddr, pfn, size, pte.PAGE_SHARED, size)
        except Exception:
            self.pt._restore(snap)
            raise
        return pfn

    def _begin(self, cpu: int, kind: str, vaddr: int, size: int, change) -> int:
        self.evicted = []
        self._check_cpu(cpu)
        self._idle(cpu)
        c = self.cpus[cpu]
        if c.loaded_mm == INIT_MM or c.is_lazy:
            raise EINVAL(f"cpu{cpu} runs no user task")
        mm = c.loaded_mm
        root = self.mms[mm].root
        self.pt._check_range(root, vaddr, size, PAGE_4K)
        leaves = self.pt._leaves_within(root, vaddr, size)
        late = bugs.active("tlb-pte-cleared-after-flush")
        if not late or not leaves:
            change(root)
        if not leaves:
            return 0
        spans = [(start, 1 << self.pt._shift(level)) for level, _, _, _, start in leaves]
        start, end = min(s for s, _ in spans), max(s + n for s, n in spans)
        stride = PAGE_2M if all(n == PAGE_2M for _, n in spans) else PAGE_4K
        frames = ()
        if kind == "munmap":
            frames = tuple(sorted((self.pt._decode(raw, level).pfn, 0 if level == 1 else 9)
                                  for level, _, _, raw, _ in leaves))
            if bugs.active("tlb-free-before-flush"):
                for pfn, order in frames:
                    self.pt.free_data(pfn, order)
                frames = ()
        self.flushes[cpu] = _Flush(mm, kind, start, end, stride, frames, (lambda: change(root)) if late else None)
        return len(leaves)

    def munmap(self, cpu: int, vaddr: int, size: int) -> int:
        """``munmap()`` by the task on ``cpu`` (:func:`spec.tlbflush.munmap`)."""
        return self._begin(cpu, "munmap", vaddr, size, lambda root: self.pt.unmap(root, vaddr, size))

    def mprotect(self, cpu: int, vaddr: int, size: int, prot: int) -> int:
        """``mprotect()`` by the task on ``cpu`` (:func:`spec.tlbflush.mprotect`)."""
        return self._begin(cpu, "mprotect", vaddr, size, lambda root: self.pt.protect(root, vaddr, size, prot))

    def _flush_tlb_func(self, cpu: int, f: Ipi, local: bool) -> str:
        c = self.cpus[cpu]
        if not local and f.mm != NO_MM and f.mm != c.loaded_mm:
            return "nothing: the mm is no longer loaded"
        if c.loaded_mm == INIT_MM:
            return "nothing: init_mm"
        if c.is_lazy:
            self._switch(cpu, INIT_MM)
            return "lazy: switched to init_mm"
        mm_gen, local_gen = self.mms[c.loaded_mm].tlb_gen, c.ctx_gen[c.loaded_asid]
        if local_gen == mm_gen or (f.new_tlb_gen != TLB_GENERATION_INVALID and f.new_tlb_gen <= local_gen):
            return "nothing: already up to date"
        one_behind = f.new_tlb_gen == local_gen + 1 or bugs.active("tlb-partial-flush-behind")
        if f.end != TLB_FLUSH_ALL and one_behind and f.new_tlb_gen == mm_gen:
            pages = range(f.start, f.end, f.stride)
            for addr in pages:
                self.invlpg(cpu, addr)
            self.stats["local_invlpg" if local else "remote_invlpg"] += len(pages)
            what = f"partial flush of {len(pages)} page{'s' if len(pages) != 1 else ''}"
        else:
            self.write_cr3(cpu, c.cr3_root, c.cr3_pcid, noflush=False)
            self.stats["local_full" if local else "remote_full"] += 1
            what = "full flush"
        c.ctx_gen[c.loaded_asid] = mm_gen
        return what

    def _ipi(self, f: _Flush, cpu: int) -> Ipi:
        return Ipi(cpu, NO_MM if f.kind == "reclaim" else f.mm, 0 if f.full else f.start,
                   TLB_FLUSH_ALL if f.full else f.end, f.stride, f.new_tlb_gen)

    def advance(self, cpu: int) -> str:
        """The flush on ``cpu`` takes its next step (:func:`spec.tlbflush.advance`)."""
        self.evicted = []
        self._check_cpu(cpu)
        f = self.flushes[cpu]
        if f is None:
            raise EINVAL(f"no flush in progress on cpu{cpu}")
        if f.stage == "cleared" and bugs.active("tlb-munmap-no-flush") and f.kind == "munmap":
            f.stage = "returned"
        elif f.stage == "cleared":
            self.mms[f.mm].tlb_gen += 1
            f.new_tlb_gen = self.mms[f.mm].tlb_gen
            f.full = (f.end - f.start) // f.stride > TLB_SINGLE_PAGE_FLUSH_CEILING  # get_flush_tlb_info()
            f.stage = "bumped"
        elif f.stage == "bumped":
            mask = f.targets if f.kind == "reclaim" else self.mms[f.mm].cpumask
            f.targets = {t for t in mask if t != cpu and not self.cpus[t].is_lazy}
            for t in sorted(f.targets):
                self.queues[t].append(self._ipi(f, cpu))
            self.stats["ipis"] += len(f.targets)
            f.stage = "sent"
        elif f.stage == "sent":
            if f.local:
                self._flush_tlb_func(cpu, self._ipi(f, cpu), local=True)
            f.stage = "flushed_local"
        elif f.stage == "flushed_local":
            if f.acked != f.targets:
                raise EBUSY(f"cpu{cpu} waits for acknowledgements from {sorted(f.targets - f.acked)}")
            if f.pending is not None:
                f.pending()
                f.pending = None
            f.stage = "returned"
        else:
            if f.pending is not None:
                f.pending()
            for pfn, order in f.frames:
                self.pt.free_data(pfn, order)
            self.flushes[cpu] = None
            if f.kind == "reclaim":
                b = self.batches[cpu]
                self.batches[cpu] = b._replace(flushing=(), ready=b.ready + b.flushing)
            return "done"
        return f.stage

    def deliver_ipi(self, cpu: int) -> str:
        """The oldest queued IPI runs ``flush_tlb_func`` on ``cpu``."""
        self.evicted = []
        self._check_cpu(cpu)
        if not self.queues[cpu]:
            raise EINVAL(f"no IPI queued for cpu{cpu}")
        ipi = self.queues[cpu].pop(0)
        self.handled[cpu].append(ipi)
        return self._flush_tlb_func(cpu, ipi, local=False)

    def ack_ipi(self, cpu: int) -> None:
        """``cpu`` acknowledges the oldest IPI it handled."""
        self.evicted = []
        self._check_cpu(cpu)
        if not self.handled[cpu]:
            raise EINVAL(f"cpu{cpu} has no handled IPI to acknowledge")
        ipi = self.handled[cpu].pop(0)
        self.flushes[ipi.sender].acked.add(cpu)

    # -- reclaim's deferred flush ----------------------------------------------------------------

    def reclaim_unmap(self, cpu: int, mm: int, vaddr: int) -> int:
        """``try_to_unmap_one`` + ``set_tlb_ubc_flush_pending`` (:func:`spec.tlbflush.reclaim_unmap`)."""
        self.evicted = []
        self._check_cpu(cpu)
        self._check_mm(mm)
        self._check_vaddr(vaddr)
        self._idle(cpu)
        root = self.mms[mm].root
        base = vaddr & ~(PAGE_4K - 1)
        leaves = self.pt._leaves_within(root, base, PAGE_4K) if base < 1 << 47 else []
        if len(leaves) != 1 or leaves[0][0] != 1:
            raise EINVAL(f"no 4 KiB page of mm {mm} is mapped at {vaddr:#x}")
        level, _, _, raw, _ = leaves[0]
        pfn = self.pt._decode(raw, level).pfn
        self.pt.unmap(root, base, PAGE_4K)
        m = self.mms[mm]
        m.tlb_gen += 1
        b = self.batches[cpu]
        self.batches[cpu] = b._replace(cpumask=b.cpumask | frozenset(m.cpumask),
                                       frames=b.frames + ((pfn, 0, bool(raw & pte._PAGE_DIRTY)),))
        return pfn

    def reclaim_flush(self, cpu: int, dirty_only: bool = False) -> str:
        """``try_to_unmap_flush`` / ``try_to_unmap_flush_dirty`` (:func:`spec.tlbflush.reclaim_flush`)."""
        self.evicted = []
        self._check_cpu(cpu)
        if not isinstance(dirty_only, bool):
            raise EINVAL(f"dirty_only {dirty_only!r} is not a bool")
        self._idle(cpu)
        b = self.batches[cpu]
        if not b.frames or (dirty_only and not b.writable):
            return "nothing"
        f = _Flush(INIT_MM, "reclaim", 0, TLB_FLUSH_ALL, PAGE_4K,
                   tuple((pfn, order) for pfn, order, dirty in b.frames if not dirty))
        f.stage, f.full, f.targets, f.local = "bumped", True, set(b.cpumask), cpu in b.cpumask
        self.flushes[cpu] = f
        self.batches[cpu] = Batch(frozenset(), (), b.flushing + tuple((p, o) for p, o, d in b.frames if d), b.ready)
        return "started"

    def reclaim_pageout(self, cpu: int, pfn: int) -> None:
        """``pageout()`` of a flushed dirty frame, then free it (:func:`spec.tlbflush.reclaim_pageout`)."""
        self.evicted = []
        self._check_cpu(cpu)
        self._idle(cpu)
        b = self.batches[cpu]
        ready = [i for i, (p, _) in enumerate(b.ready) if p == pfn]
        if not ready:
            if any(p == pfn and d for p, _, d in b.frames) or any(p == pfn for p, _ in b.flushing):
                raise EBUSY(f"frame {pfn} is dirty and not flushed yet: try_to_unmap_flush_dirty() first")
            raise EINVAL(f"frame {pfn} is not a dirty frame of cpu{cpu}'s reclaim batch")
        i = ready[0]
        self.pt.free_data(pfn, b.ready[i][1])
        self.batches[cpu] = b._replace(ready=b.ready[:i] + b.ready[i + 1:])

    # -- the spec state -------------------------------------------------------------------------

    def abstract(self) -> TlbState:
        """The :class:`spec.tlb.TlbState` this machine represents."""
        cpus = tuple(Cpu(c.cr3_root, c.cr3_pcid, c.pcide, self._entries(i), c.loaded_mm, c.loaded_asid, c.is_lazy,
                         c.next_asid, tuple(Slot(a, b) for a, b in zip(c.ctx_id, c.ctx_gen)))
                     for i, c in enumerate(self.cpus))
        mms = tuple(Mm(m.root, m.ctx_id, m.tlb_gen, frozenset(m.cpumask)) for m in self.mms)
        flushes = tuple(None if f is None else Flush(f.mm, f.kind, f.start, f.end, f.stride, f.stage, f.new_tlb_gen,
                                                     f.full, frozenset(f.targets), frozenset(f.acked), f.frames,
                                                     f.local)
                        for f in self.flushes)
        return TlbState(self.config, self.pt.abstract(), cpus, mms, flushes, tuple(tuple(q) for q in self.queues),
                        tuple(tuple(q) for q in self.handled), Stats(**self.stats), tuple(self.batches))


def _as_trace(trace: np.ndarray) -> np.ndarray:
    """``trace`` as a contiguous ``TRACE_DTYPE`` array (no copy when it already is one); the
    kernel reads its records in place."""
    if trace.dtype == TRACE_DTYPE:
        return np.ascontiguousarray(trace)
    out = np.empty(len(trace), TRACE_DTYPE)
    for name in TRACE_DTYPE.names:
        out[name] = trace[name]
    return out


def make_trace(rng: np.random.Generator, n: int, cpus: int = 2, base: int = 0x7F0000000000, pages: int = 4096,
               hot: float = 0.9, hot_pages: int = 48, writes: float = 0.3) -> np.ndarray:
    """A trace of ``n`` references over ``pages`` 4 KiB pages from ``base``: a fraction ``hot``
    goes to a hot set of ``hot_pages`` pages, the rest is uniform; ``writes`` of them write."""
    t = np.empty(n, dtype=TRACE_DTYPE)
    t["cpu"] = rng.integers(0, cpus, n)
    page = np.where(rng.random(n) < hot, rng.integers(0, hot_pages, n), rng.integers(0, pages, n))
    t["vaddr"] = (base + page * PAGE_4K + rng.integers(0, PAGE_4K // 8, n) * 8).astype(np.uint64)
    t["access"] = (rng.random(n) < writes).astype(np.uint8)
    return t
