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
from salmask.data.transforms import downsample_labels
from salmask.models.boundary_net import BoundaryNet
from salmask.models.cam_net import CAMNet

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


def reference_cams(net: nn.Module, weight: torch.Tensor, image: np.ndarray, scales) -> tuple[torch.Tensor, torch.Tensor]:
    """IRNet's make_cam for one image: per scale, the uint8 image rescaled (PIL bicubic), normalised (÷255,
    ImageNet mean/std), with its flip; ReLU(conv(features, w)) flip-summed, upsampled to the stride-4 grid and
    to the stride-16-rounded size cropped to the image, summed over scales (not yet normalised)."""
    h, w = image.shape[:2]
    strided = ((h + 3) // 4, (w + 3) // 4)
    up = (-(-h // 16) * 16, -(-w // 16) * 16)
    total = high = 0
    for s in scales:
        img = image if s == 1.0 else np.asarray(
            Image.fromarray(image).resize((int(np.round(w * s)), int(np.round(h * s))), Image.BICUBIC))
        img = (img / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
        x = torch.from_numpy(img.astype(np.float32).transpose(2, 0, 1).copy())[None]
        x = torch.cat([x, x.flip(-1)])
        f = x
        with torch.no_grad():
            for stage in reference_stages(net):
                f = stage(f)
            cam = F.relu(F.conv2d(f, weight))
        cam = cam[0] + cam[1].flip(-1)
        total = total + F.interpolate(cam[None], strided, mode="bilinear", align_corners=False)[0]
        high = high + F.interpolate(cam[None], up, mode="bilinear", align_corners=False)[0, :, :h, :w]
    return total, high


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
    got = cams_for_batch(ours, [image], [[1, 2, 3, 4]], scales, torch.device("cpu"), False)[0]
    for name, expect in zip(("cam", "high_res"), reference_cams(ref, ours.classifier.weight, image, scales)):
        expect = expect / (expect.flatten(1).max(1).values[:, None, None] + 1e-5)
        np.testing.assert_allclose(got[name].astype(np.float32), expect.numpy(), atol=2e-3)  # float16 storage
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

    from salmask.refine.stage import crf_refine

    rng = np.random.default_rng(2)
    h, w = 40, 50
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[:, 25:] //= 3
    scores = rng.uniform(0, 1, (2, h, w)).astype(np.float32)
    index = np.argmax(np.concatenate([np.full((1, h, w), 0.25, np.float32), scores]), axis=0)  # IRNet's argmax
    got = crf_refine(image, index, scores, 0.25, "labels")

    d = dcrf.DenseCRF2D(w, h, 3)
    d.setUnaryEnergy(unary_from_labels(index, 3, gt_prob=0.7, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=20, srgb=5, rgbim=np.ascontiguousarray(image), compat=10)
    ref = np.argmax(np.array(d.inference(10)).reshape(3, h, w), axis=0)
    np.testing.assert_array_equal(got, ref)


def test_confident_maps_are_irnets_cam_to_ir_label():
    """The confident foreground/background map against IRNet's ``step/cam_to_ir_label.py`` (BES's is the same),
    written here on pydensecrf: argmax over [thres, CAMs] at 0.30 and 0.07, each through
    ``crf_inference_label`` (unary_from_labels gt_prob 0.7, zero_unsure False; Gaussian sxy 3 compat 3;
    bilateral sxy 50 srgb 5 compat 10; 10 iterations), keys [0, *classes]; the class where the foreground map
    has one, 0 where both say background, 255 (uncertain) elsewhere."""
    dcrf = pytest.importorskip("pydensecrf.densecrf")
    from pydensecrf.utils import unary_from_labels

    from salmask.boundary.labels import confident_map

    def crf_inference_label(img, labels, n_labels, t=10, gt_prob=0.7):
        h, w = img.shape[:2]
        d = dcrf.DenseCRF2D(w, h, n_labels)
        d.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=gt_prob, zero_unsure=False))
        d.addPairwiseGaussian(sxy=3, compat=3)
        d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(np.copy(img)), compat=10)
        return np.argmax(np.array(d.inference(t)).reshape((n_labels, h, w)), axis=0)

    rng = np.random.default_rng(6)
    h, w = 36, 52
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[:, 26:] //= 4
    cams = np.zeros((2, h, w), np.float32)
    cams[0, 4:30, 3:28] = 0.8
    cams[1, 10:34, 24:48] = 0.5
    cams += rng.uniform(0, 0.25, cams.shape).astype(np.float32)
    keys = np.pad(np.array([7, 12]), (1, 0), mode="constant")  # IRNet: its 0-based keys + 1
    fg_conf = keys[crf_inference_label(img, np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=0.30),
                                                      axis=0), keys.shape[0])]
    bg_conf = keys[crf_inference_label(img, np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=0.07),
                                                      axis=0), keys.shape[0])]
    conf = fg_conf.copy()
    conf[fg_conf == 0] = 255
    conf[bg_conf + fg_conf == 0] = 0
    got = confident_map(cams, np.array([7, 12]), img)
    assert set(np.unique(conf)) == {0, 7, 12, 255}
    np.testing.assert_array_equal(got, conf)


