"""Micro-benchmarks (run as modules: ``python -m benchmarks.<name>``)."""
