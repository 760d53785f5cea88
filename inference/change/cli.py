"""`vision change`: the sub-command, registered through the ``vision.commands`` entry point
``change`` (so `inference/cli.py` need not know about it)."""

from __future__ import annotations

from pathlib import Path

import typer

from inference.change.rules import DEFAULT_MIN_CONFIDENCE
from vision.cli_options import out_option, overwrite_option, progress_option

CHANGE_HELP = """Compare `vision infer` jobs of the same area at different dates: where did a class of
interest appear, disappear, persist, stay absent, or change?

Every window of the latest job's grid is compared with the earlier jobs: directly where they
share the grid; otherwise the earlier class and probability rasters are reprojected onto it
(nearest for classes, bilinear for probabilities), chunk by chunk. Jobs are sorted by
acquisition time (said so when the order given differs); their times come from the jobs
(STAC `datetime`) or, for jobs that do not record them, from --dates.

\b
Rules, per window (S = --classes, default every class; P = --min-confidence):
  not_assessed  either date nodata, cloudy, error, or without a window there (never "no change")
  uncertain     both assessed, but either date's class probability is below P
  appeared      before not in S, after in S
  disappeared   before in S, after not in S
  persisted     before in S, after the same class
  changed       before and after in S, different classes
  absent        neither date in S
With three or more jobs, each window's trajectory and the first date a class of interest was
seen (confidently) after a date it was (confidently) absent.

Writes DIR/changes.parquet (one row per window: both dates' items, times, windows, classes,
probabilities, input sha256 and models), DIR/<item>.change.tif (a COG with a colour table),
DIR/changes.geojson (the changed windows, WGS 84), DIR/change_summary.json (hectares per AOI
and outcome), DIR/report.html (summary, maps, before/after thumbnails),
DIR/change_manifest.json and DIR/_SUCCESS last. Exit code 0: done; 1: a job's files are
unreadable; 2: usage error (jobs not finished, of different classes, not overlapping ...).

\b
Example:
    vision change jobs/2023-06 jobs/2024-06 --out changes/crops --classes AnnualCrop,PermanentCrop
    vision change jobs/a jobs/b jobs/c --out changes/abc --aoi districts.gpkg --min-confidence 0.8
    vision change old_job new_job --out ch --dates 2019-07-01,2024-07-01   # jobs without dates
"""


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def change(
    jobs: list[str] = typer.Argument(..., metavar="JOB_BEFORE JOB_AFTER [JOB...]",
                                     help="finished `vision infer` job folders of the same area"),
    out: Path = out_option("the change folder to write (refused if it exists, unless --overwrite)",
                           required=True),
    classes: str | None = typer.Option(None, "--classes", help="classes of interest, comma-separated "
                                                               "\\[default: every class]"),
    aoi: Path | None = typer.Option(None, "--aoi", help="areas of interest (GeoJSON or GeoPackage, any CRS): "
                                                        "only their windows, and a summary per area "
                                                        "\\[default: the latest job's own aoi_id, if any]"),
    aoi_field: str | None = typer.Option(None, "--aoi-field", help="the AOI file's id field \\[default: the "
                                                                  "feature's index]"),
    min_confidence: float = typer.Option(DEFAULT_MIN_CONFIDENCE, "--min-confidence", min=0.0, max=1.0,
                                         help="both dates' class probabilities must reach it for a claim, "
                                              "else the window is `uncertain`"),
    dates: str | None = typer.Option(None, "--dates", help="acquisition dates, one per JOB in the order given "
                                                           "(ISO, comma-separated), for jobs that do not record them"),
    report: bool = typer.Option(True, "--report/--no-report", help="write report.html"),
    thumbnails: int = typer.Option(12, "--thumbnails", min=0, help="before/after pairs in report.html"),
    overwrite: bool = overwrite_option("an existing change folder"),
    progress: bool = progress_option(),
) -> None:
    import logging

    from inference.change.run import ChangeOptions, run_change

    logging.getLogger("rasterio").setLevel(logging.ERROR)
    run_change(ChangeOptions(
        jobs=tuple(jobs), out=out, classes=_split(classes), aoi=aoi, aoi_field=aoi_field,
        min_confidence=min_confidence, dates=_split(dates), overwrite=overwrite, progress=progress,
        report=report, thumbnails=thumbnails))


def register(app: typer.Typer) -> None:
    """Add `vision change` to the `vision` CLI."""
    app.command("change", help=CHANGE_HELP, no_args_is_help=True)(change)
