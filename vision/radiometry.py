"""What pixel values mean: the radiometric contract (ARCHITECTURE.md §5).

A model is trained on pixels of one kind: 8-bit display composites (EuroSAT RGB JPEGs),
top-of-atmosphere reflectance x 10000 (Sentinel-2 L1C, EuroSAT MS), surface reflectance
x 10000 (L2A), ... It records that kind in ``vision.radiometry``. An input declares its own:
STAC ``raster:bands`` scale/offset, ``s2:processing_baseline``,
``earthsearch:boa_offset_applied``, ``s2:product_type`` (`stac_radiometry`), or GeoTIFF
scale/offset tags and dtype (`geotiff_radiometry`). `reconcile` compares the two and answers:

- the same kind on the same scale: use the pixels as they are (`IDENTITY`);
- the same kind on another digital-number scale: a per-band linear `Harmonisation` onto the
  model's numbers. The case that matters is the processing-baseline 04.00 offset: since
  25 January 2022 reflectance = (DN - 1000) / 10000, before it DN / 10000, so a 2023 product
  is mapped by ``DN - 1000`` onto the numbers an L1C model saw for 2017;
- different kinds (L2A into an L1C model, 16-bit reflectance into an 8-bit RGB model, unknown
  16-bit data into anything): a `RadiometryMismatch` naming both sides and what to do, or,
  with ``allow_mismatch``, a `Reconciled` that records the mismatch.

Nothing is guessed silently: every assumption made about an input that does not declare
itself comes back as a warning string, for the job's manifest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from vision.errors import InputError

Kind = Literal["display", "reflectance", "unknown"]
KINDS: tuple[str, ...] = ("display", "reflectance", "unknown")
LEVELS: tuple[str, ...] = ("L1C", "L2A")

#: Sentinel-2 processing baseline from which L1C/L2A digital numbers carry +1000.
OFFSET_BASELINE = (4, 0)
#: The day that baseline went into operations.
OFFSET_BASELINE_DATE = datetime(2022, 1, 25, tzinfo=UTC)
#: The offset itself, in digital numbers (``RADIO_ADD_OFFSET`` / ``BOA_ADD_OFFSET`` = -1000).
S2_DN_OFFSET = 1000.0
#: Sentinel-2 quantification value: reflectance = DN / 10000.
S2_SCALE = 1e-4
#: The Sentinel-2 bands an L2A product has (no B10, the cirrus band, which L1C has).
L2A_BANDS = frozenset({"B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"})


class RadiometryMismatch(InputError, ValueError):
    """An input's pixels mean something else than what the model was trained on."""


@dataclass(frozen=True)
class Radiometry:
    """The meaning of pixel values.

    Attributes:
        kind: ``display`` (a rendered composite, e.g. 8-bit true colour), ``reflectance``
            (a physical quantity on a linear digital-number scale) or ``unknown``.
        bits: bit depth of the stored numbers (8 for a display composite, 16 for uint16).
        level: for reflectance, ``L1C`` (top of atmosphere) or ``L2A`` (bottom of
            atmosphere), ``None`` when not known.
        scale, offset: reflectance = DN * scale + offset, for the numbers as stored.
        baseline: Sentinel-2 processing baseline (``"02.14"``), when known.
        source: where this was learnt (a dataset name, a STAC item and asset, a file).
    """

    kind: Kind
    bits: int | None = None
    level: str | None = None
    scale: float | None = None
    offset: float | None = None
    baseline: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"radiometry kind must be one of {KINDS}, not {self.kind!r}")
        if self.level is not None and self.level not in LEVELS:
            raise ValueError(f"radiometry level must be one of {LEVELS}, not {self.level!r}")
        if self.bits is not None and not (isinstance(self.bits, int) and 1 <= self.bits <= 64):
            raise ValueError(f"radiometry bits must be a whole number 1..64, not {self.bits!r}")
        for name in ("scale", "offset"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"radiometry {name} must be a finite number, not {v!r}")
        if self.scale == 0:
            raise ValueError("radiometry scale must not be 0")

    def describe(self) -> str:
        """One phrase for messages, e.g. ``L2A reflectance (DN x 0.0001, uint16)``."""
        if self.kind == "display":
            return f"{self.bits or '?'}-bit display composite"
        if self.kind == "reflectance":
            lvl = {"L1C": "L1C top-of-atmosphere ", "L2A": "L2A surface "}.get(self.level or "", "")
            s = f"DN x {self.scale:g}" if self.scale is not None else "scale unknown"
            o = f" {self.offset:+g}" if self.offset else ""
            b = f", {self.bits}-bit" if self.bits else ""
            return f"{lvl}reflectance ({s}{o}{b})"
        return f"pixel values of unknown meaning{f' ({self.bits}-bit)' if self.bits else ''}"

    def to_obj(self) -> dict[str, Any]:
        """The JSON object of ``vision.radiometry`` (unset fields omitted)."""
        return {k: getattr(self, k) for k in ("kind", "bits", "level", "scale", "offset", "baseline", "source")
                if getattr(self, k) not in (None, "")}

    def to_json(self) -> str:
        return json.dumps(self.to_obj())

    @classmethod
    def from_obj(cls, obj: Any) -> Radiometry:
        """From the JSON object (or its text) stored in ``vision.radiometry``; ``None`` is unknown.

        Raises:
            ValueError: not a radiometry object (unknown keys are ignored).
        """
        if obj is None:
            return UNKNOWN
        if isinstance(obj, str):
            obj = json.loads(obj)
        if not isinstance(obj, Mapping) or obj.get("kind") not in KINDS:
            raise ValueError(f"not a radiometry object: {obj!r}")
        known = {"kind", "bits", "level", "scale", "offset", "baseline", "source"}
        kw = {k: v for k, v in obj.items() if k in known}
        if "source" in kw and not isinstance(kw["source"], str):
            raise ValueError("radiometry source must be a string")
        return cls(**kw)


