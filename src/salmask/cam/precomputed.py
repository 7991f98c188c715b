"""CAMs computed by another method (``cam.source: precomputed``): reading, checking and importing them.

Four layouts, one file per image (``{id}.npz`` / ``{id}.npy``) or per image and class (``{id}_{c}.png``):

============ ============================================================ ===========================================
``format``   what the file holds                                          classes
============ ============================================================ ===========================================
``salmask``  ``make_cam``'s ``.npz``: ``keys`` [K], ``cam`` [K,h,w],       ids 1..C
             ``high_res`` [K,H,W]
``irn``      IRNet's ``make_cam`` ``np.save`` of a dict: ``keys`` (a torch  0-based foreground indices (class id - 1)
             tensor), ``cam`` (torch tensor, stride 4), ``high_res``
             (numpy, full size); kept by BES, SBE, ReCAM, AMN, AdvCAM,
             CLIMS
``clip-es``  CLIP-ES's ``np.save`` of a dict: ``keys`` (numpy, in the      0-based
             annotation's order), ``attn_highres`` float16 [K,H,W]
``png``      WSSS-BED's maps: ``{id}_{c}.png``, 8-bit grayscale at full     ``c`` 0-based in the name
             size, ``cam * 255`` (``cv2.imwrite``)
============ ============================================================ ===========================================

Every map is checked against the image: the classes equal the image's labels, the full-size map has the image's
size (and ``cam`` the stride-4 grid), values are finite and within [0, 1]. Where a format has no stride-4 map it
is derived from the full-size one by :func:`stride4_from_full`. The pickled ``.npy`` formats are read with
:mod:`salmask.utils.safe_pickle`, never ``allow_pickle=True``.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from salmask.errors import ConfigError, InputError, SalmaskError
from salmask.io import NPZ_LAYOUTS, open_image, save_npz, write_bytes_atomic
from salmask.utils.safe_pickle import NPY_HEAD_BYTES, load_npy_object, read_npy_header

FORMATS = ("salmask", "irn", "clip-es", "png")
RANGE_TOLERANCE = 1e-3
"""Values may exceed [0, 1] by this much (float16 rounding of a map divided by its maximum)."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"cam.format={fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


def cam_files(folder: Path, fmt: str, image_id: str, labels: Sequence[int]) -> list[Path]:
    """The files that hold image ``image_id``'s maps (``labels``: its class ids 1..C)."""
    if fmt == "png":
        return [folder / f"{image_id}_{c - 1}.png" for c in labels]
    return [folder / f"{image_id}.{'npz' if fmt == 'salmask' else 'npy'}"]


def stride4_size(h: int, w: int) -> tuple[int, int]:
    return math.ceil(h / 4), math.ceil(w / 4)


def _stride4_axis(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps along one axis of ``n`` pixels: (lower index, upper index, upper weight) per stride-4 cell."""
    cells, padded = math.ceil(n / 4), 16 * math.ceil(n / 16)
    y = np.clip((np.arange(cells) + 0.5) * padded / cells - 0.5, 0, n - 1)
    lo = np.floor(y).astype(np.int64)
    return lo, np.minimum(lo + 1, n - 1), (y - lo).astype(np.float32)


def stride4_from_full(high_res: np.ndarray) -> np.ndarray:
    """float [K,H,W] -> float32 [K,ceil(H/4),ceil(W/4)] on ``make_cam``'s stride-4 grid.

    ``make_cam`` (as IRNet's) resizes the network's stride-16 map bilinearly (align_corners=False) to the
    image padded to a multiple of 16, cropped to H x W (the full-size map), and to ceil(H/4) x ceil(W/4) cells
    (the stride-4 map): cell i covers the padded extent 16·ceil(H/16), so it lies at full-size coordinate
    (i + 0.5)·16·ceil(H/16)/ceil(H/4) − 0.5. The full-size map is sampled there bilinearly, columns alike;
    coordinates past the last row or column (the padding, which the full-size map does not keep) take its edge.
    """
    a0, a1, wa = _stride4_axis(high_res.shape[1])
    b0, b1, wb = _stride4_axis(high_res.shape[2])
    x = high_res.astype(np.float32, copy=False)
    x = x[:, a0] * (1 - wa)[None, :, None] + x[:, a1] * wa[None, :, None]
    return x[:, :, b0] * (1 - wb) + x[:, :, b1] * wb


def _array(value: Any, path: Path, name: str) -> np.ndarray:
    """A numpy array from what a writer stored under ``name`` (numpy array, torch tensor, list of numbers)."""
    if isinstance(value, torch.Tensor):
        try:
            return value.detach().numpy()  # a view: nothing is copied before the shapes are checked
        except (TypeError, RuntimeError) as e:  # bfloat16, quantised, sparse... tensors numpy cannot view
            raise InputError(path, f"{name!r} is a {value.dtype} tensor numpy cannot read ({str(e)[:80]})") from None
    if isinstance(value, np.ndarray) and not value.dtype.hasobject:
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                                                for v in value):
        return np.asarray(value)
    raise InputError(path, f"{name!r} is a {type(value).__name__}"
                           f"{' of ' + str(value.dtype) if isinstance(value, np.ndarray) else ''}, not an array")


def _keys(value: Any, path: Path, zero_based: bool, labels: Sequence[int], num_fg: int) -> np.ndarray:
    keys = _array(value, path, "keys")
    if keys.ndim != 1 or keys.size > num_fg or not (np.issubdtype(keys.dtype, np.integer) or keys.size == 0):
        raise InputError(path, f"'keys' is {keys.dtype} {list(keys.shape)}; expected integer class indices [K], "
                               f"K <= {num_fg}")
    shift = 1 if zero_based else 0
    keys = keys.astype(np.int64) + shift
    if keys.size and (keys.min() < 1 or keys.max() > num_fg):
        raise InputError(path, f"'keys' {(keys - shift).tolist()[:8]} outside {1 - shift}..{num_fg - shift} "
                               f"({'0-based foreground indices' if zero_based else 'class ids'})")
    if len(np.unique(keys)) != keys.size:
        raise InputError(path, f"'keys' repeat a class: {keys.tolist()[:8]}")
    _match_labels(path, keys.tolist(), labels, zero_based)
    return keys


def _match_labels(path: Path, keys: Sequence[int], labels: Sequence[int], zero_based: bool) -> None:
    extra, missing = sorted(set(keys) - set(labels)), sorted(set(labels) - set(keys))
    if extra or missing:
        shift = 1 if zero_based else 0
        parts = ([f"classes {[k - shift for k in extra]} the image's labels do not have"] if extra else []) + \
                ([f"no map for its labelled classes {[k - shift for k in missing]}"] if missing else [])
        raise InputError(path, f"{' and '.join(parts)} ({'0-based' if zero_based else 'ids'}; the image's labels: "
                               f"{[c - shift for c in labels]})")


def _maps(value: Any, path: Path, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Float maps [K,h,w] of exactly ``shape``, finite, within [0, 1] (checked before any copy)."""
    a = _array(value, path, name)
    if a.shape != shape:
        raise InputError(path, f"{name!r} has shape {list(a.shape)}; expected {list(shape)} (classes, and the "
                               f"image's size{' at stride 4' if name == 'cam' else ''})")
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(path, f"{name!r} is {a.dtype}; expected float maps")
    if a.size:
        lo, hi = float(a.min()), float(a.max())  # NaN anywhere makes both NaN, an infinity shows in one
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InputError(path, f"{name!r} holds NaN or infinite values")
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise InputError(path, f"{name!r} ranges over [{lo:.3g}, {hi:.3g}]; expected maps in [0, 1] (each "
                                   f"class divided by its maximum, as IRNet's make_cam writes them)")
    return a


def _artefact(keys: np.ndarray, high_res: np.ndarray, cam: np.ndarray | None) -> dict[str, np.ndarray]:
    """``make_cam``'s arrays: classes in ascending order, int16 ids, float16 maps (the stride-4 one derived
    when the format has none)."""
    if cam is None:
        cam = stride4_from_full(high_res)
    if np.any(np.diff(keys) < 0):
        idx = np.argsort(keys, kind="stable")
        keys, cam, high_res = keys[idx], cam[idx], high_res[idx]
    return {"keys": keys.astype(np.int16), "cam": cam.astype(np.float16, copy=False),
            "high_res": high_res.astype(np.float16, copy=False)}


def _dict(obj: Any, path: Path, fmt: str, required: Sequence[str]) -> dict:
    if not isinstance(obj, dict):
        raise InputError(path, f"holds a {type(obj).__name__}, not the dict a {fmt} CAM file holds "
                               f"({', '.join(required)})")
    absent = [k for k in required if k not in obj]
    if absent:
        raise InputError(path, f"no {', '.join(repr(k) for k in absent)} in the dict (it has "
                               f"{sorted(map(str, obj))[:8]}); a {fmt} CAM file holds {', '.join(required)}")
    return obj


def read_cams(folder: Path, fmt: str, image_id: str, labels: Sequence[int], size: tuple[int, int],
              num_fg: int) -> tuple[dict[str, np.ndarray], bytes | None]:
    """Image ``image_id``'s maps in ``make_cam``'s artefact form: ``keys`` int16 [K] (ids 1..C, ascending),
    ``cam`` float16 [K,ceil(H/4),ceil(W/4)], ``high_res`` float16 [K,H,W] for an image of ``size`` (H, W) with
    class ids ``labels``; and, for a ``salmask`` file already in that form, its bytes to copy unchanged.
    InputError naming the file for anything missing, malformed or not matching the image."""
    h, w = size
    labels = sorted(int(c) for c in labels)
    k = len(labels)
    full, strided = (k, h, w), (k, *stride4_size(h, w))
    if fmt == "png":
        return _read_png(folder, image_id, labels, size), None
    path = cam_files(folder, fmt, image_id, labels)[0]
    if not labels and not path.is_file():
        return _artefact(np.zeros(0, np.int64), np.zeros(full, np.float32), None), None  # nothing to map
    if fmt == "salmask":
        return _read_npz(path, labels, full, strided, num_fg)
    obj = load_npy_object(path)
    if fmt == "irn":
        d = _dict(obj, path, "irn", ("keys", "high_res"))
        keys = _keys(d["keys"], path, True, labels, num_fg)
        high = _maps(d["high_res"], path, "high_res", full)
        cam = _maps(d["cam"], path, "cam", strided) if "cam" in d else None
        return _artefact(keys, high, cam), None
    d = _dict(obj, path, "clip-es", ("keys", "attn_highres"))
    keys = _keys(d["keys"], path, True, labels, num_fg)
    return _artefact(keys, _maps(d["attn_highres"], path, "attn_highres", full), None), None


def _read_npz(path: Path, labels: list[int], full: tuple, strided: tuple, num_fg: int):
    if not path.is_file():
        raise InputError(path, "file not found")
    data = path.read_bytes()
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except Exception as e:
        raise InputError(path, f"corrupt or truncated npz ({str(e)[:160]})") from None
    absent = [name for name in NPZ_LAYOUTS["cam"] if name not in arrays]
    if absent:
        raise InputError(path, f"array {absent[0]!r} missing (has {sorted(arrays)[:8]}); make_cam's .npz holds "
                               f"{', '.join(NPZ_LAYOUTS['cam'])}")
    keys = _keys(arrays["keys"], path, False, labels, num_fg)
    high = _maps(arrays["high_res"], path, "high_res", full)
    cam = _maps(arrays["cam"], path, "cam", strided)
    canonical = (arrays["keys"].dtype == np.int16 and high.dtype == np.float16 and cam.dtype == np.float16
                 and list(keys) == sorted(keys) and set(arrays) == {"keys", "cam", "high_res"})
    return _artefact(keys, high, cam), (data if canonical else None)


def _read_png(folder: Path, image_id: str, labels: list[int], size: tuple[int, int]) -> dict[str, np.ndarray]:
    maps = []
    for c, path in zip(labels, cam_files(folder, "png", image_id, labels)):
        img = open_image(path)  # InputError naming the file: missing, truncated, not an image
        if img.mode == "L":
            m = np.asarray(img, dtype=np.float32) / 255.0
        elif img.mode in ("I;16", "I;16B", "I;16L", "I"):
            m = np.asarray(img, dtype=np.float32) / 65535.0
        else:
            raise InputError(path, f"a {img.mode} image; a map is a grayscale PNG (8 or 16 bits)")
        if m.shape != size:
            raise InputError(path, f"map of {m.shape[0]}x{m.shape[1]} for an image of {size[0]}x{size[1]} (HxW)")
        maps.append(_maps(m, path, "map", size))
    high = np.stack(maps) if maps else np.zeros((0, *size), np.float32)
    return _artefact(np.asarray(labels, np.int64), high, None)


def import_cams(folder: Path, fmt: str, image_id: str, labels: Sequence[int], size: tuple[int, int], num_fg: int,
                out: Path) -> None:
    """Read, check and write image ``image_id``'s maps as ``out`` (``make_cam``'s ``.npz``)."""
    arrays, raw = read_cams(folder, fmt, image_id, labels, size, num_fg)
    if raw is not None:
        write_bytes_atomic(out, raw)
    else:  # uncompressed: zlib would cost 5x the read for a third less disk
        save_npz(out, compressed=False, **arrays)


# ----------------------------------------------------------------------------------------------------
# Pre-flight: every file present and whole, a sample decoded and matched against the image

def quick_check(path: Path, fmt: str) -> str | None:
    """A problem with ``path`` visible from its first and last bytes (absent, empty, not the format, cut
    short), or None. Reads at most 64 KiB and never unpickles; a zip comment longer than 490 bytes reads as
    truncated."""
    try:
        with open(path, "rb") as f:
            head = f.read(NPY_HEAD_BYTES if fmt in ("irn", "clip-es") else 32)
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - 512))
            tail = f.read()
    except FileNotFoundError:
        return "file not found"
    except OSError as e:
        return f"cannot read ({e.strerror})"
    if size == 0:
        return "empty file"
    if fmt == "png":
        if not head.startswith(PNG_SIGNATURE):
            return "not a PNG file"
        return None if tail.endswith(PNG_END) else "truncated PNG (no IEND chunk at the end)"
    if fmt == "salmask":
        if not head.startswith(b"PK\x03\x04"):
            return "not an .npz (zip) file"
        end = tail.rfind(b"PK\x05\x06")  # the zip's end record: 22 bytes, then its comment, then the file ends
        whole = end >= 0 and end + 22 + int.from_bytes(tail[end + 20:end + 22], "little") == len(tail)
        return None if whole else "truncated .npz (no zip directory at the end)"
    try:
        shape, _, dtype, offset = read_npy_header(head, path)
    except InputError as e:
        return e.problem
    if not dtype.hasobject or shape != ():
        return f"a .npy array of {dtype} {list(shape)}; a {fmt} CAM file is np.save of a dict"
    if size <= offset or not tail.endswith(b"."):
        return "truncated pickled .npy (its pickle does not end with STOP)"
    return None


def png_classes(folder: Path) -> dict[str, set[int]]:
    """``{id}_{c}.png`` names in ``folder`` -> {id: {class id c+1}} (one listing of the folder)."""
    found: dict[str, set[int]] = {}
    with os.scandir(folder) as entries:
        for e in entries:
            stem, dot, ext = e.name.rpartition(".")
            image_id, sep, c = stem.rpartition("_")
            if dot and ext.lower() == "png" and sep and c.isdigit():
                found.setdefault(image_id, set()).add(int(c) + 1)
    return found


def check_folder(folder: Path, fmt: str, images, ids: Sequence[str], decode: int) -> list[str]:
    """Problems with ``folder`` as the CAMs of ``images`` (an ImageSet with labels): each of ``ids`` has its
    file(s) and they look whole (:func:`quick_check`); for png, no file of a class the image's labels lack;
    ``decode`` ids evenly spread are read in full and matched against the image. One line per problem, each
    naming the file."""
    from salmask.stage_utils import image_size

    problems: list[str] = []
    missing: list[Path] = []
    bad: list[str] = []
    extra: list[str] = []
    listing = png_classes(folder) if fmt == "png" else {}
    for i in ids:
        labels = images.labels.get(i, [])
        for path in cam_files(folder, fmt, i, labels):
            problem = quick_check(path, fmt)
            if problem == "file not found":
                if labels or fmt == "salmask":
                    missing.append(path)
            elif problem:
                bad.append(f"{path}: {problem}")
        if fmt == "png":
            for c in sorted(listing.get(i, set()) - set(labels)):
                extra.append(f"{folder / f'{i}_{c - 1}.png'}: a map of class {c - 1} (0-based), which the image's "
                             f"labels {[x - 1 for x in labels]} do not have")
    if missing:
        more = f" (and {len(missing) - 1} more of {len(ids)} images checked)" if len(missing) > 1 else ""
        problems.append(f"{missing[0]}: CAM file missing{more}; cam.dir must hold every image's "
                        f"{'{id}_{c}.png per class' if fmt == 'png' else 'file'} (cam.format={fmt})")
    for lines in (bad, extra):
        problems += lines[:5]
        if len(lines) > 5:
            problems.append(f"... and {len(lines) - 5} more files like these in {folder}")
    broken = {p.split(": ")[0] for p in bad} | {str(p) for p in missing}
    sample = [i for i in ids if not any(str(p) in broken for p in cam_files(folder, fmt, i, images.labels.get(i, [])))]
    for i in sample[:: max(1, len(sample) // max(decode, 1))][:decode]:
        try:
            read_cams(folder, fmt, i, images.labels.get(i, []), image_size(images.image_path(i)), images.meta.num_fg)
        except SalmaskError as e:
            problems.append(str(e))
    return problems


class FolderProblems(ConfigError):
    """Every problem pre-flight found in ``cam.dir``, one line each (``problems``)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def check_source(cfg) -> None:
    """``make_cam``'s pre-flight check: with ``cam.source=precomputed``, ``cam.format`` is known and ``cam.dir``
    holds the CAMs of every image of the pseudo-mask split (:func:`check_folder` on all its ids, or an even
    sample of a split over 20,000; 16 decoded). Raises :class:`FolderProblems` listing every problem."""
    from salmask.data.datasets import build_split

    c = cfg.cam
    if c.source == "train":
        return
    if c.source != "precomputed":
        raise ConfigError(f"cam.source={c.source!r} is not one of train, precomputed")
    check_format(str(c.format))
    if not c.dir:
        raise ConfigError("cam.source=precomputed needs cam.dir, the folder of CAM files")
    folder = Path(str(c.dir)).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"cam.dir={folder}: folder not found")
    try:
        images = build_split(cfg, str(cfg.dataset.pseudo_split), Path(str(cfg.work_dir)), need_labels=True)
    except (SalmaskError, OSError):
        return  # the dataset's own check reports it (or, synthetic, the run generates it first)
    ids = images.ids if len(images.ids) <= 20_000 else images.ids[:: len(images.ids) // 2_000]
    problems = check_folder(folder, str(c.format), images, ids, decode=16)
    if problems:
        raise FolderProblems(problems)


def no_classifier_init(cfg, section: str) -> None:
    """Pre-flight check of a stage that can start from the CAM classifier (``{section}.init: cam``): with
    ``cam.source=precomputed`` there is none."""
    if cfg.cam.source == "precomputed" and cfg[section].init == "cam":
        raise ConfigError(f"{section}.init=cam starts from the CAM classifier salmask trains, and "
                          f"cam.source=precomputed trains none; set {section}.init=pretrained (ImageNet weights)")
