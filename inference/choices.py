"""The closed choices of `vision infer` (``--device``, ``--engine``, ``--gsd``,
``--resampling``) and its size cap, as
enums and constants with no heavy imports: the CLI declares its options from them without
loading numpy, GDAL or ONNX Runtime."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from vision.errors import ConfigError

#: Largest scene classified by default, in pixels per band (65536 x 65536; a Sentinel-2
#: tile is 10980 x 10980). ``--max-pixels`` raises it.
DEFAULT_MAX_PIXELS = 2**32


class _Choice(StrEnum):
    @classmethod
    def parse(cls, value: str) -> Self:
        """The member named ``value``.

        Raises:
            ConfigError: not one of the names.
        """
        try:
            return cls(value)
        except ValueError:
            option = cls.__name__.lower().removesuffix("kind")
            raise ConfigError(f"--{option} must be one of {', '.join(cls)}, not {value!r}") from None


class Device(_Choice):
    """``--device``: where ONNX Runtime runs (``auto``: the best one available)."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


class EngineKind(_Choice):
    """``--engine``: where the model runs (this process, or a Ray cluster)."""

    LOCAL = "local"
    RAY = "ray"


class Gsd(_Choice):
    """``--gsd``: ``model`` reads windows resampled to the model's ground sampling distance
    when the input's differs by more than 10 %; ``native`` keeps the input's pixels (the
    mismatch is recorded in the manifest, and an input much coarser than the model runs)."""

    MODEL = "model"
    NATIVE = "native"


class ResamplingKind(_Choice):
    """``--resampling``: how reflectance bands are read onto another grid (rasterio's
    names; categorical layers such as SCL are always read with ``nearest``)."""

    BILINEAR = "bilinear"
    NEAREST = "nearest"
    CUBIC = "cubic"
    AVERAGE = "average"
    LANCZOS = "lanczos"
