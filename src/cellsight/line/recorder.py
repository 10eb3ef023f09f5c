"""One image through a station on request (an HTTP upload, a PLC trigger), committed to the store before
the caller hears the verdict.

The line runtime walks cells in order; here images arrive one at a time from outside, so this writer hands
out sequence numbers itself. It runs in worker threads (never on an event loop). Sequence numbers come from
the database (a per-run counter updated atomically, and a unique claim of each cell ID), and a unique-key
conflict on insert is retried as a duplicate, so several processes or hosts can share one run
(`cellsight serve --workers N`) with no in-process lock.

Cell identity: a cell ID inspected at another station of this run is the same cell (same sequence);
one already inspected at *this* station (any run) is a second cell wearing the same code, recorded as
ERROR with reason DUPLICATE_ID under a new sequence.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from cellsight.line.config import LineConfig, OnNg, SaveImages
from cellsight.line.disposition import decide
from cellsight.line.models import ModelRegistry
from cellsight.line.station import StationOutcome
from cellsight.metrics.overlay import overlay_heatmap
from cellsight.storage.records import CellRecord, InspectionRecord, Reason
from cellsight.storage.service_store import ServiceStore
from cellsight.storage.store import DuplicateRecordError
from cellsight.types import Verdict

ATTEMPTS = 3
CELL_ID_PATTERN = r"^[\x21-\x2e\x30-\x7e]{1,128}$"
"""Printable ASCII without spaces or '/', at most 128 characters: what a DataMatrix cell code holds, and
what GET /v1/cells/{cell_id} can reach. The one rule for IDs from HTTP clients and from the PLC."""


class NotInspectableError(ValueError):
    """An upload that cannot be inspected (not an image, no cell ID): the client's error, 4xx, not recorded.

    A client that sent it hears the refusal and still holds the part. A PLC-triggered acquisition has no
    such client: there the recorder is asked to record the failure as ERROR instead (`record_unreadable`).
    """


@dataclass(frozen=True)
class InspectionResult:
    id: int
    record: InspectionRecord
    shadow: StationOutcome | None


class LineRecorder:
    """The service's writer: one `service` run per app start."""

    def __init__(self, config: LineConfig, store: ServiceStore, registry: ModelRegistry, run_id: int) -> None:
        self.config = config
        self.store = store
        self.registry = registry
        self.run_id = run_id
        self.images_dir = config.output_dir / "images"
        self._last = config.stations[-1].name

    def inspect(
        self,
        station: str,
        data: bytes | None,
        filename: str,
        cell_id: str | None,
        record_unreadable: bool = False,
        source_error: str | None = None,
    ) -> InspectionResult:
        """Inspect and record. `data` None: the camera delivered nothing (`source_error` says why): ERROR."""
        slot = self.registry.slot(station)
        bad_id = None
        if cell_id is not None and not re.fullmatch(CELL_ID_PATTERN, cell_id):
            bad_id = f"cell ID {cell_id[:140]!r} is not a cell code (printable ASCII, no spaces or '/', 1-128)"
            if not record_unreadable:
                raise NotInspectableError(bad_id)
            cell_id = None  # the PLC's ID: recorded as ERROR under a placeholder (or the code read), never OK
        if cell_id is None and not slot.config.read_code and not record_unreadable:
            raise NotInspectableError(f"station {station} does not read cell codes: send the cell_id form field")
        with slot.lock:
            live = slot.live  # a station that reads codes reads them even when the client names the cell
            if data is None:
                outcome = StationOutcome(Verdict.ERROR, math.nan, None, Reason.NO_IMAGE,
                                         source_error or f"{station}: no image", None, 0.0)
            else:
                outcome = live.inspect_bytes(data, filename)
            version, model_hash = live.model_version, live.model_hash
            shadow = slot.shadow
            shadow_outcome, shadow_model = None, ("", "")
            if shadow is not None and outcome.image is not None:
                shadow_outcome = shadow.inspect_image(outcome.image)
                shadow_model = (shadow.model_version, shadow.model_hash)
        if outcome.reason is Reason.BAD_IMAGE and not record_unreadable:
            raise NotInspectableError(outcome.error or f"{filename}: not a readable image")
        if bad_id is not None:
            outcome = replace(outcome, verdict=Verdict.NG if outcome.verdict is Verdict.NG else Verdict.ERROR,
                              reason=Reason.UNREADABLE_CODE, error=f"{station}: {bad_id}")
        if cell_id is not None and outcome.decoded_id is not None and outcome.decoded_id != cell_id:
            mismatch = f"{station}: the image's code reads {outcome.decoded_id}, but it was sent as cell {cell_id}"
            outcome = replace(outcome, verdict=Verdict.NG if outcome.verdict is Verdict.NG else Verdict.ERROR,
                              reason=Reason.ID_MISMATCH, error=mismatch)
        image_path, heatmap_path = self._save_images(station, outcome)
        record = InspectionRecord(
            run_id=self.run_id, sequence=-1, cell_id=cell_id or outcome.decoded_id or "", station=station,
            station_index=slot.index, verdict=outcome.verdict, score=outcome.score,
            defect_class=outcome.defect_class, reason=outcome.reason, model_version=version, model_hash=model_hash,
            latency_ms=outcome.latency_ms, image_path=image_path, heatmap_path=heatmap_path,
            inspected_at=datetime.now(UTC), error=outcome.error,
        )
        inspection_id, record = self._commit(record)
        if shadow_outcome is not None:
            self.store.add_shadow_score(
                inspection_id, shadow_model[0], shadow_model[1], shadow_outcome.verdict.value,
                None if math.isnan(shadow_outcome.score) else shadow_outcome.score, shadow_outcome.defect_class,
            )
        self._finish_cell(record)
        return InspectionResult(inspection_id, record, shadow_outcome)

    def _commit(self, record: InspectionRecord) -> tuple[int, InspectionRecord]:
        """Identify and insert; a unique-key conflict means another request (thread, process or host)
        recorded this cell at this station at the same moment: identify again (now a duplicate) and retry."""
        for _ in range(ATTEMPTS):
            identified = self._identify(record)
            try:
                return self.store.trace.record_inspection(identified), identified
            except DuplicateRecordError:
                continue
        raise DuplicateRecordError(f"{record.station}: cell {record.cell_id} could not be recorded")

    def _identify(self, record: InspectionRecord) -> InspectionRecord:
        """Give the record its sequence, and the duplicate-ID verdict when the code was seen before."""
        if not record.cell_id:  # no ID from the client nor the image: never OK, a person must trace it
            sequence = self._take_sequence()
            if record.verdict is Verdict.OK:
                record = replace(record, verdict=Verdict.ERROR, reason=Reason.UNREADABLE_CODE,
                                 error=f"{record.station}: no cell ID sent and none read from the image")
            return replace(record, sequence=sequence, cell_id=f"UNREAD-{self.run_id}-{sequence}")
        if self.store.inspected_at_station(record.cell_id, record.station):
            return replace(
                record, sequence=self._take_sequence(), verdict=Verdict.ERROR, reason=Reason.DUPLICATE_ID,
                defect_class=None,
                error=f"{record.station}: cell ID {record.cell_id} was already inspected here: a duplicate code",
            )
        found = self.store.cell_sequence(self.run_id, record.cell_id)  # recorded before counters existed
        sequence = found[0] if found is not None else self.store.claim_cell(self.run_id, record.cell_id)
        return replace(record, sequence=sequence)

    def _take_sequence(self) -> int:
        return self.store.take_sequence(self.run_id)

    def _finish_cell(self, record: InspectionRecord) -> None:
        """Decide the cell by the line's one rule once it is finished, and decide it again on every later
        inspection: its last station, an NG or ERROR on a rejecting line, or a cell already decided.

        Images arrive in any order here, so a cell seen only at the last station is REVIEW (stations
        missing), never OK, and a later NG at an earlier station overrides an OK or REVIEW already written.
        """
        rejected = record.verdict is not Verdict.OK and self.config.on_ng is OnNg.REJECT
        decided = self.store.trace.cell(self.run_id, record.sequence) is not None
        if not (rejected or decided or record.station == self._last):
            return
        seen = self.store.trace.inspections(run_id=self.run_id, sequence=record.sequence)
        decision = decide(seen, self.config.station_names)
        self.store.trace.save_cell(CellRecord(self.run_id, record.sequence, record.cell_id, decision.disposition,
                                              decision.station, decision.reason, datetime.now(UTC)))

    def _save_images(self, station: str, outcome: StationOutcome) -> tuple[str | None, str | None]:
        policy = self.config.save_images
        if outcome.image is None or policy is SaveImages.NONE:
            return None, None
        if policy is SaveImages.NOT_OK and outcome.verdict is Verdict.OK:
            return None, None
        folder = self.images_dir / station
        folder.mkdir(parents=True, exist_ok=True)
        stem = uuid.uuid4().hex
        image_path = folder / f"{stem}.png"
        _write_png(image_path, outcome.image)
        heatmap_path = None
        if outcome.anomaly_map is not None:
            heatmap_path = folder / f"{stem}_heatmap.png"
            _write_png(heatmap_path, overlay_heatmap(outcome.image, outcome.anomaly_map))
        return str(image_path), None if heatmap_path is None else str(heatmap_path)


def _write_png(path: Path, image: np.ndarray) -> None:
    """PNG as decoded (8- or 16-bit, gray or RGB), so the exported training set keeps the camera's pixels."""
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"{path}: could not write the image")
