"""bench/stac_throughput.py runs end to end in its tiny mode and prints the ratio."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "stac_throughput.py"


def test_stac_throughput_tiny_prints_the_ratio(data_dir: Path) -> None:
    r = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--stride", "64", "--rounds", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tiny 1x1-conv" in r.stdout and re.search(r"\d+ windows each", r.stdout)
    m = re.search(r"ratio STAC item / stacked file: (\d+\.\d+)", r.stdout)
    assert m is not None and float(m.group(1)) > 0, r.stdout


def test_stac_throughput_teaches_its_options() -> None:
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "--stride" in r.stdout and "--tiny" in r.stdout
