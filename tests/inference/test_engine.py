"""The engine interface: one per ``--engine``, each running units into the same callback."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.choices import Device, EngineKind
from inference.engine import EngineSetup, make_engine
from inference.local_engine import LocalEngine
from inference.model import load_model_info
from inference.plan import make_plan
from inference.predict import ReadOptions
from inference.session import SessionOptions
from vision.contracts.predictions import PredictionRow
from vision.errors import ConfigError

from .conftest import random_chips


def _setup(model: Path) -> EngineSetup:
    info = load_model_info(model)
    return EngineSetup(model=info, model_path=model,
                       session=SessionOptions(device=Device.CPU, threads=1, batch_size=7),
                       read=ReadOptions.for_model(info, 0.5), workers=2)


def test_engine_names() -> None:
    assert EngineKind.parse("ray") is EngineKind.RAY
    with pytest.raises(ConfigError, match="--engine must be one of local, ray"):
        EngineKind.parse("spark")


def test_make_engine(rgb_model: Path) -> None:
    assert isinstance(make_engine(EngineKind.LOCAL, _setup(rgb_model)), LocalEngine)
    pytest.importorskip("ray")
    from inference.ray_engine import RayEngine

    assert isinstance(make_engine(EngineKind.RAY, _setup(rgb_model)), RayEngine)


def test_local_engine_hands_every_unit_to_the_callback(rgb_model: Path, tmp_path: Path) -> None:
    chips = [str(p) for p in random_chips(tmp_path, 600)]
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 broken")
    setup = _setup(rgb_model)
    plan = make_plan([*chips, str(tmp_path / "bad.jpg")], setup.model, (64, 64))
    engine = make_engine(EngineKind.LOCAL, setup)
    engine.start()
    got: dict[str, tuple[list[PredictionRow], int]] = {}

    def on_unit(unit: object, rows: list[PredictionRow], n: int) -> None:
        got[unit.uid] = (rows, n)  # type: ignore[attr-defined]

    engine.run(plan, plan.units, on_unit)
    assert sorted(got) == sorted(u.uid for u in plan.units)
    rows = [r for uid in sorted(got) for r in got[uid][0]]
    assert len(rows) == 601 and sum(n for _, n in got.values()) == 600
    assert [r["path"] for r in rows if r["status"] == "error"] == [str(tmp_path / "bad.jpg")]


def test_a_failing_callback_stops_the_run(rgb_model: Path, tmp_path: Path) -> None:
    chips = [str(p) for p in random_chips(tmp_path, 600)]
    setup = _setup(rgb_model)
    plan = make_plan(chips, setup.model, (64, 64))
    engine = make_engine(EngineKind.LOCAL, setup)

    def on_unit(unit: object, rows: list[PredictionRow], n: int) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        engine.run(plan, plan.units, on_unit)
