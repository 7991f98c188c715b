"""The public API (``import salmask``): small inputs, agreement with the stages' code, bad input."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import salmask
from salmask.errors import ArgumentError, InputError, SalmaskError
from tests.conftest import salmask_env

API = ["read_image", "class_activation_maps", "boundary_map", "saliency_map", "boundary_labels", "random_walk",
       "pseudo_masks", "background_score", "select_masks", "segment", "segmentation_metrics", "sod_metrics", "run",
       "load", "Predictor", "SalmaskError"]


def _cams(k: int = 2, h: int = 6, w: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((k, h, w)).astype(np.float32), (rng.random((h, w)) ** 4).astype(np.float32)


def test_import_is_light_and_help_lists_the_api():
    code = ("import sys, salmask; assert 'torch' not in sys.modules, 'import salmask loaded torch'; "
            "help(salmask)")
    res = subprocess.run([sys.executable, "-c", code], env=salmask_env(PAGER="cat"), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    functions = res.stdout.split("FUNCTIONS", 1)[1]
    for name in API:
        if name[0].islower():
            assert f"\n    {name}(" in functions, name
        else:
            assert f"class {name}" in res.stdout, name
    assert sorted(salmask.__all__) == sorted(API)
    assert all(getattr(salmask, n) is not None for n in API)


def test_random_walk_numpy_and_torch_agree_with_propagate():
    from salmask.refine.random_walk import propagate

    cams, boundary = _cams()
    expected = propagate(torch.from_numpy(cams), torch.from_numpy(boundary), beta=5.0, exp_times=3, radius=3)
    out_np = salmask.random_walk(cams, boundary, beta=5.0, exp_times=3, radius=3)
    out_t = salmask.random_walk(torch.from_numpy(cams), torch.from_numpy(boundary), beta=5.0, exp_times=3, radius=3)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32 and out_np.shape == cams.shape
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_array_equal(out_np, expected.numpy())
    torch.testing.assert_close(out_t, expected, rtol=0, atol=0)


@pytest.mark.parametrize("cams, boundary, kwargs, message", [
    (np.zeros((6, 7), np.float32), np.zeros((6, 7), np.float32), {}, "3-D"),
    (np.zeros((2, 6, 7), np.float32), np.zeros((6, 8), np.float32), {}, "boundary"),
    (np.full((2, 6, 7), np.nan, np.float32), np.zeros((6, 7), np.float32), {}, "NaN"),
    (np.zeros((2, 6, 7), np.float32), np.full((6, 7), 1.5, np.float32), {}, r"\[0, 1\]"),
    (np.zeros((2, 6, 7), np.float32), np.zeros((6, 7), np.float32), {"beta": -1.0}, "beta"),
    (np.zeros((2, 6, 7), np.float32), np.zeros((6, 7), np.float32), {"exp_times": 1.5}, "exp_times"),
    (np.zeros((2, 6, 7), np.float32), np.zeros((6, 7), np.float32), {"radius": 0}, "radius"),
])
def test_random_walk_bad_input(cams, boundary, kwargs, message):
    with pytest.raises(ArgumentError, match=message):
        salmask.random_walk(cams, boundary, **kwargs)


def test_pseudo_masks_is_the_stage_post_processing():
    import salmask.stages  # noqa: F401  registers every stage in pipeline order before refine.stage registers its own
    from salmask.cam.evaluate import class_lut, scores_to_index
    from salmask.refine.stage import walk_scores

    cams, boundary = _cams(h=6, w=7)
    keys = np.array([3, 12])
    mask, scores = salmask.pseudo_masks(cams, boundary, keys, bg_score=0.3, size=(22, 27), exp_times=4)
    cfg = SimpleNamespace(beta=5.0, exp_times=4, radius=5)
    expected = walk_scores(cams.astype(np.float16), boundary.astype(np.float16), (22, 27), cfg, torch.device("cpu"))
    np.testing.assert_allclose(scores, expected, atol=2e-3)  # the stage reads float16 artefacts
    same = walk_scores(cams, boundary, (22, 27), cfg, torch.device("cpu"))
    np.testing.assert_array_equal(scores, same)
    np.testing.assert_array_equal(mask, class_lut(keys)[scores_to_index(same, 0.3)])
    assert mask.dtype == np.uint8 and mask.shape == (22, 27) and set(np.unique(mask)) <= {0, 3, 12}
    assert scores.shape == (2, 22, 27) and scores.min() >= 0 and scores.max() == pytest.approx(1.0)
    # default size 4h x 4w; no class -> all background
    assert salmask.pseudo_masks(cams, boundary, [3, 12], bg_score=0.21)[0].shape == (24, 28)
    empty, no_scores = salmask.pseudo_masks(np.zeros((0, 6, 7), np.float32), boundary, [], bg_score=0.21)
    assert not empty.any() and no_scores.shape == (0, 24, 28)


@pytest.mark.parametrize("kwargs, message", [
    ({"keys": [1]}, "one class id per CAM channel"),
    ({"keys": [0, 2]}, "1..254"),
    ({"keys": [1.0, 2.0]}, "integer"),
    ({"bg_score": float("nan")}, "bg_score"),
    ({"bg_score": 1.5}, "bg_score"),
    ({"size": (40, 28)}, "size"),
    ({"boundary": np.full((6, 7), -0.1, np.float32)}, r"\[0, 1\]"),
    ({"boundary": np.zeros((5, 7), np.float32)}, "grid"),
    ({"cams": np.full((2, 6, 7), np.inf, np.float32)}, "NaN or infinite"),
])
def test_pseudo_masks_bad_input(kwargs, message):
    cams, boundary = _cams()
    args = {"cams": cams, "boundary": boundary, "keys": [1, 2], "bg_score": 0.2, **kwargs}
    with pytest.raises(ArgumentError, match=message):
        salmask.pseudo_masks(args.pop("cams"), args.pop("boundary"), args.pop("keys"), **args)


def _square_scene(size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A CAM [1,H,W] that is high on a centred square, and a saliency map of the same square."""
    cam = np.zeros((1, size, size), np.float32)
    cam[0, 10:30, 10:30] = 1.0
    return cam, cam[0].copy()


