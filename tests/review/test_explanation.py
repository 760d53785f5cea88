"""The review page's explanation: Grad-CAM computed from the checkpoint behind the job's model."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from review_helpers import CLASSES, write_job
from sqlalchemy import select

from review.db.engine import Database
from review.db.models import Item
from review.jobs.importer import import_job
from training.checkpoint import save_checkpoint
from training.export import export_onnx
from vision.contracts.model import ModelMetadata
from vision.models import NormalizedClassifier, get_model

BANDS = ["B02", "B03", "B04", "B08"]  # the bands of the scene `write_job` makes


def _model(folder: Path) -> Path:
    """A small real model (Lite0, no pretraining) exported with its checkpoint, as training does."""
    torch.manual_seed(0)
    net = NormalizedClassifier(get_model("efficientnet_lite0", len(CLASSES), len(BANDS), "none", band_names=BANDS),
                               [1000.0] * 4, [500.0] * 4).eval()
    ck = folder / "checkpoints" / "best.pt"
    save_checkpoint(ck, {"model": net.state_dict(), "architecture": "efficientnet_lite0", "classes": CLASSES,
                         "bands": BANDS, "mean": [1000.0] * 4, "std": [500.0] * 4, "input_size": [32, 32],
                         "temperature": 1.0, "thresholds": {}, "model_name": "landcover", "dropout": 0.2})
    meta = ModelMetadata(classes=tuple(CLASSES), bands=tuple(BANDS), input_size=(32, 32), mean=(1000.0,) * 4,
                         std=(500.0,) * 4, temperature=1.0, architecture="efficientnet_lite0", model_name="landcover",
                         model_version="3", checkpoint=str(ck))
    onnx_path = folder / "model.onnx"
    export_onnx(net, onnx_path, meta, torch.rand(4, 4, 32, 32) * 3000)
    return onnx_path


def test_heatmap_from_the_jobs_model_is_served_and_cached(db: Database, roots: Path, users: Any,
                                                          client_for: Any, allowed: tuple[Path, ...]) -> None:
    folder = write_job(roots / "jobs" / "explained", n_windows=4, n_chips=0, n_bad=0)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model"]["uri"] = str(_model(roots / "run"))
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
