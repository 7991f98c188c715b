"""Shared training plumbing: seeding, DDP wrapping, poly schedule, atomic resumable checkpoints."""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from salmask.errors import InputError, SalmaskError
from salmask.io import write_bytes_atomic
from salmask.utils import dist


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loader(ds: Dataset, batch_size: int, *, seed: int, num_workers: int, shuffle: bool = True,
                drop_last: bool = True) -> DataLoader:
    """A loader with a DistributedSampler under torchrun (batch_size is per rank)."""
    if dist.world_size() > 1:
        sampler = DistributedSampler(ds, shuffle=shuffle, seed=seed, drop_last=drop_last)
    else:
        g = torch.Generator().manual_seed(seed)
        sampler = EpochSampler(ds, generator=g) if shuffle else None
    g = torch.Generator().manual_seed(seed + dist.rank())
    return DataLoader(ds, batch_size=min(batch_size, len(ds)), sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last and len(ds) >= batch_size, pin_memory=torch.cuda.is_available(),
                      worker_init_fn=_worker_init, generator=g, persistent_workers=num_workers > 0)


def _worker_init(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class EpochSampler(RandomSampler):
    """A shuffling sampler whose order is a function of the epoch alone, as DistributedSampler's is."""

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(10_007 * epoch + 17)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the loader's sampler the epoch, where it orders by epoch (:class:`EpochSampler`,
    ``DistributedSampler``); any other sampler keeps drawing from its generator, replayed on resume."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    if dist.world_size() <= 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def poly_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                   power: float = 0.9) -> torch.optim.lr_scheduler.LambdaLR:
    """lr = base_lr * (1 - step/total)^power, per parameter group (BES/IRNet's PolyOptimizer)."""
    total = max(1, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (1 - min(s, total - 1) / total) ** power)


def save_checkpoint(path: Path, **state: Any) -> None:
    """Rank 0 writes ``state`` (tensors, numbers, strings, lists, dicts) atomically; safe to weights_only-load."""
    if not dist.is_main():
        return
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_checkpoint(path: Path, need: tuple[str, ...] = ()) -> dict:
    """A checkpoint salmask wrote (``weights_only``: a pickle payload is refused, never run), as a dict
    holding the keys ``need``; ``model``, when needed, must be a state dict of tensors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(path, f"cannot load checkpoint ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
    if not isinstance(ckpt, dict):
        raise InputError(path, f"not a salmask checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    missing = [k for k in need if k not in ckpt]
    if missing:
        raise InputError(path, f"not a salmask checkpoint of this kind (no {', '.join(map(repr, missing))}; "
                               f"has {sorted(map(str, ckpt))[:6]})")
    if "model" in need and not (isinstance(ckpt["model"], dict)
                                and all(isinstance(v, torch.Tensor) for v in ckpt["model"].values())):
        raise InputError(path, "the checkpoint's 'model' is not a state dict of tensors")
    return ckpt


def _rng_state(loader: DataLoader) -> list[torch.Tensor]:
    """The random state an epoch's augmentations draw from: the global torch RNG (main-process loading)
    and the loader's generator (worker seeds)."""
    return [torch.get_rng_state()] + ([loader.generator.get_state()] if loader.generator is not None else [])