def test_boundary_labels_is_the_stage_composition():
    from salmask.boundary.labels import FG, confident_map, synthesize

    cam, sal = _square_scene()
    labels = salmask.boundary_labels(cam, sal, [7])
    expected = synthesize(confident_map(cam, np.array([7]), None, use_crf=False), sal)
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.uint8 and (labels[15:25, 15:25] == FG).all()
    bes = salmask.boundary_labels(cam, None, [7], window=5, theta_scale=0.25)
    np.testing.assert_array_equal(bes, synthesize(confident_map(cam, np.array([7]), None, use_crf=False), None,
                                                  window=5, theta_scale=0.25))


@pytest.mark.parametrize("args, kwargs, message", [
    ((np.zeros((40, 40), np.float32), None), {}, "3-D"),
    ((np.full((1, 40, 40), 2.0, np.float32), None), {}, r"cams must lie in \[0, 1\]"),
    ((np.full((1, 40, 40), np.nan, np.float32), None), {}, "NaN"),
    ((np.zeros((1, 40, 40), np.float32), np.zeros((30, 40), np.float32)), {}, "must match"),
    ((np.zeros((1, 40, 40), np.float32), np.full((40, 40), -1.0, np.float32)), {}, r"saliency must lie"),
    ((np.zeros((1, 40, 40), np.float32), None), {"keys": [1, 2]}, "one class id"),
    ((np.zeros((1, 40, 40), np.float32), None), {"window": 4}, "odd"),
    ((np.zeros((1, 40, 40), np.float32), None), {"crf": True}, "image"),
    ((np.zeros((1, 40, 40), np.float32), None), {"image": np.zeros((40, 40, 3), np.float32)}, "uint8"),
])
def test_boundary_labels_bad_input(args, kwargs, message):
    with pytest.raises(ArgumentError, match=message):
        salmask.boundary_labels(*args, **kwargs)


