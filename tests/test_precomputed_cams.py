"""Another method's CAMs (``cam.source: precomputed``): the four formats read back as written by the methods' own
writers, every malformed or hostile file refused naming it, the stride-4 map derived on make_cam's grid, the
pipeline importing a folder (identical pseudo masks where the maps are identical) and pre-flight checking it."""
from __future__ import annotations

import io
import math
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from salmask.benchmarks import bench_import
from salmask.benchmarks.reference_formats import export, write_clip_es, write_irn, write_wsss_bed
from salmask.cam.precomputed import FORMATS, check_folder, import_cams, quick_check, read_cams, stride4_from_full
from salmask.config import load_config
from salmask.errors import ConfigError, InputError
from salmask.io import load_npz, save_npz
from salmask.pipeline import plan_problems, run_pipeline
from salmask.utils.safe_pickle import load_npy_object

from conftest import REF_STAGES, run_salmask, stage_files, tiny_overrides

H, W = 37, 53
LABELS = [3, 7]


def _maps(k: int = 2, size: tuple[int, int] = (H, W), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(cam [K,h,w], high_res [K,H,W]) float32 in [0, 1], exactly representable in float16."""
    rng = np.random.default_rng(seed)
    high = rng.random((k, *size)).astype(np.float16).astype(np.float32)
    return stride4_from_full(high).astype(np.float16).astype(np.float32), high


class Payload:
    """Unpickling this runs code: it must never happen."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --------------------------------------------------------------------------------------------------
# The formats, as their writers write them

def test_irn_file_is_read_exactly(tmp_path):
    cam, high = _maps()
    path = write_irn(tmp_path, "a", LABELS, cam, high)
    raw = np.load(path, allow_pickle=True).item()  # the file this test wrote: torch tensors inside, as IRNet's
    assert isinstance(raw["keys"], torch.Tensor) and isinstance(raw["cam"], torch.Tensor)
    assert raw["keys"].tolist() == [2, 6] and isinstance(raw["high_res"], np.ndarray)
    arrays, copy = read_cams(tmp_path, "irn", "a", LABELS, (H, W), 20)
    assert copy is None and arrays["keys"].tolist() == LABELS and arrays["keys"].dtype == np.int16
    assert np.array_equal(arrays["cam"], cam.astype(np.float16))
    assert np.array_equal(arrays["high_res"], high.astype(np.float16))


def test_irn_file_without_a_stride4_map_gets_one_derived(tmp_path):
    cam, high = _maps()
    np.save(tmp_path / "a.npy", {"keys": torch.tensor([2, 6]), "high_res": high}, allow_pickle=True)
    arrays, _ = read_cams(tmp_path, "irn", "a", LABELS, (H, W), 20)
    assert np.array_equal(arrays["cam"], stride4_from_full(high).astype(np.float16))


def test_clip_es_keys_in_annotation_order_are_sorted_with_their_maps(tmp_path):
    _, high = _maps(3)
    labels = [2, 9, 15]
    write_clip_es(tmp_path, "a", labels, high, order=[2, 0, 1])
    raw = load_npy_object(tmp_path / "a.npy")
    assert raw["keys"].tolist() == [14, 1, 8] and raw["attn_highres"].dtype == np.float16
    arrays, _ = read_cams(tmp_path, "clip-es", "a", labels, (H, W), 20)
    assert arrays["keys"].tolist() == labels
    assert np.array_equal(arrays["high_res"], high.astype(np.float16))
    assert np.array_equal(arrays["cam"], stride4_from_full(high).astype(np.float16))


def test_wsss_bed_pngs_are_cv2_rounding_of_cam_times_255(tmp_path):
    _, high = _maps()
    paths = write_wsss_bed(tmp_path, "2007_000032", LABELS, high)
    assert [p.name for p in paths] == ["2007_000032_2.png", "2007_000032_6.png"]
    arrays, _ = read_cams(tmp_path, "png", "2007_000032", LABELS, (H, W), 20)
    expected = np.clip(np.rint(high * 255), 0, 255) / 255  # OpenCV's saturate_cast rounds half to even
    assert np.abs(arrays["high_res"].astype(np.float64) - expected).max() <= 2.5e-4  # float16 storage
    assert np.abs(arrays["high_res"].astype(np.float32) - high).max() <= 1 / 510 + 2.5e-4


def test_salmask_npz_in_make_cams_form_is_copied_byte_for_byte(tmp_path):
    cam, high = _maps()
    save_npz(tmp_path / "a.npz", keys=np.asarray(LABELS, np.int16), cam=cam.astype(np.float16),
             high_res=high.astype(np.float16))
    out = tmp_path / "out" / "a.npz"
    import_cams(tmp_path, "salmask", "a", LABELS, (H, W), 20, out)
    assert out.read_bytes() == (tmp_path / "a.npz").read_bytes()
    np.savez(tmp_path / "b.npz", keys=np.asarray(LABELS[::-1]), cam=cam[::-1], high_res=high[::-1])  # float32
    import_cams(tmp_path, "salmask", "b", LABELS, (H, W), 20, tmp_path / "out" / "b.npz")
    b = load_npz(tmp_path / "out" / "b.npz", "cam")
    assert b["keys"].tolist() == LABELS and np.array_equal(b["high_res"], high.astype(np.float16))


def test_image_without_classes_needs_no_file(tmp_path):
    for fmt in FORMATS:
        arrays, _ = read_cams(tmp_path, fmt, "empty", [], (H, W), 20)
        assert arrays["keys"].shape == (0,) and arrays["high_res"].shape == (0, H, W)
        assert arrays["cam"].shape == (0, math.ceil(H / 4), math.ceil(W / 4))


def test_stride4_map_on_make_cams_grid():
    """A stride-16 map resized as make_cam resizes it, to the padded image (then cropped) and to the stride-4
    grid: the stride-4 map derived from the first is the second wherever the grid lies inside the image."""
    torch.manual_seed(0)
    for h, w in ((37, 53), (375, 500), (64, 48)):
        h16, w16 = math.ceil(h / 16), math.ceil(w / 16)
        out = torch.rand(1, 2, h16, w16)
        high = F.interpolate(out, (16 * h16, 16 * w16), mode="bilinear", align_corners=False)[0, :, :h, :w]
        cam = F.interpolate(out, (math.ceil(h / 4), math.ceil(w / 4)), mode="bilinear", align_corners=False)[0]
        derived = stride4_from_full(high.numpy())
        rows = (np.arange(cam.shape[1]) + 0.5) * 16 * h16 / cam.shape[1] - 0.5 <= h - 1
        cols = (np.arange(cam.shape[2]) + 0.5) * 16 * w16 / cam.shape[2] - 0.5 <= w - 1
        diff = np.abs(derived - cam.numpy())[:, rows][:, :, cols]
        assert diff.mean() < 2e-3 and diff.max() < 0.05, (h, w, diff.mean(), diff.max())
        # the plain 4x4 cell centres (4i + 1.5) are further off: the grid spans the padded extent
        naive = np.abs(high.numpy()[:, 1::4][:, :, 1::4] - cam.numpy()[:, :high[:, 1::4].shape[1],
                                                                        :high[:, :, 1::4].shape[2]])
        if (h, w) == (375, 500):
            assert naive.mean() > 3 * diff.mean()


# --------------------------------------------------------------------------------------------------
# Refused, naming the file

def _irn_with(tmp_path: Path, **changes) -> Path:
    cam, high = _maps()
    d = {"keys": torch.tensor([2, 6]), "cam": torch.from_numpy(cam), "high_res": high}
    d.update(changes)
    d = {k: v for k, v in d.items() if v is not None}
    np.save(tmp_path / "a.npy", d, allow_pickle=True)
    return tmp_path / "a.npy"


@pytest.mark.parametrize("changes, message", [
    ({"high_res": None}, "no 'high_res'"),
    ({"keys": torch.tensor([2, 5])}, "do not have"),
    ({"keys": torch.tensor([2])}, "no map for its labelled classes [6]"),
    ({"keys": torch.tensor([2, 2])}, "repeat a class"),
    ({"keys": torch.tensor([2, 25])}, "outside 0..19"),
    ({"keys": torch.tensor([2.0, 6.0])}, "integer class indices"),
    ({"high_res": np.full((2, H, W), np.nan, np.float32)}, "NaN"),
    ({"high_res": np.zeros((2, H + 1, W), np.float32)}, "expected [2, 37, 53]"),
    ({"cam": torch.zeros(2, 3, 3)}, "'cam' has shape [2, 3, 3]"),
    ({"high_res": np.full((2, H, W), 7.5, np.float32)}, "expected maps in [0, 1]"),
    ({"high_res": "text"}, "not an array"),
    ({"cam": torch.zeros(2, 10, 14, dtype=torch.bfloat16)}, "numpy cannot read"),
    ({"keys": torch.zeros(10**6, dtype=torch.int64).expand(10**6)}, "K <= 20"),
])
def test_malformed_irn_files_are_refused(tmp_path, changes, message):
    path = _irn_with(tmp_path, **changes)
    with pytest.raises(InputError, match=None) as e:
        read_cams(tmp_path, "irn", "a", LABELS, (H, W), 20)
    assert str(path) in str(e.value) and message in str(e.value)


def test_truncated_foreign_and_plain_files_are_refused(tmp_path):
    path = _irn_with(tmp_path)
    data = path.read_bytes()
    for cut in (5, 100, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(InputError, match="a.npy") as e:
            read_cams(tmp_path, "irn", "a", LABELS, (H, W), 20)
        assert "truncated" in str(e.value) or "not a .npy" in str(e.value)
        assert quick_check(path, "irn") is not None
    np.save(path, np.zeros((2, H, W), np.float32))
    with pytest.raises(InputError, match="holds a ndarray, not the dict"):
        read_cams(tmp_path, "irn", "a", LABELS, (H, W), 20)
    path.write_bytes(b"PK\x03\x04 not an npy")
    with pytest.raises(InputError, match="not a .npy"):
        read_cams(tmp_path, "irn", "a", LABELS, (H, W), 20)
    with pytest.raises(InputError, match="b.npy: file not found"):
        read_cams(tmp_path, "irn", "b", LABELS, (H, W), 20)


def test_pickle_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "PWNED"
    path = _irn_with(tmp_path, cam=Payload(marker))
    with pytest.raises(InputError, match=r"a\.npy: refused to unpickle the global posix.system"):
        read_cams(tmp_path, "irn", "a", LABELS, (H, W), 20)
    assert not marker.exists()
    np.load(path, allow_pickle=True)  # the control: numpy's own pickle loading runs it
    assert marker.exists()


def test_payload_in_a_tensor_storage_is_refused_without_running(tmp_path):
    """The storage blob of a pickled tensor goes through torch.load(weights_only=True), which refuses it."""
    marker = tmp_path / "PWNED"
    blob = io.BytesIO()
    torch.save(Payload(marker), blob, _use_new_zipfile_serialization=False)
    real = pickle.dumps(np.asarray({"keys": torch.tensor([2, 6]), "high_res": _maps()[1]}, dtype=object), protocol=3)
    storage = real.index(b"_load_from_bytes")
    start = real.index(b"B", storage)  # BINBYTES: the storage's own torch.save blob
    n = int.from_bytes(real[start + 1:start + 5], "little")
    hostile = real[:start] + b"B" + len(blob.getvalue()).to_bytes(4, "little") + blob.getvalue() + real[start + 5 + n:]
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": ()})
    (tmp_path / "a.npy").write_bytes(header.getvalue() + hostile)
    with pytest.raises(InputError, match=r"a\.npy"):
        read_cams(tmp_path, "irn", "a", LABELS, (H, W), 20)
    assert not marker.exists()


def test_reconstruct_may_not_allocate_or_subclass(tmp_path):
    """numpy pickles arrays as _reconstruct(ndarray, (0,), b'b'); a pickle asking for a large empty array or
    another class is refused before anything is allocated."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": ()})
    for args in (b"(I100000000\ntp1\nc_codecs\nencode\n(Vb\nVlatin1\ntRp2\n", ):
        body = b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n" + args + b"tR."
        (tmp_path / "a.npy").write_bytes(header.getvalue() + body)
        with pytest.raises(InputError, match=r"refused to unpickle numpy _reconstruct"):
            load_npy_object(tmp_path / "a.npy")
    body = b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nmemmap\n(I0\ntp1\nC\x01btR."
    (tmp_path / "b.npy").write_bytes(header.getvalue() + body)
    with pytest.raises(InputError, match=r"refused to unpickle the global numpy.memmap"):
        load_npy_object(tmp_path / "b.npy")


def test_numpy1_module_paths_are_read(tmp_path):
    """Files written with numpy 1 name numpy.core.multiarray (numpy 2: numpy._core)."""
    _, high = _maps()
    raw = pickle.dumps(np.asarray({"keys": np.array([2, 6]), "attn_highres": high.astype(np.float16)},
                                  dtype=object), protocol=2)
    assert b"numpy._core.multiarray" in raw
    raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": ()})
    (tmp_path / "a.npy").write_bytes(header.getvalue() + raw)
    arrays, _ = read_cams(tmp_path, "clip-es", "a", LABELS, (H, W), 20)
    assert np.array_equal(arrays["high_res"], high.astype(np.float16))


def test_png_maps_must_match_image_and_labels(tmp_path):
    _, high = _maps()
    write_wsss_bed(tmp_path, "a", LABELS, high)
    with pytest.raises(InputError, match=r"a_2\.png: map of 37x53 for an image of 38x53"):
        read_cams(tmp_path, "png", "a", LABELS, (H + 1, W), 20)
    with pytest.raises(InputError, match=r"a_4\.png: file not found"):
        read_cams(tmp_path, "png", "a", [3, 5], (H, W), 20)
    from PIL import Image
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "a_6.png")
    with pytest.raises(InputError, match=r"a_6\.png: a RGB image"):
        read_cams(tmp_path, "png", "a", LABELS, (H, W), 20)


# --------------------------------------------------------------------------------------------------
# Pre-flight on a folder

class _Images:
    """The ImageSet fields check_folder reads."""

    def __init__(self, root: Path, labels: dict[str, list[int]]):
        from PIL import Image

        from salmask.data.meta import VOC

        self.meta, self.labels, self.root = VOC, labels, root
        for i in labels:
            Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / f"{i}.jpg")

    def image_path(self, i: str) -> Path:
        return self.root / f"{i}.jpg"


@pytest.mark.parametrize("fmt", FORMATS)
def test_check_folder_names_missing_and_malformed_files(tmp_path, fmt):
    labels = {f"2007_{j:06d}": [1 + j % 3] for j in range(12)}
    labels["2007_000099"] = []
    images = _Images(tmp_path, labels)
    folder = tmp_path / "cams"
    folder.mkdir()
    for j, i in enumerate(labels):
        cam, high = _maps(len(labels[i]), seed=j)
        if fmt == "salmask":
            save_npz(folder / f"{i}.npz", keys=np.asarray(labels[i], np.int16), cam=cam, high_res=high)
        elif fmt == "irn":
            write_irn(folder, i, labels[i], cam, high)
        elif fmt == "clip-es":
            write_clip_es(folder, i, labels[i], high)
        else:
            write_wsss_bed(folder, i, labels[i], high)
    ids = list(labels)
    assert check_folder(folder, fmt, images, ids, decode=16) == []
    files = sorted(p for p in folder.iterdir() if "2007_000003" in p.name)
    files[0].unlink()
    bad = sorted(p for p in folder.iterdir() if "2007_000005" in p.name)[0]
    bad.write_bytes(bad.read_bytes()[:-7])
    problems = check_folder(folder, fmt, images, ids, decode=16)
    assert any(p.startswith(f"{files[0]}: CAM file missing") for p in problems), problems
    assert any(p.startswith(f"{bad}: truncated") for p in problems), problems
    if fmt == "png":  # a map of a class the image's labels do not have
        write_wsss_bed(folder, "2007_000001", [5], _maps(1)[1])
        assert any("2007_000001_4.png: a map of class 4" in p for p in check_folder(folder, fmt, images, ids, 16))
    else:  # decoded: the classes must match
        images.labels["2007_000002"] = [9]
        assert any("2007_000002" in p and "do not have" in p for p in check_folder(folder, fmt, images, ids, 16))


# --------------------------------------------------------------------------------------------------
# The pipeline

def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.slow
def test_imported_irn_cams_give_identical_pseudo_masks(tmp_path, tiny_data, reference_run):
    """The reference run's CAMs written as IRNet writes them, imported: make_cam's arrays and the pseudo masks
    (walk in saliency edges, so no classifier-initialised boundary net differs) equal the native run's."""
    native = _copy_run(reference_run, tmp_path / "native")
    walk = ["walk.boundary=saliency"]
    run_salmask(["run", "demo", *tiny_overrides(native, tiny_data, *walk), "--stages", "make_pseudo,eval_pseudo"])
    assert export(native / "make_cam", tmp_path / "irn", "irn") == len(list((native / "make_cam").glob("*.npz")))
    work = _copy_run(reference_run, tmp_path / "imported")
    args = ["run", "demo", *tiny_overrides(work, tiny_data, *walk, "cam.source=precomputed",
                                           f"cam.dir={tmp_path / 'irn'}", "cam.format=irn", "boundary.init=pretrained"),
            "--stages", "generate,make_cam,eval_cam,saliency,make_pseudo,eval_pseudo"]
    run_salmask(args)
    for name in stage_files(native / "make_cam"):
        a, b = load_npz(native / "make_cam" / name, "cam"), load_npz(work / "make_cam" / name, "cam")
        assert all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a), name
    pseudo = {k: v for k, v in stage_files(native / "make_pseudo").items() if k.endswith(".png")}
    assert pseudo and pseudo == {k: v for k, v in stage_files(work / "make_pseudo").items() if k.endswith(".png")}
    manifest = (work / "make_cam" / "manifest.json").read_text()
    assert '"format": "irn"' in manifest and not (work / "train_cam" / "progress.json").exists()
    again = run_salmask(args)  # the same folder again: nothing reruns
    assert "make_cam               done already" in again.stderr
    assert (work / "make_cam" / "manifest.json").read_text() == manifest


@pytest.mark.slow
def test_full_downstream_from_imported_png_maps(tmp_path, tiny_data, reference_run):
    """WSSS-BED's PNGs of the reference CAMs through the boundary net (from ImageNet-style init) to the pseudo
    masks; the imported CAMs score within a quantisation step of the native ones."""
    export(reference_run / "make_cam", tmp_path / "png", "png")
    work = tmp_path / "work"
    run_salmask(["run", "demo", *tiny_overrides(work, tiny_data, "cam.source=precomputed",
                                                f"cam.dir={tmp_path / 'png'}", "cam.format=png",
                                                "boundary.init=pretrained"),
                  "--stages", ",".join(s for s in REF_STAGES if s != "train_cam")])
    assert not (work / "train_cam").exists()
    ours = __import__("json").loads((work / "eval_cam" / "manifest.json").read_text())["metrics"]["mIoU"]
    ref = __import__("json").loads((reference_run / "eval_cam" / "manifest.json").read_text())["metrics"]["mIoU"]
    assert abs(ours - ref) < 0.5
    assert len(list((work / "make_pseudo").glob("*.png"))) == len(list((reference_run / "make_pseudo").glob("*.png")))


def test_preflight_names_the_missing_or_malformed_file(tmp_path, tiny_data):
    from salmask.data.datasets import build_split
    from salmask.stage_utils import image_size

    work = tmp_path / "work"
    cfg = load_config("demo", tiny_overrides(work, tiny_data, "cam.source=precomputed", f"cam.dir={tmp_path / 'irn'}",
                                             "cam.format=irn", "boundary.init=pretrained"))
    images = build_split(cfg, cfg.dataset.pseudo_split, tmp_path / "labels")
    (tmp_path / "irn").mkdir()
    for j, i in enumerate(images.ids):
        cam, high = _maps(len(images.labels[i]), image_size(images.image_path(i)), seed=j)
        write_irn(tmp_path / "irn", i, images.labels[i], cam, high)
    files = sorted((tmp_path / "irn").glob("*.npy"))
    assert plan_problems(cfg, ["generate", "make_cam", "eval_cam"]) == []
    files[1].unlink()
    files[4].write_bytes(files[4].read_bytes()[:300])
    problems = plan_problems(cfg, ["generate", "make_cam", "eval_cam"])
    assert any(p.startswith(f"{files[1]}: CAM file missing") for p in problems)
    assert any(p.startswith(f"{files[4]}: truncated") for p in problems)
    with pytest.raises(ConfigError) as e:
        run_pipeline(cfg, stages=["generate", "make_cam", "eval_cam"])
    assert f"{files[1]}: CAM file missing" in str(e.value) and f"{files[4]}: truncated" in str(e.value)
    assert not (work / "make_cam").exists()


def test_preflight_refuses_init_cam_and_unknown_settings(tmp_path, tiny_data):
    over = tiny_overrides(tmp_path / "w", tiny_data, "cam.source=precomputed", f"cam.dir={tmp_path}")
    problems = plan_problems(load_config("demo", [*over, "seg.init=cam"]))
    assert any(p.startswith("boundary.init=cam starts from the CAM classifier") for p in problems)
    assert any(p.startswith("seg.init=cam starts from the CAM classifier") for p in problems)
    trained = load_config("demo", [*tiny_overrides(tmp_path / "w", tiny_data), "seg.init=cam"])
    assert not any("init=cam" in p for p in plan_problems(trained))
    with pytest.raises(ConfigError, match="cam.format.*one of salmask, irn, clip-es, png, got 'npy'"):
        load_config("demo", [*over, "cam.format=npy"])  # the config's own type check, before pre-flight
    problems = plan_problems(load_config("demo", [*tiny_overrides(tmp_path / "w", tiny_data, "cam.source=precomputed"),
                                                  "boundary.init=pretrained"]))
    assert any("needs cam.dir" in p for p in problems)
    with pytest.raises(ConfigError, match="cam.source.*one of train, precomputed, got 'trained'"):
        load_config("demo", [*over, "cam.source=trained"])


# --------------------------------------------------------------------------------------------------
# The benchmark rows

def test_bench_rows_per_format():
    rows = bench_import.run(size=(24, 40), images=2, repeats=1)
    assert [r["format"] for r in rows] == [f for f in FORMATS for _ in range(2)]
    for r in rows:
        assert r["stage"] == "cam import" and r["images"] == 2 and r["seconds"] > 0
        assert r["speedup"] == pytest.approx(r["ref_seconds"] / r["seconds"])
    diffs = {r["format"]: r["max_abs_diff"] for r in rows if r["case"].startswith("read")}
    assert diffs["salmask"] == diffs["irn"] == diffs["clip-es"] == 0 and 0 < diffs["png"] <= 1 / 510 + 2.5e-4
