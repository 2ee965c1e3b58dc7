"""Benchmarks, run with `python -m benchmarks` (see docs/benchmarks.md)."""
