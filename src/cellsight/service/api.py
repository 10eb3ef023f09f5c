"""The /v1 JSON API. Every route names its role through `require`; CPU work runs in worker threads."""

from __future__ import annotations

import logging
import math
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from cellsight.line.quality import genealogy_json, line_quality, station_yields
from cellsight.line.recorder import NotInspectableError
from cellsight.modelfile import ModelFileError
from cellsight.service.auth import Principal, Role, create_token, require
from cellsight.service.schemas import (
    CellOut,
    DeploymentOut,
    InspectionOut,
    ReviewIn,
    ReviewOut,
    StationModelsOut,
    StationStatsOut,
    TokenIn,
    TokenOut,
)
from cellsight.service.state import Service, get_service

log = logging.getLogger("cellsight.service")
router = APIRouter(prefix="/v1")

ServiceDep = Annotated[Service, Depends(get_service)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
_CELL_ID = r"^[\x21-\x7e]{1,128}$"  # printable ASCII without spaces: what a DataMatrix cell code holds


def _station(service: Service, station: str) -> None:
    if station not in service.registry.slots:
        raise HTTPException(404, f"unknown station {station!r}; stations: {', '.join(service.registry.slots)}")


def _bad(status: int, detail: str, who: Principal | None = None) -> HTTPException:
    log.warning("refused (%s, %s): %s", status, who.name if who else "-", detail)
    return HTTPException(status, detail)


@router.post("/stations/{station}/inspect", response_model=InspectionOut, tags=["inspection"])
async def inspect(
    station: str, who: Operator, service: ServiceDep,
    image: Annotated[UploadFile, File(description="the station's image: PNG, JPEG, BMP or TIFF")],
    cell_id: Annotated[str | None, Form(pattern=_CELL_ID, description="decoded from the image when absent")] = None,
) -> InspectionOut:
    """Inspect one image; the inspection is committed to the store before this answers."""
    _station(service, station)
    data = await image.read()
    name = image.filename or "upload"
    try:
        result = await run_in_threadpool(service.recorder.inspect, station, data, name, cell_id or None)
    except NotInspectableError as exc:
        raise _bad(422, str(exc), who) from exc
    service.telemetry.verdicts.labels(station, result.record.verdict.value).inc()
    service.telemetry.inspect_seconds.labels(station).observe(result.record.latency_ms / 1000.0)
    return InspectionOut.of(result.id, result.record)


@router.get("/inspections/{inspection_id}", response_model=InspectionOut, tags=["inspection"])
def inspection(inspection_id: int, _: Viewer, service: ServiceDep) -> InspectionOut:
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
def image_png(inspection_id: int, _: Operator, service: ServiceDep) -> FileResponse:
    return _image(service, inspection_id, heatmap=False)


@router.get("/inspections/{inspection_id}/heatmap.png", response_class=FileResponse, tags=["inspection"])
def heatmap_png(inspection_id: int, _: Operator, service: ServiceDep) -> FileResponse:
    """The image with the anomaly map blended over it (blue normal, red well above the threshold)."""
    return _image(service, inspection_id, heatmap=True)


@router.get("/cells/{cell_id}", response_model=CellOut, tags=["traceability"])
def cell(cell_id: str, _: Viewer, service: ServiceDep) -> CellOut:
    """The cell's genealogy: every inspection of its ID (all runs and stations) and its dispositions."""
    found = service.store.cell_inspections(cell_id)
    cells = service.trace.cells(cell_id=cell_id)
    if not found and not cells:
        raise HTTPException(404, f"cell {cell_id!r} was never inspected")
    from cellsight.line.quality import genealogy

    dispositions = genealogy_json(genealogy(cell_id, [], cells))["dispositions"]
    return CellOut(cell_id=cell_id, inspections=[InspectionOut.of(i, r) for i, r in found], dispositions=dispositions)


@router.get("/stations/{station}/stats", response_model=StationStatsOut, tags=["traceability"])
def stats(station: str, _: Viewer, service: ServiceDep, run_id: int | None = None) -> StationStatsOut:
    """This service run's figures for one station (another run with `run_id`); FPY from cellsight.line.quality."""
    _station(service, station)
    run = run_id if run_id is not None else service.run_id
    records = service.trace.inspections(run_id=run, station=station)
    (figures,) = station_yields(records, [station])
    verdicts = {v: sum(r.verdict.value == v for r in records) for v in ("OK", "NG", "ERROR")}
    return StationStatsOut(
        station=station, run_id=run, inspections=len(records), verdicts=verdicts, fpy=figures.fpy,
        fpy_interval=figures.interval, mean_latency_ms=figures.mean_latency_ms, p95_latency_ms=figures.p95_latency_ms,
        live_model=service.registry.slot(station).live.model_version,
    )


@router.get("/quality", tags=["traceability"])
def quality(_: Viewer, service: ServiceDep, run_id: int | None = None) -> dict[str, Any]:
    """FPY per station, RTY, final yield, Pareto and p-chart of a run (default: this service run)."""
    run = run_id if run_id is not None else service.run_id
    figures = line_quality(service.trace.inspections(run_id=run), service.trace.cells(run_id=run),
                           service.config.station_names, subgroup_size=service.settings.pchart_subgroup)
    return {"run_id": run, **figures.to_json_dict()}


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
def review(inspection_id: int, body: ReviewIn, who: Operator, service: ServiceDep) -> ReviewOut:
    """Record a person's decision; a later review of the same inspection is a new row and the one that counts."""
    record = service.store.inspection(inspection_id)
    if record is None:
        raise _bad(404, f"inspection {inspection_id} not found", who)
    defect_class = body.defect_class or (record.defect_class if body.decision == "confirmed_defect" else None)
    if body.decision == "confirmed_defect" and not defect_class:
        defect_class = "defect"
    if body.decision == "false_call":
        defect_class = None
    saved = service.store.add_review(inspection_id, body.decision, defect_class, body.note, who.name)
    return ReviewOut.of(saved)


@router.get("/inspections/{inspection_id}/reviews", response_model=list[ReviewOut], tags=["review"])
def reviews(inspection_id: int, _: Viewer, service: ServiceDep) -> list[ReviewOut]:
    return [ReviewOut.of(r) for r in service.store.reviews(inspection_id)]


# --- models -----------------------------------------------------------------------------------------


def _models(service: Service, station: str) -> StationModelsOut:
    live = service.store.current(station, "live")
    shadow = service.store.current(station, "shadow")
    scored, differ = service.store.shadow_counts(station)
    return StationModelsOut(
        station=station, live=None if live is None else DeploymentOut.of(live),
        shadow=None if shadow is None else DeploymentOut.of(shadow),
        history=[DeploymentOut.of(d) for d in service.store.deployments(station)],
        shadow_scored=scored, shadow_disagreements=differ,
    )


@router.get("/models", response_model=list[StationModelsOut], tags=["models"])
def models(_: Viewer, service: ServiceDep) -> list[StationModelsOut]:
    """Each station's live model, shadow, full history and how often the shadow disagreed."""
    return [_models(service, s) for s in service.config.station_names]


@router.get("/shadow-disagreements", tags=["models"])
def disagreements(_: Viewer, service: ServiceDep, station: str | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    """Inspections where the shadow's verdict differs from the live one, newest first."""
    return [
        {**d.__dict__, "live_score": _finite(d.live_score), "shadow_score": _finite(d.shadow_score)}
        for d in service.store.disagreements(station, limit)
    ]


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


async def _model_source(service: Service, station: str, model: UploadFile | None, path: str | None,
                        who: Principal) -> tuple[Path, bool]:
    """The model file to verify: an upload (saved to a temporary file, removed after) or a server path."""
    if (model is None) == (path is None):
        raise _bad(422, "send exactly one of: a `model` file upload or a `path` on the server", who)
    if path is not None:
        source = Path(path)
        if not source.is_file():
            raise _bad(422, f"{path}: no such model file on the server", who)
        return source, False
    assert model is not None
    folder = service.output_dir / "models" / station
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=f".upload-{uuid.uuid4().hex[:8]}-", delete=False) as out:
        while chunk := await model.read(1 << 20):
            out.write(chunk)
    return Path(out.name), True


async def _deploy(service: Service, station: str, model: UploadFile | None, path: str | None, who: Principal,
                  shadow: bool) -> DeploymentOut:
    _station(service, station)
    source, temporary = await _model_source(service, station, model, path, who)
    try:
        deployment = await run_in_threadpool(service.registry.deploy, station, source, who.name, shadow)
    except (ModelFileError, ValueError) as exc:
        raise _bad(422, f"model refused: {exc}", who) from exc
    finally:
        if temporary:
            source.unlink(missing_ok=True)
    log.info("%s: %s model %s (%s) by %s", station, "shadow" if shadow else "live", deployment.version,
             deployment.model_sha256[:12], who.name)
    return DeploymentOut.of(deployment)


ModelUpload = Annotated[UploadFile | None, File(description="a model file written by `cellsight train`")]
ModelPath = Annotated[str | None, Form(description="or the path of a model file on the server")]


@router.post("/stations/{station}/models", response_model=DeploymentOut, tags=["models"])
async def deploy(station: str, who: Admin, service: ServiceDep, model: ModelUpload = None,
                 path: ModelPath = None) -> DeploymentOut:
    """Verify a model (content hash, loads, calibrated) and put it live; the previous one is kept for rollback."""
    return await _deploy(service, station, model, path, who, shadow=False)


@router.post("/stations/{station}/models/rollback", response_model=DeploymentOut, tags=["models"])
async def rollback(station: str, who: Admin, service: ServiceDep) -> DeploymentOut:
    """Put the previously live model back."""
    _station(service, station)
    try:
        previous = await run_in_threadpool(service.registry.rollback, station)
    except LookupError as exc:
        raise _bad(409, str(exc), who) from exc
    log.info("%s: rolled back to %s by %s", station, previous.version, who.name)
    return DeploymentOut.of(previous)


@router.post("/stations/{station}/models/shadow", response_model=DeploymentOut, tags=["models"])
async def set_shadow(station: str, who: Admin, service: ServiceDep, model: ModelUpload = None,
                     path: ModelPath = None) -> DeploymentOut:
    """A candidate that scores every inspection beside the live model; stored, never the verdict."""
    return await _deploy(service, station, model, path, who, shadow=True)


@router.delete("/stations/{station}/models/shadow", tags=["models"])
def clear_shadow(station: str, _: Admin, service: ServiceDep) -> dict[str, bool]:
    _station(service, station)
    return {"cleared": service.registry.clear_shadow(station)}


@router.post("/tokens", response_model=TokenOut, tags=["auth"])
def new_token(body: TokenIn, _: Admin, service: ServiceDep) -> TokenOut:
    """Create a token; the response is the only place the token is ever shown."""
    return TokenOut(name=body.name, role=body.role, token=create_token(service.store, body.name, body.role))
