"""Boundary-label synthesis speed and artefact sizes, on synthetic VOC-sized CAM-like maps.

    python -m salmask.benchmarks.bench_sizes [--quick]

The maps imitate real CAMs (a few blobs plus noise on the stride-16 grid, upsampled bilinearly as
CAM inference does), because random noise would not compress like real artefacts do.

* Synthesis: :func:`salmask.boundary.labels.synthesize` (integer box counts from an integral image,
  present classes only) against :func:`bes_labels`, BES's formulation (``avg_pool2d`` of a float mask
  per class, all 20 VOC classes, then a sort), on CPU; the agreement is the fraction of pixels whose
  code differs (float fractions can tip at exact ties near the border).
* Sizes: bytes per image of each stage's files against IRNet's formats (``np.save`` of a dict of
  float32 arrays — a pickled .npy, written here only to measure it, never loaded).
"""
from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from salmask.benchmarks.common import VOC_SIZE, format_table, median_seconds, rss_growth, subprocess_peak_bytes, timed_row
from salmask.boundary.labels import (BG, BOUNDARY_FG_BG, BOUNDARY_FG_FG, FG, IGNORE, UNCERTAIN, confident_map,
                                     synthesize)
from salmask.data.meta import voc_palette
from salmask.io import save_npz, write_gray, write_png

KEYS = (8, 15)  # cat, person


