"""Two ranks on CPU (gloo): ``torchrun --nproc_per_node=2`` gives a single process's artefacts and metrics."""
from __future__ import annotations

import math
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from salmask.io import read_json
from salmask.metrics.confusion import ConfusionMatrix

from conftest import assert_same_artefacts, run_salmask, tiny_overrides

pytestmark = pytest.mark.skipif(not tdist.is_available() or not tdist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
INFERENCE = ("make_cam", "eval_cam", "saliency", "make_boundary_labels")


@pytest.mark.slow
def test_two_rank_inference_matches_one_process(tmp_path, tiny_data, reference_run):
    """Inference stages on the single-process checkpoint: identical per-image files and metrics."""
    work = tmp_path / "work"
    work.mkdir()
    for st in ("generate", "train_cam"):
        shutil.copytree(reference_run / st, work / st)
    run_salmask(["run", "demo", *tiny_overrides(work, tiny_data), "--stages", ",".join(INFERENCE)],
                launcher=TORCHRUN, timeout=180)

    for st in INFERENCE:
        assert read_json(work / st / "manifest.json")["world_size"] == 2
    assert (work / "salmask.rank1.log").is_file()
    assert_same_artefacts(reference_run, work, ("make_cam", "saliency", "make_boundary_labels"))
    ref = read_json(reference_run / "eval_cam" / "manifest.json")
    got = read_json(work / "eval_cam" / "manifest.json")
    assert got["metrics"] == ref["metrics"] and got["images"] == ref["images"]
    assert read_json(work / "eval_cam" / "sweep.json") == read_json(reference_run / "eval_cam" / "sweep.json")


@pytest.mark.slow
def test_two_rank_training(tmp_path, tiny_data):
    """train_cam under DDP completes, rank 0 saves a loadable model, and the CAMs of both shards appear."""
    work = tmp_path / "work"
    run_salmask(["run", "demo", *tiny_overrides(work, tiny_data, "cam.epochs=2", "cam.batch_size=3"),
                 "--stages", "generate,train_cam,make_cam"], launcher=TORCHRUN, timeout=180)
    manifest = read_json(work / "train_cam" / "manifest.json")
    assert manifest["world_size"] == 2
    assert manifest["steps"] == 4  # 12 images / 2 ranks / batch 3 = 2 steps per epoch
    assert math.isfinite(manifest["final_loss"])
    weights = torch.load(work / "train_cam" / "model.pt", map_location="cpu", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert len(list((work / "make_cam").glob("*.npz"))) == 12
    assert not list(work.rglob("*.tmp"))


def _all_reduce_worker(rank: int, init_file: str, preds: np.ndarray, gts: np.ndarray, out: str) -> None:
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        cm = ConfusionMatrix(4)
        for p, g in zip(preds[rank::2], gts[rank::2]):
            cm.update(p, g)
        cm.all_reduce()
        np.save(f"{out}.{rank}.npy", cm.hist)
    finally:
        tdist.destroy_process_group()


def test_confusion_all_reduce_two_processes(tmp_path):
    rng = np.random.default_rng(0)
    gts = rng.integers(0, 4, (5, 6, 7))
    gts[:, 0] = 255
    preds = rng.integers(0, 4, (5, 6, 7))
    mp.spawn(_all_reduce_worker, args=(str(tmp_path / "init"), preds, gts, str(tmp_path / "hist")), nprocs=2)

    single = ConfusionMatrix(4)
    for p, g in zip(preds, gts):
        single.update(p, g)
    for rank in range(2):
        hist = np.load(tmp_path / f"hist.{rank}.npy", allow_pickle=False)
        np.testing.assert_array_equal(hist, single.hist)
    assert single.hist.sum() == 5 * 5 * 7


def _checksums(work) -> list[str]:
    """The end-of-training weight checksums each rank logged (rank 0, then rank 1)."""
    lines = []
    for log in ("salmask.log", "salmask.rank1.log"):
        text = (work / log).read_text()
        lines.append([ln.split("checksum ")[1] for ln in text.splitlines() if "weights identical on 2 ranks" in ln])
    return lines


@pytest.mark.slow
def test_two_rank_training_from_pretrained_checkpoints(tmp_path, tiny_data):
    """Frozen stem / BatchNorm with pretrained weights are fixed before DDP wraps the model: train_cam and
    DeepLab-v2 train_seg run under two ranks from a checkpoint file, and both ranks end with the same weights."""
    import timm
    from PIL import Image

    ckpt = tmp_path / "resnet18_imagenet.pth"
    torch.save(timm.create_model("resnet18").state_dict(), ckpt)
    images = sorted((tiny_data / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))
    masks = tmp_path / "masks"  # any folder of masks (another method's pseudo masks, say)
    masks.mkdir()
    for p in images:
        m = np.zeros((48, 48), np.uint8)
        m[10:30, 12:40] = 1 + len(p.stem) % 3
        Image.fromarray(m).save(masks / f"{p.stem}.png")
    work = tmp_path / "work"
    run_salmask(["run", "demo", *tiny_overrides(
        work, tiny_data, "cam.epochs=2", "cam.batch_size=3", f"cam.pretrained={ckpt}",
        "seg.arch=deeplabv2", "seg.backbone=resnet18", f"seg.pretrained={ckpt}", f"seg.source={masks}",
        "seg.batch_size=2", "seg.iterations=3"), "--stages", "generate,train_cam,train_seg"],
        launcher=TORCHRUN, timeout=300)
    assert read_json(work / "train_cam" / "manifest.json")["steps"] == 4
    assert read_json(work / "train_seg" / "manifest.json")["steps"] == 3
    rank0, rank1 = _checksums(work)
    assert len(rank0) == 2 and rank0 == rank1
    # and what the references freeze still equals the checkpoint, tensor by tensor
    start = torch.load(ckpt, map_location="cpu", weights_only=True)
    cam = torch.load(work / "train_cam" / "model.pt", map_location="cpu", weights_only=True)["model"]
    seg = torch.load(work / "train_seg" / "model.pt", map_location="cpu", weights_only=True)["model"]
    frozen_cam, frozen_seg = frozen_by_the_references(start)
    for name in frozen_cam:
        assert torch.equal(cam[f"backbone.{name}"], start[name]), f"train_cam changed {name}"
    for name in frozen_seg:
        assert torch.equal(seg[f"backbone.{name}"], start[name]), f"train_seg changed {name}"
    trained = [n for n in start if n.startswith(("layer3.", "layer4.")) and n.endswith("conv1.weight")]
    assert trained and all(not torch.equal(cam[f"backbone.{n}"], start[n]) for n in trained)
    assert not torch.equal(seg["backbone.layer4.0.conv1.weight"], start["layer4.0.conv1.weight"])


def frozen_by_the_references(state: dict) -> tuple[list[str], list[str]]:
    """The checkpoint tensors (ResNet names) that training leaves alone. IRNet/BES's CAM net
    (``net/resnet50_cam.py``): stage 2's output is detached, so conv1, bn1, layer1 and layer2 get no gradient,
    and every BatchNorm is a FixedBatchNorm, whose statistics never update. SBE's DeepLab-v2 with ImageNet
    weights: every BatchNorm of the backbone fixed, statistics and affine parameters."""
    import timm

    norms = [name for name, m in timm.create_model("resnet18").named_modules()
             if isinstance(m, torch.nn.BatchNorm2d)]
    stats = [n for n in state if n.rsplit(".", 1)[0] in norms and n.endswith(("running_mean", "running_var"))]
    cam = sorted({n for n in state if n.startswith(("conv1.", "bn1.", "layer1.", "layer2."))} | set(stats))
    seg = [n for n in state if n.rsplit(".", 1)[0] in norms]
    assert len(stats) == 2 * len(norms) and len(cam) > len(stats)
    return cam, seg
