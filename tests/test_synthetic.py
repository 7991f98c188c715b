"""The synthetic default dataset: layout, determinism, labels, idempotence, and its failure modes."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from salmask.data.synthetic import CLASSES, META, _ignore_band, generate, read_info
from salmask.errors import InputError
from salmask.io import read_image, read_json, read_mask, write_json

SMALL = dict(image_size=48, n_train=12, n_val=8, n_sod=10)
C = len(CLASSES)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _voc(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2012"


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn")
    generate(root, seed=3, **SMALL)
    return root


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn_medium")
    generate(root, seed=1, image_size=64, n_train=90, n_val=12, n_sod=4)
    return root


def test_classes_and_meta():
    assert CLASSES[0] == "background" and 5 <= len(CLASSES) - 1 <= 8
    assert META.name == "synthetic" and META.classes == CLASSES and META.num_classes == C


def test_layout_and_counts(small):
    voc = _voc(small)
    sets = voc / "ImageSets" / "Segmentation"
    train = (sets / "train_aug.txt").read_text().split()
    assert train == (sets / "train.txt").read_text().split() and len(train) == SMALL["n_train"]
    val = (sets / "val.txt").read_text().split()
    assert len(val) == SMALL["n_val"] and not set(train) & set(val)
    for image_id in train + val:
        image = read_image(voc / "JPEGImages" / f"{image_id}.jpg")
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        assert read_mask(voc / "SegmentationClassAug" / f"{image_id}.png", C).shape == (48, 48)
    assert len(list((voc / "JPEGImages").iterdir())) == len(train) + len(val)
    n_test = round(0.2 * SMALL["n_sod"])
    for folder, n in (("SOD", SMALL["n_sod"] - n_test), ("SOD_test", n_test)):
        images = sorted(p.stem for p in (small / folder / "Images").glob("*.jpg"))
        assert len(images) == n and images == sorted(p.stem for p in (small / folder / "Masks").glob("*.png"))
        for image_id in images:
            mask = read_mask(small / folder / "Masks" / f"{image_id}.png")
            assert set(np.unique(mask).tolist()) <= {0, 255} and (mask == 255).any()
    sod_ids = {p.stem for p in small.rglob("SOD*/Images/*.jpg")}
    assert not sod_ids & set(train + val)
    assert not list(small.rglob("*.tmp"))


def test_masks_agree_with_meta_labels(small):
    meta = read_json(small / "meta.json")
    assert meta["classes"] == list(CLASSES) and meta["complete"]
    info = read_info(small)
    assert set(meta["images"]) == set(info.train_ids) | set(info.val_ids)
    for image_id, entry in meta["images"].items():
        mask = read_mask(_voc(small) / "SegmentationClassAug" / f"{image_id}.png", C)
        values = set(np.unique(mask).tolist())
        assert values <= set(range(C)) | {255}
        present = sorted(values - {0, 255})
        assert entry["class_ids"] == present == list(info.labels[image_id])
        assert entry["classes"] == [CLASSES[k] for k in present]
        assert entry["single_class"] == (len(present) == 1) == info.single_class[image_id]
        assert 255 in values  # the ignore band along object outlines


def test_ignore_band_follows_outlines():
    """A one-pixel band inside each object outline, on both sides where two classes touch."""
    label = np.zeros((10, 12), dtype=np.uint8)
    label[2:7, 1:5] = 1
    label[2:7, 5:9] = 2
    band = _ignore_band(label)
    expected = label.copy()
    for k in (1, 2):
        obj = label == k
        expected[obj & ~cv2.erode(obj.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)),
                                  borderValue=1).astype(bool)] = 255
    np.testing.assert_array_equal(band, expected)
    assert band[4, 4] == band[4, 5] == 255 and band[4, 2] == 1 and band[4, 7] == 2


def test_ignore_share_is_modest(small):
    ignore = objects = 0
    for path in (_voc(small) / "SegmentationClassAug").glob("*.png"):
        mask = read_mask(path)
        ignore += (mask == 255).sum()
        objects += (mask > 0).sum()
    assert 0.05 < ignore / objects < 0.45


def test_deterministic_by_seed(small, tmp_path):
    generate(tmp_path / "same", seed=3, **SMALL)
    assert _hashes(tmp_path / "same") == _hashes(small)
    generate(tmp_path / "other", seed=4, **SMALL)
    a, b = _hashes(small), _hashes(tmp_path / "other")
    assert a.keys() == b.keys()
    images = [k for k in a if k.endswith(".jpg")]
    assert sum(a[k] != b[k] for k in images) == len(images)


def test_single_class_fraction_and_class_coverage(medium):
    meta = read_json(medium / "meta.json")
    for split, n in (("train", 90), ("val", 12)):
        entries = [v for v in meta["images"].values() if v["split"] == split]
        assert len(entries) == n
        assert sum(v["single_class"] for v in entries) == round(0.6 * n)
        assert all(1 <= len(v["class_ids"]) <= 3 for v in entries)
        assert {k for v in entries for k in v["class_ids"]} == set(range(1, C))


def test_failure_modes_are_present(medium):
    """The CAMs' typical failures must be there: context, distractors, a camouflaged class."""
    meta = read_json(medium / "meta.json")
    images = meta["images"]
    for cls, context in (("boat", "water"), ("train", "rails")):
        with_cls = [v["context"] == context for v in images.values() if cls in v["classes"]]
        assert np.mean(with_cls) >= 0.7, f"{cls} should mostly sit on {context}"
    distracted = [i for i, v in images.items() if v["distractors"]]
    assert 0.1 <= len(distracted) / len(images) <= 0.5
    contrast: dict[str, list[float]] = {name: [] for name in CLASSES[1:]}
    for image_id, entry in images.items():
        image = read_image(_voc(medium) / "JPEGImages" / f"{image_id}.jpg").astype(np.float64)
        mask = read_mask(_voc(medium) / "SegmentationClassAug" / f"{image_id}.png")
        for k in entry["class_ids"]:
            obj = mask == k
            ring = cv2.dilate(obj.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & (mask == 0)
            if ring.sum() >= 10:
                contrast[CLASSES[k]].append(np.linalg.norm(image[obj].mean(0) - image[ring].mean(0)))
    salient = [np.median(contrast[n]) for n in ("balloon", "bird", "sheep")]
    assert np.median(contrast["lizard"]) < 0.35 * min(salient), "lizard must be camouflaged"


def test_idempotent_and_regenerates_cleanly(tmp_path):
    root = tmp_path / "ds"
    first = generate(root, seed=0, **SMALL)
    assert first.generated
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    again = generate(root, seed=0, **SMALL)
    assert not again.generated and again.train_ids == first.train_ids and again.labels == first.labels
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps

    assert generate(root, seed=0, overwrite=True, **SMALL).generated
    smaller = dict(SMALL, n_train=7)
    info = generate(root, seed=0, **smaller)
    assert info.generated and len(info.train_ids) == 7
    assert len(list((_voc(root) / "JPEGImages").glob("train_*.jpg"))) == 7  # no stale images
    meta = read_json(root / "meta.json")
    assert meta["params"]["n_train"] == 7

    write_json(root / "meta.json", dict(meta, complete=False))  # as left by a killed run
    assert generate(root, seed=0, **smaller).generated
    assert read_json(root / "meta.json")["complete"]


def test_refuses_to_clobber_foreign_folders(tmp_path):
    (tmp_path / "VOCdevkit" / "VOC2012").mkdir(parents=True)
    keep = tmp_path / "VOCdevkit" / "VOC2012" / "precious.txt"
    keep.write_text("real data")
    with pytest.raises(InputError, match="refusing"):
        generate(tmp_path, **SMALL)
    assert keep.read_text() == "real data"
    other = tmp_path / "other"
    other.mkdir()
    (other / "meta.json").write_text('{"format": "someone else"}')
    with pytest.raises(InputError, match="refusing"):
        generate(other, **SMALL)


@pytest.mark.parametrize("bad", [dict(seed=-1), dict(image_size=16), dict(n_train=3), dict(n_val=0), dict(n_sod=1),
                                 dict(single_class_fraction=1.5)])
def test_bad_parameters(tmp_path, bad):
    with pytest.raises(ValueError):
        generate(tmp_path, **dict(SMALL, **bad))
    assert not any(tmp_path.iterdir())


def test_read_info_requires_complete_dataset(tmp_path):
    with pytest.raises(InputError):
        read_info(tmp_path)
