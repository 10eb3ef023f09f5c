"""Traceability: a cell's genealogy, a station's figures, the line's quality figures."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from cellsight.line.quality import genealogy, genealogy_json, line_quality, station_yields
from cellsight.service.deps import ServiceDep, Viewer
from cellsight.service.routes.common import RunId, check_station
from cellsight.service.schemas import CellOut, InspectionOut, StationStatsOut

router = APIRouter(prefix="/v1")


@router.get("/cells/{cell_id}", response_model=CellOut, tags=["traceability"])
def cell(cell_id: str, _: Viewer, service: ServiceDep) -> CellOut:
    """The cell's genealogy: every inspection of its ID (all runs and stations) and its dispositions."""
    found = service.store.cell_inspections(cell_id)
    cells = service.trace.cells(cell_id=cell_id)
    if not found and not cells:
        raise HTTPException(404, f"cell {cell_id!r} was never inspected")
    dispositions = genealogy_json(genealogy(cell_id, [], cells))["dispositions"]
    return CellOut(cell_id=cell_id, inspections=[InspectionOut.of(i, r) for i, r in found], dispositions=dispositions)


@router.get("/stations/{station}/stats", response_model=StationStatsOut, tags=["traceability"])
def stats(station: str, _: Viewer, service: ServiceDep, run_id: RunId = None) -> StationStatsOut:
    """This service run's figures for one station (another run with `run_id`); FPY from cellsight.line.quality."""
    check_station(service, station)
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
def quality(_: Viewer, service: ServiceDep, run_id: RunId = None) -> dict[str, Any]:
    """FPY per station, RTY, final yield, Pareto and p-chart of a run (default: this service run)."""
    run = run_id if run_id is not None else service.run_id
    figures = line_quality(service.trace.inspections(run_id=run), service.trace.cells(run_id=run),
                           service.config.station_names, subgroup_size=service.settings.pchart_subgroup)
    return {"run_id": run, **figures.to_json_dict()}
