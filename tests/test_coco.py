"""COCO 2014 from its official JSON: labels, the 80-class order, rasterised masks pixel for pixel, the cache,
bad input, the other two layouts, ``salmask prepare coco`` and a quick pipeline run.

Every input is built here in COCO's own formats: polygons (several parts too), compressed RLE from
``pycocotools.mask.encode``, uncompressed column-major RLE for crowds, an image without annotations.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402

from salmask.cli import main  # noqa: E402
from salmask.config import load_config  # noqa: E402
from salmask.data import coco  # noqa: E402
from salmask.data.datasets import build_split, coco_split  # noqa: E402
from salmask.data.meta import COCO  # noqa: E402
from salmask.errors import InputError  # noqa: E402
from salmask.io import read_mask, write_png  # noqa: E402
from salmask.pipeline import run_pipeline  # noqa: E402

OFFICIAL = """1 person|2 bicycle|3 car|4 motorcycle|5 airplane|6 bus|7 train|8 truck|9 boat|10 traffic light|
11 fire hydrant|13 stop sign|14 parking meter|15 bench|16 bird|17 cat|18 dog|19 horse|20 sheep|21 cow|
22 elephant|23 bear|24 zebra|25 giraffe|27 backpack|28 umbrella|31 handbag|32 tie|33 suitcase|34 frisbee|
35 skis|36 snowboard|37 sports ball|38 kite|39 baseball bat|40 baseball glove|41 skateboard|42 surfboard|
43 tennis racket|44 bottle|46 wine glass|47 cup|48 fork|49 knife|50 spoon|51 bowl|52 banana|53 apple|
54 sandwich|55 orange|56 broccoli|57 carrot|58 hot dog|59 pizza|60 donut|61 cake|62 chair|63 couch|
64 potted plant|65 bed|67 dining table|70 toilet|72 tv|73 laptop|74 mouse|75 remote|76 keyboard|77 cell phone|
78 microwave|79 oven|80 toaster|81 sink|82 refrigerator|84 book|85 clock|86 vase|87 scissors|88 teddy bear|
89 hair drier|90 toothbrush"""
"""COCO 2014's categories (id, name) as ``instances_*2014.json`` lists them."""

CATEGORIES = [{"id": int(e.split(" ", 1)[0]), "name": e.split(" ", 1)[1], "supercategory": "x"}
              for e in OFFICIAL.replace("\n", "").split("|")]

H, W = 40, 48


def rect_poly(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    """A COCO polygon of the rectangle covering pixel columns x0..x1-1 and rows y0..y1-1."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def compressed_rle(m: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(m: np.ndarray) -> dict:
    """COCO's crowd format: run lengths over the column-major pixels, starting with a run of zeros."""
    flat = m.astype(np.uint8).flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": counts}


def blob(cy: float, cx: float, r: float, h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def name(split: str, coco_id: int) -> str:
    return f"COCO_{split}2014_{coco_id:012d}"


def write_coco(root: Path, split: str, images: list[tuple[int, int, int, list[dict]]],
               image_dir: str | None = None) -> Path:
    """Write JPEGs and ``annotations/instances_{split}2014.json`` for ``images`` = [(coco_id, h, w, anns)]."""
    folder = root / (image_dir or f"{split}2014")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(images))
    entries, anns, next_id = [], [], 1
    for coco_id, h, w, objs in images:
        fname = f"{name(split, coco_id)}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / fname)
        entries.append({"id": coco_id, "file_name": fname, "height": h, "width": w, "license": 1})
        for o in objs:
            anns.append({"id": o.get("id", next_id), "image_id": coco_id, "category_id": o["category_id"],
                         "segmentation": o["segmentation"], "iscrowd": o.get("iscrowd", 0),
                         "area": 1.0, "bbox": [0, 0, 1, 1]})
            next_id += 1
    cats = CATEGORIES[:]
    random.Random(0).shuffle(cats)  # the file's order must not matter
    path = root / "annotations" / f"instances_{split}2014.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": entries, "annotations": anns,
                                "categories": cats}))
    return path


DOG = blob(20, 22, 6)
DRIER = blob(12, 30, 8)


