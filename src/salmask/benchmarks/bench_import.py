"""Importing another method's CAMs (``cam.source: precomputed``) against reading salmask's own ``.npz``.

    python -m salmask.benchmarks.bench_import [--quick]

The same VOC-sized CAM-like maps (two classes) are written in each format by the method's own writer
(:mod:`salmask.benchmarks.reference_formats`) and as ``make_cam``'s ``.npz``; each row times reading and
checking a folder of them into ``make_cam``'s arrays (:func:`salmask.cam.precomputed.read_cams`) against
:func:`salmask.io.load_npz` of the ``.npz`` files, interleaved in the same process, and reports how far the
imported full-size maps are from the ``.npz`` ones. A second row per format times the whole import (read,
check, write the ``.npz``), as ``make_cam`` does it.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from salmask.benchmarks.bench_sizes import KEYS, cam_like
from salmask.benchmarks.common import VOC_SIZE, format_table, median_seconds, timed_row
from salmask.benchmarks.reference_formats import write_clip_es, write_irn, write_wsss_bed
from salmask.cam.precomputed import FORMATS, import_cams, read_cams
from salmask.io import load_npz, save_npz

WRITERS = {
    "salmask": ("{id}.npz (make_cam's own)", None),
    "irn": ("{id}.npy, IRNet's np.save of a dict with torch tensors",
            lambda d, i, k, cam, high: write_irn(d, i, k, cam, high)),
    "clip-es": ("{id}.npy, CLIP-ES's np.save of a dict, float16 attn_highres",
                lambda d, i, k, cam, high: write_clip_es(d, i, k, high, order=list(range(len(k)))[::-1])),
    "png": ("{id}_{c}.png, WSSS-BED's cv2.imwrite of cam * 255",
            lambda d, i, k, cam, high: write_wsss_bed(d, i, k, high)),
}


def _folders(root: Path, n: int, size: tuple[int, int]) -> list[str]:
    """Write ``n`` images' maps in every format under ``root/{format}``; their ids."""
    ids = [f"img{j:04d}" for j in range(n)]
    for fmt in FORMATS:
        (root / fmt).mkdir()
    for j, i in enumerate(ids):
        cam, high = cam_like(size, KEYS, seed=j)
        save_npz(root / "salmask" / f"{i}.npz", keys=np.asarray(KEYS, np.int16), cam=cam.astype(np.float16),
                 high_res=high.astype(np.float16))
        for fmt, (_, write) in WRITERS.items():
            if write is not None:
                write(root / fmt, i, KEYS, cam.astype(np.float16).astype(np.float32),
                      high.astype(np.float16).astype(np.float32))
    return ids


def run(quick: bool = False, size: tuple[int, int] = VOC_SIZE, images: int | None = None,
        repeats: int | None = None) -> list[dict]:
    """One row per format reading (and one importing) ``images`` maps of ``size`` against ``load_npz``."""
    n = images or (8 if quick else 32)
    reps = repeats or (3 if quick else 5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids = _folders(root, n, size)
        (root / "out").mkdir()

        def ref():
            return [load_npz(root / "salmask" / f"{i}.npz", "cam") for i in ids]

        for fmt in FORMATS:
            def read(fmt=fmt):
                return [read_cams(root / fmt, fmt, i, KEYS, size, 20)[0] for i in ids]

            def imp(fmt=fmt):
                for i in ids:
                    import_cams(root / fmt, fmt, i, KEYS, size, 20, root / "out" / f"{i}.npz")

            seconds, results = median_seconds({"ours": read, "ref": ref}, "cpu", reps)
            diff = max(float(np.abs(a["high_res"].astype(np.float32) - b["high_res"].astype(np.float32)).max())
                       for a, b in zip(results["ours"], results["ref"]))
            what, _ = WRITERS[fmt]
            rows.append(timed_row("cam import", f"read {fmt}", "cpu", n, seconds, {"ours": None, "ref": None},
                                  diff, "max |high_res - npz high_res|", ours=f"read + check {what}",
                                  reference="load_npz of make_cam's .npz (same maps)", format=fmt))
            seconds, _ = median_seconds({"ours": imp, "ref": ref}, "cpu", reps)
            rows.append(timed_row("cam import", f"import {fmt} (+ write .npz)", "cpu", n, seconds,
                                  {"ours": None, "ref": None}, None, "-", ours=f"read + check + write {what}",
                                  reference="load_npz of make_cam's .npz (same maps)", format=fmt))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats")
    args = parser.parse_args()
    print(format_table(run(quick=args.quick)))
