"""The HTML report and the per-image grid, on small work directories built here (no pipeline run)."""
from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from salmask.boundary.labels import BG, BOUNDARY_FG_BG, CERTAIN_BOUNDARY, FG, IGNORE
from salmask.data.meta import voc_palette
from salmask.errors import InputError
from salmask.io import read_image, read_mask, save_npz, write_gray, write_json, write_png
from salmask.report.grid import BOUNDARY_CODES, COLUMNS, image_tiles, open_work_dir, show_image
from salmask.report.html import build_report, pick_pseudo_ids, spread, write_report

VOC_MINI = Path(__file__).resolve().parents[2] / "shared/data/voc-mini"
CLASSES = ["background", "disc", "square"]
SECTIONS = ("metrics", "per-class", "losses", "sweeps", "legend", "grid-pseudo", "grid-val")


def _write_config(w: Path, kind: str, root: Path) -> None:
    w.mkdir(parents=True, exist_ok=True)
    (w / "config.yaml").write_text(f"dataset:\n  kind: {kind}\n  root: {root}\n  pseudo_split: train_aug\n"
                                   f"  val_split: val\n")


def _synthetic_dataset(root: Path, ids: dict[str, list[str]]) -> None:
    """A VOC-layout folder of 24x32 images: a disc (class 1) and/or a square (class 2) on noise."""
    base = root / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:24, :32]
    for split, names in ids.items():
        (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for k, i in enumerate(names):
            gt = np.zeros((24, 32), np.uint8)
            gt[(yy - 12) ** 2 + (xx - 8) ** 2 < 36] = 1
            if k % 2:
                gt[4:12, 20:28] = 2
            img = rng.integers(0, 60, (24, 32, 3)).astype(np.uint8)
            img[gt == 1] = (230, 60, 40)
            img[gt == 2] = (40, 80, 230)
            gt[0, :] = 255
            (base / "JPEGImages").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(base / "JPEGImages" / f"{i}.jpg", quality=95)
            write_png(base / "SegmentationClassAug" / f"{i}.png", gt, voc_palette())
    write_json(root / "meta.json", {"classes": CLASSES})


def _artefacts(w: Path, image_id: str, gt: np.ndarray, val: bool = False) -> None:
    """Every per-image artefact of the pipeline, derived from the ground truth [H,W]."""
    h, wd = gt.shape
    pal = voc_palette()
    if val:
        write_png(w / "infer_seg" / "val" / f"{image_id}.png", gt, pal)
        return
    keys = np.array(sorted(int(c) for c in np.unique(gt) if 0 < c < 255), np.int16)
    high = np.stack([(gt == c).astype(np.float16) for c in keys]) if len(keys) else np.zeros((0, h, wd), np.float16)
    save_npz(w / "make_cam" / f"{image_id}.npz", keys=keys, cam=high[:, ::4, ::4], high_res=high)
    fg = ((gt > 0) & (gt < 255)).astype(np.float32)
    write_gray(w / "saliency" / f"{image_id}.png", fg)
    codes = np.where(fg > 0, FG, BG).astype(np.uint8)
    codes[0, :] = IGNORE
    codes[:, 0] = CERTAIN_BOUNDARY
    codes[-1, :] = BOUNDARY_FG_BG
    write_png(w / "make_boundary_labels" / f"{image_id}.png", codes)
    save_npz(w / "make_boundary" / f"{image_id}.npz", boundary=fg[::4, ::4].astype(np.float16))
    write_png(w / "make_pseudo" / f"{image_id}.png", np.where(gt == 255, 0, gt).astype(np.uint8), pal)
    write_png(w / "select" / "masks" / f"{image_id}.png", gt, pal)


def _metrics(miou: float, per_class: dict, **extra) -> dict:
    return {"stage": "x", "images": 4, "metrics": {"Acc": 90.0, "Acc_class": 80.0, "mIoU": miou, "fwIoU": 85.0,
                                                   "per_class": per_class, **extra}}


def _stage_files(w: Path) -> None:
    pc = {"background": 90.0, "disc": 70.0, "square": None}
    write_json(w / "eval_cam" / "manifest.json", _metrics(40.0, pc, threshold=0.2, best_threshold=0.3, best_mIoU=41.0))
    write_json(w / "eval_cam" / "sweep.json", [{"threshold": t, "mIoU": 30 + 10 * t} for t in (0.1, 0.2, 0.3)])
    write_json(w / "eval_pseudo" / "manifest.json",
               _metrics(55.0, pc, single_class={"mIoU": 60.0, "Acc": 1.0, "Acc_class": 1.0, "fwIoU": 1.0}))
    write_json(w / "ablation" / "bes" / "eval_pseudo" / "manifest.json", _metrics(50.5, pc))
    write_json(w / "eval_seg" / "manifest.json", _metrics(52.0, pc))
    write_json(w / "eval_sod" / "manifest.json", {"metrics": {"rgbsod": {"MAE": 0.1, "maxF": 0.8, "images": 3}}})
    write_json(w / "train_cam" / "history.json", [{"step": s, "epoch": 0, "loss": 1 / s, "lr": 0.1}
                                                  for s in range(1, 6)])
    write_json(w / "train_sod" / "history.json", [{"epoch": e, "loss": 2 / e, "edge": 0.5} for e in (1, 2)])
    (w / "train_seg").mkdir()
    (w / "train_seg" / "history.json").write_text("{not json")
    write_json(w / "select" / "report.json", {"mode": "sep", "images": 4, "single_class": 2, "replaced": 1,
                                              "replaced_ids": ["t3"]})
    write_png(w / "eval_select" / "sweep.png", np.full((10, 20, 3), 128, np.uint8))


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A synthetic work dir: train t0..t3 with every artefact, val v0 with a prediction, v1 without."""
    data, w = tmp_path / "data", tmp_path / "w"
    _synthetic_dataset(data, {"train_aug": ["t0", "t1", "t2", "t3"], "val": ["v0", "v1"]})
    _write_config(w, "synthetic", data)
    gt_dir = data / "VOCdevkit" / "VOC2012" / "SegmentationClassAug"
    for i in ("t0", "t1", "t2", "t3"):
        _artefacts(w, i, read_mask(gt_dir / f"{i}.png"))
    _artefacts(w, "v0", read_mask(gt_dir / "v0.png"), val=True)
    _stage_files(w)
    return w


def _rows(html: str) -> dict[str, dict[str, str]]:
    """{image id: {column: cell html}} of the grids."""
    out = {}
    for image_id, row in re.findall(r'<tr data-id="([^"]+)">(.*?)</tr>', html, re.S):
        out[image_id] = dict(re.findall(r'<td class="tile" data-col="([^"]+)">(.*?)</td>', row, re.S))
    return out


def _decode(cell: str) -> np.ndarray:
    src = re.search(r'src="data:image/\w+;base64,([^"]+)"', cell).group(1)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src))).convert("RGB"))


def test_report_has_every_section_and_tile(work: Path) -> None:
    out = write_report(work)
    assert out == work.resolve() / "report.html"
    html = out.read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html
    assert not re.search(r'src="(?!data:)', html), "every image must be embedded"
    assert len(html) < 5_000_000
    rows = _rows(html)
    assert set(rows) == {"t0", "t1", "t2", "t3", "v0"}  # val images with a prediction are preferred
    for image_id, cells in rows.items():
        assert list(cells) == list(COLUMNS)
    for col in COLUMNS:
        if col != "prediction":
            assert "<img" in rows["t1"][col], col
    assert "<img" in rows["v0"]["prediction"] and "no output" in rows["v0"]["CAM"]
    assert (_decode(rows["t1"]["ground truth"])[..., :3] == voc_palette()[2]).all(axis=-1).any()
    table = html[html.index('id="metrics"'):html.index('id="per-class"')]
    assert "40.00" in table and "55.00" in table and "60.00" in table and "50.50" in table and "52.00" in table
    assert re.search(r"SOS\)</td><td colspan=\"\d+\">not run", table)
    assert "best t=0.30: mIoU 41.00" in table and "replaced 1 of 2" in table and "RGB-SOD saliency" in table
    assert html.count("data:image/png") >= 4  # per-class, losses, CAM sweep, selector sweep (+ masks)
    for name, _ in BOUNDARY_CODES.values():
        assert name in html


def test_missing_artefacts_are_grey_tiles(work: Path) -> None:
    shutil.rmtree(work / "make_boundary_labels")
    (work / "saliency" / "t0.png").unlink()
    (work / "make_boundary" / "t0.npz").write_bytes(b"not a zip")
    (work / "make_pseudo" / "t0.png").write_bytes(b"\x89PNG broken")
    tiles = {t.title: t for t in image_tiles(open_work_dir(work), "t0")}
    assert tiles["boundary labels"].rgb is None and tiles["boundary labels"].note == "not run"
    assert tiles["saliency"].rgb is None and tiles["saliency"].note == "no output"
    assert tiles["boundary map"].note.startswith("unreadable") and tiles["pseudo mask"].note.startswith("unreadable")
    assert tiles["CAM"].rgb.shape == tiles["image"].rgb.shape == (24, 32, 3)
    assert tiles["SOS mask"].classes == {0, 1, 255}
    assert next(t for t in image_tiles(open_work_dir(work), "v1") if t.title == "prediction").note == "no output"
    rows = _rows(build_report(work))
    assert "not run" in rows["t2"]["boundary labels"] and "unreadable" in rows["t0"]["boundary map"]


def test_tile_colours(work: Path) -> None:
    tiles = {t.title: t for t in image_tiles(open_work_dir(work), "t1")}
    gt = read_mask(work.parent / "data" / "VOCdevkit" / "VOC2012" / "SegmentationClassAug" / "t1.png")
    assert (tiles["ground truth"].rgb == voc_palette()[gt]).all()
    assert tiles["ground truth"].classes == {0, 1, 2, 255}
    bl = tiles["boundary labels"].rgb
    assert tuple(bl[0, 5]) == BOUNDARY_CODES[IGNORE][1] and tuple(bl[5, 0]) == BOUNDARY_CODES[CERTAIN_BOUNDARY][1]
    cam = tiles["CAM"].rgb.astype(int)
    image = tiles["image"].rgb.astype(int)
    assert cam[12, 8, 0] - image[12, 8, 0] // 2 > cam[20, 30, 0] - image[20, 30, 0] // 2  # hot on the disc


def test_show_image_layout(work: Path, tmp_path: Path) -> None:
    path = show_image(work, "t1")
    assert path == work / "show" / "t1.png"
    img = Image.open(path)
    assert img.format == "PNG" and img.width > 4 * img.height > 0
    other = show_image(work, "v0", tmp_path / "v0.png")
    assert other == tmp_path / "v0.png" and Image.open(other).width == img.width
    with pytest.raises(InputError, match="nothing to show"):
        show_image(work, "nope")
    with pytest.raises(InputError, match="unsafe"):
        show_image(work, "../t1")


def test_smoke_run_report_says_its_figures_rank_nothing(work: Path) -> None:
    assert "SMOKE RUN" not in build_report(work)
    write_json(work / "summary.json", {"smoke": False})
    assert "SMOKE RUN" not in build_report(work)
    write_json(work / "summary.json", {"smoke": True})
    assert "SMOKE RUN (--quick)" in build_report(work)


def test_report_of_empty_or_broken_work_dir(tmp_path: Path) -> None:
    w = tmp_path / "w"
    _write_config(w, "synthetic", tmp_path / "absent")
    html = write_report(w).read_text()
    assert "dataset not readable" in html and html.count("not run") >= 4
    assert "no images" in html
    with pytest.raises(InputError, match="config.yaml"):
        write_report(tmp_path)
    with pytest.raises(InputError, match="not found"):
        write_report(tmp_path / "nowhere")


def test_sampling_is_deterministic(work: Path) -> None:
    assert spread([str(i) for i in range(10)], 4) == ["0", "3", "6", "9"]
    assert spread(["a", "b"], 6) == ["a", "b"]
    assert spread(["a", "b"], 1) == ["a"] and spread(["a"], 0) == []
    view = open_work_dir(work)
    assert pick_pseudo_ids(view, 2) == ["t3", "t0"]  # the replaced image first
    assert pick_pseudo_ids(view, 1) == ["t3"]
    assert pick_pseudo_ids(view) == pick_pseudo_ids(open_work_dir(work))


@pytest.mark.skipif(not VOC_MINI.is_dir(), reason="../shared/data/voc-mini absent")
def test_report_on_voc_mini_images(tmp_path: Path) -> None:
    w = tmp_path / "w"
    _write_config(w, "voc", VOC_MINI)
    base = VOC_MINI / "VOCdevkit" / "VOC2012"
    train = (base / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()[:2]
    val = (base / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:1]
    for i in train:
        _artefacts(w, i, read_mask(base / "SegmentationClassAug" / f"{i}.png"))
    _artefacts(w, val[0], read_mask(base / "SegmentationClassAug" / f"{val[0]}.png"), val=True)
    rows = _rows(write_report(w).read_text())
    for i in train:
        assert all("<img" in rows[i][c] for c in COLUMNS if c != "prediction")
    assert "<img" in rows[val[0]]["prediction"] and "<img" in rows[val[0]]["ground truth"]
    h, wd = read_image(base / "JPEGImages" / f"{train[0]}.jpg").shape[:2]
    tile = _decode(rows[train[0]]["image"])
    assert abs(tile.shape[1] / tile.shape[0] - wd / h) < 0.05


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_report_renders_in_headless_chromium(work: Path, tmp_path: Path) -> None:
    report = write_report(work)
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,3000",
           report.as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape == (3000, 1400, 3)
    colours = np.unique(img.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 200, "the page should show charts and tiles, not a blank or error page"
    assert (img < 250).any(axis=-1).mean() > 0.05


def test_timings_section_lists_own_stages_of_each_run(tmp_path):
    from salmask.io import write_json
    from salmask.report.html import timings_section

    for st, sec in (("train_cam", 120.0), ("make_cam", 60.0)):
        write_json(tmp_path / st / "manifest.json", {"stage": st, "seconds": sec})
    variant = tmp_path / "ablation" / "bes"
    variant.mkdir(parents=True)
    (variant / "train_cam").symlink_to(tmp_path / "train_cam")  # reused, not the variant's own time
    write_json(variant / "train_boundary" / "manifest.json", {"stage": "train_boundary", "seconds": 30.0})
    html = timings_section(tmp_path)
    assert "<td>main run</td><td>3.0</td>" in html and "train_cam 2.0, make_cam 1.0" in html
    bes_row = html[html.index("BES"):]
    assert "<td>0.5</td>" in bes_row and "train_cam" not in bes_row


def test_crf_masks_get_their_own_row(tmp_path):
    """With walk.crf, eval_pseudo scores the CRF masks too (BES and SBE score both): the printed summary and the
    report show them as a row of their own."""
    from salmask.summary import build_summary, format_summary
    from salmask.report.html import EVAL_STAGES, metrics_section

    plain = {"mIoU": 40.0, "Acc": 60.0, "Acc_class": 50.0, "fwIoU": 45.0}
    crf = {"mIoU": 43.5, "Acc": 63.0, "Acc_class": 52.0, "fwIoU": 48.0}
    summary = build_summary({"eval_pseudo": {"metrics": {**plain, "crf": crf}}}, {})
    assert summary["sbe_crf"]["mIoU"] == 43.5
    assert "dense CRF (walk.crf)" in format_summary(summary)
    assert "sbe_crf" not in build_summary({"eval_pseudo": {"metrics": plain}}, {})
    manifests = {st.name: None for st in EVAL_STAGES}
    manifests["eval_pseudo"] = {**plain, "crf": crf}
    html = metrics_section(tmp_path, manifests)
    assert "SBE + dense CRF" in html and "43.50" in html
    manifests["eval_pseudo"] = plain
    assert "dense CRF" not in metrics_section(tmp_path, manifests)


def test_the_selector_row_names_how_it_decided():
    from salmask.summary import build_summary, format_summary

    plain = {"mIoU": 40.0, "Acc": 60.0, "Acc_class": 50.0, "fwIoU": 45.0}
    rows = {d: format_summary(build_summary({"eval_select": {"metrics": plain}, "select": {"decision": d}}, {}))
            for d in ("sep", "auto: boundary", "alpha")}
    assert "pseudo: SBE + Selector (Algorithm 1)" in rows["sep"]
    assert "pseudo: SBE + Selector (auto: boundary)" in rows["auto: boundary"]
    assert "pseudo: SBE + Selector (alpha* fusion)" in rows["alpha"]
    old = format_summary(build_summary({"eval_select": {"metrics": plain}, "select": {"replaced": 3}}, {}))
    assert "pseudo: SBE + Selector " in old and "(" not in old.splitlines()[1]
