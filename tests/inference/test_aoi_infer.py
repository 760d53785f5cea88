"""`vision infer --aoi` (issue 12, acceptance 5 and the AOI cases of 9): an EPSG:4326 area over
part of a UTM scene written at test time; the windows outside it are never read (a counter on
the reads from disk), rows carry ``aoi_id``, and ``aoi_summary.json``'s hectares add up to the
area's; an area in another hemisphere and an invalid geometry are named (exit code 1, no
traceback) while the rest of the job is classified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from affine import Affine

from inference import readers
from inference.aoi import AoiError, AreasOfInterest
from inference.runner import JobOptions, run_job
from inference.tiling import TileGrid
from tests.inference.test_aoi import SYDNEY, brute_force_ids, to_ll, write_geojson
from tests.inference.test_cli import cli
from vision import geo

from .conftest import RGB_BANDS, write_tif

UTM = "EPSG:32631"
T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
SIZE = 640  # 10 x 10 windows of 64 px (640 m)
WINDOW_HA = (64 * 10.0) ** 2 / 1e4
#: An irregular pentagon over about a fifth of the scene, drawn in UTM, stored in EPSG:4326.
PENTAGON = shapely.Polygon([(500700.0, 4999300.0), (503300.0, 4999000.0), (503900.0, 4996900.0),
                            (502100.0, 4996000.0), (500500.0, 4997200.0)])
#: A second area, overlapping the first's east side (its windows there keep the first's id).
SQUARE = shapely.box(503000.0, 4996500.0, 504500.0, 4998200.0)


def write_scene(path: Path) -> Path:
    """A 3-band uint8 scene, 64 x 64 blocks, with a nodata band across window row 4."""
    rng = np.random.default_rng(1)
    px = rng.integers(1, 255, (3, SIZE, SIZE), dtype=np.uint8)
    px[:, 256:320, :] = 0
    return write_tif(path, px, crs=UTM, transform=tuple(T)[:6], nodata=0)


def _run(scene: Path, model: Path, out: Path, aoi: Path | None, **kw: Any) -> Any:
    return run_job(JobOptions(inputs=(str(scene),), model=str(model), out=out, progress=False,
                              threads=1, workers=1, aoi=aoi, **kw))


@pytest.fixture(scope="module")
def model(model_factory: Any) -> Path:
    return model_factory(RGB_BANDS)


def window_rects() -> np.ndarray:
    g = TileGrid(SIZE, SIZE, (64, 64), (64, 64))
    return np.array([g.window(i, j) for i in range(g.rows) for j in range(g.cols)])


def test_windows_outside_the_area_are_never_read_and_the_hectares_add_up(
        model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = write_scene(tmp_path / "scene.tif")
    aoi = write_geojson(tmp_path / "fields.geojson", [(to_ll(PENTAGON, UTM), {"id": "pentagon"}),
                                                      (to_ll(SQUARE, UTM), {"id": "square"})])
    regions: list[tuple[int, int, int, int]] = []
    read = readers._read

    def counting(ds: object, info: Any, r0: int, c0: int, rh: int, rw: int) -> Any:
        regions.append((r0, c0, rh, rw))
        return read(ds, info, r0, c0, rh, rw)

    monkeypatch.setattr(readers, "_read", counting)
    out = tmp_path / "job"
    result = _run(scene, model, out, aoi)
    assert result.exit_code == 0, result.errors

    # The windows that meet an area, decided independently in the AOI file's CRS.
    wins = window_rects()
    expected = brute_force_ids(AreasOfInterest.load(aoi), UTM, T, SIZE, SIZE, wins)
    kept = [k for k, e in enumerate(expected) if e is not None]
    assert 10 < len(kept) < 50  # a part of the 100 windows
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    got = {(r["row_off"], r["col_off"]): r["aoi_id"] for r in rows}
    assert got == {(int(wins[k][0]), int(wins[k][1])): expected[k] for k in kept}
    assert {r["aoi_id"] for r in rows} == {"pentagon", "square"}
    assert {r["status"] for r in rows} >= {"ok", "nodata"}

    # The reads: no pixel of a window outside every area is read, none twice, and every
    # pixel of a kept window once (the stride is the window size, so windows do not overlap).
    assert regions, "the scene was not read through the counted reader"
    outside = [k for k in range(len(wins)) if expected[k] is None]
    read_px = np.zeros((SIZE, SIZE), dtype=np.int32)
    for r0, c0, rh, rw in regions:
        read_px[r0:r0 + rh, c0:c0 + rw] += 1
    assert read_px.max() == 1
    n_read = [int(read_px[r:r + 64, c:c + 64].sum()) for r, c, _, _ in wins.tolist()]
    assert all(n_read[k] == 0 for k in outside)
    assert all(n_read[k] == 64 * 64 for k in kept)
    print(f"\nwindows: {len(wins)}, kept {len(kept)}, outside {len(outside)} of which read "
          f"{sum(n_read[k] > 0 for k in outside)}; {len(regions)} reads")

    # aoi_summary.json: classes + not assessed = the area, within one window's hectares.
    summary = json.loads((out / "aoi_summary.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert "aoi_summary.json" in manifest["outputs"]
    assert manifest["aoi"]["ids"] == ["pentagon", "square"] and manifest["aoi"]["unmatched"] == []
    assert manifest["options"]["aoi"]["id_field"] == "id"
    for a, geom in zip(summary["aois"], (PENTAGON, SQUARE), strict=True):
        true_ha = geo.reproject(to_ll(geom, UTM), "EPSG:4326", UTM).area / 1e4
        classes = sum(v["hectares"] for v in a["classes"].values())
        not_assessed = sum(v["hectares"] for v in a["not_assessed"].values())
        print(f"{a['aoi_id']}: area {true_ha:.2f} ha, classes {classes:.2f} + not assessed "
              f"{not_assessed:.2f} = {classes + not_assessed:.2f} ha (window {WINDOW_HA} ha)")
        assert a["area_ha"] == pytest.approx(true_ha, rel=1e-3)
        assert abs(classes + not_assessed - true_ha) < WINDOW_HA
        assert a["not_assessed"]["nodata"]["hectares"] > 0
    # Each window counts in every area it meets: the square's windows include the shared ones.
    only_square = AreasOfInterest.load(write_geojson(tmp_path / "sq.geojson", [(to_ll(SQUARE, UTM), {"id": "s"})]))
    square_windows = sum(e is not None for e in brute_force_ids(only_square, UTM, T, SIZE, SIZE, wins))
    assert summary["aois"][1]["windows"] == square_windows


def test_an_area_over_no_input_and_an_invalid_geometry_are_named(model: Path, tmp_path: Path) -> None:
    """Through the real entry point: exit code 1, both named, no traceback, the good area
    classified."""
    scene = write_scene(tmp_path / "scene.tif")
    bowtie = shapely.Polygon([(2.0, 45.0), (2.1, 45.1), (2.1, 45.0), (2.0, 45.1)])
    aoi = write_geojson(tmp_path / "areas.geojson", [(to_ll(PENTAGON, UTM), {"name": "farm"}),
                                                     (SYDNEY, {"name": "sydney"}),
                                                     (bowtie, {"name": "bowtie"})])
    out = tmp_path / "job"
    res = cli("infer", str(scene), "--model", str(model), "--out", str(out), "--aoi", str(aoi),
              "--no-progress", "--workers", "1", "--threads", "1")
    text = res.stdout + res.stderr
    assert res.returncode == 1, text
    assert "Traceback" not in text
    assert "'sydney'" in text and "overlap no input" in text.replace("overlaps", "overlap")
    assert "bowtie" in text
    manifest = json.loads((out / "manifest.json").read_text())
    errors = " ".join(e["error"] for e in manifest["errors"])
    assert "'sydney'" in errors and "bowtie" in errors and manifest["exit_code"] == 1
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    assert rows and {r["aoi_id"] for r in rows} == {"farm"}
    assert any(r["status"] == "ok" for r in rows)
    summary = json.loads((out / "aoi_summary.json").read_text())
    assert [a["aoi_id"] for a in summary["aois"]] == ["farm", "sydney"]
    assert summary["unmatched"] == ["sydney"]


def test_only_an_area_in_another_hemisphere(model: Path, tmp_path: Path) -> None:
    """No window is read, the scene is recorded as outside every area, exit code 1."""
    scene = write_scene(tmp_path / "scene.tif")
    aoi = write_geojson(tmp_path / "sydney.geojson", [(SYDNEY, {"id": "sydney"})])
    out = tmp_path / "job"
    result = _run(scene, model, out, aoi)
    assert result.exit_code == 1
    assert any("'sydney'" in e["error"] for e in result.errors)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["aoi"]["scenes_outside"] == [str(scene)]
    assert pq.read_table(out / "predictions.parquet").num_rows == 0


def test_an_unusable_aoi_file_is_one_line_and_no_job_folder(model: Path, tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "scene.tif")
    out = tmp_path / "job"
    with pytest.raises(AoiError, match=r"--aoi .*missing\.geojson") as info:
        _run(scene, model, out, tmp_path / "missing.geojson")
    assert "\n" not in str(info.value)
    assert not out.exists()
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [')
    res = cli("infer", str(scene), "--model", str(model), "--out", str(out), "--aoi", str(bad),
              "--no-progress")
    assert res.returncode == 1 and "Traceback" not in res.stderr and "bad.geojson" in res.stderr
    assert not out.exists()


def test_aoi_field_needs_aoi(model: Path, tmp_path: Path) -> None:
    from vision.errors import ConfigError

    with pytest.raises(ConfigError, match="--aoi-field"):
        JobOptions(inputs=("x.tif",), model=str(model), out=tmp_path / "j", aoi_field="id")


def test_the_job_resumes_with_the_same_aoi_and_refuses_another(model: Path, tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "scene.tif")
    aoi = write_geojson(tmp_path / "a.geojson", [(to_ll(PENTAGON, UTM), {"id": "p"})])
    out = tmp_path / "job"
    assert _run(scene, model, out, aoi).exit_code == 0
    assert _run(scene, model, out, aoi).state == "already-finished"
    write_geojson(aoi, [(to_ll(SQUARE, UTM), {"id": "p"})])  # same name, other content
    from vision.errors import ConfigError

    with pytest.raises(ConfigError):
        _run(scene, model, out, aoi)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_restricted_chunks_are_rectangles_of_exactly_the_kept_windows(seed: int) -> None:
    from inference.tiling import chunk_grid, restrict_chunks

    grid = TileGrid(1000, 1300, (64, 64), (48, 48))
    keep = np.random.default_rng(seed).random(len(grid)) < 0.3
    chunks = restrict_chunks(grid, chunk_grid(grid, (256, 256)), keep)
    seen = np.zeros(len(grid), dtype=np.int32)
    for n, ch in enumerate(chunks):
        assert ch.index == n
        for i, j in ch.windows():
            seen[i * grid.cols + j] += 1
        r0, c0, rh, rw = ch.read
        assert (r0, c0) == grid.window(ch.i0, ch.j0)[:2]
        assert r0 + rh == min(grid.height, grid.window(ch.i1 - 1, 0)[0] + 64)
        assert c0 + rw == min(grid.width, grid.window(0, ch.j1 - 1)[1] + 64)
    assert (seen == keep).all()
    assert restrict_chunks(grid, chunk_grid(grid, (256, 256)), np.zeros(len(grid), bool)) == []


def test_the_plans_selection_pickles(model: Path, tmp_path: Path) -> None:
    """The Ray engine ships the plan to its actors: the selection (not the AOI object, which
    holds a lock) goes with it, and gives the same aoi_id there."""
    import pickle

    from inference.model import load_model_info
    from inference.plan import make_plan

    scene = write_scene(tmp_path / "scene.tif")
    aois = AreasOfInterest.load(write_geojson(tmp_path / "a.geojson", [(to_ll(PENTAGON, UTM), {"id": "p"})]))
    plan = make_plan([str(scene)], load_model_info(model), (64, 64), aois=aois)
    back = pickle.loads(pickle.dumps(plan))
    (s,) = back.scenes
    assert s.aoi is not None and s.n_windows == s.aoi.n_kept == plan.n_windows
    assert {s.aoi_id(*s.grid.window(i, j)[:2]) for c in s.chunks for i, j in c.windows()} == {"p"}


@pytest.mark.slow
def test_ray_gives_the_local_rows_with_an_aoi(model: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray.data")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    scene = write_scene(tmp_path / "scene.tif")
    aoi = write_geojson(tmp_path / "a.geojson", [(to_ll(PENTAGON, UTM), {"id": "p"}),
                                                 (to_ll(SQUARE, UTM), {"id": "q"})])
    rows = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        assert _run(scene, model, out, aoi, engine=engine).exit_code == 0
        rows[engine] = [(r["row_off"], r["col_off"], r["status"], r["aoi_id"], r["class_name"])
                        for r in pq.read_table(out / "predictions.parquet").to_pylist()]
        assert (out / "aoi_summary.json").is_file()
    assert rows["local"] == rows["ray"] and len(rows["local"]) > 10


def test_a_scene_resampled_to_the_models_gsd_is_selected_on_the_read_grid(
        model_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 5 m scene read at the model's 10 m: the windows are selected on the 10 m grid they are
    read in, and only theirs are read (counted where `vision.scene` reads are cut)."""
    from inference import scene_reads
    from vision.radiometry import EUROSAT_RGB

    rgb10 = model_factory(RGB_BANDS, extra_meta={"radiometry": EUROSAT_RGB, "gsd_m": 10.0})
    px = np.random.default_rng(3).integers(1, 255, (3, 2 * SIZE, 2 * SIZE), dtype=np.uint8)
    scene = write_tif(tmp_path / "fine.tif", px, crs=UTM, transform=(5.0, 0.0, 500000.0, 0.0, -5.0, 5000000.0))
    aoi = write_geojson(tmp_path / "a.geojson", [(to_ll(PENTAGON, UTM), {"id": "p"})])
    regions: list[tuple[int, int, int, int]] = []
    cut = scene_reads._cut

    def counting(info: Any, g: Any, grid: Any, region: tuple[int, int, int, int], *rest: Any) -> Any:
        regions.append(region)
        return cut(info, g, grid, region, *rest)

    monkeypatch.setattr(scene_reads, "_cut", counting)
    out = tmp_path / "job"
    assert _run(scene, rgb10, out, aoi).exit_code == 0
    entry = json.loads((out / "manifest.json").read_text())["inputs"][0]
    assert entry["read"] == "vision.scene" and entry["size"] == [SIZE, SIZE]
    wins = window_rects()  # the 10 m read grid is T's
    expected = brute_force_ids(AreasOfInterest.load(aoi), UTM, T, SIZE, SIZE, wins)
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    assert {(r["row_off"], r["col_off"]) for r in rows} == \
        {(int(w[0]), int(w[1])) for w, e in zip(wins, expected, strict=True) if e is not None}
    read_px = np.zeros((SIZE, SIZE), dtype=np.int32)
    for r0, c0, rh, rw in regions:
        read_px[r0:r0 + rh, c0:c0 + rw] += 1
    assert read_px.max() == 1
    assert all(not read_px[r:r + 64, c:c + 64].any() for (r, c, _, _), e in zip(wins.tolist(), expected, strict=True)
               if e is None)
