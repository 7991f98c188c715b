"""The CAM files other methods write, for tests, benchmarks and the ``cam.source: precomputed`` checks only.

Each writer stores given maps the way the method's own script stores its maps, written from the scripts'
definitions (salmask's reader, :mod:`salmask.cam.precomputed`, is not used here):

* IRNet ``step/make_cam.py`` (kept by BES, SBE, ReCAM, AMN, AdvCAM, CLIMS): ``np.save({id}.npy, {"keys":
  valid_cat, "cam": strided_cam.cpu(), "high_res": highres_cam.cpu().numpy()})``, where ``valid_cat =
  torch.nonzero(label)[:, 0]`` is an int64 *tensor* of 0-based foreground indices, ``cam`` a float32 *tensor*
  [K,⌈H/4⌉,⌈W/4⌉] and ``high_res`` a float32 numpy array [K,H,W];
* CLIP-ES ``generate_cams_voc12.py``: ``np.save({id}.npy, {"keys": keys.numpy(), "attn_highres":
  refined_cam_all_scales.cpu().numpy().astype(np.float16)})``, ``keys`` an int64 array of 0-based indices in
  the order the classes first appear in the image's annotation XML (not sorted), maps float16 [K,H,W];
* WSSS-BED ``classifier/infer.py``: per positive class j (0-based), ``cv2.imwrite({id}_{j}.png, norm_cam[j] *
  255.0)``: a float image, which OpenCV's PNG encoder converts to 8 bits (rounded, saturated); WSSS-BED's
  ``run.py`` reads it back with ``cv2.imread(path, 0) / 255``.

np.save pickles the dicts (``allow_pickle`` is np.save's default); salmask itself never writes a pickle.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch


def write_irn(folder: Path, image_id: str, keys: Sequence[int], cam: np.ndarray, high_res: np.ndarray) -> Path:
    """IRNet's file for class ids ``keys`` (1..C), ``cam`` [K,⌈H/4⌉,⌈W/4⌉] and ``high_res`` [K,H,W]."""
    label = torch.zeros(max([0, *keys]) + 1)
    label[[k - 1 for k in keys]] = 1
    valid_cat = torch.nonzero(label)[:, 0]
    strided_cam = torch.from_numpy(np.asarray(cam, np.float32))
    path = Path(folder) / f"{image_id}.npy"
    np.save(path, {"keys": valid_cat, "cam": strided_cam.cpu(),
                   "high_res": torch.from_numpy(np.asarray(high_res, np.float32)).cpu().numpy()})
    return path


def write_clip_es(folder: Path, image_id: str, keys: Sequence[int], high_res: np.ndarray,
                  order: Sequence[int] | None = None) -> Path:
    """CLIP-ES's file for class ids ``keys`` (1..C) and ``high_res`` [K,H,W]; ``order``: the positions of
    ``keys`` in the order the annotation lists them (default as given)."""
    order = list(range(len(keys))) if order is None else list(order)
    keys_t = torch.tensor([int(keys[j]) - 1 for j in order])
    refined = torch.stack([torch.tensor(np.asarray(high_res[j], np.float32)) for j in order]) if order else \
        torch.zeros((0, *np.shape(high_res)[1:]))
    path = Path(folder) / f"{image_id}.npy"
    np.save(path, {"keys": keys_t.numpy(), "attn_highres": refined.cpu().numpy().astype(np.float16)})
    return path


def write_wsss_bed(folder: Path, image_id: str, keys: Sequence[int], high_res: np.ndarray) -> list[Path]:
    """WSSS-BED's files for class ids ``keys`` (1..C) and ``norm_cam`` maps ``high_res`` [K,H,W] in [0, 1]."""
    paths = []
    for k, m in zip(keys, high_res):
        path = Path(folder) / f"{image_id}_{int(k) - 1}.png"
        if not cv2.imwrite(str(path), np.asarray(m, np.float64) * 255.0):
            raise OSError(f"cv2.imwrite failed for {path}")
        paths.append(path)
    return paths


WRITERS = ("irn", "clip-es", "png")


def export(npz_dir: Path, out: Path, fmt: str) -> int:
    """Write every ``make_cam`` artefact of ``npz_dir`` ({id}.npz) into ``out`` as method ``fmt`` writes its
    maps (``clip-es``: keys in reverse order, standing in for the annotation's order); the number of images."""
    if fmt not in WRITERS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(WRITERS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for path in sorted(Path(npz_dir).glob("*.npz")):
        with np.load(path, allow_pickle=False) as z:
            keys, cam, high = z["keys"].tolist(), z["cam"].astype(np.float32), z["high_res"].astype(np.float32)
        if fmt == "irn":
            write_irn(out, path.stem, keys, cam, high)
        elif fmt == "clip-es":
            write_clip_es(out, path.stem, keys, high, order=list(range(len(keys)))[::-1])
        else:
            write_wsss_bed(out, path.stem, keys, high)
        n += 1
    return n


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write a make_cam folder's CAMs as another method's files.")
    parser.add_argument("npz_dir", type=Path, help="a make_cam folder ({id}.npz)")
    parser.add_argument("out", type=Path, help="the folder to write")
    parser.add_argument("format", choices=WRITERS)
    args = parser.parse_args()
    print(f"{export(args.npz_dir, args.out, args.format)} images written to {args.out} as {args.format}")
