"""What user space sees of the VMAs: ``/proc/PID/maps`` and the smaps ``VmFlags:`` line
(fs/proc/task_mmu.c: ``show_map_vma``, ``show_smap_vma_flags``).

Part of :mod:`spec.vma`, which re-exports every public name here.

**maps.**  One line per VMA (:func:`maps_line`): ``start-end``, the permissions ``rwxp`` (``s``
for a ``VM_MAYSHARE`` VMA, :func:`perms`), the file offset in bytes, the device, the inode, and
the name padded to column 74: the file's path, or a label.  As in ``show_map_vma`` the labels
are computed, not stored: ``[heap]`` goes to an anonymous VMA overlapping ``[start_brk, brk]``
and ``[stack]`` to the VMA containing ``start_stack``.  **VmFlags** lists two-letter mnemonics
in bit order (:func:`vmflags`).  :func:`window_maps` is the compact form the kernel oracle
records for a program's window of pages.

>>> from spec.vm_area import Mm, Vma, VM_READ, VM_MAYREAD
>>> v = Vma(0x200000000000, 0x200000002000, VM_READ | VM_MAYREAD)
>>> print(maps(Mm(vmas=(v,))), end="")
200000000000-200000002000 r--p 00000000 00:00 0 
>>> vmflags(v.flags)
'rd mr'
"""

from __future__ import annotations


from spec.vm_area import VM_EXEC, VM_MAYSHARE, VM_READ, VM_WRITE, VMFLAG_MNEMONICS, WINDOW_BASE
from spec.zone import PAGE_SHIFT


# ---------------------------------------------------------------------------------------------
# Views.


def perms(vma):
    """The ``rwxp`` column of maps."""
    f = vma.flags
    return (("r" if f & VM_READ else "-") + ("w" if f & VM_WRITE else "-")
            + ("x" if f & VM_EXEC else "-") + ("s" if f & VM_MAYSHARE else "p"))


def _label(mm, v):
    if v.file is not None:
        return v.file.path
    if v.name:
        return v.name
    if v.start <= mm.brk and v.end >= mm.start_brk:
        return "[heap]"
    if mm.start_stack and v.start <= mm.start_stack <= v.end:
        return "[stack]"
    return ""


def maps_line(mm, v):
    """One ``/proc/PID/maps`` line (``show_map_vma``), without the newline."""
    if v.file is not None:
        dev, ino, off = v.file.dev, v.file.ino, v.pgoff << PAGE_SHIFT
    else:
        dev, ino, off = "00:00", 0, 0
    head = f"{v.start:08x}-{v.end:08x} {perms(v)} {off:08x} {dev} {ino} "
    name = _label(mm, v)
    return head + " " * (max(72 - len(head), 0) + 1) + name if name else head


def maps(mm):
    """``/proc/PID/maps`` of this mm, byte for byte."""
    return "".join(maps_line(mm, v) + "\n" for v in mm.vmas)


def vmflags(flags):
    """The smaps ``VmFlags:`` mnemonics of ``flags``, in bit order (``show_smap_vma_flags``)."""
    return " ".join(VMFLAG_MNEMONICS[b] for b in range(32) if flags >> b & 1 and b in VMFLAG_MNEMONICS)


def smaps_vmflags_line(flags):
    """The whole smaps line: ``VmFlags: rd wr mr mw me ac \\n`` (each mnemonic followed by a
    space)."""
    return "VmFlags: " + "".join(m + " " for m in vmflags(flags).split()) + "\n"


def render(mm):
    """maps, plus what maps does not show: the anon_vma and flags of each VMA."""
    lines = [maps_line(mm, v) + f"  # av={v.anon_vma} chain={len(v.chain)} {vmflags(v.flags)}" for v in mm.vmas]
    return "\n".join(lines) + f"\nlocked_vm={mm.locked_vm} brk={mm.brk:#x}\n"


def window_maps(mm, base=WINDOW_BASE, npages=512):
    """The VMAs inside ``[base, base + npages pages)`` as the oracle records them:
    ``(start_page, end_page, perms, kind)`` with kind ``anon``, ``shmem`` or ``file``."""
    end = base + (npages << PAGE_SHIFT)
    out = []
    for v in mm.vmas:
        if v.end <= base or v.start >= end:
            continue
        kind = "anon" if v.file is None else ("shmem" if v.file.path == "/dev/zero (deleted)" else "file")
        s, e = max(v.start, base), min(v.end, end)
        out.append(((s - base) >> PAGE_SHIFT, (e - base) >> PAGE_SHIFT, perms(v), kind))
    return out
