"""The line runtime: cells arrive at the takt, pass through the stations in order, and every verdict is
committed to the traceability store before it counts anywhere else.

Crash safety: each inspection is its own transaction, written after its image files are in place, and a
cell's final record is written after its last station. A run killed at any instant (even SIGKILL) holds
only whole rows; starting the same line again resumes at the first cell without a final record and
skips the stations that cell already passed.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from cellsight.inference.backends import open_backend
from cellsight.inference.seam import InferenceBackend
from cellsight.line.config import LineConfig, OnNg, SaveImages, StationConfig, check_output_dir
from cellsight.line.disposition import decide
from cellsight.line.sources import ImageSource, SourceExhaustedError, SourceImage, SyntheticImages, open_source
from cellsight.line.station import StageTimes, StationInspector, StationOutcome, no_image
from cellsight.metrics.overlay import overlay_heatmap
from cellsight.storage.records import CellRecord, Disposition, InspectionRecord, Reason, TruthSource
from cellsight.storage.store import TraceStore
from cellsight.types import Verdict

log = logging.getLogger("cellsight.line")


@dataclass
class LineProgress:
    """Live counts for the progress bar and for anyone watching the run."""

    cells: int = 0
    dispositions: Counter[Disposition] = field(default_factory=Counter)
    late_cells: int = 0  # cells whose inspection took longer than the takt allows

    @property
    def yield_fraction(self) -> float:
        return self.dispositions[Disposition.OK] / self.cells if self.cells else float("nan")


@dataclass(frozen=True)
class LineSummary:
    run_id: int
    resumed_from: int  # the sequence this session started at (0 for a new run)
    progress: LineProgress
    elapsed_s: float
    times: StageTimes
    stopped_early: str | None  # why the run ended before the requested number of cells
    latencies_ms: list[float] = field(default_factory=list)  # per cell: arrival at the line -> record committed

    @property
    def cells_per_minute(self) -> float:
        return self.progress.cells / self.elapsed_s * 60.0 if self.elapsed_s > 0 else float("nan")


@dataclass
class _Station:
    config: StationConfig
    index: int
    inspector: StationInspector
    source: ImageSource


class LineRuntime:
    """Runs one line configuration against one store."""

    def __init__(
        self, config: LineConfig, config_sha256: str, store: TraceStore, backend: InferenceBackend | None = None
    ) -> None:
        """`backend`: where the stations' models run; None opens the configuration's (closed by `close`)."""
        check_output_dir(config)
        self.config = config
        self.config_sha256 = config_sha256
        self.store = store
        self._owns_backend = backend is None
        self.backend = backend or open_backend(config.inference, config.line)
        try:
            self.stations = [
                _Station(s, i, StationInspector(s.name, s.model, s.threshold, s.read_code, s.images, self.backend),
                         open_source(s.source))
                for i, s in enumerate(config.stations)
            ]
            for station in self.stations:
                _warm_up(station.inspector)
        except BaseException:
            self.close()
            raise
        self.times = StageTimes()
        self._truths: dict[tuple[int, int], dict[str, str]] = {}  # per cell: station -> source truth

    def close(self) -> None:
        """Release the inference backend when this runtime opened it (a Ray cluster started here stops)."""
        if self._owns_backend:
            self.backend.close()

    def open_run(self, new_run: bool = False) -> tuple[int, int]:
        """(run id, first sequence): the unfinished run of this line and configuration, or a new one."""
        latest = self.store.latest_run(self.config.line)
        if (
            not new_run
            and latest is not None
            and latest.status != "finished"
            and latest.config_sha256 == self.config_sha256
        ):
            self.store.set_run_status(latest.id, "running")
            self._name_cells(latest.id)
            return latest.id, self.store.resume_point(latest.id).sequence
        run_id = self.store.start_run(self.config.line, self.config_sha256, self.config.station_names)
        self._name_cells(run_id)
        return run_id, 0

    def _name_cells(self, run_id: int) -> None:
        day = self.store.run(run_id).started_at.date()
        for station in self.stations:
            if isinstance(station.source, SyntheticImages):
                station.source.for_run(run_id, day)

    def run(
        self,
        cells: int | None = None,
        new_run: bool = False,
        on_cell: Callable[[LineProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> LineSummary:
        """Run until `cells` cells are finished in this run (counting earlier sessions) or a source ends."""
        target = cells or self.config.cells
        run_id, first = self.open_run(new_run)
        progress = LineProgress()
        interval = 60.0 / self.config.takt_per_minute if self.config.takt_per_minute else 0.0
        start = time.perf_counter()
        if self.config.pipelined:
            from cellsight.line.pipeline import run_pipelined

            why, waits = run_pipelined(self, run_id, first, target, progress, on_cell, should_stop)
            return self._close_run(run_id, first, progress, start, why, waits)
        stopped: str | None = None
        latencies: list[float] = []
        sequence = first
        while target is None or sequence < target:
            if should_stop is not None and should_stop():
                stopped = "stopped by the operator"
                break
            arrival = start + (sequence - first) * interval
            wait = arrival - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            elif interval and wait < -interval:
                progress.late_cells += 1
            arrived = arrival if interval else time.perf_counter()  # a late line keeps the cell waiting
            try:
                disposition = self._process_cell(run_id, sequence, resuming=sequence == first)
            except SourceExhaustedError as exc:
                stopped = str(exc)
                break
            latencies.append((time.perf_counter() - arrived) * 1000.0)
            progress.cells += 1
            progress.dispositions[disposition] += 1
            if on_cell is not None:
                on_cell(progress)
            sequence += 1
        return self._close_run(run_id, first, progress, start, stopped, latencies)

    def _close_run(
        self, run_id: int, first: int, progress: LineProgress, start: float, stopped: str | None,
        latencies: list[float],
    ) -> LineSummary:
        finished = stopped is None or "operator" not in stopped
        self.store.set_run_status(run_id, "finished" if finished else "stopped")
        return LineSummary(run_id, first, progress, time.perf_counter() - start, self.times, stopped, latencies)

    def _process_cell(self, run_id: int, sequence: int, resuming: bool) -> Disposition:
        done = {r.station: r for r in self.store.inspections(run_id, sequence=sequence)} if resuming else {}
        records = [done[s.config.name] for s in self.stations if s.config.name in done]
        cell_id = next((r.cell_id for r in records if not r.cell_id.startswith("UNREAD-")), None)
        for station in self.stations:
            if station.config.name in done:
                continue
            if self.config.on_ng is OnNg.REJECT and any(not r.verdict.passes for r in records):
                break
            record = self._inspect(run_id, sequence, station, cell_id, first=not records)
            if cell_id is None and not record.cell_id.startswith("UNREAD-"):
                cell_id = record.cell_id
            records.append(record)
        if not records:
            raise SourceExhaustedError(f"no station had an image for cell {sequence}")
        return self.finish_cell(run_id, sequence, cell_id, records)

    def _inspect(self, run_id: int, sequence: int, station: _Station, cell_id: str | None, first: bool
                 ) -> InspectionRecord:
        image = self.acquire(station, sequence, first, self.times)
        if image.data is None:
            outcome = no_image(image)
        else:
            outcome = station.inspector.inspect_bytes(image.data, image.name, self.times)
        return self.record(run_id, sequence, station, cell_id, image, outcome, self.times)

    def acquire(self, station: _Station, sequence: int, first: bool, times: StageTimes) -> SourceImage:
        """The station's image of cell `sequence`; SourceExhaustedError only for a cell's first station."""
        source_start = time.perf_counter()
        try:
            image = station.source.image_for(sequence)
        except SourceExhaustedError:
            if first:
                raise
            image = SourceImage(None, f"cell-{sequence}", error=f"{station.config.name}: source ran dry")
        times.source_ms += (time.perf_counter() - source_start) * 1000.0
        return image

    def record(
        self, run_id: int, sequence: int, station: _Station, cell_id: str | None, image: SourceImage,
        outcome: StationOutcome, times: StageTimes,
    ) -> InspectionRecord:
        """Add the line's checks (duplicate and mismatched IDs) to a station's outcome, save, commit."""
        verdict, reason, error = outcome.verdict, outcome.reason, outcome.error
        record_id = cell_id
        if outcome.decoded_id is not None:
            if cell_id is None:
                record_id = outcome.decoded_id
                if self.store.cell_id_seen(record_id, run_id, sequence):
                    verdict, reason = _not_ok(verdict), Reason.DUPLICATE_ID
                    error = f"{station.config.name}: cell ID {record_id} was already recorded for another cell"
            elif outcome.decoded_id != cell_id:
                verdict, reason = _not_ok(verdict), Reason.ID_MISMATCH
                error = f"{station.config.name}: read {outcome.decoded_id}, but this cell is {cell_id}"
        elif record_id is None and not station.inspector.read_code and image.path is not None:
            record_id = image.path.stem  # a source without codes: the file name is the ID
        record_id = record_id or f"UNREAD-{run_id}-{sequence}"
        save_start = time.perf_counter()
        image_path, heatmap_path = self._save_images(run_id, sequence, station, image, outcome, verdict)
        times.images_ms += (time.perf_counter() - save_start) * 1000.0
        record = InspectionRecord(
            run_id=run_id, sequence=sequence, cell_id=record_id, station=station.config.name,
            station_index=station.index, verdict=verdict, score=outcome.score,
            defect_class=outcome.defect_class if verdict is Verdict.NG else None, reason=reason,
            model_version=station.inspector.model_version, model_hash=station.inspector.model_hash,
            latency_ms=outcome.latency_ms, image_path=image_path, heatmap_path=heatmap_path,
            inspected_at=datetime.now(UTC), error=error,
        )
        storage_start = time.perf_counter()
        self.store.record_inspection(record, truth=image.truth)
        if image.truth is not None:  # what the audit of this cell will find (finish_cell)
            self._truths.setdefault((run_id, sequence), {})[station.config.name] = image.truth
        times.storage_ms += (time.perf_counter() - storage_start) * 1000.0
        return record

    def finish_cell(
        self, run_id: int, sequence: int, cell_id: str | None, records: list[InspectionRecord],
        times: StageTimes | None = None,
    ) -> Disposition:
        """The cell's disposition from its inspections (the line's one rule), committed after its last station."""
        decision = decide(records, [s.config.name for s in self.stations])
        audit = self._audited(run_id, sequence, decision.disposition)
        storage_start = time.perf_counter()
        self.store.record_cell(
            CellRecord(
                run_id=run_id, sequence=sequence, cell_id=cell_id or f"UNREAD-{run_id}-{sequence}",
                disposition=decision.disposition, failed_station=decision.station, reason=decision.reason,
                finished_at=datetime.now(UTC), audit=audit,
            )
        )
        truths = self._truths.pop((run_id, sequence), {})
        if audit:  # a synthetic source knows what the audit will find; a real line's audit reports later
            for record in records:
                if record.station in truths:
                    self.store.record_truth(run_id, sequence, record.station, truths[record.station],
                                            TruthSource.AUDIT, recorded_by="audit (synthetic source)")
        (times or self.times).storage_ms += (time.perf_counter() - storage_start) * 1000.0
        return decision.disposition

    def _audited(self, run_id: int, sequence: int, disposition: Disposition) -> bool:
        """Whether a cell is drawn for the audit: seeded per (run, sequence), so a resumed run agrees."""
        policy = self.config.audit
        if policy is None:
            return False
        share = policy.share if disposition is Disposition.OK else policy.rejected_share
        return bool(np.random.default_rng([policy.seed, run_id, sequence, 0xA0D17]).random() < share)

    def _save_images(
        self, run_id: int, sequence: int, station: _Station, image: SourceImage, outcome: StationOutcome,
        verdict: Verdict,
    ) -> tuple[str | None, str | None]:
        policy = self.config.save_images
        if policy is SaveImages.NONE or (policy is SaveImages.NOT_OK and verdict is Verdict.OK):
            return (str(image.path) if image.path else None), None
        folder = self.config.output_dir / "images" / f"run-{run_id}" / station.config.name
        stem = f"{sequence:07d}"
        image_path: str | None = str(image.path) if image.path else None
        if image.path is None and image.data is not None:
            suffix = Path(image.name).suffix or ".bin"
            image_path = str(_write_atomic(folder / f"{stem}{suffix}", image.data))
        heatmap_path = None
        if outcome.image is not None and outcome.anomaly_map is not None:
            overlay = overlay_heatmap(outcome.image, outcome.anomaly_map)
            ok, png = cv2.imencode(".png", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
            if ok:
                heatmap_path = str(_write_atomic(folder / f"{stem}-heatmap.png", png.tobytes()))
        return image_path, heatmap_path


def _not_ok(verdict: Verdict) -> Verdict:
    return Verdict.ERROR if verdict is Verdict.OK else verdict


def _write_atomic(path: Path, data: bytes) -> Path:
    """Write-then-rename, so a stored path never points at half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with open(partial, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)
    return path


def _warm_up(inspector: StationInspector) -> None:
    """Build what the model makes lazily (sessions, graphs, replicas) before the first cell arrives, so the
    first cells are not seconds late and the line does not start behind its takt. A model that cannot
    score here is left to fail on the cells, where each failure is recorded as ERROR."""
    try:
        inspector.warm_up()
    except Exception as exc:  # recorded per cell by the inspection itself
        log.warning("station %s: warm-up failed (%s: %s); its cells will show the error", inspector.name,
                    type(exc).__name__, exc)
