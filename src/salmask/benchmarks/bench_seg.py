"""Segmentation inference: batched multi-scale + flip (``predict_batch``) against a per-image,
per-scale, per-flip loop.

    PYTHONPATH=src python -m benchmarks.bench_seg [--quick] [--device cuda]

Ours (:func:`salmask.seg.inference.predict_batch`) runs every same-size image and its mirror as one
batch per scale; the reference (:func:`reference_probs`, the usual DeepLab test loop) runs one image,
one scale and one flip per forward. Both get the same random-weight DeepLab-v3+ in eval mode and
the same random 500×375 images, in fp32; the agreement is the largest difference of the class
probabilities.
"""
from __future__ import annotations

import argparse
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salmask.bench import (VOC_SIZE, Setting, format_table, median_seconds, peak_bytes, rss_growth,
                           timed_row)
from salmask.data.transforms import to_tensor
from salmask.models.deeplab import build_segmenter
from salmask.seg.inference import SCALES, predict_batch, prepare_model

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


def _methods(model: nn.Module, images: list[Tensor], scales: Sequence[float]):
    def ours() -> list[Tensor]:
        return predict_batch(model, images, scales=scales, flip=True)

    def ref() -> list[Tensor]:
        return [reference_probs(model, image, scales) for image in images]

    return {"ours": ours, "ref": ref}


def peak_child(method: str, backbone: str, images: int, height: int, width: int, scales: list[float]) -> int:
    """In a fresh process: resident-set growth of one call of ``method`` (``ours``/``ref``) on CPU."""
    model = make_model(backbone, "cpu")
    _methods(model, make_images(1, (64, 48)), scales)[method]()  # load the code paths
    return rss_growth(_methods(model, make_images(images, (height, width)), scales)[method])


def run(quick: bool = False, device: str = "cpu", *, size: tuple[int, int] = VOC_SIZE,
        override: Setting | None = None, measure_memory: bool = True) -> list[dict]:
    """Time, measure and compare ours against the reference; one row. ``override`` replaces the
    quick/full setting (tests use tiny ones); ``measure_memory=False`` leaves the peaks out (None)."""
    s = override or setting(quick, device)
    model = make_model(s.backbone, device)
    methods = _methods(model, make_images(s.images, size), s.scales)
    if device.startswith("cuda"):
        for fn in methods.values():
            fn()
    else:  # loading code paths is enough on a CPU; a full-size warm-up would double the run time
        for fn in _methods(model, make_images(2, (64, 48)), s.scales).values():
            fn()
    seconds, results = median_seconds(methods, device, s.repeats)
    diff = max(float((a - b).abs().max()) for a, b in zip(results["ours"], results["ref"], strict=True))
    peaks = peak_bytes(methods, device, "benchmarks.bench_seg:peak_child", measure=measure_memory,
                       backbone=s.backbone, images=s.images, height=size[0], width=size[1], scales=list(s.scales))
    case = (f"deeplabv3+ {s.backbone}, {s.images}x{size[1]}x{size[0]}, "
            f"scales {','.join(map(str, s.scales))} + flip")
    return [timed_row("seg", case, device, s.images, seconds, peaks, diff, "max |diff| of probabilities",
                      ours="same-size images + flips batched per scale (seg.inference.predict_batch)",
                      reference="one image, one scale, one flip per forward (benchmarks.bench_seg.reference_probs)",
                      backbone=s.backbone, scales=list(s.scales), repeats=s.repeats, height=size[0], width=size[1])]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="ResNet-18, two scales")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(format_table(run(quick=args.quick, device=args.device)))
