"""The synthetic default dataset: a procedural WSSS set that shows the failures the seeds attack.

It exists for the demo, like an ablation table: each stage of the pipeline should visibly gain on it,
and the CAMs' typical failures must be there. Every foreground class is built around one failure mode:

=========  ==========================================================================================
balloon    *High salience, whole object.* A vivid, uniformly coloured ellipse with a knot, often in
           groups. Saliency catches it whole; CAMs are blobby and miss its outline.
bird       *Discriminative part.* A light, finely textured body **shared with sheep** plus a small
           orange head and yellow beak. Only the head tells bird from sheep, so the CAM fires on the
           head; saliency (the body is bright) recovers the rest.
sheep      *Discriminative part.* The same body as bird with a small dark head and dark legs.
boat       *Co-occurring context.* A hull with a sail or cabin, sitting on a blue band of water in 90 %
           of its images (water appears in 5 % of the others). Water is background in the ground truth
           but the classifier uses it, so CAMs spill onto it; saliency does not.
train      *Co-occurring context.* A long carriage with windows and wheels on rails over ballast (90 %,
           5 % elsewhere), often cut by the image border.
lizard     *Low salience (camouflage).* The lizard keeps the colours of the background under it and only
           adds a fine dotted scale pattern: a classifier can learn it, saliency cannot see it, and the
           Salient Object Selector must learn not to trust saliency for this class.
=========  ==========================================================================================

Backgrounds vary (gradients, blotchy noise, stripes, clutter of small low-contrast shapes, mottled
foliage), and 30 % of the images carry one or two vivid *distractors* (rings, crosses, stars, squares,
triangles) that belong to no class: background in the ground truth, salient for any saliency detector.
Most images hold a single class (``single_class_fraction``), the rest 2–3 classes that may touch or
overlap; shapes are irregular polygons with antialiased edges, at sizes from small to large. The
ground truth marks a one-pixel band inside every object outline as ignore (255), as VOC does.

The separate salient-object set (DUTS layout, binary 0/255 masks) trains and tests the RGB-SOD network:
salient objects (the salient classes, generic vivid blobs, distractor shapes) over the same kinds of
backgrounds, never the WSSS images themselves and never the camouflaged lizard.

Everything derives from the seed: image ``i`` of a split has its own random stream, so the files are
byte-identical for the same seed and parameters (with the same Pillow/libjpeg build).
"""
from __future__ import annotations

import colorsys
import io as _io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from salmask.data.meta import IGNORE_INDEX, DatasetMeta
from salmask.errors import InputError
from salmask.io import read_json, write_bytes_atomic, write_json, write_png

CLASSES = ("background", "balloon", "bird", "sheep", "boat", "train", "lizard")
META = DatasetMeta("synthetic", CLASSES)

FORMAT = "salmask-synthetic/1"
META_FILE = "meta.json"
JPEG_QUALITY = 95
SOD_TEST_FRACTION = 0.2
CONTEXT_OF = {"boat": "water", "train": "rails"}
CONTEXT_WITH_CLASS = 0.9
CONTEXT_WITHOUT_CLASS = 0.05
DISTRACTOR_RATE = 0.3
EXCLUSIVE = frozenset({"boat", "train"})  # their contexts both claim the ground line

_ID = {name: i for i, name in enumerate(CLASSES)}
_OUTPUTS = ("VOCdevkit", "SOD", "SOD_test")


@dataclass(frozen=True)
class SyntheticInfo:
    """What :func:`generate` produced (or found). ``labels`` maps image id -> foreground ids (1..C)."""

    root: Path
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    labels: dict[str, tuple[int, ...]] = field(repr=False)
    single_class: dict[str, bool] = field(repr=False)
    generated: bool = True

    @property
    def voc_root(self) -> Path:
        return self.root / "VOCdevkit" / "VOC2012"

    @property
    def sod_train(self) -> Path:
        return self.root / "SOD"

    @property
    def sod_test(self) -> Path:
        return self.root / "SOD_test"

    @property
    def meta_path(self) -> Path:
        return self.root / META_FILE


# --------------------------------------------------------------------------------------------------
# Drawing primitives: every shape is a polygon rasterised with antialiasing into an alpha map [S, S].

_SHIFT = 4  # fractional bits of cv2's sub-pixel polygon coordinates