def cam_like(size: tuple[int, int] = VOC_SIZE, keys: tuple[int, ...] = KEYS,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CAM-like maps of ``len(keys)`` classes -> (cam [K,ceil(H/4),ceil(W/4)], high_res [K,H,W]), float32
    in [0,1], each class divided by its max like :func:`salmask.cam.infer.normalise_positive`."""
    h, w = size
    gh, gw = math.ceil(h / 16), math.ceil(w / 16)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    coarse = []
    for _ in keys:
        m = 0.05 * rng.random((gh, gw), dtype=np.float32)
        for _blob in range(3):
            cy, cx = rng.uniform(0.2, 0.8) * gh, rng.uniform(0.2, 0.8) * gw
            sy, sx = rng.uniform(0.08, 0.25) * gh, rng.uniform(0.08, 0.25) * gw
            m += rng.uniform(0.4, 1.0) * np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
        coarse.append(m)
    grid = torch.from_numpy(np.stack(coarse))[None]
    cam = F.interpolate(grid, (math.ceil(h / 4), math.ceil(w / 4)), mode="bilinear", align_corners=False)[0]
    high = F.interpolate(grid, (gh * 16, gw * 16), mode="bilinear", align_corners=False)[0, :, :h, :w]

    def normalise(t: torch.Tensor) -> np.ndarray:
        return (t / (t.flatten(1).max(1).values[:, None, None] + 1e-5)).numpy()

    return normalise(cam), normalise(high)


def saliency_like(high_res: np.ndarray) -> np.ndarray:
    """A saliency map [H,W] in [0,1] from CAM-like maps: nearly binary with soft edges, like a SOD net's,
    in 8-bit steps as the saliency stage stores it."""
    soft = 1.0 / (1.0 + np.exp(-40.0 * (high_res.max(0) - 0.35)))
    return np.round(soft * 255) / 255


def boundary_like(cam: np.ndarray) -> np.ndarray:
    """A boundary-probability map [h,w] in [0,1] at stride 4: the normalised gradient magnitude of the CAMs."""
    grad = np.hypot(ndimage.sobel(cam, axis=1), ndimage.sobel(cam, axis=2)).max(0)
    return np.clip(grad / grad.max() * 1.5, 0, 1)


def confident(size: tuple[int, int] = VOC_SIZE, seed: int = 0) -> np.ndarray:
    """A confident map uint8 [H,W] (0, class ids, 255) from CAM-like maps, without CRF."""
    _, high = cam_like(size, seed=seed)
    return confident_map(high, np.asarray(KEYS), None, use_crf=False)


@torch.no_grad()
def bes_labels(conf: np.ndarray, *, window: int = 13, theta_scale: float = 0.3, theta_diff: float = 0.1,
               num_classes: int = 20) -> np.ndarray:
    """BES's ``make_boundary_label`` formulation: uint8 [H,W] boundary codes from a confident map
    [H,W] (no saliency), with class fractions from ``avg_pool2d`` over in-image pixels in float32."""
    seg = torch.from_numpy(np.asarray(conf)).long()

    def fractions(masks: torch.Tensor) -> torch.Tensor:  # [N,H,W] bool -> [N,H,W]
        return F.avg_pool2d(masks.float()[None], window, stride=1, padding=window // 2, count_include_pad=False)[0]

    bg = fractions((seg == 0)[None])[0]
    fg = fractions(torch.stack([seg == c for c in range(1, num_classes + 1)])).sort(0, descending=True).values
    f1, f2 = fg[0], fg[1]
    labels = torch.full(seg.shape, IGNORE, dtype=torch.uint8)
    labels[(bg > 2 * theta_scale) & (bg - f1 >= 2 * theta_diff)] = BG
    labels[(f1 > 2 * theta_scale) & (f1 - bg >= 2 * theta_diff)] = FG
    labels[(torch.minimum(f1, bg) > theta_scale) & ((f1 - bg).abs() < theta_diff)] = BOUNDARY_FG_BG
    labels[(f2 > theta_scale) & (f1 - f2 < theta_diff)] = BOUNDARY_FG_FG
    return labels.numpy()


def _synthesis_methods(conf: np.ndarray, saliency: np.ndarray):
    return {"ours": lambda: synthesize(conf, None), "ref": lambda: bes_labels(conf),
            "ours+saliency": lambda: synthesize(conf, saliency)}


def peak_child(method: str, height: int, width: int) -> int:
    """In a fresh process: resident-set growth of one call of a synthesis ``method``."""
    tiny = confident((48, 64))
    _synthesis_methods(tiny, saliency_like(cam_like((48, 64))[1]))[method]()  # load the code paths
    conf = confident((height, width))
    return rss_growth(_synthesis_methods(conf, saliency_like(cam_like((height, width))[1]))[method])


def run_synthesis(quick: bool = False, *, size: tuple[int, int] = VOC_SIZE, images: int | None = None,
                  repeats: int | None = None, measure_memory: bool = True) -> list[dict]:
    """Two rows: BES labels ours vs BES's formulation, and ours with the SBE saliency steps (no reference).
    ``measure_memory=False`` leaves the peaks out (None)."""
    images = images or (4 if quick else 16)
    repeats = repeats or 3
    confs = [confident(size, seed) for seed in range(images)]
    sals = [saliency_like(cam_like(size, seed=seed)[1]) for seed in range(images)]
    for conf in confs:
        if not set(np.unique(conf)) - {0, UNCERTAIN}:
            raise AssertionError("synthetic confident map has no foreground")
    methods = {name: (lambda name=name: [_synthesis_methods(c, s)[name]() for c, s in zip(confs, sals)])
               for name in ("ours", "ref", "ours+saliency")}
    for fn in methods.values():
        fn()
    seconds, results = median_seconds(methods, "cpu", repeats)
    differing = max(float((a != b).mean()) for a, b in zip(results["ours"], results["ref"], strict=True))
    peaks = {name: subprocess_peak_bytes("salmask.benchmarks.bench_sizes:peak_child", method=name, height=size[0],
                                         width=size[1]) if measure_memory else None for name in methods}
    common = dict(repeats=repeats, height=size[0], width=size[1])
    case = f"{images}x{size[1]}x{size[0]}, 2 classes, window 13"
    return [
        timed_row("boundary", case + ", no saliency", "cpu", images, seconds, peaks, differing,
                  "fraction of pixels differing",
                  ours="integral-image counts of present classes (boundary.labels.synthesize)",
                  reference="avg_pool2d per class over 20 classes + sort (BES, salmask.benchmarks.bench_sizes.bes_labels)",
                  **common),
        timed_row("boundary", case + ", with saliency (SBE)", "cpu", images,
                  {"ours": seconds["ours+saliency"]}, {"ours": peaks["ours+saliency"]}, None, "",
                  ours="synthesize with saliency: BG where saliency is 0, Sobel edges as certain boundary",
                  reference=None, **common),
    ]


def _file_bytes(folder: Path, name: str, write) -> int:
    path = folder / name
    write(path)
    return path.stat().st_size


def _irnet_npy(path: Path, arrays: dict) -> None:
    # IRNet's format, reproduced only to measure its size; salmask never writes or loads pickles.
    with open(path, "wb") as f:
        np.save(f, arrays, allow_pickle=True)


def run_sizes(size: tuple[int, int] = VOC_SIZE, seed: int = 0) -> list[dict]:
    """Bytes per image of each artefact for one VOC-sized image with two classes; one row each."""
    keys = np.asarray(KEYS)
    cam, high = cam_like(size, seed=seed)
    sal = saliency_like(high)
    boundary = boundary_like(cam)
    conf = confident_map(high, keys, None, use_crf=False)
    codes = synthesize(conf, sal)
    full = np.concatenate([np.full((1, *high.shape[1:]), 0.25, np.float32), high])
    mask = np.concatenate([[0], keys]).astype(np.uint8)[full.argmax(0)]
    rows = []

    def row(case: str, ours: int, ref: int | None, ref_format: str | None, our_format: str) -> None:
        rows.append({"stage": "artefact", "case": case, "bytes": ours, "ref_bytes": ref,
                     "size_ratio": None if ref is None else ref / ours, "format": our_format,
                     "ref_format": ref_format, "height": size[0], "width": size[1], "classes": len(keys)})

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        row("CAM (make_cam/{id}.npz)",
            _file_bytes(d, "cam.npz", lambda p: save_npz(p, keys=keys.astype(np.int16), cam=cam.astype(np.float16),
                                                          high_res=high.astype(np.float16))),
            _file_bytes(d, "cam.npy", lambda p: _irnet_npy(p, {"keys": keys - 1, "cam": cam, "high_res": high})),
            "IRNet make_cam: np.save of a dict, float32 cam + high_res (pickled .npy)",
            "compressed .npz, float16 cam [K,h/4,w/4] + high_res [K,H,W], int16 keys")
        row("boundary map (make_boundary/{id}.npz)",
            _file_bytes(d, "b.npz", lambda p: save_npz(p, boundary=boundary.astype(np.float16))),
            _file_bytes(d, "b.npy", lambda p: np.save(p, boundary.astype(np.float32))),
            "float32 .npy (IRNet/BES recompute edges in make_sem_seg instead of storing them)",
            "compressed .npz, float16 [h/4,w/4]")
        row("boundary labels (make_boundary_labels/{id}.png)",
            _file_bytes(d, "codes.png", lambda p: write_png(p, codes)),
            _file_bytes(d, "codes_bes.png", lambda p: Image.fromarray(synthesize(conf, None)).save(p)),
            "BES: grayscale PNG of its labels (no saliency steps)", "grayscale PNG of codes (with saliency)")
        row("walk scores (make_pseudo/scores/{id}.npz)",
            _file_bytes(d, "scores.npz", lambda p: save_npz(p, keys=keys.astype(np.int16),
                                                             scores=high.astype(np.float16))),
            None, None, "compressed .npz, float16 [K,H,W] (no IRNet counterpart)")
        row("pseudo mask (make_pseudo/{id}.png)",
            _file_bytes(d, "mask.png", lambda p: write_png(p, mask, voc_palette())),
            _file_bytes(d, "mask_irnet.png", lambda p: Image.fromarray(mask).save(p)),
            "IRNet make_sem_seg: grayscale PNG of class ids", "palette PNG of class ids")
        row("saliency (saliency/{id}.png)", _file_bytes(d, "sal.png", lambda p: write_gray(p, sal)), None, None,
            "8-bit grayscale PNG (no IRNet counterpart)")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images")
    args = parser.parse_args()
    print(format_table(run_synthesis(quick=args.quick) + run_sizes()))
