"""Segmentation inference in both layouts — batched and per-image — against a per-image, per-scale,
per-flip loop.

    python -m salmask.benchmarks.bench_seg [--quick] [--device cuda]

Batched (:func:`salmask.seg.inference.predict_batch` with ``batch=N``, ``seg.infer_batch=N``: the batch
``auto`` takes on that device and size when it batches, else all images) runs N same-size images and
their mirrors as one batch per scale; per-image (``batch=1``, what ``auto`` picks on a CPU for images of
256×256 and more) one image and one flip per forward. The reference (:func:`reference_probs`, the usual DeepLab test
loop, written independently) also runs one image, one scale and one flip per forward. All get the same
random-weight DeepLab-v3+ in eval mode and the same random 500×375 images, in fp32; the agreement is the
largest difference of the class probabilities. One row per layout; ``auto`` marks the one the stage uses
on that device.
"""
from __future__ import annotations

import argparse
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salmask.benchmarks.common import (SMALL_SIZE, VOC_SIZE, Setting, format_table, median_seconds, peak_bytes,
                                       rss_growth, small_setting, timed_row)
from salmask.data.transforms import to_tensor
from salmask.models.deeplab import build_segmenter
from salmask.seg.inference import SCALES, predict_batch, prepare_model
from salmask.stage_utils import resolve_infer_batch

NUM_CLASSES = 21


def setting(quick: bool, device: str) -> Setting:
    """Quick: ResNet-18 at two scales. Full: ResNet-50 at the six test scales on CUDA; on a CPU
    (~40 s per image for six scales) three scales and two images."""
    cuda = device.startswith("cuda")
    if quick:
        return Setting("resnet18", 8 if cuda else 2, (0.75, 1.0), 2)
    if cuda:
        return Setting("resnet50", 8, SCALES, 5)
    return Setting("resnet50", 2, (0.75, 1.0, 1.25), 2)


def make_model(backbone: str, device: str, seed: int = 0) -> nn.Module:
    """A random-weight DeepLab-v3+ (output stride 16), prepared for inference on ``device``."""
    torch.manual_seed(seed)
    model = build_segmenter("deeplabv3plus", backbone=backbone, num_classes=NUM_CLASSES, pretrained=False)
    return prepare_model(model, device)


def make_images(images: int, size: tuple[int, int] = VOC_SIZE, seed: int = 0) -> list[Tensor]:
    """``images`` random normalised images [3,H,W]."""
    generator = torch.Generator().manual_seed(seed)
    return [to_tensor(torch.randint(0, 256, (*size, 3), generator=generator, dtype=torch.uint8).numpy())
            for _ in range(images)]


@torch.inference_mode()
def reference_probs(model: nn.Module, image: Tensor, scales: Sequence[float]) -> Tensor:
    """One image [3,H,W] -> class probabilities [K,H,W]: the mean over scales × {image, mirror} of
    softmax(logits upsampled to H×W), one forward each."""
    device = next(model.parameters()).device
    x = image[None].to(device)
    h, w = image.shape[-2:]
    total = torch.zeros((), device=device)
    for s in scales:
        size = (max(1, round(h * s)), max(1, round(w * s)))
        xs = x if size == (h, w) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        for flip in (False, True):
            logits = model(xs.flip(-1) if flip else xs)
            probs = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False).softmax(1)[0]
            total = total + (probs.flip(-1) if flip else probs)
    return total / (2 * len(scales))


def _methods(model: nn.Module, images: list[Tensor], scales: Sequence[float], batch: int = 0):
    """``batched`` runs ``batch`` images per forward (0: all), ``per_image`` one, ``ref`` the plain loop."""
    def batched() -> list[Tensor]:
        return predict_batch(model, images, scales=scales, flip=True, batch=batch)

    def per_image() -> list[Tensor]:
        return predict_batch(model, images, scales=scales, flip=True, batch=1)

    def ref() -> list[Tensor]:
        return [reference_probs(model, image, scales) for image in images]

    return {"batched": batched, "per_image": per_image, "ref": ref}


def peak_child(method: str, backbone: str, images: int, height: int, width: int, scales: list[float],
               batch: int = 0) -> int:
    """In a fresh process: resident-set growth of one call of ``method`` (``batched``/``per_image``/``ref``)
    on CPU."""
    model = make_model(backbone, "cpu")
    _methods(model, make_images(1, (64, 48)), scales)[method]()  # load the code paths
    return rss_growth(_methods(model, make_images(images, (height, width)), scales, batch)[method])


def run_small(quick: bool = False, device: str = "cpu") -> list[dict]:
    """:func:`run` on 128×128 images with ResNet-18 (the demo's model size): the case where ``auto``
    batches on a CPU too."""
    return run(device=device, size=SMALL_SIZE, override=small_setting(setting(quick, device), device))


def run(quick: bool = False, device: str = "cpu", *, size: tuple[int, int] = VOC_SIZE,
        override: Setting | None = None, measure_memory: bool = True) -> list[dict]:
    """Time, measure and compare both layouts against the reference; one row per layout. ``override``
    replaces the quick/full setting (tests use tiny ones); ``measure_memory=False`` leaves the peaks out."""
    s = override or setting(quick, device)
    model = make_model(s.backbone, device)
    auto_batch = resolve_infer_batch("auto", torch.device(device), "seg", size)
    batch = min(auto_batch, s.images) if auto_batch > 1 else s.images  # the batched layout: auto's, or all
    methods = _methods(model, make_images(s.images, size), s.scales, batch)
    if device.startswith("cuda"):
        for fn in methods.values():
            fn()
    else:  # loading code paths is enough on a CPU; a full-size warm-up would double the run time
        for fn in _methods(model, make_images(2, (64, 48)), s.scales).values():
            fn()
    seconds, results = median_seconds(methods, device, s.repeats)
    peaks = peak_bytes(methods, device, "salmask.benchmarks.bench_seg:peak_child", measure=measure_memory,
                       backbone=s.backbone, images=s.images, height=size[0], width=size[1], scales=list(s.scales),
                       batch=batch)
    auto = "per_image" if auto_batch == 1 else "batched"
    case = (f"deeplabv3+ {s.backbone}, {s.images}x{size[1]}x{size[0]}, "
            f"scales {','.join(map(str, s.scales))} + flip")
    rows = []
    for layout, ours in (("batched", f"{batch} same-size images + flips per forward, per scale "
                                     f"(infer_batch={batch}, seg.inference.predict_batch)"),
                         ("per_image", "one image, one flip per forward, per scale (infer_batch=1, predict_batch)")):
        diff = max(float((a - b).abs().max()) for a, b in zip(results[layout], results["ref"], strict=True))
        rows.append(timed_row(
            "seg", f"{case}, {layout.replace('_', '-')}{' [auto]' if layout == auto else ''}", device, s.images,
            {"ours": seconds[layout], "ref": seconds["ref"]}, {"ours": peaks[layout], "ref": peaks["ref"]},
            diff, "max |diff| of probabilities", ours=ours,
            reference="one image, one scale, one flip per forward (salmask.benchmarks.bench_seg.reference_probs)",
            layout=layout, auto=layout == auto, backbone=s.backbone, scales=list(s.scales), repeats=s.repeats,
            height=size[0], width=size[1]))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="ResNet-18, two scales")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(format_table(run(quick=args.quick, device=args.device)))
