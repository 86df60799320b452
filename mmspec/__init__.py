"""mmspec: an executable specification of Linux memory management.

The ``mmspec`` package is the thin harness around the specification: the
command line (``mmspec verify``, ``mmspec explain``), the registry of
mechanisms, the generic hypothesis state machines that every mechanism's
tests use, and the pytest plugin that counts what each layer checked. It
holds no memory-management logic; that lives in ``spec/`` (the reference),
``impl/`` (the optimized twin) and ``proofs/`` (z3 theorems).
"""

__version__ = "0.1.0"
