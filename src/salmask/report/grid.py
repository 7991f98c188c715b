"""Per-image tiles of every stage, and ``salmask show ID``: one image's tiles as a PNG grid.

A row shows one image through the pipeline: the image, its CAMs (max over classes as a heat map on
the image), saliency, SBE boundary labels, the boundary map, the pseudo mask, the Salient Object
Selector's mask, the segmentation prediction and the ground truth. A missing artefact (stage not
run, image outside the stage's split, unreadable file) becomes an empty tile with a note, never an
error: the report is most useful exactly when a run is incomplete.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from salmask.boundary.labels import BG, BOUNDARY_FG_BG, BOUNDARY_FG_FG, CERTAIN_BOUNDARY, FG, IGNORE
from salmask.data.datasets import ImageSet, build_split, check_id
from salmask.data.meta import COCO, VOC, DatasetMeta
from salmask.errors import InputError, SalmaskError
from salmask.io import load_npz, read_gray, read_image, read_json, read_mask, write_bytes_atomic

COLUMNS = ("image", "CAM", "saliency", "boundary labels", "boundary map", "pseudo mask", "SOS mask",
           "prediction", "ground truth")

# code -> (name, RGB) for make_boundary_labels PNGs
BOUNDARY_CODES: dict[int, tuple[str, tuple[int, int, int]]] = {
    BG: ("background", (25, 25, 80)),
    FG: ("foreground", (70, 150, 200)),
    BOUNDARY_FG_FG: ("boundary fg/fg", (255, 200, 0)),
    BOUNDARY_FG_BG: ("boundary fg/bg", (255, 80, 0)),
    IGNORE: ("ignore", (128, 128, 128)),
    CERTAIN_BOUNDARY: ("certain boundary", (255, 255, 255)),
}
_UNKNOWN_CODE = (255, 0, 255)
_PHOTO, _LABELS = "photo", "labels"


@dataclass
class Tile:
    """One cell of the grid: ``rgb`` uint8 [H,W,3] at the image's resolution, or None with a ``note``.

    ``kind`` is "photo" (smooth; resized bilinearly, stored as JPEG) or "labels" (resized by nearest
    neighbour, stored as PNG). ``classes`` are the class ids (255 = ignore) a palette mask shows.
    """

    title: str
    rgb: np.ndarray | None = None
    note: str = ""
    kind: str = _PHOTO
    classes: set[int] = field(default_factory=set)


@dataclass
class WorkView:
    """Read-only access to a work directory's dataset: metadata, image and ground-truth paths.

    ``splits`` holds the pseudo and val ImageSets that could be opened; ``problem`` says why the
    dataset could not be read (then images and ground truth show as missing).
    """

    work_dir: Path
    kind: str
    meta: DatasetMeta
    splits: dict[str, ImageSet] = field(default_factory=dict)
    problem: str = ""

    def find(self, image_id: str) -> tuple[Path | None, Path | None]:
        """(image path, ground-truth path) of ``image_id`` in the first split listing it."""
        for images in self.splits.values():
            if image_id in images.ids:
                return images.image_path(image_id), images.mask_path(image_id)
        return None, None

    def split_ids(self, name: str) -> list[str]:
        images = self.splits.get(name)
        return list(images.ids) if images is not None else []


def open_work_dir(work_dir: Path) -> WorkView:
    """Open ``work_dir`` (must hold ``config.yaml``) without writing anything into it."""
    from salmask.config import load_config

    work_dir = Path(work_dir).expanduser()
    cfg_path = work_dir / "config.yaml"
    if not cfg_path.is_file():
        raise InputError(cfg_path, "not a salmask work directory (no config.yaml)")
    try:
        cfg = load_config(str(cfg_path))
    except SalmaskError as e:
        raise InputError(cfg_path, f"unreadable config ({e})") from None
    kind = str(cfg.dataset.kind)
    view = WorkView(work_dir, kind, _fallback_meta(kind, work_dir))
    for role, split in (("pseudo", cfg.dataset.pseudo_split), ("val", cfg.dataset.val_split)):
        if not split:
            continue
        try:
            images = build_split(cfg, str(split), work_dir, need_labels=False)
        except (SalmaskError, OSError, KeyError, ValueError) as e:
            relative = cfg.dataset.root and not Path(str(cfg.dataset.root)).expanduser().is_absolute()
            hint = "; dataset.root is relative, so read from the current directory" if relative else ""
            view.problem = f"dataset not readable ({e}{hint}): images and ground truth are not shown"
            continue
        view.splits[role] = images
        view.meta = images.meta
    return view


def _fallback_meta(kind: str, work_dir: Path) -> DatasetMeta:
    """Class names when the dataset itself cannot be opened: known sets, else an eval manifest's."""
    if kind in ("voc", "coco"):
        return VOC if kind == "voc" else COCO
    for stage in ("eval_pseudo", "eval_cam", "eval_select", "eval_seg"):
        try:
            per_class = read_json(work_dir / stage / "manifest.json")["metrics"]["per_class"]
            return DatasetMeta(kind, tuple(per_class))
        except (InputError, KeyError, TypeError):
            continue
    return DatasetMeta(kind, ("background", *(f"class {i}" for i in range(1, 255))))


