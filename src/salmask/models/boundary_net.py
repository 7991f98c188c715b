"""The BES/IRNet boundary network: five backbone stages fused at stride 4 into one boundary logit map."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from salmask.models.backbones import create_backbone, freeze_batchnorm


def _branch(cin: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, 32, 1, bias=False), nn.GroupNorm(4, 32), nn.ReLU(inplace=True))


class BoundaryNet(nn.Module):
    """``forward(x [B,3,H,W]) -> logits [B,1,ceil(H/4),ceil(W/4)]``.

    With ImageNet weights the backbone is frozen, as in the reference: only the five 1x1 branches (to 32
    channels, GroupNorm(4), ReLU, upsampled to stride 4) and the fusing 1x1 convolution train. Initialised
    from a CAM classifier trained from scratch (``freeze_backbone=False``) it is fine-tuned too, since
    such features were never taught anything about edges.
    """

    def __init__(self, backbone: str = "resnet50", pretrained: bool | str = False, freeze_backbone: bool = True):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained=pretrained, output_stride=16)
        self.freeze_backbone = freeze_backbone
        for p in self.backbone.parameters():
            p.requires_grad_(not freeze_backbone)
        chans = self.backbone.feature_info.channels()
        self.branches = nn.ModuleList(_branch(c) for c in chans)
        self.fuse = nn.Conv2d(32 * len(chans), 1, 1, bias=True)

    def train(self, mode: bool = True) -> "BoundaryNet":
        super().train(mode)
        if self.freeze_backbone:
            freeze_batchnorm(self.backbone)
        return self

    def load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        """Copy backbone weights from a CAMNet state dict (keys ``backbone.*``); stage-5 keys may be absent."""
        own = self.backbone.state_dict()
        picked = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        missing = [k for k in own if k not in picked]
        if len(missing) == len(own):
            raise ValueError("the CAM checkpoint has no backbone weights matching the boundary backbone")
        self.backbone.load_state_dict({**own, **{k: v for k, v in picked.items() if k in own}})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h4, w4 = -(-x.shape[2] // 4), -(-x.shape[3] // 4)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            feats = self.backbone(x)
        feats[0] = F.max_pool2d(feats[0], 3, 2, 1)  # the stem at stride 2 -> IRNet's stage 1 (after maxpool)
        outs = [F.interpolate(b(f), (h4, w4), mode="bilinear", align_corners=False)
                for b, f in zip(self.branches, feats)]
        return self.fuse(torch.cat(outs, 1))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Flip-averaged boundary probability [B,1,ceil(H/4),ceil(W/4)] (logits averaged, then sigmoid)."""
        both = self(torch.cat([x, x.flip(-1)]))
        b = x.shape[0]
        return torch.sigmoid((both[:b] + both[b:].flip(-1)) / 2)
