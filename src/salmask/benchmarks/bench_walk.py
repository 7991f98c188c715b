"""The sparse random walk against the references' dense one: time, peak memory, agreement.

    python -m salmask.benchmarks.bench_walk [--quick] [--device cuda]
    python -m salmask.benchmarks.bench_walk --compat [--dense MODULE:FUNCTION] [--dense-exp-times 1]

Both run in this process for timing, on the same inputs (C = 3 channels, β = 5, exp_times = 8,
radius 5). Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above what was allocated
before the call; on CPU the growth of the resident set (peak RSS during the call minus the RSS
just before it, Linux /proc) in a fresh subprocess per method, so neither run hides the other.
"""
from __future__ import annotations

import argparse
import time

import torch

from salmask.benchmarks.common import cuda_peak_bytes, rss_growth, subprocess_peak_bytes
from salmask.benchmarks.reference_walk import dense_propagate
from salmask.refine.random_walk import propagate, transition_operator

SIZES = [(12, 17), (24, 32), (47, 63), (63, 84), (94, 125)]
QUICK_SIZES = [(12, 17), (24, 32), (47, 63)]
CPU_DENSE_MAX_PIXELS = 4096  # 47×63 takes ~10 s dense on one CPU core; 94×125 would take ~10 min
DENSE_MATRICES_LIVE = 4  # the 4-D affinity, its power, the normalised T, and T @ T while squaring