class _Canvas:
    """An RGB float image [S, S, 3] (0..255) and its label map [S, S] painted together."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.size = image.shape[0]
        self.label = np.zeros(image.shape[:2], dtype=np.uint8)
        yy, xx = np.mgrid[0:self.size, 0:self.size].astype(np.float32)
        self.xx, self.yy = xx, yy

    def alpha(self, *polygons: np.ndarray) -> np.ndarray:
        """Union of polygons ([N, 2] float x, y) as an antialiased alpha map [S, S] in [0, 1]."""
        union = np.zeros((self.size, self.size), dtype=np.uint8)
        for p in polygons:  # one at a time: cv2 antialiases the inner edges of overlapping polygons
            m = np.zeros_like(union)
            cv2.fillPoly(m, [np.round(p * (1 << _SHIFT)).astype(np.int32)], 255, lineType=cv2.LINE_AA,
                         shift=_SHIFT)
            np.maximum(union, m, out=union)
        return union.astype(np.float32) / 255.0

    def paint(self, alpha: np.ndarray, colour: np.ndarray, label: int | None) -> None:
        """Blend ``colour`` ([3] or [S, S, 3]) in by ``alpha``; pixels at least half covered get ``label``."""
        a = alpha[..., None]
        self.image = self.image * (1.0 - a) + np.asarray(colour, dtype=np.float32) * a
        if label is not None:
            self.label[alpha >= 0.5] = label


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _blob(cx: float, cy: float, rx: float, ry: float, angle: float, rng: np.random.Generator,
          wobble: float = 0.0, n: int = 40) -> np.ndarray:
    """An ellipse with an irregular outline (low harmonics of amplitude ``wobble``), [n, 2]."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 4):
        r += wobble * rng.uniform(-1, 1) / (k - 1) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    return _place(np.stack([rx * r * np.cos(t), ry * r * np.sin(t)], 1), cx, cy, angle)


def _place(points: np.ndarray, cx: float, cy: float, angle: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]]) + np.array([cx, cy])


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise [S, S], zero mean and unit deviation, ``cells`` blobs across."""
    g = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    n = cv2.resize(g, (size, size), interpolation=cv2.INTER_CUBIC)
    return (n - n.mean()) / (n.std() + 1e-6)


# --------------------------------------------------------------------------------------------------
# Backgrounds and contexts (always label 0).

def _muted(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng.uniform(0, 1), rng.uniform(0.05, 0.35), rng.uniform(0.35, 0.72))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted background [S, S, 3]: gradient, blotchy noise, stripes, clutter or mottled foliage."""
    c1, c2 = _muted(rng), _muted(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = rng.choice(["gradient", "noise", "stripes", "clutter", "mottled"])
    if kind == "stripes":
        th, f = rng.uniform(0, np.pi), rng.uniform(3, 10)
        w = 0.5 + 0.5 * rng.uniform(0.3, 0.8) * np.sin(2 * np.pi * f * (xx * np.cos(th) + yy * np.sin(th)))
    elif kind == "noise":
        w = 1.0 / (1.0 + np.exp(-1.5 * _smooth_noise(rng, size, int(rng.integers(2, 6)))))
    elif kind == "mottled":
        n = _smooth_noise(rng, size, int(rng.integers(6, 12))) + 0.6 * _smooth_noise(rng, size, 16)
        w = 1.0 / (1.0 + np.exp(-2.0 * n))
    else:
        th = rng.uniform(0, 2 * np.pi)
        w = np.clip(0.5 + (xx - 0.5) * np.cos(th) + (yy - 0.5) * np.sin(th), 0, 1)
    image = c1 + (c2 - c1) * w[..., None]
    if kind == "clutter":
        canvas = _Canvas(image)
        for _ in range(int(rng.integers(12, 30))):
            r = rng.uniform(0.02, 0.07) * size
            cx, cy = rng.uniform(0, size, 2)
            poly = (_blob(cx, cy, r, r * rng.uniform(0.5, 1), rng.uniform(0, np.pi), rng, 0.2, 12)
                    if rng.random() < 0.5 else _place(_rect(-r, -r, r, r), cx, cy, rng.uniform(0, np.pi)))
            canvas.paint(canvas.alpha(poly), image[int(cy) % size, int(cx) % size] + rng.normal(0, 18, 3),
                         None)
        image = canvas.image
    return image.astype(np.float32)


def _water(canvas: _Canvas, rng: np.random.Generator) -> float:
    """A blue band of water with wavy ripples from a horizon line to the bottom; returns the horizon y."""
    s = canvas.size
    top = rng.uniform(0.5, 0.72) * s
    edge = top + 0.015 * s * np.sin(canvas.xx / s * rng.uniform(4, 9) + rng.uniform(0, 6))
    alpha = np.clip(canvas.yy - edge + 0.5, 0, 1)
    ripples = np.sin(2 * np.pi * (canvas.yy / s * rng.uniform(10, 16)
                                  + 0.25 * np.sin(canvas.xx / s * rng.uniform(6, 12))))
    blue = _hsv(rng.uniform(0.53, 0.62), rng.uniform(0.45, 0.75), rng.uniform(0.45, 0.7))
    canvas.paint(alpha, blue * (0.88 + 0.12 * ripples[..., None]), 0)
    return float(top)


def _rails(canvas: _Canvas, rng: np.random.Generator) -> float:
    """A ballast band with sleepers and a steel rail across the image; returns the rail's y."""
    s = canvas.size
    rail_y = rng.uniform(0.68, 0.84) * s
    band = 0.13 * s
    ballast = _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.1, 0.3), rng.uniform(0.35, 0.5))
    grain = rng.normal(0, 14, (s, s, 1)).astype(np.float32)
    canvas.paint(canvas.alpha(_rect(-1, rail_y, s + 1, rail_y + band)), ballast + grain, 0)
    pitch, x = 0.09 * s, rng.uniform(0, 0.09 * s) - 0.09 * s
    sleepers = []
    while x < s:
        sleepers.append(_rect(x, rail_y + 0.25 * band, x + 0.45 * pitch, rail_y + 0.75 * band))
        x += pitch
    canvas.paint(canvas.alpha(*sleepers), _hsv(0.07, 0.5, 0.25), 0)
    canvas.paint(canvas.alpha(_rect(-1, rail_y - 0.012 * s, s + 1, rail_y + 0.012 * s + 0.6)),
                 _hsv(0.6, 0.05, 0.8), 0)
    return float(rail_y)


