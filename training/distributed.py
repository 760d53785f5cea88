"""Training on several processes (``torchrun``): one code path for gloo (CPU) and NCCL (GPU).

Under ``torchrun --nproc_per_node=N`` every process trains on its own share of the training
chips (`epoch_sampler`: disjoint shares, padding dropped) and DistributedDataParallel averages
the gradients. Rank 0 alone writes: the MLflow run, the checkpoints, the registry, the report.
Decisions that change the control flow (early stopping) are rank 0's and are broadcast
(`rank0_decides`), so no process waits forever for a collective the others have left.

``VISION_RECORD_SAMPLES=FOLDER`` makes every rank write the training chip indices it read in
each epoch to ``FOLDER/epoch{E}_rank{R}.json`` (a debugging aid; the tests use it to check that
ranks see disjoint chips).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.data import Sampler
from torch.utils.data.distributed import DistributedSampler

from vision.atomic import write_text_atomic

RECORD_ENV = "VISION_RECORD_SAMPLES"


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` (0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def init() -> World:
    """Join the process group under torchrun: NCCL for CUDA tensors and gloo for CPU ones (the
    small decisions `rank0_decides` broadcasts are CPU tensors), gloo alone without CUDA."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # NCCL's barrier uses it
            torch.distributed.init_process_group("cpu:gloo,cuda:nccl")
        else:
            torch.distributed.init_process_group("gloo")
    return World(int(os.environ.get("RANK", "0")), size)


def shutdown(world: World) -> None:
    """Leave the process group (after the last collective)."""
    if world.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(world: World) -> None:
    if world.active:
        torch.distributed.barrier()


def rank0_decides(world: World, flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (the others' values are ignored)."""
    if not world.active:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    torch.distributed.broadcast(t, src=0)
    return bool(t.item())


class _Indexable:
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class RecordingSampler(Sampler[int]):
    """Passes ``parent``'s indices through and remembers those taken (the chips read)."""

    def __init__(self, parent: Sampler[int]):
        self.parent = parent
        self.taken: list[int] = []

    def __iter__(self) -> Iterator[int]:
        for i in self.parent:
            self.taken.append(int(i))
            yield i

    def __len__(self) -> int:
        return len(cast(Any, self.parent))


def epoch_sampler(world: World, n: int, epoch: int, seed: int) -> Sampler[int] | None:
    """The training sampler of ``epoch``: this rank's share of ``n`` chips, or ``None`` (the
    loader's own seeded sampler) on one process; recorded when `RECORD_ENV` is set.

    ``drop_last``: the sampler would otherwise pad the shares to equal length by repeating
    chips, so two ranks would train on the same chip in the same epoch.
    """
    sampler: Sampler[int] | None = None
    if world.active:
        dist: DistributedSampler[int] = DistributedSampler(
            cast(Any, _Indexable(n)), num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed,
            drop_last=True)
        dist.set_epoch(epoch)
        sampler = dist
    if sampler is not None and os.environ.get(RECORD_ENV):
        sampler = RecordingSampler(sampler)
    return sampler


def save_record(world: World, sampler: Sampler[int] | None, epoch: int) -> None:
    """Write the indices a `RecordingSampler` saw in ``epoch`` (1-based) to `RECORD_ENV`."""
    folder = os.environ.get(RECORD_ENV)
    if not folder or not isinstance(sampler, RecordingSampler):
        return
    path = Path(folder) / f"epoch{epoch}_rank{world.rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"rank": world.rank, "world_size": world.size, "epoch": epoch,
                                        "indices": sampler.taken}))
