"""The seed's RGB-SOD saliency network (docs/method.md#saliency ``rgbsod``) and its losses.

Swin or EfficientNet-Lite encoder (four stages, strides 4/8/16/32) → per-stage 1×1 reductions R1–R4 → an
edge-aware module that gates the deeper stages by a pooled stage-1 vector and predicts an edge map → four
phase-aware (PATM) decoder blocks, top-down, each upsampling ×2 with a transposed convolution. Side outputs s1 (finest, stride 2)
to s4 (coarsest, stride 16) and the edge map are returned as logits at input size.
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from salmask.errors import ConfigError
from salmask.models.backbones import (adapt_input_normalisation, load_local_weights, resolve_pretrained,
                                      timm_name)
from salmask.models.hub import timm_weight_kwargs

LITE_ENCODERS = tuple(f"tf_efficientnet_lite{k}" for k in range(5))
"""Convolutional encoders beside Swin: timm's EfficientNet-Lite with TF "same" padding."""


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


def phase_expand(x: torch.Tensor) -> torch.Tensor:
    """[B,C,h,w] → [B,2C,h,w]: amplitude x modulated by its own phase, [x·cos x, x·sin x]."""
    return torch.cat([x * torch.cos(x), x * torch.sin(x)], dim=1)


class EdgeAwareModule(nn.Module):
    """Fuse the four reduced stages at stage-1 resolution into an edge feature and a one-channel edge map.

    Stages 2–4 are upsampled to stage 1's size and each is scaled channel-wise by a small MLP (sigmoid gate)
    driven by the globally pooled stage-1 vector, so fine-detail context decides how much of each deeper
    stage enters the edge branch.
    """

    def __init__(self, channels: int, num_deep: int = 3, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(channels // 4, 8)
        self.gates = nn.ModuleList(
            nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
            for _ in range(num_deep))
        self.fuse = conv_bn_relu(channels, channels)
        self.head = nn.Conv2d(channels, 1, 1)

    def forward(self, r1: torch.Tensor, deeper: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """r1 [B,C,h1,w1], deeper [B,C,hk,wk] (k=2..4) → (edge feature [B,C,h1,w1], edge logits [B,1,h1,w1])."""
        v = r1.mean(dim=(2, 3))
        total = r1
        for gate, r in zip(self.gates, deeper):
            g = torch.sigmoid(gate(v))[:, :, None, None]
            total = total + g * F.interpolate(r, size=r1.shape[-2:], mode="bilinear", align_corners=False)
        feat = self.fuse(total)
        return feat, self.head(feat)


class PhaseAwareBlock(nn.Module):
    """PATM decoder block: [B,in_ch,h,w] → [B,out_ch,2h,2w].

    Parallel 3×3 and dilated 3×3 convolutions, each expanded phase-aware to 2·out_ch channels, summed,
    fused back to out_ch by a 3×3 convolution, dropout, then a 2×2 stride-2 transposed convolution.
    """

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 2, dropout: float = 0.5):
        super().__init__()
        self.local = nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch))
        self.dilated = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(out_ch))
        self.fuse = conv_bn_relu(2 * out_ch, out_ch)
        self.drop = nn.Dropout(dropout)
        self.up = nn.Sequential(nn.ConvTranspose2d(out_ch, out_ch, 2, stride=2, bias=False),
                                nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = phase_expand(self.local(x)) + phase_expand(self.dilated(x))
        return self.up(self.drop(self.fuse(y)))


class RGBSOD(nn.Module):
    """Swin (or EfficientNet-Lite, :data:`LITE_ENCODERS`) encoder + edge-aware module + PATM decoder; see the
    module docstring.

    ``encoder_kwargs`` are passed to ``timm.create_model`` (e.g. a tiny Swin for CPU tests:
    ``dict(embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 6), window_size=4)`` with img_size=64).
    Inputs must be ``img_size``×``img_size`` (Swin's attention windows are built for that size).
    """

    def __init__(self, encoder: str = "swin_base_patch4_window7_224", *, pretrained: bool | str = False,
                 img_size: int = 224, encoder_kwargs: dict | None = None, decoder_channels: int = 64):
        super().__init__()
        kwargs = dict(encoder_kwargs or {})
        if kwargs.pop("img_size", img_size) != img_size:
            raise ConfigError("encoder_kwargs['img_size'] differs from img_size; pass only img_size")
        encoder = timm_name(encoder)
        if encoder not in timm.list_models():
            raise ConfigError(f"unknown encoder {encoder!r} (not in timm's registry)")
        source = resolve_pretrained(pretrained, encoder)
        # Swin checkpoints need timm's own key filter (relative-position tables), so timm loads those files.
        via_timm = isinstance(source, Path) and "swin" in encoder
        extra = {"pretrained_cfg_overlay": {"file": str(source)}} if via_timm else \
            timm_weight_kwargs(encoder, source is True)
        # Swin's four stages are strides 4..32 and its windows are built for img_size; an EfficientNet's
        # feature 0 is its stride-2 stem, and it takes any input size.
        layout = dict(out_indices=(1, 2, 3, 4)) if encoder in LITE_ENCODERS else \
            dict(out_indices=(0, 1, 2, 3), img_size=img_size)
        try:
            self.encoder = timm.create_model(encoder, pretrained=source is True or via_timm, features_only=True,
                                             **layout, **extra, **kwargs)
        except (RuntimeError, OSError) as e:
            if source is True:
                raise ConfigError(
                    f"could not fetch ImageNet weights for {encoder!r} ({str(e).splitlines()[0][:120]}); set "
                    f"sod.pretrained to a local checkpoint (a timm .pth of that encoder) or to false") from None
            raise
        if isinstance(source, Path) and not via_timm:
            load_local_weights(self.encoder, source)
        adapt_input_normalisation(self.encoder)
        self.img_size = img_size
        # timm's Swin features are NHWC; convolutional encoders' are NCHW.
        self.nhwc = str(getattr(self.encoder, "output_fmt", "NCHW")).endswith("NHWC")
        widths = self.encoder.feature_info.channels()
        c = decoder_channels
        self.reduce = nn.ModuleList(conv_bn_relu(w, c, kernel=1) for w in widths)  # the seed's R1–R4
        self.edge = EdgeAwareModule(c, num_deep=len(widths) - 1)
        self.blocks = nn.ModuleList([
            PhaseAwareBlock(3 * c, c),  # block 1: [d2, r1, edge feature], stride 4 → 2
            PhaseAwareBlock(2 * c, c),  # block 2: [d3, r2], stride 8 → 4
            PhaseAwareBlock(2 * c, c),  # block 3: [d4, r3], stride 16 → 8
            PhaseAwareBlock(c, c),      # block 4: r4, stride 32 → 16
        ])
        self.side_heads = nn.ModuleList(nn.Conv2d(c, 1, 1) for _ in range(4))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B,3,H,W] → four NCHW stage features [B,C_k,H/2^(k+1),W/2^(k+1)], k=1..4."""
        feats = self.encoder(x)
        return [f.permute(0, 3, 1, 2).contiguous() for f in feats] if self.nhwc else list(feats)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """x [B,3,S,S] normalised → {"side": [s1..s4 logits, each [B,1,S,S]], "edge": logits [B,1,S,S]}."""
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"RGBSOD expects [B,3,{self.img_size},{self.img_size}], got {list(x.shape)}")
        r1, r2, r3, r4 = (red(f) for red, f in zip(self.reduce, self.encode(x)))
        edge_feat, edge = self.edge(r1, [r2, r3, r4])
        d4 = self.blocks[3](r4)
        d3 = self.blocks[2](torch.cat([d4, r3], dim=1))
        d2 = self.blocks[1](torch.cat([d3, r2], dim=1))
        d1 = self.blocks[0](torch.cat([d2, r1, edge_feat], dim=1))
        size = x.shape[-2:]
        side = [F.interpolate(head(d), size=size, mode="bilinear", align_corners=False)
                for head, d in zip(self.side_heads, (d1, d2, d3, d4))]
        edge = F.interpolate(edge, size=size, mode="bilinear", align_corners=False)
        return {"side": side, "edge": edge}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,S,S] → saliency [B,1,S,S] in [0,1] (sigmoid of the finest side output s1)."""
        return torch.sigmoid(self.forward(x)["side"][0])