_CONTEXTS: dict[str, Callable[[_Canvas, np.random.Generator], float]] = {"water": _water, "rails": _rails}


# --------------------------------------------------------------------------------------------------
# Objects. A renderer paints one instance with ``label`` (its class id, 0 for a WSSS distractor, 1 in
# the salient-object set); ``ground`` is the horizon / rail line of the context, if any.

def _balloon(c: _Canvas, rng: np.random.Generator, label: int, ground: float | None) -> None:
    s = c.size
    r = rng.uniform(0.07, 0.15) * s
    cx, cy = rng.uniform(r, s - r), rng.uniform(r, 0.72 * s)
    colour = _hsv(rng.choice([0.0, 0.08, 0.14, 0.9, 0.97, 0.6]), rng.uniform(0.75, 1), rng.uniform(0.85, 1))
    knot = np.array([[cx, cy + 0.9 * r], [cx - 0.22 * r, cy + 1.2 * r], [cx + 0.22 * r, cy + 1.2 * r]])
    alpha = c.alpha(_blob(cx, cy, 0.86 * r, r, rng.uniform(-0.3, 0.3), rng, 0.03), knot)
    hx, hy = cx - 0.35 * r, cy - 0.4 * r
    shine = np.exp(-((c.xx - hx) ** 2 + (c.yy - hy) ** 2) / (0.3 * r * r))[..., None]
    c.paint(alpha, colour * 0.9 + (255 - colour * 0.9) * 0.6 * shine, label)


def _body_pose(rng: np.random.Generator, size: int) -> tuple[float, float, float, float, int]:
    """Where the body shared by bird and sheep goes: (cx, cy, rx, ry, facing ±1)."""
    rx = rng.uniform(0.1, 0.22) * size
    ry = rx * rng.uniform(0.55, 0.75)
    cx, cy = rng.uniform(0.5 * rx, size - 0.5 * rx), rng.uniform(ry, size - 1.3 * ry)
    return cx, cy, rx, ry, int(rng.choice([-1, 1]))


