"""Model versions per station: live, shadow, history, deploy and rollback (admin only to change)."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from cellsight.errors import CellsightError, ModelFileError
from cellsight.service.auth import Principal
from cellsight.service.deps import Admin, ServiceDep, Viewer
from cellsight.service.routes.common import check_station, finite, log, refuse
from cellsight.service.schemas import DeploymentOut, StationModelsOut
from cellsight.service.state import Service

router = APIRouter(prefix="/v1")


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
        {**d.__dict__, "live_score": finite(d.live_score), "shadow_score": finite(d.shadow_score)}
        for d in service.store.disagreements(station, limit)
    ]


async def _model_source(service: Service, station: str, model: UploadFile | None, path: str | None,
                        who: Principal) -> tuple[Path, bool]:
    """The model file to verify: an upload (saved to a temporary file, removed after) or a server path."""
    if (model is None) == (path is None):
        raise refuse(422, "send exactly one of: a `model` file upload or a `path` on the server", who)
    if path is not None:
        source = Path(path)
        try:
            found = source.is_file()
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte
            found = False
        if not found:
            raise refuse(422, f"{path[:200]}: no such model file on the server", who)
        return source, False
    assert model is not None
    folder = service.output_dir / "models" / station
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=f".upload-{uuid.uuid4().hex[:8]}-", delete=False) as out:
        while chunk := await model.read(1 << 20):
            out.write(chunk)
    return Path(out.name), True


async def _deploy(service: Service, station: str, model: UploadFile | None, path: str | None, who: Principal,
                  shadow: bool, force: bool) -> DeploymentOut:
    check_station(service, station)
    source, temporary = await _model_source(service, station, model, path, who)
    shown = (model.filename or "upload") if model is not None else str(path)
    try:
        deployment = await run_in_threadpool(service.registry.deploy, station, source, who.name, shadow, force)
    except (CellsightError, ValueError) as exc:
        message = str(exc).replace(str(source), shown) if temporary else str(exc)
        raise refuse(422, f"model refused: {message}", who) from exc
    finally:
        if temporary:
            source.unlink(missing_ok=True)
    log.info("%s: %s model %s (%s) by %s", station, "shadow" if shadow else "live", deployment.version,
             deployment.model_sha256[:12], who.name)
    return DeploymentOut.of(deployment)


ModelUpload = Annotated[UploadFile | None, File(description="a model file written by `cellsight train`")]
ModelPath = Annotated[str | None, Form(max_length=4096, description="or the path of a model file on the server")]
Force = Annotated[bool, Form(description="deploy a model trained for another station (recorded with the deployment)")]


@router.post("/stations/{station}/models", response_model=DeploymentOut, tags=["models"])
async def deploy(station: str, who: Admin, service: ServiceDep, model: ModelUpload = None,
                 path: ModelPath = None, force: Force = False) -> DeploymentOut:
    """Verify a model (content hash, loads, calibrated, trained for this station), copy it into the model
    store and put it live; the previous one is kept for rollback."""
    return await _deploy(service, station, model, path, who, shadow=False, force=force)


@router.post("/stations/{station}/models/rollback", response_model=DeploymentOut, tags=["models"])
async def rollback(station: str, who: Admin, service: ServiceDep,
                   sha256: Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$")] = None) -> DeploymentOut:
    """Put the previously live model back, or the stored model with this SHA-256 (from /v1/models)."""
    check_station(service, station)
    try:
        previous = await run_in_threadpool(service.registry.rollback, station, sha256, who.name)
    except LookupError as exc:
        raise refuse(409, str(exc.args[0] if exc.args else exc), who) from exc
    except ModelFileError as exc:
        raise refuse(409, f"rollback refused: {exc}", who) from exc
    log.info("%s: rolled back to %s by %s", station, previous.version, who.name)
    return DeploymentOut.of(previous)


@router.post("/stations/{station}/models/shadow", response_model=DeploymentOut, tags=["models"])
async def set_shadow(station: str, who: Admin, service: ServiceDep, model: ModelUpload = None,
                     path: ModelPath = None, force: Force = False) -> DeploymentOut:
    """A candidate that scores every inspection beside the live model; stored, never the verdict."""
    return await _deploy(service, station, model, path, who, shadow=True, force=force)


@router.delete("/stations/{station}/models/shadow", tags=["models"])
def clear_shadow(station: str, _: Admin, service: ServiceDep) -> dict[str, bool]:
    check_station(service, station)
    return {"cleared": service.registry.clear_shadow(station)}
