"""Helpers shared by the stage modules: sharded to-do lists, per-image loops, evaluation splits."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from PIL import Image

from salmask.errors import InputError
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