def _body(c: _Canvas, rng: np.random.Generator, pose: tuple, label: int) -> None:
    """The light, finely textured (feathers or wool) body: bird and sheep cannot be told apart by it."""
    cx, cy, rx, ry, _ = pose
    colour = _hsv(rng.uniform(0.06, 0.13), rng.uniform(0.05, 0.2), rng.uniform(0.78, 0.92))
    fluff = rng.normal(0, 10, (c.size, c.size, 1)).astype(np.float32)
    shade = (1.0 - 0.15 * np.clip((c.yy - cy) / ry, -1, 1))[..., None]
    c.paint(c.alpha(_blob(cx, cy, rx, ry, rng.uniform(-0.2, 0.2), rng, 0.12)), colour * shade + fluff,
            label)


def _bird(c: _Canvas, rng: np.random.Generator, label: int, ground: float | None) -> None:
    pose = cx, cy, rx, ry, f = _body_pose(rng, c.size)
    tail = np.array([[cx - f * 0.8 * rx, cy - 0.2 * ry], [cx - f * 1.45 * rx, cy - 0.6 * ry],
                     [cx - f * 1.4 * rx, cy + 0.1 * ry]])
    c.paint(c.alpha(tail), _hsv(0.1, 0.12, 0.8), label)
    _body(c, rng, pose, label)
    rh = 0.4 * ry
    hx, hy = cx + f * 0.85 * rx, cy - 0.6 * ry
    beak = np.array([[hx + f * 0.7 * rh, hy - 0.35 * rh], [hx + f * 1.7 * rh, hy + 0.1 * rh],
                     [hx + f * 0.7 * rh, hy + 0.45 * rh]])
    c.paint(c.alpha(beak), _hsv(0.14, 0.9, 0.95), label)
    c.paint(c.alpha(_blob(hx, hy, rh, rh, 0.0, rng)), _hsv(rng.uniform(0.0, 0.06), 0.85, 0.95), label)


def _sheep(c: _Canvas, rng: np.random.Generator, label: int, ground: float | None) -> None:
    pose = cx, cy, rx, ry, f = _body_pose(rng, c.size)
    dark = _hsv(rng.uniform(0, 1), 0.2, rng.uniform(0.1, 0.22))
    legs = [_rect(cx + dx * rx - 0.07 * rx, cy + 0.4 * ry, cx + dx * rx + 0.07 * rx, cy + 1.35 * ry)
            for dx in (-0.55, -0.3, 0.3, 0.55)]
    c.paint(c.alpha(*legs), dark, label)
    _body(c, rng, pose, label)
    c.paint(c.alpha(_blob(cx + f * 0.95 * rx, cy - 0.15 * ry, 0.42 * ry, 0.3 * ry, f * 0.5, rng, 0.05)),
            dark, label)


_HULLS = ((0.0, 0.7, 0.5), (0.62, 0.7, 0.4), (0.1, 0.05, 0.92), (0.08, 0.6, 0.35), (0.35, 0.6, 0.35))


def _boat(c: _Canvas, rng: np.random.Generator, label: int, ground: float | None) -> None:
    s = c.size
    w = rng.uniform(0.3, 0.55) * s
    h = w * rng.uniform(0.2, 0.28)
    base = (rng.uniform(ground + 0.3 * h, ground + 0.6 * (s - ground)) if ground is not None
            else rng.uniform(0.5, 0.88) * s)
    cx, f = rng.uniform(0.25 * w, s - 0.25 * w), int(rng.choice([-1, 1]))
    top, keel = base - 0.6 * h, base + 0.4 * h
    hull = np.array([[cx - f * 0.5 * w, top], [cx + f * 0.6 * w, top - 0.25 * h],
                     [cx + f * 0.35 * w, keel], [cx - f * 0.42 * w, keel]])
    hull_colour = _hsv(*_HULLS[int(rng.integers(len(_HULLS)))])
    if rng.random() < 0.6:
        mast = cx - f * 0.05 * w
        height = rng.uniform(0.7, 1.1) * w
        c.paint(c.alpha(_rect(mast - 0.012 * s, top - height, mast + 0.012 * s, top)), _hsv(0.08, 0.5, 0.3),
                label)
        sail = np.array([[mast + f * 0.02 * s, top - height], [mast + f * 0.02 * s, top - 0.1 * h],
                         [mast + f * 0.4 * w, top - 0.1 * h]])
        c.paint(c.alpha(sail), _hsv(0.12, rng.uniform(0.0, 0.25), 0.95), label)
    else:
        lo, hi = sorted((cx - f * 0.3 * w, cx + f * 0.1 * w))
        c.paint(c.alpha(_rect(lo, top - 0.8 * h, hi, top + 1)), _hsv(0.1, 0.05, 0.95), label)
        wy = top - 0.55 * h
        windows = [_rect(x - 0.03 * w, wy, x + 0.03 * w, wy + 0.2 * h)
                   for x in np.linspace(lo + 0.07 * w, hi - 0.07 * w, 3)]
        c.paint(c.alpha(*windows), _hsv(0.6, 0.5, 0.3), label)
    c.paint(c.alpha(hull), hull_colour, label)
    c.paint(c.alpha(_rect(cx - 0.45 * w, top + 0.15 * h, cx + 0.45 * w, top + 0.28 * h)) * c.alpha(hull),
            255 - hull_colour * 0.7, label)