def algorithm_1(P: list[np.ndarray], S: list[np.ndarray], salient: list[bool], t0: float = 0.4,
                t1: float = 0.2) -> list[np.ndarray]:
    """Algorithm 1 of the SOD seed ("SOD Enhanced Pseudo-Labels for single class images"), line by line.

    ``P[k]``: the pseudo label of single-class image k (its class on the object, 0 elsewhere); ``S[k]``: its
    salient map, binary; ``salient[k]``: "object is salient". Line 9's "P̂_k ← S_k" gives the salient pixels
    the image's class.
    """
    L = len(P)
    P_hat = [None] * L
    for k in range(L):                                                    # 2: for k = 1 to L do
        P_hat[k] = P[k]                                                   # 3: P̂_k ← P_k
        if not S[k].any():                                                # 4: if S_k == 0_{H×W} then
            continue                                                      # 5:   continue
        o_S = np.sum(S[k] & (P[k] > 0)) / np.sum(S[k] | (P[k] > 0))       # 7: Intersect / union
        if salient[k] and o_S > t0:                                       # 8
            P_hat[k] = np.where(S[k], P[k].max(), 0).astype(np.uint8)     # 9: P̂_k ← S_k
        if not salient[k] and o_S > t0 + t1:                              # 11
            P_hat[k] = np.where(S[k], P[k].max(), 0).astype(np.uint8)     # 12: P̂_k ← S_k
    return P_hat


def alpha_star_form(P: np.ndarray, S: np.ndarray, n_star: float, tau: float = 1.4) -> np.ndarray:
    """The seed's α* = (IoU(P_CAM, P_S) + ‖S^c‖₂ / max‖S‖₂)_τ (0 unless above τ, at most 1) and
    P_final = argmax over (background, c) of (1 − α*)·P_CAM + α*·P_S, on a hard mask and a binary map."""
    c, fg = int(P.max()), P > 0
    a = np.sum(S & fg) / np.sum(S | fg) + n_star
    a = min(a, 1.0) if a > tau else 0.0
    p_cam = np.stack([1.0 - fg, fg * 1.0])
    p_s = np.stack([1.0 - S, S * 1.0])
    fused = (1 - a) * p_cam + a * p_s
    return np.where(fused[1] > fused[0], c, 0).astype(np.uint8)


def overlap_case(inter: int, union: int, cls: int = 3, side: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A side×side pseudo mask and binary saliency whose IoU is exactly inter/union: P on the first p pixels,
    S on pixels p − inter … union − 1 (row-major)."""
    p = (union + inter) // 2
    P = np.zeros(side * side, np.uint8)
    P[:p] = cls
    S = np.zeros(side * side, bool)
    S[p - inter:union] = True
    return P.reshape(side, side), S.reshape(side, side)


# (intersection, union): o at and around 0.25, 0.4, 0.5 and 0.6, both ends, and the empty map of line 4
OVERLAPS = [(24, 100), (25, 100), (1, 4), (26, 100), (39, 100), (40, 100), (2, 5), (41, 100), (49, 100), (50, 100),
            (1, 2), (51, 100), (59, 100), (60, 100), (3, 5), (61, 100), (0, 30), (19, 20), (0, 0)]


@pytest.mark.parametrize("salient", [True, False])
@pytest.mark.parametrize(("t0", "t1"), [(0.4, 0.2), (0.25, 0.25)])
def test_selector_is_algorithm_1_at_and_around_its_thresholds(salient, t0, t1):
    """salmask's Selector (``select_masks``, mode sep) against the literal Algorithm 1 on hand cases with o at,
    just below and just above t0 and t0 + t1: the same masks, so both compare with a strict ">". The seed's
    t0 = 0.4, t1 = 0.2, and 0.25 + 0.25, whose sum is exact in floating point (0.4 + 0.2 is not 0.6)."""
    from salmask import select_masks

    cases = [overlap_case(i, u) for i, u in OVERLAPS]
    P = [p for p, _ in cases]
    S = [s for _, s in cases]
    # the saliency binarised at 0.5: 0.51 is salient, 0.49 is not
    saliency = [np.where(s, 0.51, 0.49) for s in S]
    got, report = select_masks(P, saliency, [[3]] * len(P), t0=t0, t1=t1, salient_classes=[3] if salient else [])
    expect = algorithm_1(P, S, [salient] * len(P), t0, t1)
    for k, (g, e) in enumerate(zip(got, expect)):
        np.testing.assert_array_equal(g, e, err_msg=f"o = {OVERLAPS[k][0]}/{OVERLAPS[k][1]}")
    replaced = [not np.array_equal(e, p) for e, p in zip(expect, P)]
    assert report["replaced"] == sum(replaced) and 0 < sum(replaced) < len(P) - 3


def test_selector_alpha_form_is_the_seeds_formula_at_tau():
    """The α* form (τ = 1.4) of a set whose one class has n* = 1, against the seed's α* formula written out: the
    same masks at and around o = τ − n* = t0, and the same decisions as Algorithm 1 for a salient class."""
    from salmask import select_masks

    cases = [overlap_case(i, u) for i, u in OVERLAPS]
    P = [p for p, _ in cases]
    S = [s for _, s in cases]
    got, _ = select_masks(P, [s * 1.0 for s in S], [[3]] * len(P), mode="alpha", tau=1.4)
    literal = algorithm_1(P, S, [True] * len(P))
    for k, (g, p, s) in enumerate(zip(got, P, S)):
        if not s.any():  # line 4: no salient object, the image is skipped in both forms
            np.testing.assert_array_equal(g, p)
            continue
        np.testing.assert_array_equal(g, alpha_star_form(p, s, 1.0), err_msg=f"o = {OVERLAPS[k]}")
        np.testing.assert_array_equal(g, literal[k], err_msg=f"o = {OVERLAPS[k]}")
