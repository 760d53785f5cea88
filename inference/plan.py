"""The plan of a job: every input's kind, every scene's grid and chunks, and the work units.

A *unit* is what is done, recorded and resumed as one piece: a block of chip files, or a
chunk of a scene's windows. Its id names its part file in the job folder, so ids must be
stable for the same inputs and options (the job's fingerprint guards that).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from inference.model import ModelInfo
from inference.readers import DEFAULT_MAX_PIXELS, RASTER_SUFFIXES, Probe, SceneInfo, probe
from inference.tiling import Chunk, TileGrid, chunk_grid
from vision.hashing import file_sha256

#: Chip files per unit: big enough to amortise a part file, small enough to resume cheaply.
CHIP_BLOCK = 256


@dataclass(frozen=True)
class ChipEntry:
    """A file classified as one row; ``error`` is set when probing already failed.

    ``source`` is the name on disk where ``path`` (valid UTF-8, for the table) differs.
    """

    path: str
    error: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class ScenePlan:
    """A scene to tile: header facts, grid, chunks, hash and output file stem."""

    index: int
    info: SceneInfo
    grid: TileGrid
    chunks: tuple[Chunk, ...]
    sha256: str
    stem: str

    @property
    def path(self) -> str:
        return self.info.path


@dataclass(frozen=True)
class Unit:
    """One piece of work: a block of chips (``chips``) or one chunk of a scene (``scene``)."""

    uid: str
    kind: str
    chips: tuple[ChipEntry, ...] = ()
    scene: int | None = None
    chunk: int | None = None
    n_rows: int = 0


@dataclass(frozen=True)
class Plan:
    files: tuple[str, ...]  # as found on disk (maybe not UTF-8): the chips' paths are
    chips: tuple[ChipEntry, ...]
    scenes: tuple[ScenePlan, ...]
    units: tuple[Unit, ...]

    @property
    def n_windows(self) -> int:
        return sum(len(s.grid) for s in self.scenes)

    def digest(self) -> str:
        """Identity of the work split (files, kinds, grids): a resumed job must match it."""
        h = hashlib.sha256()
        for u in self.units:
            h.update(f"{u.uid}:{u.n_rows};".encode())
        for c in self.chips:
            h.update(f"c:{c.path}:{c.error};".encode())
        for s in self.scenes:
            h.update(f"s:{s.path}:{s.sha256}:{s.grid};".encode())
        return h.hexdigest()


def _stems(paths: Sequence[str]) -> dict[str, str]:
    """Output file stems per scene; a stem shared by two scenes gets a short path hash."""
    base = {p: Path(p).stem for p in paths}
    counts: dict[str, int] = {}
    for s in base.values():
        counts[s] = counts.get(s, 0) + 1
    return {
        p: s if counts[s] == 1 else f"{s}-{hashlib.sha1(p.encode()).hexdigest()[:8]}"
        for p, s in base.items()
    }


def make_plan(files: Sequence[str], model: ModelInfo, stride: tuple[int, int],
              workers: int = 1,
              on_probe: Callable[[Probe], None] | None = None,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> Plan:
    """Probe every file (rasters in parallel) and split the work into units.

    ``files`` may hold names that are not valid UTF-8: they become error entries (the
    plan, its digest and the table hold valid UTF-8 only).
    """
    def run(f: str) -> Probe:
        return probe(f, model.bands, model.input_size, max_pixels)

    # Only rasters open a header; the rest is decided by suffix in ~1 us, far less than a
    # thread pool's hand-off (0.3 s for 10,000 JPEG chips).
    opens = [k for k, f in enumerate(files) if os.path.splitext(f)[1].lower() in RASTER_SUFFIXES]
    found: dict[int, Probe] = {}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        found.update(zip(opens, pool.map(run, [files[k] for k in opens]), strict=True))
    probes = [found[k] if k in found else run(f) for k, f in enumerate(files)]
    chips: list[ChipEntry] = []
    scene_infos: list[SceneInfo] = []
    for pr in probes:
        if on_probe is not None:
            on_probe(pr)
        if pr.kind == "scene" and pr.scene is not None:
            scene_infos.append(pr.scene)
        else:
            chips.append(ChipEntry(pr.path, pr.error, pr.source))
    stems = _stems([s.path for s in scene_infos])
    with ThreadPoolExecutor(max(1, workers)) as pool:
        hashes = list(pool.map(lambda s: file_sha256(s.path), scene_infos))
    scenes: list[ScenePlan] = []
    for k, (info, sha) in enumerate(zip(scene_infos, hashes, strict=True)):
        grid = TileGrid(info.height, info.width, model.input_size, stride)
        chunks = tuple(chunk_grid(grid, info.block_shape))
        scenes.append(ScenePlan(k, info, grid, chunks, sha, stems[info.path]))
    units: list[Unit] = []
    for b in range(0, len(chips), CHIP_BLOCK):
        block = tuple(chips[b: b + CHIP_BLOCK])
        units.append(Unit(f"c{b // CHIP_BLOCK:06d}", "chips", chips=block, n_rows=len(block)))
    for s in scenes:
        for ch in s.chunks:
            units.append(Unit(f"s{s.index:05d}-{ch.index:06d}", "scene", scene=s.index,
                              chunk=ch.index, n_rows=len(ch)))
    return Plan(tuple(files), tuple(chips), tuple(scenes), tuple(units))
