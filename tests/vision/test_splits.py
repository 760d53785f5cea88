"""vision.data.splits: spatial blocks keep train and test at least a block apart; a random
split of clustered labels warns; distances in metres across CRSs."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Geod, Transformer

from vision.data.splits import Footprint, SplitRule, assign, clark_evans, clustering_warning, distances, nearest_m
from vision.errors import ConfigError

UTM = "EPSG:32632"


def _grid(n: int, size: float = 640.0, x0: float = 500_000.0, y0: float = 5_600_000.0, crs: str = UTM,
          gap: float = 0.0) -> list[Footprint]:
    """``n x n`` windows of ``size`` metres, edge to edge (or ``gap`` apart)."""
    step = size + gap
    return [Footprint(crs, x0 + c * step, y0 - r * step - size, x0 + c * step + size, y0 - r * step)
            for r in range(n) for c in range(n)]


def test_blocks_keep_train_at_least_the_block_size_from_val_and_test() -> None:
    fps = _grid(40)  # 25.6 km x 25.6 km of adjacent 640 m windows
    rule = SplitRule("blocks", block_m=2000.0, val=0.1, test=0.1, seed=1)
    res = assign(fps, [None] * len(fps), rule)
    splits = res.splits
    assert {s for s in splits if s is not None} == {"train", "val", "test"}
    kept = [s for s in splits if s is not None]
    assert abs(kept.count("test") / len(fps) - 0.1) < 0.05
    d = distances(fps, splits)
    assert d["train-test"]["min_m"] >= 2000.0 and d["train-val"]["min_m"] >= 2000.0
    assert res.dropped and all("buffer_m 2000" in why for why in res.dropped.values())
    assert res.report["buffer_dropped"] == len(res.dropped) == splits.count(None)
    # without the buffer the blocks touch: neighbouring windows on both sides
    loose = assign(fps, [None] * len(fps), SplitRule("blocks", block_m=2000.0, seed=1, buffer_m=0.0))
    assert distances(fps, loose.splits)["train-test"]["min_m"] == 0.0 and not loose.dropped
    # seeded: the same draw every time
    assert assign(fps, [None] * len(fps), rule).splits == splits


def test_held_out_blocks_grow_as_compact_groups_so_the_buffer_costs_little() -> None:
    fps = _grid(60)  # 38.4 km a side
    compact = assign(fps, [None] * len(fps), SplitRule("blocks", block_m=2000.0, seed=2, regions=2))
    scattered = assign(fps, [None] * len(fps), SplitRule("blocks", block_m=2000.0, seed=2, regions=100_000))
    assert len(compact.dropped) < len(scattered.dropped) / 2
    for res in (compact, scattered):  # the guarantee holds either way
        assert distances(fps, res.splits)["train-test"]["min_m"] >= 2000.0
    assert compact.report["rule"]["regions"] == 2


def test_preset_splits_are_kept_and_too_few_blocks_refused() -> None:
    fps = _grid(4)
    preset = ["test"] * 4 + [None] * 12
    res = assign(fps, preset, SplitRule("random", val=0.0, test=0.0))
    assert res.splits[:4] == ["test"] * 4 and set(res.splits[4:]) == {"train"}
    with pytest.raises(ConfigError, match="only 1 block"):
        assign(fps, [None] * 16, SplitRule("blocks", block_m=5000.0))


def test_a_random_split_of_clustered_labels_warns() -> None:
    rng = np.random.default_rng(0)
    centres = [(500_000 + 20_000 * k, 5_600_000) for k in range(3)]
    fps = []
    for cx, cy in centres:  # three tight clusters of 100 windows each
        for dx, dy in rng.normal(0, 300, (100, 2)):
            fps.append(Footprint(UTM, cx + dx, cy + dy, cx + dx + 64, cy + dy + 64))
    rule = SplitRule("random", block_m=2000.0, seed=0)
    res = assign(fps, [None] * len(fps), rule)
    r = clark_evans(fps)
    assert r is not None and r < 0.5
    warn = clustering_warning(fps, res.splits, rule, distances(fps, res.splits))
    assert warn is not None and "Clark-Evans ratio" in warn and "(< 1: clustered)" in warn and "Roberts" in warn
    # scattered labels far apart: no warning
    far = _grid(10, size=64.0, gap=5000.0)
    res2 = assign(far, [None] * len(far), rule)
    assert clustering_warning(far, res2.splits, rule, distances(far, res2.splits)) is None
    # blocks never warn
    assert clustering_warning(fps, res.splits, SplitRule("blocks"), {}) is None


def test_distances_are_metres_across_utm_zones() -> None:
    # one window in zone 32N, one in zone 33N 50 km east of it
    to32 = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    to33 = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    lon_a, lat = 11.5, 48.0
    lon_b = Geod(ellps="WGS84").fwd(lon_a, lat, 90, 50_000)[0]
    xa, ya = to32.transform(lon_a, lat)
    xb, yb = to33.transform(lon_b, lat)
    a = Footprint("EPSG:32632", xa, ya, xa + 1, ya + 1)
    b = Footprint("EPSG:32633", xb, yb, xb + 1, yb + 1)
    d = nearest_m([a, b], [0], [1])[0]
    assert abs(d - 50_000) < 50_000 * 0.005
    assert np.isinf(nearest_m([a, b], [0], [])).all()
