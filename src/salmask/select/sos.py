"""Salient Object Selector (SOS, docs/method.md#salient-object-selector): swap single-class pseudo masks for saliency where they agree.

It runs on any folder of pseudo masks, so it also post-processes other methods' masks (seed 2, Table 4), and
on the same inputs held in memory (:class:`Arrays`, :func:`select_arrays`) with the same decisions.

Inputs (one ``{id}`` per image)
-------------------------------
* Pseudo masks ``{pseudo_dir}/{id}.png``: index or palette PNG [H, W], 0 background, 1..C-1 classes,
  255 ignore (C = ``num_classes``, background included). The ids are the folder's PNG stems unless given.
* Saliency ``{saliency_dir}/{id}.png``: grayscale PNG (8 or 16 bit) read as S in [0, 1] [H, W], the
  mask's size. Binarised as ``B = S > sal_thres``. Only single-class images need one; a missing one is an
  ``InputError`` naming it, unless ``allow_missing`` (the image then passes through, counted).
* Image-level labels: a mapping id -> classes, a labels file (:func:`load_labels`), or, when absent, the
  classes present in each pseudo mask (values other than 0 and 255).
* Soft maps (α* form, optional) ``{soft_dir}/{id}.npz``: ``keys`` int [K] (class ids 1..C-1; other keys
  such as 0 are ignored) and ``scores`` float [K, H, W] in [0, 1], the CAM or random-walk foreground scores.
* Ground truth (optional) ``{gt_dir}/{id}.png``; images without one are left out of the metrics.

Definitions
-----------
An image is *single-class* when its label set holds exactly one class c. All other images (several
classes, or none) pass through unchanged. For a single-class image k:

* fg(P_k) = pixels with 1 <= P_k <= C-1. Ignore (255) is not foreground: pseudo masks are scored with 255
  as background (the field's convention), so counting it as object would reward saliency for covering
  pixels the mask itself gave up on.
* If B_k is empty the image is skipped in both forms (Algorithm 1 line 4: no salient object to select).
* o_k = |B_k ∩ fg(P_k)| / |B_k ∪ fg(P_k)|.
* Class salience, the RMS of the continuous saliency inside the class's pseudo masks::

      n_c = sqrt( Σ_k Σ_{p ∈ fg(P_k)} S_k(p)² / Σ_k |fg(P_k)| )

  over the single-class images k of c that have a saliency map (skipped empty maps included: they are
  data about the class). n*_c = n_c / max_c n_c (0 for all when every n_c is 0). A class with no
  single-class foreground pixel has no n*_c (``None`` in the report, treated as 0 and not salient).
* c is salient iff it is in ``salient_classes`` when that list is given, else iff n*_c >= ``eta``.
  Default eta = 0.75: a class is weakly salient (chair, sofa... in the seed) when its RMS saliency inside
  its own pseudo masks is below three quarters of the most salient class's. The seed gives no value; this
  is a prior, and the report lists every n*_c so it can be set from the data.

Algorithm 1 (``mode="sep"``)
    Replace iff o_k > t0 (c salient) or o_k > t0 + t1 (c not salient), by P̂_k = c on B_k, 0 elsewhere;
    the replacement has no ignore pixels (the saliency map is trusted everywhere). The strict ">" makes
    both ends exact: t0 >= 1, t1 = 0 never replaces (output pixels == input) and t0 = t1 = 0 replaces
    every single-class mask whose binarised saliency overlaps its foreground.

α* form (``mode="alpha"``)
    α*_k = o_k + n*_c, set to 0 unless above tau (the same strict ">" as Algorithm 1), then clipped to [0, 1]. α* = 0 leaves the mask as it is;
    otherwise P_final = argmax over (background, c) of (1 - α*)·P_CAM + α*·P_S with P_S = (1 - S, S) and
    P_CAM = (1 - A, A), A = the soft map's scores of c or, without soft maps, the hard pseudo mask
    (A = 1 on fg(P_k), 0 on background, 0.5 on ignore: undecided, so S decides there). Both are two-way
    distributions, so P_final = c where (1 - α*)·A + α*·S > 0.5, else 0 (ties go to background).
    Default tau = 1 + t0 = 1.4 makes α* either 0 or 1: "replace by S > 0.5 iff o_k > 1.4 - n*_c", which
    agrees with Algorithm 1 for the most salient class (o > 0.4, ties not replaced in either form) and asks
    o > 0.6 (= t0 + t1) of a class at n*_c = 0.8. A tau below 1 gives true soft fusion, for α* in (tau, 1).

Label-free form (``mode="auto"``)
    No threshold. For each "ok" single-class image a *judge* scores the two candidates, the walk's
    foreground fg(P_k) and the binarised saliency B_k, and B_k replaces the mask (as in Algorithm 1) iff its
    score is strictly higher (ties keep the walk's). The pipeline's default judge is the boundary network's
    map along each candidate's outline; the other is the CAM classifier (:mod:`salmask.select.judge`).
    n*_c, t0, t1 and eta are not used; the report lists each judged image's two scores.

Outputs
-------
Every id's mask lands in ``out_dir/{id}.png``: rewritten masks as palette PNGs (``palette``, else the
input's own palette, else VOC's), every other mask copied byte-for-byte. All writes are atomic, so with
``overwrite=False`` an existing output is trusted and not rewritten (the decisions and the report are
recomputed from the inputs all the same).

Cost: one pass decodes every pseudo mask, each single-class image's saliency map and the ground truth;
the decisions need the whole set (n*_c), so a second pass byte-copies unchanged masks and decodes again
only the inputs of the images it rewrites.
"""
from __future__ import annotations