def _set_rng_state(loader: DataLoader, state: list[torch.Tensor]) -> None:
    torch.set_rng_state(state[0])
    if loader.generator is not None and len(state) > 1:
        loader.generator.set_state(state[1])


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when enabled; a no-op context elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def fit(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, *, total_steps: int,
        step_fn, device: torch.device, out_dir: Path, desc: str, amp: bool = False,
        checkpoint_every: int = 0, tensorboard: bool = False, extra_state: dict | None = None,
        schedule: Callable[[int], float] | None = None) -> list[dict]:
    """Train for ``total_steps`` optimiser steps, resumably, with the learning rate of each group times
    ``schedule(step)`` (default: the poly schedule, :func:`poly_scheduler`).

    ``step_fn(model, batch) -> (loss, {name: float})``. Every epoch end (and every ``checkpoint_every``
    steps) rank 0 writes ``out_dir/last.pt`` atomically; a rerun finding it resumes at that step, replaying
    the same samples and augmentations (the checkpoint keeps the random state its epoch started with), so
    a resumed single-process run ends with the weights of an uninterrupted one. The loss history goes to
    ``out_dir/history.json`` for the report.
    """
    from salmask.io import read_json, write_json
    from salmask.utils.log import logger, progress_bar

    scheduler = (torch.optim.lr_scheduler.LambdaLR(optimizer, schedule) if schedule is not None
                 else poly_scheduler(optimizer, total_steps))
    ckpt_path, hist_path = out_dir / "last.pt", out_dir / "history.json"
    step, history = 0, []
    epoch_rng = resume_rng = None  # random states at the start of the current / interrupted epoch
    resume_now = None  # the global torch RNG at the interrupted step (dropout draws from it, not the loader)
    if ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, ("model", "optimizer", "scheduler", "step"))
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        history = read_json(hist_path) if hist_path.is_file() else []
        history = [h for h in history if h["step"] <= step]
        resume_rng = state.get("rng")
        resume_now = state.get("rng_now")
        logger.info("%s: resuming at step %d/%d from %s", desc, step, total_steps, ckpt_path)
    writer = None
    if tensorboard and dist.is_main():
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out_dir / "tensorboard"))

    def checkpoint() -> None:
        if dist.is_main():  # history first: a kill between the two writes leaves it ahead, never behind
            write_json(hist_path, history)
        rng = _rng_state(loader) if step % steps_per_epoch == 0 else epoch_rng
        save_checkpoint(ckpt_path, model=unwrap(model).state_dict(), optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), step=step, rng=rng, rng_now=torch.get_rng_state(),
                        **(extra_state or {}))

    steps_per_epoch = max(1, len(loader))
    bar = progress_bar(desc, total=total_steps, initial=step, unit="step")
    model.train()
    while step < total_steps:
        epoch, skip = divmod(step, steps_per_epoch)
        set_epoch(loader, epoch)
        if resume_rng is not None:  # replay the interrupted epoch's randomness
            _set_rng_state(loader, resume_rng)
            resume_rng = None
        epoch_rng = _rng_state(loader)
        for i, batch in enumerate(loader):
            if i < skip:  # replayed for the loader's randomness; then the model's (dropout) is restored
                if i == skip - 1 and resume_now is not None:
                    torch.set_rng_state(resume_now)
                continue
            resume_now = None
            with autocast(device, amp):
                loss, parts = step_fn(model, batch)
            if not torch.isfinite(loss):
                raise SalmaskError(f"{desc}: loss became {loss.item()} at step {step} (learning rate too high? "
                                   f"the last checkpoint {ckpt_path} is kept)")
            lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update(1)
            rec = {"step": step, "epoch": epoch, "loss": float(loss.detach()), **parts, "lr": lr}
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", refresh=False)
            if writer is not None:
                for k, v in rec.items():
                    if k not in ("step", "epoch"):
                        writer.add_scalar(f"{desc}/{k}", v, step)
            if checkpoint_every and step % checkpoint_every == 0:
                checkpoint()
            if step >= total_steps:
                break
        logger.info("%s: epoch %d done, step %d/%d, loss %.4f", desc, epoch, step, total_steps,
                    np.mean([h["loss"] for h in history if h["epoch"] == epoch] or [float("nan")]))
        checkpoint()
    bar.close()
    if writer is not None:
        writer.close()
    check_ranks_agree(unwrap(model), desc)
    return history


def check_ranks_agree(model: nn.Module, desc: str) -> None:
    """Under DDP, fail loudly if the ranks' trainable weights differ at the end of training (a parameter
    outside DDP's reduction, a rank-dependent branch); logs the checksum on every rank."""
    if dist.world_size() <= 1:
        return
    from salmask.utils.log import logger

    with torch.no_grad():
        checksum = float(sum((p.double() * (1 + i)).sum() for i, p in enumerate(model.parameters())))
    sums = dist.gather_float(checksum)
    if len(set(sums)) > 1:
        raise SalmaskError(f"{desc}: the {len(sums)} ranks ended with different weights (checksums {sums})")
    logger.info("%s: weights identical on %d ranks (checksum %.17g)", desc, len(sums), checksum)
