"""Fuzzing every reader and parser with hypothesis: each generated file is either read into a valid value or
refused with salmask's own error naming it — never a traceback — and no file is modified by reading it.

Default profile: ~1,480 cases, derandomised (the same cases every CI run), well under a minute.
``SALMASK_FUZZ=long``: 16 times as many (~23,700), randomised. With ``SALMASK_FUZZ_REPORT=FILE`` the
counts (cases, accepted, refused, tracebacks, modified files) are written there as JSON.
"""
from __future__ import annotations

import functools
import io
import json
import os
import pickle
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from salmask.errors import SalmaskError  # noqa: E402

LONG = os.environ.get("SALMASK_FUZZ") == "long"
SCALE = 16 if LONG else 1
STATS = {"cases": 0, "accepted": 0, "refused": 0, "tracebacks": 0, "modified": 0}
BASE = Path(tempfile.mkdtemp(prefix="salmask-fuzz-"))


def fuzz(examples: int):
    """hypothesis settings for a fuzz test of ``examples`` cases (times 16 in the long profile)."""
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=not LONG, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    shutil.rmtree(BASE, ignore_errors=True)
    print(f"\nfuzz: {STATS}")
    out = os.environ.get("SALMASK_FUZZ_REPORT")
    if out:
        Path(out).write_text(json.dumps({"profile": "long" if LONG else "default", **STATS}, indent=2) + "\n")


def case_dir() -> Path:
    return Path(tempfile.mkdtemp(dir=BASE))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def expect_clean(folder: Path, names: list[Path], fn, check=None):
    """``fn()`` returns a value passing ``check`` or raises a SalmaskError naming one of ``names``; nothing
    under ``folder`` changes. Counted in :data:`STATS`."""
    before = snapshot(folder)
    STATS["cases"] += 1
    try:
        out = fn()
    except SalmaskError as e:
        STATS["refused"] += 1
        assert any(str(p) in str(e) for p in names), f"error does not name the file: {e}"
    except BaseException:
        STATS["tracebacks"] += 1
        raise
    else:
        STATS["accepted"] += 1
        if check is not None:
            check(out)
    if snapshot(folder) != before:
        STATS["modified"] += 1
        pytest.fail(f"reading changed files under {folder}")
    shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Bytes: a valid file, then perhaps damaged

@st.composite
def damaged(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["none", "none", "truncate", "flip", "zero", "tail", "random"]))
    if kind == "truncate" and data:
        return data[:draw(st.integers(0, len(data) - 1))]
    if kind == "flip" and data:
        k = draw(st.integers(0, len(data) - 1))
        return data[:k] + bytes([data[k] ^ draw(st.integers(1, 255))]) + data[k + 1:]
    if kind == "zero":
        return b""
    if kind == "tail":
        return data + draw(st.binary(min_size=1, max_size=64))
    if kind == "random":
        return draw(st.binary(max_size=256))
    return data


