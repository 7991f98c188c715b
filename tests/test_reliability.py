"""Bad inputs: a clear error naming the file (or a documented fallback), never a NaN or pickle on disk."""
from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import salmask.io as sio
from salmask.boundary.labels import BG, UNCERTAIN, confident_map, synthesize
from salmask.cam.infer import cams_for_batch
from salmask.cli import main
from salmask.config import load_config
from salmask.data.datasets import check_id, read_id_list, read_label_file, voc_root, voc_split
from salmask.data.meta import VOC
from salmask.errors import ConfigError, InputError
from salmask.io import load_npz, read_image, read_mask, save_npz, write_gray, write_png
from salmask.metrics.confusion import ConfusionMatrix, score_folders
from salmask.models.cam_net import CAMNet

from conftest import SRC, gradient_image


def _jpeg(path: Path, image: np.ndarray, mode: str = "RGB") -> Path:
    Image.fromarray(image).convert(mode).save(path, format="JPEG", quality=90)
    return path


# --------------------------------------------------------------------------------------------------
# Image files.

@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_truncated_image_names_the_file(tmp_path, kind):
    path = tmp_path / f"broken.{'jpg' if kind == 'jpeg' else 'png'}"
    Image.fromarray(gradient_image(64, 64)).save(path, format=kind.upper())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="cannot decode") as e:
        read_image(path)
    assert str(path) in str(e.value)