def image_tiles(view: WorkView, image_id: str) -> list[Tile]:
    """The tiles of ``COLUMNS`` for one image, at the resolution of each artefact (CAM: the image's)."""
    w = view.work_dir
    image_path, gt_path = view.find(image_id)
    if image_path is None:
        tiles = [Tile("image", note="image not in the dataset")]
    else:
        tiles = [_stage_tile("image", image_path.parent, image_path.name, read_image,
                             absent="image not found", missing="image not found")]
    img = tiles[0].rgb
    n = view.meta.num_classes
    pal = view.meta.palette

    tiles.append(_stage_tile("CAM", w / "make_cam", f"{image_id}.npz",
                             lambda p: cam_overlay(load_npz(p), img)))
    tiles.append(_stage_tile("saliency", w / "saliency", f"{image_id}.png", lambda p: _gray(read_gray(p))))
    tiles.append(_stage_tile("boundary labels", w / "make_boundary_labels", f"{image_id}.png",
                             lambda p: colour_boundary_labels(read_mask(p)), _LABELS))
    tiles.append(_stage_tile("boundary map", w / "make_boundary", f"{image_id}.npz",
                             lambda p: _gray(_boundary(load_npz(p), p))))
    for title, folder in (("pseudo mask", w / "make_pseudo"), ("SOS mask", w / "select" / "masks"),
                          ("prediction", w / "infer_seg" / "val")):
        tiles.append(_mask_tile(title, folder, f"{image_id}.png", n, pal))
    if gt_path is None:
        tiles.append(Tile("ground truth", note="no ground truth"))
    else:
        tiles.append(_mask_tile("ground truth", gt_path.parent, gt_path.name, n, pal, missing="no ground truth",
                                absent="no ground truth"))
    return tiles


def _try(fn: Callable[[], np.ndarray]) -> np.ndarray | str:
    """``fn()``, or the reason it failed as a short note."""
    try:
        return fn()
    except (SalmaskError, OSError, ValueError, KeyError) as e:
        return f"unreadable: {e.problem if isinstance(e, InputError) else e}"[:120]


def _stage_tile(title: str, folder: Path, name: str, render: Callable[[Path], np.ndarray],
                kind: str = _PHOTO, missing: str = "no output", absent: str = "not run") -> Tile:
    """``render(folder/name)`` as a tile; ``absent`` when the folder is missing, ``missing`` the file."""
    if not folder.is_dir():
        return Tile(title, note=absent, kind=kind)
    path = folder / name
    if not path.is_file():
        return Tile(title, note=missing, kind=kind)
    out = _try(lambda: render(path))
    return Tile(title, out, kind=kind) if isinstance(out, np.ndarray) else Tile(title, note=out, kind=kind)


def _mask_tile(title: str, folder: Path, name: str, num_classes: int, palette: np.ndarray,
               missing: str = "no output", absent: str = "not run") -> Tile:
    tile = _stage_tile(title, folder, name, lambda p: read_mask(p, num_classes), _LABELS, missing, absent)
    if tile.rgb is not None:
        ids = tile.rgb
        tile.classes = {int(c) for c in np.unique(ids)}
        tile.rgb = np.asarray(palette, dtype=np.uint8)[ids]
    return tile


def cam_overlay(cams: dict[str, np.ndarray], image: np.ndarray | None) -> np.ndarray:
    """Heat map (jet) of the max over classes of ``high_res`` [K,H,W] (or upsampled ``cam`` [K,h,w])
    blended half-and-half with ``image`` [H,W,3]; an image without classes (K = 0) shows zero."""
    from matplotlib import colormaps

    if "high_res" in cams and cams["high_res"].ndim == 3:
        maps = cams["high_res"].astype(np.float32)
    elif "cam" in cams and cams["cam"].ndim == 3:
        maps = cams["cam"].astype(np.float32)
    else:
        raise ValueError(f"CAM file holds neither high_res nor cam [K,h,w] (keys {sorted(cams)})")
    if maps.shape[0] == 0:
        heat = np.zeros(maps.shape[1:], np.float32)
    else:
        heat = np.nan_to_num(maps.max(axis=0), nan=0.0)
    heat = np.clip(heat, 0.0, 1.0)
    if image is not None and heat.shape != image.shape[:2]:
        heat = resize(heat, image.shape[1::-1], smooth=True)
    rgb = colormaps["jet"](heat)[..., :3] * 255.0
    if image is not None:
        rgb = 0.5 * rgb + 0.5 * image.astype(np.float32)
    return np.round(rgb).astype(np.uint8)


