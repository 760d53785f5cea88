"""The one way every command makes its Rich console.

On a terminal Rich wraps text to the window, which is what a person reading it wants. Written to
a file or a pipe (a log, CI, a job runner, a test capturing the output) the same wrapping at a
guessed 80 columns would break one message across lines, so `grep "already finished" job.log`
or a check for "Resuming RUN after epoch 1" misses it whenever a path is long. There every
message stays on one line (Rich's soft wrap); tables and progress bars are unchanged.
"""

from __future__ import annotations

from rich.console import Console


def make_console(*, stderr: bool = False, quiet: bool = False) -> Console:
    """A console on stdout (or stderr) that wraps lines only when a person is watching."""
    console = Console(stderr=stderr, quiet=quiet)
    console.soft_wrap = not console.is_terminal
    return console