def _train(c: _Canvas, rng: np.random.Generator, label: int, ground: float | None) -> None:
    s = c.size
    h = rng.uniform(0.17, 0.26) * s
    w = rng.uniform(0.5, 1.0) * s
    rail = ground if ground is not None else rng.uniform(0.62, 0.88) * s
    rw = 0.16 * h
    bottom, top = rail - 1.6 * rw, rail - 1.6 * rw - h
    x0 = rng.uniform(-0.3 * w, s - 0.7 * w)
    x1, f = x0 + w, int(rng.choice([-1, 1]))
    nose = 0.25 * h
    body = (np.array([[x0, top], [x1 - nose, top], [x1, top + nose], [x1, bottom], [x0, bottom]]) if f > 0
            else np.array([[x0 + nose, top], [x1, top], [x1, bottom], [x0, bottom], [x0, top + nose]]))
    colour = _hsv(rng.choice([0.0, 0.33, 0.6, 0.12, 0.75]), rng.uniform(0.5, 0.8), rng.uniform(0.45, 0.75))
    wheels = [_blob(x, rail - rw, rw, rw, 0.0, rng, n=16)
              for x in np.arange(x0 + 1.5 * rw, x1 - rw, 3.2 * rw)]
    c.paint(c.alpha(*wheels), _hsv(0, 0, 0.18), label)
    c.paint(c.alpha(body), colour, label)
    c.paint(c.alpha(_rect(x0, top, x1, top + 0.1 * h)) * c.alpha(body), colour * 0.6, label)
    c.paint(c.alpha(_rect(x0, top + 0.72 * h, x1, top + 0.8 * h)) * c.alpha(body), _hsv(0.14, 0.8, 0.95),
            label)
    step = 0.5 * h
    windows = [_rect(x, top + 0.22 * h, x + 0.3 * h, top + 0.52 * h)
               for x in np.arange(x0 + nose + 0.2 * h, x1 - nose - 0.3 * h, step)]
    if windows:
        c.paint(c.alpha(*windows), _hsv(0.58, 0.5, 0.28), label)


def _lizard(c: _Canvas, rng: np.random.Generator, label: int, ground: float | None) -> None:
    s = c.size
    length = rng.uniform(0.3, 0.55) * s
    wid = 0.13 * length
    cx, cy = rng.uniform(0.25 * length, s - 0.25 * length, 2)
    angle = rng.uniform(0, 2 * np.pi)
    body = _blob(0.0, 0.0, 0.3 * length, wid, 0.0, rng, 0.05)
    head = _blob(0.36 * length, 0.0, 0.1 * length, 0.75 * wid, 0.0, rng)
    tail = np.array([[-0.22 * length, -0.7 * wid], [-0.75 * length, rng.uniform(-1, 1) * wid],
                     [-0.22 * length, 0.7 * wid]])
    legs = [np.array([[x - 0.35 * wid, 0], [x + 0.35 * wid, 0], [x + sx * 0.8 * wid, sy * 1.7 * wid],
                      [x + sx * 0.8 * wid - 0.5 * wid, sy * 1.7 * wid]])
            for x, sx in ((0.18 * length, 1), (-0.15 * length, -1)) for sy in (-1, 1)]
    alpha = c.alpha(*[_place(p, cx, cy, angle) for p in (body, head, tail, *legs)])
    period = rng.uniform(3.0, 4.5)
    scales = np.sign(np.cos(2 * np.pi * c.xx / period) * np.cos(2 * np.pi * c.yy / period))
    c.paint(alpha, c.image * (0.97 + 0.13 * scales[..., None]), label)


