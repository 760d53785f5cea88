"""Recipe -> datasets and loaders, with seeded, resumable shuffling and augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, WeightedRandomSampler

from vision.config import ExperimentConfig
from vision.data import ChipDataset, ChipSource, open_split
from vision.errors import BandMismatchError, ConfigError
from vision.transforms import Augmenter, build_augmenter


@dataclass
class Splits:
    """The recipe's splits, opened; every source checks each chip's band count as it reads."""

    train: ChipSource
    val: ChipSource
    test: ChipSource | None
    classes: list[str]
    bands: list[str]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val),
                "test": len(self.test) if self.test is not None else 0}


class CheckedSource(ChipSource):
    """A split whose chips must all have the split's band count (and be ``H x W x C``).

    One 3-band chip among 6-band ones would otherwise surface as a numpy broadcast error in
    the band statistics or a collate error in the loader, without naming the file.
    """

    def __init__(self, parent: ChipSource, split: str):
        self.parent, self.split = parent, split
        self.classes, self.bands, self.refs = parent.classes, parent.bands, parent.refs

    def read(self, index: int) -> np.ndarray:
        chip = self.parent.read(index)
        want = len(self.bands)
        if chip.ndim != 3 or (want and chip.shape[-1] != want):
            got = chip.shape[-1] if chip.ndim == 3 else f"shape {chip.shape}"
            raise BandMismatchError(
                f"{self.refs[index].path}: has {got} bands, the {self.split} split's chips have {want} "
                f"({', '.join(self.bands)}); remove or replace that file (`vision data check` lists "
                "such files), or select common bands with data.bands")
        return chip

    def raw_bytes(self, index: int) -> bytes:
        return self.parent.raw_bytes(index)

    def limit(self, n: int | None, seed: int = 0) -> ChipSource:
        return self if n is None or n >= len(self.refs) else CheckedSource(self.parent.limit(n, seed), self.split)


def _check_band_indices(source: ChipSource, split: str, bands: list[str | int] | None) -> None:
    """Refuse ``data.bands`` indices beyond the chips' band count, naming the count."""
    indices = [b for b in bands or [] if isinstance(b, int)]
    if not indices or not len(source):
        return
    path = source.refs[0].path
    if path.split("#")[0].lower().endswith((".tif", ".tiff")):
        from vision.raster import open_raster

        with open_raster(path) as ds:
            count = int(ds.count)
    else:
        from vision.data.decode import decode_file

        count = int(decode_file(path).shape[-1])
    bad = [b for b in indices if b >= count]
    if bad:
        raise ConfigError(f"data.bands {bad}: out of range: the {split} chips (e.g. {path}) have {count} "
                          f"bands, indices 0..{count - 1} (or give band names)")


def open_splits(cfg: ExperimentConfig) -> Splits:
    """Open the recipe's train/val/test splits (same classes, same bands).

    Raises:
        ConfigError: a split is missing, or ``data.bands`` names bands the chips do not have.
    """
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
    named = {"train": train.limit(n, cfg.seed), "val": val.limit(n, cfg.seed)}
    if test is not None:
        named["test"] = test.limit(n, cfg.seed)
    for split, src in named.items():
        _check_band_indices(src, split, d.bands)
        if split != "train" and len(src.bands) != len(train.bands):
            raise ConfigError(f"the {split} split has {len(src.bands)} bands ({src.bands}), the train split "
                              f"{len(train.bands)} ({train.bands}); select common bands with data.bands")
    checked = {k: CheckedSource(v, k) for k, v in named.items()}
    return Splits(checked["train"], checked["val"], checked.get("test"), classes, train.bands)


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


class _WithTargets(Dataset[tuple[torch.Tensor, int, torch.Tensor]]):
    """Each chip with its row of ``targets`` (e.g. a teacher's, `training.distill`)."""

    def __init__(self, ds: ChipDataset, targets: torch.Tensor):
        self.ds, self.targets = ds, targets

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        x, y = self.ds[index]
        return x, y, self.targets[index]


def train_loader(
    cfg: ExperimentConfig,
    source: ChipSource,
    epoch: int,
    sampler: Sampler[int] | None = None,
    targets: torch.Tensor | None = None,
) -> DataLoader[Any]:
    """The loader for one epoch; its order and augmentations depend only on (seed, epoch).

    With ``targets`` (one row per chip of ``source``), batches are ``(x, y, targets rows)``.
    """
    augmenter = build_augmenter(cfg.augmentations, source.bands, seed=cfg.seed * 1000 + epoch)
    chips = ChipDataset(source, augmenter)
    ds: Dataset[Any] = chips if targets is None else _WithTargets(chips, targets)
    g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    if sampler is None:
        if cfg.train.imbalance == "balanced_sampler":
            labels = source.labels()
            counts = np.bincount(labels, minlength=len(source.classes)).astype(np.float64)
            weights = (1.0 / counts[labels]).tolist()
            sampler = WeightedRandomSampler(weights, len(labels), replacement=True, generator=g)
        else:
            sampler = RandomSampler(chips, generator=g)
    workers = cfg.data.num_workers
    return DataLoader(
        ds, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=workers,
        worker_init_fn=_WorkerSeeder(augmenter) if workers else None, generator=g,
        drop_last=len(chips) > cfg.train.batch_size, persistent_workers=False,
        pin_memory=torch.cuda.is_available(), prefetch_factor=4 if workers else None,
    )


def eval_loader(source: ChipSource, batch_size: int, workers: int = 0
                ) -> DataLoader[tuple[torch.Tensor, int]]:
    return DataLoader(ChipDataset(source), batch_size=batch_size, shuffle=False,
                      num_workers=workers, pin_memory=torch.cuda.is_available())
