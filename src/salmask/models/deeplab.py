"""Segmentation networks (docs/method.md#segmentation-network): DeepLab-v2 and DeepLab-v3+ on timm backbones.

* :class:`DeepLabV2` — SBE's setting: ResNet-101 at output stride 8, ASPP of four 3×3 convolutions with
  dilation 6/12/18/24 that each predict class logits, summed. Logits at stride 8.
* :class:`DeepLabV3Plus` — the SOD paper's setting: ResNet-101 / ResNeSt-101 / ResNeSt-269, torchvision's
  ASPP (1×1, three dilated 3×3, image pooling) on the last stage, decoder fusing the stride-4 features
  (projected to 48 channels) through two 3×3 convolutions. Logits at stride 4. ``norm="gn"`` swaps
  every BatchNorm of the head for GroupNorm (the backbone keeps its own norms).

Both return logits smaller than the input — ``ceil(H / stride)`` for ResNet-like backbones; training
(:mod:`salmask.seg.train`) and inference (:mod:`salmask.seg.inference`) upsample them bilinearly to the
label / input size. Every model has a ``backbone`` attribute; everything else is the head,
which is how :func:`param_groups` splits learning rates.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from salmask.errors import ConfigError
from salmask.models.backbones import FixedBNNet, create_backbone, freeze_batchnorm

V2_RATES = (6, 12, 18, 24)
V3_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
NORMS = ("bn", "gn")


class ASPPSum(nn.Module):
    """DeepLab-v2's ASPP: parallel dilated 3×3 convolutions to class logits, summed.

    forward: feats [B, C_in, h, w] -> logits [B, num_classes, h, w].
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = V2_RATES):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in rates)
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return sum(branch(x) for branch in self.branches)


class DeepLabV2(FixedBNNet):
    """DeepLab-v2: backbone's last stage -> :class:`ASPPSum`.

    With ImageNet weights the backbone's BatchNorm keeps its statistics and affine parameters (SBE's
    recipe), fixed from construction on, before any DDP wrapping.

    forward: x [B, 3, H, W] -> logits [B, num_classes, ceil(H/s), ceil(W/s)], s = ``output_stride`` (8).
    """

    def __init__(self, backbone: str = "resnet101", num_classes: int = 21, *,
                 pretrained: bool | str = False, output_stride: int = 8,
                 rates: Sequence[int] = V2_RATES):
        super().__init__()
        _check(num_classes, output_stride, (8, 16))
        self.backbone = create_backbone(backbone, pretrained=pretrained, output_stride=output_stride,
                                        out_indices=(4,))
        self.head = ASPPSum(self.backbone.feature_info.channels()[-1], num_classes, rates)
        self.fixed_bn = bool(pretrained)
        if self.fixed_bn:
            freeze_batchnorm(self.backbone)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x)[-1])


class DeepLabV3Plus(FixedBNNet):
    """DeepLab-v3+: ASPP on the last stage, decoder with the stride-4 stage.

    forward: x [B, 3, H, W] -> logits [B, num_classes, ceil(H/4), ceil(W/4)]. ``output_stride`` (16 or 8)
    sets the dilation of the last stage and the ASPP rates (6/12/18 at 16, doubled at 8). ``channels`` is
    the width of the ASPP output and of the decoder (256 in the paper); the two 3×3 decoder convolutions at
    stride 4 cost ``channels``² per pixel and dominate a light backbone's step.
    """

    def __init__(self, backbone: str = "resnet101", num_classes: int = 21, *,
                 pretrained: bool | str = False, output_stride: int = 16, norm: str = "bn", channels: int = 256):
        super().__init__()
        _check(num_classes, output_stride, tuple(V3_RATES))
        if norm not in NORMS:
            raise ConfigError(f"unknown norm {norm!r} for deeplabv3plus; choices: {', '.join(NORMS)}")
        self.backbone = create_backbone(backbone, pretrained=pretrained, output_stride=output_stride,
                                        out_indices=(1, 4))
        low_reduction = self.backbone.feature_info.reduction()[0]
        if low_reduction != 4:
            raise ConfigError(f"backbone {backbone!r}: stage 1 has stride {low_reduction}, the "
                              f"DeepLab-v3+ decoder needs stride-4 features")
        low_ch, high_ch = self.backbone.feature_info.channels()
        if int(channels) < 1:
            raise ConfigError(f"decoder channels must be >= 1, got {channels}")
        self.aspp = ASPP(high_ch, V3_RATES[output_stride], channels)
        self.low_proj = _conv_bn_relu(low_ch, 48, 1)
        self.decoder = nn.Sequential(_conv_bn_relu(channels + 48, channels, 3), _conv_bn_relu(channels, channels, 3))
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        for m in (self.aspp, self.low_proj, self.decoder, self.classifier):
            for conv in m.modules():
                if isinstance(conv, nn.Conv2d):
                    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if norm == "gn":
            for m in (self.aspp, self.low_proj, self.decoder):
                _batchnorm_to_groupnorm(m)

    def forward(self, x: Tensor) -> Tensor:
        low, high = self.backbone(x)
        high = self.aspp(high)
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        fused = self.decoder(torch.cat([high, self.low_proj(low)], dim=1))
        return self.classifier(fused)


