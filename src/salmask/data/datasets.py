"""Dataset readers: image ids, image paths, image-level labels and (for evaluation only) mask paths.

All readers share :class:`ImageSet`. Training code uses ``image_path`` and ``labels``; only evaluation
calls ``mask_path``. Image-level labels come from a label file, the VOC XML annotations, or — the field's
convention for VOC/COCO — the classes present in the segmentation masks, derived once and cached.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from omegaconf import DictConfig

from salmask.data import coco
from salmask.data.ids import check_id, read_id_list
from salmask.data.meta import COCO, VOC, DatasetMeta
from salmask.data.synthetic import read_info
from salmask.errors import ConfigError, InputError
from salmask.io import read_json, read_mask, read_text, write_json

@dataclass
class ImageSet:
    """A split of a dataset. ``labels[id]`` is the sorted list of foreground class ids (1..C)."""

    meta: DatasetMeta
    ids: list[str]
    image_path: Callable[[str], Path]
    mask_path: Callable[[str], Path | None]
    labels: dict[str, list[int]] = field(default_factory=dict)
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def label_vector(self, image_id: str) -> np.ndarray:
        """Multi-hot float32 [C_fg] over the foreground classes."""
        v = np.zeros(self.meta.num_fg, dtype=np.float32)
        for c in self.labels[image_id]:
            v[c - 1] = 1.0
        return v

    def has_masks(self) -> bool:
        return bool(self.ids) and self.mask_path(self.ids[0]) is not None

    def check_files(self) -> None:
        """Fail early, naming the first absent image of the list."""
        for i in self.ids:
            p = self.image_path(i)
            if not p.is_file():
                raise InputError(p, f"image listed in the split is missing ({len(self.ids)} ids)")


def _labels_from_masks(ids: list[str], mask_path: Callable[[str], Path | None], meta: DatasetMeta,
                       cache: Path | None) -> dict[str, list[int]]:

    cached = {}
    if cache is not None and cache.is_file():
        try:
            cached = json.loads(cache.read_text())
        except json.JSONDecodeError:
            cached = {}
    out, dirty = {}, False
    for i in ids:
        if i in cached:
            out[i] = cached[i]
            continue
        p = mask_path(i)
        if p is None or not p.is_file():
            raise InputError(p or i, "no mask to derive the image-level labels from")
        m = read_mask(p, meta.num_classes, meta.ignore_index)
        out[i] = sorted(int(c) for c in np.unique(m) if 0 < c < meta.num_classes)
        dirty = True
    if cache is not None and dirty:
        write_json(cache, {**cached, **out})
    return out


def _labels_from_xml(path: Path, meta: DatasetMeta) -> list[int]:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise InputError(path, f"cannot parse annotation XML ({e})") from None
    names = {o.findtext("name", "").strip() for o in root.iter("object")}
    unknown = names - set(meta.fg_classes)
    if unknown:
        raise InputError(path, f"unknown class names {sorted(unknown)}")
    return sorted(meta.classes.index(n) for n in names)


def voc_root(root: str | Path) -> Path:
    """Accept the folder holding ``VOCdevkit/``, ``VOCdevkit/`` itself, or ``VOC2012/`` itself."""
    root = Path(root).expanduser()
    for cand in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise InputError(root, "not a VOC 2012 root (no JPEGImages/ under it, VOCdevkit/VOC2012/ or VOC2012/)")


def voc_split(root: str | Path, split: str, meta: DatasetMeta = VOC, label_cache: Path | None = None,
              need_labels: bool = True) -> ImageSet:
    """A VOC-layout split. Masks: SegmentationClassAug, else SegmentationClass; labels from masks or XML."""
    base = voc_root(root)
    ids = read_id_list(base / "ImageSets" / "Segmentation" / f"{split}.txt")
    mask_dirs = [base / "SegmentationClassAug", base / "SegmentationClass"]

    def mask_path(i: str) -> Path | None:
        for d in mask_dirs:
            if (d / f"{i}.png").is_file():
                return d / f"{i}.png"
        return None

    def image_path(i: str) -> Path:
        return base / "JPEGImages" / f"{i}.jpg"

    labels: dict[str, list[int]] = {}
    if need_labels and ids:
        if all(mask_path(i) is not None for i in ids):
            labels = _labels_from_masks(ids, mask_path, meta, label_cache)
        elif (base / "Annotations").is_dir():
            labels = {i: _labels_from_xml(base / "Annotations" / f"{i}.xml", meta) for i in ids}
        else:
            missing = next(i for i in ids if mask_path(i) is None)
            raise InputError(base / "SegmentationClassAug" / f"{missing}.png",
                             "mask missing and no Annotations/ XML to take labels from")
    return ImageSet(meta, ids, image_path, mask_path, labels, base)


COCO_MASK_DIRS = ("SegmentationClass/{split}2014", "SegmentationClass/{split}", "mask/{split}2014")


def coco_split(root: str | Path, split: str, meta: DatasetMeta = COCO, label_cache: Path | None = None,
               need_labels: bool = True, work_dir: Path | None = None) -> ImageSet:
    """COCO 2014. When ``{root}/annotations/instances_{split}2014.json`` exists: the official annotations,
    labels from them, masks rasterised into a cache under ``work_dir`` (:mod:`salmask.data.coco`).
    Otherwise VOC-style PNGs: images in ``{root}/{split}2014/`` (or ``{root}/JPEGImages/{split}/``), masks
    in ``{root}/SegmentationClass/{split}2014/`` (or ``SegmentationClass/{split}/``, ``mask/{split}2014/``),
    labels from the masks; ids from ``{root}/ImageSets/{split}.txt`` when present, else every image."""
    root = Path(root).expanduser()
    if coco.annotation_file(root, split).is_file():
        if work_dir is None:
            raise ConfigError("COCO from its JSON annotations needs a work directory for the mask cache")
        return _coco_json_split(root, split, meta, work_dir)
    img_dir = coco.image_dir(root, split)
    listing = root / "ImageSets" / f"{split}.txt"
    ids = read_id_list(listing) if listing.is_file() else sorted(p.stem for p in img_dir.glob("*.jpg"))
    mask_dir = next((root / d.format(split=split) for d in COCO_MASK_DIRS
                     if (root / d.format(split=split)).is_dir()), None)

    def mask_path(i: str) -> Path | None:
        return mask_dir / f"{i}.png" if mask_dir is not None else None

    if need_labels and mask_dir is None:
        raise InputError(root / "SegmentationClass" / f"{split}2014",
                         f"COCO mask folder not found, nor {coco.ANNOTATIONS.format(split=split)}")
    labels = _labels_from_masks(ids, mask_path, meta, label_cache) if need_labels else {}
    return ImageSet(meta, ids, lambda i: img_dir / f"{i}.jpg", mask_path, labels, root)


def _coco_json_split(root: Path, split: str, meta: DatasetMeta, work_dir: Path) -> ImageSet:

    cache = coco.CocoCache(root, split, work_dir)
    images = cache.index()["images"]
    folder = coco.image_dir(root, split)
    labels = {i: list(v["labels"]) for i, v in images.items()}
    return ImageSet(meta, list(images), lambda i: folder / images[i]["file"], cache.mask_path, labels, root)


def read_label_file(path: Path, meta: DatasetMeta) -> dict[str, list[int]]:
    """JSON ``{id: [class names or ids]}`` or text lines ``id c1 c2 ...`` (names or ids 1..C)."""

    text = read_text(path, "label file")
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        items = [(ln.split()[0], ln.split()[1:]) for ln in text.splitlines() if ln.strip()]
    else:
        if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
            raise InputError(path, "a JSON label file maps each id to a list of classes: {\"id\": [\"dog\", ...]}")
        items = list(raw.items())

    def as_id(c: object) -> int:
        if isinstance(c, bool) or not isinstance(c, (int, str)):
            raise InputError(path, f"class {c!r} is neither a name nor an id")
        if isinstance(c, int) or (isinstance(c, str) and c.isdigit() and c.isascii()):
            c = int(c)
            if not 0 < c < meta.num_classes:
                raise InputError(path, f"class id {c} outside 1..{meta.num_fg}")
            return c
        if c not in meta.classes[1:]:
            raise InputError(path, f"unknown class {c!r}")
        return meta.classes.index(c)

    return {check_id(k, path): sorted({as_id(c) for c in v}) for k, v in items}


def folder_split(images: str | Path, labels: str | Path | None, classes: list[str],
                 masks: str | Path | None = None) -> ImageSet:
    """A generic folder of images with a label file; masks optional (evaluation only)."""
    meta = DatasetMeta("folder", ("background", *classes))
    img_dir = Path(images).expanduser()
    if not img_dir.is_dir():
        raise InputError(img_dir, "image folder not found")
    files = {p.stem: p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    lab = read_label_file(Path(labels), meta) if labels else {}
    ids = sorted(lab) if lab else sorted(files)
    for i in ids:
        if i not in files:
            raise InputError(img_dir / f"{i}.jpg", "image named in the label file is missing")
    mask_dir = Path(masks).expanduser() if masks else None
    return ImageSet(meta, ids, lambda i: files[i], lambda i: mask_dir / f"{i}.png" if mask_dir else None,
                    lab, img_dir)


def synthetic_meta(root: Path) -> DatasetMeta:

    info = read_json(root / "meta.json")
    return DatasetMeta("synthetic", tuple(info["classes"]))


def build_split(cfg: DictConfig, split: str, work_dir: Path, need_labels: bool = True) -> ImageSet:
    """The split ``split`` of the dataset described by ``cfg.dataset`` (first ``max_images`` ids if set)."""
    images = _build_split(cfg, split, work_dir, need_labels)
    if cfg.dataset.max_images:
        images.ids = images.ids[:cfg.dataset.max_images]
    return images


def _build_split(cfg: DictConfig, split: str, work_dir: Path, need_labels: bool) -> ImageSet:
    d = cfg.dataset
    cache = work_dir / "labels" / f"{d.kind}_{split}.json"
    if d.kind == "voc":
        if not d.root:
            raise ConfigError("dataset.root is not set (the folder holding VOCdevkit/)")
        return voc_split(d.root, split, VOC, cache, need_labels)
    if d.kind == "coco":
        if not d.root:
            raise ConfigError("dataset.root is not set (the folder holding train2014/ and val2014/)")
        return coco_split(d.root, split, COCO, cache, need_labels, work_dir)
    if d.kind == "synthetic":

        root = Path(d.root) if d.root else work_dir / "data"
        images = voc_split(root, split, synthetic_meta(root), cache, need_labels=False)
        if need_labels:  # the generator records what it drew; no mask is read for labels
            info = read_info(root)
            images.labels = {i: sorted(int(c) for c in info.labels[i]) for i in images.ids}
        return images
    if d.kind == "folder":
        if not d.images or not d.classes:
            raise ConfigError("folder datasets need dataset.images and dataset.classes")
        return folder_split(d.images, d.labels, list(d.classes), d.masks)
    raise ConfigError(f"dataset.kind {d.kind!r} is not one of voc, coco, folder, synthetic")
