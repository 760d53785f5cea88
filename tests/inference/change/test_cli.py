"""`vision change` as a command: registered through its own entry point, with help, rules and
an example; usage errors exit 2."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.inference.change.conftest import REPO_ROOT, run_cli


def test_the_command_is_registered_through_its_entry_point() -> None:
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["vision.commands"]["change"] == "inference.change.cli:register"


def test_help_has_the_rules_and_an_example() -> None:
    code, out = run_cli("--help")
    text = " ".join(out.split())
    assert code == 0
    for words in ("not_assessed", "appeared", "--min-confidence", "Example", "vision change jobs/2023-06"):
        assert words in text


def test_one_job_or_a_bad_threshold_is_a_usage_error(tmp_path: Path) -> None:
    assert run_cli(str(tmp_path), "--out", str(tmp_path / "c"))[0] == 2
    assert run_cli(str(tmp_path), str(tmp_path), "--out", str(tmp_path / "c"), "--min-confidence", "1.5")[0] == 2
