"""bench/student_vs_teacher.py runs both models interleaved on real chips and prints speed-ups."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "student_vs_teacher.py"


def test_student_vs_teacher_prints_rounds_speedups_and_accuracy(data_dir: Path, tmp_path: Path) -> None:
    from bench.infer_throughput import standin_model

    student, _ = standin_model(tmp_path)
    teacher = tmp_path / "teacher.onnx"
    shutil.copy(student, teacher)  # the same graph on both sides: speed-ups near 1
    r = subprocess.run([sys.executable, str(SCRIPT), "--student", str(student), "--teacher", str(teacher),
                        "--chips", "192", "--rounds", "2"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(re.findall(r"^round \d: vision infer student [\d,]+ / teacher [\d,]+ chips/s = \d+\.\d\dx",
                          r.stdout, re.M)) == 2, r.stdout
    m = re.search(r"^vision infer chips/s : (\d+\.\d\d)x", r.stdout, re.M)
    assert m is not None and 0.3 < float(m.group(1)) < 3.0, r.stdout
    acc = re.search(r"test-split accuracy  : student (\d\.\d{4}), teacher (\d\.\d{4}) \(192 chips", r.stdout)
    assert acc is not None and acc.group(1) == acc.group(2), r.stdout  # one model, the same answers
    paired = re.search(r"paired               : student (\d+) right, teacher (\d+); 0 chips only the teacher gets "
                       r"right, 0 only the student; exact McNemar p = 1\.00; sd of the difference 0\.00 points",
                       r.stdout)
    assert paired is not None, r.stdout
    assert int(paired.group(1)) == int(paired.group(2)) == round(float(acc.group(1)) * 192)

    missing = subprocess.run([sys.executable, str(SCRIPT), "--student", str(tmp_path / "none.onnx"),
                              "--teacher", str(teacher)], capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "no such model" in missing.stderr


def test_mcnemar_counts_the_chips_each_alone_gets_right() -> None:
    import numpy as np

    from bench.student_vs_teacher import mcnemar

    teacher = np.array([True] * 11 + [False] * 6 + [True] * 2640)
    student = np.array([False] * 11 + [True] * 6 + [True] * 2640)
    only_s, only_t, p = mcnemar(student, teacher)
    assert (only_s, only_t) == (6, 11) and abs(p - 0.3323) < 1e-4  # 2 * P(X <= 6), X ~ Bin(17, 1/2)
    assert mcnemar(teacher, teacher) == (0, 0, 1.0)