MODELS: dict[str, type[nn.Module]] = {"deeplabv2": DeepLabV2, "deeplabv3plus": DeepLabV3Plus}


def build_segmenter(arch: str, *, backbone: str, num_classes: int, pretrained: bool | str = False,
                    output_stride: int | None = None, norm: str = "bn", channels: int = 256) -> nn.Module:
    """Build a registered segmentation network; ``output_stride=None`` keeps the arch's default
    (8 for deeplabv2, 16 for deeplabv3plus). DeepLab-v2's head has no normalisation, so it takes only
    ``norm="bn"`` (the backbone's own)."""
    if arch not in MODELS:
        raise ConfigError(f"unknown segmentation arch {arch!r}; choices: {', '.join(MODELS)}")
    kwargs: dict = dict(backbone=backbone, num_classes=num_classes, pretrained=pretrained)
    if output_stride is not None:
        kwargs["output_stride"] = output_stride
    if arch == "deeplabv3plus":
        kwargs.update(norm=norm, channels=channels)
    elif norm != "bn":
        raise ConfigError(f"norm={norm!r} is only available for deeplabv3plus")
    elif channels != 256:
        raise ConfigError("decoder channels are only configurable for deeplabv3plus (DeepLab-v2 has no decoder)")
    return MODELS[arch](**kwargs)


def param_groups(model: nn.Module, lr: float, head_mult: float = 10.0) -> list[dict]:
    """SGD parameter groups: ``model.backbone`` at ``lr``, the rest (the head) at ``lr * head_mult``.

    Only trainable parameters are listed (frozen BatchNorm/stem are left out), each exactly once; a group
    left empty (a frozen backbone) is dropped. Groups carry a ``name`` ("backbone"/"head") for logging.
    """
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    backbone, head = [], []
    for p in model.parameters():
        if p.requires_grad:
            (backbone if id(p) in backbone_ids else head).append(p)
    groups = [{"name": "backbone", "params": backbone, "lr": lr},
              {"name": "head", "params": head, "lr": lr * head_mult}]
    return [g for g in groups if g["params"]]


def msc_logits(model: nn.Module, x: Tensor, scales: Sequence[float] = (0.5, 0.75)) -> list[Tensor]:
    """DeepLab-v2's multi-scale inputs for training (SBE's recipe).

    x [B, 3, H, W] -> ``[logits(x), logits(x at s) for s in scales, max]``: each at its own size
    [B, K, h_s, w_s], the last the element-wise max of all of them resized to the first one's size.
    The training loss is the sum of the cross-entropies of every element, each upsampled (bilinear) to
    the labels' size.
    """
    base = model(x)
    pyramid = [model(F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False))
               for s in scales]
    resized = [F.interpolate(p, size=base.shape[-2:], mode="bilinear", align_corners=False)
               for p in pyramid]
    fused = torch.stack([base, *resized]).amax(dim=0)
    return [base, *pyramid, fused]


def _check(num_classes: int, output_stride: int, strides: tuple[int, ...]) -> None:
    if int(num_classes) < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if output_stride not in strides:
        raise ConfigError(f"output_stride {output_stride} not supported; choices: {strides}")


def _conv_bn_relu(in_ch: int, out_ch: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


def _batchnorm_to_groupnorm(module: nn.Module, groups: int = 32) -> None:
    """Replace every BatchNorm2d under ``module`` in place by GroupNorm (gcd(32, C) groups: 48 -> 16)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            setattr(module, name, nn.GroupNorm(math.gcd(groups, c), c))
        else:
            _batchnorm_to_groupnorm(child, groups)
