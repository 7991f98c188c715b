"""Entry point kept for checkouts: runs :mod:`salmask.benchmarks.bench_sizes`, the installed benchmark.

    python benchmarks/bench_sizes.py [--quick]               # same as: python -m salmask.benchmarks.bench_sizes
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("salmask.benchmarks.bench_sizes", run_name="__main__", alter_sys=True)