import json
import math
import os
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np
from PIL import Image

from salmask.data.meta import IGNORE_INDEX, voc_palette
from salmask.errors import ConfigError, InputError
from salmask.io import load_npz, read_gray, read_mask, write_bytes_atomic, write_png
from salmask.metrics.confusion import ConfusionMatrix
from salmask.select.config import SelectConfig

PathLike = str | os.PathLike
Labels = Mapping[str, Iterable[int | str]]
Sparse = tuple[np.ndarray, np.ndarray]  # flat indices into a [C, C] confusion matrix, and their counts
Judge = Callable[[str, int, np.ndarray, np.ndarray], tuple[float, float]]
"""``judge(id, cls, walk_fg [H,W] bool, sal_bin [H,W] bool) -> (walk score, saliency score)`` (mode "auto")."""
MODES = typing.get_args(typing.get_type_hints(SelectConfig)["mode"])
"""The Selector's modes, as the ``select.mode`` config key declares them."""

DEFAULT_ETA = SelectConfig.eta
DEFAULT_TAU = SelectConfig.tau
METRICS = ("Acc", "Acc_class", "mIoU", "fwIoU")


@dataclass(frozen=True)
class SelectorConfig:
    """Options of the selector (see the module docstring for their meaning); defaults are the ``select`` config
    section's (:class:`salmask.select.config.SelectConfig`), ``salient_classes`` as class ids."""

    mode: str = SelectConfig.mode
    t0: float = SelectConfig.t0
    t1: float = SelectConfig.t1
    tau: float = SelectConfig.tau
    eta: float = SelectConfig.eta
    sal_thres: float = SelectConfig.sal_thres
    salient_classes: tuple[int, ...] | None = None
    allow_missing: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"select mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("t0", "t1", "tau", "eta", "sal_thres"):
            v = getattr(self, name)
            try:
                f = float(v)
            except (TypeError, ValueError):
                f = math.nan
            if not (math.isfinite(f) and f >= 0):
                raise ConfigError(f"select {name} must be a finite number >= 0, got {v!r}")
            object.__setattr__(self, name, f)
        if not self.sal_thres < 1.0:
            raise ConfigError(f"select sal_thres must be in [0, 1), got {self.sal_thres!r}")
        if self.salient_classes is not None:
            object.__setattr__(self, "salient_classes", tuple(int(c) for c in self.salient_classes))


# ----------------------------------------------------------------------------------------------------
# Per-image rules (pure functions on arrays)

