"""Data-pipeline efficiency of training: steps/s with the real loader ÷ steps/s on preloaded tensors.

Same model, batch size, optimizer and step function; the only difference is where batches
come from: the recipe's loader (shard decoding, augmentations, worker processes) or tensors
already in memory. Blocks of steps alternate between the two (A B A B ...) so that machine
noise hits both alike. Goal: ratio >= 0.85.

    .venv/bin/python bench/train_throughput.py [--recipe experiments/eurosat_rgb_lite0.yaml]
        [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterator

import torch

from training.data import open_splits, train_loader
from training.loop import train_one_epoch
from training.trainer import cosine_with_warmup, seed_everything
from vision.config import load_experiment
from vision.data.stats import compute_band_stats
from vision.models import NormalizedClassifier, get_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="experiments/eurosat_rgb_lite0.yaml")
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=3, help="A/B rounds")
    args = ap.parse_args()

    cfg = load_experiment(args.recipe)
    seed_everything(cfg.seed)
    splits = open_splits(cfg)
    stats = compute_band_stats(splits.train, max_samples=2000)
    model = NormalizedClassifier(
        get_model(cfg.model.architecture, len(splits.classes), len(splits.bands), cfg.model.weights,
                  band_names=splits.bands), stats.mean, stats.std)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    sched = cosine_with_warmup(opt, 10, 10_000)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    device = torch.device("cpu")

    loader = train_loader(cfg, splits.train, epoch=0)
    real: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(loader)
    # Preloaded: the same number of batches, decoded and augmented once, held in memory.
    pre = [next(real) for _ in range(args.steps)]

    def timed(batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> float:
        t = time.perf_counter()
        train_one_epoch(model, batches, crit, opt, sched, device, channels_last=cfg.train.channels_last,
                        max_steps=args.steps)
        return args.steps / (time.perf_counter() - t)

    timed(iter(pre))  # warm-up (allocator, oneDNN primitive cache)
    real_rates, pre_rates = [], []
    for r in range(args.rounds):
        real_rates.append(timed(itertools.islice(real, args.steps)))
        pre_rates.append(timed(iter(pre)))
        print(f"round {r + 1}: real loader {real_rates[-1]:.3f} steps/s, preloaded {pre_rates[-1]:.3f} steps/s")
    ratio = sum(real_rates) / sum(pre_rates)
    print(f"recipe {args.recipe}: batch {cfg.train.batch_size}, workers {cfg.data.num_workers}, "
          f"augmentations {[a.name for a in cfg.augmentations]}, torch threads {torch.get_num_threads()}")
    print(f"data-pipeline efficiency (real loader / preloaded): {ratio:.3f}  (goal >= 0.85: "
          f"{'met' if ratio >= 0.85 else 'NOT met'})")


if __name__ == "__main__":
    main()