def official_set(root: Path) -> dict[str, np.ndarray]:
    """Four train images drawn in COCO's formats; returns the semantic masks they must give (by id)."""
    a = [{"category_id": 1, "segmentation": [rect_poly(4, 4, 40, 36)]},  # person, polygon
         {"category_id": 18, "segmentation": compressed_rle(DOG)},  # dog, RLE, inside the person
         {"category_id": 90, "segmentation": [rect_poly(0, 0, 6, 3), rect_poly(42, 36, 48, 40)]}]  # toothbrush
    crowd = np.zeros((H, W), bool)
    crowd[:, :24] = True
    b = [{"category_id": 1, "segmentation": uncompressed_rle(crowd), "iscrowd": 1},  # crowd of people
         {"category_id": 3, "segmentation": [rect_poly(16, 10, 32, 30)]},  # car, small, over both
         {"category_id": 13, "segmentation": [rect_poly(20, 0, 48, 40)]}]  # stop sign, large
    d = [{"category_id": 89, "segmentation": compressed_rle(DRIER), "iscrowd": 1}]  # only a crowd
    write_coco(root, "train", [(9, H, W, a), (25, H, W, b), (30, H, W, []), (42, H, W, d)])

    ma = np.zeros((H, W), np.uint8)
    ma[4:36, 4:40] = 1
    ma[DOG] = 17
    ma[0:3, 0:6] = 80
    ma[36:40, 42:48] = 80
    mb = np.zeros((H, W), np.uint8)
    mb[:, :24] = 255
    mb[0:40, 20:48] = 12
    mb[10:30, 16:32] = 3
    md = np.zeros((H, W), np.uint8)
    md[DRIER] = 255
    return {name("train", 9): ma, name("train", 25): mb, name("train", 42): md}


def error_lines(stderr: str) -> list[str]:
    """The CLI's error lines (the log shares stderr)."""
    return [line for line in stderr.splitlines() if line.startswith("salmask: error")]


def test_category_order_and_names():
    from salmask.data.meta import COCO_CATEGORY_IDS

    official = sorted((c["id"], c["name"]) for c in CATEGORIES)
    assert len(official) == 80 and COCO.num_classes == 81 and COCO.classes[0] == "background"
    assert list(zip(COCO_CATEGORY_IDS, COCO.fg_classes)) == official
    assert coco.LABEL_OF_CATEGORY[1] == 1 and COCO.classes[1] == "person"
    assert coco.LABEL_OF_CATEGORY[13] == 12 and COCO.classes[12] == "stop sign"  # category 12 does not exist
    assert coco.LABEL_OF_CATEGORY[90] == 80 and COCO.classes[80] == "toothbrush"


def test_labels_and_masks_pixel_for_pixel(tmp_path, caplog):
    root, work = tmp_path / "coco", tmp_path / "work"
    expected = official_set(root)
    from salmask.utils.log import logger

    logger.addHandler(caplog.handler)  # the salmask logger may not propagate (setup_logging)
    try:
        with caplog.at_level("WARNING", logger="salmask"):
            images = coco_split(root, "train", work_dir=work)
    finally:
        logger.removeHandler(caplog.handler)
    assert images.ids == sorted(expected)  # image 30 has no annotation: left out, and said so
    assert "1 of 4 images have no annotation" in caplog.text and name("train", 30) in caplog.text
    assert images.meta.classes[1:] == tuple(n for _, n in sorted((c["id"], c["name"]) for c in CATEGORIES))
    assert images.labels == {name("train", 9): [1, 17, 80], name("train", 25): [1, 3, 12],
                             name("train", 42): [79]}
    assert images.image_path(name("train", 9)) == root / "train2014" / f"{name('train', 9)}.jpg"
    assert not images.mask_path(images.ids[0]).is_file()  # nothing rasterised before it is asked for

    counts = coco.cache_split(root, "train", work)
    assert counts == {"images": 3, "without_annotations": 1, "masks_written": 3, "cache": counts["cache"]}
    for i, want in expected.items():
        got = read_mask(images.mask_path(i), 81)
        np.testing.assert_array_equal(got, want, err_msg=i)
        with Image.open(images.mask_path(i)) as im:
            assert im.mode == "P"
    assert Path(counts["cache"], "train.txt").read_text().split() == images.ids


