"""What `vision infer` is asked to do, checked once.

`JobOptions` validates itself when it is made (the CLI, the review worker's command line and
tests all go through it): a bad value is a `ConfigError` before anything is read or
written, and ``device``/``engine``/``gsd``/``resampling`` become their enums there, so
nothing downstream checks a string by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from inference.choices import DEFAULT_MAX_PIXELS, Device, EngineKind, Gsd, ResamplingKind
from vision.errors import ConfigError


@dataclass(frozen=True)
class JobOptions:
    """Everything `vision infer` was asked to do.

    Attributes:
        inputs: files and folders as given.
        model: ``.onnx`` path or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``.
        out: the job folder.
        batch_size: ``None`` for the device's default.
        device: `Device` (a name is accepted and converted).
        engine: `EngineKind` (a name is accepted and converted).
        overwrite: replace a job folder made for another model or options.
        stride: window step ``(rows, cols)`` in pixels; ``None`` for the model's input size.
        max_nodata: largest nodata fraction of a window that is still classified.
        workers: reader threads (local) or actors (ray); ``None`` for a default.
        threads: ONNX Runtime intra-op threads per stream on the CPU; ``None``: the cores
            shared out between the streams.
        streams: batches the model runs at once (CPU); ``None`` for `default_streams`.
        fp16: TensorRT fp16 engines.
        prefetch: batches read ahead of the model.
        progress: show progress bars.
        max_pixels: largest scene (pixels per band) classified; larger ones are error rows.
        resolution: pixel size in metres of the grid scenes are read on (``None``: the
            model's GSD where the GSD rule resamples, else the finest band the model needs).
        resampling: how reflectance bands are read onto another grid; ``None``: bilinear,
            or with ``grid`` chosen per scene (`inference.scenes.grid_resampling`).
        gsd: `Gsd` (``model``: resample to the model's GSD; ``native``: keep the pixels).
        allow_radiometry_mismatch: classify inputs whose radiometry does not fit the
            model's (recorded in the manifest) instead of refusing them.
        max_cloud: largest cloud fraction of a window's valid pixels that is still
            classified (status ``cloudy`` above it).
        aoi: areas of interest (GeoJSON or GeoPackage): only windows that meet one are read.
        aoi_field: the AOI file's id field (``None``: ``id``, else ``name``, else the index).
        grid: a georeferenced raster whose grid (CRS, transform, size) every scene is read
            onto (resampled with ``resampling``), so that jobs of two dates place their
            windows on the same ground; ``None``: each scene's own grid.
        input_roots: folders every file named *inside* an input (a STAC asset or link href)
            must resolve into; empty: wherever the user can read. The review worker passes its
            allowed roots, so a submitted item cannot make the job read files outside them.
    """

    inputs: tuple[str, ...]
    model: str
    out: Path
    batch_size: int | None = None
    device: Device = Device.AUTO
    engine: EngineKind = EngineKind.LOCAL
    overwrite: bool = False
    stride: tuple[int, int] | None = None
    max_nodata: float = 0.5
    workers: int | None = None
    threads: int | None = None
    streams: int | None = None
    fp16: bool = False
    prefetch: int = 4
    progress: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS
    resolution: float | None = None
    resampling: ResamplingKind | None = None
    gsd: Gsd = Gsd.MODEL
    allow_radiometry_mismatch: bool = False
    max_cloud: float = 0.5
    aoi: Path | None = None
    aoi_field: str | None = None
    input_roots: tuple[Path, ...] = ()
    grid: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", Device.parse(self.device))
        object.__setattr__(self, "engine", EngineKind.parse(self.engine))
        object.__setattr__(self, "gsd", Gsd.parse(self.gsd))
        if self.resampling is not None or self.grid is None:
            object.__setattr__(self, "resampling", ResamplingKind.parse(self.resampling or ResamplingKind.BILINEAR))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "out", Path(self.out))
        if not self.inputs:
            raise ConfigError("give at least one INPUT (file or folder)")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")
        if not 0.0 <= self.max_nodata < 1.0:
            raise ConfigError("--max-nodata must be in [0, 1)")
        if self.stride is not None and (len(self.stride) != 2 or min(self.stride) < 1):
            raise ConfigError("--stride must be positive")
        for name in ("workers", "streams", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name} must be at least 1")
        if self.max_pixels < 1:
            raise ConfigError("--max-pixels must be at least 1")
        if self.resolution is not None and not (math.isfinite(self.resolution)
                                                and 0 < self.resolution <= 1e6):
            raise ConfigError(f"--resolution must be a positive number of metres, not "
                              f"{self.resolution}")
        if not 0.0 <= self.max_cloud <= 1.0:
            raise ConfigError("--max-cloud must be in [0, 1]")
        if self.aoi is not None:
            object.__setattr__(self, "aoi", Path(self.aoi))
        if self.aoi_field is not None and self.aoi is None:
            raise ConfigError("--aoi-field names the id field of an --aoi file: give --aoi too")
        if self.aoi_field is not None and not self.aoi_field.strip():
            raise ConfigError("--aoi-field must name a field")
        if self.grid is not None:
            object.__setattr__(self, "grid", Path(self.grid))
            if self.resolution is not None:
                raise ConfigError("--grid fixes the pixel size the scenes are read at: drop --resolution")
        if self.prefetch < 1:
            raise ConfigError("prefetch must be at least 1")
