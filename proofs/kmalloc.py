"""Theorems about the kmalloc size classes (spec/kmalloc.py).

They run the spec's own :func:`spec.kmalloc.size_index`, :func:`~spec.kmalloc.kmalloc_size`
and :func:`~spec.kmalloc.kmalloc_size_roundup` on z3 bit-vectors: every size 1..8192 at once.
"""

from __future__ import annotations

import z3

from proofs._z3 import ProofResult, prove, registry
from spec import kmalloc
from spec.kmalloc import CREATION_ORDER

THEOREMS, theorem = registry()

size, other = z3.BitVecs("size other", 64)
SMALL = (z3.ULE(1, size), z3.ULE(size, 8192))


def _class(n):
    return kmalloc.kmalloc_size(kmalloc.size_index(n))


@theorem("Every size 1..8192 maps to a class that holds it.")
def thm_class_fits() -> ProofResult:
    return prove(z3.UGE(_class(size), size), SMALL)


@theorem("Every size 1..8192 maps to the smallest class that holds it: no class of the table lies in [size, class).")
def thm_class_smallest() -> ProofResult:
    c = _class(size)
    claim = z3.And(*[z3.Or(z3.ULT(kmalloc.kmalloc_size(i), size), z3.UGE(kmalloc.kmalloc_size(i), c)) for i in CREATION_ORDER])
    return prove(claim, SMALL)


@theorem("The size-to-class map is monotone: a larger request never gets a smaller class.")
def thm_class_monotone() -> ProofResult:
    return prove(z3.ULE(_class(size), _class(other)), SMALL + (z3.ULE(size, other), z3.ULE(other, 8192)))


@theorem("Waste bound: a request above 8 bytes wastes less than half its class, and from 65 to 256 bytes at most a third of it (96 and 192 split the gaps between powers of two).")
def thm_waste_bound() -> ProofResult:
    c = _class(size)
    claim = z3.And(z3.Implies(z3.UGT(size, 8), z3.ULT((c - size) * 2, c)),
                   z3.Implies(z3.And(z3.UGT(size, 64), z3.ULE(size, 256)), z3.ULE((c - size) * 3, c)))
    return prove(claim, SMALL)


@theorem("kmalloc_size_roundup() of 1..4 MiB is at least the request and is the class size (<= 8 KiB) or a whole buddy block.")
def thm_roundup() -> ProofResult:
    ok = []
    for n in list(range(1, 8193)) + [8193, 12288, 16385, 1 << 20, (1 << 22) - 1, 1 << 22]:
        r = kmalloc.kmalloc_size_roundup(n)
        ok.append(r >= n and (r == kmalloc.kmalloc_size(kmalloc.size_index(n)) if n <= 8192 else r & (r - 1) == 0))
    bad = [n for n, good in zip(range(1, 8193), ok) if not good]
    return ProofResult(not bad, "exhaustive over 1..8192 and the large boundaries", str(bad[:5]) if bad else None)
