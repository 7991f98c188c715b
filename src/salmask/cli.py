"""The ``salmask`` command line: run the pipeline, the demo, and the standalone tools."""
from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from pathlib import Path

from salmask.errors import SalmaskError


def _cmd_run(a: argparse.Namespace) -> None:
    from salmask.api import run
    from salmask.summary import format_summary

    stages = [s.strip() for s in a.stages.split(",") if s.strip()] if a.stages else None
    summary = run(a.config, a.overrides, stages=stages, force=a.force)
    if any(k in summary for k in ("cam", "sod", "sbe", "sos", "seg")):
        print(format_summary(summary))


def _cmd_demo(a: argparse.Namespace) -> None:
    from salmask.demo import run_demo

    run_demo(Path(a.work_dir), quick=a.quick, overrides=a.overrides)


def _cmd_study(a: argparse.Namespace) -> None:
    from salmask.study import run_study
    from salmask.variants import ABLATIONS

    names = tuple(ABLATIONS) if a.ablation is None else tuple(n for n in a.ablation.split(",") if n)
    run_study(a.config, a.overrides, work_dir=Path(a.work_dir) if a.work_dir else None, ablations=names)


def _cmd_stages(a: argparse.Namespace) -> None:
    from salmask.pipeline import STAGES

    for st in STAGES.values():
        print(f"{st.name:<22} {first_sentence(st.doc or '')}")


def first_sentence(doc: str) -> str:
    """The first sentence of a docstring, whole: its first paragraph's lines joined, up to the first '.', '!'
    or '?' followed by a space or the end (the whole paragraph when there is none)."""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    match = re.match(r"(.*?[.!?])(?=\s|$)", paragraph)
    return match.group(1) if match else paragraph


def _cmd_eval(a: argparse.Namespace) -> None:
    from salmask.api import segmentation_metrics
    from salmask.io import write_json
    from salmask.metrics.confusion import format_table

    names = None
    if a.classes == "voc":
        from salmask.data.meta import VOC
        names = VOC.classes
    n = a.num_classes if a.num_classes else (len(names) if names else 21)
    scores = segmentation_metrics(a.pred, a.gt, num_classes=n, class_names=names)
    print(format_table(scores, f"{scores['images']} images"))
    if a.json:
        write_json(a.json, scores)


