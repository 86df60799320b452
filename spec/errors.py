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
