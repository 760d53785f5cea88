"""STAC in: Items, Collections and Catalogs read from local JSON files, and a model's bands
matched to an item's assets.

`read_stac` reads one STAC file with pystac and walks catalogs and collections down to their
items (child and item links; cycles and depth bounded). Every href is a local file: an
``http(s)``/``s3`` href is refused naming it (jobs run offline), a relative href resolves
against the file that holds it, symlinks are resolved, the target must be a real file, and
with ``roots`` it must lie under one of them. A broken child or item link is reported and the
rest of the catalog is read.

`plan_item` matches the model's bands to assets by ``eo:bands`` (or STAC 1.1 ``bands``)
``name`` or ``common_name`` through `vision.bands` (``B04`` <-> ``red``, ``B8A`` <-> ``nir08``,
the ``B08A`` spelling too), from one multi-band asset or per-band assets (asset-level bands,
or the item's bands for its one data raster). For each band it takes the asset whose
radiometry reconciles with the model's (`vision.radiometry.reconcile`), and records which
asset and band index fed it, why, and why the other candidates were refused: the RGB EuroSAT
model (8-bit display) takes B04/B03/B02 from the ``visual`` (TCI) asset of an earth-search
L2A item and refuses the uint16 ``red``/``green``/``blue`` reflectance assets.

`vision.band_order` checks a declared band order against the pixels (``stac-eurosat100``
declares Sentinel-2 order, but its files are in EuroSAT order, B8A last).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pystac
from pystac.stac_io import StacIO

from vision.bands import SENTINEL2_BANDS, canonical_band
from vision.errors import BandMismatchError, InputError, UnreadableInputError
from vision.radiometry import (
    Derived,
    Radiometry,
    RadiometryMismatch,
    mismatch_reason,
    reconcile,
    stac_radiometry,
)
from vision.raster import open_raster
from vision.scene import BandPlan, BandSource

#: Largest STAC JSON file read (a catalog page with thousands of links is far smaller).
MAX_JSON_BYTES = 64 * 2**20
MAX_DEPTH = 32
MAX_ITEMS = 1_000_000
_REMOTE = ("http", "https", "s3", "gs", "az", "ftp")
_RASTER_TYPES = ("image/tiff", "image/jp2", "image/png", "image/jpeg", "image/vnd.stac.geotiff")
_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".png", ".jpg", ".jpeg")
_S2_IDS = frozenset(b.id for b in SENTINEL2_BANDS)


class StacError(InputError):
    """A STAC file, link or asset href cannot be used."""


def _local_path(href: str, what: str, roots: Sequence[Path] | None) -> Path:
    """The real file an href names.

    Raises:
        StacError: remote, not found, not a file, or outside ``roots``.
    """
    parsed = urlparse(href)
    if parsed.scheme.lower() in _REMOTE:
        raise StacError(f"{what}: href {href} is remote; jobs run offline: download the file and point the "
                        "href at the local copy")
    if parsed.scheme.lower() == "file":
        href = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:
        raise StacError(f"{what}: href {href} has an unsupported scheme {parsed.scheme!r}")
    p = Path(href)
    try:
        real = p.resolve(strict=True)
    except (OSError, RuntimeError):
        raise StacError(f"{what}: file not found: {href}") from None
    if not real.is_file():
        raise StacError(f"{what}: {href} is not a file")
    if roots is not None and not any(real.is_relative_to(Path(r).resolve()) for r in roots):
        raise StacError(f"{what}: {href} resolves to {real}, outside the allowed folders")
    return real


class LocalStacIO(StacIO):
    """pystac I/O that reads local files only (remote hrefs refused), bounded in size."""

    def __init__(self, roots: Sequence[Path] | None = None) -> None:
        super().__init__()
        self.roots = roots

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = str(source.get_absolute_href() if isinstance(source, pystac.Link) else source)
        p = _local_path(href, "STAC link", self.roots)
        if p.stat().st_size > MAX_JSON_BYTES:
            raise StacError(f"{href}: STAC file larger than {MAX_JSON_BYTES >> 20} MiB")
        return p.read_text(encoding="utf-8")

    def write_text(self, dest: Any, txt: str, *args: Any, **kwargs: Any) -> None:
        raise StacError("STAC input is read-only")


@dataclass(frozen=True)
class AssetBand:
    """One band of an asset: its position in the file and its names."""

    index: int
    name: str | None
    common_name: str | None
    band_id: str | None  # canonical Sentinel-2 id (B04), or the name for non-Sentinel-2 bands


@dataclass(frozen=True)
class StacAsset:
    """A raster asset of an item.

    Attributes:
        key: the asset key (``red``, ``visual``, ``scl``).
        href: as written; ``path`` the resolved file, or ``None`` with ``error`` saying why.
        bands_from: ``asset`` or ``item`` (item-level ``eo:bands`` for its one data raster).
        raster_bands: the ``raster:bands`` entries (scale, offset, nodata, data_type).
    """

    key: str
    href: str
    path: str | None
    error: str | None
    roles: tuple[str, ...]
    media_type: str | None
    bands: tuple[AssetBand, ...]
    bands_from: str | None
    raster_bands: tuple[Mapping[str, Any], ...]
    gsd: float | None

    @property
    def data_type(self) -> str | None:
        dt = self.raster_bands[0].get("data_type") if self.raster_bands else None
        return dt if isinstance(dt, str) else None

    def nodata(self, index: int) -> float | None:
        if index < len(self.raster_bands):
            v = self.raster_bands[index].get("nodata")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
            if v == "nan":
                return math.nan
        return None


@dataclass(frozen=True)
class StacItem:
    """An item, read: id, acquisition time, properties, raster assets, and where it is."""

    id: str
    path: str
    acquired: datetime | None
    collection: str | None
    properties: Mapping[str, Any]
    assets: Mapping[str, StacAsset]
    bbox: tuple[float, ...] | None
    warnings: tuple[str, ...] = ()

    @property
    def scl(self) -> StacAsset | None:
        """The scene classification layer (SCL), when the item has one."""
        for a in self.assets.values():
            title = " ".join(a.roles) + " " + a.key
            if a.key.lower() == "scl" or "scene classification" in title.lower() or \
                    any((b.name or "").lower() == "scl" for b in a.bands):
                return a
        return None


@dataclass
class StacRead:
    """What `read_stac` found: the items, and the links or items it could not read."""

    items: list[StacItem] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)


def read_stac(path: str | Path, roots: Sequence[Path] | None = None) -> StacRead:
    """Read a STAC Item, Collection or Catalog JSON file and the items below it.

    Raises:
        StacError: the file itself is not readable STAC (broken links below it are listed in
            `StacRead.errors` instead).
    """
    io = LocalStacIO(roots)
    top = _local_path(str(path), "STAC file", roots)
    out = StacRead()
    seen: set[str] = set()
    stack: list[tuple[str, int]] = [(str(top), 0)]
    while stack:
        href, depth = stack.pop()
        if href in seen:
            continue
        seen.add(href)
        try:
            obj = _read_object(href, io)
        except StacError as exc:
            if href == str(top):
                raise
            out.errors.append((href, str(exc)))
            continue
        if isinstance(obj, pystac.Item):
            try:
                out.items.append(item_from_pystac(obj, href, roots))
            except StacError as exc:
                out.errors.append((href, str(exc)))
            if len(out.items) > MAX_ITEMS:
                raise StacError(f"{path}: more than {MAX_ITEMS} items")
            continue
        if not isinstance(obj, pystac.Catalog):  # Collections are Catalogs
            out.errors.append((href, f"a {type(obj).__name__}, not an Item, Collection or Catalog"))
            continue
        if depth >= MAX_DEPTH:
            out.errors.append((href, f"catalog nested deeper than {MAX_DEPTH} levels; not read"))
            continue
        links = [*obj.get_item_links(), *obj.get_child_links()]
        for link in reversed(links):  # popped in file order
            target = link.get_absolute_href() or link.href
            try:
                real = str(_local_path(str(target), f"link {link.rel} {link.href!r} of {href}", roots))
            except StacError as exc:
                out.errors.append((str(target), str(exc)))
                continue
            stack.append((real, depth + 1))
    return out


def _read_object(href: str, io: LocalStacIO) -> pystac.STACObject:
    try:
        d = json.loads(io.read_text(href))
    except json.JSONDecodeError as exc:
        raise StacError(f"{href}: not JSON ({exc})") from exc
    if not isinstance(d, dict) or d.get("type") not in ("Feature", "Collection", "Catalog"):
        kind = d.get("type") if isinstance(d, dict) else None
        raise StacError(f"{href}: not a STAC Item, Collection or Catalog (type {kind!r})")
    try:
        obj = pystac.read_dict(d, href=href, stac_io=io)
    except StacError:
        raise
    except Exception as exc:  # pystac raises STACTypeError, KeyError, ... on malformed JSON
        raise StacError(f"{href}: not valid STAC ({type(exc).__name__}: {exc})") from exc
    return obj


def band_id(name: Any, common_name: Any = None) -> str | None:
    """The Sentinel-2 band id (``B8A``) an ``eo:bands`` entry stands for, else its name.

    The common name decides when it names one band (``nir08``; not ``rededge``, the common
    name of B05-B07): a Landsat ``B5`` is ``nir``, not Sentinel-2's B05. Otherwise the name:
    a Sentinel-2 id or alias (``B04``, ``red``, ``rededge1``) or spelling (``B08A``, ``b8a``).
    """
    if isinstance(common_name, str) and common_name:
        cid = canonical_band(common_name)
        if cid in _S2_IDS:
            return cid
    if isinstance(name, str) and name:
        cid = canonical_band(name)
        if cid in _S2_IDS:
            return cid
        m = re.fullmatch(r"[Bb]0?(\d{1,2})([Aa]?)", name.strip())
        if m:  # "B08A", "b8a"
            cand = f"B{int(m.group(1)):02d}" if not m.group(2) else f"B{int(m.group(1))}A"
            if cand in _S2_IDS:
                return cand
    for n in (name, common_name):
        if isinstance(n, str) and n and n != "rededge":
            return n
    return None


def _bands(entries: Any) -> tuple[AssetBand, ...]:
    if not isinstance(entries, list):
        return ()
    out = []
    for k, b in enumerate(entries):
        if not isinstance(b, dict):
            b = {}
        name, common = b.get("name"), b.get("common_name", b.get("eo:common_name"))
        out.append(AssetBand(k, name if isinstance(name, str) else None,
                             common if isinstance(common, str) else None, band_id(name, common)))
    return tuple(out)


def _is_raster(asset: pystac.Asset) -> bool:
    mt = (asset.media_type or "").lower()
    if mt:
        return mt.startswith(_RASTER_TYPES)
    return urlparse(asset.href).path.lower().endswith(_RASTER_SUFFIXES)


def _acquired(item: pystac.Item) -> datetime | None:
    t = item.datetime or item.common_metadata.start_datetime
    if t is None:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def item_from_pystac(item: pystac.Item, href: str, roots: Sequence[Path] | None = None) -> StacItem:
    """The `StacItem` of a pystac item read from ``href`` (asset hrefs resolved, not opened)."""
    props = dict(item.properties)
    rasters = {k: a for k, a in item.assets.items() if _is_raster(a) and "thumbnail" not in (a.roles or [])
               and "overview" not in (a.roles or [])}
    item_bands = _bands(props.get("eo:bands", props.get("bands")))
    data_rasters = [k for k, a in rasters.items() if "visual" not in (a.roles or [])
                    and not _bands(a.extra_fields.get("eo:bands", a.extra_fields.get("bands")))]
    assets: dict[str, StacAsset] = {}
    for key, a in rasters.items():
        ef = a.extra_fields
        bands = _bands(ef.get("eo:bands", ef.get("bands")))
        rbands = tuple(b for b in (ef.get("raster:bands") or []) if isinstance(b, dict)) \
            if isinstance(ef.get("raster:bands"), list) else ()
        bands_from: str | None = "asset" if bands else None
        if not bands and item_bands and data_rasters == [key] and len(rbands) in (0, len(item_bands)):
            bands, bands_from = item_bands, "item"
        target = a.get_absolute_href() or a.href
        try:
            path, error = str(_local_path(target, f"asset {key!r} of item {item.id!r}", roots)), None
        except StacError as exc:
            path, error = None, str(exc)
        gsd = ef.get("gsd", props.get("gsd"))
        assets[key] = StacAsset(key, a.href, path, error, tuple(a.roles or ()), a.media_type, bands, bands_from,
                                rbands, float(gsd) if isinstance(gsd, (int, float)) else None)
    return StacItem(item.id, href, _acquired(item), item.collection_id, props, assets,
                    tuple(item.bbox) if item.bbox else None)


def _file_dtype(asset: StacAsset) -> tuple[str, list[str]]:
    """The asset file's data type (its header is the truth), and a warning when the catalog's
    ``raster:bands`` ``data_type`` says otherwise."""
    assert asset.path is not None
    with open_raster(asset.path) as ds:
        dtype = str(ds.dtypes[0])
    declared = asset.data_type
    if declared and declared != dtype:
        return dtype, [f"asset {asset.key!r}: raster:bands says {declared}, the file is {dtype}; the file is used"]
    return dtype, []


@dataclass(frozen=True)
class _Candidate:
    asset: StacAsset
    band: AssetBand
    derived: Derived
    covers: int  # how many of the model's bands the asset has


def _radiometry(item: StacItem, asset: StacAsset, cache: dict[str, Derived]) -> Derived:
    if asset.key not in cache:
        rb = asset.raster_bands[0] if asset.raster_bands else None
        dtype, warn = _file_dtype(asset)
        d = stac_radiometry(item.properties, rb, dtype, asset.roles, [b.band_id for b in asset.bands],
                            f"{item.id}/{asset.key}")
        cache[asset.key] = Derived(d.radiometry, (*warn, *d.warnings))
    return cache[asset.key]


def _matches(band: AssetBand, wanted: str) -> bool:
    target = band_id(wanted, None)
    return band.band_id is not None and (band.band_id == target or band.name == wanted)


def plan_item(item: StacItem, model_bands: Sequence[str], model_radiometry: Radiometry,
              allow_mismatch: bool = False) -> BandPlan:
    """Choose an asset (and band index) for each of the model's bands.

    Per band, the candidates are the assets with a band of that name or common name. A
    candidate whose file is remote or missing, or whose radiometry does not reconcile with the
    model's, is refused (the reason recorded). Among the others the one covering most of the
    model's bands (fewest files to read) wins, then the finest (``gsd``), then item order.

    Raises:
        BandMismatchError: a band has no candidate at all.
        StacError: every candidate of a band is unusable for its href.
        RadiometryMismatch: every candidate of a band is refused for its radiometry (unless
            ``allow_mismatch``: then the closest is taken and the mismatch recorded).
    """
    cache: dict[str, Derived] = {}
    missing = [b for b in model_bands if not any(_matches(ab, b) for a in item.assets.values() for ab in a.bands)]
    if missing:
        have = sorted({ab.name or ab.band_id or "?" for a in item.assets.values() for ab in a.bands})
        raise BandMismatchError(f"item {item.id}: no asset has the model's bands {missing}; its assets' bands "
                                f"are {have}; use an item with those bands or a model trained on these")
    sources: list[BandSource] = []
    warnings: list[str] = []
    mismatches: dict[str, list[str]] = {}
    for wanted in model_bands:
        src, warn, mismatch = _choose(item, wanted, model_bands, model_radiometry, allow_mismatch, cache)
        sources.append(src)
        warnings += [w for w in warn if w not in warnings]
        if mismatch:
            mismatches.setdefault(mismatch, []).append(wanted)
    for a in dict.fromkeys(s.asset for s in sources):
        asset = item.assets[a]
        if asset.bands_from == "item":
            warnings.append(f"{item.id}/{a}: band order taken from the item's eo:bands (the asset declares none); "
                            "vision.band_order checks it against the pixels")
    scl = item.scl
    cloud = None
    if scl is not None and scl.path is not None:
        cloud = BandSource("SCL", scl.key, scl.path, 0, Radiometry("unknown", bits=8, source=f"{item.id}/{scl.key}"),
                           reason="scene classification layer", nodata=scl.nodata(0), categorical=True)
    mismatch = "; ".join(f"{', '.join(bands)}: {why}" for why, bands in mismatches.items()) or None
    return BandPlan(item.id, item.acquired, item.path, tuple(sources), tuple(warnings), mismatch, cloud)


def _choose(item: StacItem, wanted: str, model_bands: Sequence[str], model: Radiometry, allow_mismatch: bool,
            cache: dict[str, Derived]) -> tuple[BandSource, tuple[str, ...], str | None]:
    ok: list[_Candidate] = []
    refused: list[tuple[str, str]] = []
    off: list[tuple[_Candidate, str]] = []
    href_errors: list[str] = []
    for asset in item.assets.values():
        for ab in asset.bands:
            if not _matches(ab, wanted):
                continue
            if asset.error is not None:
                refused.append((asset.key, asset.error))
                href_errors.append(asset.error)
                continue
            try:
                derived = _radiometry(item, asset, cache)
            except UnreadableInputError as exc:
                refused.append((asset.key, str(exc)))
                href_errors.append(str(exc))
                continue
            covers = sum(any(_matches(x, m) for x in asset.bands) for m in model_bands)
            cand = _Candidate(asset, ab, derived, covers)
            why = mismatch_reason(model, derived.radiometry)
            if why is None:
                ok.append(cand)
            else:
                refused.append((asset.key, why))
                off.append((cand, why))
    def rank(c: _Candidate) -> tuple[float, float]:
        return -c.covers, c.asset.gsd if c.asset.gsd is not None else math.inf

    if ok:
        best = min(ok, key=rank)
        rec = reconcile(model, best.derived.radiometry, 1)
        mismatch = None
    elif off and allow_mismatch:
        # Closest first: the same kind of data (reflectance of another level) over another kind.
        best, _ = min(off, key=lambda cw: (cw[0].derived.radiometry.kind != model.kind, *rank(cw[0])))
        rec = reconcile(model, best.derived.radiometry, 1, allow_mismatch=True)
        # Named by the item, not the asset, so that the bands of one product share one reason.
        mismatch = mismatch_reason(model, replace(best.derived.radiometry, source=item.id))
    elif off:
        reasons = "; ".join(dict.fromkeys(f"asset {a!r}: {r}" for a, r in refused))
        raise RadiometryMismatch(f"item {item.id}: no asset of band {wanted} fits the model: {reasons}; "
                                 "--allow-radiometry-mismatch runs anyway and records it")
    else:
        raise StacError(f"item {item.id}: band {wanted}: " + "; ".join(dict.fromkeys(href_errors)))
    a, ab = best.asset, best.band
    label = f"eo:bands {'name ' + repr(ab.name) if ab.name else 'common_name ' + repr(ab.common_name)}"
    reason = (f"asset {a.key!r} band {ab.index + 1} ({label}"
              f"{', from the item' if a.bands_from == 'item' else ''}): {best.derived.radiometry.describe()}"
              f"{' fits the model' if mismatch is None else ' (radiometry mismatch allowed)'}")
    if best.covers > 1:
        reason += f"; it has {best.covers} of the model's bands"
    if not rec.harmonisation.identity:
        reason += f"; harmonised: {rec.harmonisation.reason}"
    refused_other = tuple((k, r) for k, r in refused if k != a.key)
    src = BandSource(wanted, a.key, str(a.path), ab.index, best.derived.radiometry, rec.harmonisation, reason,
                     refused_other, a.nodata(ab.index))
    return src, (*best.derived.warnings, *rec.warnings), mismatch
