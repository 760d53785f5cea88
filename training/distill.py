"""Knowledge distillation (recipe ``distill:``): a student learns from the labels and from a
teacher's calibrated probabilities.

The loss (`DistillLoss`) is ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE``:
``teacher_T`` softens the teacher's calibrated probabilities (its logits over its own
calibration temperature) by the distillation temperature ``T``, ``student_T`` the student's
logits likewise; the ``T^2`` keeps the soft term's gradients on the scale of the hard one
(Hinton et al. 2015); CE is the labels' cross-entropy with the recipe's label smoothing.

The teacher's targets come one of two ways, chosen by `choose_mode`:

- ``cached``: one pass of the teacher (ONNX Runtime) over the un-augmented training chips
  before epoch 1, kept in the run folder (``distill/teacher_train.npz``; a resumed run reads
  it back). Exact when every augmentation is a symmetry the teacher averages over: a d8
  teacher's output is the mean over the 8 symmetries of the square, so flipping, rotating by
  90 degrees or transposing its input only permutes the views it averages.
- ``on-the-fly``: the teacher runs on each augmented batch (costs a teacher pass per step),
  whenever an augmentation is not such a symmetry (or the teacher averages no views), or when
  ``distill.mixup`` mixes the chips of a batch: the teacher is asked about the very mixed chips
  the student sees, points between the training chips that no cache holds (function matching,
  Beyer et al. 2022, "Knowledge distillation: a good teacher is patient and consistent").
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape
from torch import nn

from training.distributed import World, barrier
from training.progress import Reporter
from vision.atomic import atomic_path, write_text_atomic
from vision.config import AugmentationConfig, DistillConfig
from vision.contracts.model import ModelMetadata
from vision.data import ChipDataset, ChipSource
from vision.errors import ConfigError
from vision.hashing import file_sha256

CACHE_FILE = "distill/teacher_train.npz"
#: Transforms that only permute the views a teacher averages over (``model.tta``).
SYMMETRIES = {
    "flips": {"HorizontalFlip", "VerticalFlip"},
    "d8": {"HorizontalFlip", "VerticalFlip", "RandomRotate90", "Transpose", "D4", "SquareSymmetry"},
}
_BATCH = 128


@dataclass
class Teacher:
    """The teacher model, loaded in ONNX Runtime.

    Attributes:
        source: as the recipe names it; path: the ``.onnx`` read; sha256: of that file.
        meta: its ``vision.*`` metadata (classes, bands, input size, temperature, views).
    """

    source: str
    path: str
    sha256: str
    meta: ModelMetadata
    session: Any

    def log_probs(self, x: np.ndarray) -> np.ndarray:
        """Calibrated log-probabilities (``log_softmax(logits / T_teacher)``) of raw chips N x C x H x W."""
        logits = self.session.run(["logits"], {"pixels": np.ascontiguousarray(x, dtype=np.float32)})[0]
        z = logits.astype(np.float64) / self.meta.temperature
        z -= z.max(1, keepdims=True)
        return (z - np.log(np.exp(z).sum(1, keepdims=True))).astype(np.float32)


def open_teacher(spec: DistillConfig, threads: int | None = None, cuda: bool = False) -> Teacher:
    """Load the teacher named by ``spec.teacher``: a run folder, an ``.onnx`` file or a registry URI.

    Raises:
        ConfigError: nothing there, or no finished run (no ``model.onnx``) in the folder.
    """
    import onnxruntime as ort

    from vision.contracts.model import read_model_file
    from vision.model_uri import is_registry_uri, resolve_model

    source = spec.teacher
    name = source
    if not is_registry_uri(source):
        p = Path(source)
        if p.is_dir():
            p = p / "model.onnx"
            if not p.is_file():
                raise ConfigError(f"distill.teacher {source}: no model.onnx in that folder (is its run finished? "
                                  f"`vision train ... --out {source}` writes it last)")
        elif not p.is_file():
            raise ConfigError(f"distill.teacher {source}: no such run folder or .onnx file "
                              f"(relative paths are from {Path.cwd()})")
        name = str(p)
    with resolve_model(name) as path:
        model = read_model_file(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = (["CUDAExecutionProvider"] if cuda and "CUDAExecutionProvider" in ort.get_available_providers()
                     else []) + ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), opts, providers=providers)
        return Teacher(source, str(Path(path).resolve()), file_sha256(path), model.metadata, session)


def check_teacher(teacher: Teacher, classes: list[str], bands: list[str], input_size: tuple[int, int]) -> None:
    """Refuse a teacher whose outputs or inputs are not the student's.

    Raises:
        ConfigError: naming each of classes, bands, input size that differs.
    """
    m, problems = teacher.meta, []
    if list(m.classes) != list(classes):
        problems.append(f"classes {list(m.classes)} (the recipe's data: {list(classes)})")
    if list(m.bands) != list(bands):
        problems.append(f"bands {list(m.bands)} (the recipe's data: {list(bands)})")
    if tuple(m.input_size) != tuple(input_size):
        problems.append(f"input size {list(m.input_size)} (model.input_size: {list(input_size)})")
    if problems:
        raise ConfigError(f"distill.teacher {teacher.source} does not fit this recipe: its "
                          + "; its ".join(problems) + ". Distil from a teacher trained on the same classes, "
                          "bands and input size")


def choose_mode(augmentations: list[AugmentationConfig], teacher_tta: str | None,
                mixup: float = 0.0) -> tuple[str, str]:
    """(``cached`` or ``on-the-fly``, why): cached only when it is exact (module docstring)."""
    if mixup > 0:
        return "on-the-fly", (f"mixup {mixup:g} mixes the chips of each batch: the teacher is asked about the "
                              "mixed chips themselves")
    names = [a.name for a in augmentations]
    if not names:
        return "cached", "the recipe has no augmentations: the teacher sees the chips as they are"
    allowed = SYMMETRIES.get(teacher_tta or "none", set())
    other = [n for n in names if n not in allowed]
    if not other:
        return "cached", (f"the teacher averages the {teacher_tta} views and every augmentation ({', '.join(names)}) "
                          "only permutes them: its output is the same for every augmented copy of a chip")
    views = f"the {teacher_tta} views" if teacher_tta else "no views (one pass)"
    return "on-the-fly", (f"{', '.join(other)} changes what the teacher sees (it averages {views}): "
                          "its output on the augmented batch is not the same as on the chip")


def _chip_key(source: ChipSource) -> str:
    """sha256 of the training chips in order (the cache is indexed by position)."""
    h = hashlib.sha256()
    for r in source.refs:
        h.update(f"{r.path}\t{r.label}\n".encode())
    return h.hexdigest()


def teacher_pass(teacher: Teacher, source: ChipSource, report: Reporter, what: str) -> np.ndarray:
    """The teacher's calibrated log-probabilities of every chip of ``source`` (no augmentation)."""
    ds, out = ChipDataset(source), []
    with report.bar(what, len(source)) as advance:
        for start in range(0, len(source), _BATCH):
            x = np.stack([ds[i][0].numpy() for i in range(start, min(start + _BATCH, len(source)))])
            out.append(teacher.log_probs(x))
            advance(len(x))
    return np.concatenate(out) if out else np.zeros((0, len(teacher.meta.classes)), np.float32)


