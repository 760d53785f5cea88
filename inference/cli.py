"""`vision` sub-commands contributed by the inference package: `vision infer`."""

from __future__ import annotations

from pathlib import Path

import typer

from inference.choices import DEFAULT_MAX_PIXELS, Device, EngineKind, Gsd, ResamplingKind
from vision.cli_options import (
    batch_size_option,
    model_option,
    out_option,
    overwrite_option,
    progress_option,
)
from vision.errors import ConfigError

INFER_HELP = """Batch-classify image files, folders (walked recursively), GeoTIFF scenes and
STAC Items, Collections and Catalogs.

A raster no larger than the model's input is one row; a larger GeoTIFF scene is tiled into
windows of the model's input size (every --stride pixels), read block by block; windows that
are mostly nodata get status `nodata`. Bands are matched to the model's by band description,
else by count. The model's metadata gives classes, bands, input size, temperature, and what
its pixels mean (radiometry) and their size on the ground (GSD).

A STAC JSON file named on the command line (a folder's .json files are not read as STAC) is
walked down to its items (local hrefs only: jobs run offline); each item is a scene whose
bands come from its assets, matched by eo:bands name or common name (B04 = red), per-band
files at mixed resolutions read onto one grid (the finest band the model needs, or
--resolution), resampled with --resampling (SCL: nearest). The manifest says which asset fed
which band and why.

Radiometry: an input's pixels must mean what the model's did (STAC raster:bands,
s2:processing_baseline, s2:product_type, GeoTIFF scale/offset tags, dtype). The baseline
04.00 offset (DN - 1000) is harmonised; L2A into an L1C model, 16-bit reflectance into an
8-bit RGB model or 16-bit data of unknown meaning into any model is refused (an error row
naming both); --allow-radiometry-mismatch runs it anyway and records it in the manifest.
GSD: windows are read resampled to the model's GSD when the input's pixels differ by more
than 10 %, and an input more than 2x coarser is refused; --gsd native keeps the pixels as
they are (the mismatch is recorded). A georeferenced GeoTIFF chip cannot be resampled
without changing what it shows: one whose pixels are more than 10 % off the model's GSD is
an error row naming both sizes, and --gsd native classifies it (the mismatch is recorded);
JPEG/PNG chips and chips without a CRS have no known GSD. Clouds: each window's
cloud_fraction of its valid pixels comes from the item's SCL asset, or s2cloudless for
13-band L1C data; windows over --max-cloud get status `cloudy` (not classified, like
nodata). Areas of interest: with --aoi only the windows whose interior meets an area are
read and classified (each row's aoi_id is the first area it meets); DIR/aoi_summary.json and
a table at the end give per area and class the windows and hectares, and the hectares not
assessed; an area over no input, or a feature that is not a valid polygon, is reported (exit
code 1) and the rest of the job runs.
Two dates: --grid RASTER reads every scene onto that raster's grid (CRS, transform, size;
the earlier date's scene, say), so that the windows of both jobs cover the same ground even
when the later date comes in another CRS; a scene whose pixels are the grid's size is read
with nearest neighbour (each pixel keeps its value; bilinear would smooth the texture the
model relies on), others bilinear, unless --resampling says. The grid's pixels must fit the
model's GSD (--gsd native runs a mismatch) and the job's outputs are on that grid.

Writes DIR/predictions.parquet (paths absolute), DIR/manifest.json, DIR/progress.json
while it runs, per scene DIR/<stem>.classes.tif and DIR/<stem>.confidence.tif
(Cloud-Optimized GeoTIFFs in the scene's CRS, ending at its edges), DIR/<stem>.geojson
(RFC 7946, WGS 84 longitude/latitude) and DIR/<stem>.quicklook.png, then DIR/_SUCCESS.
Rerunning the same command resumes an interrupted job (also one stopped by a full disk),
and does nothing for a finished one; a second run on the same DIR while one runs is
refused. --overwrite removes only the job's own files; a folder that holds other things
and no job is never used. Exit code 0: all classified; 1: some inputs failed
(reasons printed and in manifest.json) or the outputs could not be written; 2: usage or
configuration error, or the job is already running.

--engine ray runs the same job on Ray: with RAY_ADDRESS unset a local Ray is started; for an
existing cluster set RAY_ADDRESS (ray://HEAD:10001, or `auto` on a cluster node); every node
needs this project installed and the INPUT paths visible at the same place; the driver
writes DIR. --workers is then the number of actors (default one per GPU).

\b
Examples:
    vision infer chips/ scenes/S2_tile.tif --model runs/rgb/model.onnx \\
        --out jobs/rgb
    vision infer archive/ --model models:/eurosat-rgb@champion --out jobs/a \\
        --device cuda
    vision infer S2A_29RKH_20200219_0_L2A.json --model runs/rgb/model.onnx \\
        --out jobs/stac --gsd native --max-cloud 0.3
    vision infer catalog.json --model runs/ms/model.onnx --out jobs/ms \\
        --resolution 20 --resampling nearest
    vision infer aerial_0.5m.tif --model runs/rgb/model.onnx --out jobs/aerial
    vision infer l2a.tif --model runs/l1c/model.onnx --out jobs/x \\
        --allow-radiometry-mismatch
    vision infer S2_tile.tif --model runs/rgb/model.onnx --out jobs/farms \\
        --aoi farms.gpkg --aoi-field parcel
    vision infer after_3857.tif --model runs/rgb/model.onnx --out jobs/after \\
        --grid before.tif
"""


