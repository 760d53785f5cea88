"""The review package's `vision` sub-commands, run in-process by the one shared helper
(`tests/cli_runner.py`, with `vision.cli`'s exit codes). Kept so that ``from cli_runner import
run_cli`` in the review tests keeps working; new tests import `tests.cli_runner` directly."""

from tests.cli_runner import run_review_cli as run_cli

__all__ = ["run_cli"]
