"""Fully connected (dense) CRF refinement, an optional extra (``pip install 'salmask[crf]'``).

Wraps Krähenbühl's dense CRF through the ``pydensecrf2`` package (import name ``pydensecrf``; the
older ``pydensecrf`` package provides the same module). Defaults are IRNet/BES's settings: 10
mean-field iterations, Gaussian kernel sxy 3 compat 3, bilateral kernel sxy 50 srgb 5 compat 10.

A setting that asks for the CRF when the package is missing is an error (:func:`crf_enabled`), never a
silent fallback to unrefined maps: those give other numbers (the demo's BES row falls by 8 mIoU).
"""
from __future__ import annotations

import functools

import numpy as np

from salmask.errors import ConfigError, SalmaskError

_PROB_CLIP = 1e-5  # pydensecrf's own clip in unary_from_softmax: keeps -log(p) finite


@functools.lru_cache(maxsize=None)
def crf_available() -> bool:
    """True when the dense CRF extension (``pydensecrf``) can be imported."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def crf_package() -> str:
    """The installed CRF distribution and version, as manifests record it (e.g. ``pydensecrf2 1.1``)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist_name in ("pydensecrf2", "pydensecrf"):
        try:
            return f"{dist_name} {version(dist_name)}"
        except PackageNotFoundError:
            continue
    return "pydensecrf"


def missing_crf_message(key: str) -> str:
    """The error for ``key=true`` without the CRF package, naming both fixes."""
    return (f"{key}=true needs the dense CRF, which is not installed: pip install 'salmask[crf]' "
            f"(pydensecrf2), or set {key}=false (other results: maps are then used unrefined)")


def crf_enabled(requested: bool = True, key: str = "crf") -> bool:
    """Whether a caller that ``requested`` CRF refinement gets it: ``requested`` itself.

    Raises:
        ConfigError: requested, but the CRF is not installed (the message names ``key`` and both fixes).
    """
    if not requested:
        return False
    if not crf_available():
        raise ConfigError(missing_crf_message(key))
    return True


def _check_image(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"CRF image must be uint8 [H,W,3], got {image.dtype} {image.shape}")
    if image.shape[:2] != hw:
        raise ValueError(f"CRF image is {image.shape[:2]} but the maps are {hw}")
    return np.array(image, order="C")  # a copy: pydensecrf rejects read-only buffers (PIL arrays)


def dense_crf(image: np.ndarray, probs: np.ndarray, *, iterations: int = 10,
              gt_prob: float | None = None, sxy_gauss: float = 3, compat_gauss: float = 3,
              sxy_bilateral: float = 50, srgb: float = 5, compat_bilateral: float = 10) -> np.ndarray:
    """Mean-field posterior of a dense CRF.

    Args:
        image: RGB uint8 [H,W,3] driving the bilateral kernel.
        probs: per-label probabilities [L,H,W] (each pixel's column should sum to 1).
        gt_prob: if given, the certainty of ``probs``: they are blended towards uniform as
            ``gt_prob·p + (1−gt_prob)/L`` before the unary ``−log p`` (pydensecrf's ``scale``).

    Returns:
        float32 [L,H,W] posterior marginals.

    Raises:
        SalmaskError: the CRF is not installed (check :func:`crf_enabled` first).
        ValueError: shapes, dtypes or values that cannot be used.
    """
    if not crf_available():
        raise SalmaskError("dense CRF requested but not installed: pip install 'salmask[crf]'")
    import pydensecrf.densecrf as dcrf

    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"CRF probs must be [L,H,W] with L >= 1, got {probs.shape}")
    if not np.isfinite(probs).all() or probs.min() < 0:
        raise ValueError("CRF probs must be finite and non-negative")
    if iterations < 0:
        raise ValueError(f"CRF iterations must be >= 0, got {iterations}")
    n_labels, h, w = probs.shape
    image = _check_image(image, (h, w))
    if gt_prob is not None:
        if not 0 < gt_prob <= 1:
            raise ValueError(f"CRF gt_prob must be in (0, 1], got {gt_prob}")
        probs = gt_prob * probs + (1.0 - gt_prob) / n_labels
    unary = -np.log(np.clip(probs, _PROB_CLIP, 1.0)).reshape(n_labels, -1)

    crf = dcrf.DenseCRF2D(w, h, n_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=sxy_gauss, compat=compat_gauss)
    crf.addPairwiseBilateral(sxy=sxy_bilateral, srgb=srgb, rgbim=image, compat=compat_bilateral)
    q = crf.inference(iterations)
    return np.asarray(q, dtype=np.float32).reshape(n_labels, h, w)


def crf_labels(image: np.ndarray, labels: np.ndarray, n_labels: int, gt_prob: float = 0.7,
               **crf_kwargs) -> np.ndarray:
    """Refine a hard label map [H,W] (values 0..n_labels−1) with a dense CRF; returns int64 [H,W].

    The unary trusts each pixel's label with probability ``gt_prob`` and spreads the rest
    evenly over the other labels (IRNet's ``crf_inference_label``, pydensecrf's
    ``unary_from_labels`` with ``zero_unsure=False``). ``crf_kwargs`` go to :func:`dense_crf`.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"CRF labels must be an integer [H,W] map, got {labels.dtype} {labels.shape}")
    if n_labels < 1:
        raise ValueError(f"n_labels must be >= 1, got {n_labels}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(f"CRF labels must lie in [0, {n_labels}), got "
                         f"[{labels.min()}, {labels.max()}]")
    if not 0 < gt_prob < 1:
        raise ValueError(f"CRF gt_prob must be in (0, 1), got {gt_prob}")
    if n_labels == 1:
        _check_image(image, labels.shape)
        return np.zeros(labels.shape, dtype=np.int64)
    probs = np.full((n_labels, *labels.shape), (1.0 - gt_prob) / (n_labels - 1))
    np.put_along_axis(probs, labels[None].astype(np.int64), gt_prob, axis=0)
    return dense_crf(image, probs, **crf_kwargs).argmax(axis=0)
