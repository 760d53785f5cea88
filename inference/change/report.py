"""``report.html``: one self-contained page (inline CSS and PNGs, no scripts, nothing fetched)
with the jobs compared, the rules applied, the summary table, a map of the changes over each
later scene's natural-colour rendering, and before/after thumbnails of the most confident
changes (both windows with one shared stretch, `vision.bands.stretch`).

Pictures are read from the input files the jobs recorded, through `vision.raster.open_raster`
(driver allow-list), and only when the file's sha256 still equals the one the job recorded: a
file that is gone or changed since the model saw it is named on the page instead of shown.
Every string from the jobs is HTML-escaped.
"""

from __future__ import annotations

import base64
import heapq
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rasterio.enums import Resampling
from rasterio.windows import Window

from inference.change.arrow import from_numpy, table_rows
from inference.change.jobs import Job, SceneGrid
from inference.change.rules import OUT_OK
from inference.change.table import Chunk
from vision.bands import display_bands, raster_band_names, stretch
from vision.contracts.changes import CHANGE_CODES, CHANGE_COLOURS, CHANGE_TRANSITIONS, TRANSITIONS
from vision.errors import VisionError
from vision.hashing import file_sha256
from vision.raster import open_raster

MAP_PX = 720
THUMB_PX = 160
MAX_MAPS = 6
#: Scene rows read at once for a map (see `_map_pixels`).
STRIP_ROWS = 512
#: Overlay opacity per outcome on the map (absent: not drawn, the picture shows through).
_ALPHA = {"absent": 0.0, "persisted": 0.35, "appeared": 0.7, "disappeared": 0.7, "changed": 0.7,
          "uncertain": 0.45, "not_assessed": 0.5}
_T = {t: k for k, t in enumerate(TRANSITIONS)}


@dataclass(order=True)
class Candidate:
    """A change for the thumbnails, ranked by the smaller of its two probabilities."""

    score: float
    info: dict[str, Any] = field(compare=False)


class Candidates:
    """The ``limit`` most confident changes seen so far."""

    def __init__(self, limit: int):
        self.limit = limit
        self.heap: list[Candidate] = []

    def add(self, chunk: Chunk, table: pa.Table) -> None:
        if self.limit <= 0:
            return
        out = chunk.outcome
        change = (out.status == OUT_OK) & np.isin(out.transition, [_T[t] for t in CHANGE_TRANSITIONS])
        if not change.any():
            return
        score = np.minimum(chunk.dates[0].p, chunk.dates[-1].p)
        idx = np.flatnonzero(change)
        best = idx[np.argsort(-score[idx], kind="stable")[: self.limit]]
        rows = table_rows(table.take(from_numpy(best, pa.int64())), [
            "change_id", "transition", "class_before", "class_after", "p_before", "p_after",
            "acquired_before", "acquired_after", "path_before", "row_off_before", "col_off_before",
            "height_before", "width_before", "input_sha256_before", "path_after", "row_off", "col_off",
            "height", "width", "input_sha256_after", "aoi_id"])
        for k, info in zip(best, rows, strict=True):
            cand = Candidate(float(score[k]), info)
            if len(self.heap) < self.limit:
                heapq.heappush(self.heap, cand)
            elif cand > self.heap[0]:
                heapq.heapreplace(self.heap, cand)

    def best(self) -> list[dict[str, Any]]:
        return [c.info for c in sorted(self.heap, reverse=True)]


class Sources:
    """Input files, checked once against the sha256 the job recorded."""

    def __init__(self) -> None:
        self.checked: dict[tuple[str, str | None], str | None] = {}

    def problem(self, path: str | None, sha: str | None) -> str | None:
        """Why ``path`` cannot be shown (``None``: it can)."""
        if path is None:
            return "no window"
        key = (path, sha)
        if key not in self.checked:
            p = Path(path)
            if not p.is_file():
                self.checked[key] = f"{path}: not found"
            elif sha is None:
                self.checked[key] = f"{path}: the job recorded no sha256"
            else:
                try:
                    self.checked[key] = None if file_sha256(p) == sha else f"{path}: changed since it was classified"
                except OSError as exc:
                    self.checked[key] = f"{path}: {exc}"
        return self.checked[key]