UNKNOWN = Radiometry("unknown")
#: EuroSAT RGB: JPEG true-colour composites of B04/B03/B02.
EUROSAT_RGB = Radiometry("display", bits=8, source="EuroSAT RGB JPEG")
#: EuroSAT MS: Sentinel-2 L1C top-of-atmosphere reflectance x 10000, before baseline 04.00
#: (acquired 2015-2017), so its numbers carry no offset.
EUROSAT_MS = Radiometry("reflectance", bits=16, level="L1C", scale=S2_SCALE, offset=0.0,
                        source="EuroSAT MS (Sentinel-2 L1C 2015-2017, before baseline 04.00)")


@dataclass(frozen=True)
class Derived:
    """An input's radiometry and the assumptions made to get it (for the manifest)."""

    radiometry: Radiometry
    warnings: tuple[str, ...] = ()


def parse_baseline(value: object) -> tuple[int, int] | None:
    """``"04.00"`` -> ``(4, 0)``; ``None`` for anything else."""
    if not isinstance(value, str) or "." not in value:
        return None
    major, _, minor = value.strip().partition(".")
    if not (major.isdigit() and minor.isdigit()):
        return None
    return int(major), int(minor)


def dtype_bits(dtype: str | None) -> int | None:
    """Bits per sample of a numpy dtype name (``uint16`` -> 16), ``None`` if unknown."""
    try:
        return np.dtype(dtype).itemsize * 8 if dtype else None
    except TypeError:
        return None


def is_sentinel2(properties: Mapping[str, Any]) -> bool:
    """Whether a STAC item's properties describe a Sentinel-2 MSI product."""
    if any(str(k).startswith("s2:") for k in properties):
        return True
    names = f"{properties.get('constellation', '')} {properties.get('platform', '')}".lower()
    return "sentinel-2" in names or "sentinel2" in names


def sentinel2_level(properties: Mapping[str, Any]) -> str | None:
    """``L1C``/``L2A`` from ``s2:product_type`` (``S2MSI2A``) or the product URI."""
    ptype = str(properties.get("s2:product_type", "") or "").upper()
    if ptype.endswith("2A") or ptype.endswith("2AP"):
        return "L2A"
    if ptype.endswith("1C"):
        return "L1C"
    uri = str(properties.get("s2:product_uri", "") or "").upper()
    return "L2A" if "MSIL2A" in uri else "L1C" if "MSIL1C" in uri else None


def _acquired(properties: Mapping[str, Any]) -> datetime | None:
    raw = properties.get("datetime") or properties.get("start_datetime")
    if not isinstance(raw, str):
        return None
    try:
        t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _level_from_bands(band_ids: Sequence[str | None], source: str) -> tuple[str | None, list[str]]:
    ids = {b for b in band_ids if b}
    if "B10" in ids:
        return "L1C", [f"{source}: processing level not declared (no s2:product_type); it has B10 (cirrus), "
                       "which only L1C products carry: taken as L1C"]
    if ids and ids == L2A_BANDS:
        return "L2A", [f"{source}: processing level not declared; the 12 bands of an L2A product (no B10): "
                       "taken as L2A"]
    return None, [f"{source}: processing level (L1C/L2A) not declared"]