def test_cache_is_resumable_sharded_and_follows_the_file(tmp_path, monkeypatch):
    from salmask.utils import dist

    root, work = tmp_path / "coco", tmp_path / "work"
    expected = official_set(root)
    ids = sorted(expected)
    cache = coco.CocoCache(root, "train", work)
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    monkeypatch.setattr(dist, "rank", lambda: 1)
    assert cache.rasterise(ids) == 1  # rank 1 of 2 draws ids[1::2] only
    assert [cache.mask_path(i).is_file() for i in ids] == [False, True, False]
    monkeypatch.undo()

    assert coco.cache_split(root, "train", work)["masks_written"] == 2  # the rest: resumed
    stamp = {i: cache.mask_path(i).stat().st_mtime_ns for i in ids}
    cache.mask_path(ids[0]).unlink()
    assert coco.cache_split(root, "train", work)["masks_written"] == 1
    assert all(cache.mask_path(i).stat().st_mtime_ns == stamp[i] for i in ids[1:])

    old = cache.dir
    text = (root / "annotations" / "instances_train2014.json").read_text()
    data = json.loads(text)
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 18]  # drop the dog
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(data))
    counts = coco.cache_split(root, "train", work)
    assert counts["masks_written"] == 3 and Path(counts["cache"]) != old and not old.exists()
    fresh = coco_split(root, "train", work_dir=work)
    assert fresh.labels[name("train", 9)] == [1, 80]
    assert 17 not in read_mask(fresh.mask_path(name("train", 9)))


@pytest.mark.parametrize("content, problem", [
    ("[1, 2]", "top level is not a JSON object"),
    ('{"images": [], "annotations": []}', "no 'categories' list"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "aeroplane"}]}',
     "categories are not COCO's 80"),
    ("{not json", "invalid JSON"),
])
def test_a_json_not_in_coco_format_is_one_line_naming_it(tmp_path, capsys, content, problem):
    path = tmp_path / "coco" / "annotations" / "instances_train2014.json"
    (tmp_path / "coco" / "train2014").mkdir(parents=True)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert main(["prepare", "coco", "--root", str(tmp_path / "coco"), "--work-dir", str(tmp_path / "w"),
                 "--splits", "train"]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith(f"salmask: error: {path}: ") and problem in err[0]
    assert not list((tmp_path / "w").rglob("index.json"))


def test_bad_annotations_are_named(tmp_path):
    root = tmp_path / "coco"
    path = write_coco(root, "train", [(1, H, W, [{"category_id": 12, "segmentation": [rect_poly(0, 0, 4, 4)]}])])
    with pytest.raises(InputError, match="needs the image_id of a listed image, a COCO category_id") as e:
        coco_split(root, "train", work_dir=tmp_path / "w")
    assert e.value.path == str(path)
    write_coco(root, "val", [(1, H, W, [{"category_id": 1, "segmentation": {"size": [4, 4], "counts": [0, 16]}}])])
    with pytest.raises(InputError, match="segmentation of 4x4 for an image of 48x40"):
        coco.cache_split(root, "val", tmp_path / "w")


def test_an_image_missing_on_disk_is_named_and_nothing_is_trusted(tmp_path, capsys):
    root, work = tmp_path / "coco", tmp_path / "work"
    official_set(root)
    missing = root / "train2014" / f"{name('train', 25)}.jpg"
    missing.unlink()
    assert main(["prepare", "coco", "--root", str(root), "--work-dir", str(work), "--splits", "train"]) == 2
    assert error_lines(capsys.readouterr().err) == [f"salmask: error: {missing}: image listed in instances_train2014.json is missing on disk"]
    assert not list(work.rglob("index.json")) and not list(work.rglob("*.png"))
    official_set(root)  # the image is back: the same command completes
    assert main(["prepare", "coco", "--root", str(root), "--work-dir", str(work), "--splits", "train"]) == 0
    assert "3 images with annotations (1 without, left out); 3 masks rasterised" in capsys.readouterr().out


@pytest.mark.parametrize("layout", ["voc_style", "wsss"])
def test_png_layouts_keep_working(tmp_path, layout):
    """``{split}2014/`` + ``SegmentationClass/{split}2014/``, and ``JPEGImages/{split}/`` +
    ``SegmentationClass/{split}/`` (the layout most WSSS code uses); labels from the masks."""
    root = tmp_path / "coco"
    img_dir, mask_dir = {"voc_style": ("train2014", "SegmentationClass/train2014"),
                         "wsss": ("JPEGImages/train", "SegmentationClass/train")}[layout]
    (root / img_dir).mkdir(parents=True)
    masks = {}
    for k, classes in enumerate(([1, 80], [12], [])):
        m = np.zeros((H, W), np.uint8)
        for j, c in enumerate(classes):
            m[j * 10:j * 10 + 8, 5:20] = c
        m[-1] = 255
        i = name("train", k + 1)
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / img_dir / f"{i}.jpg")
        write_png(root / mask_dir / f"{i}.png", m)
        masks[i] = (classes, m)
    images = coco_split(root, "train", label_cache=tmp_path / "labels.json", work_dir=tmp_path / "w")
    assert images.ids == sorted(masks)
    for i, (classes, m) in masks.items():
        assert images.labels[i] == classes
        assert images.image_path(i) == root / img_dir / f"{i}.jpg"
        np.testing.assert_array_equal(read_mask(images.mask_path(i)), m)
    assert not (tmp_path / "w").exists()  # no JSON: no cache


