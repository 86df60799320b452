"""The optimized implementation: one module per spec module, on mutable numpy arrays.

Each module mirrors :mod:`spec` (same operations, results and typed errors), adds batched
operations, and gives ``abstract()``: the spec state an object represents.  Known historical
bugs can be switched on in :mod:`impl.bugs`.
"""
