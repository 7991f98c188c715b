"""The BES/IRNet CAM classifier: a backbone at output stride 16, attention pooling, 1x1 bias-free classifier."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from salmask.models.backbones import FixedBNNet, create_backbone, params_through, stage_module

FROZEN_THROUGH = 2
"""With ImageNet weights, stages 0..2 (ResNet: conv1, layer1, layer2) get no gradient (IRNet/BES)."""


class CAMNet(FixedBNNet):
    """Multi-label classifier whose 1x1 classifier applied densely gives CAMs.

    ``forward(x [B,3,H,W]) -> logits [B,C]`` uses attention pooling (training); ``cams(x) -> [B,C,H/16,W/16]``
    gives ReLU(classifier ⊛ features).

    The backbone has strides (2,2,2,1) with every dilation 1 (IRNet/BES). With ImageNet weights, as in the
    reference, the features are detached after stage 2 (so the stem and stages 1–2 never train) and every
    BatchNorm keeps its ImageNet statistics while the affine parameters of stages 3–4 train. From scratch
    everything trains, BatchNorm statistics included. Frozen parameters have ``requires_grad=False`` from
    construction on, before any DDP wrapping.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", pretrained: bool | str = False,
                 attention_k: float = 1e-3):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained=pretrained, output_stride=16, out_indices=(4,),
                                        dilated=False)
        self.classifier = nn.Conv2d(self.backbone.feature_info.channels()[-1], num_classes, 1, bias=False)
        self.attention_k = attention_k
        self.fixed_bn = bool(pretrained)
        if self.fixed_bn:
            for p in params_through(self.backbone, FROZEN_THROUGH):
                p.requires_grad_(False)
            stage_module(self.backbone, FROZEN_THROUGH).register_forward_hook(lambda m, i, out: out.detach())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] -> [B,D,ceil(H/16),ceil(W/16)]."""
        return self.backbone(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        b, d, h, w = f.shape
        attn = torch.softmax(self.attention_k * f.flatten(2), dim=-1).detach() * (h * w)
        pooled = (f.flatten(2) * attn).mean(-1)
        return self.classifier(pooled[:, :, None, None]).flatten(1)

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.conv2d(self.features(x), self.classifier.weight))

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Backbone at ``lr``, classifier at 10x (BES); frozen parameters left out."""
        bb = [p for p in self.backbone.parameters() if p.requires_grad]
        return [{"params": bb, "lr": lr, "weight_decay": weight_decay},
                {"params": list(self.classifier.parameters()), "lr": 10 * lr, "weight_decay": weight_decay}]
