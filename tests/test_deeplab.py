"""DeepLab-v2 / v3+ construction and shapes, parameter groups, multi-scale inference, VOC test export."""
from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from salmask.data.meta import voc_palette
from salmask.errors import ConfigError, InputError
from salmask.io import write_png
from salmask.models.backbones import freeze_backbone, freeze_batchnorm
from salmask.models.deeplab import (DeepLabV2, DeepLabV3Plus, build_segmenter, msc_logits,
                                    param_groups)
from salmask.seg.inference import (VOC_TEST_DIR, export_voc_test, predict_batch, predict_logits,
                                   predict_probs)

torch.set_num_threads(1)
K = 5


@pytest.fixture(scope="module")
def v3() -> nn.Module:
    torch.manual_seed(0)
    return build_segmenter("deeplabv3plus", backbone="resnet18", num_classes=K).eval()


@pytest.mark.parametrize("arch, backbone, stride, expect", [
    ("deeplabv2", "resnet18", None, (9, 11)),        # stride 8
    ("deeplabv2", "resnet50", 16, (5, 6)),
    ("deeplabv3plus", "resnet18", None, (17, 21)),   # stride 4 whatever the output stride
    ("deeplabv3plus", "resnet50", 8, (17, 21)),
])
def test_output_shapes_odd_input(arch, backbone, stride, expect):
    model = build_segmenter(arch, backbone=backbone, num_classes=K, output_stride=stride).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 65, 81))
    assert out.shape == (2, K, *expect)
    assert torch.isfinite(out).all()


def test_registry_and_bad_config():
    assert isinstance(build_segmenter("deeplabv2", backbone="resnet18", num_classes=3), DeepLabV2)
    with pytest.raises(ConfigError, match="deeplabv2, deeplabv3plus"):
        build_segmenter("pspnet", backbone="resnet18", num_classes=3)
    with pytest.raises(ConfigError, match="only available for deeplabv3plus"):
        build_segmenter("deeplabv2", backbone="resnet18", num_classes=3, norm="gn")
    with pytest.raises(ConfigError, match="norm"):
        build_segmenter("deeplabv3plus", backbone="resnet18", num_classes=3, norm="ln")
    with pytest.raises(ConfigError, match="output_stride"):
        build_segmenter("deeplabv3plus", backbone="resnet18", num_classes=3, output_stride=32)


def test_v2_head_is_sum_of_four_dilated_branches():
    model = DeepLabV2("resnet18", num_classes=K)
    assert [b.dilation[0] for b in model.head.branches] == [6, 12, 18, 24]
    feats = torch.randn(1, 512, 7, 9)
    expect = sum(b(feats) for b in model.head.branches)
    assert torch.allclose(model.head(feats), expect)


def test_large_backbones_construct():
    for name in ("resnet101", "resnest101"):
        model = DeepLabV3Plus(name, num_classes=21).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 33, 33)).shape == (1, 21, 9, 9)


def test_groupnorm_head_has_no_batchnorm():
    model = build_segmenter("deeplabv3plus", backbone="resnet18", num_classes=K, norm="gn")
    head = [model.aspp, model.low_proj, model.decoder, model.classifier]
    mods = [m for h in head for m in h.modules()]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in mods)
    assert sum(isinstance(m, nn.GroupNorm) for m in mods) == 9  # 5 ASPP branches, project, low, 2 dec
    model.train()
    model(torch.randn(1, 3, 64, 64)).sum().backward()  # batch 1 would fail BN on the pooled branch
    bn = build_segmenter("deeplabv3plus", backbone="resnet18", num_classes=K)
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn.aspp.modules())


@pytest.mark.parametrize("arch", ["deeplabv2", "deeplabv3plus"])
def test_param_groups_cover_trainable_once(arch):
    model = build_segmenter(arch, backbone="resnet18", num_classes=K)
    freeze_batchnorm(model.backbone)
    groups = param_groups(model, 2.5e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    assert len(trainable) < len(list(model.parameters()))
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == pytest.approx(2.5e-3) and by_name["backbone"]["lr"] == 2.5e-4
    head_ids = {id(p) for p in by_name["head"]["params"]}
    assert not head_ids & {id(p) for p in model.backbone.parameters()}
    torch.optim.SGD(groups, lr=2.5e-4, momentum=0.9)


def test_msc_logits():
    model = DeepLabV2("resnet18", num_classes=K).eval()
    with torch.no_grad():
        outs = msc_logits(model, torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[-2:]) for o in outs] == [(8, 8), (4, 4), (6, 6), (8, 8)]
    assert torch.all(outs[-1] >= outs[0])