def test_select_masks_on_arrays_matches_the_folder_run(tmp_path):
    from salmask.io import read_mask, write_gray, write_png

    cam, sal = _square_scene()
    bigger = np.zeros((40, 40), np.uint8)
    bigger[8:32, 8:32] = 4  # a single-class mask that overlaps the salient square well
    off = np.zeros((40, 40), np.uint8)
    off[0:6, 0:6] = 4  # one that does not
    multi = np.zeros((40, 40), np.uint8)
    multi[:20], multi[20:] = 2, 4
    masks, sals = [bigger, off, multi], [sal, sal, sal]
    selected, report = salmask.select_masks(masks, sals, [[4], [4], [2, 4]])
    expected = np.where(sal > 0.5, 4, 0)
    np.testing.assert_array_equal(selected[0], expected)
    np.testing.assert_array_equal(selected[1], off)
    np.testing.assert_array_equal(selected[2], multi)
    assert report["replaced"] == 1 and report["single_class"] == 2 and report["multi_class"] == 1

    for d in ("p", "s"):
        (tmp_path / d).mkdir()
    for j, (m, s) in enumerate(zip(masks, sals)):
        write_png(tmp_path / "p" / f"{j}.png", m)
        write_gray(tmp_path / "s" / f"{j}.png", s)
    folder_report = salmask.select_masks(tmp_path / "p", tmp_path / "s", out=tmp_path / "o")
    assert folder_report["replaced_ids"] == ["0"]
    np.testing.assert_array_equal(read_mask(tmp_path / "o" / "0.png"), expected)

    by_id, _ = salmask.select_masks({"a": bigger}, {"a": sal}, t0=1.0, t1=0.0)  # never replaces
    np.testing.assert_array_equal(by_id["a"], bigger)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"saliency": [np.zeros((40, 40), np.float32)] * 2}, ArgumentError, "one entry per pseudo mask"),
    ({"saliency": [np.full((40, 40), np.nan, np.float32)]}, ArgumentError, "NaN"),
    ({"saliency": [np.full((40, 40), 3.0, np.float32)]}, ArgumentError, r"\[0, 1\]"),
    ({"saliency": [np.zeros((30, 40), np.float32)]}, ArgumentError, "must match its mask"),
    ({"pseudo": [np.full((40, 40), 30, np.uint8)]}, ArgumentError, "outside 0..20"),
    ({"pseudo": [np.zeros((40, 40), np.float32)]}, ArgumentError, "integer"),
    ({"t0": -1.0}, SalmaskError, "t0"),
    ({"mode": "best"}, SalmaskError, "mode"),
    ({"out": "somewhere"}, ArgumentError, "out is for folders"),
])
def test_select_masks_bad_input(kwargs, error, message):
    args = {"pseudo": [np.zeros((40, 40), np.uint8)], "saliency": [np.zeros((40, 40), np.float32)], **kwargs}
    with pytest.raises(error, match=message):
        salmask.select_masks(args.pop("pseudo"), args.pop("saliency"), **args)


def test_segmentation_metrics_arrays_and_folders(tmp_path):
    from salmask.io import write_png
    from salmask.metrics.confusion import score_folders

    gt = np.zeros((4, 4), np.uint8)
    gt[:, 2:] = 1
    gt[0, 0] = 255
    pred = np.zeros((4, 4), np.uint8)
    pred[:, 3:] = 1
    m = salmask.segmentation_metrics(pred, gt, num_classes=2)
    # background: 7 right of 11 predicted (tp 7, fp 4 from class 1), class 1: tp 4 of 8
    assert m["mIoU"] == pytest.approx(100 * (7 / 11 + 4 / 8) / 2)
    assert m["images"] == 1 and m["pixels"] == 15
    assert salmask.segmentation_metrics([pred, pred], [gt, gt], num_classes=2)["images"] == 2
    for d, a in (("p", pred), ("g", gt)):
        write_png(tmp_path / d / "x.png", a)
    folder = salmask.segmentation_metrics(tmp_path / "p", tmp_path / "g", num_classes=2)
    assert folder == score_folders(tmp_path / "p", tmp_path / "g", 2)
    assert folder["mIoU"] == pytest.approx(m["mIoU"])
    with pytest.raises(ArgumentError, match="differ in size"):
        salmask.segmentation_metrics(pred, gt[:3], num_classes=2)
    with pytest.raises(ArgumentError, match="NaN"):
        salmask.segmentation_metrics(np.full((4, 4), np.nan), gt, num_classes=2)
    with pytest.raises(ArgumentError, match="integer"):
        salmask.segmentation_metrics(pred.astype(np.float32), gt, num_classes=2)
    with pytest.raises(ArgumentError, match="same"):
        salmask.segmentation_metrics([pred], [gt, gt], num_classes=2)
    with pytest.raises(InputError, match="outside 0..1"):
        salmask.segmentation_metrics(pred + 3, gt, num_classes=2)


def test_sod_metrics_arrays_and_folders(tmp_path):
    from salmask.io import write_gray, write_png
    from salmask.metrics.sod import score_sod_folders

    gt = np.zeros((16, 16), bool)
    gt[4:12, 4:12] = True
    pred = np.where(gt, 0.9, 0.1).astype(np.float32)
    pred[0, 0], pred[8, 8] = 0.0, 1.0  # the range stays [0, 1] through the metrics' min-max normalisation
    m = salmask.sod_metrics(pred, gt)
    assert m["images"] == 1 and m["MAE"] == pytest.approx(0.1, abs=0.01) and m["maxF"] == pytest.approx(1.0)
    write_gray(tmp_path / "p" / "x.png", pred)
    write_png(tmp_path / "g" / "x.png", gt.astype(np.uint8) * 255)
    assert salmask.sod_metrics(tmp_path / "p", tmp_path / "g") == score_sod_folders(tmp_path / "p", tmp_path / "g")
    with pytest.raises(ArgumentError, match="NaN"):
        salmask.sod_metrics(np.full((16, 16), np.nan, np.float32), gt)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        salmask.sod_metrics(pred * 3, gt)
    with pytest.raises(ArgumentError, match="same non-zero length"):
        salmask.sod_metrics(np.zeros((2, 16, 16), np.float32), [gt, gt, gt])
    with pytest.raises(ArgumentError, match="2-D"):
        salmask.sod_metrics([np.zeros((2, 16, 16), np.float32)], [gt])