def _png(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)  # speed over bytes
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _read_display(path: str, window: Window | None = None, out_shape: tuple[int, int] | None = None,
                  scaled: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Natural-colour bands (3 x H x W) and the valid mask of one window of a file (pixels
    past the edge are invalid), or of a window (default: the whole file) at ``out_shape``."""
    with open_raster(path) as ds:
        bands = [b + 1 for b in display_bands(raster_band_names(ds.descriptions))]
        nodata = [ds.nodatavals[b - 1] for b in bands]
        if window is not None and not scaled:
            # the part inside the raster, pasted into the window (a boundless read goes
            # through a VRT, ten times slower)
            r0, c0 = int(window.row_off), int(window.col_off)
            h, w = int(window.height), int(window.width)
            a0, a1 = max(0, r0), min(ds.height, r0 + h)
            b0, b1 = max(0, c0), min(ds.width, c0 + w)
            data = np.zeros((len(bands), h, w), ds.dtypes[0])
            valid = np.zeros((h, w), bool)
            if a1 > a0 and b1 > b0:
                data[:, a0 - r0:a1 - r0, b0 - c0:b1 - c0] = ds.read(bands, window=Window(b0, a0, b1 - b0, a1 - a0))
                valid[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = True
        else:
            shape = out_shape or (ds.height, ds.width)
            data = ds.read(bands, window=window, out_shape=(len(bands), *shape), resampling=Resampling.nearest)
            valid = np.ones(shape, bool)
    if all(v is not None for v in nodata):
        valid &= ~np.all([data[k] == v for k, v in enumerate(nodata)], axis=0)
    return data, valid


def _overlay(rgb: np.ndarray, codes: np.ndarray) -> np.ndarray:
    out = rgb.astype(np.float32)
    for name, code in CHANGE_CODES.items():
        alpha = _ALPHA[name]
        m = codes == code
        if alpha and m.any():
            out[m] = (1 - alpha) * out[m] + alpha * np.array(CHANGE_COLOURS[name][:3], np.float32)
    return out.clip(0, 255).astype(np.uint8)


def _map_pixels(path: str, h: int, w: int, oh: int, ow: int) -> tuple[np.ndarray, np.ndarray]:
    """The natural-colour bands of a whole scene at ``oh x ow``, read in strips of about
    `STRIP_ROWS` scene rows, each through its own open of the file: GDAL frees a dataset's
    cached blocks when it closes, so memory holds one strip whatever the scene's size."""
    step = max(1, int(STRIP_ROWS * oh / h))
    parts, valids = [], []
    for o0 in range(0, oh, step):
        o1 = min(oh, o0 + step)
        s0, s1 = int(o0 * h / oh), min(h, max(int(o0 * h / oh) + 1, -(-o1 * h // oh)))
        d, v = _read_display(path, Window(0, s0, w, s1 - s0), out_shape=(o1 - o0, ow), scaled=True)
        parts.append(d)
        valids.append(v)
    return np.concatenate(parts, axis=1), np.concatenate(valids, axis=0)


def scene_map(scene: SceneGrid, change_tif: Path, sources: Sources) -> tuple[str | None, str | None]:
    """A PNG data URI of the later scene with its changes drawn over it, or why not."""
    import rasterio

    problem = sources.problem(scene.path, scene.sha256)
    h, w = scene.shape
    f = max(1.0, max(h, w) / MAP_PX)
    oh, ow = max(1, int(h / f)), max(1, int(w / f))
    rgb: np.ndarray | None = None
    if problem is None:
        try:
            data, valid = _map_pixels(scene.path, h, w, oh, ow)
            rgb = (stretch(data, valid) * 255).astype(np.uint8)
        except (VisionError, OSError, ValueError) as exc:
            problem = f"{scene.path}: cannot be read ({exc})"
    if rgb is None:
        rgb = np.full((oh, ow, 3), 40, np.uint8)
    # output pixel -> scene pixel -> window cell (cells are stride-sized, centred on windows)
    ys = (np.arange(oh) + 0.5) * h / oh
    xs = (np.arange(ow) + 0.5) * w / ow
    (sh, sw), (wh, ww) = scene.stride, scene.size
    ci = np.clip(np.floor((ys - (wh - sh) / 2) / sh), 0, scene.rows - 1).astype(int)
    cj = np.clip(np.floor((xs - (ww - sw) / 2) / sw), 0, scene.cols - 1).astype(int)
    codes = np.empty((oh, ow), np.uint8)
    with rasterio.open(change_tif) as ds:  # the cell rows each strip of the map needs
        for o0 in range(0, oh, 256):
            rows = ci[o0:o0 + 256]
            r0, r1 = int(rows.min()), int(rows.max()) + 1
            block = ds.read(1, window=Window(0, r0, scene.cols, r1 - r0))
            codes[o0:o0 + 256] = block[np.ix_(rows - r0, cj)]
    return _png(_overlay(rgb, codes)), problem


def thumbnails(info: dict[str, Any], sources: Sources) -> tuple[str | None, str | None, str | None]:
    """Before and after PNGs of one change (one stretch for both), or why not."""
    wins = []
    for side, suffix in (("before", "_before"), ("after", "")):
        path, sha = info[f"path_{side}"], info[f"input_sha256_{side}"]
        problem = sources.problem(path, sha)
        if problem is not None:
            return None, None, problem
        r, c = info[f"row_off{suffix}"], info[f"col_off{suffix}"]
        hh, ww = info[f"height{suffix}"], info[f"width{suffix}"]
        if None in (r, c, hh, ww):
            return None, None, f"{side}: no window"
        wins.append((path, Window(c, r, ww, hh)))
    try:
        (db, vb), (da, va) = (_read_display(p, w) for p, w in wins)
    except (VisionError, OSError, ValueError) as exc:
        return None, None, f"cannot read the windows ({exc})"
    both = stretch(np.concatenate([db, da], axis=2), np.concatenate([vb, va], axis=1))
    split = db.shape[2]
    # at the windows' own pixels; the page scales them up (image-rendering: pixelated)
    return _png((both[:, :split] * 255).astype(np.uint8)), _png((both[:, split:] * 255).astype(np.uint8)), None


_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.sw{display:inline-block;width:14px;height:14px;
vertical-align:middle;margin-right:4px;border:1px solid #888}.note{color:#a33}
.grid{display:flex;flex-wrap:wrap;gap:14px}
.card{border:1px solid #ddd;padding:8px;font-size:13px}.card img{image-rendering:pixelated;margin-right:4px}
figure{margin:0 0 20px}figcaption{font-size:13px;color:#555}"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _date(v: Any) -> str:
    return v.strftime("%Y-%m-%d %H:%M UTC") if v is not None else "unknown"


def write_report(path: Path, jobs: list[Job], summary: dict[str, Any], rules: dict[str, Any],
                 maps: list[tuple[str, str | None, str | None]], changes: list[dict[str, Any]],
                 sources: Sources, notes: list[str]) -> None:
    """Write ``report.html`` (see the module docstring)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>vision change</title><style>{_CSS}</style>"
             "</head><body><h1>Change over time</h1>"]
    parts.append("<h2>Dates compared</h2><table><tr><th class=l>date</th><th class=l>job</th>"
                  "<th class=l>items</th><th class=l>model</th></tr>")
    for job in jobs:
        t0, t1 = job.acquired_range()
        items = ", ".join(s.item_id for s in job.scenes[:6]) + (" ..." if len(job.scenes) > 6 else "")
        day = _date(job.scenes[0].acquired()) if t0 == t1 else f"{_date(job.scenes[0].acquired())} ..."
        parts.append(f"<tr><td class=l>{_e(day)}</td><td class=l>{_e(job.given)}</td><td class=l>{_e(items)}</td>"
                     f"<td class=l>{_e(job.model.short())}</td></tr>")
    parts.append("</table>")
    parts.append(f"<p>Classes of interest: <b>{_e(', '.join(rules['classes_of_interest']))}</b>; "
                 f"--min-confidence {rules['min_confidence']:g} (both dates' class probability must reach it, "
                 "else <i>uncertain</i>); windows nodata, cloudy or in error at either date are <i>not assessed</i>, "
                 "never counted as no change.</p>")
    for n in notes:
        parts.append(f"<p class=note>{_e(n)}</p>")
    outcomes = list(CHANGE_CODES)
    parts.append("<h2>Summary (hectares)</h2><table><tr><th class=l>area</th>"
                 + "".join(f"<th><span class=sw style='background:rgb{CHANGE_COLOURS[o][:3]}'></span>{_e(o)}</th>"
                           for o in outcomes) + "<th>total</th></tr>")
    for a in summary["areas"]:
        ha = a["hectares"]
        parts.append(f"<tr><td class=l>{_e(a['aoi_id'] or 'whole area')}</td>"
                     + "".join(f"<td>{ha[o]:,.2f}<br><small>{a['windows'][o]:,} win</small></td>" for o in outcomes)
                     + f"<td>{ha['total']:,.2f}</td></tr>")
    parts.append("</table><h2>Maps (latest date)</h2>")
    for title, uri, problem in maps:
        parts.append(f"<figure>{f'<img src={uri!r} alt=map>' if uri else ''}<figcaption>{_e(title)}"
                     + (f" <span class=note>picture not shown: {_e(problem)}</span>" if problem else "")
                     + "</figcaption></figure>")
    parts.append(f"<h2>Most confident changes ({len(changes)})</h2><div class=grid>")
    for info in changes:
        before, after, problem = thumbnails(info, sources)
        size = f"width={THUMB_PX} height={THUMB_PX}"
        pics = (f"<img src={before!r} {size} alt=before><img src={after!r} {size} alt=after><br>" if before and after
                else f"<span class=note>{_e(problem)}</span><br>")
        parts.append(
            f"<div class=card>{pics}<b>{_e(info['transition'])}</b> {_e(info['class_before'])} "
            f"({info['p_before']:.2f}, {_e(_date(info['acquired_before']))}) &rarr; {_e(info['class_after'])} "
            f"({info['p_after']:.2f}, {_e(_date(info['acquired_after']))})<br><small>{_e(info['change_id'])}"
            f"{' &middot; AOI ' + _e(info['aoi_id']) if info['aoi_id'] else ''}</small></div>")
    parts.append("</div></body></html>\n")
    path.write_text("".join(parts), encoding="utf-8")
