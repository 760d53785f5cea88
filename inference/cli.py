"""`vision` sub-commands contributed by the inference package: `vision infer`."""

from __future__ import annotations

from pathlib import Path

import typer

from vision.errors import ConfigError

INFER_HELP = """Batch-classify image files, folders (walked recursively) and GeoTIFF scenes.

A raster no larger than the model's input is one row; a larger GeoTIFF scene is tiled into
windows of the model's input size (every --stride pixels), read block by block; windows that
are mostly nodata get status `nodata`. Bands are matched to the model's by band description,
else by count. The model's metadata gives classes, bands, input size and temperature.

Writes DIR/predictions.parquet, DIR/manifest.json, per scene DIR/<stem>.classes.tif,
DIR/<stem>.confidence.tif (Cloud-Optimized GeoTIFFs on the window grid, scene CRS) and
DIR/<stem>.geojson, then DIR/_SUCCESS. Rerunning the same command resumes an interrupted
job, and does nothing for a finished one. Exit code 0: all classified; 1: some inputs failed
(see manifest.json); 2: usage or configuration error.

--engine ray runs the same job on Ray: with RAY_ADDRESS unset a local Ray is started; for an
existing cluster set RAY_ADDRESS (ray://HEAD:10001, or `auto` on a cluster node); every node
needs this project installed and the INPUT paths visible at the same place; the driver
writes DIR. --workers is then the number of actors (default one per GPU).

\b
Example:
    vision infer chips/ scenes/S2_tile.tif --model runs/rgb/model.onnx --out jobs/rgb
    vision infer archive/ --model models:/eurosat-rgb@champion --out jobs/a --device cuda
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
                                       help="image files, folders and GeoTIFF scenes"),
    model: str = typer.Option(..., "--model", "-m",
                              help="model.onnx, models:/NAME@ALIAS or models:/NAME/VERSION"),
    out: Path = typer.Option(..., "--out", "-o", help="job folder (created; resumed if present)"),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b",
                                          help="chips per batch \\[default: 64 on CPU, 256 on GPU, divided by the "
                                               "model's test-time views: 8 on CPU for d8]"),
    device: str = typer.Option("auto", "--device",
                               help="auto (TensorRT, then CUDA, then CPU), cpu, cuda, tensorrt"),
    engine: str = typer.Option("local", "--engine", help="local or ray"),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="replace a job folder made for another model/options"),
    stride: str | None = typer.Option(None, "--stride",
                                      help="window step in pixels, N or ROWS,COLS "
                                           "\\[default: the model's input size, no overlap]"),
    max_nodata: float = typer.Option(0.5, "--max-nodata",
                                     help="windows with a larger nodata fraction are not "
                                          "classified (status nodata)"),
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
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bars"),
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
    ))
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `vision` CLI."""
    app.command("infer", help=INFER_HELP, no_args_is_help=True)(infer)