def test_saliency_map_and_read_image(tmp_path):
    from salmask.io import write_png

    image = np.zeros((32, 40, 3), np.uint8)
    image[8:24, 10:30] = 220
    write_png(tmp_path / "x.png", image)
    loaded = salmask.read_image(tmp_path / "x.png")
    np.testing.assert_array_equal(loaded, image)
    sal = salmask.saliency_map(loaded)
    assert sal.shape == (32, 40) and sal.dtype == np.float32 and 0 <= sal.min() and sal.max() <= 1
    assert sal[16, 20] > sal[1, 1]
    with pytest.raises(ArgumentError, match="method"):
        salmask.saliency_map(image, method="best")
    with pytest.raises(ArgumentError, match="uint8"):
        salmask.saliency_map(image.astype(np.float32))


def test_models_from_checkpoints(tmp_path):
    from salmask.cam.infer import cams_for_batch
    from salmask.models.boundary_net import BoundaryNet
    from salmask.models.cam_net import CAMNet
    from salmask.utils.train import save_checkpoint

    torch.manual_seed(0)
    cam_net, edge_net = CAMNet(5, "resnet18").eval(), BoundaryNet("resnet18").eval()
    save_checkpoint(tmp_path / "cam.pt", model=cam_net.state_dict(), backbone="resnet18")
    save_checkpoint(tmp_path / "edge.pt", model=edge_net.state_dict(), backbone="resnet18", freeze_backbone=True)
    image = np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    cam, high = salmask.class_activation_maps(image, tmp_path / "cam.pt", [2, 5])
    ref = cams_for_batch(cam_net, [image], [[2, 5]], [1.0], torch.device("cpu"), False)[0]
    np.testing.assert_array_equal(cam, ref["cam"].astype(np.float32))
    np.testing.assert_array_equal(high, ref["high_res"].astype(np.float32))
    assert cam.shape == (2, 10, 13) and high.shape == (2, 37, 50)
    boundary = salmask.boundary_map(image, tmp_path / "edge.pt")
    assert boundary.shape == (10, 13) and 0 <= boundary.min() and boundary.max() <= 1
    np.testing.assert_array_equal(boundary, salmask.boundary_map(image, edge_net))
    with pytest.raises(ArgumentError, match="exceed"):
        salmask.class_activation_maps(image, cam_net, [6])
    with pytest.raises(InputError, match="holds a boundary network, not a cam one"):
        salmask.class_activation_maps(image, tmp_path / "edge.pt", [1])
    with pytest.raises(InputError, match="checkpoint not found"):
        salmask.boundary_map(image, tmp_path / "missing.pt")


def test_segment_with_a_trained_deeplab(tmp_path):
    """salmask.segment is infer_seg's prediction: multi-scale + flip probabilities, argmax (CRF optional)."""
    from salmask.boundary.crf import crf_available
    from salmask.data.transforms import to_tensor
    from salmask.models.deeplab import build_segmenter
    from salmask.seg.inference import predict_probs
    from salmask.utils.train import save_checkpoint

    torch.manual_seed(0)
    net = build_segmenter("deeplabv3plus", backbone="resnet18", num_classes=5, channels=16).eval()
    save_checkpoint(tmp_path / "seg.pt", model=net.state_dict(), arch="deeplabv3plus", backbone="resnet18",
                    num_classes=5, channels=16, norm="bn")
    image = np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    mask = salmask.segment(image, tmp_path / "seg.pt", scales=[0.5, 1.0])
    assert mask.dtype == np.uint8 and mask.shape == (37, 50)
    expected = predict_probs(net, to_tensor(image), scales=(0.5, 1.0), flip=True).argmax(0).numpy()
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(salmask.segment(image, net, scales=[0.5, 1.0]), mask)
    if crf_available():
        refined = salmask.segment(image, net, crf=True)
        assert refined.shape == (37, 50) and refined.max() < 5
    with pytest.raises(InputError, match="checkpoint not found"):
        salmask.segment(image, tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "cam.pt", model={}, backbone="resnet18")
    with pytest.raises(InputError, match="cam.pt"):
        salmask.segment(image, tmp_path / "cam.pt")
    with pytest.raises(ArgumentError, match="scales"):
        salmask.segment(image, net, scales=[])
    with pytest.raises(ArgumentError, match="uint8"):
        salmask.segment(image.astype(np.float32), net)
    with pytest.raises(ArgumentError, match="DeepLab"):
        salmask.segment(image, torch.nn.Conv2d(3, 5, 1))


