"""Test-time views (``model.tta``): the symmetries a trained model may average its
probabilities over. A light module (no torch, no pydantic) so that the inference runner can
size its batches by the model's view count without importing either."""

from __future__ import annotations

#: Views per mode; each view costs one forward pass. ``flips``: the chip, mirrored left-right,
#: upside down, and both. ``d8``: those 4 and their transposes, the 8 symmetries of the square.
TTA_VIEWS = {"none": 1, "flips": 4, "d8": 8}


def view_count(mode: object) -> int:
    """Forward passes per chip of a model exported with ``tta = mode`` (1 if unknown/absent)."""
    return TTA_VIEWS.get(str(mode), 1) if mode is not None else 1