def foreground(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: object pixels of a pseudo mask (neither background 0 nor ignore 255)."""
    return (mask != 0) & (mask != IGNORE_INDEX)


def overlap(sal_bin: np.ndarray, mask: np.ndarray) -> float:
    """o = IoU(binarised saliency [H, W] bool, foreground of ``mask`` [H, W]); 0 when both are empty."""
    fg = foreground(mask)
    union = np.count_nonzero(sal_bin | fg)
    return np.count_nonzero(sal_bin & fg) / union if union else 0.0


def sep_replaces(o: float, salient: bool, t0: float, t1: float) -> bool:
    """Algorithm 1's test: o > t0 for a salient class, o > t0 + t1 otherwise."""
    return o > (t0 if salient else t0 + t1)


def auto_replaces(judged: tuple[float, float] | None) -> bool:
    """The label-free test (mode "auto"): the judge scores the saliency mask above the walk's mask."""
    return judged is not None and judged[1] > judged[0]


def replacement(sal_bin: np.ndarray, cls: int) -> np.ndarray:
    """Algorithm 1's new mask uint8 [H, W]: ``cls`` on the binarised saliency, 0 elsewhere."""
    return np.where(sal_bin, np.uint8(cls), np.uint8(0))


def alpha_star(o: float, n_star: float | None, tau: float) -> float:
    """α* = o + n*_c, 0 unless above ``tau`` (strictly, as Algorithm 1's o > t0), clipped to [0, 1]
    (n*_c = None counts as 0)."""
    a = o + (n_star or 0.0)
    return 0.0 if a <= tau else min(a, 1.0)


def fuse(mask: np.ndarray, sal: np.ndarray, cls: int, alpha: float,
         cam_fg: np.ndarray | None = None) -> np.ndarray:
    """α* fusion uint8 [H, W]: ``cls`` where (1 - α)·A + α·S > 0.5, else 0.

    ``mask`` [H, W] pseudo mask, ``sal`` [H, W] saliency in [0, 1], ``cam_fg`` [H, W] foreground scores A of
    ``cls`` in [0, 1]; without them A comes from the hard mask (1 fg, 0 bg, 0.5 ignore).
    """
    if cam_fg is None:
        cam_fg = np.where(mask == IGNORE_INDEX, 0.5, foreground(mask)).astype(np.float32)
    fused = (1.0 - alpha) * cam_fg + alpha * sal
    return np.where(fused > 0.5, np.uint8(cls), np.uint8(0))


def salience_from_sums(sq_sums: Mapping[int, float], fg_counts: Mapping[int, int]
                       ) -> tuple[dict[int, float], dict[int, float]]:
    """(n_c, n*_c) from per-class Σ S² over foreground pixels and foreground pixel counts.

    Classes with no foreground pixel are left out of both dicts.
    """
    n = {c: math.sqrt(sq_sums[c] / fg_counts[c]) for c in fg_counts if fg_counts[c] > 0}
    top = max(n.values(), default=0.0)
    return n, {c: (v / top if top > 0 else 0.0) for c, v in n.items()}


# ----------------------------------------------------------------------------------------------------
# Labels

def resolve_classes(tokens: Iterable[int | str], *, num_classes: int,
                    class_names: Sequence[str] | None = None, source: PathLike = "labels") -> frozenset[int]:
    """Class ids (1..C-1) from ids or names; names match case-insensitively, '_' standing for ' '.

    Anything else (background, unknown names, out-of-range ids) is an ``InputError`` naming ``source``.
    """
    by_name = {n.lower().replace(" ", "_"): i for i, n in enumerate(class_names or ())}
    out = set()
    for tok in tokens:
        if isinstance(tok, (int, np.integer)) or (isinstance(tok, str) and tok.strip().isdigit()):
            c = int(tok)
        elif isinstance(tok, str) and tok.strip().lower().replace(" ", "_") in by_name:
            c = by_name[tok.strip().lower().replace(" ", "_")]
        else:
            raise InputError(source, f"unknown class {tok!r}")
        if not 1 <= c < num_classes:
            raise InputError(source, f"class {tok!r} is not a foreground class id 1..{num_classes - 1}")
        out.add(c)
    return frozenset(out)


def load_labels(path: PathLike, *, num_classes: int,
                class_names: Sequence[str] | None = None) -> dict[str, frozenset[int]]:
    """Image-level labels from a file: id -> set of class ids (1..C-1).

    Two formats, told apart by the first non-blank character:

    * JSON object ``{"2007_000032": [1, 15], "2007_000039": ["tvmonitor"]}``;
    * text, one image per line ``2007_000032 1 15`` or ``2007_000039 tvmonitor`` (whitespace-separated;
      blank lines and lines starting with ``#`` are skipped; names with spaces written with ``_``).

    Classes are ids or names of ``class_names``; an image may have no class. Duplicate ids are an error.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(path, "labels file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read labels file ({e})") from None
    labels: dict[str, frozenset[int]] = {}
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(path, f"invalid JSON ({e})") from None
        for key, classes in raw.items():
            if not isinstance(classes, list):
                raise InputError(path, f"labels of {key!r} must be a list of class ids or names")
            labels[str(key)] = resolve_classes(classes, num_classes=num_classes,
                                               class_names=class_names, source=path)
        return labels
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if parts[0] in labels:
            raise InputError(path, f"line {lineno}: image {parts[0]!r} listed twice")
        labels[parts[0]] = resolve_classes(parts[1:], num_classes=num_classes,
                                           class_names=class_names, source=f"{path}:{lineno}")
    return labels


# ----------------------------------------------------------------------------------------------------
# Inputs: folders or arrays, read the same way (the scan is shared with the sweep)

@dataclass
class Record:
    """What one pass over an image leaves behind (its arrays are not kept).

    ``status``: "ok", "empty" (no saliency pixel above the threshold), "missing_saliency",
    "missing_soft", "multi" (several classes) or "none" (no class). ``keep``/``swap``: sparse confusion
    of the input mask and of Algorithm 1's replacement against the ground truth (None without one).
    ``judged``: the judge's (walk, saliency) scores of an "ok" image when a judge ran (mode "auto").
    ``shape``: the mask's [H, W].
    """

    id: str
    status: str
    cls: int | None = None
    o: float = 0.0
    fg: int = 0
    sq: float = 0.0
    keep: Sparse | None = None
    swap: Sparse | None = None
    judged: tuple[float, float] | None = None
    shape: tuple[int, ...] = ()


class Inputs(Protocol):
    """What the selector reads of one image set: :class:`Folders` (files) or :class:`Arrays` (memory)."""

    ids: list[str]
    num_classes: int

    def where(self, i: str, what: str) -> str:
        """The name of image ``i``'s ``what`` ("mask", "saliency", "soft") in messages: its file or its key."""

    def mask(self, i: str) -> np.ndarray:
        """The pseudo mask uint8 [H, W]."""

    def classes(self, i: str, mask: np.ndarray) -> frozenset[int]:
        """The image-level classes (the labels, else the classes in ``mask``)."""

    def has_saliency(self, i: str) -> bool: ...

    def saliency(self, i: str, shape: tuple[int, ...]) -> np.ndarray:
        """S float [H, W] in [0, 1]; a size other than ``shape`` is an error naming the input."""

    def gt(self, i: str, shape: tuple[int, ...]) -> np.ndarray | None: ...

    @property
    def has_soft_maps(self) -> bool: ...

    def has_soft(self, i: str) -> bool: ...

    def soft(self, i: str, cls: int, shape: tuple[int, ...]) -> np.ndarray | None:
        """Foreground scores A float32 [H, W] of class ``cls`` (None without soft maps)."""


def _classes_in(labels: Mapping[str, frozenset[int]] | None, source: str, i: str, mask: np.ndarray) -> frozenset[int]:
    if labels is None:
        return frozenset(int(v) for v in np.unique(mask) if v != 0 and v != IGNORE_INDEX)
    if i not in labels:
        raise InputError(source, f"no image-level labels for image {i!r}")
    return labels[i]


def _resolve_labels(labels: Labels | PathLike | None, num_classes: int,
                    class_names: Sequence[str] | None) -> tuple[dict[str, frozenset[int]] | None, str]:
    """(id -> class ids, the labels' name in messages) from a mapping, a labels file or None."""
    if isinstance(labels, (str, os.PathLike)):
        return load_labels(labels, num_classes=num_classes, class_names=class_names), str(labels)
    if labels is None:
        return None, "labels"
    return {str(k): resolve_classes(v, num_classes=num_classes, class_names=class_names)
            for k, v in labels.items()}, "labels"


def _check_size(where: str, what: str, got: tuple, shape: tuple, mask: str) -> None:
    if tuple(got) != tuple(shape):
        raise InputError(where, f"{what} size {got[1]}x{got[0]} differs from pseudo mask {mask} "
                                f"({shape[1]}x{shape[0]})")


def _soft_scores(keys: np.ndarray, scores: np.ndarray, cls: int, where: str) -> np.ndarray:
    """Class ``cls``'s scores float32 [H, W] of a soft map (``keys`` [K], ``scores`` [K, H, W]), checked."""
    keys, scores = np.asarray(keys).reshape(-1), np.asarray(scores)
    if scores.ndim != 3 or scores.shape[0] != len(keys):
        raise InputError(where, f"scores must be [K={len(keys)}, H, W], got {list(scores.shape)}")
    hit = np.flatnonzero(keys == cls)
    if hit.size == 0:
        raise InputError(where, f"no scores for class {cls} (keys {keys.tolist()})")
    a = scores[hit[0]].astype(np.float32)
    if not np.isfinite(a).all() or a.min() < -1e-4 or a.max() > 1 + 1e-4:
        raise InputError(where, f"scores of class {cls} must be finite and in [0, 1]")
    return np.clip(a, 0.0, 1.0)


@dataclass
class Folders:
    """The input folders of one run, and how to read one image's files from them (:class:`Inputs`)."""

    pseudo_dir: Path
    saliency_dir: Path
    num_classes: int
    labels: dict[str, frozenset[int]] | None = None
    labels_source: str = "labels"
    gt_dir: Path | None = None
    soft_dir: Path | None = None
    ids: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, pseudo_dir: PathLike, saliency_dir: PathLike, *, num_classes: int,
             labels: Labels | PathLike | None = None, class_names: Sequence[str] | None = None,
             ids: Iterable[str] | None = None, gt_dir: PathLike | None = None,
             soft_dir: PathLike | None = None) -> "Folders":
        """Check the folders exist, resolve labels (mapping, file or None) and the list of ids."""
        pseudo_dir, saliency_dir = Path(pseudo_dir), Path(saliency_dir)
        for d, what in ((pseudo_dir, "pseudo-mask"), (saliency_dir, "saliency"),
                        (gt_dir, "ground-truth"), (soft_dir, "soft-map")):
            if d is not None and not Path(d).is_dir():
                raise InputError(d, f"{what} folder not found")
        labels, source = _resolve_labels(labels, num_classes, class_names)
        ids = sorted(p.stem for p in pseudo_dir.glob("*.png")) if ids is None else [str(i) for i in ids]
        if not ids:
            raise InputError(pseudo_dir, "no pseudo masks (*.png) to select from")
        return cls(pseudo_dir, saliency_dir, num_classes, labels, source,
                   None if gt_dir is None else Path(gt_dir), None if soft_dir is None else Path(soft_dir),
                   ids)

    def where(self, i: str, what: str) -> str:
        return str({"mask": self.mask_path(i), "saliency": self.saliency_path(i),
                    "soft": self.soft_path(i)}[what])

    def mask_path(self, i: str) -> Path:
        return self.pseudo_dir / f"{i}.png"

    def mask(self, i: str) -> np.ndarray:
        return read_mask(self.mask_path(i), self.num_classes)

    def classes(self, i: str, mask: np.ndarray) -> frozenset[int]:
        return _classes_in(self.labels, self.labels_source, i, mask)

    def saliency_path(self, i: str) -> Path:
        return self.saliency_dir / f"{i}.png"

    def has_saliency(self, i: str) -> bool:
        return self.saliency_path(i).is_file()

    def saliency(self, i: str, shape: tuple[int, ...]) -> np.ndarray:
        """S float32 [H, W] in [0, 1]; a size other than the mask's is an error naming both files."""
        path = self.saliency_path(i)
        sal = read_gray(path)
        _check_size(str(path), "saliency", sal.shape, shape, str(self.mask_path(i)))
        return sal

    def gt(self, i: str, shape: tuple[int, ...]) -> np.ndarray | None:
        if self.gt_dir is None or not (self.gt_dir / f"{i}.png").is_file():
            return None
        path = self.gt_dir / f"{i}.png"
        gt = read_mask(path, self.num_classes)
        _check_size(str(path), "ground-truth", gt.shape, shape, str(self.mask_path(i)))
        return gt

    def soft_path(self, i: str) -> Path | None:
        return None if self.soft_dir is None else self.soft_dir / f"{i}.npz"

    @property
    def has_soft_maps(self) -> bool:
        return self.soft_dir is not None

    def has_soft(self, i: str) -> bool:
        return self.soft_dir is not None and self.soft_path(i).is_file()

    def soft(self, i: str, cls: int, shape: tuple[int, ...]) -> np.ndarray | None:
        path = self.soft_path(i)
        if path is None:
            return None
        z = load_npz(path)
        if "keys" not in z or "scores" not in z:
            raise InputError(path, f"soft map needs arrays 'keys' and 'scores', has {sorted(z)}")
        _check_size(str(path), "scores", np.shape(z["scores"])[1:], shape, str(self.mask_path(i)))
        return _soft_scores(z["keys"], z["scores"], cls, str(path))


