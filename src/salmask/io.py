"""Reading and writing artefacts: validated image/mask reads, atomic safe-format writes.

Every writer goes through a temporary file in the destination folder followed by ``os.replace``,
so a killed process leaves either the old file, the new file, or a ``.tmp`` file that no reader
trusts — never a half-written artefact under the final name.
"""
from __future__ import annotations

import errno
import io as _io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from salmask.errors import InputError, OutputError

ImageFile.LOAD_TRUNCATED_IMAGES = False
MAX_IMAGE_PIXELS = 64_000_000
_UMASK = os.umask(0)
os.umask(_UMASK)
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def open_image(path: Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        img = Image.open(path)
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise InputError(path, f"image of {img.width}x{img.height} pixels exceeds the "
                                   f"{MAX_IMAGE_PIXELS}-pixel memory guard")
        img.load()
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(path, f"cannot decode image ({e})") from None
    return img


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read any image file as RGB uint8 [H, W, 3] (grayscale, RGBA, CMYK, 16-bit converted)."""
    img = open_image(Path(path))
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.clip(np.asarray(img, dtype=np.float64), 0.0, None)  # 32-bit "I" may be negative
        arr = (arr / max(arr.max(), 1.0) * 255.0).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """Read a grayscale map (saliency) as float32 [H, W] in [0, 1]."""
    img = open_image(Path(path))
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        return np.clip(arr / 65535.0, 0.0, 1.0).astype(np.float32)  # 32-bit "I" may be out of 16-bit range
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise InputError(path, "map contains NaN or infinite values")
        return np.clip(arr, 0.0, 1.0)
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def read_mask(path: str | os.PathLike, num_classes: int | None = None,
              ignore_index: int = 255) -> np.ndarray:
    """Read an index/palette mask PNG as uint8 [H, W]; values must be < num_classes or ignore."""
    img = open_image(Path(path))
    if img.mode not in ("P", "L"):
        raise InputError(path, f"mask must be a palette or 8-bit grayscale PNG, got mode {img.mode}")
    arr = np.asarray(img, dtype=np.uint8)
    if num_classes is not None:
        bad = (arr >= num_classes) & (arr != ignore_index)
        if bad.any():
            vals = sorted(set(np.unique(arr[bad]).tolist()))[:8]
            raise InputError(path, f"mask has values {vals} outside 0..{num_classes - 1} and "
                                   f"ignore {ignore_index}")
    return arr


def _atomic_target(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


def write_failure(path: Path, e: OSError) -> OutputError:
    """The error for a failed write of ``path``: what happened and what to free or fix."""
    folder = path.parent if path.parent.exists() else Path(path.anchor or ".")
    if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
        try:
            free = f" ({shutil.disk_usage(folder).free / 1e6:.0f} MB free)"
        except OSError:
            free = ""
        fix = f"the disk holding {folder} is full{free}: free space there or choose another work_dir"
    elif e.errno == errno.EFBIG:
        fix = "the file size limit was reached (ulimit -f): raise it, e.g. ulimit -f unlimited"
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = f"{folder} is not writable: fix its permissions or choose another work_dir"
    else:
        fix = "check the disk and the folder"
    return OutputError(path, f"cannot write ({e.strerror or e}); {fix}. Nothing half-written was kept: a rerun "
                             f"resumes from the finished artefacts")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + fsync + rename.

    A failed write (disk full, file size limit, read-only folder) removes its temporary file and raises
    :class:`OutputError` (an ``OSError``) saying what to free or fix; ``path`` keeps its old content.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = _atomic_target(path)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; artefacts get the usual file mode
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise write_failure(path, e) from None
        raise


def write_png(path: str | os.PathLike, array: np.ndarray,
              palette: np.ndarray | None = None) -> None:
    """Write uint8 [H, W] (optionally with a [256, 3] palette) or [H, W, 3] atomically as PNG."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_png expects uint8, got {array.dtype}")
    img = Image.fromarray(array)
    if palette is not None and array.ndim == 2:
        img = img.convert("P")
        img.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    buf = _io.BytesIO()
    img.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())