def test_run_returns_the_summary(tmp_path, tiny_data):
    from tests.conftest import tiny_overrides

    overrides = tiny_overrides(tmp_path / "work", tiny_data)
    summary = salmask.run("demo", overrides[1:], stages=["generate", "train_cam", "make_cam", "eval_cam"],
                          work_dir=tmp_path / "work", cam__bg_threshold=0.25)
    assert set(summary["stages"]) == {"generate", "train_cam", "make_cam", "eval_cam"}
    assert summary["cam"]["threshold"] == pytest.approx(0.25)
    assert summary["work_dir"] == str((tmp_path / "work").resolve())
    assert (tmp_path / "work" / "make_cam").is_dir()
    with pytest.raises(SalmaskError, match="unknown config key"):
        salmask.run("demo", work_dir=tmp_path / "other", walk__nope=1)


def test_load_reuses_each_network(tmp_path, monkeypatch):
    """salmask.load(work_dir) loads DeepLab once for any number of images, with the run's inference settings,
    and predicts what salmask.segment predicts from the checkpoint."""
    from salmask.config import load_config, to_yaml
    from salmask.models import build
    from salmask.models.deeplab import build_segmenter

    torch.manual_seed(0)
    net = build_segmenter("deeplabv3plus", backbone="resnet18", num_classes=5, channels=16).eval()
    build.save_network(tmp_path / "train_seg" / "model.pt", net, "deeplab",
                       {"arch": "deeplabv3plus", "backbone": "resnet18", "num_classes": 5, "norm": "bn", "channels": 16})
    cfg = load_config("demo", ["seg.scales=[0.5,1.0]", "seg.flip=true", "seg.crf=false", "device=cpu"])
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    loads = []
    real = build.load_network
    monkeypatch.setattr(build, "load_network", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (33 + j, 40, 3), dtype=np.uint8) for j in range(10)]
    predictor = salmask.load(tmp_path)
    masks = [predictor.segment(im) for im in images]
    assert loads == [tmp_path / "train_seg" / "model.pt"]
    assert [m.shape for m in masks] == [im.shape[:2] for im in images]
    for im, m in zip(images[:2], masks):
        np.testing.assert_array_equal(m, salmask.segment(im, tmp_path / "train_seg" / "model.pt", scales=[0.5, 1.0]))
    with pytest.raises(ArgumentError, match="no cam network"):
        predictor.cams(images[0], [1])
    with pytest.raises(InputError, match="config.yaml"):
        salmask.load(tmp_path / "train_seg")


def test_pseudo_masks_auto_chooses_the_background_score_as_make_pseudo(tmp_path):
    """bg_score="auto" over a set of images is make_pseudo's label-free choice: the grid score whose
    foreground best agrees with the saliency maps, over all the images at once."""
    from salmask.refine.bg_score import SaliencyAgreement, choose

    rng = np.random.default_rng(3)
    cams = [rng.random((2, 6, 7)).astype(np.float32) for _ in range(3)]
    boundaries = [(rng.random((6, 7)) ** 4).astype(np.float32) for _ in range(3)]
    keys = [[1, 4], [2, 3], [5, 6]]
    saliency = [rng.random((24, 28)).astype(np.float32) ** 2 for _ in range(3)]
    masks, scores = salmask.pseudo_masks(cams, boundaries, keys, saliency=saliency, exp_times=4)
    agreement = SaliencyAgreement()
    for sc, sal in zip(scores, saliency):
        agreement.update(sc, sal)
    chosen = choose(agreement)[0]
    assert salmask.background_score(scores, saliency) == chosen
    for c, b, k, m in zip(cams, boundaries, keys, masks):
        np.testing.assert_array_equal(m, salmask.pseudo_masks(c, b, k, bg_score=chosen, exp_times=4)[0])
    with pytest.raises(ArgumentError, match="saliency"):
        salmask.pseudo_masks(cams[0], boundaries[0], keys[0])
    with pytest.raises(ArgumentError, match="list of 3"):
        salmask.pseudo_masks(cams, boundaries[:2], keys, saliency=saliency)

