"""`vision COMMAND --help` paragraphs are wrapped by the terminal, not by the source's line breaks."""

from __future__ import annotations

from tests.cli_runner import run_vision
from vision.cli import prose

SOURCE = """First line.

A paragraph written
at the source's width.

\b
Examples:
    vision infer a.tif --out j

Options that stay:
- one
- two"""


def test_prose_joins_paragraphs_and_keeps_examples_and_lists() -> None:
    assert prose(SOURCE).split("\n\n") == [
        "First line.", "A paragraph written at the source's width.",
        "\b\nExamples:\n    vision infer a.tif --out j", "Options that stay:\n- one\n- two"]


def test_the_real_help_reflows_at_the_terminal_width() -> None:
    """At 200 columns a sentence that spans two lines of `INFER_HELP` is on one line; at 60
    no line of the prose overflows and the examples keep their own lines."""
    wide = run_vision("infer", "--help", env={"COLUMNS": "200"})
    assert wide.returncode == 0, wide.stderr
    assert "a larger GeoTIFF scene is tiled into windows of the model's input size" in wide.stdout
    assert "Train a model per RECIPE; track it in MLflow, calibrate, export ONNX, register it." in run_vision(
        "train", "--help", env={"COLUMNS": "200"}).stdout
    narrow = run_vision("infer", "--help", env={"COLUMNS": "60"}).stdout.splitlines()
    assert max(len(line) for line in narrow) <= 60
    assert any(line.strip() == "--grid before.tif" for line in narrow)