def _cmd_sod_eval(a: argparse.Namespace) -> None:
    from salmask.api import sod_metrics
    from salmask.io import write_json

    scores = sod_metrics(a.pred, a.gt)
    print("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in scores.items()))
    if a.json:
        write_json(a.json, scores)


def _folder_images(folder: Path) -> dict[str, Path]:
    """``{stem: path}`` of the .jpg/.png images in ``folder``, sorted; an InputError naming it when it has none."""
    from salmask.data.duts import IMAGE_SUFFIXES
    from salmask.errors import InputError

    paths = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if not paths:
        raise InputError(folder, "no .jpg/.png images")
    return paths


def _cmd_saliency(a: argparse.Namespace) -> None:
    import time
    from importlib import resources

    from salmask.config import load_config
    from salmask.errors import InputError
    from salmask.io import write_gray
    from salmask.registry import Context
    from salmask.saliency.stage import predict_files, predictor

    images = Path(a.images)
    if not images.is_dir():
        raise InputError(images, "image folder not found")
    paths = _folder_images(images)
    overrides = [f"saliency.source={a.source}", *([f"saliency.model={a.model}"] if a.model else []),
                 f"device={a.device}", *a.overrides]
    with resources.as_file(resources.files("salmask.configs") / "base.yaml") as base:
        cfg = load_config(str(base), overrides)  # base.yaml's defaults, as a pipeline run would have them
    out = Path(a.out)
    ctx = Context(cfg, out)
    t0 = time.perf_counter()
    predict, batch = predictor(ctx, a.source)
    t1 = time.perf_counter()
    for i, m in predict_files(list(paths), paths.__getitem__, predict, batch):
        write_gray(out / f"{i}.png", m)
    t2 = time.perf_counter()
    print(f"{len(paths)} maps in {out} from {a.source}: {t2 - t1:.1f} s, {len(paths) / (t2 - t1):.2f} images/s "
          f"(+{t1 - t0:.1f} s loading the model)")


def _cmd_segment(a: argparse.Namespace) -> None:
    import time

    from salmask.api import load, read_image
    from salmask.data.meta import voc_palette
    from salmask.errors import InputError
    from salmask.io import write_png

    work = Path(a.work_dir)
    predictor = load(work, device=a.device, overrides=a.overrides)  # the run's inference settings
    checkpoint = work / "train_seg" / "model.pt"
    if not checkpoint.is_file():
        raise InputError(checkpoint, "no trained DeepLab in this work directory; run its train_seg stage first")
    images = Path(a.images)
    if images.is_dir():
        paths = _folder_images(images)
    elif images.is_file():
        paths = {images.stem: images}
    else:
        raise InputError(images, "no such image or folder")
    s = predictor.settings.seg
    t0 = time.perf_counter()
    predictor.network("deeplab")
    out, palette = Path(a.out), voc_palette()
    t1 = time.perf_counter()
    for i, path in paths.items():
        write_png(out / f"{i}.png", predictor.segment(read_image(path)), palette)
    t2 = time.perf_counter()
    print(f"{len(paths)} masks in {out} (scales {list(s.scales)}, flip {s.flip}, CRF {s.crf}): {t2 - t1:.1f} s, "
          f"{len(paths) / (t2 - t1):.2f} images/s (+{t1 - t0:.1f} s loading the model)")


def _cmd_select(a: argparse.Namespace) -> None:
    from salmask.select.cli import select_main

    select_main(a)


def _cmd_report(a: argparse.Namespace) -> None:
    from salmask.report.html import write_report

    print(write_report(Path(a.work_dir)))


def _cmd_show(a: argparse.Namespace) -> None:
    from salmask.report.grid import show_image

    print(show_image(Path(a.work_dir), a.id, Path(a.out) if a.out else None))


def _cmd_bench(a: argparse.Namespace) -> None:
    from salmask.bench import run_bench

    run_bench(quick=a.quick, json_out=a.json, device=a.device)


def _cmd_prepare(a: argparse.Namespace) -> None:
    from salmask.utils.log import setup_logging

    if a.dataset == "voc":
        from salmask.data.prepare import prepare_voc

        setup_logging()
        prepare_voc(a.voc, a.sbd, force=a.force)
    else:
        import torch

        from salmask.data.prepare import prepare_coco
        from salmask.utils import dist

        dist.init_distributed(torch.device("cpu"))  # under torchrun, ranks share the rasterising
        setup_logging()
        prepare_coco(a.root, a.work_dir, [s.strip() for s in a.splits.split(",") if s.strip()])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="salmask", description="Saliency-guided pseudo masks for WSSS.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the pipeline from a preset or YAML config")
    r.add_argument("config", help="preset (demo, voc, voc_cpu, voc_small, voc_v3plus, coco) or a YAML file")
    r.add_argument("overrides", nargs="*", help="key=value overrides, e.g. dataset.root=/data")
    r.add_argument("--stages", help="comma-separated stages to run (default: all enabled)")
    r.add_argument("--force", action="store_true", help="rerun the selected stages even if complete")
    r.set_defaults(fn=_cmd_run)

    d = sub.add_parser("demo", help="generate the synthetic set and run every stage on it")
    d.add_argument("--work-dir", default="work/demo", help="where the run writes (default: work/demo)")
    d.add_argument("--quick", action="store_true", help="a few-minute version for tests")
    d.add_argument("overrides", nargs="*", help="key=value overrides")
    d.set_defaults(fn=_cmd_demo)

    st = sub.add_parser("study", help="a preset's whole pipeline plus SBE's ablation in one table and report")
    st.add_argument("config", help="preset or YAML file, as for run")
    st.add_argument("overrides", nargs="*", help="key=value overrides, e.g. dataset.root=/data")
    st.add_argument("--work-dir", help="default: the config's work_dir")
    st.add_argument("--ablation", help="comma-separated variants (default all: bes, sbe_labels_bes_loss, "
                                       "sbe_classic_saliency; empty for none)")
    st.set_defaults(fn=_cmd_study)

    s = sub.add_parser("stages", help="list the stages in pipeline order")
    s.set_defaults(fn=_cmd_stages)

    e = sub.add_parser("eval", help="score a folder of mask PNGs against ground truth")
    e.add_argument("--pred", required=True, help="folder of predicted {id}.png class-id masks")
    e.add_argument("--gt", required=True, help="folder of ground-truth {id}.png masks (255 ignored)")
    e.add_argument("--num-classes", type=int, default=None, help="default 21 (VOC)")
    e.add_argument("--classes", choices=["voc", "none"], default="none", help="class names for the table")
    e.add_argument("--json", help="write the scores as JSON here")
    e.set_defaults(fn=_cmd_eval)

    se = sub.add_parser("sod-eval", help="score saliency maps: MAE, max/mean/adaptive F, S, E")
    se.add_argument("--pred", required=True, help="folder of saliency maps {id}.png (grayscale)")
    se.add_argument("--gt", required=True, help="folder of binary ground-truth masks {id}.png")
    se.add_argument("--json", help="write the metrics as JSON here")
    se.set_defaults(fn=_cmd_sod_eval)

    sa = sub.add_parser("saliency", help="saliency maps of a folder of images from the classic or an ONNX source")
    sa.add_argument("--source", choices=["classic", "onnx"], required=True,
                    help="classic: training-free MB+; onnx: a pretrained ONNX model (--model)")
    sa.add_argument("--images", required=True, help="folder of .jpg/.png images")
    sa.add_argument("--out", required=True, help="folder for the {stem}.png maps")
    sa.add_argument("--model", help="onnx: the ONNX model (saliency.model)")
    sa.add_argument("--device", default="auto", help="auto | cpu | cuda")
    sa.add_argument("overrides", nargs="*", help="saliency.KEY=VALUE settings, e.g. saliency.batch_size=4")
    sa.set_defaults(fn=_cmd_saliency)

    sg = sub.add_parser("segment", help="class-id masks of new images from a run's trained DeepLab")
    sg.add_argument("work_dir", help="the run's work directory (its train_seg/model.pt and config.yaml)")
    sg.add_argument("images", help="an image or a folder of .jpg/.png images")
    sg.add_argument("--out", required=True, help="folder for the {stem}.png masks (VOC palette)")
    sg.add_argument("--device", default="auto", help="auto | cpu | cuda")
    sg.add_argument("overrides", nargs="*", help="seg.KEY=VALUE inference settings instead of the run's, e.g. "
                                                 "seg.scales=[1.0] seg.crf=false")
    sg.set_defaults(fn=_cmd_segment)

    sel = sub.add_parser("select", help="Salient Object Selector on any folder of pseudo masks")
    from salmask.select.cli import add_select_arguments
    add_select_arguments(sel)
    sel.set_defaults(fn=_cmd_select)

    rep = sub.add_parser("report", help="write an HTML report of a work directory")
    rep.add_argument("work_dir", help="a run's work directory; the report is written there as report.html")
    rep.set_defaults(fn=_cmd_report)

    sh = sub.add_parser("show", help="render the per-stage grid of one image to PNG")
    sh.add_argument("id", help="the image id")
    sh.add_argument("--work-dir", default="work/demo", help="the run's work directory (default: work/demo)")
    sh.add_argument("--out", help="PNG to write (default: WORK_DIR/show/ID.png)")
    sh.set_defaults(fn=_cmd_show)

    pr = sub.add_parser("prepare", help="turn official dataset downloads into what salmask reads")
    prs = pr.add_subparsers(dest="dataset", required=True)
    pv = prs.add_parser("voc", help="SegmentationClassAug/ and train_aug.txt from VOC 2012 + SBD")
    pv.add_argument("--voc", required=True, help="VOC2012 folder (or the folder holding VOCdevkit/)")
    pv.add_argument("--sbd", required=True, help="SBD's benchmark_RELEASE folder (or its dataset/)")
    pv.add_argument("--force", action="store_true", help="rewrite a folder that is not marked complete")
    pc = prs.add_parser("coco", help="index and rasterised mask cache from the COCO 2014 JSON annotations")
    pc.add_argument("--root", required=True, help="folder holding annotations/ and train2014/ val2014/")
    pc.add_argument("--work-dir", default="work/coco", help="the work directory of the runs (default: the "
                                                            "coco preset's)")
    pc.add_argument("--splits", default="train,val", help="comma-separated COCO 2014 splits to index and "
                                                          "rasterise (default: train,val)")
    pr.set_defaults(fn=_cmd_prepare)

    b = sub.add_parser("bench", help="throughput / memory / speed-up against reference formulations")
    b.add_argument("--quick", action="store_true", help="smaller models, fewer images and repeats (minutes)")
    b.add_argument("--json", help="also write the machine, the settings and every row as JSON here")
    b.add_argument("--device", default="auto", help="auto (CPU, and CUDA when present) | cpu | cuda[:N]")
    b.set_defaults(fn=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides after an option (argparse ends a '*' positional at the first option)
        if hasattr(args, "overrides") and all(re.fullmatch(r"[A-Za-z_][\w.]*=.*", x) for x in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over ulimit -f a write fails with EFBIG: a clear error
    try:
        args.fn(args)
    except SalmaskError as e:
        print(f"salmask: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("salmask: interrupted; finished artefacts are kept and a rerun resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