def test_probabilities_sum_to_one_at_input_size(v3):
    img = torch.randn(3, 37, 50)
    probs = predict_probs(v3, img, scales=(0.5, 1.0, 1.5))
    assert probs.shape == (K, 37, 50) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(0), torch.ones(37, 50), atol=1e-5)
    assert torch.equal(probs, predict_logits(v3, img, scales=(0.5, 1.0, 1.5)))


def test_single_scale_no_flip_is_plain_softmax(v3):
    img = torch.randn(3, 40, 44)
    with torch.no_grad():
        ref = F.interpolate(v3(img[None]), size=(40, 44), mode="bilinear", align_corners=False)
    assert torch.allclose(predict_probs(v3, img, scales=(1.0,), flip=False), ref.softmax(1)[0], atol=1e-6)


def test_flip_averaging_makes_prediction_flip_equivariant(v3):
    img = torch.randn(3, 33, 41)
    a = predict_probs(v3, img, scales=(0.75, 1.0))
    b = predict_probs(v3, img.flip(-1), scales=(0.75, 1.0))
    assert torch.allclose(b, a.flip(-1), atol=1e-5)
    no_flip = predict_probs(v3, img, scales=(0.75, 1.0), flip=False)
    assert not torch.allclose(no_flip, a, atol=1e-3)


def test_predict_batch_matches_single(v3):
    imgs = [torch.randn(3, 30, 34), torch.randn(3, 25, 29), torch.randn(3, 30, 34)]
    batch = predict_batch(v3, imgs, scales=(0.5, 1.0))
    for img, probs in zip(imgs, batch):
        assert torch.allclose(probs, predict_probs(v3, img, scales=(0.5, 1.0)), atol=1e-5)


def test_predict_rejects_bad_input(v3):
    with pytest.raises(ValueError, match="3, H, W"):
        predict_probs(v3, torch.randn(1, 20, 20))
    with pytest.raises(ValueError, match="NaN"):
        predict_probs(v3, torch.full((3, 20, 20), float("nan")))
    with pytest.raises(ValueError, match="scales"):
        predict_probs(v3, torch.randn(3, 20, 20), scales=())
    v3.train()
    try:
        with pytest.raises(ValueError, match="eval"):
            predict_probs(v3, torch.randn(3, 20, 20))
    finally:
        v3.eval()


@pytest.mark.parametrize("name", ["results.tar", "results.tgz"])
def test_export_voc_test_layout(tmp_path, name):
    pred = tmp_path / "pred"
    ids = ["2008_000001", "2008_000002"]
    for n, i in enumerate(ids):
        write_png(pred / f"{i}.png", np.full((4, 6), n + 1, np.uint8), palette=voc_palette())
    out = export_voc_test(pred, tmp_path / "out" / name, ids)
    with tarfile.open(out) as tar:
        assert tar.getnames() == [f"{VOC_TEST_DIR}/{i}.png" for i in ids]
        assert VOC_TEST_DIR == "results/VOC2012/Segmentation/comp6_test_cls"
        data = tar.extractfile(tar.getmember(f"{VOC_TEST_DIR}/{ids[1]}.png")).read()
    assert data == (pred / f"{ids[1]}.png").read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == [name]