def _distractor(c: _Canvas, rng: np.random.Generator, label: int, ground: float | None) -> None:
    """A vivid shape of no class: a ring, cross, star, square or triangle."""
    s = c.size
    r = rng.uniform(0.05, 0.12) * s
    cx, cy, angle = rng.uniform(r, s - r), rng.uniform(r, s - r), rng.uniform(0, np.pi)
    kind = rng.choice(["ring", "cross", "star", "square", "triangle"])
    colour = _hsv(rng.uniform(0, 1), rng.uniform(0.7, 1), rng.uniform(0.8, 1))
    if kind == "ring":
        alpha = c.alpha(_blob(cx, cy, r, r, 0, rng)) - c.alpha(_blob(cx, cy, 0.55 * r, 0.55 * r, 0, rng))
    elif kind == "cross":
        alpha = c.alpha(_place(_rect(-r, -0.3 * r, r, 0.3 * r), cx, cy, angle),
                        _place(_rect(-0.3 * r, -r, 0.3 * r, r), cx, cy, angle))
    elif kind == "star":
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        alpha = c.alpha(_place(np.stack([rad * np.cos(t), rad * np.sin(t)], 1), cx, cy, angle))
    elif kind == "square":
        alpha = c.alpha(_place(_rect(-0.8 * r, -0.8 * r, 0.8 * r, 0.8 * r), cx, cy, angle))
    else:
        t = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) - np.pi / 2
        alpha = c.alpha(_place(np.stack([r * np.cos(t), r * np.sin(t)], 1), cx, cy, angle))
    c.paint(np.clip(alpha, 0, 1), colour, label)


def _generic(c: _Canvas, rng: np.random.Generator, label: int, ground: float | None) -> None:
    """A salient object of no particular kind (SOD set only): a contrasting irregular blob."""
    s = c.size
    rx = rng.uniform(0.08, 0.3) * s
    cx, cy = rng.uniform(0.4 * rx, s - 0.4 * rx, 2)
    colour = _hsv(rng.uniform(0, 1), rng.uniform(0.5, 1), rng.choice([rng.uniform(0.05, 0.2),
                                                                      rng.uniform(0.8, 1)]))
    tex = 12 * _smooth_noise(rng, s, 8)[..., None]
    c.paint(c.alpha(_blob(cx, cy, rx, rx * rng.uniform(0.4, 1), rng.uniform(0, np.pi), rng, 0.25)),
            colour + tex, label)


_RENDERERS: dict[str, Callable[[_Canvas, np.random.Generator, int, float | None], None]] = {
    "balloon": _balloon, "bird": _bird, "sheep": _sheep, "boat": _boat, "train": _train, "lizard": _lizard,
}
_SALIENT = ("balloon", "bird", "sheep", "boat", "train")


# --------------------------------------------------------------------------------------------------
# Scenes.

