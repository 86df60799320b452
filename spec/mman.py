"""The memory-management system-call ABI: the constants user space passes to the kernel.

Every number here is part of Linux's user-space ABI for x86-64 and is defined once, for
every mechanism that takes it (:mod:`spec.vma`, :mod:`spec.fault`, :mod:`spec.dax`) and for
the live-kernel oracle, which passes the very same values to the running kernel.  Sources:
``include/uapi/asm-generic/mman-common.h``, ``include/uapi/asm-generic/mman.h``,
``include/uapi/linux/mman.h``, ``include/linux/mman.h`` and
``arch/x86/include/uapi/asm/unistd_64.h``.

>>> hex(MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
'0x100022'
>>> MADV_DONTNEED, MADV_FREE, MADV_POPULATE_WRITE
(4, 8, 23)
"""

# --- protection (mman-common.h) -----------------------------------------------------------
PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
PROT_SEM = 0x8
PROT_GROWSDOWN = 0x01000000
PROT_GROWSUP = 0x02000000

# --- mmap flags (mman-common.h, mman.h, linux/mman.h) -------------------------------------
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_GROWSDOWN = 0x0100
MAP_DENYWRITE = 0x0800
MAP_EXECUTABLE = 0x1000
MAP_LOCKED = 0x2000
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_NONBLOCK = 0x10000
MAP_STACK = 0x20000
MAP_HUGETLB = 0x40000
MAP_SYNC = 0x80000
MAP_FIXED_NOREPLACE = 0x100000
MAP_UNINITIALIZED = 0x4000000
#: the flags ``MAP_SHARED`` accepts silently; ``MAP_SHARED_VALIDATE`` refuses anything else
#: the file does not support (include/linux/mman.h)
LEGACY_MAP_MASK = (
    MAP_SHARED | MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_DENYWRITE | MAP_EXECUTABLE
    | MAP_UNINITIALIZED | MAP_GROWSDOWN | MAP_LOCKED | MAP_NORESERVE | MAP_POPULATE
    | MAP_NONBLOCK | MAP_STACK | MAP_HUGETLB
)

# --- madvise advice (mman-common.h) --------------------------------------------------------
MADV_NORMAL = 0
MADV_RANDOM = 1
MADV_SEQUENTIAL = 2
MADV_WILLNEED = 3
MADV_DONTNEED = 4
MADV_FREE = 8
MADV_REMOVE = 9
MADV_DONTFORK = 10
MADV_DOFORK = 11
MADV_MERGEABLE = 12
MADV_UNMERGEABLE = 13
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_DONTDUMP = 16
MADV_DODUMP = 17
MADV_WIPEONFORK = 18
MADV_KEEPONFORK = 19
MADV_COLD = 20
MADV_PAGEOUT = 21
MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23
MADV_DONTNEED_LOCKED = 24
MADV_COLLAPSE = 25

# --- mremap (linux/mman.h) -------------------------------------------------------------------
MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4

# --- mlock2 / mlockall (mman-common.h, asm-generic/mman.h) ---------------------------------
MLOCK_ONFAULT = 0x01
MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4

# --- msync (mman-common.h) -----------------------------------------------------------------
MS_ASYNC = 1
MS_INVALIDATE = 2
MS_SYNC = 4

# --- x86-64 system-call numbers (arch/x86/entry/syscalls/syscall_64.tbl) --------------------
SYS_mmap = 9
SYS_mprotect = 10
SYS_munmap = 11
SYS_brk = 12
SYS_mremap = 25
SYS_msync = 26
SYS_mincore = 27
SYS_madvise = 28
SYS_mlock = 149
SYS_munlock = 150
SYS_mlockall = 151
SYS_munlockall = 152
SYS_mlock2 = 325
