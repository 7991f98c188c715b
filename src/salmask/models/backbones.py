"""timm backbones at a chosen output stride, with real pretrained loading.

``pretrained`` is ``False`` (random init), ``True`` (timm's normal hub mechanism) or a path to a local
checkpoint file (a timm/torchvision state dict, ``.pth``/``.safetensors``), loaded through timm's
``pretrained_cfg_overlay`` so the same key remapping applies.
"""
from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from torch import nn

from salmask.errors import ConfigError, InputError

ALIASES = {
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "resnest50": "resnest50d",
    "resnest101": "resnest101e",
    "resnest269": "resnest269e",
}


def resolve_pretrained(pretrained: bool | str | None) -> tuple[bool, dict]:
    """Turn the user's ``pretrained`` value into timm's (pretrained, pretrained_cfg_overlay)."""
    if pretrained in (None, False, "", "none", "false"):
        return False, {}
    if pretrained is True or pretrained in ("true", "imagenet"):
        return True, {}
    path = Path(os.path.expanduser(str(pretrained)))
    if not path.is_file():
        raise InputError(path, "pretrained checkpoint not found")
    return True, {"pretrained_cfg_overlay": {"file": str(path)}}


def create_backbone(name: str, *, pretrained: bool | str | None = False, output_stride: int = 16,
                    out_indices: tuple[int, ...] = (0, 1, 2, 3, 4)) -> nn.Module:
    """A timm ``features_only`` model returning a list of feature maps.

    For ResNet-like names the five stages are stem (stride 2), layer1 (4), layer2 (8), layer3 (16) and
    layer4 (``output_stride``; dilated when 16 or 8). ``module.feature_info.channels()`` gives widths.
    """
    timm_name = ALIASES.get(name, name)
    if timm_name not in timm.list_models():
        raise ConfigError(f"unknown backbone {name!r} (not in timm's registry)")
    use_pretrained, extra = resolve_pretrained(pretrained)
    kwargs = dict(features_only=True, out_indices=out_indices, pretrained=use_pretrained, **extra)
    if output_stride != 32:
        kwargs["output_stride"] = output_stride
    try:
        return timm.create_model(timm_name, **kwargs)
    except (RuntimeError, OSError) as e:
        if use_pretrained and not extra:
            raise ConfigError(
                f"could not fetch ImageNet weights for {timm_name!r} ({str(e).splitlines()[0][:120]}); set the "
                f"stage's pretrained key to a local checkpoint (e.g. cam.pretrained=/path/weights.pth) or to "
                f"false to train from scratch") from None
        raise


def is_stem(name: str) -> bool:
    """Whether a parameter name belongs to the ResNet stem (conv1/bn1), frozen with pretrained weights."""
    return name.split(".")[0] in ("conv1", "bn1", "act1")


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm in eval mode with frozen affine parameters (BES with pretrained weights)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


def load_state(module: nn.Module, path: str | os.PathLike, key: str | None = "model") -> dict:
    """Load a salmask checkpoint safely (``weights_only=True``); returns the whole checkpoint dict."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(path, f"cannot load checkpoint ({e})") from None
    state = ckpt[key] if key else ckpt
    module.load_state_dict(state)
    return ckpt
