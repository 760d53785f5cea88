"""Experiment recipes: strict, typed, loaded with ``yaml.safe_load`` and never executed.

A recipe declares data, model, augmentations and schedule. Unknown keys are errors (with the
closest valid key suggested), so a typo is caught before hours of training; so are values no
run can use: infinite or NaN numbers, input sizes outside 1..`MAX_INPUT_SIDE`, negative band
indices, unknown architectures. `check_resources` then checks what the recipe names on disk
(the weights file) before any data is read. ``--set key=value`` overrides use dotted paths
(``--set model.weights=none``), parsed as YAML scalars.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from vision.contracts.model import MAX_INPUT_SIDE
from vision.errors import ConfigError, WeightsFileError, WeightsNotAvailableError
from vision.overrides import apply_overrides, expand_env

#: ``model.weights`` values that are not paths.
NAMED_WEIGHTS = ("imagenet", "none")


class _Strict(BaseModel):
    # allow_inf_nan=False: `train.lr: .inf` (or NaN anywhere) is refused, not trained with.
    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)


class AugmentationConfig(_Strict):
    """One albumentations transform: its class name and keyword arguments."""

    name: str = Field(description="albumentations class, e.g. HorizontalFlip, RandomRotate90")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments")


class SplitConfig(_Strict):
    """How windows sampled from labelled scenes are split (``data.split``): whole spatial
    blocks (default) or at random (`vision.data.splits`)."""

    method: Literal["blocks", "random"] = Field(
        default="blocks", description="blocks: squares of block_m metres go whole to one split; random: "
        "windows at random (a warning when the labels are spatially clustered)")
    block_m: float = Field(default=2000.0, gt=0, description="block side in metres")
    buffer_m: float | None = Field(
        default=None, ge=0, description="blocks: drop training windows closer than this to a val/test "
        "window (default block_m, so the smallest train-test distance is at least block_m)")
    val: float = Field(default=0.1, ge=0, lt=1, description="share of the windows for validation")
    test: float = Field(default=0.1, ge=0, lt=1, description="share of the windows for testing")
    seed: int = Field(default=0, description="seed of the draw")
    regions: int = Field(
        default=4, ge=1, description="blocks: val and test are each about this many compact groups of "
        "blocks (fewer groups: less training data lost to the buffer; more: held-out areas more spread)")

    @model_validator(mode="after")
    def _shares(self) -> SplitConfig:
        if self.val + self.test >= 1:
            raise ValueError(f"val {self.val} + test {self.test} leaves nothing to train on")
        return self


class DataConfig(_Strict):
    """Where the labelled chips are and how to read them."""

    #: Keys only the labelled sources (``scenes``, ``stac``) read.
    LABELLED_KEYS: ClassVar[tuple[str, ...]] = (
        "scenes", "labels", "class_field", "label_id_field", "manifests", "aoi", "aoi_field", "min_inside",
        "max_per_polygon", "sampling", "stride", "background", "background_buffer_m", "background_max",
        "max_nodata", "max_cloud", "split", "cache_mb")

    source: Literal["eurosat-rgb", "eurosat-ms", "folder", "manifest", "synthetic", "scenes", "stac"] = Field(
        description="reader: WebDataset shards, EuroSAT MS GeoTIFFs, class folders, a manifest"
        " (CSV/Parquet path,label[,group]), the generated demo set, labelled scenes (GeoTIFF/STAC "
        "scenes + vector labels) or a STAC label catalog (root: its catalog.json)"
    )
    root: str | None = Field(
        default=None,
        description="dataset folder; default VISION_DATA_DIR/<source> for EuroSAT, "
        "and the demo output folder for synthetic; for scenes the folder relative paths are "
        "under, for stac the catalog/collection JSON",
    )
    train: str = Field(default="train", description="split name, sub-folder or manifest path")
    val: str = Field(default="val", description="split used for model selection and calibration")
    test: str | None = Field(
        default="test", description="held-out split, reported but never used for selection"
    )
    bands: list[str | int] | None = Field(
        default=None, description="band names or 0-based indices to use (indices must be below the "
        "chips' band count); default all"
    )
    classes: list[str] | None = Field(
        default=None, description="class names in label order; default from the dataset"
    )
    limit_per_split: int | None = Field(
        default=None, ge=1,
        description="use at most this many samples of each split (train, val and test), a seeded "
        "random subset: smoke runs and demos; the model card records the limit",
    )
    num_workers: int = Field(default=1, ge=0, description="data loader worker processes")
    # --- labelled scenes and STAC label catalogs (vision.data.labelled) --------------------
    scenes: list[str] | dict[str, list[str]] | None = Field(
        default=None, description="scenes: GeoTIFF paths/globs and STAC item/catalog JSON files; a "
        "mapping {train: [...], val: [...], test: [...]} gives each split its own scenes")
    labels: list[str] | None = Field(
        default=None, description="vector label files (GeoJSON, GeoPackage, Shapefile; points, polygons, "
        "multipolygons; any CRS)")
    class_field: str | None = Field(
        default=None, description="label attribute holding the class (default `class`; stac: "
        "label:properties)")
    label_id_field: str | None = Field(default=None, description="label attribute naming each label")
    manifests: list[str] | None = Field(
        default=None, description="extra GeoTIFF chip manifests path,label[,group][,split] merged in "
        "(e.g. the review service's dataset export)")
    aoi: str | None = Field(default=None, description="areas of interest (GeoJSON/GeoPackage): each "
                            "window's AOI becomes an audit group")
    aoi_field: str | None = Field(default=None, description="AOI id attribute (default: feature index)")
    min_inside: float = Field(default=0.75, gt=0, le=1,
                              description="share of a window that must lie inside its class's polygons")
    max_per_polygon: int | None = Field(default=None, ge=1, description="most windows per polygon")
    sampling: Literal["grid", "jitter"] = Field(
        default="grid", description="polygon windows on a grid or at random positions")
    stride: int | None = Field(default=None, ge=1, description="grid step in pixels (default the window size)")
    background: str | None = Field(
        default=None, description="class name of background windows (far from every label); none by default")
    background_buffer_m: float = Field(default=100.0, ge=0,
                                       description="least distance of a background window from any label")
    background_max: int = Field(default=1000, ge=0, description="most background windows per scene")
    max_nodata: float = Field(default=0.0, ge=0, le=1,
                              description="largest share of nodata pixels a window may have")
    max_cloud: float = Field(default=0.5, ge=0, le=1,
                             description="windows with a larger cloud fraction are skipped (as vision infer "
                             "--max-cloud)")
    gsd_m: float | None = Field(
        default=None, gt=0, description="the chips' ground sampling distance in metres, recorded in "
        "the model (default: EuroSAT 10 m, else from GeoTIFF chips' transforms); for scenes: read every "
        "scene at this GSD")
    radiometry: dict[str, Any] | None = Field(
        default=None, description="what the pixel values mean, recorded in the model (vision.radiometry): "
        "needed for data that declares nothing, e.g. {kind: reflectance, level: L2A, scale: 0.0001} or "
        "{kind: display, bits: 8}; EuroSAT, JPEG/PNG chips and labelled scenes need none")
    split: SplitConfig | None = Field(
        default=None, description="how windows are split (default blocks; scenes given per split and "
        "STAC ml-aoi:split keep theirs)")
    cache_mb: int = Field(default=4096, ge=0,
                          description="windows kept in memory after the first read (beyond: read again)")

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Other sources dump as before: their resolved recipe (and its config hash) is unchanged.
        out = handler(self)
        if self.source not in ("scenes", "stac"):
            for k in self.LABELLED_KEYS:
                out.pop(k, None)
            for k in ("gsd_m", "radiometry"):  # declared only when set
                if out.get(k) is None:
                    out.pop(k, None)
        return out

    @field_validator("radiometry")
    @classmethod
    def _radiometry(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            from vision.radiometry import Radiometry

            Radiometry.from_obj(v)  # ValueError names what is wrong
        return v

    @model_validator(mode="after")
    def _labelled_keys(self) -> DataConfig:
        if self.source not in ("scenes", "stac"):
            used = [k for k in self.LABELLED_KEYS if k in self.model_fields_set]
            if used:
                raise ValueError(f"{', '.join(used)}: only for data.source scenes or stac")
            return self
        if self.source == "scenes" and not self.scenes:
            raise ValueError("data.source scenes needs data.scenes (GeoTIFFs or STAC items)")
        if self.source == "scenes" and not (self.labels or self.manifests):
            raise ValueError("data.source scenes needs data.labels (vector label files) or data.manifests")
        if self.source == "stac" and not self.root:
            raise ValueError("data.source stac needs data.root: the catalog or collection JSON")
        if self.source == "stac" and (self.scenes or self.labels):
            raise ValueError("data.source stac takes its scenes and labels from the catalog (data.root)")
        if isinstance(self.scenes, dict):
            if self.split is not None:
                raise ValueError("data.scenes per split already splits the windows: remove data.split")
            if not self.scenes:
                raise ValueError("data.scenes is empty")
        return self

    @field_validator("bands")
    @classmethod
    def _band_indices(cls, v: list[str | int] | None) -> list[str | int] | None:
        if v is not None:
            if not v:
                raise ValueError("bands is empty: list band names or 0-based indices, or leave it out for all")
            negative = [b for b in v if isinstance(b, int) and b < 0]
            if negative:
                raise ValueError(f"band indices are 0-based and not negative: {negative}")
            if len(set(map(str, v))) != len(v):
                raise ValueError(f"bands lists a band twice: {v}")
        return v


class ModelConfig(_Strict):
    """Which network and which starting weights."""

    architecture: str = Field(description="a name from `vision.models.list_models()`")
    weights: str = Field(
        default="imagenet", description="imagenet | none | path to a state_dict or checkpoint "
        "(a file torch.load(weights_only=True) reads as a state_dict); ${VAR} and ${VAR:-default} expand"
    )
    name: str = Field(min_length=1, description="registered model name in MLflow")
    input_size: tuple[int, int] = Field(
        default=(64, 64), description=f"H, W the model takes, each 1..{MAX_INPUT_SIDE}")
    work_size: tuple[int, int] | None = Field(
        default=None,
        description="H, W the network runs at: chips of input_size are resized (bilinear) "
        "inside the model, so the ONNX input, scene windows and explanations keep input_size",
    )
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    tta: Literal["none", "flips", "d8"] = Field(
        default="none",
        description="test-time views averaged by the trained model (in its ONNX graph too): "
        "none, flips (4 views) or d8 (the 8 symmetries of the square; square inputs only); "
        "multiplies inference cost by the view count",
    )

    @field_validator("weights")
    @classmethod
    def _expand(cls, v: str) -> str:
        return expand_env(v)

    @field_validator("architecture")
    @classmethod
    def _registered(cls, v: str) -> str:
        from vision.models import get_spec

        try:
            get_spec(v)
        except ConfigError as exc:  # names the closest architecture and lists them all
            raise ValueError(str(exc)) from None
        return v

    @field_validator("input_size", "work_size")
    @classmethod
    def _bounded(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not all(1 <= side <= MAX_INPUT_SIDE for side in v):
            raise ValueError(f"{list(v)}: each side must be 1..{MAX_INPUT_SIDE} pixels")
        return v

    @model_validator(mode="after")
    def _d8_needs_a_square(self) -> ModelConfig:
        size = self.work_size or self.input_size
        if self.tta == "d8" and size[0] != size[1]:
            raise ValueError(f"tta d8 transposes chips: it needs a square size, not {list(size)}")
        return self


class TrainConfig(_Strict):
    """Optimisation schedule."""

    epochs: int = Field(default=8, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    warmup_epochs: float = Field(default=0.5, ge=0)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    imbalance: Literal["none", "class_weights", "balanced_sampler"] = Field(
        default="none", description="how to counter class imbalance"
    )
    early_stopping_patience: int | None = Field(
        default=None, ge=1, description="epochs without improvement before stopping"
    )
    monitor: Literal["val_accuracy", "val_macro_f1", "val_loss"] = "val_accuracy"
    amp: bool = Field(default=True, description="mixed precision on CUDA (ignored on CPU)")
    channels_last: bool = Field(default=True, description="channels_last memory format (faster on CUDA and CPU)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_steps_per_epoch: int | None = Field(
        default=None, ge=1, description="cap steps per epoch (smoke runs and tests)"
    )
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads")
    ema_decay: float | None = Field(
        default=None, gt=0, lt=1,
        description="keep an exponential moving average of the weights (per step, this "
        "decay; e.g. 0.998); validation, checkpoints and export then use the average",
    )
    decay_norm_and_bias: bool = Field(
        default=True,
        description="apply weight decay to normalisation weights and biases too (false: "
        "only to convolution and linear weights)",
    )
    interpolate_start: list[float] | None = Field(
        default=None, min_length=1,
        description="after training, also try the weights these fractions of the way from the starting "
        "weights (model.weights) to the trained ones, e.g. [0.25, 0.5, 0.75], and keep the one best on "
        "val (the trained weights, 1.0, always compete): WiSE-FT (`training.interpolate`)",
    )

    soup: int | None = Field(default=None, ge=2, le=16, description="train this many models from the same "
                             "start, seeds seed, seed + 1, ..., one after another, and make the mean of their "
                             "weights the model: a uniform model soup (`training.soup`)")

    @field_validator("interpolate_start")
    @classmethod
    def _fractions(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(0 < w <= 1 for w in v):
            raise ValueError(f"{v}: each fraction must be in (0, 1] (0 is the starting weights, 1 the trained)")
        return v


class CalibrationConfig(_Strict):
    """Post-hoc calibration and per-class operating points."""

    temperature_scaling: bool = True
    ece_max: float | None = Field(default=None, gt=0, le=1, description="promotion bound on ECE")
    targets: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="per class: {precision: 0.9} or {recall: 0.95}; sets vision.thresholds",
    )


class PromotionConfig(_Strict):
    """Minimums a version must meet before it may become `champion`."""

    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    min_group_accuracy: float | None = Field(default=None, ge=0, le=1)
    min_group_size: int = Field(
        default=30, ge=1, description="groups with fewer samples are reported but not gated (too small to judge)"
    )
    group_by: str | None = None


class DistillConfig(_Strict):
    """Train a student from a teacher's calibrated probabilities (`training.distill`)."""

    teacher: str = Field(min_length=1, description="run folder (its model.onnx), .onnx file or models:/NAME@ALIAS "
                         "with the recipe's classes, bands and input size; ${VAR} and ${VAR:-default} expand")
    temperature: float = Field(default=4.0, gt=0, le=100, description="softening of both distributions")
    alpha: float = Field(default=0.9, gt=0, le=1, description="weight of the teacher term (KL x T^2); 1 - alpha: "
                         "the labels' cross-entropy (with train.label_smoothing)")
    mixup: float = Field(default=0.0, ge=0, le=10, description="mix each training batch with a shuffled copy of "
                         "itself, lam ~ Beta(mixup, mixup), and distil on the mixed chips (function matching): the "
                         "teacher then runs on every batch (on-the-fly targets); the labels' term mixes likewise; "
                         "0: off")

    @field_validator("teacher")
    @classmethod
    def _expand(cls, v: str) -> str:
        return expand_env(v)


