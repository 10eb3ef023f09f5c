"""The pipelined line: every station works at the same time (cell n+1 at station 1 while cell n is at
station 2), each in its own thread, joined by bounded queues.

Why it decides exactly as the sequential runtime does: each station takes cells in sequence order and
hands them on in that order, a cell reaches station k only after station k-1 committed its verdict,
and every step (image, decode, code, model, line checks, commit) is the runtime's own. What changes is
only when things happen: a station takes every cell already waiting for it (up to the inference
settings' `max_batch_size`) as one model batch through the seam, which is where the speed comes from
(PatchCore at batch 16 costs far less per image than at batch 1, and Ray Serve batches across stations'
requests). A cell's record is written after its last station, by the last stage, in sequence order.

In-process models share the machine's cores: each already uses every thread it is given, so stations
scoring at the same time only thrash (measured on 2 cores: 0.56x the sequential line). A gate lets as
many local model batches run at once as the cores hold (cores // threads per model); decoding, code
reading and commits of the other stations overlap them. Ray replicas have their own CPUs: no gate.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cellsight.features.threads import cpu_threads, gpu_workers
from cellsight.line.config import LineConfig, OnNg, StationConfig
from cellsight.line.sources import SourceExhaustedError, SourceImage
from cellsight.line.station import Prepared, StageTimes, StationInspector, StationOutcome, no_image
from cellsight.storage.records import Disposition, InspectionRecord
from cellsight.storage.store import TraceStore

_POLL_S = 0.1


class _Station(Protocol):
    config: StationConfig
    inspector: StationInspector


class LineProgress(Protocol):
    cells: int
    dispositions: Counter[Disposition]
    late_cells: int


class LineRuntime(Protocol):
    """What the pipeline needs of `cellsight.line.runtime.LineRuntime` (which calls it: no import cycle)."""

    config: LineConfig
    store: TraceStore
    times: StageTimes

    @property
    def stations(self) -> Sequence[_Station]: ...

    def acquire(self, station: Any, sequence: int, first: bool, times: StageTimes) -> SourceImage: ...

    def record(self, run_id: int, sequence: int, station: Any, cell_id: str | None, image: SourceImage,
               outcome: StationOutcome, times: StageTimes) -> InspectionRecord: ...

    def finish_cell(self, run_id: int, sequence: int, cell_id: str | None, records: list[InspectionRecord],
                    times: StageTimes | None = None) -> Disposition: ...


@dataclass
class _Cell:
    sequence: int
    arrived: float
    done: set[str]
    records: list[InspectionRecord]
    cell_id: str | None
    exhausted: str | None = None


@dataclass
class _Shared:
    abort: threading.Event = field(default_factory=threading.Event)
    error: list[BaseException] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    compute: threading.Semaphore | None = None  # local model batches at once (None: no limit, e.g. Ray)


_END = None


def run_pipelined(
    runtime: LineRuntime, run_id: int, first: int, target: int | None, progress: LineProgress,
    on_cell: Callable[[Any], None] | None, should_stop: Callable[[], bool] | None,
) -> tuple[str | None, list[float]]:
    """Feed cells at the takt into the first station's queue; returns (why it stopped early, latencies)."""
    depth = max(2, runtime.config.inference.max_batch_size)
    queues: list[queue.Queue[_Cell | None]] = [queue.Queue(maxsize=depth) for _ in range(len(runtime.stations) + 1)]
    shared = _Shared(compute=compute_gate(runtime.config))
    stage_times = [StageTimes() for _ in runtime.stations]
    threads = [
        threading.Thread(target=_guard, args=(shared, queues[i + 1], _stage, runtime, run_id, station,
                                               queues[i], queues[i + 1], stage_times[i], shared),
                         name=f"station-{station.config.name}", daemon=True)
        for i, station in enumerate(runtime.stations)
    ]
    finisher = threading.Thread(target=_guard, args=(shared, None, _finish, runtime, run_id, queues[-1], progress,
                                                      on_cell, shared), name="finisher", daemon=True)
    for thread in [*threads, finisher]:
        thread.start()
    interval = 60.0 / runtime.config.takt_per_minute if runtime.config.takt_per_minute else 0.0
    start = time.perf_counter()
    sequence = first
    operator = None
    while (target is None or sequence < target) and not shared.abort.is_set():
        if should_stop is not None and should_stop():
            operator = "stopped by the operator"
            break
        arrival = start + (sequence - first) * interval
        wait = arrival - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        elif interval and wait < -interval:
            progress.late_cells += 1
        done = runtime.store.inspections(run_id, sequence=sequence) if sequence == first else []
        cell = _Cell(sequence, arrival if interval else time.perf_counter(), {r.station for r in done},
                     sorted(done, key=lambda r: r.station_index), None)
        cell.cell_id = next((r.cell_id for r in cell.records if not r.cell_id.startswith("UNREAD-")), None)
        if not _put(queues[0], cell, shared):
            break
        sequence += 1
    _put(queues[0], _END, shared)
    for thread in [*threads, finisher]:
        thread.join()
    for times in stage_times:
        for key, value in times.as_dict().items():
            setattr(runtime.times, key, getattr(runtime.times, key) + value)
    if shared.error:
        raise shared.error[0]
    return operator or (shared.stopped[0] if shared.stopped else None), shared.latencies


