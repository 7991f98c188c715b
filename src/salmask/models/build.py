"""One way to build each network, and one function that builds a network from its checkpoint.

Every ``model.pt`` salmask writes records the network's kind (``network``: ``cam``, ``boundary``, ``deeplab``,
``rgbsod``) and the arguments that build it (``args``), beside its weights (``model``); :func:`load_network`
rebuilds it from those alone. Checkpoints written before the record existed name less (their backbone,
DeepLab's architecture); ``defaults`` gives what they lack, from the run's config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from salmask.errors import InputError, SalmaskError
from salmask.models.boundary_net import BoundaryNet
from salmask.models.cam_net import CAMNet
from salmask.models.deeplab import build_segmenter
from salmask.models.rgbsod import RGBSOD
from salmask.utils.train import load_checkpoint, save_checkpoint

NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "cam": lambda num_classes, backbone, attention_k=1e-3: CAMNet(num_classes, backbone, False, attention_k),
    "boundary": lambda backbone, freeze_backbone=True: BoundaryNet(backbone, pretrained=False,
                                                                   freeze_backbone=freeze_backbone),
    "deeplab": lambda arch, backbone, num_classes, norm="bn", channels=256: build_segmenter(
        arch, backbone=backbone, num_classes=num_classes, pretrained=False, norm=norm, channels=channels),
    "rgbsod": lambda encoder, img_size, encoder_kwargs=None, decoder_channels=64: RGBSOD(
        encoder, pretrained=False, img_size=img_size, encoder_kwargs=encoder_kwargs,
        decoder_channels=decoder_channels),
}
"""Network kind -> ``build(**args)`` with random weights (the checkpoint's weights are loaded after)."""


def save_network(path: Path, model: nn.Module, network: str, args: dict[str, Any], **extra: Any) -> None:
    """Write ``model``'s weights with what rebuilds it (``network``, ``args``: plain values) atomically."""
    if network not in NETWORKS:
        raise SalmaskError(f"unknown network {network!r}; known: {', '.join(NETWORKS)}")
    save_checkpoint(path, model=model.state_dict(), network=network, args=dict(args), **extra)


def network_spec(ckpt: dict, defaults: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(kind, build arguments) of a loaded checkpoint; for one written before checkpoints recorded them, what
    its keys say, completed by ``defaults``."""
    if "network" in ckpt:
        return str(ckpt["network"]), dict(ckpt.get("args") or {})
    defaults = dict(defaults or {})
    state = ckpt["model"]
    if "arch" in ckpt:
        return "deeplab", {"arch": str(ckpt["arch"]), "backbone": str(ckpt["backbone"]),
                           "num_classes": int(ckpt["num_classes"]), "norm": str(ckpt.get("norm", defaults.get("norm", "bn"))),
                           "channels": int(ckpt.get("channels", 256))}
    if "classifier.weight" in state:
        return "cam", {"num_classes": int(state["classifier.weight"].shape[0]),
                       "backbone": str(ckpt.get("backbone", defaults.get("backbone", "resnet50"))),
                       **({"attention_k": defaults["attention_k"]} if "attention_k" in defaults else {})}
    if "encoder" in ckpt and "img_size" in defaults:
        return "rgbsod", {"encoder": str(ckpt["encoder"]), **{k: defaults[k] for k in
                                                              ("img_size", "encoder_kwargs", "decoder_channels")
                                                              if k in defaults}}
    if "backbone" in ckpt:
        return "boundary", {"backbone": str(ckpt["backbone"]),
                            "freeze_backbone": bool(ckpt.get("freeze_backbone", True))}
    raise ValueError("the checkpoint does not say which network it holds (no 'network' record)")


def load_network(path: str | Path, device: torch.device | str = "cpu", *, expect: str | None = None,
                 defaults: dict[str, Any] | None = None) -> nn.Module:
    """The network of a salmask ``model.pt``, weights loaded, in eval mode on ``device``.

    ``expect``: the kind the caller needs (a checkpoint of another kind is an error naming the file);
    ``defaults``: build arguments for checkpoints older than the record. A checkpoint whose settings or
    weights do not make the network (unknown backbone, wrong shapes, missing tensors) is an ``InputError``
    naming ``path``; nothing in the file is executed (``torch.load(weights_only=True)``).
    """
    path = Path(path)
    ckpt = load_checkpoint(path, ("model",))
    try:
        kind, args = network_spec(ckpt, defaults)
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(path, str(e)) from None
    if expect is not None and kind != expect:
        raise InputError(path, f"holds a {kind} network, not a {expect} one")
    if kind not in NETWORKS:
        raise InputError(path, f"unknown network {kind!r}; known: {', '.join(NETWORKS)}")
    try:
        model = NETWORKS[kind](**args)
        model.load_state_dict(ckpt["model"])
    except (SalmaskError, RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(path, f"does not make the network it is for ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
    return model.to(device).eval()
