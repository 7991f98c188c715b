"""Helpers shared by the stage modules: sharded to-do lists, per-image loops, evaluation splits."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import torch
from PIL import Image

from salmask.errors import ConfigError, InputError
from salmask.utils import dist
from salmask.utils.log import logger, progress

T = TypeVar("T")


def todo(ids: Sequence[str], out_path: Callable[[str], Path]) -> list[str]:
    """This rank's ids whose artefact is not on disk yet (artefacts are atomic: present = complete)."""
    mine = dist.shard(ids)
    left = [i for i in mine if not out_path(i).is_file()]
    if len(left) < len(mine):
        logger.info("resuming: %d of %d images already done on this rank", len(mine) - len(left), len(mine))
    return left


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header, without decoding."""
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception as e:
        raise InputError(path, f"cannot decode image ({e})") from None


def prefetch(items: Iterable[T], load: Callable[[T], object], workers: int = 2) -> Iterator[tuple[T, object]]:
    """Yield (item, load(item)) in order while the next items load in background threads."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(load, it) for it in items[:workers * 2]]
        nxt = len(futures)
        for k, it in enumerate(items):
            result = futures[k].result()
            if nxt < len(items):
                futures.append(pool.submit(load, items[nxt]))
                nxt += 1
            yield it, result


def eval_ids(ctx, source_split: str = "pseudo_split", target_split: str = "eval_split") -> list[str]:
    """Ids of ``target_split`` that are also in ``source_split`` (e.g. VOC train within train_aug)."""
    src = set(ctx.split(source_split, need_labels=False).ids)
    ids = [i for i in ctx.split(target_split, need_labels=False).ids if i in src]
    if not ids:
        raise InputError(ctx.cfg.dataset[target_split], f"no image of the {target_split} is in the "
                                                         f"{source_split}; set dataset.{target_split}")
    return ids


def loop(ids: Sequence[str], desc: str) -> Iterable[str]:
    return progress(ids, desc, total=len(ids))


GPU_INFER_BATCH = {"cam": 8, "boundary": 8, "seg": 4}
"""Images per forward that ``infer_batch: auto`` takes on CUDA, per stage."""
CPU_PIXELS_PER_FORWARD = 65536
"""``auto`` on a CPU batches images up to this many pixels (flips not counted) per forward."""


def resolve_infer_batch(value: int | str, device: torch.device, stage: str, size: tuple[int, int]) -> int:
    """``infer_batch`` -> images per forward for images of ``size`` (H, W).

    ``auto`` on CUDA is :data:`GPU_INFER_BATCH`: one image per forward leaves a GPU idle. On a CPU it is
    the per-image loop (1) for images of 256×256 and more, and as many images as fit in
    :data:`CPU_PIXELS_PER_FORWARD` below that (4 at 128×128): measured with ``salmask bench``, batching
    VOC-sized images on a CPU gains nothing for CAMs and slows DeepLab down, with more memory, while
    small images run 1.8× faster four at a time (per-forward overhead dominates there).
    """
    if value == "auto":
        if device.type == "cuda":
            return GPU_INFER_BATCH[stage]
        return max(1, CPU_PIXELS_PER_FORWARD // (size[0] * size[1]))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{stage}.infer_batch must be 'auto' or an integer >= 1, got {value!r}")
    return value


def size_batches(sizes: dict[str, tuple[int, int]], infer_batch: int | str, device: torch.device,
                 stage: str) -> tuple[list[list[str]], dict[tuple[int, int], int]]:
    """Batches of ids sharing one (H, W), in input order within each size, of the size's
    :func:`resolve_infer_batch`; and that batch size per (H, W)."""
    groups: dict[tuple[int, int], list[str]] = {}
    for i, hw in sizes.items():
        groups.setdefault(hw, []).append(i)
    per_size = {hw: resolve_infer_batch(infer_batch, device, stage, hw) for hw in groups}
    return [ids[j:j + per_size[hw]] for hw, ids in groups.items() for j in range(0, len(ids), per_size[hw])], per_size