def _guard(shared: _Shared, downstream: queue.Queue[_Cell | None] | None, body: Callable[..., None],
           *args: object) -> None:
    """Run a stage; on an unexpected error stop the whole line (the caller re-raises it)."""
    try:
        body(*args)
    except BaseException as exc:
        shared.error.append(exc)
        shared.abort.set()
        if downstream is not None:
            _put(downstream, _END, shared, force=True)


def _put(target: queue.Queue[_Cell | None], item: _Cell | None, shared: _Shared, force: bool = False) -> bool:
    while True:
        if shared.abort.is_set() and not force:
            return False
        try:
            target.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            if force:
                return False


def _take(source: queue.Queue[_Cell | None], most: int, shared: _Shared) -> list[_Cell | None]:
    """Block for one cell, then take what is already waiting, up to `most` (the dynamic batch)."""
    while True:
        if shared.abort.is_set():
            return [_END]
        try:
            batch = [source.get(timeout=_POLL_S)]
            break
        except queue.Empty:
            continue
    while len(batch) < most and batch[-1] is not _END:
        try:
            batch.append(source.get_nowait())
        except queue.Empty:
            break
    return batch


def _stage(runtime: LineRuntime, run_id: int, station: _Station, inbox: queue.Queue[_Cell | None],
           outbox: queue.Queue[_Cell | None], times: StageTimes, shared: _Shared) -> None:
    most = runtime.config.inference.max_batch_size
    name = station.config.name
    while True:
        batch = _take(inbox, most, shared)
        ending = batch[-1] is _END
        cells = [c for c in batch if c is not None]
        work: list[tuple[_Cell, SourceImage]] = []
        for cell in cells:
            if cell.exhausted or name in cell.done:
                continue
            if runtime.config.on_ng is OnNg.REJECT and any(not r.verdict.passes for r in cell.records):
                continue
            try:
                work.append((cell, runtime.acquire(station, cell.sequence, not cell.records, times)))
            except SourceExhaustedError as exc:
                cell.exhausted = str(exc)
        outcomes = _inspect(station, [image for _, image in work], times, shared.compute)
        for (cell, image), outcome in zip(work, outcomes, strict=True):
            record = runtime.record(run_id, cell.sequence, station, cell.cell_id, image, outcome, times)
            if cell.cell_id is None and not record.cell_id.startswith("UNREAD-"):
                cell.cell_id = record.cell_id
            cell.records.append(record)
        for cell in cells:
            if not _put(outbox, cell, shared):
                return
        if ending:
            _put(outbox, _END, shared)
            return


def compute_gate(config: LineConfig) -> threading.Semaphore | None:
    """How many in-process model batches may run at once: the cores over each model's threads."""
    if config.inference.backend != "local":
        return None
    return threading.Semaphore(max(1, gpu_workers() // cpu_threads()))


def _inspect(station: _Station, images: list[SourceImage], times: StageTimes,
             gate: threading.Semaphore | None) -> list[StationOutcome]:
    """One model batch for every image that arrived; missing images are ERROR (as the runtime's)."""
    inspector = station.inspector
    prepared: list[Prepared | StationOutcome] = [
        no_image(image) if image.data is None else inspector.prepare(image.data, image.name, times)
        for image in images
    ]
    ready = [p for p in prepared if isinstance(p, Prepared)]
    if gate is None:
        finished = iter(inspector.finish(ready, times))
    else:
        with gate:
            finished = iter(inspector.finish(ready, times))
    return [next(finished) if isinstance(p, Prepared) else p for p in prepared]


def _finish(runtime: LineRuntime, run_id: int, inbox: queue.Queue[_Cell | None], progress: LineProgress,
            on_cell: Callable[[Any], None] | None, shared: _Shared) -> None:
    times = runtime.times
    while True:
        for cell in _take(inbox, 64, shared):
            if cell is None:
                return
            if shared.stopped:
                continue  # a source ran dry at an earlier cell: the sequential line stops there too
            if cell.exhausted or not cell.records:
                shared.stopped.append(cell.exhausted or f"no station had an image for cell {cell.sequence}")
                shared.abort.set()
                return
            disposition = runtime.finish_cell(run_id, cell.sequence, cell.cell_id, cell.records, times)
            shared.latencies.append((time.perf_counter() - cell.arrived) * 1000.0)
            progress.cells += 1
            progress.dispositions[disposition] += 1
            if on_cell is not None:
                on_cell(progress)
