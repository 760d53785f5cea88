"""Typed errors shared by every part of the pipeline.

Each error says what went wrong and, where possible, what to do about it. Errors that
concern one input (a corrupt file, a wrong band count) are `InputError`s: batch jobs turn
them into a row with ``status == "error"`` instead of stopping.
"""

from __future__ import annotations

from pathlib import Path


class VisionError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(VisionError, ValueError):
    """A recipe, option or setting is invalid (exit code 2 at the CLI)."""


class InputError(VisionError):
    """One input cannot be used; the rest of a batch goes on."""


class UnreadableInputError(InputError, OSError):
    """A file is missing, empty, truncated, corrupt or of a driver that is not allowed."""


class BandMismatchError(InputError, ValueError):
    """An input's band count or dtype does not fit what the model or dataset expects."""


class UnsupportedFileError(InputError, ValueError):
    """A file is not of a kind this project reads (not an image, not a raster)."""


class NotGeoreferencedError(InputError, ValueError):
    """A scene has no CRS or geotransform, so its windows cannot be placed."""


class NoDataError(InputError):
    """An input holds no valid pixels (all nodata or NaN).

    Attributes:
        sha256: of the input file, when it was read (the row still identifies it).
        crs: its CRS, when georeferenced.
        bounds: its ``(minx, miny, maxx, maxy)`` in that CRS.
    """

    def __init__(self, message: str, *, sha256: str | None = None, crs: str | None = None,
                 bounds: tuple[float, float, float, float] | None = None):
        super().__init__(message)
        self.sha256, self.crs, self.bounds = sha256, crs, bounds


class ModelOutputError(InputError):
    """The model's output for an input cannot be used (NaN or infinite logits)."""


class WeightsNotAvailableError(VisionError, FileNotFoundError):
    """Pretrained weights were asked for but are not on this machine (nothing is downloaded)."""


class WeightsFileError(ConfigError):
    """A weights file exists but holds no state_dict ``torch.load(weights_only=True)`` reads."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"weights {path}: {reason}")
        self.path = path
        self.reason = reason


class ModelFormatError(VisionError, ValueError):
    """A model file is not what this project exports (missing metadata, bad external data)."""


class ParityError(VisionError, AssertionError):
    """The exported ONNX model disagrees with the PyTorch model beyond tolerance."""
