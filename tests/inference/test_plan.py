"""The plan: every input's kind, scene grids and chunks, work units and their identity."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from inference.model import load_model_info
from inference.plan import CHIP_BLOCK, make_plan

from .conftest import random_chips, write_tif


def test_units_cover_chips_and_scene_windows(rgb_model: Path, tmp_path: Path,
                                             tif_factory: Callable[..., Path]) -> None:
    chips = [str(p) for p in random_chips(tmp_path / "chips", CHIP_BLOCK + 3)]
    scene = tif_factory("scene.tif", np.ones((3, 300, 200), np.uint8))
    plan = make_plan([*chips, str(scene)], load_model_info(rgb_model), (64, 64), workers=2)
    assert [u.uid for u in plan.units if u.kind == "chips"] == ["c000000", "c000001"]
    assert [len(u.chips) for u in plan.units if u.kind == "chips"] == [CHIP_BLOCK, 3]
    (s,) = plan.scenes
    assert (s.grid.rows, s.grid.cols) == (5, 4) and plan.n_windows == 20
    assert sum(u.n_rows for u in plan.units if u.kind == "scene") == 20
    assert all(u.uid.startswith("s00000-") for u in plan.units if u.kind == "scene")


def test_same_stem_in_two_folders_gets_distinct_outputs(rgb_model: Path, tmp_path: Path) -> None:
    arr = np.ones((3, 100, 100), np.uint8)
    a = write_tif(tmp_path / "a" / "tile.tif", arr)
    b = write_tif(tmp_path / "b" / "tile.tif", arr)
    plan = make_plan([str(a), str(b)], load_model_info(rgb_model), (64, 64))
    stems = [s.stem for s in plan.scenes]
    assert len(set(stems)) == 2 and all(st.startswith("tile-") for st in stems)


def test_digest_names_the_work_and_changes_with_it(rgb_model: Path, tmp_path: Path,
                                                  tif_factory: Callable[..., Path]) -> None:
    model = load_model_info(rgb_model)
    scene = tif_factory("scene.tif", np.ones((3, 100, 100), np.uint8))
    chips = [str(p) for p in random_chips(tmp_path / "chips", 3)]
    d1 = make_plan([*chips, str(scene)], model, (64, 64)).digest()
    assert make_plan([*chips, str(scene)], model, (64, 64)).digest() == d1
    assert make_plan(chips, model, (64, 64)).digest() != d1
    tif_factory("scene.tif", np.full((3, 100, 100), 2, np.uint8))  # same size, new content
    assert make_plan([*chips, str(scene)], model, (64, 64)).digest() != d1


def test_a_name_that_is_not_utf8_does_not_stop_the_plan(rgb_model: Path, tmp_path: Path) -> None:
    """It used to raise UnicodeEncodeError in the digest and write nothing for the good
    chips. Now it is an error entry with a valid UTF-8 path; the digest is computed."""
    good = [str(p) for p in random_chips(tmp_path, 2)]
    raw = os.path.join(os.fsencode(tmp_path), b"\xff\xfe.jpg")
    with open(raw, "wb") as f:
        f.write(b"x")
    plan = make_plan([*good, os.fsdecode(raw)], load_model_info(rgb_model), (64, 64))
    entries = {c.path: c for c in plan.chips}
    bad = entries[f"{tmp_path}/\ufffd\ufffd.jpg"]
    assert bad.error and "not valid UTF-8" in bad.error and bad.source == os.fsdecode(raw)
    assert all(entries[g].error is None for g in good)
    assert len(plan.digest()) == 64
