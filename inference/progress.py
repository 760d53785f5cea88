"""How a running job reports itself: console progress bars, ``DIR/progress.json``, the
per-unit tracker that feeds both, and the summary printed at the end.

Every string that comes from the user or from an input (paths, reasons) is escaped before
it reaches Rich, whose markup would otherwise read ``[/x]`` in a folder name as a tag.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from inference.plan import Plan, Unit
from vision.contracts.progress import JobProgress

log = logging.getLogger(__name__)

#: Least time between two writes of ``progress.json`` while the job runs (at most four a
#: second: each write is an fsync'd atomic replace, and a watcher polls it).
PROGRESS_INTERVAL_S = 0.25
#: Failed items whose reasons the summary prints (the rest are in the manifest).
SHOWN_ERRORS = 5


class ProgressFile:
    """``DIR/progress.json`` (`vision.contracts.progress.JobProgress`), written throttled.

    States go planning -> running -> finalizing -> finished (or failed). ``done``/``total``
    count items: chip files plus scene windows. A write that fails (a full disk) is logged
    and skipped: progress is for watchers, the job's own records are the part files.
    """

    def __init__(self, job_dir: Path, interval_s: float = PROGRESS_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.job_dir = job_dir
        self.interval_s = interval_s
        self.clock = clock
        self.state = "planning"
        self.done = 0
        self.total = 0
        self._last = float("-inf")
        self.writes = 0

    def set(self, state: str, done: int | None = None, total: int | None = None) -> None:
        """Enter ``state`` (written at once)."""
        self.state = state
        if total is not None:
            self.total = total
        if done is not None:
            self.done = done
        self._write()

    def advance(self, n: int) -> None:
        """``n`` more items done (written when the last write is old enough)."""
        self.done += n
        if self.clock() - self._last >= self.interval_s:
            self._write()

    def _write(self) -> None:
        self._last = self.clock()
        try:
            JobProgress(self.state, min(self.done, self.total) if self.total else self.done,
                        self.total).write(self.job_dir)
            self.writes += 1
        except OSError as exc:
            log.warning("cannot write %s/progress.json: %s", self.job_dir, exc)


class RateColumn(ProgressColumn):
    """Items per second of a task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "-/s", style="progress.data.speed")


def progress_bars(console: Console, enabled: bool) -> Progress:
    """The job's progress bars (nothing is drawn when not ``enabled``)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


def plan_items(plan: Plan) -> int:
    """Items of a plan, as progress counts them: chip files plus scene windows."""
    return len(plan.chips) + plan.n_windows


class Tracker:
    """Turns finished units into progress (bars and ``progress.json``) and counts.

    Called by one thread at a time (the engine's writer), once per unit.
    """

    def __init__(self, plan: Plan, bars: Progress, progress_file: ProgressFile, done: set[str]):
        self.plan = plan
        self.bars = bars
        self.file = progress_file
        self.classified = 0
        self.left_per_scene = [len(s.chunks) for s in plan.scenes]
        by_uid = {u.uid: u for u in plan.units}
        files_done = sum(len(by_uid[u].chips) for u in done if by_uid[u].kind == "chips")
        windows_done = sum(by_uid[u].n_rows for u in done if by_uid[u].kind == "scene")
        for u in done:
            scene = by_uid[u].scene
            if scene is not None:
                self.left_per_scene[scene] -= 1
        files_done += sum(1 for n in self.left_per_scene if n == 0)
        self.files = bars.add_task("files", total=len(plan.chips) + len(plan.scenes),
                                   completed=files_done)
        self.windows = bars.add_task("windows", total=max(1, plan.n_windows),
                                     completed=windows_done if plan.n_windows else 1)
        self.chips = bars.add_task("classified", total=None)
        items_done = sum(by_uid[u].n_rows for u in done)
        self.file.set("running", done=items_done, total=plan_items(plan))

    def record(self, unit: Unit, n_classified: int) -> int | None:
        """A unit is finished and recorded; returns the scene it completed, if any."""
        self.classified += n_classified
        self.bars.advance(self.chips, n_classified)
        self.file.advance(unit.n_rows)
        if unit.kind == "chips":
            self.bars.advance(self.files, len(unit.chips))
            return None
        assert unit.scene is not None
        self.bars.advance(self.windows, unit.n_rows)
        self.left_per_scene[unit.scene] -= 1
        if self.left_per_scene[unit.scene] == 0:
            self.bars.advance(self.files, 1)
            return unit.scene
        return None


@dataclass
class JobResult:
    """How a job ended.

    Attributes:
        state: ``finished`` or ``already-finished``.
        exit_code: 0 all classified, 1 some items failed.
        errors: ``{"path", "error"}`` per failed input (a scene: per distinct reason).
    """

    state: str
    exit_code: int
    counts: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)
    classified: int = 0
    elapsed_s: float = 0.0
    items_per_s: float = 0.0
    errors: list[dict[str, str]] = field(default_factory=list)


def print_summary(console: Console, result: JobResult, out: Path) -> None:
    """The table of classes and counts (the windows not assessed, nodata, cloudy and
    failed, apart from them: never counted as a class), and the first few failures with
    their reasons."""
    table = Table(title=f"vision infer: {escape(str(out))}", show_footer=False)
    table.add_column("class")
    table.add_column("rows", justify="right")
    for name, n in result.class_counts.items():
        table.add_row(escape(name), f"{n:,}")
    table.add_section()
    table.add_row("[dim]nodata (not assessed)[/dim]", f"{result.counts.get('nodata', 0):,}")
    table.add_row("[dim]cloudy (not assessed)[/dim]", f"{result.counts.get('cloudy', 0):,}")
    table.add_row("[red]errors[/red]", f"{result.counts.get('error', 0):,}")
    table.add_row("[bold]total rows[/bold]", f"{sum(result.counts.values()):,}")
    table.add_section()
    table.add_row("classified this run", f"{result.classified:,}")
    table.add_row("throughput", f"{result.items_per_s:,.1f} items/s")
    table.add_row("elapsed", f"{result.elapsed_s:,.1f} s")
    console.print(table)
    if result.exit_code:
        print_failures(console, result.counts.get("error", 0), result.errors, out)


def print_failures(console: Console, n_failed: int, errors: Sequence[dict[str, str]],
                   out: Path) -> None:
    """"finished with N failed items", then the first few with their reasons."""
    inputs = len({e["path"] for e in errors})
    console.print(f"[yellow]finished with {n_failed:,} failed items in {inputs:,} inputs[/yellow]:",
                  highlight=False)
    for e in errors[:SHOWN_ERRORS]:
        console.print(f"  [bold]{escape(e['path'])}[/bold]: {escape(e['error'])}",
                      highlight=False, soft_wrap=True)
    more = f"{len(errors) - SHOWN_ERRORS:,} more, and " if len(errors) > SHOWN_ERRORS else ""
    console.print(f"  ({more}every reason in 'errors' of {escape(str(out / 'manifest.json'))})",
                  highlight=False)