def _parse_stride(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.replace("x", ",").split(",")]
    except ValueError as exc:
        raise ConfigError(f"--stride expects N or ROWS,COLS in pixels, not {value!r}") from exc
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise ConfigError(f"--stride expects N or ROWS,COLS positive pixels, not {value!r}")
    return parts[0], parts[1]


def infer(
    inputs: list[str] = typer.Argument(..., metavar="INPUT...",
                                       help="image files, folders, GeoTIFF scenes and STAC "
                                            "Item/Collection/Catalog JSON files"),
    model: str = model_option(),
    out: Path = out_option("job folder (created; resumed if present)", required=True),
    batch_size: int | None = batch_size_option(
        None, help="chips per batch \\[default: 64 on CPU, 256 on GPU, divided by the "
                   "model's test-time views: 8 on CPU for d8]"),
    device: Device = typer.Option(Device.AUTO, "--device",
                                  help="auto (TensorRT, then CUDA, then CPU), cpu, cuda, tensorrt"),
    engine: EngineKind = typer.Option(EngineKind.LOCAL, "--engine", help="local or ray"),
    overwrite: bool = overwrite_option("a job folder made for another model/options (only "
                                       "the job's own files are removed)"),
    stride: str | None = typer.Option(None, "--stride",
                                      help="window step in pixels, N or ROWS,COLS "
                                           "\\[default: the model's input size, no overlap]"),
    max_nodata: float = typer.Option(0.5, "--max-nodata",
                                     help="windows with a larger nodata fraction are not "
                                          "classified (status nodata)"),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=1,
                                   help="largest scene classified, in pixels per band; a "
                                        "larger one is an error row \\[default: 2^32, "
                                        "65536 x 65536]", show_default=False),
    workers: int | None = typer.Option(None, "--workers",
                                       help="reader threads (local, default min(4, cores)) or "
                                            "actors (ray)"),
    threads: int | None = typer.Option(None, "--threads",
                                       help="ONNX Runtime CPU threads per stream \\[default: "
                                            "cores / streams; 1 per Ray actor]"),
    streams: int | None = typer.Option(None, "--streams",
                                       help="CPU: batches run at once, each on its share of "
                                            "the cores \\[default: min(4, cores)]"),
    fp16: bool = typer.Option(False, "--fp16", help="TensorRT: build fp16 engines"),
    resolution: float | None = typer.Option(
        None, "--resolution", metavar="METRES", min=0.0,
        help="pixel size on the ground of the grid scenes are read on \\[default: the model's "
             "GSD when the GSD rule resamples, else the finest band the model needs]"),
    resampling: ResamplingKind | None = typer.Option(
        None, "--resampling",
        help="how reflectance bands are read onto another grid (SCL: always nearest) \\[default: "
             "bilinear; with --grid, nearest for a scene whose pixels are the grid's size]", show_default=False),
    gsd: Gsd = typer.Option(
        Gsd.MODEL, "--gsd",
        help="model: read windows resampled to the model's GSD when the input's differs by "
             "> 10 % (an input > 2x coarser is refused; a georeferenced chip off by > 10 % "
             "is refused); native: keep the input's pixels (recorded in the manifest)"),
    allow_radiometry_mismatch: bool = typer.Option(
        False, "--allow-radiometry-mismatch",
        help="classify inputs whose radiometry does not fit the model's (e.g. L2A into an "
             "L1C model) instead of refusing them; recorded in the manifest"),
    max_cloud: float = typer.Option(
        0.5, "--max-cloud", min=0.0, max=1.0,
        help="windows whose cloud fraction (SCL or s2cloudless) is larger are not "
             "classified (status cloudy)"),
    grid: Path | None = typer.Option(
        None, "--grid", metavar="RASTER",
        help="read every scene onto the grid (CRS, transform, size) of this georeferenced raster, "
             "e.g. the earlier date's scene: two dates' windows then "
             "cover the same ground and `vision change` compares them window by window"),
    aoi: Path | None = typer.Option(
        None, "--aoi",
        help="areas of interest (GeoJSON or GeoPackage, any CRS; polygons and multipolygons): "
             "only windows that meet one are read and classified; rows get aoi_id and "
             "DIR/aoi_summary.json gives hectares per area and class"),
    aoi_field: str | None = typer.Option(
        None, "--aoi-field",
        help="the AOI file's id field (values set and unique) \\[default: the field `id`, else "
             "`name`, else the feature's 0-based index]"),
    input_root: list[Path] = typer.Option(
        [], "--input-root",
        help="a folder that every file named inside a STAC input (asset and link hrefs) must "
             "resolve into (symlinks resolved); repeatable \\[default: anywhere]"),
    progress: bool = progress_option(),
) -> None:
    import logging
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    from inference.runner import JobOptions, run_job

    # Bad inputs are reported as rows with a reason; GDAL's own chatter about them is noise.
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    logging.getLogger("rasterio").setLevel(logging.ERROR)
    result = run_job(JobOptions(
        inputs=tuple(inputs), model=model, out=out, batch_size=batch_size, device=device,
        engine=engine, overwrite=overwrite, stride=_parse_stride(stride), max_nodata=max_nodata,
        workers=workers, threads=threads, streams=streams, fp16=fp16, progress=progress,
        max_pixels=max_pixels, resolution=resolution, resampling=resampling, gsd=gsd,
        allow_radiometry_mismatch=allow_radiometry_mismatch, max_cloud=max_cloud,
        aoi=aoi, aoi_field=aoi_field, input_roots=tuple(input_root), grid=grid,
    ))
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `vision` CLI."""
    app.command("infer", help=INFER_HELP, no_args_is_help=True)(infer)
