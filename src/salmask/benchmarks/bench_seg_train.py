"""Where a DeepLab training step's time goes, and what makes it cheaper.

    python -m salmask.benchmarks.bench_seg_train [--quick] [--device cuda]

The reference is the step ``train_seg`` took before these measurements: DeepLab-v3+ with the paper's 256-wide
ASPP output and decoder, contiguous (NCHW) tensors, the SGD update, on a batch of 8 crops of 256² from
VOC-sized images (``voc_cpu``'s setting; the backbone EfficientNet-Lite0 with random weights, which costs what
ImageNet weights cost). Each variant changes one thing and is timed in the same rounds, interleaved:

* ``loader``: one batch from :class:`salmask.seg.train.SegDataset` (JPEG decode, scale, flip, crop) in the
  main process, against the step (a loader worker overlaps with it when it is the cheaper of the two);
* ``channels=64``: the decoder and ASPP at 64 channels (``seg.channels``), the cost the stride-4 decoder's
  two 3×3 convolutions put on a light backbone;
* ``channels_last``: NHWC tensors and weights (oneDNN's preferred layout on a CPU);
* ``frozen backbone``: ``voc_cpu``'s step: 128 channels, channels-last and the backbone fixed
  (``seg.freeze_backbone``), so the step runs the backbone forward without its backward and updates the head alone;
* ``compile`` (full run only): ``torch.compile`` of the model, timed after its compilation, which is
  reported separately.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from salmask.benchmarks.common import VOC_SIZE, format_table, median_seconds, timed_row

BATCH, CROP, BACKBONE = 8, 256, "efficientnet-lite0"


def make_step(channels: int, channels_last: bool, device: str, compiled: bool = False, *, batch: int = BATCH,
              crop: int = CROP, backbone: str = BACKBONE, frozen: bool = False):
    """A closure running one SGD step of DeepLab-v3+ on a fixed random batch [batch, 3, crop, crop]."""
    from salmask.models.backbones import freeze_backbone
    from salmask.models.deeplab import build_segmenter, param_groups

    torch.manual_seed(0)
    model = build_segmenter("deeplabv3plus", backbone=backbone, num_classes=21, channels=channels).to(device)
    if frozen:
        freeze_backbone(model)
    x = torch.randn(batch, 3, crop, crop, device=device)
    y = torch.randint(0, 21, (batch, crop, crop), device=device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(param_groups(model, 0.007), lr=0.007, momentum=0.9)
    net = torch.compile(model) if compiled else model
    model.train()

    def step() -> float:
        logits = net(x)
        loss = F.cross_entropy(F.interpolate(logits, y.shape[-2:], mode="bilinear", align_corners=False), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        return loss.item()

    return step


def make_loader_batch(folder: Path, batch: int = BATCH, crop: int = CROP):
    """A closure loading one batch the way ``train_seg`` does, from VOC-sized JPEGs."""
    from PIL import Image

    from salmask.seg.train import SegDataset

    rng = np.random.default_rng(0)
    ids = [f"img{k}" for k in range(batch)]
    for i in ids:
        Image.fromarray(rng.integers(0, 256, (*VOC_SIZE, 3), dtype=np.uint8)).save(folder / f"{i}.jpg", quality=90)
        Image.fromarray(rng.integers(0, 21, VOC_SIZE, dtype=np.uint8)).save(folder / f"{i}.png")
    ds = SegDataset(ids, lambda i: folder / f"{i}.jpg", folder, 21, crop, (0.5, 2.0))
    return lambda: [ds[k] for k in range(batch)]


def run(quick: bool = False, device: str = "cpu", *, batch: int = BATCH, crop: int = CROP,
        backbone: str = BACKBONE) -> list[dict]:
    """Rows of the common format: the loader and each variant against the reference step."""
    repeats = 3 if quick else 5
    size = dict(batch=batch, crop=crop, backbone=backbone)
    variants = {"channels=64": (64, False, False), "channels_last": (256, True, False),
                "channels=64 + channels_last": (64, True, False),
                "channels=128 + channels_last + frozen backbone": (128, True, True)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fns = {"ref": make_step(256, False, device, **size), "loader": make_loader_batch(Path(tmp), batch, crop)}
        fns.update({name: make_step(c, cl, device, frozen=fz, **size) for name, (c, cl, fz) in variants.items()})
        compile_seconds = None
        if not quick:
            compiled = make_step(256, False, device, compiled=True, **size)
            start = time.perf_counter()
            compiled()
            compiled()
            compile_seconds = time.perf_counter() - start
            fns["compile"] = compiled
        for fn in fns.values():  # warm-up (oneDNN primitive caches, allocator)
            fn()
        seconds, _ = median_seconds(fns, device, repeats)
    common = dict(device=device, images=batch, peaks={"ours": None}, max_abs_diff=None, diff_metric="",
                  reference=f"DeepLab-v3+ {backbone}, 256 channels, NCHW (train_seg's step before)")
    rows.append(timed_row("train_seg step", f"loader: one batch of {batch}, {VOC_SIZE[1]}x{VOC_SIZE[0]} JPEGs",
                          seconds={"ours": seconds["loader"], "ref": seconds["ref"]},
                          ours="SegDataset in the main process", **common))
    for name in (*variants, *(("compile",) if "compile" in seconds else ())):
        note = {} if name != "compile" else {"compile_seconds": compile_seconds}
        rows.append(timed_row("train_seg step", f"{name}, batch {batch} at {crop}x{crop}",
                              seconds={"ours": seconds[name], "ref": seconds["ref"]}, ours=name, **common, **note))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats, no torch.compile row")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    a = parser.parse_args()
    print(format_table(run(a.quick, a.device)))


if __name__ == "__main__":
    main()
