"""Entry point kept for checkouts: runs :mod:`salmask.benchmarks.bench_walk`, the installed benchmark.

    python benchmarks/bench_walk.py [--quick] [--device cuda]   # same as: python -m salmask.benchmarks.bench_walk
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("salmask.benchmarks.bench_walk", run_name="__main__", alter_sys=True)