def cached_targets(teacher: Teacher, source: ChipSource, out: Path, world: World, report: Reporter
                   ) -> tuple[np.ndarray, float, bool]:
    """The teacher's targets per training chip, the seconds their pass took, and whether they were
    read back: from the run folder when computed there by the same teacher from the same chips,
    else computed (by rank 0) and saved for a resumed run."""
    path, key = out / CACHE_FILE, {"teacher_sha256": teacher.sha256, "chips": _chip_key(source)}
    found = _read_cache(path, key, len(source)) if world.is_main else None
    if world.is_main and found is None:
        t0 = time.perf_counter()
        probs = teacher_pass(teacher, source, report, "distill: teacher pass over the train split (once)")
        seconds = time.perf_counter() - t0
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, log_probs=probs, key=json.dumps(key), seconds=seconds)
        write_text_atomic(path.with_suffix(".json"), json.dumps(
            {**key, "chips_n": len(source), "teacher": teacher.path, "seconds": round(seconds, 1)}, indent=2))
        barrier(world)
        return probs, seconds, False
    barrier(world)
    if found is None:
        found = _read_cache(path, key, len(source))
        if found is None:
            raise ConfigError(f"{path}: rank 0's teacher targets cannot be read here (is the run folder shared?)")
    if world.is_main:
        report.line(f"distill: teacher targets of {len(source)} training chips read back from {escape(str(path))}")
    return found[0], found[1], True


def _read_cache(path: Path, key: dict[str, str], n: int) -> tuple[np.ndarray, float] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["key"])) != key or z["log_probs"].shape[0] != n:
                return None
            return np.asarray(z["log_probs"], np.float32), float(z["seconds"])
    except (OSError, ValueError, KeyError):
        return None  # unreadable: recomputed and replaced


class DistillLoss(nn.Module):
    """``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)``.

    ``t`` are the teacher's calibrated log-probabilities, ``s`` the student's logits.
    """

    def __init__(self, temperature: float, alpha: float, label_smoothing: float = 0.0,
                 weight: torch.Tensor | None = None):
        super().__init__()
        self.temperature, self.alpha = temperature, alpha
        self.ce = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor,
                mixed: torch.Tensor | None = None) -> torch.Tensor:
        """``mixed``: the labels as class probabilities (a mixup batch), used instead of ``labels`` in CE."""
        t = self.temperature
        student = nn.functional.log_softmax(logits.float() / t, 1)
        target = nn.functional.log_softmax(teacher.float() / t, 1)
        soft = nn.functional.kl_div(student, target, reduction="batchmean", log_target=True) * (t * t)
        return self.alpha * soft + (1 - self.alpha) * self.ce(logits, labels if mixed is None else mixed)


