"""Training-free salient-object maps: MB+ (minimum barrier) and RBD (robust background detection).

Both rest on the *boundary prior*: background regions touch the image border through paths of similar
colour, objects do not.

* ``mbd`` — MB+ of Zhang et al., "Minimum Barrier Salient Object Detection at 80 FPS" (ICCV 2015).
  The minimum barrier distance of a pixel to the border is the smallest, over paths to the border,
  of (highest - lowest) value met on the path, approximated by raster sweeps that carry each pixel's
  path maximum/minimum. It is summed over the Lab channels, added to a backgroundness map (whitened
  colour distance to each border strip, the most dissimilar strip discarded in case the object
  touches it), weighted by a centre map, smoothed by morphological reconstruction and sharpened with
  a sigmoid. The sweeps run one direction at a time, vectorised across a whole row or column.
* ``rbd`` — Zhu et al., "Saliency Optimization from Robust Background Detection" (CVPR 2014). SLIC
  superpixels; geodesic colour distances on their adjacency graph (border superpixels linked to each
  other); boundary connectivity = border length / sqrt(spanning area) gives a background probability;
  background-weighted contrast gives a foreground weight; the map is the least-squares optimum of
  background, foreground and smoothness terms (a small linear system over superpixels).

A constant (or flat) image has no salient object: both methods return all zeros for it.
"""
from __future__ import annotations

import cv2
import numpy as np

METHODS = ("mbd", "rbd")

_MBD_ROUNDS = 3          # each round sweeps down, up, right and left
_BG_MARGIN = 0.1         # border strip width for the backgroundness map (fraction of the side)
_BG_COV_REG = 50.0       # covariance regulariser, for 8-bit Lab channels
_SMOOTH_ALPHA = 50.0     # reconstruction width = alpha * sqrt(mean saliency), at a 300-pixel side
_CONTRAST_B = 10.0       # sigmoid slope of the final contrast enhancement
_FLAT = 1e-6


def centre_prior(height: int, width: int, sigma: float = 0.25) -> np.ndarray:
    """A centred Gaussian blob, std ``sigma`` times each side: float32 [H, W], peak 1 at the centre."""
    if height < 1 or width < 1:
        raise ValueError(f"centre_prior needs a positive size, got {height}x{width}")
    if sigma <= 0:
        raise ValueError(f"centre_prior sigma must be positive, got {sigma}")
    y = (np.arange(height, dtype=np.float32) + 0.5) / height - 0.5
    x = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
    return np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2.0 * sigma ** 2)).astype(np.float32)


