"""``salmask report WORK_DIR``: one self-contained HTML page showing what every stage produced.

Sections: the per-stage metric table (CAM → SBE → SOS → segmentation, with the demo's ablation rows
and the saliency metrics), per-class IoU bars, training-loss curves, threshold sweeps, a legend, and
image grids (see :mod:`salmask.report.grid`) for a deterministic sample of pseudo-split and val
images. Charts and tiles are embedded as base64 data URIs, so the page is a single file that opens
offline; it is written atomically to ``{work_dir}/report.html``. Nothing else in the work directory
is written. Missing stages show as "not run"; the page never fails on an incomplete run.
"""
from __future__ import annotations

import base64
import io
import math
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image

import salmask.stages  # noqa: F401  (registers the stages)
from salmask.errors import InputError
from salmask.registry import STAGES
from salmask.variants import variant_label
from salmask.io import read_json, write_bytes_atomic
from salmask.report.grid import (BOUNDARY_CODES, COLUMNS, Tile, WorkView, display_size, fit, image_tiles,
                                 legend_classes, open_work_dir)
from salmask.report.sources import saliency_record, sod_records
from salmask.saliency.names import saliency_name

N_PSEUDO, N_VAL = 6, 4
TILE_SIDE = 128
HEADLINE = ("mIoU", "Acc", "Acc_class", "fwIoU")
SMOKE_BANNER = ("SMOKE RUN (--quick): every stage ran, but its models trained for seconds, so these figures "
                "rank nothing. `salmask demo` (no --quick) gives the comparison.")
