"""`vision data ...`: dataset commands for ML engineers.

Thin glue: the work is done by `vision.data.check`, `vision.data.fetch` and (``chips``)
`vision.data.labelled` + `vision.data.chips`. Exit codes:
0 success, 1 problems found or the download failed, 2 usage or configuration error
(a `ConfigError`, mapped by `vision.cli`).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from vision.cli_options import out_option, overwrite_option, progress_option, refuse_overwrite
from vision.console import make_console

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
    labels: list[Path] = typer.Option(
        [], "--labels", metavar="FILE", help="Vector labels (GeoJSON, GeoPackage, Shapefile) over the "
        "PATHs, which are then scenes (GeoTIFFs, STAC items): sampled as training samples them; every "
        "label that gives no window is listed with why."),
    class_field: str | None = typer.Option(None, "--class-field", help="Label attribute with the class "
                                           "(default: class; a STAC catalog: its label:properties)."),
    classes: str | None = typer.Option(None, "--classes", metavar="A,B,...", help="The classes a label may "
                                       "have; other values are reported."),
    size: int = typer.Option(64, "--size", min=1, help="Window size in pixels (labelled scenes, catalogs)."),
    id_field: str | None = typer.Option(None, "--id-field", help="Label attribute naming each label."),
    manifest: list[Path] = typer.Option([], "--manifest", metavar="FILE", help="Extra GeoTIFF chip manifest "
                                        "(path,label[,group][,split]) merged with the labelled scenes."),
    progress: bool = progress_option(),
) -> None:
    """Validate a labelled dataset: unreadable files, band/dtype mismatches, nodata chips,
    duplicates and leakage between splits, class counts and imbalance.

    Labelled scenes (PATHs with --labels), a STAC label catalog (catalog.json) or a recipe
    whose data.source is scenes or stac are sampled as training samples them; the report
    lists every label that gave no window (invalid geometry, unknown class, a CRS that puts
    a file over no scene, outside every scene, smaller than one window, ...) with its reason
    and counts per reason, the windows skipped, the data's warnings (radiometry, band order),
    duplicates (same place, same date) and the smallest distance between a train and a test
    window. A folder written by `vision data chips` is also checked against its manifest.

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

        vision data check scene.tif --labels survey.gpkg --class-field crop --classes maize,wheat

        vision data check ../shared/data/stac-eurosat100/stac/subset/catalog.json

        vision data check experiments/eurosat_rgb_lite0_scenes.yaml
    """
    from vision.data.check import check_dataset, check_labelled, is_labelled_input, render_report, write_json

    if json_out is not None:  # before the scan, not after minutes of it
        refuse_overwrite(json_out, overwrite)
    if labels or manifest or (len(paths) == 1 and is_labelled_input(paths[0])):
        report = check_labelled(
            paths, labels=labels, class_field=class_field, classes=_split_list(classes), size=(size, size),
            id_field=id_field, manifests=manifest, progress=progress)
    else:
        report = check_dataset(
            paths,
            bands=bands,
            dtype=dtype,
            imbalance_threshold=imbalance_threshold,
            progress=progress,
            workers=workers,
        )
    render_report(report, make_console(), max_rows=max_rows)
    if json_out is not None:
        write_json(report, json_out)
        make_console(stderr=True).print(f"report written to {escape(str(json_out))}", highlight=False)
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
    out = make_console()
    out.print(f"{escape(str(result.path))}  sha256 {result.sha256}", highlight=False)
    if result.extracted is not None:
        chips = escape(str(result.extracted / RELEASES[name].data_dir))
        out.print(f"chips: {chips}\ncheck them with: vision data check {chips}", highlight=False)


def _split_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    out = [t.strip() for t in text.split(",") if t.strip()]
    return out or None


@data_app.command("chips")
def chips_command(
    scenes: list[str] = typer.Argument(..., metavar="SCENE", help="GeoTIFF scenes and STAC item/catalog "
                                       "JSON files (globs allowed)."),
    labels: list[Path] = typer.Option(..., "--labels", metavar="FILE", help="Vector labels: GeoJSON, "
                                      "GeoPackage or Shapefile; points, polygons, multipolygons; any CRS."),
    class_field: str = typer.Option("class", "--class-field", help="Label attribute with the class."),
    out: Path = out_option("Folder for the chips, manifest.csv, skipped.csv and chips.json.", required=True,
                           metavar="DIR"),
    classes: str | None = typer.Option(None, "--classes", metavar="A,B,...", help="The classes, in label order "
                                       "(default: every value found, sorted); other values are skipped."),
    id_field: str | None = typer.Option(None, "--id-field", help="Label attribute naming each label."),
    size: int = typer.Option(64, "--size", min=1, help="Chip size in pixels (the model's input size)."),
    min_inside: float = typer.Option(0.75, "--min-inside", min=0.01, max=1.0,
                                     help="Share of a chip that must lie inside its class's polygons."),
    max_per_polygon: int | None = typer.Option(None, "--max-per-polygon", min=1, help="Most chips per polygon."),
    sampling: str = typer.Option("grid", "--sampling", help="grid or jitter: chip positions in a polygon."),
    stride: int | None = typer.Option(None, "--stride", min=1, help="Grid step in pixels (default --size)."),
    background: str | None = typer.Option(None, "--background", metavar="CLASS", help="Also cut background "
                                          "chips, far from every label, as this class."),
    background_buffer_m: float = typer.Option(100.0, "--background-buffer-m", min=0.0,
                                              help="Least distance of a background chip from any label."),
    max_cloud: float = typer.Option(0.5, "--max-cloud", min=0.0, max=1.0, help="Skip chips with a larger "
                                    "cloud fraction (scene classification layer or s2cloudless)."),
    max_nodata: float = typer.Option(0.0, "--max-nodata", min=0.0, max=1.0,
                                     help="Skip chips with a larger share of nodata pixels."),
    gsd_m: float | None = typer.Option(None, "--gsd-m", min=0.0, help="Read every scene at this GSD (m)."),
    radiometry: str | None = typer.Option(None, "--radiometry", metavar="JSON", help="What the pixel values "
                                          "mean, for data that declares nothing, e.g. "
                                          "'{\"kind\": \"reflectance\", \"bits\": 16, \"scale\": 0.0001}'."),
    split: str = typer.Option("blocks", "--split", help="blocks (spatial blocks, default) or random."),
    block_m: float = typer.Option(2000.0, "--block-m", min=1.0, help="Side of a spatial block (m); also the "
                                  "least train-to-val/test distance."),
    val: float = typer.Option(0.1, "--val", min=0.0, max=0.9, help="Share of chips for validation."),
    test: float = typer.Option(0.1, "--test", min=0.0, max=0.9, help="Share of chips for testing."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and of jitter."),
    regions: int = typer.Option(4, "--regions", min=1, help="Val and test are each about this many compact "
                                "groups of blocks."),
    manifest: list[Path] = typer.Option([], "--manifest", metavar="FILE", help="Extra GeoTIFF chip manifest "
                                        "(e.g. the review service's dataset export) merged in."),
    overwrite: bool = overwrite_option("an existing --out folder"),
    progress: bool = progress_option(),
) -> None:
    """Cut the chips of labelled scenes to disk: GeoTIFFs keeping the scene's CRS and the
    chip's transform, and a manifest (path,label,group,split,scene,row_off,col_off,minx,miny,
    maxx,maxy,crs,acquired) that `vision data check DIR` validates and `data.source:
    manifest` trains on.

    Chips are sampled as `data.source: scenes` samples them for training: points give the
    chip centred on them, polygons the chips lying --min-inside inside their class. Chips
    with nodata or clouds, or past a scene's edge, and every label that gives no chip are
    listed in DIR/skipped.csv with why. The split is spatial (--split blocks): whole blocks
    of --block-m metres go to one split, and training chips closer than that to a val/test
    chip are dropped.

    Examples:

        vision data chips scene.tif --labels fields.geojson --class-field crop --out chips/

        vision data chips s2/*.tif --labels survey.gpkg --class-field cls --block-m 5000 --out chips/

        vision data check chips/
    """
    import json

    from vision.data.chips import write_chips
    from vision.data.labelled import LabelledSpec, build
    from vision.data.sampling import SamplingOptions
    from vision.data.splits import SplitRule
    from vision.errors import ConfigError
    from vision.radiometry import Radiometry

    refuse_overwrite(out, overwrite)
    if sampling not in ("grid", "jitter"):
        raise ConfigError(f"--sampling {sampling!r}: choose grid or jitter")
    if split not in ("blocks", "random"):
        raise ConfigError(f"--split {split!r}: choose blocks or random")
    try:
        rad = Radiometry.from_obj(json.loads(radiometry)) if radiometry else None
        rule = SplitRule(split, block_m, val, test, seed, regions=regions)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from exc
    spec = LabelledSpec(
        kind="scenes", scenes=((None, tuple(scenes)),), labels=tuple(map(str, labels)), class_field=class_field,
        id_field=id_field, classes=tuple(c) if (c := _split_list(classes)) else None, radiometry=rad, gsd_m=gsd_m,
        manifests=tuple(map(str, manifest)),
        sampling=SamplingOptions(size=(size, size), min_inside=min_inside, max_per_polygon=max_per_polygon,
                                 mode="grid" if sampling == "grid" else "jitter", stride=stride, background=background,
                                 background_buffer_m=background_buffer_m, max_nodata=max_nodata, max_cloud=max_cloud,
                                 seed=seed),
        split=rule)
    console = make_console(stderr=True)
    data = build(spec, console=console, progress=progress, reuse=False)
    written = write_chips(data, out)
    make_console().print(f"{written.chips:,} chips written to {escape(str(out))} ({written.skipped:,} labels, "
                         f"scenes or windows skipped: {escape(str(out / 'skipped.csv'))}); check them "
                         f"with: vision data check {escape(str(out))}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``vision data ...`` to the `vision` CLI."""
    app.add_typer(data_app, name="data", help="Check and fetch labelled datasets.")
