"""Per-band normalisation statistics and dataset fingerprints."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vision.data.sources import ChipSource
from vision.hashing import stream_sha256


@dataclass(frozen=True)
class BandStats:
    """Mean and standard deviation per band, in raw pixel units."""

    mean: list[float]
    std: list[float]


def compute_band_stats(source: ChipSource, max_samples: int | None = 20000, seed: int = 0) -> BandStats:
    """Per-band mean/std over (a random subset of at most ``max_samples``) training chips.

    Accumulates in float64 so uint16 reflectances do not lose precision.
    """
    n = len(source)
    idx = np.arange(n)
    if max_samples is not None and n > max_samples:
        idx = np.sort(np.random.default_rng(seed).permutation(n)[:max_samples])
    total = sq = None
    count = 0
    for i in idx:
        chip = source.read(int(i))
        flat = chip.reshape(-1, chip.shape[-1]).astype(np.float64)
        flat = flat[np.isfinite(flat).all(axis=1)]
        if total is None:
            total = flat.sum(axis=0)
            sq = (flat**2).sum(axis=0)
        else:
            total += flat.sum(axis=0)
            sq += (flat**2).sum(axis=0)
        count += flat.shape[0]
    if total is None or sq is None or count == 0:
        raise ValueError("cannot compute band statistics of an empty dataset")
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)
    return BandStats([float(m) for m in mean], [float(s) for s in std])


def dataset_fingerprint(*sources: ChipSource) -> str:
    """sha256 of the sorted list of (sample id, label) of the given splits.

    Changes when a file is added, removed, renamed or relabelled; identical otherwise.
    """
    lines = sorted(f"{r.path.rsplit('/', 1)[-1]}\t{r.label}" for s in sources for r in s.refs)
    return stream_sha256(f"{line}\n".encode() for line in lines)
