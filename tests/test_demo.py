"""`salmask demo --quick`: every stage on the synthetic default, the summary contract and the report."""
import json

import pytest

from salmask.cli import main

SOD_KEYS = {"MAE", "maxF", "meanF", "adpF", "Sm", "Em"}
SEG_KEYS = {"mIoU", "Acc", "Acc_class", "fwIoU"}


@pytest.mark.slow
def test_quick_demo(tmp_path, capsys):
    work = tmp_path / "demo"
    assert main(["demo", "--quick", "--work-dir", str(work)]) == 0
    summary = json.loads((work / "summary.json").read_text())
    for key in ("cam", "sbe", "sos", "seg"):
        assert SEG_KEYS <= set(summary[key]), key
        assert all(0.0 <= summary[key][k] <= 100.0 for k in SEG_KEYS)
    for key in ("sbe", "sos"):
        assert SEG_KEYS <= set(summary[key]["single_class"])
    assert set(summary["sod"]) == {"classic", "rgbsod"}
    for m in summary["sod"].values():
        assert SOD_KEYS <= set(m)
    assert set(summary["ablation"]) == {"bes", "sbe_labels_bes_loss", "sbe_classic_saliency", "walk_learned",
                                        "walk_saliency", "walk_both"}
    # the demo's walk reads the learned boundary: that variant is the main run's row, not a second run
    assert summary["ablation"]["walk_learned"]["same_as_main"] and "walk_learned" not in summary["ablation_seconds"]
    assert set(summary["ablation_seconds"]["walk_saliency"]) == {"make_pseudo", "eval_pseudo"}
    assert summary["sbe"]["bg"]["auto"] and 0.05 <= summary["sbe"]["bg"]["score"] <= 0.95
    assert summary["saliency"] == {"source": "rgbsod", "encoder": "swin_tiny_patch4_window7_224",
                                   "name": "RGB-SOD saliency"} and summary["seconds"]["train_cam"] > 0
    assert {n: e["name"] for n, e in summary["sod_sources"].items()} == {"classic": "classic MB+ saliency",
                                                                         "rgbsod": "RGB-SOD saliency"}
    assert set(summary["ablation_seconds"]["bes"]) == {"make_boundary_labels", "train_boundary", "make_boundary",
                                                       "make_pseudo", "eval_pseudo"}
    # the labels do not depend on the boundary loss: that variant reuses the main run's
    assert "make_boundary_labels" not in summary["ablation_seconds"]["sbe_labels_bes_loss"]
    assert (work / "ablation" / "sbe_labels_bes_loss" / "make_boundary_labels").resolve() == \
        (work / "make_boundary_labels").resolve()
    # CAMs learn something (far above an all-background guess) yet stay clearly below the masks
    cam = summary["cam"]
    assert 15.0 < cam["mIoU"] < 80.0
    assert (work / "report.html").stat().st_size > 10_000
    captured = capsys.readouterr()
    out = captured.out
    assert "pseudo: SBE + Selector" in out and "segmentation (val)" in out and "pseudo: SBE (RGB-SOD saliency)" in out
    # a smoke run ranks nothing: a banner, and every row of the table marked
    assert summary["smoke"] is True and out.count("SMOKE RUN") == 2
    table = out[out.index("\nstage ") + 1:out.rindex("SMOKE RUN")].splitlines()
    assert len(table) >= 9 and all(line.endswith("smoke") for line in table[1:])
    assert "SMOKE RUN" in (work / "report.html").read_text()
    # stderr is not a terminal here: log lines, never carriage-return bar frames
    assert "\r" not in captured.err and "finished in" in captured.err
    # a second run finds every stage finished and only rebuilds the summary
    assert main(["demo", "--quick", "--work-dir", str(work)]) == 0
    assert json.loads((work / "summary.json").read_text()) == summary


def test_study_rejects_an_unknown_ablation(tmp_path):
    from salmask.study import run_study
    from salmask.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown ablation 'crf'"):
        run_study("demo", [f"dataset.root={tmp_path}"], work_dir=tmp_path, ablations=("crf",))
    assert not list(tmp_path.iterdir())  # nothing ran
