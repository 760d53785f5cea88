"""The local engine: reading overlapped with the model, in this process.

A pool of reader threads decodes chip blocks and scene chunks (`prepare`), a batcher thread
assembles fixed-size batches from them into a bounded queue, the calling thread hands
batches to the model (on the CPU, a few batches at once, each on its share of the cores: see
`default_streams`), and a writer thread hands finished units to the runner. Decoding
(OpenCV, PIL, GDAL) and ONNX Runtime release the GIL, so with decode cheaper than inference
the model never waits for I/O.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from inference.engine import Engine, OnUnit
from inference.plan import Plan, Unit
from inference.predict import Pending, ReadOptions, ReadSink, RowCompleter, prepare
from inference.scene_reads import close_open_scenes
from inference.session import Classifier


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of one unit's items inside a batch: ``pending.pixels[start: start + count]``
    sit at ``batch[offset: offset + count]``."""

    pending: Pending
    start: int
    count: int
    offset: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Pixels for one model call, and which units' items they are."""

    pixels: np.ndarray
    segments: tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class UnitWithoutModel:
    """A unit with nothing to classify (all its items are errors or nodata)."""

    pending: Pending


@dataclass(frozen=True, slots=True)
class ReadFailure:
    """The batcher itself failed (a bug, not a bad input: those become rows)."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class EndOfUnits:
    """Every unit has been handed over."""


QueueItem = Batch | UnitWithoutModel | ReadFailure | EndOfUnits


class Batcher(threading.Thread):
    """Reads units with a thread pool and feeds fixed-size `Batch`es into a bounded queue.

    Queue items are `QueueItem`s; the last one is always `EndOfUnits`.
    """

    def __init__(self, units: Iterable[Unit], plan: Plan, read_opts: ReadOptions,
                 workers: int, batch_size: int, prefetch: int, sink: ReadSink | None = None):
        super().__init__(name="vision-batcher", daemon=True)
        self.units: Iterator[Unit] = iter(units)
        self.plan = plan
        self.read_opts = read_opts
        self.workers = workers
        self.batch_size = batch_size
        self.sink = sink
        self.queue: queue.Queue[QueueItem] = queue.Queue(maxsize=max(1, prefetch))
        self.stop = threading.Event()

    def _put(self, item: QueueItem) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # hand any failure to the consumer thread
            self._put(ReadFailure(exc))
        finally:
            self._put(EndOfUnits())

    def _run(self) -> None:
        bs = self.batch_size
        inflight: deque[Future[Pending]] = deque()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="vision-read") as pool:

            def fill() -> None:
                # Bounded read-ahead: memory stays at a few units whatever the job size.
                while len(inflight) < 2 * self.workers:
                    unit = next(self.units, None)
                    if unit is None:
                        return
                    inflight.append(pool.submit(prepare, unit, self.plan, self.read_opts,
                                                self.sink))

            fill()
            buf: np.ndarray | None = None
            segs: list[Segment] = []
            n = 0
            while inflight:
                pending = inflight.popleft().result()
                fill()
                if self.stop.is_set():
                    return
                if pending.pixels is None:
                    if not self._put(UnitWithoutModel(pending)):
                        return
                    continue
                px = pending.pixels
                start = 0
                while start < len(px):
                    if n == 0 and len(px) - start >= bs:
                        # A whole batch from one unit: a view, no copy.
                        if not self._put(Batch(px[start: start + bs],
                                               (Segment(pending, start, bs, 0),))):
                            return
                        start += bs
                        continue
                    if buf is None:
                        buf = np.empty((bs, *px.shape[1:]), dtype=px.dtype)
                    take = min(bs - n, len(px) - start)
                    buf[n: n + take] = px[start: start + take]
                    segs.append(Segment(pending, start, take, n))
                    n += take
                    start += take
                    if n == bs:
                        if not self._put(Batch(buf, tuple(segs))):
                            return
                        buf, segs, n = None, [], 0
            if n:
                assert buf is not None
                self._put(Batch(buf[:n], tuple(segs)))


class LocalEngine(Engine):
    """Reader threads, a batcher and model streams in this process (see the module doc)."""

    _session: Future[Classifier] | None = None

    def start(self) -> None:
        """Build (and optimise) the session in the background while the inputs are planned."""
        s = self.setup
        loader = ThreadPoolExecutor(1, thread_name_prefix="vision-session")
        self._session = loader.submit(Classifier, s.model_path, s.session,
                                      (s.model.num_bands, *s.model.input_size),
                                      s.model.input_dtype)
        loader.shutdown(wait=False)

    def run(self, plan: Plan, units: Sequence[Unit], on_unit: OnUnit,
            sink: ReadSink | None = None) -> None:
        if not units:
            return
        if self._session is None:
            self.start()
        assert self._session is not None
        s = self.setup
        completer = RowCompleter(s.model)
        batcher = Batcher(units, plan, s.read, s.workers or 1, s.session.batch_size, s.prefetch,
                          sink)
        batcher.start()  # the first units are read while the session is still being built
        clf = self._session.result()
        # Rows and part files are written off the model's thread: the session never waits on
        # pyarrow or the disk. One writer keeps the work ordered and `on_unit` single-threaded.
        writer = ThreadPoolExecutor(1, thread_name_prefix="vision-write")
        writes: deque[Future[None]] = deque()

        def write(p: Pending) -> None:
            rows = completer.complete(p)
            on_unit(p.unit, rows, p.n_classified)

        def finish(p: Pending) -> None:
            p.pixels = None  # classified: the rows are all the writer needs
            writes.append(writer.submit(write, p))
            while writes and writes[0].done():
                writes.popleft().result()  # a failed write stops the job here

        # Up to `streams` batches run at once (ONNX Runtime sessions are safe to call from
        # several threads); their logits are taken back in submission order.
        streams = s.session.streams
        model_pool = ThreadPoolExecutor(streams, thread_name_prefix="vision-model")
        running: deque[tuple[Future[np.ndarray], tuple[Segment, ...]]] = deque()

        def collect(wait: bool) -> None:
            """Take back finished batches in order; with ``wait``, at least the oldest."""
            while running and (wait or running[0][0].done()):
                fut, segs = running.popleft()
                logits = fut.result()
                for seg in segs:
                    completer.add_logits(seg.pending, seg.start,
                                         logits[seg.offset: seg.offset + seg.count])
                    if seg.pending.ready:
                        finish(seg.pending)
                wait = False

        try:
            while True:
                item = batcher.queue.get()
                if isinstance(item, Batch):
                    running.append((model_pool.submit(clf, item.pixels), item.segments))
                    collect(wait=len(running) >= streams)
                elif isinstance(item, UnitWithoutModel):
                    finish(item.pending)
                elif isinstance(item, ReadFailure):
                    raise item.error
                else:
                    break
            while running:
                collect(wait=True)
        finally:
            batcher.stop.set()
            batcher.join(timeout=30)
            model_pool.shutdown(wait=True)
            writer.shutdown(wait=True)  # units already classified are still recorded
            close_open_scenes()
        for f in writes:
            f.result()
