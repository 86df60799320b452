"""z3 theorems about the spec: one module per spec module, each calling the spec's own functions."""
