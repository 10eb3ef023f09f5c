"""Health for load balancers (anonymous: says only whether the service is ready) and Prometheus metrics
(counts of verdicts are production figures, so they need a token like any other read)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from cellsight.service.deps import ServiceDep, Viewer

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz(service: ServiceDep) -> Response:
    """200 once every station's model is loaded and warmed up; 503 before (a load balancer waits)."""
    ready = service.ready.is_set()
    body = {"status": "ok" if ready else "starting", "run_id": service.run_id,
            "stations": service.config.station_names}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(_: Viewer, service: ServiceDep) -> Response:
    """Prometheus text format; scrape with `authorization: {credentials: <token>}` (viewer role is enough)."""
    return service.telemetry.exposition()