EVAL_STAGES = tuple(st for st in STAGES.values() if st.masks)
"""The stages that score against ground truth, in pipeline order: the rows of the metric table."""
TRAINED = tuple(st for st in STAGES.values() if st.model is not None)
"""The training stages, whose loss curves the report draws."""
_NOT_CURVES = {"step", "epoch", "lr", "seconds"}

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1700px}
h1{margin-bottom:4px} h2{margin-top:32px;border-bottom:1px solid #ccc;padding-bottom:4px}
.meta{color:#555} .problem{color:#a40}
table.metrics{border-collapse:collapse;font-size:14px}
table.metrics td,table.metrics th{padding:4px 10px;border-bottom:1px solid #e4e4e4;text-align:right}
table.metrics td:first-child,table.metrics th:first-child{text-align:left}
tr.notrun td{color:#999;font-style:italic}
img.chart{max-width:100%;border:1px solid #eee}
table.grid{border-collapse:collapse} table.grid th{font-size:13px;font-weight:600;padding:2px}
table.grid td{padding:2px;vertical-align:top}
table.grid th.row{text-align:left;font-weight:normal;width:120px;word-break:break-all}
.tile img{display:block;image-rendering:auto}
.missing{background:#c8c8c8;color:#444;display:flex;align-items:center;justify-content:center;
 text-align:center;font-size:12px;overflow:hidden}
.sw{display:inline-block;width:12px;height:12px;border:1px solid #666;vertical-align:middle;margin-right:3px}
.legend span.item{display:inline-block;margin:2px 12px 2px 0;font-size:13px}
.row .item{display:block;font-size:12px}
.cambar{display:inline-block;width:160px;height:12px;vertical-align:middle;
 background:linear-gradient(to right,#00007f,#0000ff,#007fff,#00ffff,#7fff7f,#ffff00,#ff7f00,#ff0000,#7f0000)}
"""


def write_report(work_dir: Path) -> Path:
    """Write ``{work_dir}/report.html`` (self-contained) and return its path."""
    work_dir = Path(work_dir).expanduser().resolve()
    if not work_dir.is_dir():
        raise InputError(work_dir, "work directory not found")
    out = work_dir / "report.html"
    write_bytes_atomic(out, build_report(work_dir).encode())
    return out


def build_report(work_dir: Path) -> str:
    """The HTML text of the report of ``work_dir``."""
    work_dir = Path(work_dir).expanduser().resolve()
    view = open_work_dir(work_dir)
    manifests = {st.name: _read_metrics(work_dir / st.name / "manifest.json") for st in EVAL_STAGES}
    pseudo_rows = [(i, image_tiles(view, i)) for i in pick_pseudo_ids(view)]
    val_rows = [(i, image_tiles(view, i)) for i in pick_val_ids(view)]
    all_tiles = [t for _, ts in pseudo_rows + val_rows for t in ts]
    sections = [
        ("metrics", "Metrics per stage", metrics_section(work_dir, manifests)),
        ("per-class", "Per-class IoU", _img(per_class_chart(manifests, view.meta.classes), "per-class IoU")),
        ("losses", "Training losses", _img(loss_chart(work_dir), "training losses")),
        ("sweeps", "Threshold sweeps", sweeps_section(work_dir)),
        ("timings", "Wall time per stage", timings_section(work_dir)),
        ("legend", "Legend", legend_section(all_tiles, view)),
        ("grid-pseudo", f"Pseudo-split images ({len(pseudo_rows)} sampled)", grid_table(pseudo_rows, view)),
        ("grid-val", f"Val images ({len(val_rows)} sampled)", grid_table(val_rows, view)),
    ]
    nav = " · ".join(f'<a href="#{sid}">{escape(title.split(" (")[0])}</a>' for sid, title, _ in sections)
    problem = f'<p class="problem">{escape(view.problem)}</p>' if view.problem else ""
    if _is_smoke_run(work_dir):
        problem += f'<p class="problem">{escape(SMOKE_BANNER)}</p>'
    body = "\n".join(f'<section id="{sid}"><h2>{escape(title)}</h2>\n{html}\n</section>'
                     for sid, title, html in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>salmask report: {escape(work_dir.name)}</title><style>{CSS}</style></head><body>\n"
            f"<h1>salmask report</h1>\n<p class=\"meta\">work dir <code>{escape(str(work_dir))}</code> · "
            f"dataset <b>{escape(view.kind)}</b> ({view.meta.num_fg} foreground classes)</p>\n"
            f"{problem}<nav>{nav}</nav>\n{body}\n</body></html>\n")


def _is_smoke_run(work_dir: Path) -> bool:
    """Whether ``work_dir`` holds a ``salmask demo --quick`` run (its ``summary.json`` says so)."""
    try:
        summary = read_json(work_dir / "summary.json")
    except InputError:
        return False
    return isinstance(summary, dict) and bool(summary.get("smoke"))


# ---- sampling ------------------------------------------------------------------------------------

def spread(ids: list[str], n: int) -> list[str]:
    """``n`` ids evenly spaced over ``ids`` (all of them when there are fewer)."""
    if n <= 0:
        return []
    if len(ids) <= n or n == 1:
        return list(ids[:n])
    return [ids[round(k * (len(ids) - 1) / (n - 1))] for k in range(n)]


def _with_artefact(ids: list[str], folder: Path, suffix: str) -> list[str]:
    """The ids having ``folder/{id}{suffix}``, or all ids when none (or the folder) has one."""
    if not folder.is_dir():
        return ids
    have = [i for i in ids if (folder / f"{i}{suffix}").is_file()]
    return have or ids


def pick_pseudo_ids(view: WorkView, n: int = N_PSEUDO) -> list[str]:
    """Up to ``n`` pseudo-split ids with ground truth and CAMs, evenly spread; up to two of them are
    images the Selector replaced (the cases worth looking at). Without a readable dataset, ids are
    taken from the CAM folder."""
    w = view.work_dir
    ids = view.split_ids("pseudo")
    if ids:
        images = view.splits["pseudo"]
        with_gt = [i for i in ids if (p := images.mask_path(i)) is not None and p.is_file()]
        ids = _with_artefact(with_gt or ids, w / "make_cam", ".npz")
    else:
        ids = sorted(p.stem for p in (w / "make_cam").glob("*.npz"))
    try:
        replaced = [i for i in read_json(w / "select" / "report.json").get("replaced_ids", []) if i in ids][:min(2, n)]
    except (InputError, AttributeError):
        replaced = []
    rest = [i for i in ids if i not in replaced]
    return replaced + spread(rest, n - len(replaced))


def pick_val_ids(view: WorkView, n: int = N_VAL) -> list[str]:
    """Up to ``n`` val ids, preferring those with a segmentation prediction, evenly spread."""
    folder = view.work_dir / "infer_seg" / "val"
    ids = view.split_ids("val") or sorted(p.stem for p in folder.glob("*.png"))
    return spread(_with_artefact(ids, folder, ".png"), n)


# ---- metrics -------------------------------------------------------------------------------------

def _read_metrics(path: Path) -> dict | None:
    try:
        metrics = read_json(path).get("metrics")
    except (InputError, AttributeError):
        return None
    return metrics if isinstance(metrics, dict) else None


def _num(v: object, fmt: str = "{:.2f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def metrics_section(work_dir: Path, manifests: dict[str, dict | None]) -> str:
    """The stage table (mIoU etc. in percent), ablation rows, SOD table and the Selector's counts."""
    head = "".join(f"<th>{h}</th>" for h in ("stage", *HEADLINE, "single-class mIoU", "images", "note"))
    rows = []

    def row(label: str, m: dict | None, note: str = "", images: object = None) -> None:
        if m is None:
            rows.append(f'<tr class="notrun"><td>{escape(label)}</td>'
                        f'<td colspan="{len(HEADLINE) + 3}">not run</td></tr>')
            return
        cells = "".join(f"<td>{_num(m.get(k))}</td>" for k in HEADLINE)
        single = m.get("single_class") or {}
        rows.append(f"<tr><td>{escape(label)}</td>{cells}<td>{_num(single.get('mIoU'))}</td>"
                    f"<td>{_num(images, '{}')}</td><td>{escape(note)}</td></tr>")

    def images_of(stage: str) -> object:
        try:
            return read_json(work_dir / stage / "manifest.json").get("images")
        except (InputError, AttributeError):
            return None

    for st in EVAL_STAGES:
        stage, label = st.name, st.label
        m = manifests[stage]
        note = ""
        if stage == "eval_cam" and m is not None:
            label = f"CAM (background t={_num(m.get('threshold'))})"
            note = f"best t={_num(m.get('best_threshold'))}: mIoU {_num(m.get('best_mIoU'))}"
        if stage == "eval_pseudo" and m is not None:
            note = _bg_note(work_dir / "make_pseudo", work_dir / "eval_pseudo")
            label = f"{label} ({saliency_name(saliency_record(work_dir))})"
        if stage == "eval_select" and m is not None:
            note = _select_note(work_dir / "eval_select")
        if stage == "eval_pseudo":
            for vdir in sorted((work_dir / "ablation").glob("*/eval_pseudo")):
                name = vdir.parent.name
                row(f"ablation: {variant_label(name)}", _read_metrics(vdir / "manifest.json"),
                    _bg_note(vdir.parent / "make_pseudo", vdir), images=images_of(f"ablation/{name}/eval_pseudo"))
        row(label, m, note, images_of(stage))
        if stage == "eval_pseudo" and m is not None and isinstance(m.get("crf"), dict):
            row("pseudo masks: SBE + dense CRF (walk.crf)", m["crf"], "BES's CRF on the walk's hard masks",
                images_of(stage))
        if stage == "eval_seg" and m is not None and isinstance(m.get("fit"), dict):
            fit = m["fit"]
            row("segmentation (train): agreement with its training masks", {"mIoU": fit.get("agreement")},
                "the fit, no ground truth", fit.get("images"))
            if "gt" in fit:
                row("segmentation (train): the same images' GT", {"mIoU": fit["gt"]}, "", fit.get("images"))
    html = f'<table class="metrics"><tr>{head}</tr>\n' + "\n".join(rows) + "</table>"
    html += "<p class=\"meta\">IoU and accuracies in percent; single-class mIoU over the images with " \
            "one foreground class.</p>"
    return html + sod_table(work_dir) + selector_line(work_dir)


def _bg_note(make_dir: Path, eval_dir: Path) -> str:
    """The walk's background score (and how it was chosen) and the score ground truth would have chosen."""
    try:
        made, sweep = read_json(make_dir / "manifest.json"), read_json(eval_dir / "manifest.json").get("bg_sweep")
    except (InputError, AttributeError):
        return ""
    if made.get("bg_score") is None:
        return ""
    note = f"bg {made['bg_score']:.2f}" + (" (auto: best agreement with saliency)" if "bg_score_auto" in made else "")
    if sweep:
        note += f"; GT-best bg {sweep['best_score']:.2f}: mIoU {_num(sweep['best_mIoU'])}"
    return note + (f"; walk in {made['boundary']} edges" if made.get("boundary") else "")


def _select_note(eval_dir: Path) -> str:
    """How the Selector decided, and the sweep's ground-truth-best threshold of Algorithm 1 beside it."""
    try:
        made = read_json(eval_dir / "manifest.json")
    except InputError:
        return ""
    auto, best = made.get("auto_vs_sweep"), made.get("sweep_best")
    if isinstance(auto, dict):
        return (f"auto: no threshold, judged per image; GT-best t0 {auto['best_t0']:.2f} of Algorithm 1's sweep: "
                f"mIoU {_num(auto['best_mIoU'])}")
    if isinstance(best, dict):
        return f"GT-best t0 {best['t0']:.2f} of the sweep: mIoU {_num(best['mIoU'])}"
    return ""


def stage_seconds(stage_dir: Path) -> float | None:
    """The wall time a finished stage recorded in its manifest (``None`` if it has none)."""
    try:
        return float(read_json(stage_dir / "manifest.json")["seconds"])
    except (InputError, KeyError, TypeError, ValueError):
        return None


def timings_section(work_dir: Path) -> str:
    """Each finished stage's wall time (main run, then each ablation variant's own stages) in a table."""
    runs = [("main run", work_dir)] + [(f"ablation: {variant_label(d.name)}", d)
                                       for d in sorted((work_dir / "ablation").glob("*")) if d.is_dir()]
    rows = []
    for label, folder in runs:
        own = [(st, stage_seconds(folder / st)) for st in STAGES
               if (folder / st).is_dir() and not (folder / st).is_symlink()]
        own = [(st, sec) for st, sec in own if sec is not None]
        if own:
            cells = ", ".join(f"{st} {sec / 60:.1f}" for st, sec in own)
            rows.append(f"<tr><td>{escape(label)}</td><td>{sum(sec for _, sec in own) / 60:.1f}</td>"
                        f"<td>{escape(cells)}</td></tr>")
    if not rows:
        return "<p>no finished stage</p>"
    return ('<table class="metrics"><tr><th>run</th><th>minutes</th><th>per stage (minutes)</th></tr>\n'
            + "\n".join(rows) + "</table>")


def sod_table(work_dir: Path) -> str:
    sod = _read_metrics(work_dir / "eval_sod" / "manifest.json")
    if not sod:
        return ""
    keys = ("MAE", "maxF", "meanF", "adpF", "Sm", "Em", "images")
    head = "".join(f"<th>{k}</th>" for k in ("saliency", *keys))
    names = {src: saliency_name(record) for src, record in sod_records(work_dir).items()}
    body = "".join(f"<tr><td>{escape(names.get(src, src))}</td>"
                   + "".join(f"<td>{_num(m.get(k), '{}' if k == 'images' else '{:.4f}')}</td>" for k in keys)
                   + "</tr>" for src, m in sod.items() if isinstance(m, dict))
    return f'<h3>Saliency (SOD test set)</h3><table class="metrics"><tr>{head}</tr>{body}</table>'


def selector_line(work_dir: Path) -> str:
    try:
        rep = read_json(work_dir / "select" / "report.json")
        return (f"<p>Salient Object Selector ({escape(str(rep.get('mode')))}): replaced "
                f"{int(rep['replaced'])} of {int(rep['single_class'])} single-class pseudo masks by the "
                f"saliency mask ({int(rep['images'])} images).</p>")
    except (InputError, KeyError, TypeError, ValueError, AttributeError):
        return ""


# ---- charts --------------------------------------------------------------------------------------

def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def per_class_chart(manifests: dict[str, dict | None], classes: tuple[str, ...]) -> bytes | None:
    """Grouped bars: IoU of every class at each evaluated stage; None when no stage was evaluated."""
    series = [(st.label, m["per_class"]) for st in EVAL_STAGES
              if (m := manifests[st.name]) and isinstance(m.get("per_class"), dict)]
    if not series:
        return None
    names = list(classes) + [c for _, pc in series for c in pc if c not in classes]
    names = [c for c in dict.fromkeys(names) if any(c in pc for _, pc in series)]
    fig, axes = _figure(min(4 + 0.45 * len(names) * max(1, len(series) / 2), 30), 4.2)
    ax = axes[0][0]
    x = np.arange(len(names))
    width = 0.8 / len(series)
    for k, (label, pc) in enumerate(series):
        vals = [v if isinstance(v := pc.get(c), (int, float)) else np.nan for c in names]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(series))
    fig.tight_layout()
    return _png(fig)


def loss_chart(work_dir: Path) -> bytes:
    """One panel per training stage: ``loss`` (bold) and its logged parts against step (or epoch)."""
    rows = math.ceil(len(TRAINED) / 2)
    fig, axes = _figure(12, 3.25 * rows, rows, 2)
    for ax, st in zip(axes.flat, TRAINED):
        ax.set_title(st.label, fontsize=10)
        path = work_dir / st.name / "history.json"
        try:
            hist = read_json(path) if path.is_file() else None
        except InputError:
            hist = "unreadable history.json"
        records = [h for h in hist if isinstance(h, dict)] if isinstance(hist, list) else []
        if not records:
            note = hist if isinstance(hist, str) else "not run" if not path.parent.is_dir() else "no history"
            ax.text(0.5, 0.5, note, ha="center", va="center", color="#777", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        xkey = "step" if "step" in records[0] else "epoch"
        keys = [k for k in records[0] if k not in _NOT_CURVES and isinstance(records[0][k], (int, float))]
        for k in sorted(keys, key=lambda k: k != "loss"):
            pts = [(h[xkey], h[k]) for h in records if isinstance(h.get(k), (int, float))
                   and isinstance(h.get(xkey), (int, float)) and math.isfinite(h[k])]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=k, lw=2.0 if k == "loss" else 0.9,
                        color="black" if k == "loss" else None, alpha=1.0 if k == "loss" else 0.8)
        ax.set_xlabel(xkey, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    return _png(fig)


def cam_sweep_chart(work_dir: Path) -> bytes | None:
    """mIoU of the CAMs against the background threshold, the configured one marked."""
    path = work_dir / "eval_cam" / "sweep.json"
    try:
        sweep = read_json(path) if path.is_file() else None
    except InputError:
        return None
    pts = [(s["threshold"], s["mIoU"]) for s in sweep or [] if isinstance(s, dict)
           and isinstance(s.get("threshold"), (int, float)) and isinstance(s.get("mIoU"), (int, float))]
    if not pts:
        return None
    xs, ys = zip(*sorted(pts))
    fig, axes = _figure(5.5, 3.4)
    ax = axes[0][0]
    ax.plot(xs, ys, marker="o", ms=3)
    chosen = (_read_metrics(work_dir / "eval_cam" / "manifest.json") or {}).get("threshold")
    if isinstance(chosen, (int, float)):
        ax.axvline(chosen, color="red", ls="--", lw=1, label=f"used t={chosen:.2f}")
        ax.legend(fontsize=8)
    ax.set_xlabel("background threshold t")
    ax.set_ylabel("CAM mIoU (%)")
    ax.set_title("CAM background-threshold sweep", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def sweeps_section(work_dir: Path) -> str:
    parts = []
    cam = cam_sweep_chart(work_dir)
    if cam is not None:
        parts.append(_img(cam, "CAM threshold sweep"))
    sos = work_dir / "eval_select" / "sweep.png"
    if sos.is_file():
        data = sos.read_bytes()
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            parts.append(_img(data, "Selector sweep (eval_select/sweep.png)"))
    return "\n".join(parts) or '<p class="meta">not run</p>'


# ---- grids ---------------------------------------------------------------------------------------

def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return '<p class="meta">not run</p>'
    return f'<img class="chart" alt="{escape(alt)}" src="{_uri(png, "image/png")}">'


def tile_uri(tile: Tile, size: tuple[int, int]) -> str:
    """Photos as JPEG (small), label maps as PNG (exact colours)."""
    img = Image.fromarray(fit(tile, size))
    buf = io.BytesIO()
    if tile.kind == "photo":
        img.save(buf, format="JPEG", quality=85)
        return _uri(buf.getvalue(), "image/jpeg")
    img.save(buf, format="PNG", optimize=True)
    return _uri(buf.getvalue(), "image/png")


def _swatch(colour: tuple[int, int, int]) -> str:
    return f'<span class="sw" style="background:rgb{tuple(colour)}"></span>'


def grid_table(rows: list[tuple[str, list[Tile]]], view: WorkView) -> str:
    """A table: one row per image (id and its classes' legend), one column per ``COLUMNS`` entry."""
    if not rows:
        return '<p class="meta">no images (split not readable or empty)</p>'
    head = "<tr><th></th>" + "".join(f"<th>{escape(c)}</th>" for c in COLUMNS) + "</tr>"
    body = []
    for image_id, tiles in rows:
        w, h = display_size(tiles, TILE_SIDE)
        cells = []
        for t in tiles:
            if t.rgb is not None:
                inner = f'<img alt="{escape(t.title)}" width="{w}" height="{h}" src="{tile_uri(t, (w, h))}">'
            else:
                inner = f'<div class="missing" style="width:{w}px;height:{h}px">{escape(t.note)}</div>'
            cells.append(f'<td class="tile" data-col="{escape(t.title)}">{inner}</td>')
        legend = "".join(f'<span class="item">{_swatch(col)}{escape(name)}</span>'
                         for _, name, col in legend_classes(tiles, view.meta) if name != "background")
        body.append(f'<tr data-id="{escape(image_id)}"><th class="row"><code>{escape(image_id)}</code>'
                    f"{legend}</th>{''.join(cells)}</tr>")
    return f'<table class="grid">{head}\n' + "\n".join(body) + "</table>"


def legend_section(tiles: list[Tile], view: WorkView) -> str:
    classes = "".join(f'<span class="item">{_swatch(col)}{c} {escape(name)}</span>'
                      for c, name, col in legend_classes(tiles, view.meta))
    codes = "".join(f'<span class="item">{_swatch(col)}{code} {escape(name)}</span>'
                    for code, (name, col) in BOUNDARY_CODES.items())
    return (f'<div class="legend"><p><b>Classes shown</b> (dataset palette): {classes or "none"}</p>'
            f"<p><b>Boundary labels</b>: {codes}</p>"
            f'<p><b>CAM</b>: max over the image\'s classes, 0 <span class="cambar"></span> 1, '
            f"blended with the image. <b>Saliency</b> and <b>boundary map</b>: black 0 to white 1.</p>"
            f'<p>Grey tiles: <i>not run</i> (stage folder absent), <i>no output</i> (stage ran but not on '
            f"this image, e.g. val images have no CAM).</p></div>")
