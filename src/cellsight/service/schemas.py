"""The API's JSON shapes (pydantic), which also make the published OpenAPI spec precise."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from cellsight.storage.records import InspectionRecord
from cellsight.storage.service_store import Deployment, Review


class InspectionOut(BaseModel):
    id: int
    run_id: int
    sequence: int
    cell_id: str
    station: str
    verdict: Literal["OK", "NG", "ERROR"]
    score: float | None = Field(description="normalised: 0.5 is the calibrated threshold; null when none")
    defect_class: str | None
    reason: str | None
    error: str | None
    model_version: str
    model_sha256: str
    latency_ms: float
    inspected_at: datetime
    image_url: str | None
    heatmap_url: str | None

    @classmethod
    def of(cls, inspection_id: int, r: InspectionRecord) -> InspectionOut:
        base = f"/v1/inspections/{inspection_id}"
        return cls(
            id=inspection_id, run_id=r.run_id, sequence=r.sequence, cell_id=r.cell_id, station=r.station,
            verdict=r.verdict.value, score=None if math.isnan(r.score) else r.score, defect_class=r.defect_class,
            reason=None if r.reason is None else r.reason.value, error=r.error, model_version=r.model_version,
            model_sha256=r.model_hash, latency_ms=r.latency_ms, inspected_at=r.inspected_at,
            image_url=f"{base}/image.png" if r.image_path else None,
            heatmap_url=f"{base}/heatmap.png" if r.heatmap_path else None,
        )


class ReviewIn(BaseModel):
    decision: Literal["confirmed_defect", "false_call"]
    defect_class: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_ -]*$")
    note: str | None = Field(None, max_length=2000)


class ReviewOut(BaseModel):
    id: int
    inspection_id: int
    decision: str
    defect_class: str | None
    note: str | None
    reviewer: str
    reviewed_at: datetime

    @classmethod
    def of(cls, review: Review) -> ReviewOut:
        return cls(**review.__dict__)


class DeploymentOut(BaseModel):
    id: int
    station: str
    kind: str
    version: str
    model_sha256: str
    path: str
    created_by: str
    created_at: datetime
    ended_at: datetime | None

    @classmethod
    def of(cls, deployment: Deployment) -> DeploymentOut:
        return cls(**deployment.__dict__)


class StationModelsOut(BaseModel):
    station: str
    live: DeploymentOut | None
    shadow: DeploymentOut | None
    history: list[DeploymentOut]
    shadow_scored: int
    shadow_disagreements: int


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    role: Literal["viewer", "operator", "admin"]


class TokenOut(BaseModel):
    name: str
    role: str
    token: str = Field(description="shown once; only its SHA-256 is stored")


class CellOut(BaseModel):
    cell_id: str
    inspections: list[InspectionOut]
    dispositions: list[dict[str, Any]]


class StationStatsOut(BaseModel):
    station: str
    run_id: int
    inspections: int
    verdicts: dict[str, int]
    fpy: float | None
    fpy_interval: tuple[float, float] | None
    mean_latency_ms: float | None
    p95_latency_ms: float | None
    live_model: str