def png_claiming(width: int, height: int, payload: bytes = b"\0" * 16) -> bytes:
    """A PNG whose header claims ``width``×``height`` (a decompression bomb when large)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(payload)) + chunk(b"IEND", b"")


BYTES_PER_PIXEL = {"L": 1, "P": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "I;16": 2, "I": 4, "F": 4}
FORMATS = {"PNG": ("1", "L", "P", "LA", "RGB", "RGBA", "I;16"), "JPEG": ("L", "RGB", "CMYK"),
           "TIFF": ("1", "L", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"), "BMP": ("1", "L", "P", "RGB"),
           "GIF": ("L", "P"), "WEBP": ("RGB", "RGBA")}


@st.composite
def image_files(draw) -> bytes:
    """An image file of any mode, format and size from 1×1 (16-bit, CMYK, palette, float with NaN ...),
    perhaps damaged; or a decompression bomb."""
    if draw(st.integers(0, 19)) == 0:
        side = draw(st.sampled_from([9_000, 40_000, 100_000, 2**31 - 1]))
        return png_claiming(side, draw(st.sampled_from([side, 1, 9_000])))
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[fmt]))
    w, h = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    if mode == "1":
        img = Image.frombytes("1", (w, h), draw(st.binary(min_size=(w + 7) // 8 * h, max_size=(w + 7) // 8 * h)))
    else:
        n = w * h * BYTES_PER_PIXEL[mode]
        img = Image.frombytes(mode, (w, h), draw(st.binary(min_size=n, max_size=n)))
    if mode == "P":
        img.putpalette(list(range(256)) * 3)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return draw(damaged(buf.getvalue()))


def _rgb(out):
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


def _unit(out):
    assert out.dtype == np.float32 and out.ndim == 2 and np.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


@fuzz(500)
@given(image_files(), st.sampled_from(["image", "gray", "mask", "size"]), st.sampled_from([".png", ".jpg"]))
def test_images_saliency_maps_and_masks(data, reader, suffix):
    from salmask.io import read_gray, read_image, read_mask
    from salmask.stage_utils import image_size

    d = case_dir()
    path = d / f"x{suffix}"
    path.write_bytes(data)
    fn, check = {"image": (lambda: read_image(path), _rgb), "gray": (lambda: read_gray(path), _unit),
                 "mask": (lambda: read_mask(path, 21), lambda m: m.dtype == np.uint8 and m.ndim == 2),
                 "size": (lambda: image_size(path), lambda hw: min(hw) >= 1)}[reader]
    expect_clean(d, [path], fn, check)


@st.composite
def mask_files(draw) -> bytes:
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    arr = np.frombuffer(draw(st.binary(min_size=h * w, max_size=h * w)), np.uint8).reshape(h, w)
    arr = np.where(arr > draw(st.integers(0, 255)), arr % draw(st.integers(1, 40)), 255).astype(np.uint8)
    mode = draw(st.sampled_from(["P", "L", "L", "RGB", "I;16"]))
    img = Image.fromarray(arr).convert(mode) if mode != "P" else Image.fromarray(arr, "L").convert("P")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return draw(damaged(buf.getvalue()))


@fuzz(200)
@given(mask_files(), mask_files(), st.integers(1, 40))
def test_mask_pairs_scored(gt, pred, num_classes):
    """Masks with values outside the classes, of another size than the prediction, damaged."""
    from salmask.metrics.confusion import score_folders

    d = case_dir()
    (d / "gt").mkdir()
    (d / "pred").mkdir()
    (d / "gt" / "a.png").write_bytes(gt)
    (d / "pred" / "a.png").write_bytes(pred)
    expect_clean(d, [d / "gt" / "a.png", d / "pred" / "a.png"],
                 lambda: score_folders(d / "pred", d / "gt", num_classes),
                 lambda s: s["images"] == 1)


# --------------------------------------------------------------------------------------------------
# .npz artefacts

DTYPES = [np.float16, np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_, np.complex64, "U3", object]


@st.composite
def arrays(draw, shape=None):
    dtype = draw(st.sampled_from(DTYPES))
    shape = shape if shape is not None else tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    a = rng.integers(-3, 300, size=shape)
    if dtype == object:
        return np.array([{"x": 1}] * max(1, a.size), dtype=object)
    a = a.astype(dtype) if dtype != "U3" else a.astype("U3")
    if np.issubdtype(a.dtype, np.floating) and a.size and draw(st.booleans()):
        a = a.copy()
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return a


@st.composite
def npz_files(draw) -> bytes:
    """Mostly valid artefacts with one thing wrong (missing key, dtype, shape, NaN), or random arrays."""
    layout = draw(st.sampled_from(["cam", "boundary", "scores"]))
    k, h, w = draw(st.integers(0, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    good = {"cam": {"keys": np.arange(1, k + 1), "cam": np.random.rand(k, h, w).astype(np.float16),
                    "high_res": np.random.rand(k, 4 * h, 4 * w).astype(np.float16)},
            "boundary": {"boundary": np.random.rand(h, w).astype(np.float16)},
            "scores": {"keys": np.arange(1, k + 1) * 2, "scores": np.random.rand(k, h, w).astype(np.float16)}}[layout]
    content = dict(good)
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from([*good, "junk"]))
        action = draw(st.sampled_from(["drop", "replace", "reshape"]))
        if action == "drop":
            content.pop(name, None)
        elif action == "replace":
            content[name] = draw(arrays())
        elif name in content and content[name].size:
            content[name] = content[name].reshape(-1)
    buf = io.BytesIO()
    np.savez(buf, **content)  # object arrays go in pickled, as a hostile file would have them
    return draw(damaged(buf.getvalue())), layout


def _consume(z: dict, layout: str):
    """What the stages do with a validated artefact (no error may surface here)."""
    from salmask.boundary.labels import confident_map
    from salmask.cam.evaluate import class_lut, scores_to_index

    if layout == "cam":
        confident_map(z["high_res"].astype(np.float32), z["keys"], None, use_crf=False)
    elif layout == "scores":
        class_lut(z["keys"])[scores_to_index(z["scores"].astype(np.float32), 0.3)]
    return z


@fuzz(300)
@given(npz_files())
def test_npz_artefacts(file):
    from salmask.io import load_npz

    data, layout = file
    d = case_dir()
    path = d / "a.npz"
    path.write_bytes(data)
    expect_clean(d, [path], lambda: _consume(load_npz(path, layout), layout))


# --------------------------------------------------------------------------------------------------
# Checkpoints

class Payload:
    """Unpickling this runs code: it must never happen."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


