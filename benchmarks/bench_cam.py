"""Entry point kept for checkouts: runs :mod:`salmask.benchmarks.bench_cam`, the installed benchmark.

    python benchmarks/bench_cam.py [--quick] [--device cuda]   # same as: python -m salmask.benchmarks.bench_cam
"""
import runpy

if __name__ == "__main__":
    runpy.run_module("salmask.benchmarks.bench_cam", run_name="__main__", alter_sys=True)