def test_export_voc_test_refuses_bad_predictions(tmp_path):
    pred = tmp_path / "pred"
    write_png(pred / "a.png", np.zeros((4, 4), np.uint8))
    write_png(pred / "b.png", np.full((4, 4), 255, np.uint8))
    out = tmp_path / "out" / "r.tar"
    with pytest.raises(InputError, match="c.png"):
        export_voc_test(pred, out, ["a", "c"])
    with pytest.raises(InputError, match="value 255"):
        export_voc_test(pred, out, ["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        export_voc_test(pred, out, ["a", "a"])
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_decoder_width_is_configurable():
    narrow = DeepLabV3Plus("resnet18", num_classes=5, channels=32)
    wide = DeepLabV3Plus("resnet18", num_classes=5)
    assert narrow.eval()(torch.randn(1, 3, 65, 65)).shape == (1, 5, 17, 17)
    assert narrow.classifier.in_channels == 32 and wide.classifier.in_channels == 256
    head = lambda m: sum(p.numel() for n, p in m.named_parameters() if not n.startswith("backbone."))  # noqa: E731
    assert head(narrow) < head(wide) / 10
    with pytest.raises(ConfigError, match="only configurable for deeplabv3plus"):
        build_segmenter("deeplabv2", backbone="resnet18", num_classes=5, channels=64)


def test_head_lr_multiple():
    model = DeepLabV3Plus("resnet18", num_classes=5, channels=32)
    groups = {g["name"]: g["lr"] for g in param_groups(model, 0.01, 3.0)}
    assert groups == {"backbone": 0.01, "head": pytest.approx(0.03)}


@pytest.mark.parametrize("arch", ["deeplabv2", "deeplabv3plus"])
def test_frozen_backbone_trains_the_head_alone(arch):
    """seg.freeze_backbone: one SGD step changes the head and leaves every backbone tensor (weights and
    BatchNorm statistics) as it was, although the model is in training mode."""
    model = build_segmenter(arch, backbone="resnet18", num_classes=K, channels=32) if arch == "deeplabv3plus" \
        else build_segmenter(arch, backbone="resnet18", num_classes=K)
    freeze_backbone(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = param_groups(model, 0.01)
    assert [g["name"] for g in groups] == ["head"]
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    model.train()
    assert not model.backbone.training and all(not m.training for m in model.backbone.modules())
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, K, (2, 64, 64))
    logits = model(x)
    F.cross_entropy(F.interpolate(logits, y.shape[-2:], mode="bilinear"), y).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert any(not torch.equal(before[k], after[k]) for k in before if not k.startswith("backbone."))


def test_segmenter_backbone_from_the_cam_classifier(tmp_path):
    from salmask.models.cam_net import CAMNet
    from salmask.seg.train import load_cam_backbone
    from salmask.utils.train import save_checkpoint

    torch.manual_seed(0)
    cam = CAMNet(20, "resnet18", pretrained=False)
    save_checkpoint(tmp_path / "cam.pt", model=cam.state_dict(), backbone="resnet18")
    seg = DeepLabV3Plus("resnet18", num_classes=21, channels=32)
    load_cam_backbone(seg, tmp_path / "cam.pt")
    for k, v in seg.backbone.state_dict().items():
        assert torch.equal(v, cam.backbone.state_dict()[k]), k
    with pytest.raises(InputError, match="does not fit seg.backbone"):
        load_cam_backbone(DeepLabV3Plus("resnet34", num_classes=21, channels=32), tmp_path / "cam.pt")


def test_infer_seg_refines_with_deeplabs_crf(tmp_path, reference_run, tiny_data, monkeypatch):
    """seg.crf=true runs DeepLab's CRF kernel on every prediction, not the boundary labels' default kernel."""
    import shutil

    import salmask.seg.inference as seg_inference
    from salmask.api import run
    from salmask.boundary.crf import crf_available

    from conftest import tiny_overrides

    if not crf_available():
        pytest.skip("pydensecrf2 not installed")
    calls = []

    def recorder(image, probs, **kwargs):
        calls.append(kwargs)
        return probs

    monkeypatch.setattr(seg_inference, "dense_crf", recorder)
    work = tmp_path / "work"
    shutil.copytree(reference_run, work)
    run("demo", tiny_overrides(work, tiny_data, "seg.crf=true", "seg.fit_images=2"),
        stages=["select", "train_seg", "infer_seg"])
    assert len(calls) == len(list((work / "infer_seg" / "val").glob("*.png"))) + 2
    assert all(kw == seg_inference.DEEPLAB_CRF for kw in calls)
    assert seg_inference.DEEPLAB_CRF["sxy_bilateral"] == 67 and seg_inference.DEEPLAB_CRF["srgb"] == 3


@pytest.mark.slow
def test_segment_command_repeats_infer_seg(tmp_path, reference_run, tiny_data):
    """``salmask segment WORK_DIR IMAGES`` predicts new images with the run's DeepLab and inference settings:
    on the val images it writes the masks infer_seg wrote; a folder without a trained DeepLab is named."""
    import shutil

    from salmask.api import run
    from salmask.cli import main
    from salmask.io import read_mask

    from conftest import tiny_overrides

    work = tmp_path / "work"
    shutil.copytree(reference_run, work)
    run("demo", tiny_overrides(work, tiny_data, "seg.scales=[0.75,1.0]"),
        stages=["select", "train_seg", "infer_seg"])
    val = sorted((work / "infer_seg" / "val").glob("*.png"))
    images = tmp_path / "images"
    images.mkdir()
    for p in val:
        shutil.copy(tiny_data / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{p.stem}.jpg", images)
    assert main(["segment", str(work), str(images), "--out", str(tmp_path / "out")]) == 0
    for p in val:
        np.testing.assert_array_equal(read_mask(tmp_path / "out" / p.name), read_mask(p))
    # inference settings other than the run's, and one image instead of a folder
    one = images / f"{val[0].stem}.jpg"
    assert main(["segment", str(work), str(one), "--out", str(tmp_path / "one"), "seg.scales=[1.0]",
                 "seg.flip=false"]) == 0
    assert read_mask(tmp_path / "one" / val[0].name).shape == read_mask(val[0]).shape
    shutil.rmtree(work / "train_seg")
    assert main(["segment", str(work), str(images), "--out", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()