def test_garbage_and_missing_files_name_the_file(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG not really" * 10)
    with pytest.raises(InputError) as e:
        read_image(junk)
    assert str(junk) in str(e.value)
    missing = tmp_path / "absent.jpg"
    for reader in (read_image, sio.read_gray, read_mask, load_npz):
        with pytest.raises(InputError, match="not found") as e:
            reader(missing)
        assert str(missing) in str(e.value)


def test_odd_modes_read_as_rgb_uint8(tmp_path):
    rgb = gradient_image(20, 24)
    gray = rgb[..., 0]
    Image.fromarray(gray).save(tmp_path / "l.png")
    rgba = np.dstack([rgb, np.full((20, 24), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    transparent = rgba.copy()
    transparent[..., 3] = 0
    Image.fromarray(transparent, "RGBA").save(tmp_path / "clear.png")
    _jpeg(tmp_path / "cmyk.jpg", rgb, "CMYK")
    ramp = (np.arange(20 * 24, dtype=np.uint32).reshape(20, 24) * 137 % 65536).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "i16.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")

    for name in ("l.png", "rgba.png", "clear.png", "cmyk.jpg", "i16.png", "p.png"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (20, 24, 3), name
    np.testing.assert_array_equal(read_image(tmp_path / "l.png"), np.repeat(gray[..., None], 3, 2))
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)
    assert read_image(tmp_path / "clear.png").max() == 0  # transparency composited on black
    i16 = read_image(tmp_path / "i16.png")
    np.testing.assert_array_equal(i16[..., 0], i16[..., 2])
    assert i16.max() == 255 and i16.min() == 0
    cmyk = read_image(tmp_path / "cmyk.jpg").astype(int)
    assert np.abs(cmyk - rgb).mean() < 40  # lossy JPEG, but the same picture


def test_tiny_images_read(tmp_path):
    for h, w in ((1, 1), (16, 16), (5, 11)):
        Image.fromarray(gradient_image(h, w)).save(tmp_path / f"{h}x{w}.png")
        assert read_image(tmp_path / f"{h}x{w}.png").shape == (h, w, 3)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``×``height`` (the pixel data is never read)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        chunk(b"IEND", b"")


def test_huge_image_is_refused_before_decoding(tmp_path, monkeypatch):
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header(40_000, 40_000))
    with pytest.raises(InputError) as e:
        read_image(huge)
    assert str(huge) in str(e.value)

    small = tmp_path / "small.png"
    Image.fromarray(gradient_image(20, 20)).save(small)
    monkeypatch.setattr(sio, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(InputError, match="memory guard") as e:
        read_image(small)
    assert str(small) in str(e.value)


# --------------------------------------------------------------------------------------------------
# Masks and metrics.

def test_mask_values_outside_the_classes(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[2:4, 2:4] = 30
    m[0, 0] = 255
    write_png(tmp_path / "m.png", m, palette=VOC.palette)
    with pytest.raises(InputError, match=r"\[30\]") as e:
        read_mask(tmp_path / "m.png", num_classes=21)
    assert str(tmp_path / "m.png") in str(e.value)
    assert read_mask(tmp_path / "m.png", num_classes=31).max() == 255  # ignore is allowed
    Image.fromarray(gradient_image(8, 8)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="mode RGB"):
        read_mask(tmp_path / "rgb.png")


def test_size_mismatch_is_an_error(tmp_path):
    cm = ConfusionMatrix(3)
    with pytest.raises(InputError, match="shape") as e:
        cm.update(np.zeros((4, 5), np.uint8), np.zeros((5, 4), np.uint8), name="pred/x.png")
    assert "pred/x.png" in str(e.value)
    assert cm.hist.sum() == 0

    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    write_png(tmp_path / "gt" / "a.png", np.zeros((6, 6), np.uint8))
    write_png(tmp_path / "pred" / "a.png", np.zeros((6, 7), np.uint8))
    with pytest.raises(InputError, match="shape") as e:
        score_folders(tmp_path / "pred", tmp_path / "gt", 3)
    assert str(tmp_path / "pred" / "a.png") in str(e.value)

    write_png(tmp_path / "gt" / "b.png", np.zeros((6, 6), np.uint8))
    (tmp_path / "pred" / "a.png").unlink()
    with pytest.raises(InputError, match="not found") as e:
        score_folders(tmp_path / "pred", tmp_path / "gt", 3)
    assert str(tmp_path / "pred" / "a.png") in str(e.value)


def test_cli_eval_missing_folder_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    rc = main(["eval", "--pred", str(tmp_path / "nope"), "--gt", str(tmp_path / "gt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and str(tmp_path / "nope") in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------------
# Datasets: lists, ids, roots.

def _voc_layout(root: Path, ids: list[str], present: list[str]) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "JPEGImages").mkdir()
    (base / "SegmentationClassAug").mkdir()
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    for i in present:
        _jpeg(base / "JPEGImages" / f"{i}.jpg", gradient_image(8, 8))
    for i in ids:
        m = np.zeros((8, 8), np.uint8)
        m[2:5, 2:5] = 7
        write_png(base / "SegmentationClassAug" / f"{i}.png", m, palette=VOC.palette)
    return base


def test_image_list_naming_absent_files(tmp_path):
    base = _voc_layout(tmp_path, ["a", "b", "c"], present=["a", "c"])
    images = voc_split(tmp_path, "train", label_cache=tmp_path / "labels.json")
    assert images.labels == {"a": [7], "b": [7], "c": [7]}
    with pytest.raises(InputError, match="missing") as e:
        images.check_files()
    assert str(base / "JPEGImages" / "b.jpg") in str(e.value)


@pytest.mark.parametrize("bad", ["../x", "..", "/etc/passwd", "a/b", "a\\b", ".hidden", "x..y", ""])
def test_unsafe_ids_are_refused(tmp_path, bad):
    with pytest.raises(InputError, match="unsafe"):
        check_id(bad, tmp_path / "list.txt")


def test_unsafe_ids_in_list_and_label_files(tmp_path):
    listing = tmp_path / "train.txt"
    listing.write_text("2007_000032\n../../secret\n")
    with pytest.raises(InputError, match="unsafe") as e:
        read_id_list(listing)
    assert str(listing) in str(e.value)
    labels = tmp_path / "labels.json"
    labels.write_text('{"ok_1": ["dog"], "../x": ["cat"]}')
    with pytest.raises(InputError, match="unsafe"):
        read_label_file(labels, VOC)
    assert check_id("2007_000032", listing) == "2007_000032"


def test_wrong_dataset_root(tmp_path):
    with pytest.raises(InputError, match="not a VOC 2012 root") as e:
        voc_root(tmp_path)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(InputError):
        voc_split(tmp_path / "nowhere", "train")


# --------------------------------------------------------------------------------------------------
# Config.

@pytest.mark.parametrize("override, match", [
    ("cam.epochz=3", "unknown config key"),
    ("nonsense.deep.key=1", "unknown config key"),
    ("cam.epochs=three", "cam.epochs"),
    ("cam.scales=0.5", "cam.scales"),
    ("amp=yes please", "amp"),
    ("no_equals_sign", "key=value"),
])
def test_bad_config_is_config_error(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("demo", [override])


def test_unknown_preset_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("cam:\n  epochz: 3\n")
    with pytest.raises(ConfigError):
        load_config(str(bad))


# --------------------------------------------------------------------------------------------------
# No positive class, degenerate saliency: valid outputs, no NaN.

@pytest.fixture(scope="module")
def cam_model() -> CAMNet:
    torch.manual_seed(0)
    return CAMNet(3, "resnet18", pretrained=False).eval()


def test_cams_with_no_positive_class_are_empty(cam_model, tmp_path):
    arrays = [gradient_image(32, 40, s) for s in range(2)]
    res = cams_for_batch(cam_model, arrays, [[], [2]], [1.0, 0.5], torch.device("cpu"), False)
    assert res[0]["keys"].shape == (0,)
    assert res[0]["cam"].shape == (0, 8, 10) and res[0]["high_res"].shape == (0, 32, 40)
    assert res[1]["high_res"].shape == (1, 32, 40) and np.isfinite(res[1]["high_res"]).all()
    save_npz(tmp_path / "empty.npz", **res[0])
    back = load_npz(tmp_path / "empty.npz")
    assert back["high_res"].shape == (0, 32, 40)
    conf = confident_map(back["high_res"], back["keys"], None, use_crf=False)
    assert conf.shape == (32, 40) and (conf == BG).all()  # K = 0: all background
    labels = synthesize(conf, np.zeros((32, 40), np.float32))
    assert (labels == BG).all()


@pytest.mark.parametrize("size", [(16, 16), (9, 13), (4, 4)])
def test_tiny_images_through_cam_inference(cam_model, size):
    res = cams_for_batch(cam_model, [gradient_image(*size)], [[1, 3]], [1.0, 0.5, 1.5], torch.device("cpu"),
                         False)[0]
    assert res["high_res"].shape == (2, *size)
    assert res["cam"].shape == (2, -(-size[0] // 4), -(-size[1] // 4))
    assert np.isfinite(res["high_res"].astype(np.float32)).all()


@pytest.mark.parametrize("value", [0.0, 0.6, 1.0])
def test_constant_saliency_gives_plain_bes_labels(value):
    rng = np.random.default_rng(0)
    conf = rng.choice(np.array([0, 1, 2, UNCERTAIN], np.uint8), size=(30, 30))
    sal = np.full((30, 30), value, np.float32)
    labels = synthesize(conf, sal)
    np.testing.assert_array_equal(labels, synthesize(conf, None))
    assert labels.dtype == np.uint8


def test_no_nan_reaches_disk(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        write_gray(tmp_path / "s.png", np.array([[0.5, np.nan]]))
    with pytest.raises(ValueError, match="NaN"):
        save_npz(tmp_path / "c.npz", cam=np.array([np.inf], np.float16))
    with pytest.raises(ValueError, match="object"):
        save_npz(tmp_path / "o.npz", x=np.array([{"a": 1}], dtype=object))
    assert list(tmp_path.iterdir()) == []


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError) as e:
        load_npz(path)
    assert str(path) in str(e.value)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match="corrupt"):
        load_npz(path)


def test_source_never_unpickles():
    """No ``allow_pickle=True``, no pickle module outside the restricted unpickler (``utils/safe_pickle.py``, which
    rebuilds only allow-listed numpy and torch objects), and every ``torch.load`` passes ``weights_only=True``."""
    offenders = []
    restricted = SRC / "salmask" / "utils" / "safe_pickle.py"  # the one unpickler: an allow-list of numpy/torch names
    assert "def find_class" in restricted.read_text()
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if path == restricted:
            continue
        # np.load(..., allow_pickle=True) unpickles; the size benchmark's np.save of IRNet's format only writes
        if re.search(r"np\.load\([^)]*allow_pickle\s*=\s*True", text) or re.search(
                r"^\s*(import|from)\s+(c?pickle|dill)\b", text, re.M):
            offenders.append(f"{path}: pickle")
        for m in re.finditer(r"torch\.load\(", text):
            depth, end = 0, m.end() - 1
            for end in range(m.end() - 1, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            if not re.search(r"weights_only\s*=\s*True", text[m.start():end]):
                offenders.append(f"{path}:{text[:m.start()].count(chr(10)) + 1}: torch.load without weights_only")
    assert not offenders, offenders


def test_32_bit_images_stay_in_range(tmp_path):
    """Found by the long fuzz profile: a 32-bit TIFF read as a saliency map gave values above 1."""
    Image.fromarray(np.array([[-5, 70_000], [3, 0]], np.int32), "I").save(tmp_path / "i32.tif")
    gray = sio.read_gray(tmp_path / "i32.tif")
    assert gray.dtype == np.float32 and gray.min() == 0 and gray.max() == 1
    assert read_image(tmp_path / "i32.tif")[..., 0].tolist() == [[0, 255], [0, 0]]  # negatives clipped, not wrapped
