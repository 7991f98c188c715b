"""``salmask prepare voc``: SegmentationClassAug/ and train_aug.txt from VOC 2012 + SBD, built here in the
official formats (VOC palette PNGs and lists; SBD ``cls/*.mat`` holding a ``GTcls`` struct)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from salmask.cli import main
from salmask.data.datasets import voc_split
from salmask.data.meta import VOC
from salmask.data.prepare import MARKER, prepare_voc
from salmask.errors import InputError
from salmask.io import read_mask, write_png

H, W = 30, 40
VOC_TRAIN, VOC_VAL = ["2007_000001", "2007_000002", "2007_000003"], ["2007_000010", "2007_000011"]
SBD_TRAIN, SBD_VAL = ["2007_000001", "2008_000100", "2008_000101", "2007_000010"], ["2008_000200", "2007_000011",
                                                                                      "2008_000201"]
TRAIN_AUG = {"2007_000001", "2007_000002", "2007_000003", "2008_000100", "2008_000101", "2008_000200",
             "2008_000201"}  # (VOC train | SBD train | SBD val) - VOC val, written out by hand


def drawn(k: int, border: bool) -> np.ndarray:
    """Image ``k``'s mask: two class rectangles; VOC's own masks also carry a 255 outline."""
    m = np.zeros((H, W), np.uint8)
    m[2:12, 3:15] = 1 + k % 20
    m[15:28, 20:38] = 1 + (k * 7) % 20
    if border:
        m[1, 3:15] = 255
    return m


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("salmask: error")]


def save_sbd(path: Path, seg: np.ndarray, field: str = "Segmentation") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"GTcls": {field: seg, "Boundaries": np.zeros((1, 20), object),
                             "CategoriesPresent": np.unique(seg[(seg > 0) & (seg < 255)]).astype(np.uint8)}})


@pytest.fixture
def release(tmp_path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """(VOC2012 dir, benchmark_RELEASE dir, the masks prepare_voc must write)."""
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    sbd = tmp_path / "benchmark_RELEASE"
    every = sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL))
    expected = {}
    (voc / "JPEGImages").mkdir(parents=True)
    for k, i in enumerate(every):
        Image.fromarray(np.full((H, W, 3), k * 9, np.uint8)).save(voc / "JPEGImages" / f"{i}.jpg")
        if i in VOC_TRAIN or i in VOC_VAL:
            expected[i] = drawn(k, border=True)
            write_png(voc / "SegmentationClass" / f"{i}.png", expected[i], VOC.palette)
        if i in SBD_TRAIN or i in SBD_VAL:
            sbd_mask = drawn(k + 3, border=False)  # differs from VOC's where both exist: VOC's must win
            save_sbd(sbd / "dataset" / "cls" / f"{i}.mat", sbd_mask)
            expected.setdefault(i, sbd_mask)
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (lists / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    (sbd / "dataset" / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (sbd / "dataset" / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    return voc, sbd, expected


def test_train_aug_and_masks(release, capsys):
    voc, sbd, expected = release
    assert main(["prepare", "voc", "--voc", str(voc.parent.parent), "--sbd", str(sbd)]) == 0
    out = capsys.readouterr().out
    assert "VOC train 3, val 2; SBD train 4, val 3" in out
    assert "train_aug: 7 images" in out and "9 masks (5 from VOC SegmentationClass, 4 from SBD)" in out
    listed = (voc / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
    assert listed == sorted(TRAIN_AUG)
    aug = voc / "SegmentationClassAug"
    assert sorted(p.stem for p in aug.glob("*.png")) == sorted(expected)
    for i, want in expected.items():
        with Image.open(aug / f"{i}.png") as im:
            assert im.mode == "P"
            assert np.array_equal(np.asarray(im.getpalette()[:63]), VOC.palette[:21].reshape(-1))
        np.testing.assert_array_equal(read_mask(aug / f"{i}.png", 21), want, err_msg=i)

    images = voc_split(voc, "train_aug")
    assert images.ids == sorted(TRAIN_AUG)
    for i in images.ids:
        assert images.mask_path(i) == aug / f"{i}.png"
        assert images.labels[i] == sorted(int(c) for c in np.unique(expected[i]) if 0 < c < 21)

    stamp = (aug / f"{VOC_TRAIN[0]}.png").stat().st_mtime_ns
    assert main(["prepare", "voc", "--voc", str(voc), "--sbd", str(sbd / "dataset")]) == 0
    assert "complete already (9 masks, train_aug 7)" in capsys.readouterr().out
    assert (aug / f"{VOC_TRAIN[0]}.png").stat().st_mtime_ns == stamp


def test_a_half_made_folder_is_refused_without_force(release, capsys):
    voc, sbd, expected = release
    prepare_voc(voc, sbd)
    (voc / "SegmentationClassAug" / MARKER).unlink()
    (voc / "SegmentationClassAug" / f"{VOC_VAL[0]}.png").unlink()
    assert main(["prepare", "voc", "--voc", str(voc), "--sbd", str(sbd)]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"salmask: error: {voc / 'SegmentationClassAug'}: exists without salmask's completion marker "
        f"(half-made, or made by another tool); rerun with --force to rewrite it"]
    assert main(["prepare", "voc", "--voc", str(voc), "--sbd", str(sbd), "--force"]) == 0
    assert (voc / "SegmentationClassAug" / MARKER).is_file()
    np.testing.assert_array_equal(read_mask(voc / "SegmentationClassAug" / f"{VOC_VAL[0]}.png"),
                                  expected[VOC_VAL[0]])


@pytest.mark.parametrize("break_it, problem", [
    (lambda voc, sbd: save_sbd(sbd / "dataset/cls/2008_000101.mat", drawn(0, False), field="Boundaries_only"),
     "no GTcls.Segmentation in the .mat file"),
    (lambda voc, sbd: save_sbd(sbd / "dataset/cls/2008_000101.mat", np.full((H, W), 21, np.uint8)),
     "mask has values [21] outside 0..20 and ignore 255"),
    (lambda voc, sbd: (sbd / "dataset/cls/2008_000101.mat").write_bytes(b"MATLAB 5.0 truncated"),
     "cannot read the .mat file"),
    (lambda voc, sbd: save_sbd(sbd / "dataset/cls/2008_000101.mat", np.zeros((H + 1, W), np.uint8)),
     "mask of 40x31 for an image of 40x30"),
])
def test_bad_sbd_files_are_named_and_nothing_is_marked_complete(release, capsys, break_it, problem):
    voc, sbd, _ = release
    break_it(voc, sbd)
    assert main(["prepare", "voc", "--voc", str(voc), "--sbd", str(sbd)]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith(f"salmask: error: {sbd / 'dataset/cls/2008_000101.mat'}: ")
    assert problem in err[0]
    assert not (voc / "SegmentationClassAug" / MARKER).exists()
    assert not (voc / "ImageSets" / "Segmentation" / "train_aug.txt").exists()
    with pytest.raises(InputError, match="without salmask's completion marker"):  # half-made: never trusted
        prepare_voc(voc, sbd)


def test_a_voc_mask_outside_the_classes_is_named(release):
    voc, sbd, _ = release
    bad = voc / "SegmentationClass" / f"{VOC_TRAIN[1]}.png"
    m = drawn(0, True)
    m[0, 0] = 30
    write_png(bad, m, VOC.palette)
    with pytest.raises(InputError, match=r"values \[30\] outside 0..20") as e:
        prepare_voc(voc, sbd)
    assert e.value.path == str(bad)


def test_a_listed_id_without_any_mask_is_named(release):
    voc, sbd, _ = release
    (sbd / "dataset" / "cls" / "2008_000200.mat").unlink()
    with pytest.raises(InputError, match="no mask for 2008_000200") as e:
        prepare_voc(voc, sbd)
    assert e.value.path == str(sbd / "dataset" / "cls" / "2008_000200.mat")


def _segfault(path: str) -> None:
    """What scipy does on some damaged .mat files (module level: the spawned worker imports it by name)."""
    import faulthandler

    faulthandler.disable()
    faulthandler._sigsegv()


def test_a_crash_inside_the_mat_reader_is_an_error_naming_the_file(tmp_path):
    """A damaged .mat can segfault scipy's loadmat: in the worker it becomes salmask's error, and the next file
    is read by a fresh worker."""
    from salmask.data.prepare import CrashIsolatedLoader, read_sbd_mask
    from salmask.errors import InputError

    bad, good = tmp_path / "2008_000002.mat", tmp_path / "2008_000003.mat"
    bad.write_bytes(b"MATLAB 5.0 damaged")
    seg = np.zeros((4, 5), np.uint8)
    seg[1:3, 1:4] = 7
    save_sbd(good, seg)
    with CrashIsolatedLoader(target=_segfault) as crashing:
        with pytest.raises(InputError, match="crashed on this file") as err:
            read_sbd_mask(bad, crashing)
    assert str(bad) in str(err.value)
    with CrashIsolatedLoader() as loader:
        with pytest.raises(InputError, match="cannot read the .mat file"):
            read_sbd_mask(bad, loader)
        np.testing.assert_array_equal(read_sbd_mask(good, loader), seg)
