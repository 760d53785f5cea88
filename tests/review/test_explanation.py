"""The review page's explanation: Grad-CAM computed from the checkpoint behind the job's model."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from review_helpers import write_job, write_model
from sqlalchemy import select

from review.db.engine import Database
from review.db.models import Item
from review.jobs.importer import import_job


def test_heatmap_from_the_jobs_model_is_served_and_cached(db: Database, roots: Path, users: Any,
                                                          client_for: Any, allowed: tuple[Path, ...]) -> None:
    folder = write_job(roots / "jobs" / "explained", n_windows=4, n_chips=0, n_bad=0)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model"]["uri"] = str(write_model(roots / "run"))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    job_id = import_job(db, folder, "test", allowed)
    with db.read() as s:
        items = s.execute(select(Item).where(Item.job_id == job_id).order_by(Item.row_index)).scalars().all()
        item_id, row = items[0].id, items[0].row_index
    client, _ = client_for("rev")
    r = client.get(f"/items/{item_id}/heatmap.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    im = np.asarray(Image.open(io.BytesIO(r.content)))
    assert im.shape == (256, 256, 3) and im.std() > 5  # a real map, not a flat colour
    cached = folder / "explanations" / f"{row}.png"
    assert cached.read_bytes() == r.content
    assert not list((folder / "explanations").glob("*.tmp"))
    other = client.get(f"/items/{items[1].id}/heatmap.png")  # another window: another map
    assert other.status_code == 200 and other.content != r.content


def test_no_model_means_no_heatmap(db: Database, job_id: int, client_for: Any) -> None:
    # The standard fixture's manifest names no model file: the page shows the chip alone.
    with db.read() as s:
        item_id = s.execute(select(Item.id).where(Item.job_id == job_id)).scalars().first()
    client, _ = client_for("rev")
    assert client.get(f"/items/{item_id}/heatmap.png").status_code == 404
