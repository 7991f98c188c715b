"""``salmask prepare``: turn the official dataset downloads into what the readers expect.

* ``prepare voc``: VOC 2012 + SBD → ``SegmentationClassAug/`` (palette PNGs: VOC's own
  ``SegmentationClass`` masks where they exist, SBD's ``cls/*.mat`` elsewhere) and
  ``ImageSets/Segmentation/train_aug.txt`` = (VOC train ∪ SBD train ∪ SBD val) − VOC val, the field's
  10,582 images. A completion marker written last tells a finished folder from a half-made one.
* ``prepare coco``: the split index and rasterised evaluation masks of :mod:`salmask.data.coco`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from salmask.data.datasets import read_id_list, voc_root
from salmask.data.meta import VOC
from salmask.errors import InputError
from salmask.io import read_json, read_mask, write_bytes_atomic, write_json, write_png
from salmask.utils.log import progress

MARKER = ".salmask-complete.json"
"""Written into ``SegmentationClassAug/`` after everything else: its absence means half-made."""


def sbd_root(path: str | Path) -> Path:
    """Accept ``benchmark_RELEASE/``, its ``dataset/`` folder, or the folder holding ``benchmark_RELEASE/``."""
    path = Path(path).expanduser()
    for cand in (path / "benchmark_RELEASE" / "dataset", path / "dataset", path):
        if (cand / "cls").is_dir():
            return cand
    raise InputError(path, "not an SBD release (no cls/ under it, dataset/ or benchmark_RELEASE/dataset/)")


def load_sbd_segmentation(path: str) -> np.ndarray | str:
    """``GTcls.Segmentation`` of an SBD ``cls/*.mat`` file as an array, or a message saying why not."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError... on damaged files
        return f"cannot read the .mat file ({e})"
    seg = getattr(mat.get("GTcls"), "Segmentation", None)
    if seg is None:
        return "no GTcls.Segmentation in the .mat file (not an SBD cls/ file)"
    return np.asarray(seg)


class CrashIsolatedLoader:
    """Calls ``target(path)`` in one worker process, restarted after a crash.

    A damaged ``.mat`` file can crash scipy's ``loadmat`` with a segmentation fault, which no Python ``except``
    catches; in the worker it becomes a message naming the file and the fix, and the next file gets a fresh
    worker. Use it as a context manager (the worker ends on exit).
    """

    def __init__(self, target: Callable[[str], np.ndarray | str] = load_sbd_segmentation):
        self.target, self._pool = target, None

    def __call__(self, path: str) -> np.ndarray | str:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is None:  # spawn: forking a process that holds torch's threads is unsafe
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            return self._pool.submit(self.target, path).result()
        except BrokenProcessPool:
            self.close()
            return "the .mat reader (scipy) crashed on this file: it is damaged; download SBD again or delete it"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "CrashIsolatedLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_sbd_mask(path: Path, loader: Callable[[str], np.ndarray | str] = load_sbd_segmentation) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/*.mat`` file as uint8 [H, W] with values 0..20 or 255.

    ``loader`` reads the array (in this process by default; :class:`CrashIsolatedLoader` in a worker)."""
    if not path.is_file():
        raise InputError(path, "SBD mask file not found")
    seg = loader(str(path))
    if isinstance(seg, str):
        raise InputError(path, seg)
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise InputError(path, f"GTcls.Segmentation is not a 2-D integer array ({seg.dtype}, shape {seg.shape})")
    bad = ((seg < 0) | (seg >= VOC.num_classes)) & (seg != VOC.ignore_index)
    if bad.any():
        vals = sorted(set(np.unique(seg[bad]).tolist()))[:8]
        raise InputError(path, f"mask has values {vals} outside 0..{VOC.num_fg} and ignore {VOC.ignore_index}")
    return seg.astype(np.uint8)


def prepare_voc(voc: str | Path, sbd: str | Path, force: bool = False,
                say: Callable[[str], None] = print) -> dict:
    """Write ``SegmentationClassAug/`` and ``train_aug.txt`` under the VOC 2012 folder; returns the counts.

    A folder with the completion marker is left as it is (unless ``force``); one without it (half-made,
    or made by another tool) is refused unless ``force``, which rewrites every mask."""
    base, sbd_dir = voc_root(voc), sbd_root(sbd)
    lists = base / "ImageSets" / "Segmentation"
    voc_train, voc_val = read_id_list(lists / "train.txt"), read_id_list(lists / "val.txt")
    sbd_train, sbd_val = read_id_list(sbd_dir / "train.txt"), read_id_list(sbd_dir / "val.txt")
    train_aug = sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))
    target = base / "SegmentationClassAug"
    marker = target / MARKER
    if marker.is_file() and not force:
        counts = read_json(marker)
        say(f"{target} is complete already ({counts.get('masks')} masks, train_aug {counts.get('train_aug')}); "
            f"--force rewrites it")
        return counts
    if target.is_dir() and any(target.iterdir()) and not force:
        raise InputError(target, "exists without salmask's completion marker (half-made, or made by another "
                                 "tool); rerun with --force to rewrite it")
    marker.unlink(missing_ok=True)
    ids = sorted(set(voc_train) | set(voc_val) | set(sbd_train) | set(sbd_val))
    with CrashIsolatedLoader() as loader:
        from_voc = _write_masks(ids, base, sbd_dir, target, loader)
    write_bytes_atomic(lists / "train_aug.txt", "".join(f"{i}\n" for i in train_aug).encode())
    counts = {"voc_train": len(voc_train), "voc_val": len(voc_val), "sbd_train": len(sbd_train),
              "sbd_val": len(sbd_val), "train_aug": len(train_aug), "masks": len(ids),
              "masks_from_voc": from_voc, "masks_from_sbd": len(ids) - from_voc}
    write_json(marker, counts)
    say(f"VOC train {len(voc_train)}, val {len(voc_val)}; SBD train {len(sbd_train)}, val {len(sbd_val)}")
    say(f"train_aug: {len(train_aug)} images -> {lists / 'train_aug.txt'}")
    say(f"SegmentationClassAug: {len(ids)} masks ({from_voc} from VOC SegmentationClass, "
        f"{len(ids) - from_voc} from SBD) -> {target}")
    return counts


def _write_masks(ids: list[str], base: Path, sbd_dir: Path, target: Path, loader: CrashIsolatedLoader) -> int:
    """Write every id's palette PNG from VOC's own mask or SBD's; returns how many came from VOC."""
    from salmask.stage_utils import image_size

    from_voc = 0
    for i in progress(ids, "SegmentationClassAug"):
        own, mat = base / "SegmentationClass" / f"{i}.png", sbd_dir / "cls" / f"{i}.mat"
        if own.is_file():
            mask, source = read_mask(own, VOC.num_classes, VOC.ignore_index), own
            from_voc += 1
        elif mat.is_file():
            mask, source = read_sbd_mask(mat, loader), mat
        else:
            raise InputError(mat, f"no mask for {i}: neither SegmentationClass/{i}.png nor this SBD file")
        image = base / "JPEGImages" / f"{i}.jpg"
        if not image.is_file():
            raise InputError(image, "image of a listed mask is missing")
        h, w = image_size(image)
        if (h, w) != mask.shape:
            raise InputError(source, f"mask of {mask.shape[1]}x{mask.shape[0]} for an image of {w}x{h}")
        write_png(target / f"{i}.png", mask, VOC.palette)
    return from_voc


def prepare_coco(root: str | Path, work_dir: str | Path, splits: Sequence[str] = ("train", "val"),
                 say: Callable[[str], None] = print) -> dict:
    """Index every split and rasterise its masks into ``work_dir``'s cache; returns the counts per split."""
    from salmask.data.coco import cache_split
    from salmask.utils import dist

    counts = {}
    for split in splits:
        c = counts[split] = cache_split(root, split, work_dir)
        if dist.is_main():
            say(f"coco {split}: {c['images']} images with annotations ({c['without_annotations']} without, "
                f"left out); {c['masks_written']} masks rasterised, {c['images'] - c['masks_written']} "
                f"cached already -> {c['cache']}")
    return counts
