"""`salmask bench` at tiny sizes: row structure, ours agreeing with the references, sizes computed.

Nothing here is timed: speed is only reported by the benchmark, never asserted.
"""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

import salmask
from salmask import bench
from salmask.errors import ConfigError, SalmaskError

bench.benchmarks_dir()
from benchmarks import bench_cam, bench_seg, bench_sizes, bench_walk  # noqa: E402

TINY = (40, 56)
TIMED_KEYS = {"stage", "case", "device", "ours", "reference", "images", "seconds", "ref_seconds", "images_per_s",
              "ref_images_per_s", "speedup", "peak_bytes", "ref_peak_bytes", "memory_ratio", "max_abs_diff",
              "diff_metric"}


def _check_timed(row: dict, stage: str) -> None:
    assert TIMED_KEYS <= row.keys() and row["stage"] == stage and row["device"] == "cpu"
    assert row["seconds"] > 0 and row["images_per_s"] == pytest.approx(row["images"] / row["seconds"])
    if row["ref_seconds"] is not None:
        assert row["speedup"] == pytest.approx(row["ref_seconds"] / row["seconds"])
    json.dumps(row)


def test_cam_batched_matches_irnet_loop():
    setting = bench.Setting("resnet18", 2, (1.0, 0.5), 1)
    (row,) = bench_cam.run(size=TINY, override=setting, measure_memory=False)
    _check_timed(row, "cam")
    assert row["max_abs_diff"] < 2e-3  # float16 storage of maps in [0, 1]
    assert row["peak_bytes"] is None and row["memory_ratio"] is None
    assert row["scales"] == [1.0, 0.5] and row["images"] == 2


def test_cam_diff_detects_disagreement():
    model = bench_cam.make_model("resnet18")
    arrays, labels = bench_cam.make_images(1, TINY)
    out = bench_cam.cams_for_batch(model, arrays, labels, (1.0,), torch.device("cpu"), amp=False)
    other = [{**out[0], "high_res": out[0]["high_res"] * 0}]
    assert bench_cam.max_abs_diff(out, out) == 0
    assert bench_cam.max_abs_diff(out, other) == pytest.approx(float(out[0]["high_res"].max()), abs=1e-3)
    with pytest.raises(AssertionError, match="keys"):
        bench_cam.max_abs_diff(out, [{**out[0], "keys": out[0]["keys"] + 1}])


def test_seg_batched_matches_per_image_loop():
    setting = bench.Setting("resnet18", 2, (0.75, 1.0), 1)
    (row,) = bench_seg.run(size=TINY, override=setting, measure_memory=False)
    _check_timed(row, "seg")
    assert row["max_abs_diff"] < 1e-4


def test_seg_reference_is_a_distribution():
    model = bench_seg.make_model("resnet18", "cpu")
    (image,) = bench_seg.make_images(1, TINY)
    probs = bench_seg.reference_probs(model, image, (0.5, 1.0))
    assert probs.shape == (bench_seg.NUM_CLASSES, *TINY)
    assert torch.allclose(probs.sum(0), torch.ones(TINY), atol=1e-5)


def test_peak_children_measure_growth():
    assert bench_cam.peak_child("ref", "resnet18", 1, *TINY, [1.0]) >= 0
    assert bench_seg.peak_child("ours", "resnet18", 1, *TINY, [1.0]) >= 0
    # in a fresh process, as the benchmark does on CPU; a 1000x1000 image's int64 box counts exceed 16 MB
    assert bench.subprocess_peak_bytes("benchmarks.bench_sizes:peak_child", method="ours",
                                       height=1000, width=1000) > 16 * 2**20
    with pytest.raises(RuntimeError, match="memory probe"):
        bench.subprocess_peak_bytes("benchmarks.bench_sizes:peak_child", method="nonexistent", height=8, width=8)


