"""Training speed on the CPU, as ratios measured side by side.

1. Data-pipeline efficiency: steps/s with the recipe's loader (shard decoding,
   augmentations, workers) / steps/s on the same batches preloaded in memory. Goal >= 0.85.
2. Fast depthwise convolutions (`vision.models.depthwise`, what `vision train` uses on the
   CPU) / stock `nn.Conv2d`: steps/s on preloaded batches, same weights and optimizer.

Blocks of steps alternate (A B C A B C ...) so that machine noise hits all alike.

    .venv/bin/python bench/train_throughput.py [--recipe experiments/eurosat_rgb_lite0.yaml]
        [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
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
from vision.models.depthwise import use_fast_depthwise


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
    stock = copy.deepcopy(model)
    swapped = use_fast_depthwise(model)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
        stock = stock.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    sched = cosine_with_warmup(opt, 10, 10_000)
    opt_s = torch.optim.AdamW(stock.parameters(), lr=cfg.train.lr)
    sched_s = cosine_with_warmup(opt_s, 10, 10_000)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    device = torch.device("cpu")

    loader = train_loader(cfg, splits.train, epoch=0)
    real: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(loader)
    # Preloaded: the same number of batches, decoded and augmented once, held in memory.
    pre = [next(real) for _ in range(args.steps)]

    def timed(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], fast: bool = True) -> float:
        m, o, sc = (model, opt, sched) if fast else (stock, opt_s, sched_s)
        t = time.perf_counter()
        train_one_epoch(m, batches, crit, o, sc, device, channels_last=cfg.train.channels_last,
                        max_steps=args.steps)
        return args.steps / (time.perf_counter() - t)

    timed(iter(pre))  # warm-up (allocator, oneDNN primitive cache)
    timed(iter(pre), fast=False)
    real_rates, pre_rates, stock_rates = [], [], []
    for r in range(args.rounds):
        real_rates.append(timed(itertools.islice(real, args.steps)))
        pre_rates.append(timed(iter(pre)))
        stock_rates.append(timed(iter(pre), fast=False))
        print(f"round {r + 1}: real loader {real_rates[-1]:.3f} steps/s, preloaded {pre_rates[-1]:.3f} "
              f"steps/s, preloaded with stock depthwise convs {stock_rates[-1]:.3f} steps/s")
    ratio = sum(real_rates) / sum(pre_rates)
    print(f"recipe {args.recipe}: batch {cfg.train.batch_size}, workers {cfg.data.num_workers}, "
          f"augmentations {[a.name for a in cfg.augmentations]}, torch threads {torch.get_num_threads()}")
    print(f"data-pipeline efficiency (real loader / preloaded): {ratio:.3f}  (goal >= 0.85: "
          f"{'met' if ratio >= 0.85 else 'NOT met'})")
    bs = cfg.train.batch_size
    print(f"fast depthwise ({swapped} convs) / stock: {sum(pre_rates) / sum(stock_rates):.2f}x "
          f"({sum(pre_rates) / len(pre_rates) * bs:.0f} vs {sum(stock_rates) / len(stock_rates) * bs:.0f} img/s)")


if __name__ == "__main__":
    main()