@dataclass
class Arrays:
    """One run's inputs in memory, by id (:class:`Inputs`): what :func:`salmask.select_masks` gets as arrays.

    ``masks`` uint8 [H, W]; ``saliency`` float [H, W] in [0, 1] (float32 or float64, kept as given, so
    the maps a folder holds give the folder form's result to the bit); ``gt`` [H, W] masks; ``soft``
    ``(keys [K], scores [K, H, W])`` pairs. Inputs are checked by the caller (dtype, range, shape).
    """

    masks: dict[str, np.ndarray]
    saliency_maps: dict[str, np.ndarray]
    num_classes: int
    labels: dict[str, frozenset[int]] | None = None
    gt_masks: dict[str, np.ndarray] | None = None
    soft_maps: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def ids(self) -> list[str]:
        return list(self.masks)

    def where(self, i: str, what: str) -> str:
        return {"mask": "pseudo", "saliency": "saliency", "soft": "soft"}[what] + f"[{i!r}]"

    def mask(self, i: str) -> np.ndarray:
        return self.masks[i]

    def classes(self, i: str, mask: np.ndarray) -> frozenset[int]:
        return _classes_in(self.labels, "labels", i, mask)

    def has_saliency(self, i: str) -> bool:
        return i in self.saliency_maps

    def saliency(self, i: str, shape: tuple[int, ...]) -> np.ndarray:
        sal = self.saliency_maps[i]
        _check_size(self.where(i, "saliency"), "saliency", sal.shape, shape, self.where(i, "mask"))
        return sal

    def gt(self, i: str, shape: tuple[int, ...]) -> np.ndarray | None:
        if self.gt_masks is None or i not in self.gt_masks:
            return None
        _check_size(f"gt[{i!r}]", "ground-truth", self.gt_masks[i].shape, shape, self.where(i, "mask"))
        return self.gt_masks[i]

    @property
    def has_soft_maps(self) -> bool:
        return self.soft_maps is not None

    def has_soft(self, i: str) -> bool:
        return self.soft_maps is not None and i in self.soft_maps

    def soft(self, i: str, cls: int, shape: tuple[int, ...]) -> np.ndarray | None:
        if self.soft_maps is None:
            return None
        keys, scores = self.soft_maps[i]
        _check_size(self.where(i, "soft"), "scores", np.shape(scores)[1:], shape, self.where(i, "mask"))
        return _soft_scores(keys, scores, cls, self.where(i, "soft"))


