"""COCO 2014 from its official instance annotations, ``{root}/annotations/instances_{split}2014.json``.

Image-level labels are the categories of an image's annotations (crowd ones included: those objects are
in the picture). The 80 categories map to contiguous ids 1..80 in increasing COCO category id
(:data:`salmask.data.meta.COCO_CATEGORY_IDS`). Images without any annotation are left out of the split
(as the field's COCO lists do: 82,081 of 82,783 train images) and logged.

Evaluation masks are rasterised once into ``{work_dir}/cache/coco/{split}2014-{key}/masks/{id}.png``,
where ``key`` fingerprints the annotation file (path, size, modification time) and the rasterisation
rule, so a changed file gets a fresh cache and a killed run keeps the masks it finished. The index
(ids, labels, file names) sits beside them in ``index.json``; both are written atomically.

Overlap rule (instances overlap; a semantic mask holds one label per pixel): crowd regions are drawn
first, as ignore (255); then the other annotations in decreasing area, so where two overlap the smaller
one wins — small objects in front of large ones stay visible — and an individually annotated object
takes its pixels back from a crowd region around it. Equal areas: the higher annotation id wins.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from salmask.data.ids import check_id
from salmask.data.meta import COCO, COCO_CATEGORY_IDS
from salmask.errors import InputError
from salmask.io import read_json, write_bytes_atomic, write_json, write_png
from salmask.utils import dist
from salmask.utils.log import logger, progress

RULE = 1
"""Version of the rasterisation rule above; part of the cache key, so changing the rule re-rasterises."""

ANNOTATIONS = "annotations/instances_{split}2014.json"
IMAGE_DIRS = ("{split}2014", "JPEGImages/{split}", "JPEGImages/{split}2014")
"""Where a split's images may be: the official layout, then the one most WSSS code uses."""

LABEL_OF_CATEGORY = {cid: k + 1 for k, cid in enumerate(COCO_CATEGORY_IDS)}


def annotation_file(root: str | Path, split: str) -> Path:
    return Path(root).expanduser() / ANNOTATIONS.format(split=split)


def image_dir(root: str | Path, split: str) -> Path:
    """The first of :data:`IMAGE_DIRS` that exists under ``root``."""
    root = Path(root).expanduser()
    for pattern in IMAGE_DIRS:
        if (root / pattern.format(split=split)).is_dir():
            return root / pattern.format(split=split)
    tried = ", ".join(p.format(split=split) + "/" for p in IMAGE_DIRS)
    raise InputError(root / f"{split}2014", f"COCO image folder not found (looked for {tried} under the root)")


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."