def structure_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """F3Net's structure loss: boundary-weighted BCE + weighted IoU; logits, mask [B,1,H,W] → scalar.

    Pixels whose 31×31 neighbourhood mean differs from their own label (near boundaries) weigh up to 6×.
    """
    weight = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    wbce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    wbce = (weight * wbce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))
    prob = torch.sigmoid(logits)
    inter = (prob * mask * weight).sum(dim=(2, 3))
    union = ((prob + mask) * weight).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def mask_edges(mask: torch.Tensor, width: int = 1) -> torch.Tensor:
    """Morphological gradient (dilation − erosion, square structuring element of side 2·width+1).

    mask [B,1,H,W] in [0,1] → edges [B,1,H,W] in [0,1]: a band ``width`` pixels either side of each
    boundary (one pixel inside and one outside the object for width=1); the image border is not an edge.
    """
    k = 2 * width + 1
    dilated = F.max_pool2d(mask, k, stride=1, padding=width)
    eroded = -F.max_pool2d(-mask, k, stride=1, padding=width)
    return dilated - eroded


def sod_loss(outputs: dict, mask: torch.Tensor, edge_weight: float = 1.0
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ structure_loss(s_k, mask) over the four side outputs + edge_weight · BCE(edge, mask_edges(mask)).

    outputs: RGBSOD's dict; mask [B,1,H,W] in [0,1]. Returns (total, {"s1".."s4", "edge", "total"} floats).
    """
    if mask.shape != outputs["edge"].shape:
        raise ValueError(f"mask shape {list(mask.shape)} does not match outputs {list(outputs['edge'].shape)}")
    mask = mask.to(outputs["edge"].dtype)
    parts = {f"s{k + 1}": structure_loss(s, mask) for k, s in enumerate(outputs["side"])}
    parts["edge"] = F.binary_cross_entropy_with_logits(outputs["edge"], mask_edges(mask))
    total = sum(parts[f"s{k + 1}"] for k in range(len(outputs["side"]))) + edge_weight * parts["edge"]
    return total, {**{k: v.item() for k, v in parts.items()}, "total": total.item()}
