"""Training speed from labelled scenes against chip shards of the same chips, as a ratio.

steps/s with ``data.source: scenes`` (the windows read from the mosaics once, then kept in
memory: epochs after the first read no raster) / steps/s from the WebDataset shards of the
same chips (JPEG decoding on every access), same model, batch, augmentations and threads,
from the second epoch on. Goal >= 0.9. The first pass over the scenes (sampling, reading and
checking every window) is timed apart, as the cost of the first epoch's reads.

Both sources are warmed up first (the first training steps are several times slower), then
blocks of steps alternate (scenes shards, shards scenes, ...) so that machine noise and order
hit both alike. The loaders run from epoch 1, as the second epoch of a run would. Build the
mosaics first: ``bench/make_labelled_scenes.py --out DIR``.

    .venv/bin/python bench/train_scenes.py --root DIR [--steps 20] [--rounds 3]
        [--scenes-recipe experiments/eurosat_rgb_lite0_scenes.yaml]
        [--shards-recipe experiments/eurosat_rgb_lite0.yaml]
"""

from __future__ import annotations

import argparse
import itertools
import time

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
    ap.add_argument("--root", required=True, help="the folder bench/make_labelled_scenes.py wrote")
    ap.add_argument("--scenes-recipe", default="experiments/eurosat_rgb_lite0_scenes.yaml")
    ap.add_argument("--shards-recipe", default="experiments/eurosat_rgb_lite0.yaml")
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=3, help="scenes/shards rounds")
    args = ap.parse_args()

    scenes_cfg = load_experiment(args.scenes_recipe, [f"data.root={args.root}"])
    shards_cfg = load_experiment(args.shards_recipe)
    for k in ("batch_size", "channels_last"):
        if getattr(scenes_cfg.train, k) != getattr(shards_cfg.train, k):
            raise SystemExit(f"the recipes differ in train.{k}: compare like with like")
    seed_everything(shards_cfg.seed)
    t = time.perf_counter()
    scenes = open_splits(scenes_cfg)
    first_pass = time.perf_counter() - t
    shards = open_splits(shards_cfg)
    if len(scenes.train) != len(shards.train):
        print(f"note: {len(scenes.train)} scene windows against {len(shards.train)} shard chips")
    stats = compute_band_stats(shards.train, max_samples=2000)
    model = NormalizedClassifier(
        get_model(shards_cfg.model.architecture, len(shards.classes), len(shards.bands), shards_cfg.model.weights,
                  band_names=shards.bands), stats.mean, stats.std)
    use_fast_depthwise(model)
    channels_last = shards_cfg.train.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=shards_cfg.train.lr)
    sched = cosine_with_warmup(opt, 10, 10_000)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=shards_cfg.train.label_smoothing)
    device = torch.device("cpu")
    # Epoch 1 on: the scene windows are in memory (read when the splits were opened).
    from_scenes = iter(train_loader(scenes_cfg, scenes.train, epoch=1))
    from_shards = iter(train_loader(shards_cfg, shards.train, epoch=1))

    def timed(batches: itertools.islice[tuple[torch.Tensor, torch.Tensor]]) -> float:
        t0 = time.perf_counter()
        train_one_epoch(model, batches, crit, opt, sched, device, channels_last=channels_last, max_steps=args.steps)
        return args.steps / (time.perf_counter() - t0)

    # Warm-up on both (allocator, oneDNN primitive cache: the first steps are several times slower).
    timed(itertools.islice(from_shards, args.steps))
    timed(itertools.islice(from_scenes, args.steps))
    a_rates, b_rates = [], []
    for r in range(args.rounds):
        # A B, then B A: whichever goes first in a round does not always come out ahead
        if r % 2 == 0:
            a_rates.append(timed(itertools.islice(from_scenes, args.steps)))
            b_rates.append(timed(itertools.islice(from_shards, args.steps)))
        else:
            b_rates.append(timed(itertools.islice(from_shards, args.steps)))
            a_rates.append(timed(itertools.islice(from_scenes, args.steps)))
        print(f"round {r + 1}: scenes {a_rates[-1]:.3f} steps/s, shards {b_rates[-1]:.3f} steps/s")
    ratio = sum(a_rates) / sum(b_rates)
    print(f"batch {shards_cfg.train.batch_size}, workers scenes {scenes_cfg.data.num_workers} / shards "
          f"{shards_cfg.data.num_workers}, torch threads {torch.get_num_threads()}; first pass over the scenes "
          f"(sample, read, check {len(scenes.train) + len(scenes.val) + (len(scenes.test) if scenes.test else 0)} "
          f"windows): {first_pass:.1f} s")
    print(f"steps/s scenes (cached windows) / shards, from the second epoch: {ratio:.3f}  "
          f"(goal >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")


if __name__ == "__main__":
    main()
