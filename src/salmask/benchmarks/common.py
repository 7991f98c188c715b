"""What the benchmarks share: settings, interleaved median timing, peak memory, rows and the table.

Every timed row compares our formulation with the reference one on the same inputs, in the same
process, one after the other within each repeat (so load from other users hits both alike). Peak
memory is the CUDA allocator's peak on a GPU and, on a CPU, the resident-set growth of one call in a
fresh subprocess (memory the allocator kept from an earlier run would hide part of the growth).
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
from salmask.errors import ConfigError

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


SMALL_SIZE = (128, 128)
"""The synthetic demo's image size, where per-forward overhead dominates on a CPU."""


def small_setting(s: Setting, device: str) -> Setting:
    """The demo-sized variant of a benchmark setting: ResNet-18, 16 images on CUDA (8 on a CPU), at least 3
    repeats."""
    return Setting("resnet18", 16 if device.startswith("cuda") else 8, s.scales, max(s.repeats, 3))


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
    # the child imports the same salmask as this process, wherever it is installed
    site = str(Path(salmask.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
    code = "import sys; from salmask.benchmarks.common import _probe; _probe(sys.argv[1], sys.argv[2])"
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
            lines.append(f"peak memory on {device}: {memory_method(device)}")
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
        "memory_method": None if peaks["ours"] is None else memory_method(device), **extra,
    }


def memory_method(device: str) -> str:
    return MEMORY_METHODS["cuda" if device.startswith("cuda") else "cpu"]


def load_text() -> str:
    return format_load(list(os.getloadavg())) if hasattr(os, "getloadavg") else "?"


def format_load(load: list[float] | None) -> str:
    return "?" if load is None else "/".join(f"{x:.1f}" for x in load)
