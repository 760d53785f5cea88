"""The local engine's batcher: fixed-size batches whose segments map back to their units."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inference.local_engine import Batch, Batcher, EndOfUnits, ReadFailure, UnitWithoutModel
from inference.model import load_model_info
from inference.plan import make_plan
from inference.predict import ReadOptions

from .conftest import random_chips


def test_batches_and_segments_cover_every_item_once(rgb_model: Path, tmp_path: Path) -> None:
    chips = [str(p) for p in random_chips(tmp_path / "c", 530 - 18)]
    for k in range(3):
        (tmp_path / f"bad{k}.txt").write_text("not an image")
    info = load_model_info(rgb_model)
    # 512 chips in 2 units of 256, then a unit of 3 bad files only (nothing for the model).
    plan = make_plan([*chips, *(str(tmp_path / f"bad{k}.txt") for k in range(3))], info, (64, 64))
    batcher = Batcher(plan.units, plan, ReadOptions.for_model(info, 0.5), workers=2,
                      batch_size=100, prefetch=2)
    batcher.start()
    items = []
    while True:
        item = batcher.queue.get()
        items.append(item)
        if isinstance(item, EndOfUnits):
            break
    batcher.join()
    assert not [i for i in items if isinstance(i, ReadFailure)]
    batches = [i for i in items if isinstance(i, Batch)]
    assert [len(b.pixels) for b in batches] == [100] * 5 + [12]
    covered: dict[str, list[int]] = {}
    for b in batches:
        offsets = 0
        for seg in b.segments:
            assert seg.offset == offsets  # segments tile the batch in order
            np.testing.assert_array_equal(b.pixels[seg.offset: seg.offset + seg.count],
                                          seg.pending.pixels[seg.start: seg.start + seg.count])  # type: ignore[index]
            covered.setdefault(seg.pending.unit.uid, []).extend(range(seg.start, seg.start + seg.count))
            offsets += seg.count
    assert {uid: sorted(v) for uid, v in covered.items()} == {
        "c000000": list(range(256)), "c000001": list(range(256))}
    (no_model,) = [i for i in items if isinstance(i, UnitWithoutModel)]
    assert no_model.pending.pixels is None and len(no_model.pending.rows) == 3
