"""salmask's public functions: the pipeline's parts on arrays, one call each (import them from ``salmask``).

Every function here calls the code the pipeline's stages call; nothing is re-implemented. Arrays are numpy
unless a function says it also takes torch tensors. Bad input (wrong shape or dtype, NaN, a value out of
range) raises :class:`salmask.errors.ArgumentError`, a :class:`SalmaskError` and a ``ValueError``; a bad
file raises :class:`salmask.errors.InputError` naming it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np
import torch

from salmask.errors import ArgumentError, InputError, SalmaskError
from salmask.io import read_image
from salmask.select.judge import BoundaryJudge, ClassifierJudge, boundary_file

PathLike = str | os.PathLike
Array = TypeVar("Array", np.ndarray, torch.Tensor)

__all__ = [
    "read_image", "class_activation_maps", "boundary_map", "saliency_map", "boundary_labels", "random_walk",
    "pseudo_masks", "background_score", "select_masks", "segment", "segmentation_metrics", "sod_metrics", "run",
    "load", "Predictor", "SalmaskError",
]


# ----------------------------------------------------------------------------------------------------
# Checks

def _array(value: Any, name: str, ndim: int, *, floating: bool = False) -> np.ndarray:
    """``value`` (numpy, torch or nested lists) as a numpy array of ``ndim`` dimensions; finite if float."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise ArgumentError(f"{name} must be an array, got {type(value).__name__} ({e})") from None
    if arr.dtype == object or arr.ndim != ndim:
        raise ArgumentError(f"{name} must be a {ndim}-D array, got shape {list(arr.shape)} ({arr.dtype})")
    if floating and not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ArgumentError(f"{name} must be numeric, got {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ArgumentError(f"{name} contains NaN or infinite values")
    return arr


def _in_unit_range(arr: np.ndarray, name: str) -> None:
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ArgumentError(f"{name} must lie in [0, 1], got values in [{float(arr.min()):.4g}, "
                            f"{float(arr.max()):.4g}]")


def _image(image: Any) -> np.ndarray:
    arr = _array(image, "image", 3)
    if arr.dtype != np.uint8 or arr.shape[2] != 3 or 0 in arr.shape:
        raise ArgumentError(f"image must be RGB uint8 [H,W,3], got {arr.dtype} {list(arr.shape)} "
                            "(salmask.read_image reads any file that way)")
    return arr


def _keys(keys: Any, count: int, name: str = "keys") -> np.ndarray:
    arr = np.asarray(keys if keys is not None else np.arange(1, count + 1)).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ArgumentError(f"{name} must be integer class ids, got {arr.dtype} {arr.tolist()}")
    if arr.shape != (count,):
        raise ArgumentError(f"{name} must hold one class id per CAM channel ({count}), got {arr.tolist()}")
    if arr.size and (arr.min() < 1 or arr.max() > 254 or len(set(arr.tolist())) != arr.size):
        raise ArgumentError(f"{name} must be distinct class ids in 1..254 (0 is background), got {arr.tolist()}")
    return arr.astype(np.int64)


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ArgumentError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ArgumentError(f"{name} must lie in [{low}, {high}], got {value!r}")
    return float(value)


def _device(device: str | torch.device | None, like: Any = None) -> torch.device:
    if device is None:
        return like.device if isinstance(like, torch.Tensor) else torch.device("cpu")
    return torch.device(device)


# ----------------------------------------------------------------------------------------------------
# Models: CAMs, boundary maps, saliency

def class_activation_maps(image: np.ndarray, checkpoint: PathLike | torch.nn.Module, keys: Sequence[int], *,
                          scales: Sequence[float] = (1.0,), device: str | torch.device | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """CAMs of one image from a trained classifier, as the ``make_cam`` stage computes them.

    Args:
        image: RGB uint8 [H,W,3].
        checkpoint: a ``train_cam/model.pt`` written by salmask, or a loaded
            :class:`salmask.models.cam_net.CAMNet`.
        keys: the image's positive class ids [K] (1..C, background 0 excluded).
        scales: inference scales; the maps are summed over scales and horizontal flips.

    Returns:
        ``(cam, high_res)``: float32 [K,⌈H/4⌉,⌈W/4⌉] on the stride-4 grid (the walk's input) and float32
        [K,H,W], each class divided by its maximum, so in [0,1]; values are those the stage stores (float16).
    """
    return Predictor(cam=checkpoint, device=device).cams(image, keys, scales=scales)


def boundary_map(image: np.ndarray, checkpoint: PathLike | torch.nn.Module, *,
                 device: str | torch.device | None = None) -> np.ndarray:
    """The boundary map of one image from a trained boundary network, as the ``make_boundary`` stage.

    Args:
        image: RGB uint8 [H,W,3].
        checkpoint: a ``train_boundary/model.pt`` written by salmask, or a loaded
            :class:`salmask.models.boundary_net.BoundaryNet`.

    Returns:
        float32 [⌈H/4⌉,⌈W/4⌉] in [0,1], flip-averaged (values as the stage stores them, float16).
    """
    return Predictor(boundary=checkpoint, device=device).boundary(image)


def saliency_map(image: np.ndarray, *, method: str = "mbd") -> np.ndarray:
    """A training-free saliency map (``saliency.source=classic``): float32 [H,W] in [0,1].

    Args:
        image: RGB uint8 [H,W,3].
        method: ``"mbd"`` (minimum barrier distance, MB+) or ``"rbd"`` (robust background detection).
    """
    from salmask.saliency.classic import METHODS, classic_saliency

    if method not in METHODS:
        raise ArgumentError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return classic_saliency(_image(image), method=method)


# ----------------------------------------------------------------------------------------------------
# Boundary labels, walk, pseudo masks

def boundary_labels(cams: np.ndarray, saliency: np.ndarray | None, keys: Sequence[int] | None = None, *,
                    image: np.ndarray | None = None, crf: bool | None = None, fg_thres: float = 0.30,
                    bg_thres: float = 0.07, window: int = 13, theta_scale: float = 0.30, theta_diff: float = 0.10,
                    sal_edge_thres: float = 0.5) -> np.ndarray:
    """Boundary labels of one image from its CAMs and saliency (SBE), or its CAMs alone (BES).

    Args:
        cams: full-size CAMs [K,H,W] in [0,1] (``high_res`` of :func:`class_activation_maps`).
        saliency: [H,W] in [0,1] for SBE's labels, or None for BES's.
        keys: class ids [K] of the CAMs (default 1..K).
        image: RGB uint8 [H,W,3], for the dense CRF on the confident maps.
        crf: refine the confident maps with the dense CRF (needs ``image`` and ``pydensecrf2``); default:
            when ``image`` is given.
        fg_thres, bg_thres, window, theta_scale, theta_diff, sal_edge_thres: the ``boundary_labels`` config
            section (docs/method.md#boundary-labels).

    Returns:
        uint8 [H,W] label codes: BG 0, FG 50, FG_FG 100, FG_BG 150, IGNORE 200, CERTAIN_BOUNDARY 250.
    """
    from salmask.boundary import labels

    cams = _array(cams, "cams", 3, floating=True).astype(np.float32)
    _in_unit_range(cams, "cams")
    keys = _keys(keys, cams.shape[0])
    if saliency is not None:
        saliency = _array(saliency, "saliency", 2, floating=True).astype(np.float32)
        if saliency.shape != cams.shape[1:]:
            raise ArgumentError(f"saliency [H,W] = {list(saliency.shape)} must match the CAMs' "
                                f"{list(cams.shape[1:])}")
        _in_unit_range(saliency, "saliency")
    if image is not None:
        image = _image(image)
        if image.shape[:2] != cams.shape[1:]:
            raise ArgumentError(f"image {list(image.shape[:2])} must match the CAMs' {list(cams.shape[1:])}")
    use_crf = image is not None if crf is None else bool(crf)
    for name, v in (("fg_thres", fg_thres), ("bg_thres", bg_thres), ("theta_scale", theta_scale),
                    ("theta_diff", theta_diff)):
        _number(v, name, 0.0, 1.0)
    return labels.boundary_labels(cams, keys, saliency, image, fg_thres=fg_thres, bg_thres=bg_thres,
                                  use_crf=use_crf, window=window, theta_scale=theta_scale, theta_diff=theta_diff,
                                  sal_edge_thres=sal_edge_thres)


def random_walk(cams: Array, boundary: Array, *, beta: float = 5.0, exp_times: int = 8, radius: int = 5) -> Array:
    """The exact random walk of CAMs bounded by a boundary map, in memory linear in the pixels.

    ``(cams ⊙ (1 − boundary)) · T^(2^exp_times)`` with T the column-normalised a^β, a_ij = 1 − the boundary's
    maximum on the segment from i to j for pixels closer than ``radius`` (IRNet's/BES's definition), applied
    as 2^exp_times sparse steps instead of a dense (h·w)² matrix.

    Args:
        cams: [C,h,w] scores on the stride-4 grid, numpy or torch (CPU or CUDA; the walk runs there).
        boundary: [h,w] in [0,1] on the same grid.
        beta: the affinity exponent β > 0 (BES 5, IRNet 10); exp_times: log2 of the number of steps;
        radius: the neighbourhood radius (5 in the references).

    Returns:
        [C,h,w] walked scores, the type (and dtype, device) of ``cams``; not upsampled, not normalised.
    """
    from salmask.refine.random_walk import propagate

    if isinstance(cams, torch.Tensor):
        edge = boundary if isinstance(boundary, torch.Tensor) else torch.as_tensor(
            _array(boundary, "boundary", 2, floating=True))
        return propagate(cams, edge, beta=beta, exp_times=exp_times, radius=radius)
    arr = _array(cams, "cams", 3, floating=True)
    arr = arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float32)
    edge = _array(boundary, "boundary", 2, floating=True)
    walked = propagate(torch.from_numpy(arr), torch.from_numpy(edge.astype(arr.dtype)), beta=beta,
                       exp_times=exp_times, radius=radius)
    return walked.numpy()


def pseudo_masks(cams: Any, boundary: Any, keys: Any, *, saliency: Any = None, bg_score: float | str = "auto",
                 size: Any = None, beta: float = 5.0, exp_times: int = 8, radius: int = 5,
                 device: str | torch.device | None = None) -> tuple[Any, Any]:
    """Pseudo masks: the walk and the references' post-processing, as ``make_pseudo``, for one image or a set.

    The walked scores are upsampled ×4, cropped to ``size``, divided by their global maximum; a constant
    background channel at ``bg_score`` is put in front, the argmax over [background, *keys] gives class ids.

    Args:
        cams: stride-4 CAMs [K,h,w] (``cam`` of :func:`class_activation_maps`), numpy or torch; or a list of
            them, one per image (then ``boundary``, ``keys``, ``saliency`` and ``size`` are lists too).
        boundary: [h,w] in [0,1] (:func:`boundary_map`).
        keys: the class ids [K] of the CAM channels (1..254).
        saliency: [H,W] in [0,1] at the image's size, for ``bg_score="auto"``.
        bg_score: the background score in [0,1] (BES 0.21, IRNet's ``sem_seg_bg_thres`` 0.25), or ``"auto"``
            (``walk.bg_score``'s default): the score whose foreground agrees best with the saliency maps over
            all the images given (:func:`background_score`), as ``make_pseudo`` chooses it, without ground truth.
        size: the image's (H, W), with ⌈H/4⌉ = h and ⌈W/4⌉ = w; default (4h, 4w).
        beta, exp_times, radius: see :func:`random_walk`.
        device: where the walk runs (default: the tensor's device, else CPU).

    Returns:
        ``(mask, scores)``: uint8 [H,W] class ids (0 background) and float32 [K,H,W] in [0,1], the soft
        maps the Selector's alpha form reads; for a list, ``(masks, scores)`` as lists.
    """
    from salmask.refine.postprocess import scores_to_mask

    many = isinstance(cams, (list, tuple))
    n = len(cams) if many else 1

    def each(value: Any, name: str) -> list:
        if not many:
            return [value]
        if not isinstance(value, (list, tuple)) or len(value) != n:
            raise ArgumentError(f"with a list of {n} CAMs, {name} must be a list of {n}")
        return list(value)

    sizes = [None] * n if many and size is None else each(size, "size")
    walked = [_walk_scores(c, b, k, sz, beta=beta, exp_times=exp_times, radius=radius, device=device)
              for c, b, k, sz in zip(each(cams, "cams"), each(boundary, "boundary"), each(keys, "keys"), sizes)]
    if bg_score == "auto":
        if saliency is None:
            raise ArgumentError("bg_score='auto' chooses the background score by agreement with saliency: pass "
                                "saliency=[H,W] map(s), or a number (BES 0.21)")
        bg_score = background_score([s for _, s in walked], each(saliency, "saliency"))
    bg_score = _number(bg_score, "bg_score", 0.0, 1.0)
    masks = [scores_to_mask(s, k, bg_score) for k, s in walked]
    if many:
        return masks, [s for _, s in walked]
    return masks[0], walked[0][1]


def _walk_scores(cams: Any, boundary: Any, keys: Any, size: Any, *, beta: float, exp_times: int, radius: int,
                 device: str | torch.device | None) -> tuple[np.ndarray, np.ndarray]:
    """(keys [K], walk scores float32 [K,H,W] in [0,1]) of one image; arguments as :func:`pseudo_masks`."""
    from salmask.refine.postprocess import walk_scores

    run_on = _device(device, cams)
    cam = _array(cams, "cams", 3, floating=True).astype(np.float32)
    edge = _array(boundary, "boundary", 2, floating=True).astype(np.float32)
    if edge.shape != cam.shape[1:]:
        raise ArgumentError(f"boundary [h,w] = {list(edge.shape)} must match the CAMs' grid {list(cam.shape[1:])}")
    _in_unit_range(edge, "boundary")
    keys = _keys(keys, cam.shape[0])
    h, w = cam.shape[1:]
    size = (4 * h, 4 * w) if size is None else tuple(int(s) for s in size)
    if len(size) != 2 or -(-size[0] // 4) != h or -(-size[1] // 4) != w:
        raise ArgumentError(f"size {size} is not an image size whose stride-4 grid is {h}x{w} "
                            f"(H in {4 * h - 3}..{4 * h}, W in {4 * w - 3}..{4 * w})")
    return keys, walk_scores(cam, edge, size, beta=beta, exp_times=exp_times, radius=radius, device=run_on)


def background_score(scores: Sequence[np.ndarray], saliency: Sequence[np.ndarray]) -> float:
    """The walk's background score chosen without ground truth (``walk.bg_score: auto``).

    Args:
        scores: per image, the walk scores [K,H,W] in [0,1] (``scores`` of :func:`pseudo_masks`).
        saliency: per image, its saliency map [H,W] in [0,1].

    Returns:
        the score t on the grid 0.05, 0.06, ..., 0.95 whose foreground {max score > t} has the highest IoU
        with the salient region {saliency > 0.5}, summed over all images (docs/method.md#background-score).
    """
    from salmask.refine.bg_score import SaliencyAgreement, choose

    if len(scores) != len(saliency) or not scores:
        raise ArgumentError(f"scores and saliency must be lists of the same non-zero length "
                            f"(got {len(scores)} and {len(saliency)})")
    agreement = SaliencyAgreement()
    for j, (sc, sal) in enumerate(zip(scores, saliency)):
        sc = _array(sc, f"scores[{j}]", 3, floating=True)
        sal = _array(sal, f"saliency[{j}]", 2, floating=True)
        if sal.shape != sc.shape[1:]:
            raise ArgumentError(f"saliency[{j}] {list(sal.shape)} must have the scores' size {list(sc.shape[1:])}")
        _in_unit_range(sal, f"saliency[{j}]")
        agreement.update(sc, sal)
    return choose(agreement)[0]


# ----------------------------------------------------------------------------------------------------
# The Salient Object Selector

def select_masks(pseudo: PathLike | Sequence[np.ndarray] | Mapping[str, np.ndarray],
                 saliency: PathLike | Sequence[np.ndarray] | Mapping[str, np.ndarray],
                 labels: Any = None, *, out: PathLike | None = None, num_classes: int = 21, mode: str = "sep",
                 t0: float = 0.4, t1: float = 0.2, tau: float = 1.4, eta: float = 0.75, sal_thres: float = 0.5,
                 salient_classes: Sequence[int | str] | None = None, soft: Any = None, gt: Any = None,
                 judge: str = "boundary", boundary: Any = None, images: Any = None,
                 cam: PathLike | torch.nn.Module | None = None,
                 class_names: Sequence[str] | None = None, allow_missing: bool = False,
                 device: str | torch.device | None = None, progress: bool = False) -> Any:
    """The Salient Object Selector: single-class pseudo masks replaced (or fused) by saliency where they agree.

    On folders (as ``salmask select``): ``pseudo`` and ``saliency`` are folders of ``{id}.png``, ``out`` the
    output folder, ``labels`` a mapping id -> classes, a labels file or None (the classes in each mask),
    ``soft``/``gt`` folders or None. Returns the report (a dict, see
    :func:`salmask.select.sos.select_folder`).

    On arrays: ``pseudo`` a list (or a dict by id) of uint8 [H,W] masks (0 background, 1..C-1, 255 ignore),
    ``saliency`` the same of float [H,W] maps in [0,1], ``labels`` the same of class-id lists or None,
    ``soft`` the same of ``(keys [K], scores [K,H,W])`` pairs or None, ``gt`` the same of [H,W] masks or
    None. The Selector runs on them in memory, with the folder form's decisions to the bit for the same
    values (e.g. the maps :func:`salmask.read_gray` reads from the folder). Returns ``(masks, report)``,
    ``masks`` (uint8 [H,W]) in the container type of ``pseudo``.

    Options (docs/method.md#salient-object-selector): ``mode`` "sep" (Algorithm 1), "alpha" or "auto", ``t0``,
    ``t1``, ``tau``, ``eta``,
    ``sal_thres``, ``salient_classes`` (class ids or names; default: n*_c ≥ eta); ``class_names`` name the
    report's classes; ``allow_missing`` passes folder images without a saliency map through; ``progress``
    shows progress bars.

    ``mode="auto"`` decides per single-class image without a threshold: a ``judge`` scores the walk's mask
    and the saliency mask, and the saliency mask replaces the walk's where it scores higher
    (:mod:`salmask.select.judge`). ``judge="boundary"`` needs ``boundary``, the boundary network's maps: a
    folder of ``{id}.npz`` as ``make_boundary`` writes, else float [h,w] arrays in [0,1] (stride 4 or any size)
    in the container type of ``pseudo``. ``judge="classifier"`` needs the CAM classifier ``cam`` (a
    ``train_cam/model.pt`` or a loaded CAMNet, run on ``device``) and the ``images``: a folder of
    ``{id}.jpg``/``.png``, else RGB uint8 [H,W,3] arrays.
    """
    from salmask.select.sos import SelectorConfig, resolve_classes, select_folder

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= 255:
        raise ArgumentError(f"num_classes must be an integer in 2..255, got {num_classes!r}")
    salient = None if salient_classes is None else tuple(sorted(resolve_classes(
        salient_classes, num_classes=num_classes, class_names=class_names, source="salient_classes")))
    config = SelectorConfig(mode=mode, t0=t0, t1=t1, tau=tau, eta=eta, sal_thres=sal_thres, salient_classes=salient,
                            allow_missing=allow_missing)
    auto = config.mode == "auto"
    if auto and judge not in ("boundary", "classifier"):
        raise ArgumentError(f"judge must be 'boundary' or 'classifier', got {judge!r}")
    if auto and judge == "boundary" and boundary is None:
        raise ArgumentError("mode='auto' with judge='boundary' needs boundary, the boundary maps "
                            "(salmask select: --boundary RUN/make_boundary)")
    if auto and judge == "classifier" and (images is None or cam is None):
        raise ArgumentError("mode='auto' with judge='classifier' needs images and cam, the CAM classifier's "
                            "checkpoint or model (salmask select: --images DIR --cam RUN/train_cam/model.pt)")
    model = Predictor(cam=cam, device=device).network("cam") if auto and judge == "classifier" else None
    use_boundary = auto and judge == "boundary"
    if isinstance(pseudo, (str, os.PathLike)):
        if not isinstance(saliency, (str, os.PathLike)) or out is None:
            raise ArgumentError("with a pseudo-mask folder, saliency must be a folder and out the output folder")
        for name, v in (("soft", soft), ("gt", gt), ("images", images), ("boundary", boundary)):
            if v is not None and not isinstance(v, (str, os.PathLike)):
                raise ArgumentError(f"with folders, {name} must be a folder or None")
        chosen = None
        if use_boundary:
            if not Path(boundary).is_dir():
                raise InputError(boundary, "boundary-map folder not found")
            chosen = BoundaryJudge(boundary_file(Path(boundary)))
        elif model is not None:
            chosen = ClassifierJudge(model, _image_finder(Path(images)), device=next(model.parameters()).device)
        return select_folder(pseudo, saliency, out, num_classes=num_classes, config=config, labels=labels,
                             soft_dir=soft, gt_dir=gt, class_names=class_names, judge=chosen, progress=progress)
    if out is not None:
        raise ArgumentError("out is for folders; on arrays select_masks returns the masks")
    return _select_arrays(pseudo, saliency, labels, soft, gt, config, num_classes, class_names, images, model,
                          boundary if use_boundary else None)


def _image_finder(folder: Path) -> Callable[[str], Path]:
    """id -> ``folder/{id}.jpg`` (or .jpeg / .png); an InputError naming the folder when neither exists."""
    if not folder.is_dir():
        raise InputError(folder, "image folder not found")

    def find(i: str) -> Path:
        for suffix in (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG"):
            if (folder / f"{i}{suffix}").is_file():
                return folder / f"{i}{suffix}"
        raise InputError(folder / f"{i}.jpg", f"image of {i!r} not found (.jpg, .jpeg or .png)")

    return find


def _by_id(value: Any, name: str, ids: list[str] | None) -> dict[str, Any]:
    if isinstance(value, Mapping):
        out = {str(k): v for k, v in value.items()}
    elif isinstance(value, (list, tuple)):
        out = {f"{j:06d}": v for j, v in enumerate(value)}
    else:
        raise ArgumentError(f"{name} must be a list or a dict of arrays (or a folder), got {type(value).__name__}")
    if ids is not None and sorted(out) != sorted(ids):
        raise ArgumentError(f"{name} must hold one entry per pseudo mask ({len(ids)}), got {len(out)}")
    return out


def _class_mask(value: Any, name: str, num_classes: int) -> np.ndarray:
    """A class-id mask uint8 [H,W]: 0..num_classes-1, 255 ignore."""
    mask = _array(value, name, 2)
    if not np.issubdtype(mask.dtype, np.integer) or mask.size == 0:
        raise ArgumentError(f"{name} must be a non-empty integer [H,W] mask, got {mask.dtype}")
    bad = (mask < 0) | ((mask >= num_classes) & (mask != 255))
    if bad.any():
        raise ArgumentError(f"{name} has values {sorted(set(mask[bad].tolist()))[:8]} outside "
                            f"0..{num_classes - 1} and 255")
    return mask.astype(np.uint8)


def _select_arrays(pseudo: Any, saliency: Any, labels: Any, soft: Any, gt: Any, config, num_classes: int,
                   class_names: Sequence[str] | None, images: Any = None,
                   model: torch.nn.Module | None = None, boundary: Any = None) -> tuple[Any, dict]:
    """The arrays checked, then the Selector's core on them in memory (:func:`salmask.select.sos.select_arrays`)."""
    from salmask.select.sos import Arrays, resolve_classes, select_arrays

    masks = _by_id(pseudo, "pseudo", None)
    if not masks:
        raise ArgumentError("pseudo holds no mask")
    ids = list(masks)
    sal = _by_id(saliency, "saliency", ids)
    for i in ids:
        mask = masks[i] = _class_mask(masks[i], f"pseudo[{i!r}]", num_classes)
        s = _array(sal[i], f"saliency[{i!r}]", 2, floating=True)
        if s.shape != mask.shape:
            raise ArgumentError(f"saliency[{i!r}] {list(s.shape)} must match its mask {list(mask.shape)}")
        _in_unit_range(s, f"saliency[{i!r}]")
        sal[i] = s if s.dtype in (np.float32, np.float64) else s.astype(np.float64)
    if labels is not None:
        labels = {i: resolve_classes([int(c) if isinstance(c, (int, np.integer)) else c for c in v],
                                     num_classes=num_classes, class_names=class_names, source=f"labels[{i!r}]")
                  for i, v in _by_id(labels, "labels", ids).items()}
    if soft is not None:
        soft = {i: (np.asarray(keys), _array(scores, f"soft[{i!r}] scores", 3, floating=True))
                for i, (keys, scores) in _by_id(soft, "soft", ids).items()}
    if gt is not None:
        gt = {i: _class_mask(g, f"gt[{i!r}]", num_classes) for i, g in _by_id(gt, "gt", ids).items()}
    judge = None
    if model is not None:
        shown = {}
        for i, img in _by_id(images, "images", ids).items():
            shown[i] = _image(img)
            if shown[i].shape[:2] != masks[i].shape:
                raise ArgumentError(f"images[{i!r}] {list(shown[i].shape[:2])} must match its mask "
                                    f"{list(masks[i].shape)}")
        judge = ClassifierJudge(model, shown.__getitem__, device=next(model.parameters()).device)
    elif boundary is not None:
        maps = _by_id(boundary, "boundary", ids)
        for i, b in maps.items():
            b = _array(b, f"boundary[{i!r}]", 2, floating=True)
            _in_unit_range(b, f"boundary[{i!r}]")
            maps[i] = b.astype(np.float32)
        judge = BoundaryJudge(maps.__getitem__)
    selected, report = select_arrays(Arrays(masks, sal, num_classes, labels, gt, soft), config,
                                     class_names=class_names, judge=judge)
    if isinstance(pseudo, Mapping):
        return {k: selected[str(k)] for k in pseudo}, report
    return [selected[i] for i in ids], report


# ----------------------------------------------------------------------------------------------------
# The segmentation network

def segment(image: np.ndarray, checkpoint: PathLike | torch.nn.Module, *, scales: Sequence[float] = (1.0,),
            flip: bool = True, crf: bool = False, device: str | torch.device | None = None) -> np.ndarray:
    """The class-id mask of one image from a trained DeepLab, as the ``infer_seg`` stage predicts it.

    Args:
        image: RGB uint8 [H,W,3].
        checkpoint: a ``train_seg/model.pt`` written by salmask, or a loaded DeepLab
            (:func:`salmask.models.deeplab.build_segmenter`).
        scales: inference scales; probabilities are averaged over scales (and horizontal flips with
            ``flip``). A run's own figures come from its ``seg.scales`` (``voc_cpu``: 0.625, 0.875).
        crf: refine the probabilities with DeepLab's dense CRF (``seg.crf``; needs ``salmask[crf]``).

    Returns:
        uint8 [H,W]: class ids 0..K-1 (0 background).
    """
    return Predictor(seg=checkpoint, device=device).segment(image, scales=scales, flip=flip, crf=crf)


# ----------------------------------------------------------------------------------------------------
# Metrics

def _pairs(pred: Any, gt: Any, what: str) -> list[tuple[np.ndarray, np.ndarray]]:
    single = isinstance(pred, (np.ndarray, torch.Tensor)) and np.ndim(pred) == 2
    preds, gts = ([pred], [gt]) if single else (list(pred), list(gt))
    if len(preds) != len(gts) or not preds:
        raise ArgumentError(f"{what}: pred and gt must be one [H,W] array each, or lists of the same "
                            f"non-zero length (got {len(preds)} and {len(gts)})")
    return [(_array(p, f"pred[{j}]", 2), _array(g, f"gt[{j}]", 2)) for j, (p, g) in enumerate(zip(preds, gts))]


def segmentation_metrics(pred: PathLike | np.ndarray | Sequence[np.ndarray],
                         gt: PathLike | np.ndarray | Sequence[np.ndarray], *, num_classes: int = 21,
                         ignore_index: int = 255, class_names: Sequence[str] | None = None) -> dict:
    """Acc, Acc_class, mIoU, fwIoU (percent) and per-class IoU of label maps against ground truth.

    ``pred`` and ``gt``: two folders of ``{id}.png`` (ids from the ground-truth folder, as ``salmask eval``),
    one integer [H,W] map each, or two lists of them. Values are class ids 0..num_classes-1; ground truth
    ``ignore_index`` is skipped and a predicted ``ignore_index`` counts as background (the field's convention
    for pseudo masks). Returns the scores with ``pixels`` and ``images``.
    """
    from salmask.metrics.confusion import ConfusionMatrix, score_folders

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ArgumentError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if isinstance(pred, (str, os.PathLike)) or isinstance(gt, (str, os.PathLike)):
        return score_folders(pred, gt, num_classes, ignore_index=ignore_index, class_names=class_names)
    cm = ConfusionMatrix(num_classes, ignore_index)
    pairs = _pairs(pred, gt, "segmentation_metrics")
    for j, (p, g) in enumerate(pairs):
        for name, a in ((f"pred[{j}]", p), (f"gt[{j}]", g)):
            if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
                raise ArgumentError(f"{name} must hold integer class ids, got {a.dtype}")
        if p.shape != g.shape:
            raise ArgumentError(f"pred[{j}] {list(p.shape)} and gt[{j}] {list(g.shape)} differ in size")
        cm.update(p, g, name=f"pred[{j}]")
    out = cm.scores(class_names)
    out["images"] = len(pairs)
    return out


def sod_metrics(pred: PathLike | np.ndarray | Sequence[np.ndarray],
                gt: PathLike | np.ndarray | Sequence[np.ndarray]) -> dict:
    """MAE, max/mean/adaptive F-measure (β² = 0.3), S-measure, E-measure of saliency maps (fractions).

    ``pred``: a folder of grayscale ``{id}.png`` (with ``gt`` a folder of masks, as ``salmask sod-eval``),
    one [H,W] map (float in [0,1] or uint8), or a list of them; ``gt``: the binary masks [H,W] (bool, 0/1
    or 0/255). Returns ``{MAE, maxF, meanF, adpF, Sm, Em, maxEm, adpEm, images}``
    (see :mod:`salmask.metrics.sod`).
    """
    from salmask.metrics.sod import SODMetrics, score_sod_folders

    if isinstance(pred, (str, os.PathLike)) or isinstance(gt, (str, os.PathLike)):
        return score_sod_folders(pred, gt)
    metrics = SODMetrics()
    for j, (p, g) in enumerate(_pairs(pred, gt, "sod_metrics")):
        metrics.update(p, g, name=f"pred[{j}]")
    return metrics.results()


# ----------------------------------------------------------------------------------------------------
# The pipeline

def run(preset: str = "demo", overrides: Sequence[str] = (), *, stages: Sequence[str] | None = None,
        force: bool = False, **settings: Any) -> dict:
    """Run the pipeline as ``salmask run PRESET KEY=VALUE ... [--stages ...] [--force]``; return its summary.

    ``preset``: a preset name or a YAML file; ``overrides``: ``"key=value"`` strings; ``settings``: the same
    as keywords, ``__`` standing for ``.`` (``walk__beta=10``) or unpacked (``**{"walk.beta": 10}``).
    Stage outputs land in the config's ``work_dir`` as with the CLI.

    Returns:
        the metric summary the CLI prints (``cam``, ``sod``, ``sbe``, ``sos``, ``seg`` as present; see
        :func:`salmask.summary.build_summary`), what produced its saliency (``saliency``, ``sod_sources``: see
        :func:`salmask.report.sources.saliency_entries`), ``stages``: {stage: manifest} and ``work_dir``.
    """
    from salmask.config import load_config
    from salmask.summary import build_summary
    from salmask.pipeline import run_pipeline
    from salmask.report.sources import saliency_entries

    items = [*overrides]
    for key, value in settings.items():
        text = str(value) if isinstance(value, (str, os.PathLike)) else json.dumps(value)
        items.append(f"{key.replace('__', '.')}={text}")
    cfg = load_config(preset, items)
    results = run_pipeline(cfg, stages=list(stages) if stages is not None else None, force=force)
    work_dir = Path(cfg.work_dir).expanduser().resolve()
    return {**build_summary(results, {}), **saliency_entries(work_dir), "stages": results, "work_dir": str(work_dir)}


# ----------------------------------------------------------------------------------------------------
# A run's networks, loaded once

Checkpoint = PathLike | torch.nn.Module | None


class Predictor:
    """A run's trained networks, each loaded on first use and then reused by every call.

    >>> predictor = salmask.load("work/voc_real")     # a finished run: its checkpoints and settings
    >>> cam, high_res = predictor.cams(image, keys)   # make_cam's maps, at the run's cam.scales
    >>> mask, scores = predictor.pseudo_mask(image, keys, saliency=sal)   # the walk, as make_pseudo
    >>> masks = [predictor.segment(im) for im in images]                  # DeepLab, loaded once

    ``cam``, ``boundary``, ``seg``: a salmask ``model.pt`` or a loaded network of that kind (CAMNet,
    BoundaryNet, DeepLab); ``settings``: the run's config (scales, the walk, DeepLab's inference), or None for
    the functions' defaults; ``device`` (``auto``: CUDA when present; default: the config's ``device``, else
    the CPU).
    """

    def __init__(self, *, cam: Checkpoint = None, boundary: Checkpoint = None, seg: Checkpoint = None,
                 settings: Any = None, device: str | torch.device | None = None, bg_score: float | None = None):
        self.settings = settings
        want = device if device is not None else (settings.device if settings is not None else "cpu")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if want == "auto" \
            else _device(want)
        self.bg_score = bg_score
        """The background score the run chose (``make_pseudo``'s manifest), the walk's default here."""
        self._sources = {"cam": cam, "boundary": boundary, "deeplab": seg}
        self._networks: dict[str, torch.nn.Module] = {}

    def network(self, kind: str) -> torch.nn.Module:
        """The ``cam``, ``boundary`` or ``deeplab`` network, loaded (once) on this predictor's device."""
        from salmask.models.boundary_net import BoundaryNet
        from salmask.models.build import load_network
        from salmask.models.cam_net import CAMNet
        from salmask.seg.inference import prepare_model

        if kind in self._networks:
            return self._networks[kind]
        source = self._sources[kind]
        loaded = {"cam": CAMNet, "boundary": BoundaryNet}.get(kind)
        if source is None:
            raise ArgumentError(f"no {kind} network: give its checkpoint (salmask.load(work_dir) finds a run's)")
        if isinstance(source, (str, os.PathLike)):
            net = load_network(Path(source), self.device, expect=kind, defaults=self._defaults(kind))
        elif isinstance(source, torch.nn.Module) and (isinstance(source, loaded) if loaded else hasattr(source, "backbone")):
            net = source.to(self.device).eval()
        else:
            what = {"cam": "a CAMNet", "boundary": "a BoundaryNet", "deeplab": "a DeepLab model"}[kind]
            raise ArgumentError(f"checkpoint must be a path or {what}, got {type(source).__name__}")
        self._networks[kind] = prepare_model(net, self.device) if kind == "deeplab" else net
        return self._networks[kind]

    def _defaults(self, kind: str) -> dict:
        """Build arguments for checkpoints older than the network record, from the run's settings."""
        if self.settings is None:
            return {}
        section = {"cam": "cam", "boundary": "boundary", "deeplab": "seg"}[kind]
        return {k: v for k, v in self.settings[section].items() if k in ("backbone", "attention_k", "norm")}

    def _setting(self, key: str, default: Any) -> Any:
        from omegaconf import OmegaConf

        value = None if self.settings is None else OmegaConf.select(self.settings, key)
        return default if value is None else value

    def cams(self, image: np.ndarray, keys: Sequence[int], *, scales: Sequence[float] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """CAMs of one image, as ``make_cam``: see :func:`class_activation_maps` (``scales``: the run's
        ``cam.scales`` by default, else 1.0)."""
        from salmask.cam.infer import cams_for_batch

        image = _image(image)
        model = self.network("cam")
        keys = _keys(keys, len(np.asarray(keys).reshape(-1)))
        num_fg = model.classifier.weight.shape[0]
        if keys.size and keys.max() > num_fg:
            raise ArgumentError(f"keys {keys.tolist()} exceed the checkpoint's {num_fg} classes")
        scales = [_number(s, "scales", 1e-3, 1e3) for s in (scales or self._setting("cam.scales", (1.0,)))]
        if not keys.size:
            h4, w4 = -(-image.shape[0] // 4), -(-image.shape[1] // 4)
            return np.zeros((0, h4, w4), np.float32), np.zeros((0, *image.shape[:2]), np.float32)
        res = cams_for_batch(model, [image], [keys.tolist()], scales, self.device, amp=self._amp)[0]
        return res["cam"].astype(np.float32), res["high_res"].astype(np.float32)

    def boundary(self, image: np.ndarray) -> np.ndarray:
        """The boundary map of one image, as ``make_boundary``: float32 [⌈H/4⌉,⌈W/4⌉] in [0,1]."""
        from salmask.data.transforms import to_tensor

        image = _image(image)
        net = self.network("boundary")
        with torch.no_grad():
            prob = net.predict(to_tensor(image)[None].to(self.device))[0, 0]
        return prob.cpu().numpy().astype(np.float16).astype(np.float32)

    def pseudo_mask(self, image: np.ndarray, keys: Sequence[int], *, saliency: np.ndarray | None = None,
                    bg_score: float | str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The pseudo mask of one image: its CAMs walked inside the run's boundary evidence (``walk.boundary``:
        the learned map, the saliency map's edges, or both), as ``make_pseudo``. ``saliency`` [H,W] in [0,1]
        is needed for saliency edges and for ``bg_score="auto"``; ``bg_score`` defaults to the score the run
        chose, else ``walk.bg_score``. Returns ``(mask, scores)`` as :func:`pseudo_masks`."""
        from salmask.refine.edges import walk_boundary

        image = _image(image)
        cam, _ = self.cams(image, keys)
        source = str(self._setting("walk.boundary", "learned"))
        learned = self.boundary(image) if source != "saliency" else None
        if source != "learned" and saliency is None:
            raise ArgumentError(f"walk.boundary={source} walks inside the saliency map's edges: pass saliency")
        sal = None if saliency is None else _array(saliency, "saliency", 2, floating=True).astype(np.float32)
        if sal is not None and sal.shape != image.shape[:2]:
            raise ArgumentError(f"saliency {list(sal.shape)} must have the image's size {list(image.shape[:2])}")
        edge = walk_boundary(source, learned, sal, cam.shape[1:])
        score = bg_score if bg_score is not None else (
            self.bg_score if self.bg_score is not None else self._setting("walk.bg_score", "auto"))
        return pseudo_masks(cam, edge, keys, saliency=sal, bg_score=score, size=image.shape[:2],
                            beta=float(self._setting("walk.beta", 5.0)), exp_times=int(self._setting("walk.exp_times", 8)),
                            radius=int(self._setting("walk.radius", 5)), device=self.device)

    def segment(self, image: np.ndarray, *, scales: Sequence[float] | None = None, flip: bool | None = None,
                crf: bool | None = None) -> np.ndarray:
        """The class-id mask of one image from DeepLab, as ``infer_seg``: see :func:`segment`; ``scales``,
        ``flip``, ``crf`` default to the run's ``seg.*`` (else 1.0, flip, no CRF)."""
        from salmask.boundary.crf import crf_enabled
        from salmask.seg.inference import segment as segment_images

        image = _image(image)
        scales = [_number(s, "scales", 1e-3, 1e3) for s in (self._setting("seg.scales", (1.0,)) if scales is None
                                                              else scales)]
        if not scales:
            raise ArgumentError("scales must hold at least one scale")
        flip = bool(self._setting("seg.flip", True) if flip is None else flip)
        use_crf = crf_enabled(bool(self._setting("seg.crf", False) if crf is None else crf),
                              "seg.crf" if crf is None and self.settings is not None else "crf")
        model = self.network("deeplab")
        return segment_images(model, [image], scales=scales, flip=flip, crf=use_crf, amp=self._amp)[0]

    @property
    def _amp(self) -> bool:
        return bool(self._setting("amp", False)) and self.device.type == "cuda"


def load(work_dir: PathLike | None = None, *, cam: Checkpoint = None, boundary: Checkpoint = None,
         seg: Checkpoint = None, device: str | torch.device | None = None, overrides: Sequence[str] = ()) -> Predictor:
    """A :class:`Predictor` over a finished run's networks (``work_dir``: its ``train_cam``, ``train_boundary``
    and ``train_seg`` checkpoints, its ``config.yaml`` settings with ``overrides``, and the background score
    it chose), or over checkpoint paths given one by one. Nothing loads until a method needs it."""
    from salmask.config import load_config
    from salmask.io import read_json

    settings, bg_score = None, None
    if work_dir is not None:
        work = Path(work_dir).expanduser()
        config = work / "config.yaml"
        if not config.is_file():
            raise InputError(config, "not a salmask work directory (no config.yaml)")
        settings = load_config(str(config), [*overrides, *([f"device={device}"] if device is not None else [])])
        found = {name: work / name / "model.pt" for name in ("train_cam", "train_boundary", "train_seg")}
        cam = cam if cam is not None else (found["train_cam"] if found["train_cam"].is_file() else None)
        boundary = boundary if boundary is not None else (
            found["train_boundary"] if found["train_boundary"].is_file() else None)
        seg = seg if seg is not None else (found["train_seg"] if found["train_seg"].is_file() else None)
        made = work / "make_pseudo" / "manifest.json"
        bg_score = read_json(made).get("bg_score") if made.is_file() else None
    return Predictor(cam=cam, boundary=boundary, seg=seg, settings=settings, device=device, bg_score=bg_score)
