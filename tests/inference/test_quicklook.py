"""Quicklooks: the scene's pixels gathered while it is read equal those read again from the
file, the stretch is the project's, and the picture shows classes and a legend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from inference.model import load_model_info
from inference.palette import class_colours
from inference.plan import make_plan
from inference.quicklook import (
    CanvasSink,
    canvas_from_file,
    fast_stretch_uint8,
    quicklook_shape,
    render,
)
from inference.readers import read_chunk
from vision.bands import stretch_uint8

from .conftest import CLASSES


@pytest.mark.parametrize("dtype, top", [(np.uint8, 255), (np.uint16, 5000), (np.uint16, 3)])
def test_fast_stretch_equals_the_projects_stretch(dtype: type, top: int) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, top, (3, 300, 200)).astype(dtype)
    valid = rng.random((300, 200)) > 0.2
    np.testing.assert_array_equal(fast_stretch_uint8(data, valid), stretch_uint8(data, valid))
    none = np.zeros((300, 200), bool)
    np.testing.assert_array_equal(fast_stretch_uint8(data, none), stretch_uint8(data, none))


def test_canvas_from_reads_equals_canvas_from_file(rgb_model: Path,
                                                   tif_factory: Callable[..., Path]) -> None:
    """The picture of a scene gathered from the job's own chunk reads is the one read back
    from the file (a resumed job draws it that way), pixel for pixel."""
    arr = np.random.default_rng(2).integers(1, 255, (3, 1500, 900), dtype=np.uint8)
    arr[:, :300, :200] = 0
    scene_path = tif_factory("s.tif", arr, nodata=0, blocksize=256)
    model = load_model_info(rgb_model)
    plan = make_plan([str(scene_path)], model, (64, 64))
    (scene,) = plan.scenes
    sink = CanvasSink(plan, model.bands)
    for unit in plan.units:
        assert unit.chunk is not None
        read_chunk(scene.info, scene.grid, scene.chunks[unit.chunk], 0.5, None,
                   sink.adder(0, unit.chunk))
    from_reads = sink.take(0)
    assert from_reads is not None and from_reads.shape == quicklook_shape(1500, 900) == (1024, 614)
    from_file = canvas_from_file(scene, model.bands)
    np.testing.assert_array_equal(from_reads.data, from_file.data)
    np.testing.assert_array_equal(from_reads.valid, from_file.valid)
    assert not from_file.valid[:200, :130].any() and from_file.valid[400:, 300:].all()


def test_an_incomplete_canvas_is_not_used(rgb_model: Path, tif_factory: Callable[..., Path]) -> None:
    scene_path = tif_factory("s.tif", np.ones((3, 700, 700), np.uint8))
    model = load_model_info(rgb_model)
    plan = make_plan([str(scene_path)], model, (64, 64))
    sink = CanvasSink(plan, model.bands)
    scene = plan.scenes[0]
    read_chunk(scene.info, scene.grid, scene.chunks[0], 0.5, None, sink.adder(0, 0))
    assert len(scene.chunks) > 1 and sink.take(0) is None  # a resumed scene: read the file


def test_render_shows_classes_and_a_legend(rgb_model: Path, tif_factory: Callable[..., Path]) -> None:
    arr = np.full((3, 256, 256), 100, np.uint8)
    arr[:, :, 128:] = 200
    scene_path = tif_factory("s.tif", arr)
    model = load_model_info(rgb_model)
    (scene,) = make_plan([str(scene_path)], model, (64, 64)).scenes
    grid = np.full((4, 4), 255, np.uint8)
    grid[0, 0], grid[3, 3] = 1, 3  # Forest top-left, SeaLake bottom-right
    image = render(canvas_from_file(scene, model.bands), grid, 255, CLASSES)
    assert image.mode == "RGB" and image.height == 256 and image.width > 256
    px = np.asarray(image)
    colours = class_colours(CLASSES)
    forest = np.asarray(colours[1], float)
    scene_grey = px[100, 20].astype(float)  # an unclassified window shows the scene alone
    assert len(set(scene_grey.tolist())) == 1
    mixed = px[10, 10].astype(float)
    assert np.abs(mixed - (0.45 * scene_grey + 0.55 * forest)).max() <= 1
    legend = px[:, 256:].reshape(-1, 3)
    for c in colours:  # every class's swatch, in its exact colour
        assert (legend == c).all(axis=1).any(), c
