"""CAM inference in both layouts — batched and per-image — against IRNet's per-image loop.

    python -m salmask.benchmarks.bench_cam [--quick] [--device cuda]

Batched (:func:`salmask.cam.infer.cams_for_batch` on N images at a time, ``cam.infer_batch=N``: the batch
``auto`` takes on that device and size when it batches, else all images) stacks the same-size images with
their mirrors and runs one forward per scale; per-image (``infer_batch=1``, what ``auto`` picks on a CPU
for images of 256×256 and more) calls it on one image (and its mirror) at a time. The reference
(:func:`salmask.benchmarks.reference_cam.irnet_make_cam`, IRNet's ``make_cam`` written from its definition,
sharing no code with salmask's inference) runs one image (and its mirror) per forward, one scale at a time. All get the same random-weight CAMNet, the same random 500×375 images and
two positive classes each, in fp32; the agreement is the largest difference of the stored float16 maps
(``cam`` and ``high_res``, normalised to [0, 1]; the reference's are float32, as IRNet stores them). One row per layout; ``auto`` marks the one the stage
uses on that device.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from salmask.benchmarks.common import (SMALL_SIZE, VOC_SIZE, Setting, format_table, median_seconds, peak_bytes,
                                       rss_growth, small_setting, timed_row)
from salmask.benchmarks.reference_cam import irnet_make_cam
from salmask.cam.infer import cams_for_batch
from salmask.models.cam_net import CAMNet
from salmask.stage_utils import resolve_infer_batch

IRNET_SCALES = (1.0, 0.5, 1.5, 2.0)
NUM_CLASSES = 20


def setting(quick: bool, device: str) -> Setting:
    """Quick: ResNet-18 at two scales. Full: ResNet-50 at IRNet's four scales on CUDA; on a CPU a
    full pass of four scales takes ~20 s per image, so three scales and two images there."""
    cuda = device.startswith("cuda")
    if quick:
        return Setting("resnet18", 8 if cuda else 2, (1.0, 0.5), 3)
    if cuda:
        return Setting("resnet50", 16, IRNET_SCALES, 5)
    return Setting("resnet50", 2, IRNET_SCALES[:3], 2)


def make_model(backbone: str, seed: int = 0) -> CAMNet:
    """A random-weight CAMNet in eval mode, the same for the same seed in any process."""
    torch.manual_seed(seed)
    return CAMNet(NUM_CLASSES, backbone, pretrained=False).eval()


def make_images(images: int, size: tuple[int, int] = VOC_SIZE,
                seed: int = 0) -> tuple[list[np.ndarray], list[list[int]]]:
    """``images`` random uint8 images [H,W,3] and two distinct class ids (1..20) for each."""
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(images)]
    labels = [sorted(rng.choice(np.arange(1, NUM_CLASSES + 1), 2, replace=False).tolist()) for _ in range(images)]
    return arrays, labels


def _methods(model: CAMNet, arrays: list[np.ndarray], labels: list[list[int]], scales: tuple[float, ...],
             device: torch.device, batch: int = 0):
    """``batched`` runs ``batch`` images per forward (0: all), ``per_image`` one, ``ref`` IRNet's loop."""
    def batched() -> list[dict[str, np.ndarray]]:
        step = batch or len(arrays)
        return [out for j in range(0, len(arrays), step)
                for out in cams_for_batch(model, arrays[j:j + step], labels[j:j + step], scales, device, amp=False)]

    def per_image() -> list[dict[str, np.ndarray]]:
        return [cams_for_batch(model, [a], [k], scales, device, amp=False)[0] for a, k in zip(arrays, labels)]

    def ref() -> list[dict[str, np.ndarray]]:
        return [irnet_make_cam(model, a, k, scales, device) for a, k in zip(arrays, labels)]

    return {"batched": batched, "per_image": per_image, "ref": ref}


