"""Change folders for the review tests: real EuroSAT chips at two dates with known truth
(`bench/make_change_pairs.py`), job folders of them by a simulated model
(`tests.inference.change.jobs.simulate_job`: no trained model needed) and the real
`vision change` run on those jobs. Everything lies under the folder given (an allowed root).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from inference.change.run import ChangeOptions, run_change
from tests.inference.change.jobs import pairs_module, simulate_job


def write_change_folder(root: Path, data_dir: Path, windows: int = 8, seed: int = 3, after: str = "d1",
                        accuracy: float = 0.95) -> Path:
    """``root/pairs`` (the dates), ``root/jobs/d0`` and ``root/jobs/AFTER`` (simulated jobs) and
    ``root/change`` (`vision change` of the two, class of interest AnnualCrop); returns the
    change folder."""
    pairs = root / "pairs"
    pairs.mkdir(parents=True, exist_ok=True)
    pairs_module().build(pairs, data_dir, windows=windows, seed=seed)
    jobs = [simulate_job(pairs, d, root / "jobs" / d, accuracy=accuracy) for d in ("d0", after)]
    out = root / "change"
    run_change(ChangeOptions(jobs=tuple(str(j) for j in jobs), out=out, classes=("AnnualCrop",), progress=False,
                             report=False))
    return out


def change_rows(folder: Path) -> list[dict[str, object]]:
    """The rows of a change folder's ``changes.parquet``."""
    return pq.read_table(folder / "changes.parquet").to_pylist()


def queued_rows(folder: Path, transitions: tuple[str, ...] = ("appeared", "disappeared", "changed")
                ) -> list[tuple[int, dict[str, object]]]:
    """``(row index, row)`` of the rows an import with these transitions queues."""
    return [(i, r) for i, r in enumerate(change_rows(folder))
            if r["status"] == "ok" and r["transition"] in transitions]


def set_change_column(folder: Path, name: str, values: dict[int, object]) -> None:
    """Change one column of some rows of a change folder's table (as someone with pyarrow could)."""
    import pyarrow as pa

    table = pq.read_table(folder / "changes.parquet")
    rows = table.to_pylist()
    for i, v in values.items():
        rows[i][name] = v
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), folder / "changes.parquet")
