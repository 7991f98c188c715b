"""The study behind ``select.mode: auto``: label-free criteria for walk mask vs saliency mask, scored on GT.

Reads a finished run's artefacts (make_pseudo, saliency, make_boundary, train_cam, make_cam) and the
ground truth of its pseudo-mask split, and prints, for each criterion tried, how many single-class images
it hands to the saliency mask and the mIoU of all images and of the single-class ones (the README's table
"The Selector without a threshold"). Ground truth only scores; no criterion reads it except the oracle row.

    python scripts/select_criteria.py WORK_DIR VOC_ROOT [--cam-work DIR]

VOC_ROOT holds VOCdevkit/VOC2012 (e.g. ../shared/data/voc-real); ``--cam-work`` the run whose train_cam /
make_cam to use when WORK_DIR links them (the study's variants). About 4 classifier forwards an image.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from salmask.cam.train import load_cam_model
from salmask.config import load_config
from salmask.io import load_npz, read_gray, read_image, read_mask
from salmask.metrics.confusion import ConfusionMatrix
from salmask.data.transforms import to_tensor
from salmask.select.judge import contour_score, upsample_boundary

C = 21


def sparse(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cm = ConfusionMatrix(C)
    cm.update(pred, gt)
    flat = cm.hist.reshape(-1)
    nz = np.flatnonzero(flat)
    return nz, flat[nz]


def miou(parts: list[tuple[np.ndarray, np.ndarray]]) -> float:
    h = np.zeros(C * C, np.int64)
    for idx, cnt in parts:
        h[idx] += cnt
    h = h.reshape(C, C)
    union = h.sum(0) + h.sum(1) - np.diag(h)
    present = (h.sum(0) + h.sum(1)) > 0
    return float(100 * (np.diag(h) / np.maximum(union, 1))[present].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("root", type=Path)
    ap.add_argument("--cam-work", type=Path)
    a = ap.parse_args()
    cam_work = a.cam_work or a.work
    voc = a.root / "VOCdevkit" / "VOC2012"
    cfg = load_config(str(a.work / "config.yaml"))
    ids = (voc / "ImageSets" / "Segmentation" / f"{cfg.dataset.pseudo_split}.txt").read_text().split()
    model = load_cam_model(cam_work / "train_cam" / "model.pt", cfg.cam, C - 1, torch.device("cpu"))

    confs: dict[str, dict] = {}
    ev: dict[str, list[float]] = {k: [] for k in (
        "o", "sW", "sB", "kW", "kB", "rW", "rB", "bdW", "bdB", "walkW", "walkB", "camW", "camB", "salW", "iouW", "iouB")}
    single: list[str] = []
    for i in ids:
        gt = read_mask(voc / "SegmentationClassAug" / f"{i}.png", C)
        pseudo = read_mask(a.work / "make_pseudo" / f"{i}.png")
        classes = sorted(set(np.unique(gt).tolist()) - {0, 255})  # image labels, as the pipeline derives them
        confs[i] = {"keep": sparse(pseudo, gt)}
        if len(classes) != 1:
            continue
        c = classes[0]
        sal = read_gray(a.work / "saliency" / f"{i}.png")
        B, W = sal > 0.5, (pseudo != 0) & (pseudo != 255)
        if not B.any():
            continue
        single.append(i)
        for name, m in (("swap", B), ("union", B | W), ("inter", B & W)):
            confs[i][name] = sparse(np.where(m, c, 0).astype(np.uint8), gt)
        k_r = _keep_remove(model, voc / "JPEGImages" / f"{i}.jpg", c, W, B)
        walk = load_npz(a.work / "make_pseudo" / "scores" / f"{i}.npz")
        walk_c = walk["scores"][list(walk["keys"]).index(c)].astype(np.float32)
        cam = load_npz(cam_work / "make_cam" / f"{i}.npz")["high_res"][0].astype(np.float32)
        bd = upsample_boundary(load_npz(a.work / "make_boundary" / f"{i}.npz")["boundary"], W.shape)
        g = gt == c
        mean = lambda v, m: float(v[m].mean()) if m.any() else 0.0  # noqa: E731
        for key, val in (("o", (W & B).sum() / max((W | B).sum(), 1)),
                         ("sW", k_r[0] - k_r[2]), ("sB", k_r[1] - k_r[3]),
                         ("kW", k_r[0]), ("kB", k_r[1]), ("rW", k_r[2]), ("rB", k_r[3]),
                         ("bdW", contour_score(bd, W)), ("bdB", contour_score(bd, B)),
                         ("walkW", mean(walk_c, W)), ("walkB", mean(walk_c, B)), ("camW", mean(cam, W)),
                         ("camB", mean(cam, B)), ("salW", mean(sal, W)),
                         ("iouW", (W & g).sum() / max((W | g).sum(), 1)), ("iouB", (B & g).sum() / max((B | g).sum(), 1))):
            ev[key].append(float(val))
    f = {k: np.asarray(v) for k, v in ev.items()}
    o, bd = f["o"], f["bdB"] - f["bdW"]
    rules = [
        ("never (the walk's masks)", np.zeros_like(o, bool)),
        ("sweep t0 = 0.4, t1 = 0", o > 0.4),
        ("t0 = 0", o > 0),
        ("always, no overlap needed", np.ones_like(o, bool)),
        ("boundary along the outline (auto)", bd > 0),
        ("boundary, only where the masks overlap", (bd > 0) & (o > 0)),
        ("boundary, or overlap > 0.4", (bd > 0) | (o > 0.4)),
        ("classifier keep - remove (judge: classifier)", f["sB"] > f["sW"]),
        ("classifier keep", f["kB"] > f["kW"]),
        ("classifier remove", f["rB"] < f["rW"]),
        ("classifier, or overlap > 0.4", (f["sB"] > f["sW"]) | (o > 0.4)),
        ("boundary and classifier", (bd > 0) & (f["sB"] > f["sW"])),
        ("boundary or classifier", (bd > 0) | (f["sB"] > f["sW"])),
        ("walk's mean score higher inside saliency", f["walkB"] > f["walkW"]),
        ("CAM's mean higher inside saliency", f["camB"] > f["camW"]),
        ("walk's mask mostly non-salient", f["salW"] < 0.5),
        ("oracle (reads GT)", f["iouB"] > f["iouW"]),
    ]
    print(f"{'saliency wins when':<46}{'replaced':>9}{'all':>8}{'single':>8}")
    for name, m in rules:
        choice = {i: "swap" for i, yes in zip(single, m) if yes}
        _print(name, int(m.sum()), confs, choice, single)
    for what in ("union", "inter"):
        _print(f"fusion: {what} (where they overlap)", int((o > 0).sum()), confs,
               {i: what for i, yes in zip(single, o > 0) if yes}, single)


def _keep_remove(model, path: Path, c: int, W: np.ndarray, B: np.ndarray) -> list[float]:
    """[keep W, keep B, remove W, remove B] logits of class ``c`` (one batch, as the classifier judge's)."""
    x = to_tensor(read_image(path))
    masks = torch.from_numpy(np.stack([W, B]))[:, None]
    with torch.no_grad():
        out = model(torch.cat([x * masks, x * ~masks]))[:, c - 1]
    return [float(v) for v in out]


def _print(name: str, replaced: int, confs: dict, choice: dict, single: list[str]) -> None:
    all_parts = [confs[i][choice.get(i, "keep")] for i in confs]
    single_parts = [confs[i][choice.get(i, "keep")] for i in single]
    print(f"{name:<46}{replaced:>9}{miou(all_parts):>8.2f}{miou(single_parts):>8.2f}")


if __name__ == "__main__":
    main()
