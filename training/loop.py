"""The training loop, readable top to bottom: `train_one_epoch`, then `predict`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

ProgressFn = Callable[[int, float, float, float], None]


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    samples: int
    seconds: float

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s parameters and buffers (BN statistics).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so that
    short runs are not dominated by the starting weights (and the new, random head).
    """
    from torch.optim.swa_utils import AveragedModel

    def update(avg: tuple[torch.Tensor, ...] | list[torch.Tensor],
               new: tuple[torch.Tensor, ...] | list[torch.Tensor], n: torch.Tensor | int) -> None:
        k = int(n)
        d = min(decay, (1 + k) / (10 + k))
        if avg[0].is_floating_point():
            torch._foreach_lerp_(list(avg), list(new), 1.0 - d)
        else:  # counters (BN's num_batches_tracked): the latest value
            torch._foreach_copy_(list(avg), list(new))

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool
                 ) -> list[dict[str, object]]:
    """AdamW groups; without ``decay_norm_and_bias``, 1-D tensors (norm weights, biases)
    get no weight decay: shrinking them towards 0 is not a useful prior."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def autocast_for(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[None]:
    """Mixed precision on CUDA: bf16 where supported, else fp16 (paired with a GradScaler)."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, ...]],
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    *,
    amp: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    max_steps: int | None = None,
    on_step: ProgressFn | None = None,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
) -> EpochStats:
    """One pass over ``loader``; the scheduler steps per batch.

    ``on_step(step, loss, accuracy, samples_per_s)`` is called after every batch (progress).
    ``ema``, when given, is updated from ``model`` after every optimizer step. Batches may
    carry more tensors after the labels (``(x, y, t)``): they are passed on to ``criterion``.
    """
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for step, (x, y, *extra) in enumerate(loader, start=1):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        extra = [e.to(device, non_blocking=True) for e in extra]  # e.g. a teacher's targets
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device, amp):
            logits = model(x)
            loss = criterion(logits, y, *extra)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        n = y.shape[0]
        total_loss += float(loss.detach()) * n
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += n
        if on_step is not None:
            on_step(step, total_loss / seen, correct / seen, seen / (time.perf_counter() - start))
        if max_steps is not None and step >= max_steps:
            break
    return EpochStats(total_loss / max(seen, 1), correct / max(seen, 1), seen,
                      time.perf_counter() - start)


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    amp: bool = False,
    channels_last: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (float32) and labels over a loader, in loader order.

    ``on_batch(n)`` is called after each batch of ``n`` samples (progress).
    """
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(device, amp):
            out = model(x)
        logits.append(out.float().cpu().numpy())
        labels.append(y.numpy())
        if on_batch is not None:
            on_batch(len(y))
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(logits), np.concatenate(labels)
