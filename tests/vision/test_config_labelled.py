"""vision.config DataConfig: the keys of the labelled sources (scenes, stac) and their rules."""

from __future__ import annotations

from typing import Any

import pytest

from vision.config import dump_experiment, validate_experiment
from vision.errors import ConfigError

MODEL = {"architecture": "efficientnet_lite0", "name": "m"}


def _cfg(data: dict[str, Any]) -> Any:
    return validate_experiment({"data": data, "model": MODEL})


def test_scenes_recipes_validate_and_dump_their_keys() -> None:
    cfg = _cfg({"source": "scenes", "scenes": ["a.tif"], "labels": ["l.gpkg"], "class_field": "crop",
                "split": {"method": "blocks", "block_m": 5000, "val": 0.15, "test": 0.15},
                "radiometry": {"kind": "reflectance", "bits": 16, "level": "L2A", "scale": 0.0001}})
    assert cfg.data.split is not None and cfg.data.split.block_m == 5000 and cfg.data.min_inside == 0.75
    assert cfg.data.max_cloud == 0.5 and cfg.data.split.buffer_m is None
    assert "class_field: crop" in dump_experiment(cfg) and "block_m: 5000" in dump_experiment(cfg)


def test_other_sources_dump_as_before_and_refuse_labelled_keys() -> None:
    cfg = _cfg({"source": "eurosat-rgb"})
    assert "min_inside" not in dump_experiment(cfg) and "scenes" not in dump_experiment(cfg)
    with pytest.raises(ConfigError, match="labels, min_inside: only for data.source scenes or stac"):
        _cfg({"source": "folder", "root": "x", "labels": ["l.gpkg"], "min_inside": 0.5})


@pytest.mark.parametrize(("data", "message"), [
    ({"source": "scenes", "labels": ["l.gpkg"]}, "needs data.scenes"),
    ({"source": "scenes", "scenes": ["a.tif"]}, "needs data.labels"),
    ({"source": "stac"}, "needs data.root"),
    ({"source": "stac", "root": "c.json", "labels": ["l.gpkg"]}, "takes its scenes and labels from the catalog"),
    ({"source": "scenes", "scenes": {"train": ["a.tif"]}, "labels": ["l"], "split": {"method": "random"}},
     "already splits the windows"),
    ({"source": "scenes", "scenes": ["a.tif"], "labels": ["l"], "split": {"val": 0.5, "test": 0.5}},
     "leaves nothing to train on"),
    ({"source": "scenes", "scenes": ["a.tif"], "labels": ["l"], "radiometry": {"kind": "pretty"}},
     "not a radiometry object"),
    ({"source": "scenes", "scenes": ["a.tif"], "labels": ["l"], "min_inside": 0}, "min_inside"),
])
def test_labelled_recipes_that_cannot_work_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _cfg(data)
