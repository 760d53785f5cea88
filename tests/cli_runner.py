"""Running `vision` commands in tests: the one helper every test package uses.

`run_cli` invokes the sub-commands of the packages named (``training``, ``inference``,
``review``) in-process, without loading every plugin, and maps errors to exit codes exactly as
`vision.cli.main` does (`ConfigError` -> 2, other `VisionError` -> 1; anything else is a bug
and is raised). `run_vision` runs the real ``python -m vision.cli`` in a subprocess, for tests
that check what a user sees (no traceback, the message, the exit code).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from typer.testing import CliRunner

from vision.cli import EXIT_PARTIAL, EXIT_USAGE
from vision.errors import ConfigError, VisionError

ROOT = Path(__file__).resolve().parents[1]
#: Where a package's ``register(app)`` lives when it is not ``PACKAGE.cli``.
COMMANDS = {"vision": "vision.data.commands"}


def _app(packages: tuple[str, ...]) -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    for package in packages:
        importlib.import_module(COMMANDS.get(package, f"{package}.cli")).register(app)
    return app


def run_cli(*args: str, commands: tuple[str, ...] = ("training",), input: str | None = None,
            width: int = 200, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``vision ARGS...`` with the sub-commands of ``commands`` (``"vision"``: its ``data``
    group); returns (exit code, output).

    The output ends with ``error: MESSAGE`` when the command failed with a `VisionError`,
    as `vision.cli.main` prints it.
    """
    result = CliRunner().invoke(_app(commands), list(args), input=input, terminal_width=width, env=env)
    exc = result.exception
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, f"{result.output}error: {exc}"
    if isinstance(exc, VisionError):
        return EXIT_PARTIAL, f"{result.output}error: {exc}"
    if exc is not None and not isinstance(exc, SystemExit):
        raise exc
    return result.exit_code, result.output


def runner(*commands: str) -> Callable[..., tuple[int, str]]:
    """`run_cli` bound to ``commands`` (``run_cli = runner("review")``)."""

    def run(*args: str, input: str | None = None, width: int = 200) -> tuple[int, str]:
        return run_cli(*args, commands=commands, input=input, width=width)

    return run


run_training_cli = runner("training")
run_review_cli = runner("review")


def run_vision(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    """The real ``python -m vision.cli ARGS...`` (this checkout's code first on the path)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    full = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "vision.cli", *args], cwd=cwd, env=full,
                          capture_output=True, text=True)
