"""The BES/IRNet CAM classifier: ResNet at output stride 16, attention pooling, 1x1 bias-free classifier."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from salmask.models.backbones import create_backbone, freeze_batchnorm, is_stem


class CAMNet(nn.Module):
    """Multi-label classifier whose 1x1 classifier applied densely gives CAMs.

    ``forward(x [B,3,H,W]) -> logits [B,C]`` uses attention pooling (training); ``cams(x) -> [B,C,H/16,W/16]``
    gives ReLU(classifier ⊛ features).
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50", pretrained: bool | str = False,
                 attention_k: float = 1e-3):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained=pretrained, output_stride=16, out_indices=(4,))
        self.classifier = nn.Conv2d(self.backbone.feature_info.channels()[-1], num_classes, 1, bias=False)
        self.attention_k = attention_k
        self.frozen_stem = bool(pretrained)
        if self.frozen_stem:
            for name, p in self.backbone.named_parameters():
                if is_stem(name):
                    p.requires_grad_(False)

    def train(self, mode: bool = True) -> "CAMNet":
        super().train(mode)
        if self.frozen_stem:
            freeze_batchnorm(self.backbone)
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] -> [B,D,H/16,W/16]."""
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
