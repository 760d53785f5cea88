"""A STAC catalog with the label extension as training data (``data.source: stac``).

Each item with raster assets is a scene (`vision.stac.read_stac`, `vision.stac.plan_item`,
the bands from ``eo:bands``); its label assets (GeoJSON, role ``labels``/``data`` with
``ml-aoi:role: label``, or type ``application/geo+json``) are its labels, read like any label
file (`vision.data.labels.read_labels`), and label only that item's pixels. The class is the
label asset's ``label:properties`` attribute (or the recipe's ``class_field``), checked against
the item's ``label:classes`` for that property. The split is the item's ``ml-aoi:split``
when it has one (unless the recipe sets ``data.split``). Items without a raster asset or a
label asset are listed with why, never dropped silently.

The catalog's declared band order is followed as declared; `vision.band_order` checks it
against the pixels and the warning goes to the run's console, its lineage and
`vision data check` (``stac-eurosat100`` declares Sentinel-2 order for files in EuroSAT order).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vision.band_order import check_catalog_band_order
from vision.data.labels import LabelFileError, LabelSet, read_labels
from vision.data.scenes import SceneInput, SceneProblem
from vision.stac import LocalStacIO, StacError, StacItem, read_stac
from vision.stac import _local_path as local_href  # the one safe href resolver (local, under roots)

_LABEL_TYPES = ("application/geo+json", "application/json")


@dataclass
class StacLabels:
    """What a label catalog holds for training.

    Attributes:
        inputs: one scene per item with a raster asset and labels.
        labels: label sets, each bound to the scene in ``inputs`` at the same key.
        bound: label set index -> index of its scene in ``inputs``.
        problems: items (or links) that could not be used, and why.
        warnings: the band-order check's warnings.
        splits: the ``ml-aoi:split`` values found, in order.
    """

    inputs: list[SceneInput] = field(default_factory=list)
    labels: list[LabelSet] = field(default_factory=list)
    bound: dict[int, int] = field(default_factory=dict)
    problems: list[SceneProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)


def item_split(item: StacItem) -> str | None:
    """An item's ``ml-aoi:split`` (``train``, ``validate``, ``test``), if any."""
    v = item.properties.get("ml-aoi:split")
    return v if isinstance(v, str) and v else None


def catalog_splits(path: str | Path, roots: Sequence[Path] | None = None) -> list[str]:
    """The ``ml-aoi:split`` values of a catalog's items, in order of appearance."""
    return list(dict.fromkeys(s for it in read_stac(path, roots).items if (s := item_split(it))))


def _label_hrefs(item: StacItem, roots: Sequence[Path] | None) -> list[tuple[str, Path]]:
    """The item's label assets: ``(key, resolved file)``.

    Raises:
        StacError: a label asset's href is remote, missing or outside ``roots``.
    """
    doc = json.loads(LocalStacIO(roots).read_text(item.path))
    assets = doc.get("assets") if isinstance(doc, dict) else None
    out = []
    for key, a in (assets or {}).items():
        if not isinstance(a, dict) or not isinstance(a.get("href"), str):
            continue
        roles: list[Any] = a["roles"] if isinstance(a.get("roles"), list) else []
        is_label = a.get("ml-aoi:role") == "label" or "labels" in roles or "label" in roles
        mtype = str(a.get("type") or "").lower()
        if not is_label and not mtype.startswith("application/geo+json"):
            continue
        if mtype and not mtype.startswith(_LABEL_TYPES):
            continue
        href = a["href"]
        if not urlparse(href).scheme and not Path(href).is_absolute():
            href = str(Path(item.path).parent / href)
        out.append((key, local_href(href, f"label asset {key!r} of item {item.id!r}", roots)))
    return out


def allowed_classes(item: StacItem, prop: str) -> list[str] | None:
    """The item's ``label:classes`` values for property ``prop`` (``None``: not declared)."""
    entries = item.properties.get("label:classes")
    if not isinstance(entries, list):
        return None
    for e in entries:
        if isinstance(e, dict) and e.get("name") in (prop, None) and isinstance(e.get("classes"), list):
            return [str(c) for c in e["classes"]]
    return None


def class_property(item: StacItem, class_field: str | None) -> str | None:
    """The label attribute holding the class: the recipe's, else ``label:properties[0]``."""
    if class_field:
        return class_field
    props = item.properties.get("label:properties")
    if isinstance(props, list) and props and isinstance(props[0], str):
        return props[0]
    return None


def read_label_catalog(path: str | Path, class_field: str | None = None, classes: Sequence[str] | None = None,
                       use_splits: bool = True, roots: Sequence[Path] | None = None) -> StacLabels:
    """Read a STAC label catalog: its items as scenes, their label assets as labels.

    Args:
        path: the catalog, collection or item JSON.
        class_field: the label attribute with the class (default each item's
            ``label:properties[0]``).
        classes: the classes a label may have (default: each item's ``label:classes``).
        use_splits: take each item's ``ml-aoi:split`` as its split.
        roots: folders every file must lie under.

    Raises:
        StacError: the file itself is not readable STAC.
    """
    read = read_stac(path, roots)
    out = StacLabels(problems=[SceneProblem(link, why) for link, why in read.errors])
    usable: list[StacItem] = []
    for item in read.items:
        if not any(a.path is not None for a in item.assets.values()):
            why = "; ".join(a.error for a in item.assets.values() if a.error) or "no raster asset"
            out.problems.append(SceneProblem(item.path, f"item {item.id}: {why}"))
            continue
        prop = class_property(item, class_field)
        if prop is None:
            out.problems.append(SceneProblem(item.path, f"item {item.id}: no label:properties and no class_field: "
                                                        "which attribute holds the class is unknown"))
            continue
        try:
            hrefs = _label_hrefs(item, roots)
        except (StacError, json.JSONDecodeError) as exc:
            out.problems.append(SceneProblem(item.path, f"item {item.id}: {exc}"))
            continue
        if not hrefs:
            out.problems.append(SceneProblem(item.path, f"item {item.id}: no label asset (GeoJSON)"))
            continue
        allowed = list(classes) if classes is not None else allowed_classes(item, prop)
        sets = []
        for _key, file in hrefs:
            try:
                sets.append(read_labels(file, prop, allowed))
            except LabelFileError as exc:
                out.problems.append(SceneProblem(item.path, f"item {item.id}: {exc}"))
        if not sets:
            continue
        split = item_split(item) if use_splits else None
        out.inputs.append(SceneInput(item.path, item, split))
        for s in sets:
            out.bound[len(out.labels)] = len(out.inputs) - 1
            out.labels.append(s)
        usable.append(item)
    out.splits = list(dict.fromkeys(s.split for s in out.inputs if s.split))
    out.warnings = check_catalog_band_order(usable)
    return out


def stac_summary(labels: StacLabels) -> dict[str, Any]:
    """For the lineage: items used, refused, and the splits found."""
    return {"items": len(labels.inputs), "refused": [p.to_obj() for p in labels.problems],
            "ml_aoi_splits": labels.splits}