def _finish(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    noisy = canvas.image + rng.normal(0, rng.uniform(2, 5), canvas.image.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _ignore_band(label: np.ndarray) -> np.ndarray:
    """Mark object pixels with a 4-neighbour of another label as ignore, like VOC's outline band."""
    p = np.pad(label, 1, mode="edge")
    inner = p[1:-1, 1:-1]
    differs = ((p[:-2, 1:-1] != inner) | (p[2:, 1:-1] != inner)
               | (p[1:-1, :-2] != inner) | (p[1:-1, 2:] != inner))
    out = label.copy()
    out[differs & (label > 0)] = IGNORE_INDEX
    return out


_MAX_ATTEMPTS = 200  # scene redraws before giving up; a few are typical


def _min_pixels(size: int) -> int:
    return max(12, int(0.004 * size * size))


def _wsss_scene(rng: np.random.Generator, size: int, names: list[str]
                ) -> tuple[np.ndarray, np.ndarray, str | None, int]:
    """Image [S, S, 3] uint8 and mask [S, S] uint8 holding exactly the classes ``names``.

    Also returns the context drawn (or None) and the number of distractors. Scenes whose objects end up
    hidden (occluded, cut by the border) are redrawn from the same stream.
    """
    want = sorted(_ID[n] for n in names)
    for _ in range(_MAX_ATTEMPTS):
        canvas = _Canvas(_background(rng, size))
        bound = [CONTEXT_OF[n] for n in names if n in CONTEXT_OF]
        context = None
        if bound and rng.random() < CONTEXT_WITH_CLASS:
            context = bound[0]
        elif not bound and rng.random() < CONTEXT_WITHOUT_CLASS:
            context = str(rng.choice(sorted(_CONTEXTS)))
        ground = _CONTEXTS[context](canvas, rng) if context else None
        for name in rng.permutation(names):
            copies = 1 + int(rng.random() < 0.2) + int(name == "balloon" and rng.random() < 0.3)
            for _ in range(copies):
                _RENDERERS[name](canvas, rng, _ID[name], ground)
        n_distractors = int(rng.integers(1, 3)) if rng.random() < DISTRACTOR_RATE else 0
        for _ in range(n_distractors):
            _distractor(canvas, rng, 0, ground)
        mask = _ignore_band(canvas.label)
        counts = np.bincount(mask.ravel(), minlength=256)
        present = [i for i in range(1, len(CLASSES)) if counts[i] >= _min_pixels(size)]
        if present == want:
            return _finish(canvas, rng), mask, context, n_distractors
    raise RuntimeError(f"could not draw a visible {'+'.join(names)} scene at image_size {size}")


def _sod_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image [S, S, 3] uint8 and binary salient-object mask [S, S] (0/255)."""
    for _ in range(_MAX_ATTEMPTS):
        canvas = _Canvas(_background(rng, size))
        context = rng.choice(["water", "rails", "none", "none", "none"])
        ground = _CONTEXTS[context](canvas, rng) if context != "none" else None
        for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3]))):
            u = rng.random()
            draw = (_RENDERERS[str(rng.choice(_SALIENT))] if u < 0.55 else _generic if u < 0.85
                    else _distractor)
            draw(canvas, rng, 1, ground)
        if (canvas.label > 0).sum() >= _min_pixels(size):
            return _finish(canvas, rng), (canvas.label > 0).astype(np.uint8) * 255
    raise RuntimeError(f"could not draw a visible salient object at image_size {size}")


# --------------------------------------------------------------------------------------------------
# Dataset generation.

def _jpeg(path: Path, image: np.ndarray) -> None:
    buf = _io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY)
    write_bytes_atomic(path, buf.getvalue())


def _plan(rng: np.random.Generator, n: int, single_fraction: float) -> list[list[str]]:
    """Class names per image: a balanced primary class (every class appears once n >= C), and for the
    images not chosen single-class, one or two more compatible classes."""
    fg = list(CLASSES[1:])
    primary = rng.permutation(np.tile(np.arange(len(fg)), -(-n // len(fg)))[:n])
    single = np.zeros(n, dtype=bool)
    single[rng.permutation(n)[:round(single_fraction * n)]] = True
    plan = []
    for p, one in zip(primary, single):
        names = [fg[p]]
        if not one:
            pool = [c for c in fg if c != names[0] and not {c, names[0]} <= EXCLUSIVE]
            extra = 1 if rng.random() < 0.65 else 2
            names += [str(c) for c in rng.choice(pool, size=extra, replace=False)]
        plan.append(names)
    return plan


def _check(seed: int, image_size: int, n_train: int, n_val: int, n_sod: int,
           single_class_fraction: float) -> None:
    fg = len(CLASSES) - 1
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if not 32 <= image_size <= 2048:
        raise ValueError(f"image_size must be in 32..2048, got {image_size}")
    if n_train < fg or n_val < fg:
        raise ValueError(f"n_train and n_val must be at least {fg} (one image per class), "
                         f"got {n_train} and {n_val}")
    if n_sod < 2:
        raise ValueError(f"n_sod must be at least 2 (a training and a test image), got {n_sod}")
    if not 0.0 <= single_class_fraction <= 1.0:
        raise ValueError(f"single_class_fraction must be in [0, 1], got {single_class_fraction}")


def _clear(root: Path) -> None:
    """Remove a previous synthetic dataset under ``root``; refuse to touch anything else."""
    meta_path = root / META_FILE
    ours = False
    if meta_path.exists():
        try:
            ours = read_json(meta_path).get("format") == FORMAT
        except (InputError, AttributeError):
            ours = False
        if not ours:
            raise InputError(meta_path, "exists but was not written by salmask's synthetic generator; "
                                        "refusing to overwrite (choose an empty directory)")
    for name in _OUTPUTS:
        if (root / name).exists():
            if not ours:
                raise InputError(root / name, "exists without a synthetic meta.json; refusing to "
                                              "overwrite it (choose an empty directory)")
            shutil.rmtree(root / name)
    meta_path.unlink(missing_ok=True)


def _info(root: Path, meta: dict, generated: bool) -> SyntheticInfo:
    images = meta["images"]
    return SyntheticInfo(
        root=root,
        train_ids=tuple(i for i, v in images.items() if v["split"] == "train"),
        val_ids=tuple(i for i, v in images.items() if v["split"] == "val"),
        labels={i: tuple(v["class_ids"]) for i, v in images.items()},
        single_class={i: bool(v["single_class"]) for i, v in images.items()},
        generated=generated,
    )


def read_info(root: Path) -> SyntheticInfo:
    """The :class:`SyntheticInfo` of a complete synthetic dataset under ``root`` (labels from meta.json)."""
    root = Path(root)
    meta = read_json(root / META_FILE)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not meta.get("complete"):
        raise InputError(root / META_FILE, "not a complete synthetic dataset description")
    return _info(root, meta, generated=False)


def generate(root: Path, *, seed: int = 0, image_size: int = 96, n_train: int = 240, n_val: int = 60,
             n_sod: int = 200, single_class_fraction: float = 0.6, overwrite: bool = False) -> SyntheticInfo:
    """Generate the synthetic WSSS dataset (VOC layout) and salient-object set (DUTS layout) under ``root``.

    Idempotent: if ``root/meta.json`` describes a complete set made with the same parameters, nothing is
    written (``generated=False``) unless ``overwrite``. Otherwise the previous synthetic outputs are
    removed first, so no stale image survives; folders this generator did not write are never removed.
    """
    root = Path(root)
    _check(seed, image_size, n_train, n_val, n_sod, single_class_fraction)
    params = {"seed": int(seed), "image_size": int(image_size), "n_train": int(n_train), "n_val": int(n_val),
              "n_sod": int(n_sod), "single_class_fraction": float(single_class_fraction)}
    meta_path = root / META_FILE
    if meta_path.exists() and not overwrite:
        try:
            old = read_json(meta_path)
        except InputError:
            old = None
        if (isinstance(old, dict) and old.get("format") == FORMAT and old.get("complete")
                and old.get("params") == params):
            return _info(root, old, generated=False)
    _clear(root)
    meta = {"format": FORMAT, "complete": False, "params": params, "classes": list(CLASSES)}
    write_json(meta_path, meta)

    voc = root / "VOCdevkit" / "VOC2012"
    images: dict[str, dict] = {}
    splits: dict[str, list[str]] = {}
    for code, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        plan = _plan(np.random.default_rng([seed, code]), n, single_class_fraction)
        splits[split] = []
        for i, names in enumerate(plan):
            image_id = f"{split}_{i:05d}"
            image, mask, context, n_distractors = _wsss_scene(
                np.random.default_rng([seed, code, i + 1]), image_size, names)
            _jpeg(voc / "JPEGImages" / f"{image_id}.jpg", image)
            write_png(voc / "SegmentationClassAug" / f"{image_id}.png", mask, palette=META.palette)
            ids = sorted(_ID[n] for n in names)
            images[image_id] = {"split": split, "classes": [CLASSES[k] for k in ids], "class_ids": ids,
                                "single_class": len(ids) == 1, "context": context,
                                "distractors": n_distractors}
            splits[split].append(image_id)
    sets = voc / "ImageSets" / "Segmentation"
    for name, ids in (("train_aug", splits["train"]), ("train", splits["train"]), ("val", splits["val"])):
        write_bytes_atomic(sets / f"{name}.txt", "".join(f"{i}\n" for i in ids).encode())

    n_test = max(1, round(SOD_TEST_FRACTION * n_sod))
    sod: dict[str, list[str]] = {"train": [], "test": []}
    for i in range(n_sod):
        part, folder = ("test", root / "SOD_test") if i >= n_sod - n_test else ("train", root / "SOD")
        image_id = f"sod_{i:05d}"
        image, mask = _sod_scene(np.random.default_rng([seed, 2, i + 1]), image_size)
        _jpeg(folder / "Images" / f"{image_id}.jpg", image)
        write_png(folder / "Masks" / f"{image_id}.png", mask)
        sod[part].append(image_id)

    meta.update(complete=True, images=images, sod=sod)
    write_json(meta_path, meta)
    return _info(root, meta, generated=True)
