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


def autocast_for(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[None]:
    """Mixed precision on CUDA: bf16 where supported, else fp16 (paired with a GradScaler)."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
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
) -> EpochStats:
    """One pass over ``loader``; the scheduler steps per batch.

    ``on_step(step, loss, accuracy, samples_per_s)`` is called after every batch (progress).
    """
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader, start=1):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device, amp):
            logits = model(x)
            loss = criterion(logits, y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
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
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (float32) and labels over a loader, in loader order."""
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
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(logits), np.concatenate(labels)