def validate(data: Any, path: Path) -> None:
    """Raise :class:`InputError` naming ``path`` unless ``data`` is a COCO instances file with COCO's 80
    categories, images with id/file_name/height/width, and annotations pointing at both."""
    if not isinstance(data, dict):
        raise InputError(path, "not a COCO instances file (the top level is not a JSON object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(path, f"not a COCO instances file (no {key!r} list)")
    try:
        cats = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
    except (KeyError, TypeError, ValueError):
        raise InputError(path, "not a COCO instances file (a category lacks id or name)") from None
    expected = list(zip(COCO_CATEGORY_IDS, COCO.fg_classes))
    if cats != expected:
        diff = next(((a, b) for a, b in zip(cats, expected) if a != b), (len(cats), len(expected)))
        raise InputError(path, f"categories are not COCO's 80 (found {diff[0]}, expected {diff[1]})")
    image_ids = set()
    for im in data["images"]:
        ok = (isinstance(im, dict) and isinstance(im.get("id"), int) and isinstance(im.get("file_name"), str)
              and all(isinstance(im.get(k), int) and im[k] > 0 for k in ("height", "width")))
        if not ok:
            raise InputError(path, f"image entry {_short(im)} lacks an integer id, file_name, height or width")
        image_ids.add(im["id"])
    for a in data["annotations"]:
        ok = (isinstance(a, dict) and isinstance(a.get("image_id"), int) and a["image_id"] in image_ids
              and isinstance(a.get("category_id"), int) and a["category_id"] in LABEL_OF_CATEGORY
              and isinstance(a.get("segmentation"), (list, dict)))
        if not ok:
            raise InputError(path, f"annotation {_short(a)} needs the image_id of a listed image, "
                                   f"a COCO category_id and a segmentation")


def load_annotations(path: Path):
    """A validated ``pycocotools.coco.COCO`` of the file at ``path`` (its prints silenced)."""
    from pycocotools.coco import COCO as CocoApi

    if not path.is_file():
        raise InputError(path, "COCO annotation file not found")
    data = read_json(path)
    validate(data, path)
    api = CocoApi()
    api.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    return api


def semantic_mask(api, image_id: int, source: str | Path = "") -> np.ndarray:
    """The semantic mask uint8 [H, W] of COCO image ``image_id``: 0 background, 1..80 classes, 255 crowd,
    drawn by the overlap rule of the module docstring. ``source`` names the file in errors."""
    from pycocotools import mask as mask_utils

    info = api.imgs[image_id]
    h, w = info["height"], info["width"]
    shapes = []
    for a in api.imgToAnns.get(image_id, []):
        try:
            rle = api.annToRLE(a)
            area = float(mask_utils.area(rle))
        except Exception as e:  # pycocotools raises bare Exceptions, TypeErrors, ... on bad segmentations
            raise InputError(source, f"annotation {a.get('id')} of image {image_id}: unreadable "
                                     f"segmentation ({e})") from None
        crowd = bool(a.get("iscrowd", 0))
        shapes.append((0 if crowd else 1, -area, int(a.get("id", 0)), rle,
                       255 if crowd else LABEL_OF_CATEGORY[a["category_id"]]))
    out = np.zeros((h, w), dtype=np.uint8)
    for _, _, ann_id, rle, value in sorted(shapes, key=lambda s: s[:3]):
        m = mask_utils.decode(rle)
        if m.shape != (h, w):
            raise InputError(source, f"annotation {ann_id} of image {image_id}: segmentation of "
                                     f"{m.shape[1]}x{m.shape[0]} for an image of {w}x{h}")
        out[m.astype(bool)] = value
    return out


@dataclass
class CocoCache:
    """The index and rasterised masks of one split, under ``{work_dir}/cache/coco/``."""

    root: Path
    split: str
    work_dir: Path
    _api: Any = field(default=None, init=False, repr=False)
    _index: dict | None = field(default=None, init=False, repr=False)

    @property
    def annotations(self) -> Path:
        return annotation_file(self.root, self.split)

    @cached_property
    def key(self) -> str:
        """Fingerprint of the annotation file and of :data:`RULE` (10 hex digits)."""
        path = self.annotations
        if not path.is_file():
            raise InputError(path, "COCO annotation file not found")
        st = path.stat()
        ident = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, RULE])
        return hashlib.sha1(ident.encode()).hexdigest()[:10]

    @cached_property
    def dir(self) -> Path:
        return self.work_dir / "cache" / "coco" / f"{self.split}2014-{self.key}"

    def mask_path(self, image_id: str) -> Path:
        return self.dir / "masks" / f"{image_id}.png"

    def api(self):
        if self._api is None:
            logger.info("coco %s: reading %s", self.split, self.annotations)
            self._api = load_annotations(self.annotations)
        return self._api

    def index(self) -> dict:
        """``{"images": {id: {"coco_id", "file", "labels"}}, "without_annotations": [ids], ...}``, read from
        the cache when it matches the annotation file, else built (and written) from it."""
        if self._index is None:
            path = self.dir / "index.json"
            try:
                cached = read_json(path) if path.is_file() else None
            except InputError:
                cached = None
            self._index = cached if cached and cached.get("key") == self.key else self._build_index()
        return self._index

    def _build_index(self) -> dict:
        api, source = self.api(), self.annotations
        folder = image_dir(self.root, self.split)
        images: dict[str, dict] = {}
        empty: list[str] = []
        for coco_id, info in api.imgs.items():
            name = info["file_name"]
            stem = Path(name).stem
            if Path(name).name != name or not stem:
                raise InputError(source, f"image {coco_id}: file_name {name!r} is not a plain file name")
            check_id(stem, source)
            anns = api.imgToAnns.get(coco_id, [])
            if not anns:
                empty.append(stem)
                continue
            if not (folder / name).is_file():
                raise InputError(folder / name, f"image listed in {source.name} is missing on disk")
            images[stem] = {"coco_id": coco_id, "file": name,
                            "labels": sorted({LABEL_OF_CATEGORY[a["category_id"]] for a in anns})}
        if empty:
            logger.warning("coco %s: %d of %d images have no annotation and are left out of the split (e.g. %s)",
                           self.split, len(empty), len(api.imgs), sorted(empty)[0])
        ids = sorted(images)
        index = {"key": self.key, "annotations": str(source), "rule": RULE,
                 "images": {i: images[i] for i in ids}, "without_annotations": sorted(empty)}
        write_json(self.dir / "index.json", index)
        write_bytes_atomic(self.dir / f"{self.split}.txt", "".join(f"{i}\n" for i in ids).encode())
        return index

    def rasterise(self, ids: Sequence[str]) -> int:
        """Write the masks of this rank's share of ``ids`` that are not cached yet; how many it wrote."""
        from salmask.stage_utils import todo

        left = todo(ids, self.mask_path)
        if not left:
            return 0
        images, api = self.index()["images"], self.api()
        for i in progress(left, f"coco {self.split} masks"):
            write_png(self.mask_path(i), semantic_mask(api, images[i]["coco_id"], self.annotations), COCO.palette)
        return len(left)


def cache_split(root: str | Path, split: str, work_dir: str | Path, limit: int | None = None,
                masks: bool = True) -> dict:
    """Index ``split`` and (``masks``) rasterise its masks, first ``limit`` ids if set. Every rank must call
    it: each indexes on its own (identical atomic writes) and rasterises its share. Returns counts."""
    cache = CocoCache(Path(root).expanduser(), split, Path(work_dir).expanduser())
    index = cache.index()
    ids = list(index["images"])[:limit] if limit else list(index["images"])
    cached = sum(cache.mask_path(i).is_file() for i in ids) if masks else 0
    dist.barrier()  # every rank counted before any writes
    if masks:
        cache.rasterise(ids)
    dist.barrier()
    if dist.is_main():  # caches of older versions of the annotation file
        for old in cache.dir.parent.glob(f"{split}2014-*"):
            if old != cache.dir and old.is_dir():
                shutil.rmtree(old)
    return {"images": len(ids), "without_annotations": len(index["without_annotations"]),
            "masks_written": len(ids) - cached if masks else 0, "cache": str(cache.dir)}
