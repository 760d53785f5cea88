"""Run the review package's `vision` sub-commands in-process (the full CLI loads every
package's plugins, which takes seconds)."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from review.cli import register
from vision.errors import ConfigError, VisionError


def run_cli(*args: str, input: str | None = None) -> tuple[int, str]:
    """Invoke ``vision ARGS...`` with only the review commands; returns (exit code, output)."""
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    result = CliRunner().invoke(app, list(args), input=input)
    exc = result.exception
    if isinstance(exc, ConfigError):  # what `vision.cli.main` turns into exit codes
        return 2, f"{result.output}error: {exc}"
    if isinstance(exc, VisionError):
        return 1, f"{result.output}error: {exc}"
    if exc is not None and not isinstance(exc, SystemExit):
        raise exc
    return result.exit_code, result.output
