"""The change table's contract (`vision.contracts.changes`) as `vision change` writes it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.inference.change.conftest import run_cli
from vision.contracts.changes import (
    CHANGE_CODES,
    CHANGE_COLOURS,
    CHANGE_SCHEMA,
    CHANGE_STATUSES,
    TRANSITIONS,
    ChangeRow,
    ChangeTableError,
    check_change_table,
    read_change_rows,
)


def test_the_written_table_is_the_contract(sim_jobs: dict[str, Path], tmp_path: Path) -> None:
    code, text = run_cli(str(sim_jobs["d0"]), str(sim_jobs["d1"]), str(sim_jobs["d2"]), "--out", str(tmp_path / "c"),
                         "--classes", "AnnualCrop", "--no-progress", "--no-report")
    assert code == 0, text
    path = tmp_path / "c" / "changes.parquet"
    assert pq.ParquetFile(path).schema_arrow.equals(CHANGE_SCHEMA)
    rows = read_change_rows(path)
    assert set(rows[0]) == set(ChangeRow.__annotations__) == set(CHANGE_SCHEMA.names)
    assert {r["status"] for r in rows} <= set(CHANGE_STATUSES)
    assert {r["transition"] for r in rows if r["status"] == "ok"} <= set(TRANSITIONS)
    assert all(r["transition"] is None for r in rows if r["status"] != "ok")
    assert len({r["change_id"] for r in rows}) == len(rows)
    assert all(len(r["model_sha256_before"]) == 64 and len(r["input_sha256_after"]) == 64 for r in rows)
    na = read_change_rows(path, where_status="not_assessed")
    assert na and all(r["status"] == "not_assessed" and r["reason"] for r in na)


def test_a_table_without_a_column_is_not_a_change_table() -> None:
    schema = pa.schema([f for f in CHANGE_SCHEMA if f.name != "p_after"])
    with pytest.raises(ChangeTableError, match="p_after"):
        check_change_table(schema)
    wrong = pa.schema([pa.field("p_after", pa.string()) if f.name == "p_after" else f for f in CHANGE_SCHEMA])
    with pytest.raises(ChangeTableError, match="p_after"):
        check_change_table(wrong)


def test_every_outcome_has_a_code_and_a_colour() -> None:
    assert set(CHANGE_CODES) == set(CHANGE_COLOURS) == {*TRANSITIONS, "uncertain", "not_assessed"}
    assert len(set(CHANGE_CODES.values())) == len(CHANGE_CODES)
