"""Inspecting an image, reading inspections back, and the review of NG and ERROR calls."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from cellsight.line.recorder import CELL_ID_PATTERN, NotInspectableError
from cellsight.service.deps import Operator, ServiceDep, Viewer
from cellsight.service.routes.common import InspectionId, check_station, refuse
from cellsight.service.schemas import InspectionOut, ReviewIn, ReviewOut
from cellsight.service.state import Service

router = APIRouter(prefix="/v1")


@router.post("/stations/{station}/inspect", response_model=InspectionOut, tags=["inspection"])
async def inspect(
    request: Request, station: str, who: Operator, service: ServiceDep,
    image: Annotated[UploadFile, File(description="the station's image: PNG, JPEG, BMP or TIFF")],
    cell_id: Annotated[str | None, Form(pattern=CELL_ID_PATTERN, description="read from the image if absent")] = None,
) -> InspectionOut:
    """Inspect one image; the inspection is committed to the store before this answers."""
    check_station(service, station)
    form = await request.form()  # already parsed for the parameters: no second read
    for part in ("image", "cell_id"):
        if len(form.getlist(part)) > 1:
            raise refuse(422, f"{len(form.getlist(part))} `{part}` parts: send exactly one", who)
    data = await image.read()
    name = image.filename or "upload"
    try:
        result = await run_in_threadpool(service.recorder.inspect, station, data, name, cell_id or None)
    except NotInspectableError as exc:
        raise refuse(422, str(exc), who) from exc
    service.telemetry.verdicts.labels(station, result.record.verdict.value).inc()
    service.telemetry.inspect_seconds.labels(station).observe(result.record.latency_ms / 1000.0)
    return InspectionOut.of(result.id, result.record)


@router.get("/inspections/{inspection_id}", response_model=InspectionOut, tags=["inspection"])
def inspection(inspection_id: InspectionId, _: Viewer, service: ServiceDep) -> InspectionOut:
    record = service.store.inspection(inspection_id)
    if record is None:
        raise HTTPException(404, f"inspection {inspection_id} not found")
    return InspectionOut.of(inspection_id, record)


def _image(service: Service, inspection_id: int, heatmap: bool) -> FileResponse:
    record = service.store.inspection(inspection_id)
    if record is None:
        raise HTTPException(404, f"inspection {inspection_id} not found")
    path = record.heatmap_path if heatmap else record.image_path
    if path is None or not Path(path).is_file():
        raise HTTPException(404, f"inspection {inspection_id} has no stored {'heat map' if heatmap else 'image'}")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})


@router.get("/inspections/{inspection_id}/image.png", response_class=FileResponse, tags=["inspection"])
def image_png(inspection_id: InspectionId, _: Operator, service: ServiceDep) -> FileResponse:
    return _image(service, inspection_id, heatmap=False)


@router.get("/inspections/{inspection_id}/heatmap.png", response_class=FileResponse, tags=["inspection"])
def heatmap_png(inspection_id: InspectionId, _: Operator, service: ServiceDep) -> FileResponse:
    """The image with the anomaly map blended over it (blue normal, red well above the threshold)."""
    return _image(service, inspection_id, heatmap=True)


@router.get("/gallery", response_model=list[InspectionOut], tags=["inspection"])
def gallery(_: Viewer, service: ServiceDep, station: str | None = None,
            limit: Annotated[int, Query(ge=1, le=500)] = 48) -> list[InspectionOut]:
    """The newest NG and ERROR inspections, newest first."""
    return [InspectionOut.of(i, r) for i, r in service.store.recent(station, limit=limit)]


@router.get("/review-queue", response_model=list[InspectionOut], tags=["review"])
def review_queue(_: Viewer, service: ServiceDep, station: str | None = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[InspectionOut]:
    """NG and ERROR inspections nobody has reviewed yet, oldest first."""
    return [InspectionOut.of(i, r) for i, r in service.store.review_queue(station, limit)]


@router.post("/inspections/{inspection_id}/review", response_model=ReviewOut, tags=["review"])
def review(inspection_id: InspectionId, body: ReviewIn, who: Operator, service: ServiceDep) -> ReviewOut:
    """Record a person's decision; a later review of the same inspection is a new row and the one that counts."""
    record = service.store.inspection(inspection_id)
    if record is None:
        raise refuse(404, f"inspection {inspection_id} not found", who)
    defect_class = body.defect_class or (record.defect_class if body.decision == "confirmed_defect" else None)
    if body.decision == "confirmed_defect" and not defect_class:
        defect_class = "defect"
    if body.decision == "false_call":
        defect_class = None
    saved = service.store.add_review(inspection_id, body.decision, defect_class, body.note, who.name)
    return ReviewOut.of(saved)


@router.get("/inspections/{inspection_id}/reviews", response_model=list[ReviewOut], tags=["review"])
def reviews(inspection_id: InspectionId, _: Viewer, service: ServiceDep) -> list[ReviewOut]:
    return [ReviewOut.of(r) for r in service.store.reviews(inspection_id)]
