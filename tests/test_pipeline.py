"""Presets, the stage list, ``salmask eval`` against independent formulas, the VOC reader, determinism."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from salmask.cli import main
from salmask.config import PRESETS, load_config
from salmask.data.datasets import voc_split
from salmask.data.meta import VOC
from salmask.io import read_json, read_mask, write_png
from salmask.pipeline import STAGES

from conftest import REF_STAGES, assert_same_artefacts, assert_same_weights, run_salmask, tiny_overrides

ORDER = ("generate", "train_cam", "make_cam", "eval_cam", "train_sod", "saliency", "eval_sod",
         "make_boundary_labels", "train_boundary", "make_boundary", "make_pseudo", "eval_pseudo",
         "select", "eval_select", "train_seg", "infer_seg", "eval_seg")


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load(preset):
    cfg = load_config(preset, ["seed=3"])
    assert cfg.seed == 3 and cfg.cam.epochs >= 1 and len(cfg.cam.scales) >= 1
    assert cfg.dataset.kind == {"demo": "synthetic", "coco": "coco"}.get(preset, "voc")


def test_stages_are_listed_in_pipeline_order(capsys):
    assert main(["stages"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert listed == list(STAGES)
    assert [s for s in listed if s in ORDER] == list(ORDER)
    cfg = load_config("demo")
    for name, st in STAGES.items():
        assert all(listed.index(n) < listed.index(name) for n in st.requires(cfg)), name


# --------------------------------------------------------------------------------------------------
# salmask eval on voc-mini.

def _eval(pred: Path, gt: Path, out: Path) -> dict:
    assert main(["eval", "--pred", str(pred), "--gt", str(gt), "--classes", "voc", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _expected(preds: dict[str, np.ndarray], gts: dict[str, np.ndarray], n: int = 21) -> dict[str, float]:
    """Acc, mIoU, Acc_class, fwIoU straight from the definitions (FCN's score.py, which IRNet's chainercv IoU
    and the SOD paper's table follow), per class over all pixels, no confusion matrix: IoU over the classes
    present in the prediction or the ground truth; fwIoU weights each IoU by its class's share of the
    ground-truth pixels."""
    p = np.concatenate([preds[i].ravel() for i in sorted(gts)]).astype(np.int64)
    g = np.concatenate([gts[i].ravel() for i in sorted(gts)]).astype(np.int64)
    keep = g != 255
    p, g = np.where(p[keep] == 255, 0, p[keep]), g[keep]
    ious, accs, fw = [], [], 0.0
    for c in range(n):
        inter = np.sum((p == c) & (g == c))
        union = np.sum((p == c) | (g == c))
        if union:
            ious.append(inter / union)
        if np.sum(g == c):
            accs.append(inter / np.sum(g == c))
            fw += np.sum(g == c) / g.size * inter / union
    return {"Acc": 100 * np.mean(p == g), "mIoU": 100 * np.mean(ious), "Acc_class": 100 * np.mean(accs),
            "fwIoU": 100 * fw}


def test_metrics_are_the_definitions_on_random_maps():
    """segmentation_metrics against the definitions above, without ../shared: random maps with ignore pixels in
    both, a class only predicted and a class only in the ground truth."""
    from salmask import segmentation_metrics

    rng = np.random.default_rng(8)
    gts = {f"{k}": rng.choice([0, 1, 2, 5, 255], (13 + k, 17), p=[0.4, 0.2, 0.2, 0.1, 0.1]) for k in range(3)}
    preds = {i: np.where(rng.random(g.shape) < 0.6, g, rng.choice([0, 1, 2, 7, 255], g.shape)) for i, g in gts.items()}
    preds["0"][0, 0] = 255
    got = segmentation_metrics([preds[i] for i in sorted(gts)], [gts[i] for i in sorted(gts)], num_classes=8)
    for k, v in _expected(preds, gts, 8).items():
        assert got[k] == pytest.approx(v, abs=1e-9), k


def test_eval_gt_against_itself_and_a_perturbed_copy(voc_mini, tmp_path):
    gt_dir = voc_mini / "VOCdevkit" / "VOC2012" / "SegmentationClassAug"
    perfect = _eval(gt_dir, gt_dir, tmp_path / "self.json")
    assert perfect["images"] == 49
    assert perfect["mIoU"] == 100.0 and perfect["Acc"] == 100.0 and perfect["Acc_class"] == 100.0

    gts = {p.stem: read_mask(p, 21) for p in sorted(gt_dir.glob("*.png"))}
    preds = {i: m.copy() for i, m in gts.items()}
    ids = sorted(gts)
    for i in ids[:4]:  # one class relabelled as another (15 person -> 12 dog, or the first class -> 1)
        m = preds[i]
        present = [c for c in np.unique(m) if 0 < c < 21]
        src = 15 if 15 in present else present[0]
        m[m == src] = 12 if src != 12 else 1
    for i in ids[4:10]:  # objects shrunk: a 3-pixel band of their outline becomes background
        m = preds[i]
        fg = (m > 0) & (m < 255)
        core = np.asarray(Image.fromarray(fg.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(7))) > 0
        m[fg & ~core] = 0
    preds[ids[10]][:] = 255  # an all-ignore prediction counts as background
    pred_dir = tmp_path / "pred"
    for i, m in preds.items():
        write_png(pred_dir / f"{i}.png", m, palette=VOC.palette)

    got = _eval(pred_dir, gt_dir, tmp_path / "perturbed.json")
    want = _expected(preds, gts)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-9), k
    assert got["mIoU"] < 100.0


def test_voc_reader_on_voc_mini(voc_mini, tmp_path):
    cache = tmp_path / "labels.json"
    train = voc_split(voc_mini, "train_aug", label_cache=cache)
    val = voc_split(voc_mini / "VOCdevkit", "val")  # VOCdevkit/ itself is accepted as the root
    assert len(train) == 39 and len(val) == 10 and not set(train.ids) & set(val.ids)
    train.check_files()
    val.check_files()
    for i in train.ids:
        m = np.asarray(Image.open(train.mask_path(i)))
        assert train.labels[i] == [int(c) for c in np.unique(m) if 0 < c < 255]
        assert train.label_vector(i).sum() == len(train.labels[i])
    assert all(train.labels[i] for i in train.ids)
    assert read_json(cache) == train.labels
    again = voc_split(voc_mini, "train_aug", label_cache=cache)  # from the cache
    assert again.labels == train.labels


def test_voc_config_points_at_voc_mini(voc_mini, tmp_path):
    from salmask.pipeline import Context

    cfg = load_config("voc", [f"dataset.root={voc_mini}", f"work_dir={tmp_path}", "dataset.eval_split=train_aug"])
    ctx = Context(cfg, tmp_path)
    assert len(ctx.split("train_split")) == 39 and len(ctx.split("val_split")) == 10
    assert ctx.split("train_split").meta.num_classes == 21


# --------------------------------------------------------------------------------------------------
# Determinism.

@pytest.mark.slow
def test_same_config_twice_gives_identical_artefacts(tmp_path, tiny_data, reference_run):
    work = tmp_path / "again"
    run_salmask(["run", "demo", *tiny_overrides(work, tiny_data), "--stages", ",".join(REF_STAGES)])
    assert_same_artefacts(reference_run, work)
    for st in ("train_cam", "train_boundary"):
        assert_same_weights(reference_run / st / "model.pt", work / st / "model.pt")
    for st in ("eval_cam", "eval_pseudo"):
        assert read_json(work / st / "manifest.json")["metrics"] == \
            read_json(reference_run / st / "manifest.json")["metrics"]
    for st in REF_STAGES:
        assert read_json(work / st / "manifest.json")["hash"] == read_json(reference_run / st / "manifest.json")["hash"]


def test_fresh_data_root_gives_the_same_dataset(tmp_path, tiny_data):
    """The generate stage writes the same files as the shared fixture (same seed and parameters)."""
    work = tmp_path / "w"
    assert main(["run", "demo", *tiny_overrides(work, work / "data"), "--stages", "generate"]) == 0
    for sub in ("VOCdevkit/VOC2012/JPEGImages", "VOCdevkit/VOC2012/SegmentationClassAug", "SOD/Images"):
        a, b = sorted((tiny_data / sub).iterdir()), sorted((work / "data" / sub).iterdir())
        assert [p.name for p in a] == [p.name for p in b] and a
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b)), sub


def test_stage_order_does_not_depend_on_import_order():
    """A library user importing a stage module first still gets the pipeline order."""
    import subprocess
    import sys

    from conftest import salmask_env

    code = ("import salmask.refine.stage, salmask.seg.stage; "
            "from salmask.pipeline import STAGES; print(' '.join(STAGES))")
    out = subprocess.run([sys.executable, "-c", code], env=salmask_env(), capture_output=True, text=True, check=True)
    listed = out.stdout.split()
    assert [s for s in listed if s in ORDER] == list(ORDER)


def test_stages_print_whole_first_sentences(capsys):
    """`salmask stages` prints each stage's first sentence whole, however many lines its docstring takes."""
    from salmask.cli import first_sentence

    assert main(["stages"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert lines["make_pseudo"].endswith("(fixed, or chosen by agreement with saliency).")
    assert all(line.rstrip().endswith(".") for line in lines.values()), lines
    assert first_sentence("One, e.g.x two.\n    Three. Four.") == "One, e.g.x two."
    assert first_sentence("No stop\n  here") == "No stop here"


def test_every_cli_option_has_help():
    import argparse

    from salmask.cli import build_parser

    def parsers(p: argparse.ArgumentParser, name: str):
        yield name, p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from parsers(sub, f"{name} {sub_name}")

    missing = [f"{name}: {'/'.join(a.option_strings) or a.dest}"
               for name, p in parsers(build_parser(), "salmask") for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert not missing, missing


def test_a_stage_code_version_reruns_it_and_its_downstream(tmp_path, monkeypatch):
    """Bumping a stage's ``version`` changes its hash and its dependents', not its upstream's; version 1 adds
    nothing to the hash, so runs finished before versions existed stay complete."""
    import dataclasses

    from omegaconf import OmegaConf

    from salmask.config import section_hash
    from salmask.pipeline import Context, planned_stages, resolve_stages

    cfg = load_config("demo", [f"work_dir={tmp_path}"])

    def hashes() -> dict[str, str]:
        ctx = Context(cfg, tmp_path)
        planned_stages(ctx, resolve_stages(cfg, None), force=False)
        return dict(ctx.hashes)

    before = hashes()
    assert STAGES["infer_seg"].version == 2 and STAGES["train_seg"].version == 1
    train_cam = STAGES["train_cam"]
    assert before["train_cam"] == section_hash("train_cam", cfg.dataset, cfg.seed,
                                               *[OmegaConf.select(cfg, s) for s in train_cam.sections],
                                               *[before[n] for n in train_cam.requires(cfg)])
    monkeypatch.setitem(STAGES, "train_seg", dataclasses.replace(STAGES["train_seg"], version=2))
    after = hashes()
    changed = {n for n in before if before[n] != after[n]}
    assert {"train_seg", "infer_seg", "eval_seg"} <= changed
    assert "select" not in changed and "train_cam" not in changed