_STATES: dict[str, dict] = {}


def real_state(kind: str) -> dict:
    """The state dict of a small real network (built once)."""
    if kind not in _STATES:
        from salmask.models.boundary_net import BoundaryNet
        from salmask.models.cam_net import CAMNet

        torch.manual_seed(0)
        net = CAMNet(3, "resnet18", False) if kind == "cam" else BoundaryNet("resnet18", pretrained=False)
        _STATES[kind] = net.state_dict()
    return _STATES[kind]


@st.composite
def checkpoints(draw, marker: Path):
    kind = draw(st.sampled_from(["cam", "boundary"]))
    value = st.one_of(st.none(), st.integers(-2, 5), st.text(max_size=8), st.sampled_from(["resnet18", "resnet_x"]),
                      st.just(torch.zeros(2)), st.lists(st.integers(), max_size=2))
    ckpt = {}
    if draw(st.booleans()):
        state = dict(real_state(kind))
        for _ in range(draw(st.integers(0, 2))):
            name = draw(st.sampled_from(sorted(state)))
            state[name] = draw(st.sampled_from([torch.zeros(1), torch.zeros(3, 3), "text"])) \
                if draw(st.booleans()) else state.pop(name)
        ckpt["model"] = state
    else:
        ckpt["model"] = draw(value)
    if draw(st.booleans()):  # what salmask writes now: the network's kind and build arguments
        ckpt["network"] = kind if draw(st.booleans()) else draw(value)
        ckpt["args"] = ({"num_classes": 3, "backbone": "resnet18"} if kind == "cam" else {"backbone": "resnet18"}) \
            if draw(st.booleans()) else draw(st.one_of(value, st.dictionaries(st.sampled_from(["backbone", "x", "num_classes"]), value, max_size=2)))
    for key in draw(st.lists(st.sampled_from(["backbone", "freeze_backbone", "step", "arch", "junk"]), max_size=3)):
        ckpt[key] = "resnet18" if key == "backbone" and draw(st.booleans()) else draw(value)
    payload = draw(st.sampled_from(["dict", "dict", "dict", "pickle", "list"]))
    obj = {"dict": ckpt, "pickle": {"model": Payload(marker)}, "list": [ckpt]}[payload]
    buf = io.BytesIO()
    torch.save(obj, buf)
    return draw(damaged(buf.getvalue())), kind


@fuzz(40)
@given(st.data())
def test_checkpoints(data):
    from salmask.models.build import load_network

    d = case_dir()
    marker = BASE / "PWNED"
    blob, kind = data.draw(checkpoints(marker))
    path = d / "model.pt"
    path.write_bytes(blob)
    defaults = {"backbone": "resnet18", "attention_k": 1e-3}
    expect_clean(d, [path], lambda: load_network(path, "cpu", expect=kind, defaults=defaults))
    assert not marker.exists(), "a pickle payload ran"


# --------------------------------------------------------------------------------------------------
# Config files and overrides