def classic_saliency(image: np.ndarray, *, method: str = "mbd", max_side: int = 200) -> np.ndarray:
    """Saliency of an RGB uint8 image [H, W, 3] (or gray [H, W]) as float32 [H, W] in [0, 1].

    The map is computed with the long side shrunk to ``max_side`` (never enlarged) and resized back
    to [H, W]. A constant image gives all zeros.
    """
    if method not in METHODS:
        raise ValueError(f"unknown classic saliency method {method!r}; choose one of {METHODS}")
    if max_side < 8:
        raise ValueError(f"max_side must be at least 8, got {max_side}")
    rgb = _as_rgb(image)
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = rgb if scale == 1.0 else cv2.resize(
        rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    sal = _mbd_plus(small) if method == "mbd" else _rbd(small)
    if sal.shape != (h, w):
        sal = cv2.resize(sal, (w, h), interpolation=cv2.INTER_LINEAR)
    return _normalise(sal)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"classic_saliency expects an image [H, W, 3] or [H, W], got shape {arr.shape}")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ValueError(f"classic_saliency needs an image of at least 2x2 pixels, got {arr.shape[:2]}")
    if arr.dtype != np.uint8:
        raise ValueError(f"classic_saliency expects uint8 pixels, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def _normalise(x: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] as float32; a flat map becomes zeros (never NaN)."""
    x = x.astype(np.float32, copy=False)
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < _FLAT:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


# --------------------------------------------------------------------------------------- MB+ ---

def _mbd_plus(rgb: np.ndarray) -> np.ndarray:
    """MB+ saliency of a working-size RGB uint8 image [h, w, 3] -> float32 [h, w] (not resized)."""
    lab = cv2.cvtColor(cv2.medianBlur(rgb, 5), cv2.COLOR_RGB2LAB).astype(np.float32)
    sal = _normalise(minimum_barrier_distance(lab.transpose(2, 0, 1)).sum(0)) + _backgroundness(lab)
    sal = _normalise(sal * _centre_map(*sal.shape))
    if not sal.any():
        return sal
    width = max(3, int(_SMOOTH_ALPHA * max(sal.shape) / 300.0 * np.sqrt(sal.mean())))
    sal = _normalise(_morph_smooth(sal, width))
    return _enhance_contrast(sal, _CONTRAST_B)


def minimum_barrier_distance(channels: np.ndarray, rounds: int = _MBD_ROUNDS) -> np.ndarray:
    """Approximate minimum barrier distance of every pixel to the image border, per channel.

    ``channels`` float32 [C, H, W] -> float32 [C, H, W]. Border pixels are the seeds (distance 0).
    Each sweep lets a pixel take the path of its predecessor in the sweep direction when that lowers
    its barrier (path max - path min), vectorised across the whole row being swept.
    """
    img = np.ascontiguousarray(channels, dtype=np.float32)
    dist = np.full_like(img, np.inf)
    dist[:, 0, :] = dist[:, -1, :] = dist[:, :, 0] = dist[:, :, -1] = 0.0
    hi, lo = img.copy(), img.copy()
    for _ in range(rounds):
        for transposed in (False, True):
            if transposed:
                img, dist, hi, lo = (np.ascontiguousarray(a.transpose(0, 2, 1)) for a in (img, dist, hi, lo))
            n = img.shape[1]
            for order in (range(1, n), range(n - 2, -1, -1)):
                step = 1 if order.step > 0 else -1
                for i in order:
                    _relax(img[:, i], dist[:, i], hi[:, i], lo[:, i], hi[:, i - step], lo[:, i - step])
            if transposed:
                img, dist, hi, lo = (np.ascontiguousarray(a.transpose(0, 2, 1)) for a in (img, dist, hi, lo))
    return dist


def _relax(value, dist, hi, lo, hi_prev, lo_prev) -> None:
    """Offer each pixel of one row the path of its neighbour in the previous row (in place)."""
    new_hi = np.maximum(hi_prev, value)
    new_lo = np.minimum(lo_prev, value)
    barrier = new_hi - new_lo
    better = barrier < dist
    np.copyto(dist, barrier, where=better)
    np.copyto(hi, new_hi, where=better)
    np.copyto(lo, new_lo, where=better)


def _backgroundness(lab: np.ndarray) -> np.ndarray:
    """Whitened L1 colour distance to each border strip [h, w]; the largest of the four is dropped."""
    h, w, c = lab.shape
    mh, mw = max(1, round(_BG_MARGIN * h)), max(1, round(_BG_MARGIN * w))
    strips = (lab[:mh], lab[h - mh:], lab[:, :mw], lab[:, w - mw:])
    pixels = lab.reshape(-1, c).astype(np.float64)
    maps = []
    for strip in strips:
        r = strip.reshape(-1, c).astype(np.float64)
        cov = (np.cov(r, rowvar=False) if len(r) > 1 else np.zeros((c, c))) + _BG_COV_REG * np.eye(c)
        evals, evecs = np.linalg.eigh(cov)
        whiten = evecs / np.sqrt(evals)
        maps.append(_normalise(np.abs((pixels - r.mean(0)) @ whiten).sum(1)))
    maps = np.stack(maps, 1)
    return _normalise(maps.sum(1) - maps.max(1)).reshape(h, w)


def _centre_map(h: int, w: int) -> np.ndarray:
    """1 at the centre falling linearly with normalised distance to 0 at the corners [h, w]."""
    y = (np.arange(h, dtype=np.float32) + 0.5) / h - 0.5
    x = (np.arange(w, dtype=np.float32) + 0.5) / w - 0.5
    return 1.0 - np.sqrt(y[:, None] ** 2 + x[None, :] ** 2) / np.sqrt(0.5)


def _morph_smooth(sal: np.ndarray, width: int) -> np.ndarray:
    """Opening by reconstruction then closing by reconstruction with a ``width`` square."""
    from skimage.morphology import reconstruction

    kernel = np.ones((width, width), np.uint8)
    opened = reconstruction(cv2.erode(sal, kernel), sal, method="dilation").astype(np.float32)
    return reconstruction(cv2.dilate(opened, kernel), opened, method="erosion").astype(np.float32)


def _enhance_contrast(sal: np.ndarray, slope: float) -> np.ndarray:
    """Sigmoid centred between the mean of the bright half and the mean of the dark half."""
    bright = sal >= 0.5 * sal.max()
    centre = 0.5 * (sal[bright].mean() + (sal[~bright].mean() if (~bright).any() else 0.0))
    return (1.0 / (1.0 + np.exp(-slope * (sal - centre)))).astype(np.float32)


# --------------------------------------------------------------------------------------- RBD ---

_RBD_SEGMENTS = 200
_RBD_SIGMA_CLR = 10.0     # Lab units
_RBD_SIGMA_BNDCON = 1.0
_RBD_SIGMA_SPA = 0.4      # fraction of the long side
_RBD_MU = 0.1


def _rbd(rgb: np.ndarray) -> np.ndarray:
    """RBD saliency of a working-size RGB uint8 image [h, w, 3] -> float32 [h, w] (not resized)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import shortest_path
    from skimage.color import rgb2lab
    from skimage.segmentation import slic

    h, w = rgb.shape[:2]
    lab = rgb2lab(rgb).astype(np.float64)
    labels = slic(lab, n_segments=min(_RBD_SEGMENTS, max(1, h * w // 16)), compactness=10.0,
                  start_label=0, convert2lab=False, channel_axis=-1)
    labels = np.unique(labels, return_inverse=True)[1].reshape(h, w)
    n = int(labels.max()) + 1
    if n < 2:
        return np.zeros((h, w), np.float32)
    flat = labels.ravel()
    count = np.bincount(flat, minlength=n).astype(np.float64)
    colour = np.stack([np.bincount(flat, lab[..., k].ravel(), n) for k in range(3)], 1) / count[:, None]
    yy, xx = np.mgrid[0:h, 0:w] / float(max(h, w))
    pos = np.stack([np.bincount(flat, yy.ravel(), n), np.bincount(flat, xx.ravel(), n)], 1) / count[:, None]

    pairs = np.concatenate([np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
                            np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1)])
    pairs = np.unique(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], 1), axis=0)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    first, second = np.triu_indices(len(border), 1)
    border_pairs = np.stack([border[first], border[second]], 1)
    graph_pairs = np.unique(np.concatenate([pairs, border_pairs]), axis=0)

    app = np.linalg.norm(colour[:, None] - colour[None], axis=2)
    # Small colour steps are texture, not boundaries: clip them (Geodesic Saliency, Wei et al. 2012).
    edge = np.maximum(app[graph_pairs[:, 0], graph_pairs[:, 1]] - _clip_value(app, pairs, n), 0.0)
    adj = coo_matrix((edge, (graph_pairs[:, 0], graph_pairs[:, 1])), shape=(n, n)).tocsr()
    geo = shortest_path(adj, method="D", directed=False)
    geo[~np.isfinite(geo)] = geo[np.isfinite(geo)].max()
    span = np.exp(-geo ** 2 / (2 * _RBD_SIGMA_CLR ** 2))
    bnd_con = span[:, border].sum(1) / np.sqrt(span.sum(1))
    w_bg = 1.0 - np.exp(-bnd_con ** 2 / (2 * _RBD_SIGMA_BNDCON ** 2))

    spa = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    w_spa = np.exp(-spa ** 2 / (2 * _RBD_SIGMA_SPA ** 2))
    w_fg = _normalise((app * w_spa * w_bg[None]).sum(1)).astype(np.float64)

    smooth = np.exp(-app[pairs[:, 0], pairs[:, 1]] ** 2 / (2 * _RBD_SIGMA_CLR ** 2)) + _RBD_MU
    lap = np.zeros((n, n))
    np.add.at(lap, (pairs[:, 0], pairs[:, 1]), -smooth)
    np.add.at(lap, (pairs[:, 1], pairs[:, 0]), -smooth)
    lap[np.diag_indices(n)] = -lap.sum(1)
    sal = np.linalg.solve(lap + np.diag(w_bg + w_fg + 1e-9), w_fg)
    return _normalise(np.clip(sal, 0.0, 1.0)[labels])


def _clip_value(app: np.ndarray, pairs: np.ndarray, n: int) -> float:
    """Mean over superpixels of the colour distance to their most similar neighbour."""
    nearest = np.full(n, np.inf)
    d = app[pairs[:, 0], pairs[:, 1]]
    np.minimum.at(nearest, pairs[:, 0], d)
    np.minimum.at(nearest, pairs[:, 1], d)
    return float(nearest[np.isfinite(nearest)].mean()) if np.isfinite(nearest).any() else 0.0
