"""What the traceability store hands to readers: plain records, free of SQLAlchemy.

Quality figures, the service and the dashboard read these, so that none of them depends on the
database layer's classes (and tests can build them by hand).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cellsight.types import Verdict


class Disposition(StrEnum):
    """A cell's fate at the end of the line. REVIEW: a person must decide (never shipped as OK)."""

    OK = "OK"
    NG = "NG"
    REVIEW = "REVIEW"


class Reason(StrEnum):
    """Why a verdict is not the model's alone: the line's own findings, recorded with the inspection."""

    BAD_IMAGE = "bad_image"  # unreadable, truncated, wrong size: ERROR
    UNREADABLE_CODE = "unreadable_code"  # no cell ID could be decoded
    DUPLICATE_ID = "duplicate_id"  # the decoded ID was already seen in this run
    ID_MISMATCH = "id_mismatch"  # the code read at this station differs from the cell's ID
    INSPECTION_FAILED = "inspection_failed"  # the detector raised
    UNCERTAIN = "uncertain"  # the score fell in the station's review band just below the NG threshold
    NO_IMAGE = "no_image"  # the source gave no image in time (camera or watched folder)


@dataclass(frozen=True)
class InspectionRecord:
    """One station's inspection of one cell: a row of the store."""

    run_id: int
    sequence: int  # the cell's position in the run, 0-based: the resume point after a crash
    cell_id: str  # the decoded ID; for an unreadable code a placeholder "UNREAD-<run>-<sequence>"
    station: str
    station_index: int  # position of the station in the line, 0-based
    verdict: Verdict
    score: float  # normalised: 0.5 is the threshold; NaN when no score could be made
    defect_class: str | None
    reason: Reason | None
    model_version: str
    model_hash: str
    latency_ms: float
    image_path: str | None
    heatmap_path: str | None
    inspected_at: datetime
    error: str | None = None  # what went wrong, naming the file, when the verdict is ERROR


@dataclass(frozen=True)
class CellRecord:
    """A cell's final disposition in a run, written once all its stations are done."""

    run_id: int
    sequence: int
    cell_id: str
    disposition: Disposition
    failed_station: str | None  # the first station that did not pass it
    reason: Reason | None
    finished_at: datetime
    audit: bool = False  # sampled for an audit: its truth is looked for even though it may be OK


GOOD_CLASS = "good"  # the true class of an image without a defect


class TruthSource(StrEnum):
    """Who says what an image really showed, most trusted first (`TRUST_ORDER`).

    SYNTHETIC: the source rendered it (known by construction). TEARDOWN: the cell was taken apart.
    AUDIT: a sampled cell (usually an OK one) examined by a person. REVIEW: a person's look at a
    flagged image in the review queue (kept in the reviews table; read as truth).
    """

    SYNTHETIC = "synthetic"
    TEARDOWN = "teardown"
    AUDIT = "audit"
    REVIEW = "review"


TRUST_ORDER = (TruthSource.SYNTHETIC, TruthSource.TEARDOWN, TruthSource.AUDIT, TruthSource.REVIEW)


@dataclass(frozen=True)
class TruthRecord:
    """The true class of one inspection (run, sequence, station), from one source."""

    run_id: int
    sequence: int
    station: str
    cell_id: str
    true_class: str  # GOOD_CLASS or a defect class
    source: TruthSource
    recorded_at: datetime
    recorded_by: str | None = None

    @property
    def defective(self) -> bool:
        return self.true_class != GOOD_CLASS
