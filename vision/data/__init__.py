"""Labelled chip datasets: readers, splits, normalisation statistics, checks and fetching."""

from vision.data.dataset import ChipDataset
from vision.data.sources import (
    ChipSource,
    FolderSource,
    ManifestSource,
    SampleRef,
    ShardSource,
    open_data_spec,
    open_split,
)
from vision.data.stats import BandStats, compute_band_stats, dataset_fingerprint

__all__ = [
    "BandStats",
    "ChipDataset",
    "ChipSource",
    "FolderSource",
    "ManifestSource",
    "SampleRef",
    "ShardSource",
    "compute_band_stats",
    "dataset_fingerprint",
    "open_data_spec",
    "open_split",
]
