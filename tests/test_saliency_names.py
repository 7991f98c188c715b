"""The summary and the report name the saliency that produced their rows, from what the stages recorded."""
from __future__ import annotations

import pytest

import re
from pathlib import Path


from salmask.cli import main
from salmask.summary import format_summary
from salmask.io import read_json, write_json
from salmask.report.html import build_report
from salmask.report.sources import saliency_entries, saliency_record, sod_records
from salmask.saliency.names import onnx_model_name, saliency_name

from conftest import tiny_overrides

UP_TO_PSEUDO = ("generate", "train_cam", "make_cam", "eval_cam", "train_sod", "saliency", "eval_sod",
                "make_boundary_labels", "train_boundary", "make_boundary", "make_pseudo", "eval_pseudo")


def test_names_come_from_the_record_alone():
    assert saliency_name({"source": "onnx", "model": "u2netp.onnx"}) == "U²-NetP saliency"
    assert saliency_name({"source": "onnx", "model": "isnet-general-use.onnx"}) == "isnet-general-use.onnx saliency"
    assert onnx_model_name("U2NETP_fp16.onnx") == "U²-NetP" and onnx_model_name("u2net.onnx") == "U²-Net"
    assert saliency_name({"source": "classic", "method": "mbd"}) == "classic MB+ saliency"
    assert saliency_name({"source": "classic", "method": "rbd"}) == "classic RBD saliency"
    assert saliency_name({"source": "rgbsod", "encoder": "swin_base_patch4_window7_224"}) == "RGB-SOD saliency"
    assert saliency_name({"source": "precomputed", "dir": "/data/VOC2012/Sal"}) == "precomputed saliency (Sal/)"
    # what a record lacks is said, never filled in
    assert saliency_name({"source": "onnx"}) == "ONNX saliency, model not recorded"
    assert saliency_name({"source": "classic"}) == "classic saliency, method not recorded"
    assert saliency_name(None) == saliency_name({}) == "saliency of an unrecorded source"


def test_a_summary_without_a_record_does_not_guess():
    sbe = {"mIoU": 40.0, "Acc": 60.0, "Acc_class": 50.0, "fwIoU": 45.0}
    sod = {"MAE": 0.1, "maxF": 0.8, "meanF": 0.7, "adpF": 0.7, "Sm": 0.8, "Em": 0.85}
    legacy = format_summary({"sbe": sbe, "saliency_source": "onnx", "sod": {"onnx": sod}})
    assert "pseudo: SBE (ONNX saliency, model not recorded)" in legacy and "RGB-SOD" not in legacy
    bare = format_summary({"sbe": sbe})
    assert "pseudo: SBE (saliency of an unrecorded source)" in bare and "RGB-SOD" not in bare


def _sbe_row(text: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith("pseudo: SBE (")]
    assert len(rows) == 1, text
    return rows[0]


@pytest.mark.slow
def test_each_source_is_named_by_run_summary_and_report(tmp_path, tiny_data, one_thread, capsys):
    """``salmask run`` with the classic, ONNX (the tests' tiny model) and RGB-SOD sources, one after the other in
    one work dir (the CAM stages are shared): the printed row, ``salmask.run``'s summary and the report each name
    the source the saliency stage recorded; an older manifest is completed only from hash-verified settings."""
    from test_onnx_saliency import write_model

    import salmask

    model = write_model(tmp_path / "toy_sod.onnx", batch=1)
    work = tmp_path / "w"
    base = [*tiny_overrides(work, tiny_data), "sod.epochs=1", "saliency.input_size=16"]
    cases = {"classic": ([], "classic MB+ saliency"),
             "onnx": ([f"saliency.model={model}"], "toy_sod.onnx saliency"),
             "rgbsod": ([], "RGB-SOD saliency")}
    for source, (extra, name) in cases.items():
        args = [*base, f"saliency.source={source}", *extra]
        assert main(["run", "demo", *args, "--stages", ",".join(UP_TO_PSEUDO)]) == 0
        printed = capsys.readouterr().out
        assert _sbe_row(printed).startswith(f"pseudo: SBE ({name})"), printed
        assert f"SOD {name}" in printed and "SOD classic MB+ saliency" in printed
        summary = salmask.run("demo", args, stages=list(UP_TO_PSEUDO))  # every stage done: reads the manifests
        assert summary["saliency"]["source"] == source and summary["saliency"]["name"] == name
        assert summary["sod_sources"][source]["name"] == name
        html = build_report(work)
        assert f"pseudo masks: SBE ({name})" in html, source
        sod_cells = re.findall(r"<tr><td>([^<]*)</td><td>0\.\d{4}</td>", html)
        assert set(sod_cells) == {"classic MB+ saliency", name}, sod_cells
        for other, (_, other_name) in cases.items():
            if other not in (source, "classic"):
                assert other_name not in html and other_name not in printed
    assert saliency_record(work) == {"source": "rgbsod", "encoder": "swin_tiny_patch4_window7_224"}

    # A manifest written before the stage recorded its model (the onnx run again, then the field removed): the
    # work dir's config.yaml fills it in while the stage hash recomputed from it matches, and only then.
    assert main(["run", "demo", *base, "saliency.source=onnx", f"saliency.model={model}",
                 "--stages", "saliency,eval_sod"]) == 0
    manifest_path = work / "saliency" / "manifest.json"
    manifest = read_json(manifest_path)
    assert manifest["model"] == "toy_sod.onnx"
    write_json(manifest_path, {k: v for k, v in manifest.items() if k != "model"})
    sod_path = work / "eval_sod" / "manifest.json"
    write_json(sod_path, {k: v for k, v in read_json(sod_path).items() if k != "sources"})
    assert saliency_record(work) == {"source": "onnx", "model": "toy_sod.onnx"}
    assert sod_records(work)["classic"] == {"source": "classic", "method": "mbd"}
    config = work / "config.yaml"
    config.write_text(config.read_text().replace(str(model), str(tmp_path / "another.onnx")))
    entries = saliency_entries(work)
    assert entries["saliency"] == {"source": "onnx", "name": "ONNX saliency, model not recorded"}
    assert entries["sod_sources"]["classic"]["name"] == "classic saliency, method not recorded"
    assert "pseudo masks: SBE (ONNX saliency, model not recorded)" in build_report(work)


def test_report_without_a_saliency_stage_says_so(tmp_path: Path):
    from salmask.report.html import EVAL_STAGES, metrics_section

    manifests = {st.name: None for st in EVAL_STAGES}
    manifests["eval_pseudo"] = {"mIoU": 40.0, "Acc": 60.0, "Acc_class": 50.0, "fwIoU": 45.0}
    html = metrics_section(tmp_path, manifests)
    assert "pseudo masks: SBE (saliency of an unrecorded source)" in html and "RGB-SOD" not in html