KEYS = ["cam.epochs", "cam.lr", "cam.scales", "cam.pretrained", "cam.backbone", "dataset.root", "dataset.kind",
        "walk.bg_score", "cam.infer_batch", "seg.iterations", "amp", "seed", "saliency.mean", "sod.encoder_kwargs",
        "cam.epochz", "nonsense", "walk", "dataset.synthetic.n_train", "boundary_labels.crf"]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=12), st.sampled_from(["${nope}", "${cam.lr}", "${oc.env:NOPE_X}", "auto", "1e-3",
                                                          "[1, 2]", "{a: 1}", "true"]),
                   st.lists(st.integers(-2, 3), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(),
                                                                              max_size=2))


@st.composite
def yaml_files(draw) -> bytes:
    import yaml

    kind = draw(st.sampled_from(["keys", "keys", "keys", "text", "bytes"]))
    if kind == "text":
        return draw(st.text(max_size=80)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=80))
    doc: dict = {}
    for key, value in draw(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=4)):
        node = doc
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
        node[parts[-1]] = value
    return yaml.safe_dump(doc, allow_unicode=True).encode()


def _resolved(cfg):
    from omegaconf import OmegaConf

    OmegaConf.to_container(cfg, resolve=True)
    return cfg


@fuzz(60)
@given(yaml_files())
def test_yaml_configs(data):
    from salmask.config import load_config

    d = case_dir()
    path = d / "run.yaml"
    path.write_bytes(data)
    expect_clean(d, [path], lambda: _resolved(load_config(str(path))))


@fuzz(30)
@given(st.sampled_from(KEYS), VALUES)
def test_overrides(key, value):
    from salmask.config import load_config
    from salmask.errors import ConfigError

    item = f"{key}={value if isinstance(value, str) else json.dumps(value)}"
    STATS["cases"] += 1
    try:
        _resolved(load_config("demo", [item]))
        STATS["accepted"] += 1
    except ConfigError as e:
        STATS["refused"] += 1
        assert key in str(e) or "key=value" in str(e), str(e)
    except BaseException:
        STATS["tracebacks"] += 1
        raise


# --------------------------------------------------------------------------------------------------
# Label lists, COCO JSON, SBD .mat

JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-3, 300) | st.floats() | st.text(max_size=10),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=3), max_leaves=8)


@st.composite
def label_files(draw) -> bytes:
    kind = draw(st.sampled_from(["lines", "json", "jsonish", "bytes"]))
    ident = st.one_of(st.sampled_from(["2007_000032", "a", "../x", "/etc/passwd", "a b", ".h", "x..y", ""]),
                      st.text(max_size=10))
    cls = st.one_of(st.sampled_from(["dog", "cat", "person", "0", "21", "5", "-1", "Dog"]), st.integers(-2, 30))
    if kind == "lines":
        rows = draw(st.lists(st.tuples(ident, st.lists(cls, max_size=3)), max_size=5))
        return "\n".join(" ".join([i, *map(str, c)]) for i, c in rows).encode()
    if kind == "json":
        return json.dumps(draw(st.dictionaries(ident, st.lists(cls, max_size=3), max_size=4))).encode()
    if kind == "jsonish":
        return json.dumps(draw(JSONISH)).encode()
    return draw(st.binary(max_size=64))


@fuzz(150)
@given(label_files(), st.booleans())
def test_label_and_id_lists(data, as_labels):
    from salmask.data.datasets import read_id_list, read_label_file
    from salmask.data.meta import VOC

    d = case_dir()
    path = d / ("labels.json" if as_labels else "train.txt")
    path.write_bytes(data)
    fn = (lambda: read_label_file(path, VOC)) if as_labels else (lambda: read_id_list(path))
    expect_clean(d, [path], fn)


