"""What `vision data check` found, and how it is shown: `Issue`, `CheckReport`, the tables.

Every string that comes from the data (paths, split and class names, messages that quote
them) is escaped before Rich sees it, so a folder called ``[/x]`` prints as itself instead
of being read as markup.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vision.atomic import write_json_atomic

#: Issue kinds, in the order a report lists them.
ISSUE_KINDS: tuple[str, ...] = (
    "unreadable", "label", "bands", "dtype", "nodata", "leakage", "duplicate",
    "size", "ignored", "missing-class", "imbalance",
    # labelled scenes and chip folders (vision.data.check.labels)
    "geometry", "class", "crs", "conflict", "duplicate-place", "place", "outside", "too-small", "no-window",
    "windows-skipped", "chip-size", "scene", "refused-scene", "edge", "cloudy", "buffer", "possible-duplicate",
    "data", "split",
)


@dataclass(frozen=True)
class Issue:
    """One problem found in the dataset.

    Attributes:
        kind: what is wrong (one of `ISSUE_KINDS`), e.g. ``"unreadable"`` or ``"leakage"``.
        path: the file (``shard.tar.gz#key`` for a shard member), or the split it concerns.
        message: why, in words, with what to compare it to.
        split: the split the file belongs to.
    """

    kind: str
    path: str
    message: str
    split: str | None = None


@dataclass
class CheckReport:
    """What `vision.data.check.check_dataset` found.

    Attributes:
        inputs: the paths checked, as given.
        splits: split names in the order scanned.
        classes: class names (the union over splits, in label order where known).
        class_counts: ``{split: {class: number of files}}``, every class present per split.
        chips: number of samples scanned (files, or shard members).
        expected_bands: band count chips must have (the majority or ``bands=``).
        expected_dtype: dtype chips must have (the majority or ``dtype=``).
        expected_size: the most common ``[height, width]`` (others are a warning).
        imbalance: ``{split: largest / smallest non-empty class}``; ``None`` for no classes.
        imbalance_threshold: ratio above which imbalance is a warning.
        errors: problems that make the dataset unfit as it is.
        warnings: problems worth a look that do not fail the check.
        seconds: wall time of the scan.
        spatial: for labelled scenes and chip folders: the split's method and the smallest
            distance (m) from a train window to a val/test one (``distances``).
        labelled: for labelled scenes: how many labels gave no window, by reason.
    """

    inputs: list[str]
    splits: list[str]
    classes: list[str]
    class_counts: dict[str, dict[str, int]]
    chips: int
    expected_bands: int | None
    expected_dtype: str | None
    expected_size: list[int] | None
    imbalance: dict[str, float | None]
    imbalance_threshold: float
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    seconds: float = 0.0
    spatial: dict[str, Any] | None = None
    labelled: dict[str, int] | None = None

    @property
    def ok(self) -> bool:
        """True when no error was found (warnings allowed)."""
        return not self.errors

    def errors_of(self, kind: str) -> list[Issue]:
        """The errors of one kind, e.g. ``report.errors_of("leakage")``."""
        return [e for e in self.errors if e.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole report, with ``ok``."""
        return {**asdict(self), "ok": self.ok}


def by_kind(issues: list[Issue]) -> list[Issue]:
    """Issues in the order of `ISSUE_KINDS` (stable within a kind)."""
    rank = {k: i for i, k in enumerate(ISSUE_KINDS)}
    return sorted(issues, key=lambda e: rank.get(e.kind, len(rank)))


def render_report(report: CheckReport, console: Console, max_rows: int = 50) -> None:
    """Print the report: a summary, class counts per split, then errors and warnings.

    Args:
        report: what `vision.data.check.check_dataset` returned.
        console: where to print.
        max_rows: most errors (and warnings) listed; all are in ``write_json``'s file.
    """
    chip = "no readable chip"
    if report.expected_bands is not None and report.expected_size is not None:
        height, width = report.expected_size
        chip = f"{report.expected_bands} bands {report.expected_dtype} {height}x{width} px"
    console.print(
        f"[bold]Checked[/bold] {escape(', '.join(report.inputs))}: {report.chips:,} chips in "
        f"{len(report.splits)} split(s) · {len(report.classes)} classes · {escape(chip)} · "
        f"{report.seconds:.1f} s",
        highlight=False,
    )
    console.print(_counts_table(report))
    _print_issues(console, "Errors", report.errors, "red", max_rows)
    _print_issues(console, "Warnings", report.warnings, "yellow", max_rows)
    if report.labelled is not None:
        kinds = ", ".join(f"{k} {n}" for k, n in report.labelled.items()) or "none"
        console.print(f"Labels that gave no window: {sum(report.labelled.values())} ({escape(kinds)})",
                      highlight=False)
    if report.spatial is not None:
        console.print(_spatial_line(report.spatial), highlight=False)
    leak = len(report.errors_of("leakage"))
    if len(report.splits) < 2:
        leakage = "one split: no leakage check"
    else:
        leakage = "no leakage" if not leak else f"[red]{leak} leaked chip(s)[/red]"
    failed = f"[red]FAILED: {len(report.errors)} error(s)[/red]"
    verdict = "[green]OK[/green]" if report.ok else failed
    console.print(
        f"{verdict} · {len(report.warnings)} warning(s) · {leakage}", highlight=False
    )


def _spatial_line(spatial: dict[str, Any]) -> str:
    """``Split: blocks of 2000 m (buffer 2000 m) · train-test: at least 2,134 m apart ...``."""
    method = spatial.get("method")
    head = "Split: " + (f"{method}" if method and method != "preset" else "as given with the data")
    if method == "blocks":
        head += f" of {spatial.get('block_m'):g} m (buffer {spatial.get('buffer_m'):g} m"
        head += f", {spatial['buffer_dropped']} train windows dropped)" if spatial.get("buffer_dropped") else ")"
    if spatial.get("preset"):
        head += f" ({spatial['preset']} windows: per-split scenes, ml-aoi:split or a split column)"
    parts = []
    for pair, d in (spatial.get("distances") or {}).items():
        if d is None:
            parts.append(f"{escape(pair)}: one side empty")
        else:
            parts.append(f"{escape(pair)}: smallest distance {d['min_m']:,.0f} m (median to train "
                         f"{d['median_to_train_m']:,.0f} m)")
    return " · ".join([head, *parts])


def _counts_table(report: CheckReport) -> Table:
    table = Table(title="Class counts", title_justify="left")
    table.add_column("class")
    for s in report.splits:
        table.add_column(escape(s), justify="right")
    table.add_column("total", justify="right", style="bold")
    for c in report.classes:
        row = [report.class_counts[s][c] for s in report.splits]
        table.add_row(escape(c), *(f"{n:,}" for n in row), f"{sum(row):,}")
    totals = [sum(report.class_counts[s].values()) for s in report.splits]
    table.add_section()
    table.add_row("total", *(f"{n:,}" for n in totals), f"{sum(totals):,}", style="bold")

    def ratio(split: str) -> str:
        r = report.imbalance[split]
        if r is None:
            return "-"
        text = f"{r:.2f}"
        return f"[yellow]{text}[/yellow]" if r > report.imbalance_threshold else text

    table.add_row("max/min", *(ratio(s) for s in report.splits), "")
    return table


def _print_issues(console: Console, title: str, issues: list[Issue], colour: str,
                  max_rows: int) -> None:
    if not issues:
        return
    counts = Counter(i.kind for i in issues)
    summary = ", ".join(f"{k} {n}" for k, n in counts.items())
    table = Table(
        title=f"[{colour}]{title} ({len(issues)}: {summary})[/{colour}]", title_justify="left"
    )
    table.add_column("kind", style=colour, no_wrap=True)
    table.add_column("split", no_wrap=True)
    table.add_column("file", overflow="fold")
    table.add_column("reason", overflow="fold")
    for i in issues[:max_rows]:
        table.add_row(i.kind, escape(i.split or ""), escape(i.path), escape(i.message))
    console.print(table)
    if len(issues) > max_rows:
        console.print(f"... and {len(issues) - max_rows} more (all are in --json FILE)")


def write_json(report: CheckReport, path: str | Path) -> None:
    """Write the report as JSON, atomically (`vision.atomic`)."""
    write_json_atomic(path, report.to_dict())
