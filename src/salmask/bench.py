"""``salmask bench``: throughput, peak memory and speed-up of each stage against its reference formulation.

The benchmarks and the reference formulations are part of the package (:mod:`salmask.benchmarks`), so
this works wherever salmask is installed. This module runs them on each device, prints one table and
optionally writes JSON. The measuring helpers live in :mod:`salmask.benchmarks.common`.
"""
from __future__ import annotations

import os
import time

from salmask.benchmarks import bench_cam, bench_import, bench_seg, bench_seg_train, bench_sizes, bench_walk
from salmask.benchmarks.common import (VOC_SIZE, format_load, format_table, load_text, machine_info, memory_method,
                                       resolve_devices)
from salmask.io import write_json


def run_bench(quick: bool, json_out: str | None, device: str = "auto") -> list[dict]:
    """Run every benchmark on each device (``auto``: CPU, and CUDA when present), print the tables and
    return the rows; ``json_out`` also gets ``{"machine": ..., "quick": ..., "rows": [...]}``."""
    devices = resolve_devices(device)
    machine = machine_info(devices)
    print(f"salmask bench{' --quick' if quick else ''}: {machine['cpu']} ({machine['cpu_count']} CPUs, "
          f"{machine['torch_threads']} torch threads, load {load_text()}), torch {machine['torch']}"
          + (f", {machine['cuda_device']}" if "cuda_device" in machine else ""), flush=True)
    rows: list[dict] = []
    for dev in devices:
        for name, bench in (("cam", bench_cam.run), ("cam 128x128", bench_cam.run_small), ("walk", walk_rows),
                            ("seg", bench_seg.run), ("seg 128x128", bench_seg.run_small),
                            ("seg train step", bench_seg_train.run)):
            start = time.perf_counter()
            new = bench(quick=quick, device=dev)
            rows += new
            print(f"  {name} on {dev}: {len(new)} rows in {time.perf_counter() - start:.0f} s", flush=True)
    rows += bench_sizes.run_synthesis(quick=quick)
    start = time.perf_counter()
    new = bench_import.run(quick=quick)  # file reading, on the CPU whatever the devices
    rows += new
    print(f"  cam import: {len(new)} rows in {time.perf_counter() - start:.0f} s", flush=True)
    rows += bench_sizes.run_sizes()
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print()
    print(format_table(rows))
    print(f"load average at start {format_load(machine['load_average'])}, at end "
          f"{format_load(machine['load_average_end'])} ({machine['cpu_count']} CPUs): figures taken on a busy "
          f"machine are slower, ratios less so")
    if json_out:
        write_json(json_out, {"machine": machine, "quick": quick, "rows": rows})
    return rows


def walk_rows(quick: bool, device: str) -> list[dict]:
    """:mod:`salmask.benchmarks.bench_walk` rows in the common row format (one "image" = one walk)."""
    rows = []
    for r in bench_walk.run(quick=quick, device=device):
        voc = (r["h"], r["w"]) == tuple(-(-s // 4) for s in VOC_SIZE)
        rows.append({
            "stage": "walk", "case": f"grid {r['h']}x{r['w']}" + (" (500x375 image)" if voc else ""),
            "device": device, "ours": "sparse CSR walk (refine.random_walk.propagate)",
            "reference": "dense (h*w)^2 matrix squared 8 times (IRNet/BES)", "ref_skipped": r["dense_skipped"],
            "images": 1, "seconds": r["fast_ms"] / 1e3,
            "ref_seconds": None if r["dense_ms"] is None else r["dense_ms"] / 1e3,
            "images_per_s": 1e3 / r["fast_ms"],
            "ref_images_per_s": None if r["dense_ms"] is None else 1e3 / r["dense_ms"],
            "speedup": r["speedup"], "peak_bytes": r["fast_peak_bytes"], "ref_peak_bytes": r["dense_peak_bytes"],
            "memory_ratio": r["memory_ratio"], "max_abs_diff": r["max_abs_diff_rel"],
            "diff_metric": "max |diff| / max |ref|", "memory_method": memory_method(device), "details": r,
        })
    return rows