def write_gray(path: str | os.PathLike, prob: np.ndarray) -> None:
    """Write a float map in [0, 1] [H, W] as an 8-bit grayscale PNG; NaN is refused."""
    prob = np.asarray(prob, dtype=np.float32)
    if not np.isfinite(prob).all():
        raise ValueError(f"refusing to write NaN/inf map to {path}")
    write_png(path, np.round(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8))


def save_npz(path: str | os.PathLike, compressed: bool = True, **arrays: np.ndarray) -> None:
    """Save arrays to a ``.npz`` (compressed unless ``compressed=False``) atomically; floating arrays must be
    finite."""
    for k, v in arrays.items():
        v = np.asarray(v)
        if v.dtype == object:
            raise ValueError(f"{path}: array {k!r} has object dtype (would need pickle)")
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            raise ValueError(f"refusing to write NaN/inf array {k!r} to {path}")
    buf = _io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    write_bytes_atomic(path, buf.getvalue())


NPZ_LAYOUTS: dict[str, dict[str, tuple[str, str]]] = {
    "cam": {"keys": ("i", "K"), "cam": ("f", "K h w"), "high_res": ("f", "K H W")},
    "boundary": {"boundary": ("f", "h w")},
    "scores": {"keys": ("i", "K"), "scores": ("f", "K H W")},
}
"""The pipeline's ``.npz`` artefacts: array name -> (dtype kind, i integer / f float; dimensions, a letter
standing for the same size wherever it recurs): ``make_cam``'s, ``make_boundary``'s, ``make_pseudo``'s scores."""


def load_npz(path: str | os.PathLike, layout: str | None = None) -> dict[str, np.ndarray]:
    """Load an ``.npz`` without pickle; a truncated or corrupt file raises InputError.

    With ``layout`` (a key of :data:`NPZ_LAYOUTS`) the arrays are checked too: every array present with its
    dtype kind and dimensions, floats finite, class keys in 1..254; a file that fails is an InputError.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile/ValueError/OSError variants
        raise InputError(path, f"corrupt or truncated npz ({str(e)[:200]})") from None
    if layout is not None:
        check_layout(path, arrays, NPZ_LAYOUTS[layout])
    return arrays


def check_layout(path: Path, arrays: Mapping[str, np.ndarray], layout: Mapping[str, tuple[str, str]]) -> None:
    """Raise InputError naming ``path`` unless ``arrays`` follow ``layout`` (see :data:`NPZ_LAYOUTS`)."""
    sizes: dict[str, int] = {}
    for name, (kind, dims) in layout.items():
        if name not in arrays:
            raise InputError(path, f"array {name!r} missing (has {sorted(arrays)[:8]}); a stage's artefact "
                                   f"holds {', '.join(layout)}")
        a = arrays[name]
        want = dims.split()
        ok_kind = np.issubdtype(a.dtype, np.integer) if kind == "i" else np.issubdtype(a.dtype, np.floating)
        if not ok_kind or a.ndim != len(want):
            raise InputError(path, f"array {name!r} is {a.dtype} {list(a.shape)}; expected "
                                   f"{'integer' if kind == 'i' else 'float'} [{','.join(want)}]")
        for letter, n in zip(want, a.shape):
            if sizes.setdefault(letter, n) != n:
                raise InputError(path, f"array {name!r} has {letter}={n}, other arrays {letter}={sizes[letter]}")
        if kind == "f" and not np.isfinite(a).all():
            raise InputError(path, f"array {name!r} holds NaN or infinite values")
        if name == "keys" and a.size and (a.min() < 1 or a.max() > 254 or len(np.unique(a)) != a.size):
            raise InputError(path, f"class keys {a.tolist()[:8]} are not distinct ids in 1..254")


def write_json(path: str | os.PathLike, obj: Mapping[str, Any] | list) -> None:
    """Write JSON atomically (pretty-printed, keys kept in insertion order)."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise InputError(path, f"invalid JSON ({str(e)[:200]})") from None


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A UTF-8 text file; missing, unreadable or not UTF-8 is an InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text ({e})") from None
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
