"""``python -m inference.change JOB_BEFORE JOB_AFTER ... --out DIR``: `vision change` without the
installed entry point (an environment installed before the ``change`` entry point existed, and
the benchmarks), with the exit codes of `vision.cli.main`."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from inference.change.cli import CHANGE_HELP, change
from vision.console import make_console
from vision.errors import ConfigError, VisionError


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(help=CHANGE_HELP, no_args_is_help=True)(change)
    console = make_console(stderr=True)
    try:
        app(standalone_mode=False)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except VisionError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(1)
    except Exception as exc:
        show = getattr(exc, "show", None)
        if callable(show) and hasattr(exc, "exit_code"):
            show()
            sys.exit(2)
        raise
    sys.exit(0)


if __name__ == "__main__":
    main()
