"""Benchmarks and reference implementations used only by tests and benchmarks."""