def e2e_set(root: Path, split: str, n: int, seed: int) -> None:
    """``n`` 64x64 images, each with one or two of three classes as polygons or RLE, one crowd region."""
    rng = np.random.default_rng(seed)
    images = []
    for k in range(n):
        objs = []
        for c in rng.choice([1, 18, 62], size=1 + k % 2, replace=False):
            x0, y0 = (int(v) for v in rng.integers(0, 28, 2))
            if k % 3 == 0:
                m = np.zeros((64, 64), bool)
                m[y0:y0 + 30, x0:x0 + 30] = True
                objs.append({"category_id": int(c), "segmentation": compressed_rle(m)})
            else:
                objs.append({"category_id": int(c), "segmentation": [rect_poly(x0, y0, x0 + 32, y0 + 32)]})
        if k == 1:
            objs.append({"category_id": 1, "segmentation": uncompressed_rle(blob(50, 50, 8, 64, 64)), "iscrowd": 1})
        images.append((k + 1, 64, 64, objs))
    write_coco(root, split, images)


@pytest.mark.slow
def test_quick_pipeline_on_coco_json(tmp_path, capsys):
    root, work = tmp_path / "coco", tmp_path / "work"
    e2e_set(root, "train", 6, 0)
    e2e_set(root, "val", 3, 1)
    assert main(["prepare", "coco", "--root", str(root), "--work-dir", str(work)]) == 0
    assert "coco val: 3 images with annotations (0 without, left out); 3 masks rasterised" in capsys.readouterr().out
    small = [
        f"work_dir={work}", f"dataset.root={root}", "num_workers=0",
        "cam.backbone=resnet18", "cam.pretrained=false", "cam.epochs=1", "cam.batch_size=3", "cam.crop=64",
        "cam.resize_long=[56,72]", "cam.scales=[1.0]", "saliency.source=classic",
        "boundary.backbone=resnet18", "boundary.init=cam", "boundary.epochs=1", "boundary.batch_size=3",
        "boundary.crop=64", "seg.backbone=resnet18", "seg.pretrained=false", "seg.batch_size=2", "seg.crop=64",
        "seg.iterations=2", "seg.scales=[1.0]", "select.sweep=false",
    ]
    cfg = load_config("coco", small)
    results = run_pipeline(cfg)
    assert results["coco_masks"]["splits"]["train"]["masks_written"] == 0  # prepared: no stall
    for st in ("train_cam", "make_cam", "eval_cam", "make_pseudo", "eval_pseudo", "select", "train_seg",
               "infer_seg", "eval_seg"):
        assert (work / st / "manifest.json").is_file(), st
    train = build_split(cfg, "train", work)
    assert len(train.ids) == 6 and len(list((work / "make_pseudo").glob("*.png"))) == 6
    for key in ("eval_cam", "eval_pseudo", "eval_seg"):
        m = results[key]["metrics"]
        assert 0.0 <= m["mIoU"] <= 100.0 and np.isfinite(m["mIoU"])
        assert list(m["per_class"]) == list(COCO.classes)
    assert read_mask(work / "infer_seg" / "val" / f"{name('val', 1)}.png").shape == (64, 64)


def test_bench_coco_rows():
    from salmask.benchmarks import bench_coco

    rows = bench_coco.run(images=3, repeats=1)
    assert [r["images"] for r in rows] == [3, 3, 3]
    assert rows[0]["max_abs_diff"] == 0.0  # rasterised masks and their PNGs agree pixel for pixel
    assert all(r["images_per_s"] > 0 and r["ref_images_per_s"] > 0 for r in rows)
