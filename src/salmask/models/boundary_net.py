"""The BES/IRNet boundary network: five backbone stages fused at stride 4 into one boundary logit map."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from salmask.models.backbones import FixedBNNet, create_backbone


class Branch(nn.Module):
    """One stage's side branch (IRNet's ``fc_edge*``): 1x1 conv to 32 channels, GroupNorm(4), upsampled by
    the stage's fixed ``factor`` to stride 4, then ReLU. [B,C,h,w] -> [B,32,h·factor,w·factor]."""

    def __init__(self, cin: int, factor: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, 32, 1, bias=False)
        self.norm = nn.GroupNorm(4, 32)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        if self.factor > 1:
            x = F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)
        return F.relu(x)


class BoundaryNet(FixedBNNet):
    """``forward(x [B,3,H,W]) -> logits [B,1,ceil(H/4),ceil(W/4)]``.

    The backbone (strides (2,2,2,1), no dilation, as the CAM net) gives five stages at strides 4 (the stem
    after a 3x3 max-pool, IRNet's stage 1), 4, 8, 16, 16; each branch brings its stage to stride 4, the
    branches are cropped to the stride-4 grid, concatenated (160 channels) and fused by a 1x1 convolution
    with bias. With ImageNet weights the backbone is frozen, as in the reference: only the branches and the
    fusing convolution train. Initialised from a CAM classifier trained from scratch (``freeze_backbone=False``)
    it is fine-tuned too, since such features were never taught anything about edges.
    """

    def __init__(self, backbone: str = "resnet50", pretrained: bool | str = False, freeze_backbone: bool = True):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained=pretrained, output_stride=16, dilated=False)
        self.freeze_backbone = self.fixed_bn = freeze_backbone
        for p in self.backbone.parameters():
            p.requires_grad_(not freeze_backbone)
        chans = self.backbone.feature_info.channels()
        strides = [max(4, r) for r in self.backbone.feature_info.reduction()]
        self.branches = nn.ModuleList(Branch(c, s // 4) for c, s in zip(chans, strides))
        self.fuse = nn.Conv2d(32 * len(chans), 1, 1, bias=True)

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
        outs = [b(f)[..., :h4, :w4] for b, f in zip(self.branches, feats)]
        return self.fuse(torch.cat(outs, 1))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Flip-averaged boundary probability [B,1,ceil(H/4),ceil(W/4)] (logits averaged, then sigmoid)."""
        both = self(torch.cat([x, x.flip(-1)]))
        b = x.shape[0]
        return torch.sigmoid((both[:b] + both[b:].flip(-1)) / 2)
