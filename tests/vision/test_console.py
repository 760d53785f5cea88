"""Messages written to a log (not a terminal) stay on one line, however long the path in them."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from vision.console import make_console


def test_a_long_message_to_a_pipe_is_one_line(capsys, tmp_path: Path) -> None:
    long = tmp_path.joinpath(*["a-rather-long-folder-name"] * 8, "job")
    make_console(stderr=True).print(f"job {escape(str(long))} is already finished; nothing to do.")
    make_console().print(f"Resuming {escape(str(long))} after epoch 1 of 3")
    out, err = capsys.readouterr()
    assert err == f"job {long} is already finished; nothing to do.\n"
    assert out == f"Resuming {long} after epoch 1 of 3\n"
