"""Benchmarks of passthrough-hook: `tools/bench` (see run.py and README.md, "Benchmarks")."""
