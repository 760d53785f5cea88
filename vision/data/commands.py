"""`vision data ...`: dataset commands for ML engineers.

Thin glue: the work is done by `vision.data.check` and `vision.data.fetch`. Exit codes:
0 success, 1 problems found or the download failed, 2 usage or configuration error
(a `ConfigError`, mapped by `vision.cli`).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from vision.cli_options import overwrite_option, progress_option, refuse_overwrite

data_app = typer.Typer(no_args_is_help=True)


@data_app.command("check")
def check_command(
    paths: list[str] = typer.Argument(
        ...,
        metavar="PATH",
        help="Dataset to check, as a data spec TARGET[:SPLIT]. TARGET: a folder of "
        ".tar/.tar.gz shards (split from the name NAME-SPLIT-NNNNNN.tar.gz) or a glob of "
        "shards, a root with split folders (root/train/<class>/...), a folder of class "
        "folders, a manifest .csv/.parquet (path,label[,group][,split]), or eurosat-rgb / "
        "eurosat-ms under VISION_DATA_DIR. :SPLIT keeps one split (a split folder, a shard "
        "name's split, a manifest's split value). Several PATHs are each a split named after "
        "it, and are compared for leakage.",
    ),
    bands: int | None = typer.Option(
        None, "--bands", min=1, help="Band count every chip must have. Default: the majority."
    ),
    dtype: str | None = typer.Option(
        None,
        "--dtype",
        help="dtype every chip must have (uint8, uint16, int16, float32, ...). "
        "Default: the majority.",
    ),
    imbalance_threshold: float = typer.Option(
        10.0,
        "--imbalance-threshold",
        min=1.0,
        help="Warn when a split's largest class has more than this many times the samples "
        "of its smallest.",
    ),
    json_out: Path | None = typer.Option(
        None, "--json", metavar="FILE", help="Also write the full report (every issue) as JSON."
    ),
    overwrite: bool = overwrite_option("an existing --json FILE"),
    workers: int = typer.Option(
        0,
        "--workers",
        min=0,
        help="Processes that read and decode in parallel; 0 = one per CPU core (at most 8).",
    ),
    max_rows: int = typer.Option(
        50, "--max-rows", min=1, help="Most errors and warnings listed on screen."
    ),
    progress: bool = progress_option(),
) -> None:
    """Validate a labelled dataset: unreadable files, band/dtype mismatches, nodata chips,
    duplicates and leakage between splits, class counts and imbalance.

    Exits 1 when it finds errors (warnings alone exit 0).

    Every PATH is a data spec, the same grammar as `vision evaluate MODEL DATA` takes:
    TARGET[:SPLIT], where TARGET is an existing file or folder, a glob of shards, or
    eurosat-rgb / eurosat-ms (VISION_DATA_DIR/NAME); a spec that exists as a path is that
    path, else the text after the last colon is the split.

    Examples:

        vision data check ../shared/data/eurosat-rgb

        vision data check eurosat-rgb:test datasets/ms:test

        vision data check data/train data/val data/test --json check.json

        vision data check scenes/chips --bands 13 --dtype uint16
    """
    from vision.data.check import check_dataset, render_report, write_json

    if json_out is not None:  # before the scan, not after minutes of it
        refuse_overwrite(json_out, overwrite)
    report = check_dataset(
        paths,
        bands=bands,
        dtype=dtype,
        imbalance_threshold=imbalance_threshold,
        progress=progress,
        workers=workers,
    )
    render_report(report, Console(), max_rows=max_rows)
    if json_out is not None:
        write_json(report, json_out)
        Console(stderr=True).print(f"report written to {escape(str(json_out))}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("fetch")
def fetch_command(
    name: str = typer.Argument(
        ..., metavar="NAME", help="Dataset to download: eurosat-rgb (EuroSAT.zip, 90 MB) or "
        "eurosat-ms (EuroSATallBands.zip, 2.1 GB)."
    ),
    source: str | None = typer.Option(
        None,
        "--from",
        metavar="URL_OR_PATH",
        help="Mirror URL (http/https; a URL ending in / is a folder holding the archive) or "
        "a local copy (file or folder). Default: the official DFKI server, then TorchGeo's "
        "Hugging Face mirror.",
    ),
    to: Path | None = typer.Option(
        None, "--to", metavar="DIR", help="Folder for the archive. Default: "
        "VISION_DATA_DIR/downloads."
    ),
    sha256: str | None = typer.Option(
        None,
        "--sha256",
        metavar="HEX",
        help="Require this sha256 instead of the published one (for a mirror that packages "
        "the data differently).",
    ),
    extract: bool = typer.Option(
        False, "--extract", help="Also unpack the archive into DIR/<archive name>/."
    ),
    retries: int = typer.Option(
        3, "--retries", min=0, help="Times a broken transfer is resumed before giving up."
    ),
    timeout: float = typer.Option(
        60.0, "--timeout", min=1.0, help="Seconds without data before a connection is broken."
    ),
    progress: bool = progress_option(),
) -> None:
    """Download a public dataset release, verify its sha256, and optionally extract it.

    The download is written to DIR/NAME.part and continued from there (HTTP Range) when a
    transfer breaks or a later run finds it; the file is moved into place only after its
    sha256 matches. A mismatch is refused and the download deleted. Checksums are the
    published ones (TensorFlow Datasets' url_checksums/eurosat.txt; TorchGeo pins the same
    value for EuroSATallBands.zip):

    eurosat-rgb, EuroSAT.zip:
    8ebea626349354c5328b142b96d0430e647051f26efc2dc974c843f25ecf70bd

    eurosat-ms, EuroSATallBands.zip:
    751f070f9bffa2eed48b24ca2dd0b02959280c08837e8c9a5532a67ba611df59

    Examples:

        vision data fetch eurosat-rgb --to data/ --extract

        vision data fetch eurosat-ms --from https://mirror.example.org/eurosat/ --to data/

        vision data fetch eurosat-rgb --from ~/Downloads/EuroSAT.zip --to data/
    """
    from vision.data.fetch import RELEASES, fetch_dataset

    result = fetch_dataset(
        name,
        source=source,
        to=to,
        sha256=sha256,
        extract=extract,
        retries=retries,
        timeout=timeout,
        progress=progress,
    )
    out = Console()
    out.print(f"{escape(str(result.path))}  sha256 {result.sha256}", highlight=False)
    if result.extracted is not None:
        chips = escape(str(result.extracted / RELEASES[name].data_dir))
        out.print(f"chips: {chips}\ncheck them with: vision data check {chips}", highlight=False)
