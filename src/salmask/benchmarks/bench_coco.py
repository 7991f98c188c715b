"""COCO evaluation masks: rasterising them from the instance JSON against decoding the same masks from PNG.

    python -m salmask.benchmarks.bench_coco [--quick] [--json OUT]

Inputs imitate ``instances_train2014.json``: 640x480 images with 7 annotations each (COCO's mean is
7.3), star-shaped polygons of 12-40 vertices of every size, and one crowd RLE every tenth image.

* ours: :func:`salmask.data.coco.semantic_mask` on an already-loaded annotation file (what the cache
  pays once per image), then the same plus the atomic PNG write (a whole ``coco_masks`` stage per image).
* ref: :func:`salmask.io.read_mask` of the PNG that rasterisation wrote — what every evaluation pays
  per image once the cache exists. The agreement column is the fraction of differing pixels (must be 0).
* The one-off parse and index of the JSON (``load_annotations``) is reported per image as well.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from salmask.benchmarks.common import format_table, median_seconds, timed_row
from salmask.data.meta import COCO, COCO_CATEGORY_IDS

SIZE = (480, 640)


def star_polygon(rng: np.random.Generator, h: int, w: int) -> list[float]:
    """A simple polygon (vertices sorted by angle around a centre) of random size and 12-40 vertices."""
    n = int(rng.integers(12, 41))
    cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    scale = float(np.exp(rng.uniform(np.log(6), np.log(min(h, w) / 2))))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = scale * rng.uniform(0.5, 1.0, n)
    xs = np.clip(cx + radii * np.cos(angles), 0, w)
    ys = np.clip(cy + radii * np.sin(angles), 0, h)
    return np.stack([xs, ys], 1).reshape(-1).round(2).tolist()


def coco_json(path: Path, images: int, seed: int = 0) -> None:
    """Write a COCO instances file of ``images`` 640x480 images to ``path``."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    h, w = SIZE
    entries, anns = [], []
    for k in range(images):
        entries.append({"id": k + 1, "file_name": f"COCO_train2014_{k + 1:012d}.jpg", "height": h, "width": w})
        for _ in range(7):
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "iscrowd": 0, "bbox": [0, 0, 1, 1], "area": 1.0,
                         "category_id": int(rng.choice(COCO_CATEGORY_IDS)),
                         "segmentation": [star_polygon(rng, h, w)]})
        if k % 10 == 0:
            crowd = np.zeros(SIZE, np.uint8)
            y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
            crowd[y:y + h // 3, x:x + w // 3] = 1
            rle = mask_utils.encode(np.asfortranarray(crowd))
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "iscrowd": 1, "bbox": [0, 0, 1, 1], "area": 1.0,
                         "category_id": 1, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    cats = [{"id": c, "name": n} for c, n in zip(COCO_CATEGORY_IDS, COCO.fg_classes)]
    path.write_text(json.dumps({"images": entries, "annotations": anns, "categories": cats}))


def run(quick: bool = False, images: int | None = None, repeats: int | None = None) -> list[dict]:
    """Three rows: rasterise, rasterise + write PNG, and the JSON parse; each against PNG decoding."""
    from salmask.data.coco import load_annotations, semantic_mask
    from salmask.io import read_mask, write_png

    images = images or (20 if quick else 200)
    repeats = repeats or 3
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        coco_json(d / "instances_train2014.json", images)
        start = time.perf_counter()
        api = load_annotations(d / "instances_train2014.json")
        parse_s = time.perf_counter() - start
        ids = sorted(api.imgs)

        def rasterise() -> list[np.ndarray]:
            return [semantic_mask(api, i) for i in ids]

        def rasterise_and_write() -> None:
            for i in ids:
                write_png(d / "masks" / f"{i}.png", semantic_mask(api, i), COCO.palette)

        rasterise_and_write()  # the PNGs the reference decodes; also the warm-up

        def decode() -> list[np.ndarray]:
            return [read_mask(d / "masks" / f"{i}.png", COCO.num_classes) for i in ids]

        seconds, results = median_seconds({"ours": rasterise, "write": rasterise_and_write, "ref": decode},
                                          "cpu", repeats)
        differing = max(float((a != b).mean()) for a, b in zip(results["ours"], results["ref"], strict=True))
    case = f"{images} images 640x480, 7 polygons (+1 crowd RLE per 10)"
    common = dict(repeats=repeats, height=SIZE[0], width=SIZE[1])
    none = {"ours": None, "ref": None}
    ref = "decode the cached PNG (io.read_mask)"
    return [
        timed_row("coco", case, "cpu", images, {"ours": seconds["ours"], "ref": seconds["ref"]}, none, differing,
                  "fraction of pixels differing", ours="rasterise from the loaded JSON (data.coco.semantic_mask)",
                  reference=ref, **common),
        timed_row("coco", case + ", + PNG write", "cpu", images, {"ours": seconds["write"], "ref": seconds["ref"]},
                  none, None, "", ours="rasterise + atomic PNG write (the cache, once per image)", reference=ref,
                  **common),
        timed_row("coco", case + ", JSON parse", "cpu", images, {"ours": parse_s, "ref": seconds["ref"]}, none,
                  None, "", ours="json.load + validate + pycocotools index (once per process)", reference=ref,
                  **common),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    a = p.parse_args()
    rows = run(quick=a.quick)
    print(format_table(rows))
    if a.json:
        from salmask.io import write_json

        write_json(a.json, {"rows": rows})


if __name__ == "__main__":
    main()
