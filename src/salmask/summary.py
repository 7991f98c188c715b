"""The summary of a run or a study: one object of metrics per evaluated stage, and its printed table."""
from __future__ import annotations

from salmask.report.html import HEADLINE, SMOKE_BANNER
from salmask.saliency.names import saliency_name
from salmask.variants import variant_label


def stage_seconds(results: dict) -> dict[str, float]:
    """Each stage's wall time from a :func:`run_pipeline` result (its manifest's ``seconds``)."""
    return {st: r["seconds"] for st, r in results.items() if isinstance(r, dict) and "seconds" in r}


def pseudo_metrics(results: dict) -> dict:
    """A run's pseudo-mask metrics with the background score it used and the sweep's ground-truth best."""
    out = dict(results["eval_pseudo"]["metrics"])
    sweep = results["eval_pseudo"].get("bg_sweep")
    if sweep:
        out["bg"] = {"score": sweep["used"], "auto": "bg_score_auto" in results.get("make_pseudo", {}),
                     "best_score": sweep["best_score"], "best_mIoU": sweep["best_mIoU"]}
    if results.get("same_as_main"):
        out["same_as_main"] = True
    return out


def _pick(m: dict) -> dict:
    out = {k: m[k] for k in HEADLINE if k in m}
    out.update({k: m[k] for k in ("bg", "same_as_main") if k in m})
    if "single_class" in m:
        out["single_class"] = {k: m["single_class"][k] for k in (*HEADLINE, "images") if k in m["single_class"]}
    return out


def build_summary(results: dict, ablations: dict, smoke: bool = False) -> dict:
    """One object per evaluated stage, metrics in percent (SOD metrics as fractions); ``smoke`` marks a
    ``--quick`` run, whose figures mean nothing."""
    s: dict = {"smoke": True} if smoke else {}
    if "eval_cam" in results:
        m = results["eval_cam"]["metrics"]
        s["cam"] = {**_pick(m), "threshold": m["threshold"], "best_threshold": m["best_threshold"],
                    "best_mIoU": m["best_mIoU"]}
    if "eval_sod" in results:
        s["sod"] = results["eval_sod"]["metrics"]
    if "eval_pseudo" in results:
        s["sbe"] = _pick(pseudo_metrics(results))
        if results["eval_pseudo"]["metrics"].get("crf"):
            s["sbe_crf"] = _pick(results["eval_pseudo"]["metrics"]["crf"])
    if "eval_select" in results:
        s["sos"] = _pick(results["eval_select"]["metrics"])
        if results.get("select", {}).get("decision"):
            s["sos"]["decision"] = results["select"]["decision"]
    if "eval_seg" in results:
        m = results["eval_seg"]["metrics"]
        s["seg"] = {**_pick(m), **({"fit": m["fit"]} if "fit" in m else {})}
    if ablations:
        s["ablation"] = {name: _pick(m) for name, m in ablations.items()}
    return s


def _saliency_label(s: dict) -> str:
    """The name of the summary's saliency: its recorded entry; a summary written before entries existed
    has only the source (``saliency_source``), so its detail shows as not recorded."""
    if isinstance(s.get("saliency"), dict) and s["saliency"].get("name"):
        return str(s["saliency"]["name"])
    return saliency_name({"source": s["saliency_source"]} if s.get("saliency_source") else None)


def _sod_label(s: dict, source: str) -> str:
    entry = s.get("sod_sources", {}).get(source)
    return str(entry["name"]) if isinstance(entry, dict) and entry.get("name") else saliency_name({"source": source})


def _decision(recorded: str | None) -> str:
    """How the Selector decided, as the summary row names it (nothing for a run from before it was recorded)."""
    names = {"sep": "Algorithm 1", "alpha": "alpha* fusion"}
    return f" ({names.get(recorded, recorded)})" if recorded else ""


def format_summary(s: dict) -> str:
    rows = [("CAM (train, bg t=%.2f)" % s["cam"]["threshold"], s["cam"])] if "cam" in s else []
    for name, m in s.get("ablation", {}).items():
        rows.append((f"pseudo: {variant_label(name)}{' (= SBE)' if m.get('same_as_main') else ''}", m))
    if "sbe" in s:
        rows.append((f"pseudo: SBE ({_saliency_label(s)})", s["sbe"]))
        bg = s["sbe"].get("bg")
        if bg:
            rows.append((f"  SBE at the GT-best bg {bg['best_score']:.2f}", {"mIoU": bg["best_mIoU"]}))
    if "sbe_crf" in s:
        rows.append(("pseudo: SBE + dense CRF (walk.crf)", s["sbe_crf"]))
    if "sos" in s:
        rows.append((f"pseudo: SBE + Selector{_decision(s['sos'].get('decision'))}", s["sos"]))
    if "seg" in s:
        rows.append(("segmentation (val)", s["seg"]))
        fit = s["seg"].get("fit")
        if fit:
            rows.append((f"  its training masks, {fit['images']} train images", {"mIoU": fit["agreement"]}))
            if "gt" in fit:
                rows.append(("  the GT of those training images", {"mIoU": fit["gt"]}))
    smoke = bool(s.get("smoke"))
    mark = "  smoke" if smoke else ""
    lines = [SMOKE_BANNER] if smoke else []
    width = max([40, *(len(name) + 1 for name, _ in rows)])
    lines.append(f"{'stage':<{width}}{'mIoU':>8}{'Acc':>8}{'Acc_cls':>9}{'fwIoU':>8}{'1-class mIoU':>14}"
                 + ("  run" if smoke else ""))
    for name, m in rows:
        single = m.get("single_class", {}).get("mIoU")
        single_text = "" if single is None else f"{single:.2f}"
        cells = "".join(f"{m[k]:{w}.2f}" if k in m else " " * w for k, w in (("mIoU", 8), ("Acc", 8),
                                                                               ("Acc_class", 9), ("fwIoU", 8)))
        bg = m.get("bg")
        note = f"  bg {bg['score']:.2f}{' auto' if bg['auto'] else ''}" if bg and bg.get("score") is not None else ""
        lines.append(f"{name:<{width}}{cells}{single_text:>14}{note}{mark}".rstrip())
    for src, m in s.get("sod", {}).items():
        lines.append(f"SOD {_sod_label(s, src):<22} MAE={m['MAE']:.4f} maxF={m['maxF']:.4f} meanF={m['meanF']:.4f} "
                     f"adpF={m['adpF']:.4f} Sm={m['Sm']:.4f} Em={m['Em']:.4f}{mark}")
    if smoke:
        lines.append(SMOKE_BANNER)
    return "\n".join(lines)
