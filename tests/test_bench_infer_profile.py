"""bench/infer_profile.py times every stage of a chip on real chips and prints the ceiling."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "infer_profile.py"


def test_infer_profile_prints_each_stage_and_a_ceiling_below_one(data_dir: Path) -> None:
    r = subprocess.run([sys.executable, str(SCRIPT), "--chips", "96", "--batch-size", "32", "--measured", "0.5"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    stages = dict(re.findall(r"^  (read \+ hash|decode \(JPEG\)|prepare \(all of it\)|complete|table)\s+(\d+\.\d)",
                             r.stdout, re.M))
    assert len(stages) == 5, r.stdout
    # The whole reading step includes reading, hashing and decoding.
    assert float(stages["prepare (all of it)"]) >= 0.9 * (float(stages["read + hash"]) + float(stages["decode (JPEG)"]))
    m = re.search(r"ceiling on this machine: .* = (\d\.\d+) of the bare session", r.stdout)
    assert m is not None and 0.0 < float(m.group(1)) < 1.0, r.stdout
    assert re.search(r"measured \(infer_throughput.py\): 0\.500 = \d\.\d+ of the ceiling", r.stdout), r.stdout