@st.composite
def coco_files(draw) -> bytes:
    from salmask.data.meta import COCO, COCO_CATEGORY_IDS

    cats = [{"id": c, "name": n} for c, n in zip(COCO_CATEGORY_IDS, COCO.fg_classes)]
    cats = draw(st.sampled_from([cats, cats, cats[:-1], [{"id": "x"}], "cats"]))
    image = st.fixed_dictionaries({"id": st.one_of(st.integers(1, 3), st.text(max_size=2)),
                                   "file_name": st.one_of(st.just("a.jpg"), st.integers()),
                                   "height": st.integers(-1, 9), "width": st.integers(-1, 9)})
    poly = st.lists(st.lists(st.floats(-5, 20, allow_nan=False), max_size=10), max_size=3)
    rle = st.fixed_dictionaries({"counts": st.one_of(st.text(max_size=10), st.lists(st.integers(0, 90), max_size=6)),
                                 "size": st.lists(st.integers(-1, 10), max_size=3)})
    ann = st.fixed_dictionaries({"image_id": st.integers(0, 3), "category_id": st.sampled_from([1, 2, 90, 0, 12]),
                                 "segmentation": st.one_of(poly, rle, JSONISH), "iscrowd": st.sampled_from([0, 1]),
                                 "id": st.integers(0, 9)})
    data = {"images": draw(st.lists(image, max_size=3)), "annotations": draw(st.lists(ann, max_size=4)),
            "categories": cats}
    if draw(st.integers(0, 9)) == 0:
        data = draw(JSONISH)
    return draw(damaged(json.dumps(data).encode()))


@fuzz(100)
@given(coco_files())
def test_coco_json(data):
    pytest.importorskip("pycocotools")
    from salmask.data.coco import load_annotations, semantic_mask

    d = case_dir()
    path = d / "instances_train2014.json"
    path.write_bytes(data)

    def read():
        api = load_annotations(path)
        return [semantic_mask(api, i, path) for i in api.imgs]

    expect_clean(d, [path], read, lambda masks: all(m.dtype == np.uint8 for m in masks))


@st.composite
def mat_files(draw) -> bytes:
    from scipy.io import savemat

    seg = draw(arrays(shape=tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))))
    if seg.dtype == object or seg.dtype.kind in "Uc":
        seg = np.zeros((2, 2), np.uint8)
    if draw(st.booleans()):
        seg = (np.abs(seg.astype(np.float64)) % 22).astype(np.uint8) if seg.dtype.kind == "f" else seg
    top = draw(st.sampled_from(["GTcls", "GTcls", "GTinst", "other"]))
    field = draw(st.sampled_from(["Segmentation", "Segmentation", "Boundaries"]))
    buf = io.BytesIO()
    savemat(buf, {top: {field: seg, "CategoriesPresent": np.array([1])}})
    return draw(damaged(buf.getvalue()))


@fuzz(100)
@given(mat_files())
def test_sbd_mat_files(data):
    """Read as ``prepare voc`` reads them: in its crash-isolating worker under the long profile (a damaged file
    can segfault scipy), in this process otherwise (faster, and the default profile's cases never crashed)."""
    from salmask.data.prepare import read_sbd_mask

    d = case_dir()
    path = d / "2008_000002.mat"
    path.write_bytes(data)
    loader = _mat_worker() if LONG else None
    read = (lambda: read_sbd_mask(path, loader)) if loader else (lambda: read_sbd_mask(path))
    expect_clean(d, [path], read, lambda m: m.dtype == np.uint8 and m.ndim == 2)


@functools.cache
def _mat_worker():
    """One crash-isolating worker for the whole session, closed at exit (before the interpreter tears down what
    the pool's thread uses)."""
    import atexit

    from salmask.data.prepare import CrashIsolatedLoader

    loader = CrashIsolatedLoader()
    atexit.register(loader.close)
    return loader


# --------------------------------------------------------------------------------------------------
# Another method's CAMs (cam.source: precomputed): pickled .npy dicts, WSSS-BED PNGs, make_cam's .npz

