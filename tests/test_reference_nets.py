"""salmask against reference formulations written from the reference code's definitions (IRNet, BES, SBE's
release): same weights, same inputs, agreement to float precision (labels exactly)."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from salmask.boundary.labels import saliency_edges
from salmask.cam.infer import cams_for_batch
from salmask.data.transforms import downsample_labels, normalize
from salmask.models.boundary_net import BoundaryNet
from salmask.models.cam_net import CAMNet
from salmask.select.sos import alpha_star, sep_replaces

from conftest import gradient_image


def reference_resnet(depth: int, state: dict) -> nn.Module:
    """IRNet's ResNet: strides (2,2,2,1), every dilation 1 — torchvision's net with layer4's stride undone."""
    net = getattr(torchvision.models, f"resnet{depth}")()
    block = net.layer4[0]
    (block.conv2 if depth >= 50 else block.conv1).stride = (1, 1)
    block.downsample[0].stride = (1, 1)
    net.load_state_dict(state)
    return net.eval()


def reference_stages(net: nn.Module) -> list[nn.Module]:
    """IRNet's five stages: conv1+bn+relu+maxpool, layer1, layer2, layer3, layer4."""
    return [nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool), net.layer1, net.layer2, net.layer3,
            net.layer4]


def reference_cams(net: nn.Module, weight: torch.Tensor, image: np.ndarray, scales) -> torch.Tensor:
    """IRNet's make_cam for one image: per scale, the uint8 image rescaled (PIL bicubic), normalised, with its
    flip; ReLU(conv(features, w)) flip-summed, upsampled to the stride-4 grid, summed over scales."""
    h, w = image.shape[:2]
    strided = ((h + 3) // 4, (w + 3) // 4)
    total = 0
    for s in scales:
        img = image if s == 1.0 else np.asarray(
            Image.fromarray(image).resize((int(np.round(w * s)), int(np.round(h * s))), Image.BICUBIC))
        x = torch.from_numpy(normalize(img).transpose(2, 0, 1).copy())[None]
        x = torch.cat([x, x.flip(-1)])
        f = x
        with torch.no_grad():
            for stage in reference_stages(net):
                f = stage(f)
            cam = F.relu(F.conv2d(f, weight))
        cam = cam[0] + cam[1].flip(-1)
        total = total + F.interpolate(cam[None], strided, mode="bilinear", align_corners=False)[0]
    return total


@pytest.mark.parametrize("depth", [18, 50])
def test_cam_net_matches_strides_2221_without_dilation(depth):
    torch.manual_seed(depth)
    state = timm.create_model(f"resnet{depth}").state_dict()
    ours = CAMNet(4, f"resnet{depth}", pretrained=False)
    ours.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    ours.eval()
    ref = reference_resnet(depth, state)
    image = gradient_image(70, 90, seed=depth)
    scales = (1.0, 0.5, 1.5)
    got = cams_for_batch(ours, [image], [[1, 2, 3, 4]], scales, torch.device("cpu"), False)[0]["cam"]
    expect = reference_cams(ref, ours.classifier.weight, image, scales)
    expect = expect / (expect.flatten(1).max(1).values[:, None, None] + 1e-5)
    np.testing.assert_allclose(got.astype(np.float32), expect.numpy(), atol=2e-3)  # float16 storage
    # and the raw features exactly, where timm's dilation would differ
    x = torch.randn(1, 3, 64, 64)
    f = x
    with torch.no_grad():
        for stage in reference_stages(ref):
            f = stage(f)
        torch.testing.assert_close(ours.features(x), f, rtol=1e-5, atol=1e-5)


def test_cam_training_from_scratch_trains_everything():
    net = CAMNet(3, "resnet18", pretrained=False).train()
    net(torch.randn(2, 3, 48, 48)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert all(m.training for m in net.modules())


class ReferenceEdge(nn.Module):
    """IRNet's EdgeDisplacement edge branch (BES): per stage conv1x1(32) -> GroupNorm(4) -> Upsample(factor)
    -> ReLU, cropped to stage 2's size, concatenated, conv1x1 with bias."""

    def __init__(self, net: nn.Module, widths: list[int]):
        super().__init__()
        self.stages = reference_stages(net)
        factors = (1, 1, 2, 4, 4)
        self.edges = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, 32, 1, bias=False), nn.GroupNorm(4, 32),
                          *([nn.Upsample(scale_factor=f, mode="bilinear", align_corners=False)] if f > 1 else []),
                          nn.ReLU(inplace=True))
            for c, f in zip(widths, factors))
        self.fuse = nn.Conv2d(160, 1, 1, bias=True)

    def forward(self, x):
        feats, f = [], x
        for stage in self.stages:
            f = stage(f)
            feats.append(f)
        outs = [e(f) for e, f in zip(self.edges, feats)]
        h, w = outs[1].shape[-2:]
        return self.fuse(torch.cat([o[..., :h, :w] for o in outs], 1))