def stac_radiometry(properties: Mapping[str, Any], raster_band: Mapping[str, Any] | None, dtype: str | None,
                    roles: Sequence[str], band_ids: Sequence[str | None], source: str) -> Derived:
    """The radiometry of one STAC asset.

    Args:
        properties: the item's properties (``s2:*``, ``earthsearch:*``, ``datetime``).
        raster_band: the asset's first ``raster:bands`` entry, if any (``scale``, ``offset``).
        dtype: the asset's data type (``raster:bands`` ``data_type``, else the file's).
        roles: the asset's roles (``visual`` marks a display composite).
        band_ids: canonical Sentinel-2 ids of the asset's bands (`vision.bands.canonical_band`).
        source: names the item and asset in messages.
    """
    rb = raster_band or {}
    scale, offset = _number(rb.get("scale")), _number(rb.get("offset"))
    bits = dtype_bits(dtype)
    if "visual" in roles and dtype == "uint8" and scale is None:
        return Derived(Radiometry("display", bits=8, source=source))
    if dtype == "uint8" and scale is None and "reflectance" not in roles:
        return Derived(Radiometry("display", bits=8, source=source),
                       (f"{source}: radiometry not declared; 8-bit data taken as a display composite",))
    if is_sentinel2(properties) and (scale is not None or "reflectance" in roles
                                     or any(b and b.startswith("B") for b in band_ids)):
        return _sentinel2(properties, scale, offset, bits, band_ids, source)
    if scale is not None:
        return Derived(Radiometry("reflectance", bits=bits, scale=scale, offset=offset or 0.0, source=source),
                       (f"{source}: scale {scale:g} declared but not the processing level",))
    return guess_radiometry(dtype, band_ids, source)