def sparse_confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int, name: str) -> Sparse:
    """Non-zero cells of one image's confusion matrix (pred 255 scored as background)."""
    cm = ConfusionMatrix(num_classes)
    cm.update(pred, gt, name=name)
    flat = cm.hist.reshape(-1)
    nz = np.flatnonzero(flat)
    return nz, flat[nz]


def confusion(parts: Iterable[Sparse], num_classes: int) -> ConfusionMatrix:
    """Sum of sparse per-image confusions as a ConfusionMatrix."""
    cm = ConfusionMatrix(num_classes)
    flat = cm.hist.reshape(-1)
    for idx, cnt in parts:
        flat[idx] += cnt
    return cm


def scan(inputs: Inputs, *, sal_thres: float, allow_missing: bool, need_soft: bool = False,
         judge: Judge | None = None, progress: bool = False) -> list[Record]:
    """One pass over every image: classes, o, salience sums, sparse confusions and, with ``judge``, its
    scores of the two candidate masks (see :class:`Record`)."""
    out = []
    for i in _progress(inputs.ids, "select: scan", progress):
        mask = inputs.mask(i)
        classes = inputs.classes(i, mask)
        gt = inputs.gt(i, mask.shape)
        keep = None if gt is None else sparse_confusion(mask, gt, inputs.num_classes, inputs.where(i, "mask"))
        if len(classes) != 1:
            out.append(Record(i, "multi" if classes else "none", keep=keep, shape=mask.shape))
            continue
        (c,) = classes
        if not inputs.has_saliency(i):
            if not allow_missing:
                raise InputError(inputs.where(i, "saliency"), f"saliency map not found (image {i!r} is single-class)")
            out.append(Record(i, "missing_saliency", c, keep=keep, shape=mask.shape))
            continue
        sal = inputs.saliency(i, mask.shape)
        fg = foreground(mask)
        sal_bin = sal > sal_thres
        status = "ok" if sal_bin.any() else "empty"
        if need_soft and not inputs.has_soft(i):
            if not allow_missing:
                raise InputError(inputs.where(i, "soft"), f"soft map not found (image {i!r} is single-class)")
            status = "missing_soft"
        swap = None if gt is None or status != "ok" else sparse_confusion(
            replacement(sal_bin, c), gt, inputs.num_classes, inputs.where(i, "saliency"))
        judged = judge(i, c, fg, sal_bin) if judge is not None and status == "ok" else None
        out.append(Record(i, status, c, overlap(sal_bin, mask), int(fg.sum()),
                          float(np.square(sal[fg], dtype=np.float64).sum()), keep, swap, judged, mask.shape))
    return out