def _inputs(h: int, w: int, channels: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(h * w)
    cams = torch.rand(channels, h, w, generator=generator)
    boundary = torch.rand(h, w, generator=generator) ** 4
    return cams.to(device), boundary.to(device)


def _method(name: str):
    return {"fast": propagate, "dense": dense_propagate}[name]


def _timed_ms(fn, *args, device: str, repeats: int) -> tuple[float, torch.Tensor]:
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn(*args)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best * 1e3, result


def peak_child(method: str, height: int, width: int, channels: int) -> int:
    """In a fresh process: resident-set growth of one walk (``fast``/``dense``) on CPU."""
    fn = _method(method)
    fn(*_inputs(4, 5, channels, "cpu"))  # load the kernels' code before measuring
    cams, boundary = _inputs(height, width, channels, "cpu")
    return rss_growth(lambda: fn(cams, boundary))


def _cpu_peak_bytes(name: str, h: int, w: int, channels: int) -> int:
    return subprocess_peak_bytes("salmask.benchmarks.bench_walk:peak_child", method=name, height=h, width=w,
                                 channels=channels)


def _cuda_peak_bytes(fn, *args, device: str) -> int:
    return cuda_peak_bytes(lambda: fn(*args), device)


def _dense_skip_reason(pixels: int, device: str, dense_max_pixels: int | None) -> str | None:
    need = DENSE_MATRICES_LIVE * pixels**2 * 4
    if device.startswith("cuda"):
        available = torch.cuda.mem_get_info(device)[0]
    else:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        available = int(fields["MemAvailable"].split()[0]) * 1024 // 2  # leave half to others
    if need > available:
        return f"memory: needs ~{need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available"
    if dense_max_pixels is not None and pixels > dense_max_pixels:
        return f"time: {pixels} pixels > {dense_max_pixels} (O(N^3) dense squaring)"
    return None


def run(
    quick: bool = False, device: str = "cpu", *, channels: int = 3, dense_max_pixels: int | None = -1
) -> list[dict]:
    """Time and measure fast vs dense at several stride-4 grid sizes, up to 94×125 (a 500×375 image).

    ``dense_max_pixels``: skip the dense walk above this many pixels; -1 means the default
    (4096 on CPU, no limit on CUDA, where only memory limits it); None means no limit.
    Returns one dict per size.
    """
    if dense_max_pixels == -1:
        dense_max_pixels = None if device.startswith("cuda") else CPU_DENSE_MAX_PIXELS
    repeats = 1 if quick else 3
    memory_method = (
        "torch.cuda.max_memory_allocated above the allocation before the call"
        if device.startswith("cuda")
        else "peak resident set (VmHWM) minus RSS before the call, one fresh subprocess per method"
    )
    propagate(*_inputs(4, 5, channels, device))  # warm-up: library loading, CUDA context
    dense_propagate(*_inputs(4, 5, channels, device))
    rows = []
    for h, w in QUICK_SIZES if quick else SIZES:
        pixels = h * w
        cams, boundary = _inputs(h, w, channels, device)
        operator = transition_operator(boundary)
        row = {
            "h": h, "w": w, "pixels": pixels, "channels": channels, "device": device,
            "fast_operator_bytes": sum(
                t.numel() * t.element_size()
                for t in (operator.crow_indices(), operator.col_indices(), operator.values())
            ),
            "dense_matrix_bytes": pixels**2 * 4,
            "memory_method": memory_method,
        }
        del operator
        row["fast_ms"], fast = _timed_ms(propagate, cams, boundary, device=device, repeats=repeats)
        row["fast_peak_bytes"] = (
            _cuda_peak_bytes(propagate, cams, boundary, device=device)
            if device.startswith("cuda") else _cpu_peak_bytes("fast", h, w, channels)
        )
        row["dense_skipped"] = _dense_skip_reason(pixels, device, dense_max_pixels)
        if row["dense_skipped"] is None:
            row["dense_ms"], dense = _timed_ms(dense_propagate, cams, boundary, device=device, repeats=1)
            row["dense_peak_bytes"] = (
                _cuda_peak_bytes(dense_propagate, cams, boundary, device=device)
                if device.startswith("cuda") else _cpu_peak_bytes("dense", h, w, channels)
            )
            row["speedup"] = row["dense_ms"] / row["fast_ms"]
            row["memory_ratio"] = row["dense_peak_bytes"] / max(row["fast_peak_bytes"], 1)
            row["max_abs_diff"] = float((fast - dense).abs().max())
            row["max_abs_diff_rel"] = row["max_abs_diff"] / float(dense.abs().max())
            del dense
        else:
            row.update(dense_ms=None, dense_peak_bytes=None, speedup=None, memory_ratio=None,
                       max_abs_diff=None, max_abs_diff_rel=None)
        rows.append(row)
    return rows


def _format(rows: list[dict]) -> str:
    def mib(value: int | None) -> str:
        return "-" if value is None else f"{value / 2**20:.1f}"

    def num(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    header = (f"{'grid':>8} {'N':>6} {'fast ms':>9} {'dense ms':>10} {'speed-up':>9} {'fast MiB':>9} "
              f"{'dense MiB':>10} {'mem ratio':>10} {'rel diff':>9}  dense skipped")
    lines = [header]
    for r in rows:
        lines.append(
            f"{r['h']:>3}x{r['w']:<4} {r['pixels']:>6} {r['fast_ms']:>9.1f} {num(r['dense_ms'], '.1f'):>10} "
            f"{num(r['speedup'], '.1f'):>9} {mib(r['fast_peak_bytes']):>9} {mib(r['dense_peak_bytes']):>10} "
            f"{num(r['memory_ratio'], '.1f'):>10} {num(r['max_abs_diff_rel'], '.1e'):>9}  {r['dense_skipped'] or ''}"
        )
    lines.append(f"memory: {rows[0]['memory_method']}; channels {rows[0]['channels']}, device {rows[0]['device']}")
    return "\n".join(lines)


def irnet_shaped_dense(x: torch.Tensor, edge: torch.Tensor, radius: int = 5, beta: float = 10,
                       exp_times: int = 8) -> torch.Tensor:
    """:func:`dense_propagate` with IRNet's ``propagate_to_edge`` signature and shapes ([C,h,w], [1,h,w] ->
    [C,1,h,w])."""
    h, w = x.shape[-2:]
    out = dense_propagate(x.reshape(-1, h, w), edge.reshape(h, w), beta=beta, exp_times=exp_times, radius=radius)
    return out[:, None]


def compat_peak_child(walk: str, height: int, width: int, channels: int, exp_times: int) -> int:
    """In a fresh process: resident-set growth of one ``propagate_to_edge``-shaped call on CPU (β = 10,
    radius 5); ``walk`` is "module:function" (``salmask.compat:propagate_to_edge``, a dense one)."""
    import importlib

    module, name = walk.split(":")
    fn = getattr(importlib.import_module(module), name)
    x, edge = _inputs(4, 5, channels, "cpu")
    fn(x, edge[None], beta=10, exp_times=exp_times, radius=5)  # load the kernels' code before measuring
    x, edge = _inputs(height, width, channels, "cpu")
    return rss_growth(lambda: fn(x, edge[None], beta=10, exp_times=exp_times, radius=5))


def compat_memory(height: int = 94, width: int = 125, channels: int = 3, *,
                  dense: str = "salmask.benchmarks.bench_walk:irnet_shaped_dense", dense_exp_times: int = 1,
                  device: str = "cpu") -> dict:
    """Peak memory of ``salmask.compat.propagate_to_edge`` (exp_times 8) and of a dense ``propagate_to_edge``
    (``dense``, "module:function") at one grid, 94×125 by default (a 500×375 VOC image at stride 4).

    The dense walk runs ``dense_exp_times`` squarings (default 1): each squaring replaces T by T·T, so the
    matrices alive at once, hence the peak, are the same for 1 as for 8, at an eighth of the O(N³) time.
    """
    sizes = {"h": height, "w": width, "pixels": height * width, "channels": channels, "device": device}
    if device.startswith("cuda"):
        import importlib

        x, edge = _inputs(height, width, channels, device)
        fns = {"compat": (getattr(importlib.import_module("salmask.compat"), "propagate_to_edge"), 8)}
        module, name = dense.split(":")
        fns["dense"] = (getattr(importlib.import_module(module), name), dense_exp_times)
        peaks = {k: cuda_peak_bytes(lambda f=f, e=e: f(x, edge[None], beta=10, exp_times=e, radius=5), device)
                 for k, (f, e) in fns.items()}
    else:
        peaks = {
            "compat": subprocess_peak_bytes("salmask.benchmarks.bench_walk:compat_peak_child",
                                            walk="salmask.compat:propagate_to_edge", height=height, width=width,
                                            channels=channels, exp_times=8),
            "dense": subprocess_peak_bytes("salmask.benchmarks.bench_walk:compat_peak_child", walk=dense,
                                           height=height, width=width, channels=channels,
                                           exp_times=dense_exp_times),
        }
    return {**sizes, "compat_peak_bytes": peaks["compat"], "dense_peak_bytes": peaks["dense"], "dense": dense,
            "dense_exp_times": dense_exp_times, "dense_matrix_bytes": (height * width) ** 2 * 4,
            "memory_ratio": peaks["dense"] / max(peaks["compat"], 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller grids, one repeat")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compat", action="store_true",
                        help="peak memory of salmask.compat.propagate_to_edge against a dense one at VOC size")
    parser.add_argument("--dense", default="salmask.benchmarks.bench_walk:irnet_shaped_dense",
                        help="--compat: the dense propagate_to_edge, MODULE:FUNCTION (e.g. "
                             "tests.test_compat:irnet_propagate_to_edge, IRNet's code, from the repository root)")
    parser.add_argument("--dense-exp-times", type=int, default=1)
    args = parser.parse_args()
    if args.compat:
        r = compat_memory(dense=args.dense, dense_exp_times=args.dense_exp_times, device=args.device)
        print(f"{r['h']}x{r['w']} grid, {r['channels']} channels, {r['device']}: salmask.compat.propagate_to_edge "
              f"{r['compat_peak_bytes'] / 2**20:.1f} MiB; {r['dense']} {r['dense_peak_bytes'] / 2**20:.1f} MiB "
              f"(exp_times {r['dense_exp_times']}; one N×N float32 matrix is {r['dense_matrix_bytes'] / 2**20:.1f} MiB)"
              f"; {r['memory_ratio']:.0f}× less")
    else:
        print(_format(run(quick=args.quick, device=args.device)))
