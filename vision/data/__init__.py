"""Labelled chip datasets: readers, data specs, splits, normalisation statistics, checks and
fetching. `vision.data.spec` is the one parser of what names data (a spec on the command
line, a recipe's ``data`` section); `vision.data.sources` holds the shared types
(`ChipSource`, `SampleRef`) and the readers."""

from typing import TYPE_CHECKING, Any

from vision.data.sources import (
    ChipSource,
    FolderSource,
    ManifestSource,
    SampleRef,
    ShardSource,
)
from vision.data.spec import open_data_spec, open_spec, open_split, resolve_spec
from vision.data.stats import BandStats, compute_band_stats, dataset_fingerprint

if TYPE_CHECKING:
    from vision.data.dataset import ChipDataset


def __getattr__(name: str) -> Any:
    # ChipDataset pulls in torch; import it only when asked, so `vision data ...` starts fast.
    if name == "ChipDataset":
        from vision.data.dataset import ChipDataset

        return ChipDataset
    raise AttributeError(name)


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
    "open_spec",
    "open_split",
    "resolve_spec",
]
