"""Typed errors: one class per errno or hardware event, shared by spec and impl.

A spec transition whose precondition fails raises one of these and returns no new state, so
the caller's state is exactly what it was.  The impl raises the same classes (it imports them
from here), which is what lets the lockstep harness compare failures as well as results.

Names follow what Linux reports: an errno (``EINVAL``, ``ENOMEM`` ...) where a system call
or kernel API would return one, a hardware event (``PageFault``, ``GeneralProtection``) where
the CPU would raise one, a signal (``SIGSEGV``, ``SIGBUS``) where user space would see one, and
the kernel's own report (``BadPage`` for ``bad_page()``, ``DoubleFree``) where Linux detects a
misuse of its internal API.
"""

from __future__ import annotations


class MMError(Exception):
    """Base of every typed error in mmspec."""

    errno: int | None = None


class EINVAL(MMError):
    """Invalid argument: out of range, unaligned, unknown name."""

    errno = 22


class ENOMEM(MMError):
    """Out of memory: the request cannot be satisfied."""

    errno = 12


class EFAULT(MMError):
    """Bad address."""

    errno = 14


class EEXIST(MMError):
    """The object (a mapping, a name) already exists."""

    errno = 17


class EBUSY(MMError):
    """The object is in use."""

    errno = 16


class DoubleFree(MMError):
    """A free of memory that is already free."""


class BadPage(MMError):
    """``bad_page()`` in mm/page_alloc.c: a free whose page state does not match the request."""


class PageFault(MMError):
    """#PF: the page walk failed; carries the error code and CR2."""


class GeneralProtection(MMError):
    """#GP: for example a non-canonical address or a segment limit violation."""


class SIGSEGV(MMError):
    """The signal user space receives for an access to a bad or protected address."""


class SIGBUS(MMError):
    """The signal for an access beyond the end of a file mapping or to poisoned memory."""


class InvalidObjectPointer(MMError):
    """SLUB's ``check_valid_pointer()`` failed: a free of an address that is not the start of an
    object of that slab (``slab_err()``: "Invalid object pointer 0x...")."""


class WrongSlabCache(MMError):
    """``cache_from_obj()``: an object freed to a cache other than the one it came from
    ("kmem_cache_free: Wrong slab cache. A but object is from B")."""


class SlabCorruption(MMError):
    """SLUB's ``check_object()`` found a red zone or the poison of a free object overwritten
    ("BUG cache (Not tainted): Right Redzone overwritten", "... Poison overwritten")."""


class SegmentNotPresent(MMError):
    """#NP (vector 11): a segment or gate descriptor with P = 0 was loaded; carries the selector
    error code (Intel SDM Vol. 3A §6.13)."""


class StackFault(MMError):
    """#SS (vector 12): a stack-segment limit or canonical violation, or a not-present SS load."""


class InvalidOpcode(MMError):
    """#UD (vector 6): the instruction is not valid in the current mode."""


class EOPNOTSUPP(MMError):
    """Operation not supported: e.g. ``mmap(MAP_SYNC)`` of a file that is not on a DAX device."""

    errno = 95


class EACCES(MMError):
    """Permission denied: e.g. ``mprotect`` asking for an access its ``VM_MAY*`` bits forbid."""

    errno = 13


class EAGAIN(MMError):
    """Resource temporarily unavailable: e.g. ``MAP_LOCKED`` beyond ``RLIMIT_MEMLOCK``."""

    errno = 11


class EPERM(MMError):
    """Operation not permitted: e.g. a mapping below ``mmap_min_addr`` without CAP_SYS_RAWIO."""

    errno = 1
