"""``salmask select``: the Salient Object Selector as a standalone tool on any pseudo-mask folder."""
from __future__ import annotations

import argparse


def add_select_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pseudo", required=True, help="folder of pseudo-mask PNGs (index or palette)")
    p.add_argument("--saliency", required=True, help="folder of grayscale saliency PNGs, same names")
    p.add_argument("--out", required=True, help="output folder (every input mask ends up here)")
    p.add_argument("--labels", help="image labels: JSON {id: [classes]} or 'id c1 c2' lines "
                                    "(default: the classes present in each pseudo mask)")
    p.add_argument("--soft", help="folder of {id}.npz soft scores (keys, scores) for --mode alpha")
    p.add_argument("--gt", help="ground-truth masks: report metrics before/after")
    p.add_argument("--num-classes", type=int, default=21, help="classes, background included (default 21, VOC)")
    p.add_argument("--classes", choices=["voc", "none"], default="voc", help="class names for the report (voc: VOC's with 21 classes)")
    p.add_argument("--mode", choices=["sep", "alpha", "auto"], default="sep",
                   help="sep: Algorithm 1 (replace); alpha: the α* form (fuse, with --soft); auto: no threshold, "
                        "replace where the judge scores the saliency mask above the pseudo mask")
    p.add_argument("--judge", choices=["boundary", "classifier"], default="boundary",
                   help="auto: boundary (the boundary map along each mask's outline, --boundary) or classifier "
                        "(the CAM classifier, --cam and --images)")
    p.add_argument("--boundary", help="auto, boundary judge: folder of {id}.npz boundary maps (a run's make_boundary)")
    p.add_argument("--images", help="auto, classifier judge: folder of the {id}.jpg/.png images")
    p.add_argument("--cam", help="auto, classifier judge: the CAM classifier's checkpoint (a run's train_cam/model.pt)")
    p.add_argument("--device", default="cpu", help="auto, classifier judge: where the classifier runs (cpu | cuda)")
    p.add_argument("--t0", type=float, default=0.4, help="replace a salient class's mask when IoU > t0 (0.4)")
    p.add_argument("--t1", type=float, default=0.2, help="a non-salient class needs IoU > t0 + t1 (t1 0.2)")
    p.add_argument("--tau", type=float, default=1.4, help="alpha: α* = IoU + n* counts only above tau (1.4)")
    p.add_argument("--eta", type=float, default=0.75, help="a class is salient when n* >= eta (0.75)")
    p.add_argument("--sal-thres", type=float, default=0.5, help="saliency above this is salient (0.5)")
    p.add_argument("--salient-classes", help="comma-separated class names/ids treated as salient")
    p.add_argument("--allow-missing", action="store_true", help="pass masks without saliency through")
    p.add_argument("--sweep", action="store_true", help="also sweep the replacement threshold (needs --gt)")
    p.add_argument("--json", help="write the report here (default OUT/report.json)")
    p.add_argument("--plot", help="sweep plot PNG (default OUT_sweep.png beside OUT, not among the masks)")


def select_main(a: argparse.Namespace) -> None:
    from pathlib import Path

    from salmask.api import select_masks
    from salmask.data.meta import VOC
    from salmask.io import write_json
    from salmask.select.sos import format_report
    from salmask.select.sweep import format_sweep_table, plot_sweep, sweep

    names = VOC.classes if a.classes == "voc" and a.num_classes == VOC.num_classes else None
    salient = a.salient_classes.split(",") if a.salient_classes else None
    report = select_masks(a.pseudo, a.saliency, a.labels, out=a.out, num_classes=a.num_classes, mode=a.mode,
                          t0=a.t0, t1=a.t1, tau=a.tau, eta=a.eta, sal_thres=a.sal_thres, salient_classes=salient,
                          soft=a.soft, gt=a.gt, judge=a.judge, boundary=a.boundary, images=a.images, cam=a.cam,
                          class_names=names,
                          allow_missing=a.allow_missing, device=a.device, progress=True)
    salient = report["config"]["salient_classes"]
    print(format_report(report))
    out = Path(a.out)
    if a.sweep:
        if not a.gt:
            from salmask.errors import ConfigError
            raise ConfigError("--sweep needs --gt")
        rows = sweep(a.pseudo, a.saliency, a.gt, num_classes=a.num_classes, t1=0.0, eta=a.eta,
                     salient_classes=salient, sal_thres=a.sal_thres, labels=a.labels, class_names=names,
                     allow_missing=a.allow_missing, progress=True)
        print(format_sweep_table(rows))
        report["sweep"] = rows
        print(plot_sweep(rows, a.plot or out.parent / f"{out.name}_sweep.png"))
    write_json(a.json or out / "report.json", report)
