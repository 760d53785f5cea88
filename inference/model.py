"""The model a job runs: where it comes from, what its metadata says, and its identity.

A model is an ``.onnx`` file exported to the contract of ARCHITECTURE.md §2 (raw pixels in,
logits out, ``vision.*`` metadata), or an MLflow registry URI (``models:/NAME@ALIAS``,
``models:/NAME/VERSION``) whose version's artifact folder holds ``model.onnx``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vision.contracts.model import ModelMetadata, read_model_file
from vision.errors import ConfigError
from vision.hashing import file_sha256
from vision.radiometry import Radiometry


@dataclass(frozen=True)
class ModelInfo:
    """What the runner needs to know about a model: its metadata and its identity.

    Attributes:
        path: the local ``.onnx`` file.
        sha256: of the file's bytes (traceability: every prediction row carries it).
        metadata: the validated ``vision.*`` metadata.
        input_dtype: ``float32`` or ``float16`` (a model exported with ``--fp16``).
    """

    path: Path
    sha256: str
    metadata: ModelMetadata
    input_dtype: str = "float32"

    @property
    def classes(self) -> list[str]:
        return list(self.metadata.classes)

    @property
    def bands(self) -> list[str]:
        return list(self.metadata.bands)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.metadata.input_size

    @property
    def temperature(self) -> float:
        return self.metadata.temperature

    @property
    def thresholds(self) -> dict[int, float] | None:
        """Per-class operating points keyed by class index, or ``None``."""
        return self.metadata.threshold_array()

    @property
    def mean(self) -> list[float] | None:
        """Per-band mean in raw units (fills the few nodata pixels of a window that is
        classified anyway), or ``None``."""
        return list(self.metadata.mean) if self.metadata.mean is not None else None

    @property
    def model_name(self) -> str:
        """The metadata's model name, else the file name."""
        return self.metadata.model_name or self.path.stem

    @property
    def model_version(self) -> str:
        return self.metadata.model_version

    @property
    def num_bands(self) -> int:
        return self.metadata.num_bands

    @property
    def precision(self) -> str:
        """``fp32``, ``fp16`` or ``int8``."""
        return self.metadata.precision

    @property
    def radiometry(self) -> Radiometry:
        """What the model's input values mean (`vision.radiometry.UNKNOWN` for a schema-1
        model, which records nothing)."""
        return self.metadata.pixel_radiometry

    @property
    def gsd_m(self) -> float | None:
        """The training ground sampling distance in metres, ``None`` when not recorded."""
        return self.metadata.gsd_m

    @property
    def views(self) -> int:
        """Forward passes per chip: the model's test-time views (``vision.tta``), 1 if none."""
        return self.metadata.views


def load_model_info(path: str | Path) -> ModelInfo:
    """Read and validate a model's metadata (the graph itself is loaded by the session).

    Raises:
        ConfigError: the file does not exist.
        ModelFormatError: not an ONNX model of this project (see `read_model_file`).
    """
    p = Path(path)
    try:
        mf = read_model_file(p)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from exc
    return ModelInfo(path=p, sha256=file_sha256(p), metadata=mf.metadata, input_dtype=mf.input_dtype)
