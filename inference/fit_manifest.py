"""What the manifest says about how the inputs fit the model: the job's warnings (a model
that records no radiometry or GSD, assumptions made about chips, radiometry mismatches
allowed, chips classified at another GSD with ``--gsd native``), and for each input its
band plan, GSD decision, window size on the ground and cloud method, or the radiometry
mismatch or GSD decision a chip was allowed to run with.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from inference.model import ModelInfo
from inference.plan import Plan


def model_entry_fit(model: ModelInfo) -> dict[str, Any]:
    """The model's side of the contract, for the manifest's ``model`` entry (review's dataset
    export reads ``model.radiometry``)."""
    r = model.metadata.radiometry
    return {"radiometry": r.to_obj() if r is not None else None, "gsd_m": model.gsd_m}


def job_warnings(plan: Plan, model: ModelInfo, allow_mismatch: bool) -> list[str]:
    """Warnings of the job as a whole, each once (chip warnings counted, not repeated)."""
    out: list[str] = []
    if model.metadata.radiometry is None:
        out.append("the model does not record its radiometry (vision.radiometry, schema 1): inputs are "
                   "taken as they are, without any check of what their pixel values mean")
    if model.gsd_m is None:
        out.append("the model does not record its ground sampling distance (vision.gsd_m, schema 1): "
                   "windows are read at the input's own pixel size, without resampling")
    chips: Counter[str] = Counter()
    mismatched = 0
    for c in plan.chips:
        if c.gsd is not None and c.gsd.note and c.error is None:
            chips[c.gsd.note] += 1  # one text per pixel size: counted like the warnings
        if c.fit is None:
            continue
        for w in c.fit.warnings:
            if not w.startswith("the model does not record"):
                chips[w] += 1
        mismatched += c.fit.mismatch is not None
    out += [f"{n} chip{'s' if n > 1 else ''}: {w}" for w, n in sorted(chips.items())]
    for s in plan.scenes:
        if s.fit is None:
            continue
        out += [f"{s.path}: {w}" for w in s.fit.band_plan.warnings
                if not w.startswith("the model does not record")]
    scenes_mismatched = sum(1 for s in plan.scenes if s.fit is not None and s.fit.band_plan.mismatch)
    if allow_mismatch and (mismatched or scenes_mismatched):
        out.append(f"--allow-radiometry-mismatch: {mismatched} chips and {scenes_mismatched} scenes were "
                   "classified although their radiometry does not fit the model's (see their inputs' "
                   "radiometry_mismatch); their predictions may be meaningless")
    return out


def annotate_inputs(manifest: dict[str, Any], plan: Plan) -> None:
    """Add each input's fit to its entry of ``manifest["inputs"]`` (in place)."""
    scenes = {s.path: s for s in plan.scenes}
    mismatched = {c.path: c.fit.mismatch for c in plan.chips if c.fit is not None and c.fit.mismatch}
    off_gsd = {c.path: c.gsd.to_obj() for c in plan.chips if c.gsd is not None and c.gsd.note}
    for entry in manifest.get("inputs") or []:
        path = entry.get("path")
        s = scenes.get(path)
        if s is not None and s.fit is not None:
            entry.update(s.fit.to_manifest())
            entry["radiometry_mismatch"] = s.fit.band_plan.mismatch
            continue
        if path in mismatched:
            entry["radiometry_mismatch"] = mismatched[path]
        if path in off_gsd:  # a chip classified at another GSD (--gsd native)
            entry["gsd"] = off_gsd[path]
