"""Where a chip's time goes in `vision infer`, and the ceiling that sets on this machine.

`bench/infer_throughput.py` measures the pipeline against a bare ONNX Runtime session. This
script explains the gap: it times each stage of a chip's way through the job with the
product's own functions, on real EuroSAT JPEG chips, one stage at a time and in CPU seconds:

- read + hash: the file's bytes and their SHA-256 (`vision.hashing.sha256_bytes`);
- decode: JPEG to pixels (`vision.data.decode.decode_image_bytes`, libjpeg-turbo);
- prepare: the whole reading step of a 64-chip unit (`inference.predict.prepare`: read, hash,
  decode, checks, cast into the batch, the row), i.e. the two above and the rest;
- complete: logits to calibrated probabilities and the prediction columns
  (`inference.predict.RowCompleter.complete`);
- table: the rows to an Arrow table and a Parquet part (`rows_to_table`, `pyarrow.parquet`);
- model: a bare session (`inference.session.Classifier`, all cores, `vision infer`'s batch), as
  wall seconds and as CPU seconds (all its threads) per chip.

On a CPU the model and the per-chip work share the same cores, so even with perfect overlap the
pipeline cannot beat

    ceiling = model CPU s / (model CPU s + per-chip CPU s outside the model)

of the bare session's chips/s (assuming the model keeps its CPU efficiency when interleaved).
It prints each stage in microseconds a chip, that ceiling, and with ``--measured R`` (the ratio
`infer_throughput.py` printed) how far below the ceiling the pipeline is.

    python bench/infer_profile.py --model runs/rgb-student/model.onnx [--chips 4096] [--measured 0.86]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.infer_throughput import extract_chips, standin_model  # noqa: E402


def _cpu_per_item(fn: Callable[[], object], n: int, rounds: int = 3) -> float:
    """Best of ``rounds`` CPU seconds of ``fn()`` (one pass over ``n`` items), per item."""
    best = float("inf")
    for _ in range(rounds):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="ONNX model (default: a random-weight lite0 stand-in)")
    ap.add_argument("--chips", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=None, help="default: vision infer's for the model")
    ap.add_argument("--measured", type=float, default=None, help="the chips / bare ORT ratio infer_throughput printed")
    args = ap.parse_args()

    import pyarrow.parquet as pq

    from inference.model import load_model_info
    from inference.plan import ChipEntry, Plan, Unit
    from inference.predict import ReadOptions, RowCompleter, prepare
    from inference.session import Classifier, SessionOptions, cpu_threads, default_batch_size
    from vision.contracts.predictions import rows_to_table
    from vision.data.decode import decode_image_bytes
    from vision.hashing import sha256_bytes

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model if args.model is not None else standin_model(work)[0]
        info = load_model_info(model)
        batch = args.batch_size or default_batch_size("cpu", info.views)
        chips, _ = extract_chips(args.chips, work / "chips")
        paths = [str(p) for p, _ in chips]
        n = len(paths)
        blobs = [Path(p).read_bytes() for p in paths]

        def read_hash() -> None:
            for p in paths:
                with open(p, "rb") as f:
                    sha256_bytes(f.read())

        def decode() -> None:
            for b in blobs:
                decode_image_bytes(b)

        opts = ReadOptions.for_model(info, max_nodata=1.0)
        units = [Unit(uid=str(k), kind="chips", chips=tuple(ChipEntry(p) for p in paths[s: s + batch]))
                 for k, s in enumerate(range(0, n, batch))]
        plan = Plan(files=tuple(paths), chips=(), scenes=(), units=tuple(units))

        def prep() -> list:
            return [prepare(u, plan, opts) for u in units]

        t_read, t_decode, t_prep = _cpu_per_item(read_hash, n), _cpu_per_item(decode, n), _cpu_per_item(prep, n)
        pendings = prep()

        clf = Classifier(model, SessionOptions(device="cpu", batch_size=batch), (len(info.bands), *info.input_size))
        x = np.concatenate([p.pixels for p in pendings if p.pixels is not None])
        clf(x[:batch])  # warm-up
        logits = []
        wall, cpu = time.perf_counter(), time.process_time()
        for s in range(0, len(x), batch):
            logits.append(clf(x[s: s + batch]))
        m_wall, m_cpu = (time.perf_counter() - wall) / len(x), (time.process_time() - cpu) / len(x)
        all_logits = np.concatenate(logits)
        completer = RowCompleter(info)

        def complete() -> list:
            rows = []
            for p in pendings:
                p.logits, p.filled = None, 0
                completer.add_logits(p, 0, all_logits[: len(p.todo)])
                rows.extend(completer.complete(p))
            return rows

        t_complete = _cpu_per_item(complete, n)
        rows = complete()

        def table() -> None:
            for s in range(0, n, 1024):
                pq.write_table(rows_to_table(rows[s: s + 1024]), io.BytesIO())

        t_table = _cpu_per_item(table, n)

    cores = cpu_threads()
    outside = t_prep + t_complete + t_table
    ceiling = m_cpu / (m_cpu + outside)
    us = 1e6
    print(f"model {info.model_name} v{info.model_version} ({info.views} view(s)), batch {batch}, {n} chips, "
          f"{cores} cores ({os.cpu_count()} CPUs)")
    print(f"  read + hash          {t_read * us:8.1f} us CPU a chip")
    print(f"  decode (JPEG)        {t_decode * us:8.1f} us CPU a chip")
    print(f"  prepare (all of it)  {t_prep * us:8.1f} us CPU a chip   (read, hash, decode, checks, cast, row)")
    print(f"  complete             {t_complete * us:8.1f} us CPU a chip   (softmax, columns)")
    print(f"  table                {t_table * us:8.1f} us CPU a chip   (Arrow + Parquet)")
    print(f"  outside the model    {outside * us:8.1f} us CPU a chip")
    print(f"  model (bare session) {m_wall * us:8.1f} us wall a chip = {1 / m_wall:,.0f} chips/s; "
          f"{m_cpu * us:.1f} us CPU a chip ({m_cpu / m_wall:.2f} cores busy)")
    print(f"ceiling on this machine: model CPU / (model CPU + outside) = {ceiling:.3f} of the bare session "
          f"({ceiling / m_wall:,.0f} chips/s at best)")
    if args.measured is not None:
        print(f"measured (infer_throughput.py): {args.measured:.3f} = {args.measured / ceiling:.3f} of the ceiling")


if __name__ == "__main__":
    main()