def mix(x: torch.Tensor, y: torch.Tensor, classes: int, lam: float, order: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixup: ``lam * x + (1 - lam) * x[order]``, the label that weighs more, and the labels mixed alike.

    The chips are mixed as read (before the model's own normalisation, which is affine, so the
    mix is the same either side of it).
    """
    xf = x.float()
    mixed = lam * xf + (1 - lam) * xf[order]
    one = nn.functional.one_hot(y.long(), classes).float()
    return mixed, (y if lam >= 0.5 else y[order]), lam * one + (1 - lam) * one[order]


class OnTheFly:
    """A training loader whose batches also carry the teacher's targets on the augmented chips.

    With ``mixup`` > 0 each batch is first mixed with a shuffled copy of itself (`mix`), drawn
    from a generator seeded by ``seed`` (the same batches again on a resumed epoch).
    """

    def __init__(self, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], teacher: Teacher,
                 mixup: float = 0.0, seed: tuple[int, ...] = (0,)):
        self.loader, self.teacher, self.mixup, self.seed = loader, teacher, mixup, seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        rng = np.random.default_rng(list(self.seed))
        classes = len(self.teacher.meta.classes)
        for x, y in self.loader:
            labels: tuple[torch.Tensor, ...] = ()
            if self.mixup > 0:
                lam = float(rng.beta(self.mixup, self.mixup))
                x, y, soft = mix(x, y, classes, lam, torch.from_numpy(rng.permutation(len(x))))
                labels = (soft,)
            yield x, y, torch.from_numpy(self.teacher.log_probs(x.numpy())), *labels


@dataclass
class Distillation:
    """What the trainer needs: the loss, the teacher's targets, and what to record."""

    spec: DistillConfig
    teacher: Teacher
    mode: str
    reason: str
    targets: torch.Tensor | None = None
    cache_seconds: float = 0.0
    cache_reused: bool = False

    def criterion(self, label_smoothing: float, weight: torch.Tensor | None) -> DistillLoss:
        return DistillLoss(self.spec.temperature, self.spec.alpha, label_smoothing, weight)

    def batches(self, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], seed: tuple[int, ...] = (0,)
                ) -> Iterable[Any]:
        """``loader`` as it is (cached: its dataset carries the targets), or with the teacher run on it.

        ``seed`` (recipe seed, epoch, rank) draws the mixup of each batch.
        """
        return loader if self.mode == "cached" else OnTheFly(loader, self.teacher, self.spec.mixup, seed)

    def record(self) -> dict[str, Any]:
        """For ``lineage.json``, MLflow and the model card."""
        return {"teacher": self.teacher.source, "teacher_onnx": self.teacher.path,
                "teacher_sha256": self.teacher.sha256, "teacher_model": self.teacher.meta.model_name,
                "teacher_version": self.teacher.meta.model_version, "teacher_tta": self.teacher.meta.tta,
                "temperature": self.spec.temperature, "alpha": self.spec.alpha, "mixup": self.spec.mixup,
                "mode": self.mode, "mode_reason": self.reason,
                **({"cache": CACHE_FILE, "cache_seconds": round(self.cache_seconds, 1)}
                   if self.mode == "cached" else {})}

    def summary(self) -> str:
        return (f"distilled from {self.teacher.meta.model_name or self.teacher.source} "
                f"({self.teacher.meta.tta or 'one pass'}, T {self.spec.temperature:g}, alpha {self.spec.alpha:g}"
                f"{f', mixup {self.spec.mixup:g}' if self.spec.mixup else ''}); "
                f"teacher targets {self.mode}: {self.reason}")

    def prepare(self, source: ChipSource, out: Path, world: World, report: Reporter) -> None:
        """Cached mode: the teacher's targets of every training chip, before epoch 1."""
        if self.mode != "cached":
            return
        targets, self.cache_seconds, self.cache_reused = cached_targets(self.teacher, source, out, world, report)
        self.targets = torch.from_numpy(targets)


def plan(spec: DistillConfig, teacher: Teacher, augmentations: list[AugmentationConfig], classes: list[str],
         bands: list[str], input_size: tuple[int, int], report: Reporter) -> Distillation:
    """Check ``teacher`` against the recipe, choose how its targets are made, and say so.

    Raises:
        ConfigError: the teacher does not fit (`check_teacher`).
    """
    check_teacher(teacher, classes, bands, input_size)
    mode, reason = choose_mode(augmentations, teacher.meta.tta, spec.mixup)
    d = Distillation(spec, teacher, mode, reason)
    report.line(f"distill: teacher {escape(teacher.path)} (sha256 {teacher.sha256[:12]}); "
                f"targets {mode}: {escape(reason)}")
    return d