def test_bes_reference_agrees_with_synthesize():
    ours_row, saliency_row = bench_sizes.run_synthesis(size=(96, 128), images=2, repeats=1, measure_memory=False)
    _check_timed(ours_row, "boundary")
    _check_timed(saliency_row, "boundary")
    assert ours_row["max_abs_diff"] == 0
    assert saliency_row["reference"] is None and saliency_row["speedup"] is None
    rng = np.random.default_rng(0)
    for size in [(50, 70), (13, 13), (7, 30)]:
        conf = rng.choice(np.array([0, 3, 7, 12, 255], dtype=np.uint8), size=size, p=[0.4, 0.2, 0.2, 0.1, 0.1])
        np.testing.assert_array_equal(bench_sizes.bes_labels(conf), bench_sizes.synthesize(conf, None))


def test_artefact_sizes_against_irnet_formats():
    rows = {r["case"].split(" (")[0]: r for r in bench_sizes.run_sizes()}
    assert {"CAM", "boundary map", "boundary labels", "walk scores", "pseudo mask", "saliency"} <= rows.keys()
    for r in rows.values():
        assert r["stage"] == "artefact" and r["bytes"] > 0 and (r["height"], r["width"]) == (375, 500)
        if r["ref_bytes"] is not None:
            assert r["size_ratio"] == pytest.approx(r["ref_bytes"] / r["bytes"])
    # float16 + compression against float32: raw float32 high_res alone is 2*375*500*4 bytes
    assert rows["CAM"]["ref_bytes"] > 2 * 375 * 500 * 4 > rows["CAM"]["bytes"]
    assert rows["boundary map"]["size_ratio"] > 2
    # smooth CAM-like maps compress; random noise would not
    assert rows["CAM"]["bytes"] < 0.8 * 2 * 2 * (375 * 500 + 94 * 125)


def test_run_bench_prints_table_and_writes_json(tmp_path, monkeypatch, capsys):
    tiny_cam = bench.Setting("resnet18", 1, (1.0,), 1)
    tiny_seg = bench.Setting("resnet18", 1, (1.0,), 1)
    monkeypatch.setattr(bench_cam, "run", functools.partial(bench_cam.run, size=TINY, override=tiny_cam,
                                                            measure_memory=False))
    monkeypatch.setattr(bench_seg, "run", functools.partial(bench_seg.run, size=TINY, override=tiny_seg,
                                                            measure_memory=False))
    monkeypatch.setattr(bench_sizes, "run_synthesis", functools.partial(
        bench_sizes.run_synthesis, size=(48, 64), images=1, repeats=1, measure_memory=False))
    monkeypatch.setattr(bench_walk, "QUICK_SIZES", [(6, 7)])
    out = tmp_path / "bench.json"
    rows = bench.run_bench(quick=True, json_out=str(out), device="cpu")
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["quick"] is True and data["rows"] == json.loads(json.dumps(rows))
    assert {"cpu_count", "torch", "cpu", "load_average", "devices"} <= data["machine"].keys()
    assert [r["stage"] for r in rows].count("artefact") == 6
    walk = [r for r in rows if r["stage"] == "walk"]
    assert len(walk) == 1 and walk[0]["max_abs_diff"] < 1e-4 and walk[0]["peak_bytes"] >= 0
    for stage in ("cam", "walk", "seg", "boundary", "CAM (make_cam", "speed-up", "peak resident set"):
        assert stage in printed


def test_devices_and_missing_benchmarks(monkeypatch):
    assert bench.resolve_devices("cpu") == ["cpu"]
    assert bench.resolve_devices("auto")[0] == "cpu"
    with pytest.raises(ConfigError, match="unknown device"):
        bench.resolve_devices("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            bench.resolve_devices("cuda")
    monkeypatch.setattr(salmask, "__file__", "/nonexistent/src/salmask/__init__.py")
    with pytest.raises(SalmaskError, match="benchmarks not found"):
        bench.benchmarks_dir()


def test_format_table_handles_missing_reference():
    row = bench.timed_row("x", "case", "cpu", 2, {"ours": 0.5}, {"ours": 2**20}, None, "", ours="o", reference=None)
    assert row["images_per_s"] == 4 and row["speedup"] is None and row["memory_ratio"] is None
    table = bench.format_table([row])
    assert "x" in table and "1.0" in table and np.isfinite(row["images_per_s"])
