"""The export formats, in a module light enough for the CLI to import at start-up."""

from __future__ import annotations

from enum import StrEnum


class ExportFormat(StrEnum):
    """What an export writes: confirmed results (GeoJSON, Parquet) or a labelled dataset."""

    geojson = "geojson"
    parquet = "parquet"
    dataset = "dataset"
