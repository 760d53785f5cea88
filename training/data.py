"""Recipe -> datasets and loaders, with seeded, resumable shuffling and augmentation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler, WeightedRandomSampler

from vision.config import ExperimentConfig
from vision.data import BandStats, ChipDataset, ChipSource, compute_band_stats, open_split
from vision.transforms import Augmenter, build_augmenter


@dataclass
class Splits:
    train: ChipSource
    val: ChipSource
    test: ChipSource | None
    classes: list[str]
    bands: list[str]


def open_splits(cfg: ExperimentConfig) -> Splits:
    """Open the recipe's train/val/test splits (same classes, same bands)."""
    d = cfg.data
    train: ChipSource
    val: ChipSource
    test: ChipSource | None
    if d.source in ("scenes", "stac"):  # labelled scenes: every split sampled at once
        from vision.data.labelled import open_labelled_splits

        labelled = open_labelled_splits(cfg)
        train, val, test = labelled.train, labelled.val, labelled.test
    else:
        train = open_split(d.source, d.train, d.root, d.bands, d.classes)
        val = open_split(d.source, d.val, d.root, d.bands, train.classes)
        test = open_split(d.source, d.test, d.root, d.bands, train.classes) if d.test else None
    classes = train.classes
    n = d.limit_per_split
    train, val = train.limit(n, cfg.seed), val.limit(n, cfg.seed)
    test = test.limit(n, cfg.seed) if test is not None else None
    return Splits(train, val, test, classes, train.bands)


def band_stats(train: ChipSource, seed: int) -> BandStats:
    return compute_band_stats(train, max_samples=20000, seed=seed)


class _WorkerSeeder:
    """Reseed the augmenter in each loader worker from the loader's (seeded) base seed."""

    def __init__(self, augmenter: Augmenter | None):
        self.augmenter = augmenter

    def __call__(self, worker_id: int) -> None:
        if self.augmenter is not None:
            self.augmenter.reseed(torch.initial_seed() % 2**31)


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, normalised to mean 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_classes, 0.0)
    return torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32)


def train_loader(
    cfg: ExperimentConfig,
    source: ChipSource,
    epoch: int,
    sampler: Sampler[int] | None = None,
) -> DataLoader[tuple[torch.Tensor, int]]:
    """The loader for one epoch; its order and augmentations depend only on (seed, epoch)."""
    augmenter = build_augmenter(cfg.augmentations, source.bands, seed=cfg.seed * 1000 + epoch)
    ds = ChipDataset(source, augmenter)
    g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    if sampler is None:
        if cfg.train.imbalance == "balanced_sampler":
            labels = source.labels()
            counts = np.bincount(labels, minlength=len(source.classes)).astype(np.float64)
            weights = (1.0 / counts[labels]).tolist()
            sampler = WeightedRandomSampler(weights, len(labels), replacement=True, generator=g)
        else:
            sampler = RandomSampler(ds, generator=g)
    workers = cfg.data.num_workers
    return DataLoader(
        ds, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=workers,
        worker_init_fn=_WorkerSeeder(augmenter) if workers else None, generator=g,
        drop_last=len(ds) > cfg.train.batch_size, persistent_workers=False,
        pin_memory=torch.cuda.is_available(), prefetch_factor=4 if workers else None,
    )


def eval_loader(source: ChipSource, batch_size: int, workers: int = 0
                ) -> DataLoader[tuple[torch.Tensor, int]]:
    return DataLoader(ChipDataset(source), batch_size=batch_size, shuffle=False,
                      num_workers=workers, pin_memory=torch.cuda.is_available())
