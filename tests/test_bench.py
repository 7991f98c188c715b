"""`salmask bench` at tiny sizes: row structure, ours agreeing with the references, sizes computed.

Nothing here is timed: speed is only reported by the benchmark, never asserted.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from salmask.bench import run_bench
from salmask.benchmarks import common as bench
from salmask.benchmarks import bench_cam, bench_import, bench_seg, bench_seg_train, bench_sizes, bench_walk
from salmask.cam.precomputed import FORMATS
from salmask.errors import ConfigError
from salmask.seg.inference import predict_batch
from salmask.stage_utils import GPU_INFER_BATCH, resolve_infer_batch, size_batches

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


def test_cam_layouts_match_irnet_loop():
    setting = bench.Setting("resnet18", 2, (1.0, 0.5), 1)
    rows = bench_cam.run(size=TINY, override=setting, measure_memory=False)
    assert [r["layout"] for r in rows] == ["batched", "per_image"]
    for row in rows:
        _check_timed(row, "cam")
        assert row["max_abs_diff"] < 2e-3  # float16 storage of maps in [0, 1]
        assert row["peak_bytes"] is None and row["memory_ratio"] is None
        assert row["scales"] == [1.0, 0.5] and row["images"] == 2
    # images this small batch under `infer_batch: auto` even on a CPU, and the table says so
    assert [r["auto"] for r in rows] == [True, False] and rows[0]["case"].endswith("[auto]")


def test_cam_matches_irnet_make_cam_at_odd_sizes():
    """cams_for_batch (per image and batched) against IRNet's make_cam written from its definition
    (salmask.benchmarks.reference_cam, which imports none of salmask's inference code) on sizes where the
    rescaled sizes round, the stride-16 crop cuts, and two classes are kept out of three."""
    from salmask.benchmarks.reference_cam import irnet_make_cam

    model = bench_cam.make_model("resnet18")
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8) for _ in range(2)]
    labels, scales, cpu = [[2, 7], [5, 19]], (1.0, 0.7, 1.5), torch.device("cpu")
    ref = [irnet_make_cam(model, a, k, scales, cpu) for a, k in zip(arrays, labels)]
    assert ref[0]["cam"].shape == (2, 10, 14) and ref[0]["high_res"].shape == (2, 37, 53)
    batched = bench_cam.cams_for_batch(model, arrays, labels, scales, cpu, amp=False)
    per_image = [bench_cam.cams_for_batch(model, [a], [k], scales, cpu, amp=False)[0] for a, k in zip(arrays, labels)]
    for ours in (batched, per_image):
        assert bench_cam.max_abs_diff(ours, ref) < 1e-3  # float16 storage of maps in [0, 1]
    assert min(float(r[n].max()) for r in ref for n in ("cam", "high_res")) > 0.99


def test_cam_diff_detects_disagreement():
    model = bench_cam.make_model("resnet18")
    arrays, labels = bench_cam.make_images(1, TINY)
    out = bench_cam.cams_for_batch(model, arrays, labels, (1.0,), torch.device("cpu"), amp=False)
    other = [{**out[0], "high_res": out[0]["high_res"] * 0}]
    assert bench_cam.max_abs_diff(out, out) == 0
    assert bench_cam.max_abs_diff(out, other) == pytest.approx(float(out[0]["high_res"].max()), abs=1e-3)
    with pytest.raises(AssertionError, match="keys"):
        bench_cam.max_abs_diff(out, [{**out[0], "keys": out[0]["keys"] + 1}])


def test_seg_layouts_match_per_image_loop():
    setting = bench.Setting("resnet18", 2, (0.75, 1.0), 1)
    rows = bench_seg.run(size=TINY, override=setting, measure_memory=False)
    assert [(r["layout"], r["auto"]) for r in rows] == [("batched", True), ("per_image", False)]
    for row in rows:
        _check_timed(row, "seg")
        assert row["max_abs_diff"] < 1e-4


def test_seg_reference_is_a_distribution():
    model = bench_seg.make_model("resnet18", "cpu")
    (image,) = bench_seg.make_images(1, TINY)
    probs = bench_seg.reference_probs(model, image, (0.5, 1.0))
    assert probs.shape == (bench_seg.NUM_CLASSES, *TINY)
    assert torch.allclose(probs.sum(0), torch.ones(TINY), atol=1e-5)


@pytest.mark.slow
def test_peak_children_measure_growth():
    assert bench_cam.peak_child("ref", "resnet18", 1, *TINY, [1.0]) >= 0
    assert bench_seg.peak_child("per_image", "resnet18", 1, *TINY, [1.0]) >= 0
    # in a fresh process, as the benchmark does on CPU; a 1000x1000 image's int64 box counts exceed 16 MB
    assert bench.subprocess_peak_bytes("salmask.benchmarks.bench_sizes:peak_child", method="ours",
                                       height=1000, width=1000) > 16 * 2**20
    with pytest.raises(RuntimeError, match="memory probe"):
        bench.subprocess_peak_bytes("salmask.benchmarks.bench_sizes:peak_child", method="nonexistent", height=8, width=8)


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


@pytest.mark.slow
def test_run_bench_prints_table_and_writes_json(tmp_path, monkeypatch, capsys):
    tiny_cam = bench.Setting("resnet18", 1, (1.0,), 1)
    tiny_seg = bench.Setting("resnet18", 1, (1.0,), 1)
    monkeypatch.setattr(bench_cam, "run", functools.partial(bench_cam.run, size=TINY, override=tiny_cam,
                                                            measure_memory=False))
    monkeypatch.setattr(bench_seg, "run", functools.partial(bench_seg.run, size=TINY, override=tiny_seg,
                                                            measure_memory=False))
    for module in (bench_cam, bench_seg):  # the 128x128 rows, here at the tiny size too
        monkeypatch.setattr(module, "run_small", module.run)
    monkeypatch.setattr(bench_sizes, "run_synthesis", functools.partial(
        bench_sizes.run_synthesis, size=(48, 64), images=1, repeats=1, measure_memory=False))
    monkeypatch.setattr(bench_walk, "QUICK_SIZES", [(6, 7)])
    monkeypatch.setattr(bench_import, "run", functools.partial(bench_import.run, size=(48, 64), images=2, repeats=1))
    monkeypatch.setattr(bench_seg_train, "run", functools.partial(bench_seg_train.run, batch=2, crop=64,
                                                                  backbone="resnet18"))
    out = tmp_path / "bench.json"
    rows = run_bench(quick=True, json_out=str(out), device="cpu")
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["quick"] is True and data["rows"] == json.loads(json.dumps(rows))
    assert {"cpu_count", "torch", "cpu", "load_average", "devices"} <= data["machine"].keys()
    assert [r["stage"] for r in rows].count("artefact") == 6
    assert [r["stage"] for r in rows].count("cam") == 4 and [r["stage"] for r in rows].count("seg") == 4
    assert [r["stage"] for r in rows].count("train_seg step") == 5  # the loader and four variants (quick)
    assert [r["format"] for r in rows if r["stage"] == "cam import"] == [f for f in FORMATS for _ in range(2)]
    walk = [r for r in rows if r["stage"] == "walk"]
    assert len(walk) == 1 and walk[0]["max_abs_diff"] < 1e-4 and walk[0]["peak_bytes"] >= 0
    for stage in ("cam", "walk", "seg", "boundary", "CAM (make_cam", "speed-up", "peak resident set"):
        assert stage in printed


def test_devices():
    assert bench.resolve_devices("cpu") == ["cpu"]
    assert bench.resolve_devices("auto")[0] == "cpu"
    with pytest.raises(ConfigError, match="unknown device"):
        bench.resolve_devices("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            bench.resolve_devices("cuda")


@pytest.mark.slow
def test_benchmarks_import_without_the_repository(tmp_path):
    """The benchmarks are part of the installed package: they import, and `salmask bench` finds them,
    with neither the repository root nor its `benchmarks/` folder importable (as from a wheel)."""
    repo = Path(__file__).resolve().parents[1]
    code = ("import sys, salmask, salmask.bench, salmask.benchmarks.bench_walk as w, salmask.benchmarks.reference_walk;"
            "import importlib.util as u;"
            "print(salmask.__file__); print(u.find_spec('benchmarks') is None); print(w.peak_child('fast', 6, 7, 3) >= 0)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(repo / "src")  # the package only, as site-packages would hold it
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    file, no_repo_benchmarks, measured = out.stdout.split()
    assert Path(file).is_relative_to(repo / "src") and no_repo_benchmarks == "True" and measured == "True"
    # the repository's folder holds only thin entry points into the package
    for entry in (repo / "benchmarks").glob("*.py"):
        assert "salmask.benchmarks." in entry.read_text(), entry


def test_format_table_handles_missing_reference():
    row = bench.timed_row("x", "case", "cpu", 2, {"ours": 0.5}, {"ours": 2**20}, None, "", ours="o", reference=None)
    assert row["images_per_s"] == 4 and row["speedup"] is None and row["memory_ratio"] is None
    table = bench.format_table([row])
    assert "x" in table and "1.0" in table and np.isfinite(row["images_per_s"])


def test_auto_layout_per_device_and_size():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_infer_batch("auto", cpu, "seg", (375, 500)) == 1  # VOC: the per-image loop
    assert resolve_infer_batch("auto", cpu, "cam", (256, 256)) == 1
    assert resolve_infer_batch("auto", cpu, "cam", (128, 128)) == 4  # the demo: small images batch
    assert resolve_infer_batch("auto", cuda, "cam", (375, 500)) == GPU_INFER_BATCH["cam"] > 1
    assert resolve_infer_batch(3, cpu, "seg", (375, 500)) == 3
    for bad in (0, "fast", True):
        with pytest.raises(ConfigError, match="infer_batch"):
            resolve_infer_batch(bad, cpu, "cam", (8, 8))
    batches, per_size = size_batches({"a": (128, 128), "b": (375, 500), "c": (128, 128), "d": (375, 500)},
                                     "auto", cpu, "cam")
    assert batches == [["a", "c"], ["b"], ["d"]] and per_size == {(128, 128): 4, (375, 500): 1}


def test_seg_layouts_agree_and_reject_a_negative_batch():
    model = bench_seg.make_model("resnet18", "cpu")
    images = bench_seg.make_images(3, TINY)
    together = predict_batch(model, images, scales=(1.0, 0.5), batch=0)
    for batch in (1, 2):
        for a, b in zip(together, predict_batch(model, images, scales=(1.0, 0.5), batch=batch), strict=True):
            assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="batch"):
        predict_batch(model, images, batch=-1)


def test_infer_batch_config_is_checked_and_not_hashed():
    """The layout changes how a stage computes, not what: it is validated, and reruns nothing."""
    from salmask.config import hash_part, load_config, section_hash

    assert load_config("demo", ["cam.infer_batch=4", "seg.infer_batch=auto"]).cam.infer_batch == 4
    for bad in ("cam.infer_batch=0", "cam.infer_batch=fast", "seg.infer_batch=1.5"):
        with pytest.raises(ConfigError, match="infer_batch"):
            load_config("demo", [bad])
    auto, four = load_config("demo"), load_config("demo", ["cam.infer_batch=4", "seg.infer_batch=2"])
    assert section_hash(hash_part(auto, "cam"), hash_part(auto, "seg")) == \
        section_hash(hash_part(four, "cam"), hash_part(four, "seg"))
    assert section_hash(hash_part(auto, "cam")) != section_hash(hash_part(load_config("demo", ["cam.epochs=1"]), "cam"))


@pytest.mark.slow
def test_compat_memory_measures_both_walks():
    import torch

    from salmask.compat import propagate_to_edge

    x, edge = torch.rand(2, 9, 11), torch.rand(1, 9, 11)
    torch.testing.assert_close(bench_walk.irnet_shaped_dense(x, edge, exp_times=3),
                               propagate_to_edge(x, edge, exp_times=3), rtol=0, atol=1e-5)
    # 40x50: one dense float32 matrix is 15 MiB, which the dense walk holds at least twice over
    r = bench_walk.compat_memory(40, 50, channels=2)
    assert r["dense_peak_bytes"] > 2 * r["dense_matrix_bytes"] > r["compat_peak_bytes"] > 0
