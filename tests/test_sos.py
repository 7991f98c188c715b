"""Salient Object Selector (salmask.select.sos) and its threshold sweep (salmask.select.sweep)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from salmask.data.meta import VOC_CLASSES, voc_palette
from salmask.errors import ConfigError, InputError
from salmask.io import read_mask, save_npz, write_png
from salmask.metrics.confusion import score_folders
from salmask.select.sos import (SelectorConfig, alpha_star, class_salience, format_report, fuse, load_labels,
                                overlap, select_folder)
from salmask.select.sweep import format_sweep_table, plot_sweep, sweep

C = 4  # background + classes 1..3
NAMES = ("background", "cat", "dog", "chair")
VOC_MINI = Path(__file__).resolve().parents[2] / "shared/data/voc-mini"


def box(y0, y1, x0, x1, value=1, shape=(8, 8), dtype=np.uint8):
    a = np.zeros(shape, dtype=dtype)
    a[y0:y1, x0:x1] = value
    return a


def write_sal(path: Path, sal01: np.ndarray) -> None:
    write_png(path, np.round(sal01 * 255).astype(np.uint8))


@pytest.fixture
def folders(tmp_path):
    """Four images: two single-class (good/bad saliency), one multi-class, one background-only.

    ``a``: cat pseudo mask rows 2..5 (one ignore pixel), GT = saliency = rows 1..6 (o = 23/36)
    ``b``: dog pseudo mask at the top-left, saliency at the bottom-right (o = 0)
    ``m``: cat + dog, no saliency map at all (multi-class needs none)
    ``z``: background only
    """
    d = {k: tmp_path / k for k in ("pseudo", "sal", "gt", "out")}
    for p in d.values():
        p.mkdir()
    pal = voc_palette()
    a = box(2, 6, 1, 7, 1)
    a[2, 1] = 255
    write_png(d["pseudo"] / "a.png", a, pal)
    write_sal(d["sal"] / "a.png", box(1, 7, 1, 7, 1.0, dtype=np.float32))
    write_png(d["gt"] / "a.png", box(1, 7, 1, 7, 1), pal)
    write_png(d["pseudo"] / "b.png", box(0, 3, 0, 3, 2), pal)
    write_sal(d["sal"] / "b.png", box(5, 8, 5, 8, 1.0, dtype=np.float32))
    write_png(d["gt"] / "b.png", box(0, 3, 0, 3, 2), pal)
    m = box(0, 3, 0, 3, 1) + box(5, 8, 5, 8, 2)
    write_png(d["pseudo"] / "m.png", m, pal)
    write_png(d["gt"] / "m.png", m, pal)
    write_png(d["pseudo"] / "z.png", np.zeros((8, 8), np.uint8), pal)
    return d


def masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: read_mask(p) for p in sorted(folder.glob("*.png"))}


def test_never_replace_gives_identical_output(folders):
    report = select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C,
                           config=SelectorConfig(t0=1.0, t1=0.0))
    assert report["replaced"] == 0 and report["images"] == 4 and report["single_class"] == 2
    for name in ("a", "b", "m", "z"):
        out, src = folders["out"] / f"{name}.png", folders["pseudo"] / f"{name}.png"
        assert out.read_bytes() == src.read_bytes()


def test_zero_thresholds_replace_every_overlapped_single_class_mask(folders):
    report = select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C,
                           config=SelectorConfig(t0=0.0, t1=0.0))
    out, src = masks(folders["out"]), masks(folders["pseudo"])
    assert report["replaced_ids"] == ["a"]
    np.testing.assert_array_equal(out["a"], box(1, 7, 1, 7, 1))  # saliency as cat, no 255 left
    for name in ("b", "m", "z"):  # b: no overlap; m: two classes; z: no class
        np.testing.assert_array_equal(out[name], src[name])
    assert Image.open(folders["out"] / "a.png").mode == "P"
    assert report["multi_class"] == 1 and report["no_class"] == 1
    assert report["per_class"]["1"]["replaced"] == 1 and report["per_class"]["2"]["replaced"] == 0


def test_overlap_ignores_ignore_pixels():
    mask = box(0, 2, 0, 4, 1)
    mask[0, 0] = 255
    sal = box(0, 2, 0, 4, True, dtype=bool)
    assert overlap(sal, mask) == pytest.approx(7 / 8)
    assert overlap(np.zeros((8, 8), bool), np.zeros((8, 8), np.uint8)) == 0.0


def test_labels_from_file_override_the_masks(folders, tmp_path):
    # a's mask holds only cat, but the labels say cat + dog: it is multi-class and passes through
    json_file = tmp_path / "labels.json"
    json_file.write_text(json.dumps({"a": ["cat", 2], "b": [2], "m": [1, 2], "z": []}))
    txt_file = tmp_path / "labels.txt"
    txt_file.write_text("# id classes\na cat dog\nb 2\n\nm 1 2\nz\n")
    for f in (json_file, txt_file):
        assert load_labels(f, num_classes=C, class_names=NAMES) == {
            "a": {1, 2}, "b": {2}, "m": {1, 2}, "z": frozenset()}
        report = select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C,
                               labels=f, class_names=NAMES, config=SelectorConfig(t0=0.0, t1=0.0))
        assert report["replaced"] == 0 and report["multi_class"] == 2 and report["single_class"] == 1
        assert "cat" in report["per_class"]
    from_masks = select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C,
                               config=SelectorConfig(t0=0.0, t1=0.0))
    assert from_masks["replaced"] == 1 and from_masks["single_class"] == 2


def test_bad_labels_are_named(folders, tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("a 1\nb 2\n")
    with pytest.raises(InputError, match="no image-level labels for image 'm'"):
        select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C, labels=f)
    f.write_text("a horse\n")
    with pytest.raises(InputError, match="unknown class 'horse'"):
        load_labels(f, num_classes=C, class_names=NAMES)
    f.write_text("a 0\n")
    with pytest.raises(InputError, match="not a foreground class"):
        load_labels(f, num_classes=C)
    f.write_text("a 1\na 2\n")
    with pytest.raises(InputError, match="listed twice"):
        load_labels(f, num_classes=C)


def test_missing_saliency_is_an_error_unless_allowed(folders):
    (folders["sal"] / "a.png").unlink()
    with pytest.raises(InputError, match=r"a\.png: saliency map not found"):
        select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C)
    report = select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C,
                           config=SelectorConfig(t0=0.0, t1=0.0, allow_missing=True))
    assert report["missing_saliency"] == 1 and report["missing_ids"] == ["a"] and report["replaced"] == 0
    assert (folders["out"] / "a.png").read_bytes() == (folders["pseudo"] / "a.png").read_bytes()


def test_size_mismatch_names_both_files(folders):
    write_sal(folders["sal"] / "a.png", np.ones((8, 9), np.float32))
    with pytest.raises(InputError) as e:
        select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C)
    assert str(folders["sal"] / "a.png") in str(e.value) and str(folders["pseudo"] / "a.png") in str(e.value)


def test_empty_saliency_is_skipped(folders):
    write_sal(folders["sal"] / "a.png", np.full((8, 8), 0.4, np.float32))  # nothing above 0.5
    report = select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C,
                           config=SelectorConfig(t0=0.0, t1=0.0))
    assert report["empty_saliency"] == 1 and report["replaced"] == 0
    np.testing.assert_array_equal(read_mask(folders["out"] / "a.png"), read_mask(folders["pseudo"] / "a.png"))
    # the empty map still counts towards its class's salience: RMS 0.4 (as 102/255) inside the mask
    assert report["per_class"]["1"]["n"] == pytest.approx(0.4, rel=1e-6)
    assert report["per_class"]["2"]["n"] == 0.0  # b's saliency lies outside its mask
    assert report["per_class"]["3"]["n"] is None and report["per_class"]["3"]["n_star"] is None


def salience_folders(tmp_path):
    """cat: two images, saliency 1.0 on 2 fg pixels and 0.2 (51/255) on 2; dog: 133/255 on 4."""
    d = {k: tmp_path / k for k in ("pseudo", "sal", "out")}
    for p in d.values():
        p.mkdir()
    write_png(d["pseudo"] / "c1.png", box(0, 1, 0, 2, 1))
    write_sal(d["sal"] / "c1.png",
              box(0, 1, 0, 2, 1.0, dtype=np.float32) + box(4, 8, 4, 8, 0.8, dtype=np.float32))
    write_png(d["pseudo"] / "c2.png", box(0, 1, 0, 2, 1))
    write_sal(d["sal"] / "c2.png", box(0, 1, 0, 2, 51 / 255, dtype=np.float32))
    dog = box(0, 2, 0, 2, 2)
    dog[3, 3] = 255  # ignore is not foreground: its saliency does not count
    write_png(d["pseudo"] / "d1.png", dog)
    # dog saliency: 133/255 on rows 0..2 (the 4 mask pixels and 2 below) and 1.0 on the ignore pixel
    sal = box(0, 3, 0, 2, 133 / 255, dtype=np.float32)
    sal[3, 3] = 1.0
    write_sal(d["sal"] / "d1.png", sal)
    return d


def test_class_salience_hand_checked(tmp_path):
    d = salience_folders(tmp_path)
    n_cat = math.sqrt((1 + 1 + 0.2 ** 2 + 0.2 ** 2) / 4)
    n_dog = 133 / 255  # 4 pixels, the ignore pixel left out
    got = class_salience(d["pseudo"], d["sal"], num_classes=C)
    assert got == pytest.approx({1: 1.0, 2: n_dog / n_cat}, rel=1e-5)
    assert 0.5 < got[2] < 0.75  # dog is not salient at the default eta


def test_salience_decides_between_t0_and_t0_plus_t1(tmp_path):
    d = salience_folders(tmp_path)
    # dog image: o = 4 / 7 (fg 4 px; binarised saliency 6 px plus the ignore pixel) ~ 0.571, in (t0, t0 + t1]
    cfg = SelectorConfig(t0=0.4, t1=0.2)
    report = select_folder(d["pseudo"], d["sal"], d["out"], num_classes=C, config=cfg)
    assert report["per_class"]["2"]["salient"] is False and "d1" not in report["replaced_ids"]
    report = select_folder(d["pseudo"], d["sal"], d["out"], num_classes=C,
                           config=SelectorConfig(t0=0.4, t1=0.2, salient_classes=(2,)))
    assert report["per_class"]["2"]["salient"] is True and "d1" in report["replaced_ids"]
    assert report["per_class"]["1"]["salient"] is False
    report = select_folder(d["pseudo"], d["sal"], d["out"], num_classes=C,
                           config=SelectorConfig(t0=0.4, t1=0.2, eta=0.5))
    assert report["per_class"]["2"]["salient"] is True and "d1" in report["replaced_ids"]


def test_alpha_star_gating_and_clipping():
    assert alpha_star(0.3, 0.5, tau=0.9) == 0.0
    assert alpha_star(0.3, 0.5, tau=0.75) == pytest.approx(0.8)
    assert alpha_star(0.7, 0.9, tau=0.5) == 1.0
    assert alpha_star(0.7, None, tau=0.5) == pytest.approx(0.7)
    mask = np.array([[1, 1, 0, 255]], np.uint8)
    sal = np.array([[0.0, 1.0, 0.9, 0.6]], np.float32)
    # A = (1, 1, 0, 0.5); at α = 0.3 fused = (0.7, 1, 0.27, 0.53)
    np.testing.assert_array_equal(fuse(mask, sal, 3, 0.3), [[3, 3, 0, 3]])
    # at α = 0.6 fused = (0.4, 1, 0.54, 0.56)
    np.testing.assert_array_equal(fuse(mask, sal, 3, 0.6), [[0, 3, 3, 3]])
    cam = np.array([[0.2, 0.9, 0.25, 0.1]], np.float32)
    sal = np.array([[0.0, 1.0, 0.75, 0.6]], np.float32)
    # α = 0.5: (0.1, 0.95, 0.5 -> a tie goes to background, 0.35)
    np.testing.assert_array_equal(fuse(mask, sal, 3, 0.5, cam), [[0, 3, 0, 0]])


def test_alpha_mode_on_folders(folders, tmp_path):
    soft = tmp_path / "soft"
    soft.mkdir()
    scores = np.zeros((2, 8, 8), np.float32)
    scores[1] = box(2, 6, 1, 7, 0.9, dtype=np.float32)
    save_npz(soft / "a.npz", keys=np.array([2, 1]), scores=scores)
    save_npz(soft / "b.npz", keys=np.array([2]), scores=np.zeros((1, 8, 8), np.float32))
    # a: o = 23/36, n*_cat = 1 -> α* = 1.64 -> 1 (all saliency); b: o = 0, n*_dog = 0 -> α* = 0
    report = select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C,
                           soft_dir=soft, gt_dir=folders["gt"],
                           config=SelectorConfig(mode="alpha", tau=1.0))
    assert report["replaced_ids"] == ["a"]
    np.testing.assert_array_equal(read_mask(folders["out"] / "a.png"), box(1, 7, 1, 7, 1))
    assert report["metrics"]["all"]["after"]["mIoU"] == pytest.approx(100.0)
    gated = select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C,
                          soft_dir=soft, config=SelectorConfig(mode="alpha", tau=1.7))
    assert gated["replaced"] == 0
    assert (folders["out"] / "a.png").read_bytes() == (folders["pseudo"] / "a.png").read_bytes()
    save_npz(soft / "a.npz", keys=np.array([2]), scores=scores[:1])
    with pytest.raises(InputError, match="no scores for class 1"):
        select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C, soft_dir=soft,
                      config=SelectorConfig(mode="alpha", tau=1.0))
    (soft / "a.npz").unlink()
    with pytest.raises(InputError, match="soft map not found"):
        select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C, soft_dir=soft,
                      config=SelectorConfig(mode="alpha"))


def test_report_metrics_improve_when_gt_is_the_saliency(folders):
    # b's saliency is wrong but o = 0 keeps it; a's is right and o = 0.66 > 0.4 replaces it
    report = select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C,
                           gt_dir=folders["gt"], class_names=NAMES)
    single, everything = report["metrics"]["single_class"], report["metrics"]["all"]
    assert report["replaced_ids"] == ["a"] and single["images"] == 2 and everything["images"] == 3
    assert single["after"]["mIoU"] == pytest.approx(100.0)
    assert single["before"]["mIoU"] < single["after"]["mIoU"]
    assert everything["before"]["mIoU"] < everything["after"]["mIoU"]
    cat = report["per_class"]["cat"]
    assert cat["iou_before"] < cat["iou_after"] == pytest.approx(100.0)
    assert cat["miou_before"] < cat["miou_after"] == pytest.approx(100.0)
    # the "before" metrics are those of the input folder, the "after" those of the written one
    before = score_folders(folders["pseudo"], folders["gt"], C)
    after = score_folders(folders["out"], folders["gt"], C)
    for k in ("Acc", "Acc_class", "mIoU", "fwIoU"):
        assert everything["before"][k] == pytest.approx(before[k])
        assert everything["after"][k] == pytest.approx(after[k])
    text = format_report(report)
    assert "cat" in text and "single_class (2 images) after" in text
    json.dumps(report)


def test_sweep_endpoints_and_plot(folders, tmp_path):
    rows = sweep(folders["pseudo"], folders["sal"], folders["gt"], num_classes=C)
    assert [r["alpha"] for r in rows][0] == 0.0 and rows[-1]["alpha"] == 1.0
    assert rows[-1]["replaced"] == 0 and rows[0]["replaced"] == 1
    base = score_folders(folders["pseudo"], folders["gt"], C)
    select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C,
                  config=SelectorConfig(t0=0.0, t1=0.0))
    always = score_folders(folders["out"], folders["gt"], C)
    for k in ("Acc", "Acc_class", "mIoU", "fwIoU"):
        assert rows[-1]["all"][k] == pytest.approx(base[k])
        assert rows[0]["all"][k] == pytest.approx(always[k])
    assert rows[0]["single_class"]["mIoU"] > rows[-1]["single_class"]["mIoU"]
    table = format_sweep_table(rows)
    assert len(table.splitlines()) == 2 + len(rows) and "single-class (2 images)" in table
    png = plot_sweep(rows, tmp_path / "plots" / "sweep.png")
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width > 100


def test_resume_and_guards(folders):
    (folders["out"] / "a.png").write_bytes((folders["pseudo"] / "z.png").read_bytes())
    select_folder(folders["pseudo"], folders["sal"], folders["out"], num_classes=C, overwrite=False)
    assert (folders["out"] / "a.png").read_bytes() == (folders["pseudo"] / "z.png").read_bytes()
    assert sorted(p.name for p in folders["out"].iterdir()) == ["a.png", "b.png", "m.png", "z.png"]
    with pytest.raises(InputError, match="must differ"):
        select_folder(folders["pseudo"], folders["sal"], folders["pseudo"], num_classes=C)
    with pytest.raises(ConfigError):
        SelectorConfig(mode="soft")
    with pytest.raises(ConfigError):
        SelectorConfig(t0=float("nan"))


@pytest.mark.skipif(not VOC_MINI.is_dir(), reason="voc-mini not available")
def test_voc_mini_with_oracle_saliency(tmp_path):
    """Real masks: pseudo = GT eroded (ignore as background), saliency = GT foreground."""
    from scipy.ndimage import binary_erosion

    voc = VOC_MINI / "VOCdevkit/VOC2012"
    ids = (voc / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    pseudo, sal = tmp_path / "pseudo", tmp_path / "sal"
    for i in ids:
        gt = read_mask(voc / "SegmentationClassAug" / f"{i}.png", 21)
        fg = (gt > 0) & (gt < 255)
        eroded = np.where(binary_erosion(fg, iterations=6), np.where(gt == 255, 0, gt), 0).astype(np.uint8)
        write_png(pseudo / f"{i}.png", eroded, voc_palette())
        write_sal(sal / f"{i}.png", fg.astype(np.float32))
    report = select_folder(pseudo, sal, tmp_path / "out", num_classes=21, gt_dir=voc / "SegmentationClassAug",
                           class_names=VOC_CLASSES, ids=ids)
    single = report["metrics"]["single_class"]
    assert report["replaced"] > 0 and single["after"]["mIoU"] > single["before"]["mIoU"]
    rows = sweep(pseudo, sal, voc / "SegmentationClassAug", num_classes=21, ids=ids, thresholds=(0.4, 1.0))
    assert rows[1]["all"]["mIoU"] == pytest.approx(report["metrics"]["all"]["before"]["mIoU"])
    assert rows[0]["all"]["mIoU"] == pytest.approx(report["metrics"]["all"]["after"]["mIoU"])


@pytest.mark.parametrize("mode", ["sep", "alpha", "auto"])
def test_arrays_equal_the_folder_form_to_the_bit(tmp_path, mode, monkeypatch):
    """salmask.select_masks on arrays runs the core in memory: the same masks and report as on the folders
    holding the same values, and not one file written on the way."""
    import salmask
    import salmask.io
    import salmask.select.sos as sos
    from salmask.io import read_gray

    rng = np.random.default_rng(3)
    d = {k: tmp_path / k for k in ("pseudo", "sal", "gt", "soft", "out")}
    for p in d.values():
        p.mkdir()
    masks, sals, gts, softs, maps, labels = {}, {}, {}, {}, {}, {}
    for j in range(14):
        i = f"im{j:02d}"
        cls = int(rng.integers(1, C))
        y, x = rng.integers(0, 12, 2)
        mask = box(y, y + int(rng.integers(4, 12)), x, x + int(rng.integers(4, 12)), cls, shape=(24, 24))
        mask[rng.random((24, 24)) < 0.03] = 255
        if j % 5 == 4:  # a second class: multi-class, passed through
            mask[20:, 20:] = cls % (C - 1) + 1
        sy, sx = np.clip([y + rng.integers(-4, 5), x + rng.integers(-4, 5)], 0, 16)
        sal = np.clip(box(sy, sy + 9, sx, sx + 9, 0.9, shape=(24, 24), dtype=np.float32)
                      + rng.random((24, 24), dtype=np.float32) * 0.3, 0, 1)
        write_png(d["pseudo"] / f"{i}.png", mask)
        write_sal(d["sal"] / f"{i}.png", sal)
        gt = box(sy, sy + 8, sx, sx + 8, cls, shape=(24, 24))
        write_png(d["gt"] / f"{i}.png", gt)
        keys, scores = np.arange(1, C), rng.random((C - 1, 24, 24)).astype(np.float32)
        save_npz(d["soft"] / f"{i}.npz", keys=keys, scores=scores)
        masks[i], sals[i], gts[i], softs[i] = mask, read_gray(d["sal"] / f"{i}.png"), gt, (keys, scores)
        labels[i] = sorted(set(np.unique(mask).tolist()) - {0, 255})
        maps[i] = rng.random((6, 6)).astype(np.float32)
    (tmp_path / "maps").mkdir()
    for i, b in maps.items():
        save_npz(tmp_path / "maps" / f"{i}.npz", boundary=b)
    kw = dict(num_classes=C, mode=mode, t0=0.2, tau=0.9, class_names=NAMES)
    folder_report = salmask.select_masks(d["pseudo"], d["sal"], labels, out=d["out"], soft=d["soft"],
                                         gt=d["gt"], boundary=tmp_path / "maps", **kw)

    def no_file(*args, **kwargs):
        raise AssertionError("select_masks on arrays wrote a file")

    monkeypatch.setattr(salmask.io, "write_png", no_file)
    monkeypatch.setattr(sos, "write_png", no_file)
    monkeypatch.setattr(sos, "write_bytes_atomic", no_file)
    selected, report = salmask.select_masks(masks, sals, labels, soft=softs, gt=gts, boundary=maps, **kw)
    assert json.dumps(report, sort_keys=True) == json.dumps(folder_report, sort_keys=True)
    assert 0 < report["replaced"] and (mode == "alpha" or report["replaced"] < report["single_class"])
    for i in masks:
        out = selected[i]
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, read_mask(d["out"] / f"{i}.png"), err_msg=i)