def _hostile_storage(marker: Path) -> bytes:
    """A torch.save blob standing where a tensor's storage belongs, carrying a payload."""
    buf = io.BytesIO()
    torch.save(Payload(marker), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _npy_object_bytes(pickled: bytes) -> bytes:
    """A .npy file of a 0-d object array whose payload is ``pickled``."""
    from numpy.lib import format as npy_format

    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    return buf.getvalue() + pickled


def _replace_storage(data: bytes, blob: bytes) -> bytes:
    """``data`` (a pickle holding a tensor) with its first bytes object, the storage's blob, swapped for ``blob``."""
    import pickletools

    for op, arg, pos in pickletools.genops(data):
        if op.name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8"):
            end = pos + 1 + {"SHORT_BINBYTES": 1, "BINBYTES": 4, "BINBYTES8": 8}[op.name] + len(arg)
            return data[:pos] + b"B" + struct.pack("<I", len(blob)) + blob + data[end:]
    raise AssertionError("no storage blob in the pickle")


@st.composite
def precomputed_cams(draw, folder: Path, marker: Path):
    """One image's maps in one format, written by the method's writer, with at most one thing wrong."""
    from salmask.benchmarks.reference_formats import write_clip_es, write_irn, write_wsss_bed
    from salmask.cam.precomputed import stride4_from_full

    fmt = draw(st.sampled_from(["irn", "irn", "clip-es", "png", "salmask"]))
    h, w = draw(st.integers(1, 13)), draw(st.integers(1, 13))
    labels = sorted(draw(st.sets(st.integers(1, 5), max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    high = rng.random((len(labels), h, w)).astype(np.float32)
    if labels:
        high /= high.reshape(len(labels), -1).max(1)[:, None, None] + 1e-5
    keys = list(labels)
    fault = draw(st.sampled_from(["none", "none", "nan", "size", "key", "missing_class", "range", "dict_key",
                                  "payload", "storage", "array", "bytes"]))
    if fault == "nan" and labels:
        high[draw(st.integers(0, len(labels) - 1)), 0, 0] = np.nan
    elif fault == "size":
        high = np.pad(high, ((0, 0), (0, 1), (0, 0)))
    elif fault == "key":
        keys = sorted(set(keys) | {draw(st.integers(0, 7))})
        high = np.concatenate([high, np.zeros((1, *high.shape[1:]), np.float32)])[:len(keys)]
    elif fault == "missing_class" and labels:
        keys, high = keys[1:], high[1:]
    elif fault == "range":
        high = high * 3 - 1
    cam = stride4_from_full(np.nan_to_num(high))
    if fmt == "salmask":  # np.savez: salmask's own writer refuses NaN
        np.savez(folder / "x.npz", keys=np.asarray(keys, np.int16), cam=cam.astype(np.float16),
                 high_res=high.astype(np.float16))
    elif fmt == "png":
        write_wsss_bed(folder, "x", keys, np.clip(np.nan_to_num(high), 0, 1))
    else:
        path = write_irn(folder, "x", keys, cam, high) if fmt == "irn" else write_clip_es(folder, "x", keys, high)
        obj = np.load(path, allow_pickle=True).item()  # the file this test just wrote
        if fault == "dict_key":
            obj.pop(draw(st.sampled_from(sorted(obj))))
        elif fault == "payload":
            obj[draw(st.sampled_from(sorted(obj)))] = Payload(marker)
        elif fault == "array":
            obj = draw(arrays())
        if fault == "storage":
            obj["keys"] = torch.tensor([0])
            pickled = pickle.dumps(np.asarray(obj, dtype=object), protocol=3)
            path.write_bytes(_npy_object_bytes(_replace_storage(pickled, _hostile_storage(marker))))
        else:
            np.save(path, obj, allow_pickle=True)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if fault == "bytes" and files:
        target = draw(st.sampled_from(files))
        target.write_bytes(draw(damaged(target.read_bytes())))
    return fmt, labels, (h, w), files


@fuzz(150)
@given(st.data())
def test_precomputed_cams(data):
    from salmask.cam.precomputed import cam_files, read_cams

    d = case_dir()
    marker = BASE / "PWNED_CAM"
    fmt, labels, size, files = data.draw(precomputed_cams(d, marker))

    def check(out):
        arrays, _ = out
        k = len(labels)
        assert arrays["keys"].tolist() == labels and arrays["keys"].dtype == np.int16
        assert arrays["high_res"].shape == (k, *size) and arrays["high_res"].dtype == np.float16
        assert arrays["cam"].shape == (k, -(-size[0] // 4), -(-size[1] // 4))
        assert np.isfinite(arrays["high_res"]).all() and np.isfinite(arrays["cam"]).all()

    names = [*files, *cam_files(d, fmt, "x", labels), d / "x.npy"]
    expect_clean(d, names, lambda: read_cams(d, fmt, "x", labels, size, 5), check)
    assert not marker.exists(), "a pickle payload ran"
