"""Benchmarks: impl against spec and against the machine, each ending with one JSON line."""
