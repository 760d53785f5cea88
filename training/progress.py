"""What long commands print while they work, so that none of them goes silent.

`Reporter.stage` frames a step with a line when it starts and one with its elapsed time when
it ends; `Reporter.bar` adds a progress bar for steps over many items (chips, batches). On a
terminal the bars redraw in place; in a log (CI, ``nohup``) they are replaced by the start and
end lines, which always print. ``enabled=False`` (``--no-progress``) drops the bars only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vision.console import make_console

#: Every training command reports on stderr (stdout stays for results and JSON).
console = make_console(stderr=True)

Advance = Callable[[int], None]


def elapsed(seconds: float) -> str:
    """``4.2 s``, ``3 min 05 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s"


class Reporter:
    """Stage lines and progress bars on one console.

    Args:
        enabled: show progress bars (stage lines print either way).
        out: the console (default stderr).
    """

    def __init__(self, enabled: bool = True, out: Console | None = None):
        self.console = out or console
        self.enabled = enabled
        self.start = time.perf_counter()

    def line(self, text: str) -> None:
        """Print ``text`` (Rich markup allowed: escape user strings with `rich.markup.escape`)."""
        self.console.print(text, highlight=False)

    @contextlib.contextmanager
    def stage(self, what: str) -> Iterator[None]:
        """``what ...`` now, ``what: done in 1.2 s`` after the block (``what`` is escaped)."""
        text = escape(what)
        self.line(f"{text} ...")
        t0 = time.perf_counter()
        yield
        self.line(f"{text}: done in {elapsed(time.perf_counter() - t0)}")

    @contextlib.contextmanager
    def bar(self, what: str, total: int, unit: str = "chips") -> Iterator[Advance]:
        """A progress bar over ``total`` items; the block calls ``advance(n)`` as it goes."""
        text = escape(what)
        self.line(f"{text} ({total} {unit}) ...")
        t0 = time.perf_counter()
        show = self.enabled and self.console.is_terminal and total > 0
        if not show:
            yield lambda n: None
        else:
            progress = Progress(TextColumn(f"  {text}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=True)
            with progress:
                task = progress.add_task(what, total=total)
                yield lambda n: progress.advance(task, n)
        self.line(f"{text}: done in {elapsed(time.perf_counter() - t0)}")

    def total(self) -> str:
        """Time since this reporter was made."""
        return elapsed(time.perf_counter() - self.start)
