"""`vision change` end to end on pairs built from real EuroSAT chips (simulated jobs): the
acceptance checks of the change issue, the folder rules, and the errors that name the jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.inference.change.conftest import REPO_ROOT, load_bench, run_cli
from tests.inference.change.jobs import simulate_job


def _rows(folder: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    return pq.ParquetFile(folder / "changes.parquet").read(columns=columns).to_pylist()


def test_appeared_precision_recall_and_exact_not_assessed_on_a_pair_of_real_chips(
        pairs: Path, sim_jobs: dict[str, Path], tmp_path: Path) -> None:
    """Acceptance 1 (with a simulated model): precision of `appeared` >= 0.95 at the default
    threshold, and not_assessed exactly the windows made cloudy or nodata in either date."""
    code, out = run_cli(str(sim_jobs["d0"]), str(sim_jobs["d1"]), "--out", str(tmp_path / "c"),
                        "--classes", "AnnualCrop", "--no-progress")
    assert code == 0, out
    acc = load_bench("change_accuracy")
    s = acc.score(tmp_path / "c" / "changes.parquet", pairs / "truth-d0-d1.parquet", ["AnnualCrop"])
    d = s["default"]["appeared"]
    assert d["true"] >= 10 and d["predicted"] >= 8
    assert d["precision"] >= 0.95 and d["recall"] >= 0.8
    assert s["truth_cloudy_or_nodata"] > 0
    assert s["not_assessed"] == s["truth_cloudy_or_nodata"] and s["not_assessed_windows_differ"] == 0
    assert [r["min_confidence"] for r in s["curve"]] == sorted(r["min_confidence"] for r in s["curve"])
    assert s["curve"][-1]["uncertain"] > s["curve"][0]["uncertain"]  # the gate bites as it rises


def test_the_after_date_in_epsg3857_gives_the_same_transitions(pairs: Path, sim_jobs: dict[str, Path],
                                                                tmp_path: Path) -> None:
    """Acceptance 2: the reprojection path agrees with the same-grid pair on >= 99 % of windows."""
    for name, after in (("same", "d1"), ("other", "d1-3857")):
        code, out = run_cli(str(sim_jobs["d0"]), str(sim_jobs[after]), "--out", str(tmp_path / name),
                            "--classes", "AnnualCrop", "--no-progress", "--no-report")
        assert code == 0, out
    acc = load_bench("change_accuracy")
    g = acc.agreement(tmp_path / "same" / "changes.parquet", tmp_path / "other" / "changes.parquet")
    assert g["matched"] >= 0.9 * 144 and g["agreement"] >= 0.99, g
    other = _rows(tmp_path / "other", ["alignment", "crs", "crs_before", "status_before"])
    assert {r["crs"] for r in other} == {"EPSG:3857"}
    assert {r["alignment"] for r in other if r["status_before"] != "missing"} == {"reprojected"}
    assert {r["crs_before"] for r in other if r["crs_before"]} == {"EPSG:32632"}
    same = _rows(tmp_path / "same", ["alignment"])
    assert {r["alignment"] for r in same} == {"same_grid"}


def test_three_dates_first_appearance_is_right_for_every_window(pairs: Path, perfect_jobs: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    """Acceptance 3: with a model that is always right, first_appeared is the truth's, cloud gaps
    included (the first date the class is *seen* after a date it was seen absent)."""
    code, out = run_cli(str(perfect_jobs["d0"]), str(perfect_jobs["d1"]), str(perfect_jobs["d2"]),
                        "--out", str(tmp_path / "c"), "--classes", "AnnualCrop", "--no-progress", "--no-report")
    assert code == 0, out
    meta = json.loads((pairs / "pairs.json").read_text())
    times = [datetime.fromisoformat(meta["dates"][d].replace("Z", "+00:00")) for d in ("d0", "d1", "d2")]
    truth = {(r["row_off"], r["col_off"]): r for r in pq.read_table(pairs / "truth-d0-d1-d2.parquet").to_pylist()}
    rows = _rows(tmp_path / "c", ["row_off", "col_off", "first_appeared", "first_appeared_item", "trajectory"])
    assert len(rows) == len(truth)
    wrong = [(r["row_off"], r["col_off"]) for r in rows
             if r["first_appeared"] != (times[t] if (t := truth[(r["row_off"], r["col_off"])]["first_appeared"]) >= 0
                                        else None)]
    assert not wrong
    firsts = [truth[k]["first_appeared"] for k in truth]
    assert firsts.count(1) >= 3 and firsts.count(2) >= 3  # both later dates have appearances
    assert {r["first_appeared_item"] for r in rows if r["first_appeared"]} == {"change-pair-d1", "change-pair-d2"}
    assert all(len(r["trajectory"]) == 3 for r in rows)


def test_the_folder_holds_every_output_and_success_last(sim_jobs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "c"
    code, text = run_cli(str(sim_jobs["d0"]), str(sim_jobs["d1"]), "--out", str(out), "--no-progress")
    assert code == 0, text
    names = {p.name for p in out.iterdir()}
    assert names == {"changes.parquet", "change-pair-d1.change.tif", "changes.geojson", "change_summary.json",
                     "report.html", "change_manifest.json", "_SUCCESS"}
    m = json.loads((out / "change_manifest.json").read_text())
    assert m["kind"] == "vision-change" and m["classes_of_interest"] == m["classes"]
    assert [j["job"] for j in m["jobs"]] == [str(sim_jobs["d0"]), str(sim_jobs["d1"])]
    assert all(len(j["predictions_sha256"]) == 64 for j in m["jobs"])
    assert (out / "_SUCCESS").stat().st_mtime_ns >= (out / "change_manifest.json").stat().st_mtime_ns
    assert not list(tmp_path.glob(".*"))  # no work folder left beside it


def test_dates_out_of_order_are_sorted_and_said(sim_jobs: dict[str, Path], tmp_path: Path) -> None:
    fwd, rev = tmp_path / "f", tmp_path / "r"
    assert run_cli(str(sim_jobs["d0"]), str(sim_jobs["d1"]), "--out", str(fwd), "--no-progress", "--no-report")[0] == 0
    code, text = run_cli(str(sim_jobs["d1"]), str(sim_jobs["d0"]), "--out", str(rev), "--no-progress", "--no-report")
    assert code == 0 and "sorted by acquisition" in " ".join(text.split())
    cols = ["change_id", "transition", "status", "item_before", "item_after"]
    assert _rows(fwd, cols) == _rows(rev, cols)
    assert json.loads((rev / "change_manifest.json").read_text())["jobs"][0]["job"] == str(sim_jobs["d0"])


def test_overwrite_rules(sim_jobs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "c"
    args = [str(sim_jobs["d0"]), str(sim_jobs["d1"]), "--out", str(out), "--no-progress", "--no-report"]
    assert run_cli(*args)[0] == 0
    code, text = run_cli(*args)
    assert code == 2 and "--overwrite" in text
    assert run_cli(*args, "--overwrite")[0] == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("precious")
    code, text = run_cli(str(sim_jobs["d0"]), str(sim_jobs["d1"]), "--out", str(foreign), "--overwrite")
    assert code == 2 and "not a `vision change` folder" in text
    assert (foreign / "thesis.txt").read_text() == "precious"


def test_out_must_not_overlap_a_job(sim_jobs: dict[str, Path]) -> None:
    code, text = run_cli(str(sim_jobs["d0"]), str(sim_jobs["d1"]), "--out", str(sim_jobs["d1"] / "sub"))
    assert code == 2 and "overlap" in text
    code, text = run_cli(str(sim_jobs["d0"]), str(sim_jobs["d1"]), "--out", str(sim_jobs["d1"].parent))
    assert code == 2


def test_schema1_jobs_need_dates_and_use_the_file_stem_as_item(pairs: Path, tmp_path: Path) -> None:
    a = simulate_job(pairs, "d0", tmp_path / "a", schema=1)
    b = simulate_job(pairs, "d1", tmp_path / "b", schema=1)
    code, text = run_cli(str(a), str(b), "--out", str(tmp_path / "c"), "--no-progress")
    assert code == 2 and "--dates" in text
    code, text = run_cli(str(a), str(b), "--out", str(tmp_path / "c"), "--no-progress", "--no-report",
                         "--dates", "2023-06-15,2024-06-14")
    assert code == 0, text
    rows = _rows(tmp_path / "c", ["item_before", "item_after", "acquired_after", "status"])
    assert {(r["item_before"], r["item_after"]) for r in rows} == {("d0", "d1")}
    assert {r["acquired_after"].date().isoformat() for r in rows} == {"2024-06-14"}
    m = json.loads((tmp_path / "c" / "change_manifest.json").read_text())
    assert [j["acquired_source"] for j in m["jobs"]] == ["--dates", "--dates"]


def test_aoi_summary_per_area_and_windows_outside_dropped(pairs: Path, sim_jobs: dict[str, Path],
                                                          tmp_path: Path) -> None:
    out = tmp_path / "c"
    code, text = run_cli(str(sim_jobs["d0"]), str(sim_jobs["d1"]), "--out", str(out), "--aoi",
                         str(pairs / "aoi.geojson"), "--aoi-field", "name", "--no-progress", "--no-report")
    assert code == 0, text
    rows = _rows(out, ["aoi_id", "area_ha"])
    assert {r["aoi_id"] for r in rows} == {"west", "south-east"} and len(rows) < 144
    summary = json.loads((out / "change_summary.json").read_text())
    areas = {a["aoi_id"]: a for a in summary["areas"]}
    assert set(areas) == {"west", "south-east"}
    for name, a in areas.items():
        ha = sum(r["area_ha"] for r in rows if r["aoi_id"] == name)
        assert a["hectares"]["total"] == pytest.approx(ha, abs=1e-3)
        assert sum(a["windows"].values()) == sum(r["aoi_id"] == name for r in rows)
    # the west half of a scene of 12 x 12 windows of 640 m: 3840 m x 7680 m
    assert areas["west"]["hectares"]["total"] == pytest.approx(3840 * 7680 / 1e4, rel=0.01)


@pytest.mark.parametrize("what", ["unfinished", "classes", "far", "same"])
def test_jobs_that_cannot_be_compared_are_named(what: str, make_grid_job: Any, tmp_path: Path) -> None:
    ok = np.full((3, 3), "ok", object)
    lab = np.zeros((3, 3), int)
    a = make_grid_job("a", ok, lab, acquired="2023-01-01T00:00:00Z")
    kw: dict[str, Any] = {"acquired": "2024-01-01T00:00:00Z"}
    if what == "unfinished":
        kw["success"] = False
    elif what == "classes":
        kw["classes"] = ["AnnualCrop", "Forest"]
    elif what == "far":
        kw["origin"] = (300_000.0, 4_000_000.0)
    b = make_grid_job("b", ok, lab, **kw) if what != "same" else a
    code, text = run_cli(str(a), str(b), "--out", str(tmp_path / "c"), "--no-progress")
    text = " ".join(text.split())
    assert code == 2
    expected = {"unfinished": "not finished", "classes": "different classes", "far": "do not overlap",
                "same": "given twice"}[what]
    assert expected in text and str(b) in text


def test_a_job_file_that_lies_is_an_error_naming_it(make_grid_job: Any, tmp_path: Path) -> None:
    ok = np.full((2, 2), "ok", object)
    a = make_grid_job("a", ok, np.zeros((2, 2), int), acquired="2023-01-01T00:00:00Z")
    b = make_grid_job("b", ok, np.zeros((2, 2), int), acquired="2024-01-01T00:00:00Z")
    (b / "predictions.parquet").write_bytes(b"PAR1 not really")
    code, text = run_cli(str(a), str(b), "--out", str(tmp_path / "c"), "--no-progress")
    assert code == 1 and str(b) in text and "predictions.parquet" in text
    assert not (tmp_path / "c").exists()


def test_vision_change_does_not_import_pandas(sim_jobs: dict[str, Path], tmp_path: Path) -> None:
    """pyarrow's pandas import costs 0.25 s of a core per run; the change code avoids it."""
    code = ("import sys\nfrom inference.change.__main__ import main\n"
            f"sys.argv = ['x', {str(sim_jobs['d0'])!r}, {str(sim_jobs['d1'])!r}, '--out', {str(tmp_path / 'c')!r},"
            " '--no-progress']\ntry:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('PANDAS', 'pandas' in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stderr
    assert "PANDAS False" in res.stdout
