"""vision.data.sampling: where windows go for points, polygons and background, and why a label
gives none (geometry only: no pixel is read here)."""

from __future__ import annotations

import shapely
from affine import Affine

from tests.vision.labelled_helpers import PIXEL, X0, Y0, pixel_box, pixel_point
from vision.data.labels import LabelFeature
from vision.data.sampling import SamplingOptions, background_windows, sample_scene

T = Affine(PIXEL, 0, X0, 0, -PIXEL, Y0)


Feat = tuple[tuple[int, int], LabelFeature, shapely.Geometry]


def _feat(k: int, geom: shapely.Geometry, label: str = "Forest") -> Feat:
    return (0, k), LabelFeature(k, f"f{k}", label, geom, "labels.gpkg"), geom


def _windows(feats: list, opts: SamplingOptions, size: int = 256) -> tuple[list[tuple[int, int]], object]:
    got = sample_scene(0, size, size, T, PIXEL, feats, opts)
    return [(c.row, c.col) for c in got.candidates], got


def test_a_point_gives_the_window_centred_on_it() -> None:
    # chip centre at pixel (96, 40): window 64 -> (64, 8); a hair off the corner still rounds there
    feats = [_feat(0, pixel_point(96, 40)), _feat(1, pixel_point(96.0000001, 39.9999999)),
             _feat(2, pixel_point(31.6, 31.4))]
    wins, got = _windows(feats, SamplingOptions(size=(64, 64)))
    assert wins == [(64, 8), (64, 8)]
    assert [(s.candidate.row, s.candidate.col, s.kind) for s in got.skipped] == [(0, -1, "edge")]
    odd, _ = _windows([_feat(0, pixel_point(10.5, 10.5))], SamplingOptions(size=(5, 5)))
    assert odd == [(8, 8)]  # the centre pixel of a 5x5 window is the point's pixel


def test_a_point_near_the_edge_is_a_counted_edge_skip() -> None:
    wins, got = _windows([_feat(0, pixel_point(10, 10))], SamplingOptions(size=(64, 64)))
    assert wins == [] and [(s.kind, s.candidate.row) for s in got.skipped] == [("edge", -22)]
    assert (0, 0) in got.seen


def test_a_polygon_gives_the_grid_of_windows_inside_it() -> None:
    poly = pixel_box(0, 0, 128, 192)  # exactly 2 x 3 windows
    wins, _ = _windows([_feat(0, poly)], SamplingOptions(size=(64, 64)))
    assert wins == [(r, c) for r in (0, 64) for c in (0, 64, 128)]
    # a 150 px wide polygon: 2 windows centred in it (11 px spare each side)
    wins, _ = _windows([_feat(0, pixel_box(0, 0, 64, 150))], SamplingOptions(size=(64, 64)))
    assert wins == [(0, 11), (0, 75)]
    wins, _ = _windows([_feat(0, poly)], SamplingOptions(size=(64, 64), stride=32))
    assert len(wins) == 3 * 5
    wins, _ = _windows([_feat(0, poly)], SamplingOptions(size=(64, 64), max_per_polygon=2))
    assert len(wins) == 2 and set(wins) <= {(r, c) for r in (0, 64) for c in (0, 64, 128)}


def test_min_inside_counts_the_polygons_of_the_same_class_together() -> None:
    # a Forest area drawn as two polygons, and a River window beside it
    halves = [_feat(0, pixel_box(10, 40, 64, 40)), _feat(1, pixel_box(10, 80, 64, 24)),
              _feat(2, pixel_box(10, 104, 64, 64), "River")]
    wins, got = _windows(halves, SamplingOptions(size=(64, 64)))
    # the window centred on the first polygon (cols 28-92) lies only 62 % in it, but 81 % in
    # Forest (both polygons): kept; the second one's (cols 60-124) lies 69 % in Forest: none
    assert wins == [(10, 28), (10, 104)]
    assert got.notes == {(0, 1): got.notes[(0, 1)]} and got.notes[(0, 1)][0] == "too-small"
    # 56 of 64 columns inside: 87.5 %, the window centred on the polygon
    assert _windows([_feat(0, pixel_box(10, 10, 64, 56))], SamplingOptions(size=(64, 64), min_inside=0.8))[0] == [
        (10, 6)]
    assert _windows([_feat(0, pixel_box(10, 10, 64, 56))], SamplingOptions(size=(64, 64), min_inside=0.9))[0] == []


def test_too_small_and_no_window_are_told_apart() -> None:
    tiny = _feat(0, pixel_box(10, 10, 20, 20))
    thin = _feat(1, pixel_box(100, 0, 4, 250))  # 1000 px^2 > 75 % of 64x64? no: 1000 < 3072 -> too small
    long_thin = _feat(2, pixel_box(150, 0, 40, 250))  # 10000 px^2 but 40 px tall: at best 62 % of a window
    _, got = _windows([tiny, thin, long_thin], SamplingOptions(size=(64, 64)))
    assert got.notes[(0, 0)][0] == "too-small" and "400 px" in got.notes[(0, 0)][1]
    assert got.notes[(0, 1)][0] == "too-small"
    kind, why = got.notes[(0, 2)]
    assert kind == "no-window" and "at best 62%" in why


def test_jitter_keeps_windows_inside_and_is_seeded() -> None:
    poly = pixel_box(0, 0, 200, 200)
    opts = SamplingOptions(size=(64, 64), mode="jitter", max_per_polygon=5, seed=3)
    a, _ = _windows([_feat(0, poly)], opts)
    b, _ = _windows([_feat(0, poly)], opts)
    assert a == b and len(a) == 5
    assert all(-16 <= r <= 200 - 48 and -16 <= c <= 200 - 48 for r, c in a)


def test_background_windows_keep_their_distance_from_labels() -> None:
    opts = SamplingOptions(size=(64, 64), background="Other", background_buffer_m=100.0, background_max=100)
    label = pixel_box(0, 0, 64, 64)
    got = background_windows(0, 256, 256, T, PIXEL, [label], opts)
    assert got and all(c.label == "Other" and c.feature is None for c in got)
    for c in got:
        box = pixel_box(c.row, c.col, 64, 64)
        assert box.distance(label) >= 100.0
    assert len(background_windows(0, 256, 256, T, PIXEL, [label], SamplingOptions(size=(64, 64)))) == 0