def _number(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _sentinel2(properties: Mapping[str, Any], scale: float | None, offset: float | None, bits: int | None,
               band_ids: Sequence[str | None], source: str) -> Derived:
    warnings: list[str] = []
    level = sentinel2_level(properties)
    if level is None:
        level, more = _level_from_bands(band_ids, source)
        warnings += more
    if scale is None:
        scale = S2_SCALE
        warnings.append(f"{source}: no raster:bands scale; assumed {S2_SCALE:g} (Sentinel-2 DN / 10000)")
    baseline_s = properties.get("s2:processing_baseline")
    baseline = parse_baseline(baseline_s)
    applied = properties.get("earthsearch:boa_offset_applied")
    dn_offset = -S2_DN_OFFSET * scale  # the 04.00 offset in reflectance units (-0.1)
    if baseline is None:
        acquired = _acquired(properties)
        late = acquired is not None and acquired >= OFFSET_BASELINE_DATE
        warnings.append(
            f"{source}: processing baseline not declared (no s2:processing_baseline); assumed before 04.00 "
            "(no DN offset)" + ("; its datetime is after 2022-01-25, when 04.00 began: if the numbers carry "
                                "+1000, declare s2:processing_baseline" if late else ""))
        offset = offset or 0.0
    elif baseline >= OFFSET_BASELINE and applied is not True:
        if offset is None:
            offset = dn_offset
            if applied is None:
                warnings.append(f"{source}: baseline {baseline_s} without earthsearch:boa_offset_applied; "
                                "assumed the numbers carry the +1000 DN offset")
        elif math.isclose(offset, 0.0, abs_tol=1e-12):
            warnings.append(f"{source}: raster:bands offset 0 contradicts baseline {baseline_s} "
                            "(numbers carry +1000 unless earthsearch:boa_offset_applied); taken as "
                            f"{dn_offset:g}")
            offset = dn_offset
    else:
        offset = offset or 0.0
    return Derived(Radiometry("reflectance", bits=bits, level=level, scale=scale, offset=offset,
                              baseline=str(baseline_s) if baseline_s else None, source=source), tuple(warnings))


def guess_radiometry(dtype: str | None, band_ids: Sequence[str | None], source: str) -> Derived:
    """An input that declares nothing: what its dtype and band names allow to say, as warnings.

    - 8-bit data: a display composite;
    - unsigned 16-bit Sentinel-2 bands with B10 (cirrus), which only L1C carries: L1C
      reflectance x 10000 before baseline 04.00; exactly the 12 L2A bands: L2A x 10000;
    - anything else: unknown (which `reconcile` refuses).
    """
    if dtype == "uint8":
        return Derived(Radiometry("display", bits=8, source=source),
                       (f"{source}: radiometry not declared; 8-bit data taken as a display composite",))
    ids = {b for b in band_ids if b}
    if dtype == "uint16" and ("B10" in ids or ids == L2A_BANDS):
        level = "L1C" if "B10" in ids else "L2A"
        return Derived(Radiometry("reflectance", bits=16, level=level, scale=S2_SCALE, offset=0.0, source=source),
                       (f"{source}: radiometry not declared; {len(band_ids)} uint16 Sentinel-2 bands "
                        f"{'with B10 (which only L1C has)' if level == 'L1C' else 'without B10 (as L2A)'} "
                        f"taken as {level} reflectance x 10000 before baseline 04.00",))
    return Derived(Radiometry("unknown", bits=dtype_bits(dtype), source=source),
                   (f"{source}: radiometry not declared ({len(band_ids)} {dtype} bands)",))


def geotiff_radiometry(dtype: str, scales: Sequence[float | None], offsets: Sequence[float | None],
                       band_ids: Sequence[str | None], source: str) -> Derived:
    """The radiometry of GeoTIFF bands from their scale/offset tags, else `guess_radiometry`.

    GDAL reports scale 1 and offset 0 for bands without the tags; anything else is a
    declaration: value = DN * scale + offset (the level is then not known).
    """
    pairs = {(float(s if s is not None else 1.0), float(o if o is not None else 0.0))
             for s, o in zip(scales, offsets, strict=True)}
    if pairs and pairs != {(1.0, 0.0)}:
        if len(pairs) > 1:
            return Derived(Radiometry("unknown", bits=dtype_bits(dtype), source=source),
                           (f"{source}: bands declare different scale/offset tags {sorted(pairs)}",))
        (scale, offset), = pairs
        return Derived(Radiometry("reflectance", bits=dtype_bits(dtype), scale=scale, offset=offset, source=source),
                       (f"{source}: scale/offset tags {scale:g}/{offset:g} declared but not the processing level",))
    return guess_radiometry(dtype, band_ids, source)


@dataclass(frozen=True)
class Harmonisation:
    """A per-band linear map ``x' = x * gain + bias`` from an input's numbers to the model's.

    Attributes:
        gain, bias: per band, or one value for all bands.
        reason: what it corrects, for the manifest (empty for the identity).
    """

    gain: tuple[float, ...] = (1.0,)
    bias: tuple[float, ...] = (0.0,)
    reason: str = ""

    @property
    def identity(self) -> bool:
        return all(g == 1.0 for g in self.gain) and all(b == 0.0 for b in self.bias)

    def per_band(self, n: int) -> Harmonisation:
        """The same map with one gain and bias per band of ``n``."""
        return Harmonisation(_expand(self.gain, n), _expand(self.bias, n), self.reason)

    def apply(self, data: np.ndarray) -> np.ndarray:
        """``C x H x W`` numbers mapped (float32); the input itself when this is the identity."""
        if self.identity:
            return data
        n = data.shape[0]
        g = np.asarray(_expand(self.gain, n), dtype=np.float32).reshape(n, 1, 1)
        b = np.asarray(_expand(self.bias, n), dtype=np.float32).reshape(n, 1, 1)
        out = data.astype(np.float32)
        out *= g
        out += b
        return out

    @classmethod
    def stack(cls, maps: Sequence[Harmonisation]) -> Harmonisation:
        """One band each, into one map over all of them."""
        reasons = sorted({m.reason for m in maps if m.reason and not m.identity})
        return cls(tuple(m.gain[0] for m in maps), tuple(m.bias[0] for m in maps), "; ".join(reasons))

    def to_obj(self) -> dict[str, Any]:
        return {"gain": list(self.gain), "bias": list(self.bias), "reason": self.reason}


def _expand(values: tuple[float, ...], n: int) -> tuple[float, ...]:
    if len(values) == n:
        return values
    if len(values) == 1:
        return values * n
    raise ValueError(f"{len(values)} values for {n} bands")


IDENTITY = Harmonisation()


@dataclass(frozen=True)
class Reconciled:
    """How an input's pixels may be fed to a model.

    Attributes:
        harmonisation: to apply to the input's numbers.
        warnings: assumptions that were made (for the manifest).
        mismatch: why the two do not fit, when the caller allowed it to run anyway.
    """

    harmonisation: Harmonisation = IDENTITY
    warnings: tuple[str, ...] = ()
    mismatch: str | None = None

    def to_obj(self) -> dict[str, Any]:
        return {"harmonisation": self.harmonisation.to_obj(), "warnings": list(self.warnings),
                "mismatch": self.mismatch}


def mismatch_reason(model: Radiometry, data: Radiometry) -> str | None:
    """Why ``data`` cannot be fed to a model trained on ``model`` pixels, or ``None``."""
    if model.kind == "unknown":
        return None
    m, d = f"{model.describe()} ({model.source or 'the model'})", f"{data.describe()} ({data.source or 'input'})"
    if data.kind == "unknown":
        return (f"the input's pixel values are of unknown meaning, {d}; the model was trained on {m}. "
                "Declare the input's radiometry (STAC raster:bands scale and s2:product_type, or GeoTIFF "
                "scale/offset tags)")
    if model.kind != data.kind:
        do = ("use an 8-bit true-colour product of the same scene (e.g. the STAC 'visual' asset, TCI)"
              if model.kind == "display" else "use reflectance data (not a rendered composite)")
        return f"the model was trained on {m}, the input is {d}: {do}, or a model trained on this kind of data"
    if model.kind == "display" and model.bits and data.bits and model.bits != data.bits:
        return f"the model was trained on {m}, the input is {d}: give {model.bits}-bit display data"
    if model.kind == "reflectance" and model.level and data.level and model.level != data.level:
        return (f"the model was trained on {m}, the input is {d}: give the {model.level} product of the same "
                f"acquisition, or use a model trained on {data.level}")
    return None


def reconcile(model: Radiometry, data: Radiometry, bands: int = 1, allow_mismatch: bool = False) -> Reconciled:
    """Decide whether ``data`` may be fed to a model trained on ``model`` pixels, and how.

    A model that does not record its radiometry (schema 1: `UNKNOWN`) takes anything, with a
    warning. Otherwise kinds, display bit depths and reflectance levels must agree; numbers
    on another scale or offset are mapped onto the model's (`Harmonisation`).

    Args:
        model: what the model was trained on.
        data: what the input is.
        bands: how many bands the harmonisation is for.
        allow_mismatch: record a mismatch in the result instead of raising.

    Raises:
        RadiometryMismatch: the two cannot be reconciled and ``allow_mismatch`` is false.
    """
    if model.kind == "unknown":
        return Reconciled(warnings=("the model does not record its radiometry (schema 1): the input "
                                    f"({data.describe()}) is taken as it is",))
    problem = mismatch_reason(model, data)
    if problem is not None:
        if not allow_mismatch:
            raise RadiometryMismatch(f"{problem}; --allow-radiometry-mismatch runs anyway and records it")
        return Reconciled(mismatch=problem)
    warnings: list[str] = []
    if model.kind == "reflectance" and data.level is None and model.level is not None:
        warnings.append(f"the input's processing level is not declared; taken as the model's {model.level}")
    return Reconciled(harmonisation=linear_map(model, data).per_band(bands), warnings=tuple(warnings))


def _snap(x: float) -> float:
    """Round away the float noise of ``1e-4 / 1e-4`` and ``-0.1 / 1e-4``."""
    r = round(x, 6)
    return float(r) if math.isclose(x, r, rel_tol=1e-9, abs_tol=1e-9) else x


def linear_map(model: Radiometry, data: Radiometry) -> Harmonisation:
    """The map from the input's digital numbers to the model's, for the same quantity:
    ``model DN = (DN * data.scale + data.offset - model.offset) / model.scale``."""
    if model.kind != "reflectance" or data.kind != "reflectance":
        return IDENTITY
    ms = model.scale if model.scale is not None else S2_SCALE
    mo = model.offset or 0.0
    ds = data.scale if data.scale is not None else ms
    do = data.offset or 0.0
    gain, bias = _snap(ds / ms), _snap((do - mo) / ms)
    if gain == 1.0 and bias == 0.0:
        return IDENTITY
    reason = (f"{data.source or 'input'}: {data.describe()} mapped onto the model's {model.describe()}: "
              f"x * {gain:g} {bias:+g}")
    return Harmonisation((gain,), (bias,), reason)