def salience(records: Iterable[Record]) -> tuple[dict[int, float], dict[int, float]]:
    """(n_c, n*_c) over the single-class records that had a saliency map."""
    sq: dict[int, float] = {}
    fg: dict[int, int] = {}
    for r in records:
        if r.status in ("ok", "empty", "missing_soft"):
            sq[r.cls] = sq.get(r.cls, 0.0) + r.sq
            fg[r.cls] = fg.get(r.cls, 0) + r.fg
    return salience_from_sums(sq, fg)


def salient_set(n_star: Mapping[int, float], eta: float,
                salient_classes: Iterable[int] | None) -> frozenset[int]:
    """The salient classes: the user's list when given, else those with n*_c >= eta."""
    if salient_classes is not None:
        return frozenset(int(c) for c in salient_classes)
    return frozenset(c for c, v in n_star.items() if v >= eta)


def class_salience(pseudo_dir: PathLike, saliency_dir: PathLike, *, num_classes: int,
                   labels: Labels | PathLike | None = None, class_names: Sequence[str] | None = None,
                   ids: Iterable[str] | None = None, allow_missing: bool = False) -> dict[int, float]:
    """n*_c per class with single-class foreground pixels (see the module docstring)."""
    folders = Folders.open(pseudo_dir, saliency_dir, num_classes=num_classes, labels=labels,
                           class_names=class_names, ids=ids)
    return salience(scan(folders, sal_thres=0.5, allow_missing=allow_missing))[1]


# ----------------------------------------------------------------------------------------------------
# The selector

@dataclass
class Selection:
    """The decisions of one run: every image's record, the class salience and the salient classes."""

    records: list[Record]
    n: dict[int, float]
    n_star: dict[int, float]
    salient: frozenset[int]


def decide(inputs: Inputs, config: SelectorConfig, *, judge: Judge | None = None,
           progress: bool = False) -> Selection:
    """One pass over ``inputs`` (:func:`scan`) and the class salience the decisions need."""
    if config.mode == "auto" and judge is None:
        raise ConfigError("select mode 'auto' needs a judge of the two masks: the boundary maps or the CAM "
                          "classifier (in the pipeline make_boundary or train_cam; in salmask select "
                          "--boundary, or --images and --cam)")
    alpha = config.mode == "alpha"
    records = scan(inputs, sal_thres=config.sal_thres, allow_missing=config.allow_missing,
                   need_soft=alpha and inputs.has_soft_maps, judge=judge if config.mode == "auto" else None,
                   progress=progress)
    n, n_star = salience(records)
    return Selection(records, n, n_star, salient_set(n_star, config.eta, config.salient_classes))