def colour_boundary_labels(codes: np.ndarray) -> np.ndarray:
    """Boundary label codes uint8 [H,W] -> RGB [H,W,3] with the colours of ``BOUNDARY_CODES``."""
    lut = np.tile(np.array(_UNKNOWN_CODE, np.uint8), (256, 1))
    for code, (_, colour) in BOUNDARY_CODES.items():
        lut[code] = colour
    return lut[codes]


def _boundary(arrays: dict[str, np.ndarray], path: Path) -> np.ndarray:
    if "boundary" not in arrays or arrays["boundary"].ndim != 2:
        raise InputError(path, "no 'boundary' [h,w] array")
    return np.clip(np.nan_to_num(arrays["boundary"].astype(np.float32)), 0.0, 1.0)


def _gray(prob: np.ndarray) -> np.ndarray:
    g = np.round(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def resize(arr: np.ndarray, size: tuple[int, int], smooth: bool) -> np.ndarray:
    """Resize uint8 [H,W,3] or float32 [H,W] to ``size`` = (width, height)."""
    if arr.shape[1::-1][:2] == tuple(size):
        return arr
    img = Image.fromarray(arr).resize(size, Image.BILINEAR if smooth else Image.NEAREST)
    return np.asarray(img)


def display_size(tiles: list[Tile], max_side: int) -> tuple[int, int]:
    """(width, height) with the first available tile's aspect ratio and longer side ``max_side``."""
    shape = next((t.rgb.shape for t in tiles if t.rgb is not None), (max_side, max_side))
    h, w = shape[:2]
    s = max_side / max(h, w)
    return max(1, round(w * s)), max(1, round(h * s))


def fit(tile: Tile, size: tuple[int, int]) -> np.ndarray:
    """The tile's RGB resized to ``size`` (bilinear for photos, nearest for label maps)."""
    return resize(tile.rgb, size, smooth=tile.kind == _PHOTO)


def legend_classes(tiles: list[Tile], meta: DatasetMeta) -> list[tuple[int, str, tuple[int, int, int]]]:
    """(id, name, colour) of every class shown by the palette tiles, background and ignore included."""
    ids = sorted(set().union(*(t.classes for t in tiles)))
    out = []
    for c in ids:
        name = meta.classes[c] if c < meta.num_classes else ("ignore" if c == meta.ignore_index else str(c))
        out.append((c, name, tuple(int(v) for v in meta.palette[c])))
    return out


def render_grid_png(rows: list[tuple[str, list[Tile]]], meta: DatasetMeta, max_side: int = 256) -> bytes:
    """PNG bytes of a grid: one row per (label, tiles), titled columns, and a legend underneath."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    tiles = [t for _, ts in rows for t in ts]
    handles = [Patch(facecolor=np.array(col) / 255.0, edgecolor="#666", label=f"{c} {name}")
               for c, name, col in legend_classes(tiles, meta)]
    if any(t.title == "boundary labels" and t.rgb is not None for t in tiles):
        handles += [Patch(facecolor=np.array(col) / 255.0, edgecolor="#666", label=f"bd: {name}")
                    for name, col in BOUNDARY_CODES.values()]
    ncol = max(len(ts) for _, ts in rows)
    size = display_size(tiles, max_side)
    legend_h = 0.25 * -(-len(handles) // 8) + 0.1
    fig = Figure(figsize=(1.9 * ncol, 1.9 * size[1] / size[0] * len(rows) + 0.35 + legend_h), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), ncol, squeeze=False)
    for r, (label, row) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.set_axis_off()
                continue
            tile = row[c]
            if tile.rgb is not None:
                ax.imshow(fit(tile, size))
            else:
                ax.imshow(np.full((size[1], size[0], 3), 200, np.uint8))
                ax.text(0.5, 0.5, tile.note, ha="center", va="center", wrap=True, fontsize=8,
                        color="#444", transform=ax.transAxes)
            if r == 0:
                ax.set_title(tile.title, fontsize=9)
        axes[r][0].set_ylabel(label, fontsize=8)
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8, frameon=False)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.03, right=0.99, top=1 - 0.3 / height, bottom=legend_h / height,
                        wspace=0.04, hspace=0.06)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def show_image(work_dir: Path, image_id: str, out: Path | None = None) -> Path:
    """Render every stage of ``image_id`` to a PNG (default ``{work_dir}/show/{id}.png``); returns its path."""
    work_dir = Path(work_dir).expanduser()
    check_id(image_id, work_dir)
    view = open_work_dir(work_dir)
    tiles = image_tiles(view, image_id)
    if all(t.rgb is None for t in tiles):
        known = ", ".join(f"{k}: {len(v.ids)} ids" for k, v in view.splits.items()) or view.problem
        raise InputError(work_dir, f"nothing to show for image id {image_id!r} (not in the dataset's "
                                   f"splits — {known} — and no stage has an artefact for it)")
    out = Path(out) if out is not None else work_dir / "show" / f"{image_id}.png"
    write_bytes_atomic(out, render_grid_png([(image_id, tiles)], view.meta))
    return out