class ExperimentConfig(_Strict):
    """A whole training recipe."""

    seed: int = 42
    data: DataConfig
    model: ModelConfig
    augmentations: list[AugmentationConfig] = Field(default_factory=list)
    train: TrainConfig = Field(default_factory=TrainConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    experiment: str | None = Field(default=None, description="MLflow experiment name")
    distill: DistillConfig | None = Field(default=None, description="learn from a teacher model too")

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        if out.get("distill") is None:  # recipes without it keep their config hash
            out.pop("distill", None)
        return out

    @model_validator(mode="after")
    def _interpolation_needs_a_trained_start(self) -> ExperimentConfig:
        if self.train.interpolate_start and self.model.weights in NAMED_WEIGHTS:
            raise ValueError(f"train.interpolate_start interpolates toward model.weights, and {self.model.weights} "
                             "weights have no classifier for these classes: start from a model trained on the "
                             "same task (a run's checkpoints/best.pt), or drop interpolate_start")
        return self

    @field_validator("augmentations")
    @classmethod
    def _known_transforms(cls, v: list[AugmentationConfig]) -> list[AugmentationConfig]:
        import albumentations as A

        for aug in v:
            if not isinstance(getattr(A, aug.name, None), type):
                raise ValueError(f"unknown albumentations transform {aug.name!r}")
        return v


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load and validate a recipe.

    Raises:
        ConfigError: the file is missing, not YAML, or does not match the schema.
    """
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"recipe not found: {p}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a recipe is a YAML mapping")
    raw = apply_overrides(raw, overrides or [])
    return validate_experiment(raw, source=str(p))


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class of the section ``loc`` points into (``("train",)`` -> `TrainConfig`)."""
    model: type[BaseModel] = ExperimentConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        inner = field.annotation
        for cand in (inner, *getattr(inner, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
        else:
            return None
    return model


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """`` (did you mean `train.epochs`?)`` for an unknown key close to a valid one."""
    section = _section_model(loc[:-1])
    if section is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(section.model_fields), n=1, cutoff=0.6)
    if not close:
        return f" (valid keys here: {', '.join(section.model_fields)})"
    prefix = ".".join(str(x) for x in loc[:-1] if not isinstance(x, int))
    return f" (did you mean `{prefix + '.' if prefix else ''}{close[0]}`?)"


def validate_experiment(raw: dict[str, Any], source: str = "<recipe>") -> ExperimentConfig:
    """Validate a raw dict as an `ExperimentConfig`, with a readable error."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{source}: invalid recipe"]
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key" + _did_you_mean(tuple(err["loc"]))
            elif err["type"] == "finite_number":
                msg = "must be a finite number (not inf or NaN)"
            lines.append(f"  {loc}: {msg}")
        raise ConfigError("\n".join(lines)) from exc


def check_resources(cfg: ExperimentConfig) -> None:
    """What the recipe names on disk, checked before any data is read.

    ``model.weights`` other than ``imagenet``/``none`` must be an existing file that
    ``torch.load(weights_only=True)`` reads as a state_dict (or a checkpoint holding one).

    Raises:
        ConfigError: naming the file and what is wrong with it.
    """
    weights = cfg.model.weights
    if weights in NAMED_WEIGHTS:
        return
    from vision.models import load_state_dict_file

    try:
        state = load_state_dict_file(weights)
    except WeightsNotAvailableError:
        raise ConfigError(f"model.weights {weights}: no such file (give a state_dict file, imagenet or none)") from None
    except WeightsFileError as exc:
        raise ConfigError(f"model.weights {weights}: {exc.reason}; give a .pt/.pth state_dict, imagenet or none"
                          ) from exc
    if not state or not all(hasattr(v, "shape") for v in state.values()):
        raise ConfigError(f"model.weights {weights}: not a state_dict (no tensors in it)")


def dump_experiment(cfg: ExperimentConfig) -> str:
    """The resolved recipe as YAML (saved beside every output)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