def outcomes(inputs: Inputs, selection: Selection, config: SelectorConfig, *,
             progress: bool = False) -> Iterator[tuple[Record, np.ndarray | None, Sparse | None]]:
    """Each image's record with its new mask uint8 [H, W] (None: the input mask stays) and, for a new mask,
    its sparse confusion against the ground truth (None without one). New masks are made one at a time."""
    for r in _progress(selection.records, "select: write", progress):
        if r.status != "ok":
            yield r, None, None
        elif auto_replaces(r.judged) if config.mode == "auto" else \
                config.mode == "sep" and sep_replaces(r.o, r.cls in selection.salient, config.t0, config.t1):
            yield r, replacement(inputs.saliency(r.id, r.shape) > config.sal_thres, r.cls), r.swap
        elif config.mode == "alpha" and (a := alpha_star(r.o, selection.n_star.get(r.cls), config.tau)) > 0:
            mask = inputs.mask(r.id)
            new = fuse(mask, inputs.saliency(r.id, r.shape), r.cls, a, inputs.soft(r.id, r.cls, r.shape))
            gt = inputs.gt(r.id, r.shape)
            yield r, new, None if gt is None else sparse_confusion(new, gt, inputs.num_classes,
                                                                   inputs.where(r.id, "mask"))
        else:
            yield r, None, None


def select_folder(pseudo_dir: PathLike, saliency_dir: PathLike, out_dir: PathLike, *, num_classes: int,
                  config: SelectorConfig = SelectorConfig(), labels: Labels | PathLike | None = None,
                  soft_dir: PathLike | None = None, gt_dir: PathLike | None = None,
                  class_names: Sequence[str] | None = None, ids: Iterable[str] | None = None,
                  palette: np.ndarray | None = None, overwrite: bool = True, judge: Judge | None = None,
                  progress: bool = False) -> dict:
    """Run the selector on a folder of pseudo masks, write every mask to ``out_dir``, return the report.

    ``labels``: mapping id -> classes, a labels file (:func:`load_labels`) or None (classes in the masks).
    ``soft_dir``: soft maps for ``mode="alpha"`` (unused by ``"sep"``). ``judge``: what ``mode="auto"``
    asks which mask holds the object (:mod:`salmask.select.judge`; required there, unused otherwise).
    ``palette``: [256, 3] uint8 for rewritten masks. The report (JSON-ready)::

        mode, config, images, single_class, multi_class, no_class, missing_saliency, missing_soft,
        empty_saliency, replaced, replaced_ids, missing_ids, [auto: judged {id: [walk, saliency]}],
        per_class: {name: {id, single_class, replaced, n, n_star, salient,
                           [with gt_dir: scored, iou_before, iou_after, miou_before, miou_after]}},
        [with gt_dir] metrics: {single_class | all: {images, before, after}}  (ConfusionMatrix.scores)

    ``iou_*`` is the class's IoU over the single-class subset; ``miou_*`` the mIoU over that class's own
    single-class images. Metrics count images that have a ground-truth PNG; 255 in masks is background.
    """
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(pseudo_dir).resolve():
        raise InputError(out_dir, "output folder must differ from the pseudo-mask folder")
    inputs = Folders.open(pseudo_dir, saliency_dir, num_classes=num_classes, labels=labels,
                          class_names=class_names, ids=ids, gt_dir=gt_dir,
                          soft_dir=soft_dir if config.mode == "alpha" else None)
    selection = decide(inputs, config, judge=judge, progress=progress)
    changed: dict[str, Sparse | None] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for r, new, scored in outcomes(inputs, selection, config, progress=progress):
        target = out_dir / f"{r.id}.png"
        if new is not None:
            changed[r.id] = scored
        if not overwrite and target.is_file():
            continue
        if new is not None:
            write_png(target, new, _palette(inputs.mask_path(r.id), palette))
        else:
            write_bytes_atomic(target, inputs.mask_path(r.id).read_bytes())
    return _report(selection, changed, config, num_classes, class_names, with_gt=gt_dir is not None)


def select_arrays(inputs: Arrays, config: SelectorConfig = SelectorConfig(), *,
                  class_names: Sequence[str] | None = None, judge: Judge | None = None
                  ) -> tuple[dict[str, np.ndarray], dict]:
    """The selector on arrays in memory: (id -> mask uint8 [H, W], the report of :func:`select_folder`).

    The same decisions as :func:`select_folder` on folders holding the same values, to the bit."""
    selection = decide(inputs, config, judge=judge)
    changed: dict[str, Sparse | None] = {}
    masks = {}
    for r, new, scored in outcomes(inputs, selection, config):
        if new is not None:
            changed[r.id] = scored
        masks[r.id] = np.array(inputs.mask(r.id), dtype=np.uint8) if new is None else new
    return masks, _report(selection, changed, config, inputs.num_classes, class_names,
                          with_gt=inputs.gt_masks is not None)


