"""The engine interface: what runs a job's work units through the model.

Two engines implement it: `inference.local_engine.LocalEngine` (reader threads, a batcher
and model streams in this process) and `inference.ray_engine.RayEngine` (an actor pool on
a Ray cluster). Both turn each unit into the same rows (`inference.predict`) and hand every
finished unit to the runner's callback, which records it in the job folder; so resume,
outputs and ``_SUCCESS`` do not depend on the engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from inference.choices import EngineKind
from inference.model import ModelInfo
from inference.plan import Plan, Unit
from inference.predict import ReadOptions, ReadSink
from inference.session import Device, SessionOptions
from vision.contracts.predictions import PredictionRow

__all__ = ["Engine", "EngineKind", "EngineSetup", "OnUnit", "make_engine"]

#: Called once per finished unit (on one thread at a time): the unit, its rows, and how
#: many of them the model classified.
OnUnit = Callable[[Unit, list[PredictionRow], int], None]


@dataclass(frozen=True)
class EngineSetup:
    """What every engine is built from.

    Attributes:
        model: the model's metadata and identity.
        model_path: the local ``.onnx`` file.
        session: how to build ONNX Runtime sessions (device, threads, batch size, streams).
        read: what reading a unit needs (bands, input size, fill, nodata limit).
        workers: reader threads (local) or actors (Ray, ``None`` for its default).
        prefetch: batches read ahead of the model (local).
        device: the device asked for (Ray actors resolve ``auto`` where they run).
        batch_size: the batch size asked for (``None``: each Ray actor's device default).
    """

    model: ModelInfo
    model_path: Path
    session: SessionOptions
    read: ReadOptions
    workers: int | None
    prefetch: int = 4
    device: Device = Device.AUTO
    batch_size: int | None = None


class Engine(ABC):
    """Runs work units through the model."""

    def __init__(self, setup: EngineSetup):
        self.setup = setup

    def start(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Begin what can begin before the plan is made (the local engine builds its ONNX
        Runtime session while the inputs are probed and hashed)."""

    @abstractmethod
    def run(self, plan: Plan, units: Sequence[Unit], on_unit: OnUnit,
            sink: ReadSink | None = None) -> None:
        """Classify ``units`` of ``plan``; call ``on_unit`` for each as it finishes.

        ``sink`` is handed the pixels of every scene read, where the engine reads in this
        process (the quicklooks are drawn from them). An exception raised by ``on_unit`` (a
        failed write) stops the run and propagates; the units already recorded stay
        recorded.
        """


def make_engine(kind: EngineKind, setup: EngineSetup) -> Engine:
    """The engine named by ``--engine``."""
    if kind is EngineKind.RAY:
        from inference.ray_engine import RayEngine  # imports Ray only when asked for

        return RayEngine(setup)
    from inference.local_engine import LocalEngine

    return LocalEngine(setup)
