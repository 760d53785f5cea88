"""The review service's benches run end to end on a throw-away service and print their figures.

Both build the service the same way (`bench/review_load._service`), whose audit rows must be
keyed with the secret the server is started with: a bench that forgot it failed at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run(*args: str) -> dict:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout[r.stdout.index("{"):])


def test_review_load_counts_every_decision_and_keeps_the_chain() -> None:
    out = _run(str(BENCH / "review_load.py"), "--reviewers", "2", "--duration", "2")
    assert out["decisions"] > 0 and out["errors"] == 0, out
    c = out["correctness"]
    assert c["stored"] == c["acknowledged"] == out["decisions"] and c["lost"] == c["decided_twice"] == 0, c
    assert c["audit_chain_intact"] is True


def test_login_burst_prints_its_ratios() -> None:
    out = _run(str(BENCH / "login_burst.py"), "--burst", "4", "--rounds", "1")
    assert out["burst"] == 4
    assert out["alone_s"] > 0 and out["other_address_over_alone"] > 0 and out["same_address_over_alone"] > 0, out


def test_review_import_lock_imports_every_row_in_short_transactions() -> None:
    out = _run(str(BENCH / "review_import_lock.py"), "--rows", "5000")
    assert out["rows"] == 5000 and out["write_transactions"] >= 3, out  # batches, not one transaction
    assert out["other_writer_tries"] > 0 and out["longest_transaction_s"] > 0