def _report(selection: Selection, changed: Mapping[str, Sparse | None], config: SelectorConfig,
            num_classes: int, class_names: Sequence[str] | None, with_gt: bool) -> dict:
    records, n, n_star, salient = selection.records, selection.n, selection.n_star, selection.salient
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    status = [r.status for r in records]
    report: dict = {
        "mode": config.mode, "config": asdict(config), "images": len(records),
        "single_class": sum(r.cls is not None for r in records),
        "multi_class": status.count("multi"), "no_class": status.count("none"),
        "missing_saliency": status.count("missing_saliency"), "missing_soft": status.count("missing_soft"),
        "empty_saliency": status.count("empty"), "replaced": len(changed),
        "replaced_ids": [r.id for r in records if r.id in changed],
        "missing_ids": [r.id for r in records if r.status.startswith("missing")],
    }
    if config.mode == "auto":
        report["judged"] = {r.id: list(r.judged) for r in records if r.judged is not None}
    by_class: dict[int, list[Record]] = {c: [] for c in range(1, num_classes)}
    for r in records:
        if r.cls is not None:
            by_class[r.cls].append(r)

    def after(r: Record) -> Sparse | None:
        return changed[r.id] if r.id in changed else r.keep

    def before_after(rs: list[Record]) -> tuple[dict, dict]:
        scored = [r for r in rs if r.keep is not None]
        return (confusion((r.keep for r in scored), num_classes).scores(names),
                confusion((after(r) for r in scored), num_classes).scores(names))

    per_class = {}
    for c, mine in by_class.items():
        entry = {"id": c, "single_class": len(mine), "replaced": sum(r.id in changed for r in mine),
                 "n": n.get(c), "n_star": n_star.get(c), "salient": c in salient}
        if with_gt:
            entry["scored"] = sum(r.keep is not None for r in mine)
            pre, post = before_after(mine) if entry["scored"] else ({}, {})
            entry.update(miou_before=pre.get("mIoU"), miou_after=post.get("mIoU"))
        per_class[names[c]] = entry
    report["per_class"] = per_class
    if with_gt:
        report["metrics"] = {}
        for subset, rs in (("single_class", [r for r in records if r.cls is not None]), ("all", records)):
            pre, post = before_after(rs)
            report["metrics"][subset] = {"images": sum(r.keep is not None for r in rs),
                                         "before": pre, "after": post}
        single = report["metrics"]["single_class"]
        for c in by_class:
            per_class[names[c]].update(iou_before=single["before"]["per_class"][names[c]],
                                       iou_after=single["after"]["per_class"][names[c]])
    return report


def format_report(report: dict) -> str:
    """A plain-text summary of :func:`select_folder`'s report: counts, per-class table, metrics."""
    lines = [f"SOS ({report['mode']}): {report['images']} images, {report['single_class']} single-class, "
             f"{report['replaced']} replaced; {report['multi_class']} multi-class and "
             f"{report['no_class']} without class passed through; skipped: {report['empty_saliency']} "
             f"with empty saliency, {report['missing_saliency'] + report['missing_soft']} missing inputs"]
    has_gt = "metrics" in report
    header = f"{'class':<16}{'single':>7}{'repl':>6}{'n*':>7}{'sal':>5}"
    if has_gt:
        header += f"{'IoU before':>12}{'IoU after':>11}{'mIoU before':>13}{'mIoU after':>12}"
    lines.append(header)
    for name, e in report["per_class"].items():
        if not e["single_class"]:
            continue
        row = f"{name:<16}{e['single_class']:>7}{e['replaced']:>6}{_num(e['n_star']):>7}" \
              f"{'yes' if e['salient'] else 'no':>5}"
        if has_gt:
            row += f"{_num(e['iou_before']):>12}{_num(e['iou_after']):>11}" \
                   f"{_num(e['miou_before']):>13}{_num(e['miou_after']):>12}"
        lines.append(row)
    for subset, m in report.get("metrics", {}).items():
        for when in ("before", "after"):
            vals = "  ".join(f"{k}={_num(m[when][k])}" for k in METRICS)
            lines.append(f"{subset} ({m['images']} images) {when:<6}: {vals}")
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _palette(mask_path: Path, palette: np.ndarray | None) -> np.ndarray:
    """The palette for a rewritten mask: the given one, else the input's (padded by VOC's), else VOC's."""
    if palette is not None:
        return np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    out = voc_palette()
    with Image.open(mask_path) as img:
        own = img.getpalette() if img.mode == "P" else None
    if own:
        own = np.asarray(own, dtype=np.uint8).reshape(-1, 3)[:256]
        out[: len(own)] = own
    return out


def _progress(items: Sequence, desc: str, show: bool) -> Iterator:
    if not show:
        return iter(items)
    from salmask.utils.log import progress

    return iter(progress(items, desc, total=len(items)))
