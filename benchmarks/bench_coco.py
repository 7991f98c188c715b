"""Entry point kept for checkouts: runs :mod:`salmask.benchmarks.bench_coco`, the installed benchmark.

    python benchmarks/bench_coco.py [--quick]   # same as: python -m salmask.benchmarks.bench_coco
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("salmask.benchmarks.bench_coco", run_name="__main__", alter_sys=True)