def peak_child(method: str, backbone: str, images: int, height: int, width: int, scales: list[float],
               batch: int = 0) -> int:
    """In a fresh process: resident-set growth of one call of ``method`` (``batched``/``per_image``/``ref``)
    on CPU."""
    cpu = torch.device("cpu")
    model = make_model(backbone)
    _methods(model, *make_images(1, (64, 48)), tuple(scales), cpu)[method]()  # load the code paths
    return rss_growth(_methods(model, *make_images(images, (height, width)), tuple(scales), cpu, batch)[method])


def max_abs_diff(ours: list[dict[str, np.ndarray]], ref: list[dict[str, np.ndarray]]) -> float:
    """Largest |ours − ref| over every image's ``cam`` and ``high_res`` (keys must match)."""
    worst = 0.0
    for a, b in zip(ours, ref, strict=True):
        if not np.array_equal(a["keys"], b["keys"]):
            raise AssertionError(f"keys differ: {a['keys']} vs {b['keys']}")
        for name in ("cam", "high_res"):
            worst = max(worst, float(np.abs(a[name].astype(np.float32) - b[name].astype(np.float32)).max()))
    return worst


def run_small(quick: bool = False, device: str = "cpu") -> list[dict]:
    """:func:`run` on 128×128 images with ResNet-18 (the demo's model size): the case where ``auto``
    batches on a CPU too."""
    return run(device=device, size=SMALL_SIZE, override=small_setting(setting(quick, device), device))


def run(quick: bool = False, device: str = "cpu", *, size: tuple[int, int] = VOC_SIZE,
        override: Setting | None = None, measure_memory: bool = True) -> list[dict]:
    """Time, measure and compare both layouts against the reference; one row per layout. ``override``
    replaces the quick/full setting (tests use tiny ones); ``measure_memory=False`` leaves the peaks out."""
    s = override or setting(quick, device)
    dev = torch.device(device)
    model = make_model(s.backbone).to(dev)
    auto_batch = resolve_infer_batch("auto", dev, "cam", size)
    batch = min(auto_batch, s.images) if auto_batch > 1 else s.images  # the batched layout: auto's, or all
    methods = _methods(model, *make_images(s.images, size), s.scales, dev, batch)
    if dev.type == "cuda":
        for fn in methods.values():
            fn()
    else:  # loading code paths is enough on a CPU; a full-size warm-up would double the run time
        for fn in _methods(model, *make_images(2, (64, 48)), s.scales, dev).values():
            fn()
    seconds, results = median_seconds(methods, device, s.repeats)
    peaks = peak_bytes(methods, device, "salmask.benchmarks.bench_cam:peak_child", measure=measure_memory,
                       backbone=s.backbone, images=s.images, height=size[0], width=size[1], scales=list(s.scales),
                       batch=batch)
    auto = "per_image" if auto_batch == 1 else "batched"
    case = f"{s.backbone}, {s.images}x{size[1]}x{size[0]}, scales {','.join(map(str, s.scales))} + flip"
    rows = []
    for layout, ours in (("batched", f"{batch} same-size images + flips per forward, per scale "
                                     f"(infer_batch={batch}, cam.infer.cams_for_batch)"),
                         ("per_image", "one image + flip per forward, per scale (infer_batch=1, cams_for_batch)")):
        rows.append(timed_row(
            "cam", f"{case}, {layout.replace('_', '-')}{' [auto]' if layout == auto else ''}", device, s.images,
            {"ours": seconds[layout], "ref": seconds["ref"]}, {"ours": peaks[layout], "ref": peaks["ref"]},
            max_abs_diff(results[layout], results["ref"]), "max |diff| of [0,1] maps", ours=ours,
            reference="one image + flip per forward, per scale (IRNet's make_cam, benchmarks.reference_cam)",
            layout=layout, auto=layout == auto, backbone=s.backbone, scales=list(s.scales), repeats=s.repeats,
            height=size[0], width=size[1]))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="ResNet-18, two scales")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(format_table(run(quick=args.quick, device=args.device)))
