"""``salmask bench``: throughput, peak memory and speed-up of each stage against its reference formulation.

The benchmarks themselves live in the repository's top-level ``benchmarks/`` folder (not installed);
this module finds it from the source tree, runs them, prints one table and optionally writes JSON.
It also holds the measuring helpers they share: interleaved median timing, CUDA peak memory, and the
resident-set growth of a call measured in a fresh subprocess (CPU).

Every timed row compares our formulation with the reference one on the same inputs, in the same
process, one after the other within each repeat (so load from other users hits both alike).
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import salmask
from salmask.errors import ConfigError, SalmaskError

VOC_SIZE = (375, 500)
"""(H, W) of a typical PASCAL VOC image."""

MEMORY_METHODS = {
    "cuda": "torch.cuda.max_memory_allocated during the call minus the allocation before it",
    "cpu": "peak resident set (VmHWM) minus resident set before the call, in a fresh subprocess per case",
}


@dataclass(frozen=True)
class Setting:
    """What a model-inference benchmark runs: the backbone, how many images, at which scales, how often."""
    backbone: str
    images: int
    scales: tuple[float, ...]
    repeats: int


def benchmarks_dir() -> Path:
    """The repository's ``benchmarks/`` folder, made importable as the ``benchmarks`` package."""
    repo = Path(salmask.__file__).resolve().parents[2]
    folder = repo / "benchmarks"
    if not (folder / "__init__.py").is_file():
        raise SalmaskError(
            f"benchmarks not found at {folder}: `salmask bench` needs a source checkout of salmask "
            f"(pip install -e . from the repository), not an installed wheel")
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    return folder


def resolve_devices(device: str) -> list[str]:
    """``auto`` -> CPU, plus CUDA when there is one; ``cpu``; ``cuda`` (which must exist)."""
    if device == "auto":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    if device == "cpu":
        return ["cpu"]
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA device is available")
        return [device]
    raise ConfigError(f"unknown device {device!r}; choices: auto, cpu, cuda")


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def median_seconds(fns: dict[str, Callable[[], object]], device: str,
                   repeats: int) -> tuple[dict[str, float], dict[str, object]]:
    """Median wall time of each function over ``repeats`` rounds, the functions interleaved within a
    round, and each function's result from the last round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            results[name] = None  # free the previous result before the next run
            synchronize(device)
            start = time.perf_counter()
            results[name] = fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, results


def cuda_peak_bytes(fn: Callable[[], object], device: str) -> int:
    """Bytes allocated on ``device`` at the peak of ``fn()`` beyond what was allocated before it."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def rss_growth(fn: Callable[[], object]) -> int:
    """Peak resident-set growth in bytes while ``fn()`` runs (Linux). Meant for a fresh process:
    memory freed earlier but kept by the allocator would hide part of the growth."""
    # VmHWM, not ru_maxrss: writing 5 to clear_refs resets it to the current RSS (Linux >= 4.0),
    # and ru_maxrss also carries the parent's peak across exec.
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = _status_bytes("VmRSS")
    fn()
    return _status_bytes("VmHWM") - before


def subprocess_peak_bytes(target: str, **kwargs) -> int:
    """Run ``target`` ("module:function", returning the bytes it measured with :func:`rss_growth`)
    with JSON-serialisable ``kwargs`` in a fresh Python process."""
    repo = benchmarks_dir().parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo / "src"), str(repo), env.get("PYTHONPATH")) if p)
    code = "import sys; from salmask.bench import _probe; _probe(sys.argv[1], sys.argv[2])"
    out = subprocess.run([sys.executable, "-c", code, target, json.dumps(kwargs)], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe {target}({kwargs}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]



def peak_bytes(methods: dict[str, Callable[[], object]], device: str, child: str, *, measure: bool = True,
               **child_kwargs) -> dict[str, int | None]:
    """Peak memory of each method: CUDA allocator peak on a GPU; on a CPU, ``child`` ("module:function")
    run per method in a fresh process with ``method=name`` and ``child_kwargs``; None when not measured."""
    if not measure:
        return {name: None for name in methods}
    if device.startswith("cuda"):
        return {name: cuda_peak_bytes(fn, device) for name, fn in methods.items()}
    return {name: subprocess_peak_bytes(child, method=name, **child_kwargs) for name in methods}

def _probe(target: str, kwargs_json: str) -> None:
    module, function = target.split(":")
    peak = getattr(importlib.import_module(module), function)(**json.loads(kwargs_json))
    print(json.dumps({"peak_bytes": int(peak)}))


def machine_info(devices: list[str]) -> dict:
    """CPU count, load, library versions and device names, for the JSON and the table footer."""
    cpu_name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu_name = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu_name, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "devices": devices,
    }
    if any(d.startswith("cuda") for d in devices):
        info["cuda_device"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def _agreement(row: dict) -> str:
    if row.get("ref_skipped"):
        return f"ref skipped ({row['ref_skipped']})"
    return "-" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.2g} ({row['diff_metric']})"


