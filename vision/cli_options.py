"""Options shared by the `vision` sub-commands, declared once.

Every package's CLI takes its model argument, ``--out``, ``--overwrite``, ``--progress``
and ``--batch-size`` from here, so they read and behave the same everywhere; and every
command that writes follows one overwrite rule (`refuse_overwrite`): an existing output
is replaced only with ``--overwrite``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from vision.errors import ConfigError

#: What a MODEL may be, for help texts.
MODEL_HELP = ("model.onnx, a run folder, checkpoints/best.pt, models:/NAME@ALIAS or "
              "models:/NAME/VERSION")
ONNX_MODEL_HELP = "model.onnx, models:/NAME@ALIAS or models:/NAME/VERSION"


def model_argument(help: str = MODEL_HELP) -> Any:
    """The positional MODEL argument."""
    return typer.Argument(..., metavar="MODEL", help=help)


def model_option(help: str = ONNX_MODEL_HELP) -> Any:
    """``--model/-m MODEL`` (required)."""
    return typer.Option(..., "--model", "-m", metavar="MODEL", help=help)


def out_option(help: str, required: bool = False, default: Path | None = None, metavar: str | None = None) -> Any:
    """``--out/-o PATH`` (``required``, or ``default`` when not given)."""
    return typer.Option(... if required else default, "--out", "-o", metavar=metavar, help=help)


def overwrite_option(what: str = "an existing output") -> Any:
    """``--overwrite``: replace what is there instead of refusing."""
    return typer.Option(False, "--overwrite", help=f"replace {what} (refused without it)")


def progress_option() -> Any:
    """``--progress/--no-progress``."""
    return typer.Option(True, "--progress/--no-progress", help="show progress bars")


def batch_size_option(default: int | None, help: str = "chips per batch") -> Any:
    """``--batch-size/-b N``."""
    return typer.Option(default, "--batch-size", "-b", min=1, help=help)


def refuse_overwrite(path: Path, overwrite: bool) -> None:
    """The one overwrite rule: an existing ``path`` is replaced only with ``--overwrite``.

    Raises:
        ConfigError: ``path`` exists and ``overwrite`` is false.
    """
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; pass --overwrite to replace it, or choose another path")