def test_boundary_net_matches_irnet_branches():
    torch.manual_seed(0)
    state = timm.create_model("resnet50").state_dict()
    ours = BoundaryNet("resnet50", pretrained=False)
    ours.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    for b in ours.branches:  # non-trivial GroupNorm affine
        nn.init.normal_(b.norm.weight, 1, 0.3)
        nn.init.normal_(b.norm.bias, 0, 0.3)
    ref = ReferenceEdge(reference_resnet(50, state), [64, 256, 512, 1024, 2048])
    for e, b in zip(ref.edges, ours.branches):
        e[0].load_state_dict(b.conv.state_dict())
        e[1].load_state_dict(b.norm.state_dict())
    ref.fuse.load_state_dict(ours.fuse.state_dict())
    ours.eval(), ref.eval()
    for size in ((64, 64), (70, 93)):
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_boundary_label_downsampling_takes_cell_centres():
    """PIL nearest at 1/4: output pixel i reads input pixel 4i+2 (the reference's pil_rescale)."""
    labels = np.random.default_rng(0).integers(0, 251, (64, 48)).astype(np.uint8)
    small = downsample_labels(labels, (16, 12))
    np.testing.assert_array_equal(small, labels[2::4, 2::4])
    ref = np.asarray(Image.fromarray(labels).resize((12, 16), Image.NEAREST))
    np.testing.assert_array_equal(small, ref)


def reference_saliency_edges(sal: np.ndarray) -> np.ndarray:
    """SBE's release: max-normalised saliency, conv2d with the 3x3 Sobel pair without padding, magnitude,
    bilinear back to H x W."""
    s = torch.from_numpy(sal / sal.max())[None, None]
    kx = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=torch.float64)[None, None]
    ky = torch.tensor([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=torch.float64)[None, None]
    edge = torch.sqrt(F.conv2d(s, kx) ** 2 + F.conv2d(s, ky) ** 2)
    return F.interpolate(edge, sal.shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def test_certain_boundary_matches_sbe_release():
    rng = np.random.default_rng(1)
    sal = np.zeros((41, 57))
    sal[8:30, 10:40] = 1.0
    sal += rng.uniform(0, 0.2, sal.shape)
    got, ref = saliency_edges(sal), reference_saliency_edges(sal)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got > 0.5, ref > 0.5)


def test_walk_crf_uses_bes_label_unary():
    """BES's crf_inference_label(img, rw_pred, sxy=20): unary_from_labels(gt_prob 0.7, zero_unsure False),
    Gaussian sxy 3 compat 3, bilateral sxy 20 srgb 5 compat 10, 10 iterations."""
    dcrf = pytest.importorskip("pydensecrf.densecrf")
    from pydensecrf.utils import unary_from_labels

    from salmask.refine.stage import crf_refine, scores_to_index

    rng = np.random.default_rng(2)
    h, w = 40, 50
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[:, 25:] //= 3
    scores = rng.uniform(0, 1, (2, h, w)).astype(np.float32)
    index = scores_to_index(scores, 0.25)
    got = crf_refine(image, index, scores, 0.25, "labels")

    d = dcrf.DenseCRF2D(w, h, 3)
    d.setUnaryEnergy(unary_from_labels(index, 3, gt_prob=0.7, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=20, srgb=5, rgbim=np.ascontiguousarray(image), compat=10)
    ref = np.argmax(np.array(d.inference(10)).reshape(3, h, w), axis=0)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("o", [0.0, 0.2, 0.39, 0.4, 0.41, 0.6, 1.0])
def test_selector_forms_agree_on_ties(o):
    """The most salient class (n* = 1) at the default tau = 1 + t0: the α* form replaces exactly when
    Algorithm 1 does — at o = t0 neither does (strict >)."""
    assert (alpha_star(o, 1.0, 1.4) > 0) == sep_replaces(o, True, 0.4, 0.2)