def format_table(rows: list[dict]) -> str:
    """The timed rows as one table and the artefact-size rows as another."""
    timed = [r for r in rows if r["stage"] != "artefact"]
    sizes = [r for r in rows if r["stage"] == "artefact"]
    lines = []
    if timed:
        case_w = max(len(r["case"]) for r in timed)
        lines.append(f"{'stage':<9} {'case':<{case_w}} {'device':<6} {'img/s':>8} {'ref img/s':>9} "
                     f"{'speed-up':>8} {'MiB':>8} {'ref MiB':>8} {'mem ratio':>9}  agreement (ours vs ref)")
        for r in timed:
            lines.append(
                f"{r['stage']:<9} {r['case']:<{case_w}} {r['device']:<6} {r['images_per_s']:>8.3g} "
                f"{_num(r['ref_images_per_s'], '.3g'):>9} {_num(r['speedup'], '.2f'):>8} "
                f"{_mib(r['peak_bytes']):>8} {_mib(r['ref_peak_bytes']):>8} {_num(r['memory_ratio'], '.2f'):>9}  "
                f"{_agreement(r)}")
        lines.append("speed-up = ref time / our time; mem ratio = ref peak / our peak (> 1: ours needs less)")
        for device in dict.fromkeys(r["device"] for r in timed):
            lines.append(f"peak memory on {device}: {_memory_method(device)}")
        for stage, ours, ref in dict.fromkeys((r["stage"], r["ours"], r["reference"]) for r in timed):
            lines.append(f"  {stage}: ours = {ours}; ref = {ref or '-'}")
    if sizes:
        name_w = max(len(r["case"]) for r in sizes)
        lines.append("")
        lines.append(f"{'artefact (per image, 500x375, 2 classes)':<{name_w}} {'ours B':>8} {'ref B':>8} "
                     f"{'ref/ours':>8}  reference format")
        for r in sizes:
            lines.append(f"{r['case']:<{name_w}} {r['bytes']:>8} {_num(r['ref_bytes'], 'd'):>8} "
                         f"{_num(r['size_ratio'], '.2f'):>8}  {r['ref_format'] or '-'}")
    return "\n".join(lines)


def run_bench(quick: bool, json_out: str | None, device: str = "auto") -> list[dict]:
    """Run every benchmark on each device (``auto``: CPU, and CUDA when present), print the tables and
    return the rows; ``json_out`` also gets ``{"machine": ..., "quick": ..., "rows": [...]}``."""
    devices = resolve_devices(device)
    benchmarks_dir()
    from benchmarks import bench_cam, bench_seg, bench_sizes

    from salmask.io import write_json

    machine = machine_info(devices)
    print(f"salmask bench{' --quick' if quick else ''}: {machine['cpu']} ({machine['cpu_count']} CPUs, "
          f"{machine['torch_threads']} torch threads, load {_load()}), torch {machine['torch']}"
          + (f", {machine['cuda_device']}" if "cuda_device" in machine else ""), flush=True)
    rows: list[dict] = []
    for dev in devices:
        for name, bench in (("cam", bench_cam.run), ("walk", _walk_rows), ("seg", bench_seg.run)):
            start = time.perf_counter()
            new = bench(quick=quick, device=dev)
            rows += new
            print(f"  {name} on {dev}: {len(new)} rows in {time.perf_counter() - start:.0f} s", flush=True)
    rows += bench_sizes.run_synthesis(quick=quick)
    rows += bench_sizes.run_sizes()
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print()
    print(format_table(rows))
    print(f"load average at start {_fmt_load(machine['load_average'])}, at end {_fmt_load(machine['load_average_end'])}"
          f" ({machine['cpu_count']} CPUs): figures taken on a busy machine are slower, ratios less so")
    if json_out:
        write_json(json_out, {"machine": machine, "quick": quick, "rows": rows})
    return rows


def _walk_rows(quick: bool, device: str) -> list[dict]:
    """``benchmarks.bench_walk`` rows in the common row format (one "image" = one walk at that grid)."""
    from benchmarks import bench_walk

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
            "diff_metric": "max |diff| / max |ref|", "memory_method": _memory_method(device), "details": r,
        })
    return rows


def timed_row(stage: str, case: str, device: str, images: int, seconds: dict[str, float],
              peaks: dict[str, int | None], max_abs_diff: float | None, diff_metric: str,
              ours: str, reference: str | None, **extra) -> dict:
    """One row of the table from the timings/peaks keyed ``ours``/``ref`` (``ref`` may be absent)."""
    ref_s, ref_peak = seconds.get("ref"), peaks.get("ref")
    return {
        "stage": stage, "case": case, "device": device, "ours": ours, "reference": reference,
        "images": images, "seconds": seconds["ours"], "ref_seconds": ref_s,
        "images_per_s": images / seconds["ours"],
        "ref_images_per_s": None if ref_s is None else images / ref_s,
        "speedup": None if ref_s is None else ref_s / seconds["ours"],
        "peak_bytes": peaks["ours"], "ref_peak_bytes": ref_peak,
        "memory_ratio": None if ref_peak is None or peaks["ours"] is None else ref_peak / max(peaks["ours"], 1),
        "max_abs_diff": max_abs_diff, "diff_metric": diff_metric,
        "memory_method": None if peaks["ours"] is None else _memory_method(device), **extra,
    }


def _memory_method(device: str) -> str:
    return MEMORY_METHODS["cuda" if device.startswith("cuda") else "cpu"]


def _load() -> str:
    return _fmt_load(list(os.getloadavg())) if hasattr(os, "getloadavg") else "?"


def _fmt_load(load: list[float] | None) -> str:
    return "?" if load is None else "/".join(f"{x:.1f}" for x in load)
