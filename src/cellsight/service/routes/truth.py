"""/v1/truth: escape and overkill against truth, cost of quality and energy for a run (the dashboard's
truth panel reads it); and recording what an audit or teardown found for an inspection."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cellsight.i18n import localizer, negotiate
from cellsight.line.truth_report import run_truth_costs, truth_costs_display
from cellsight.service.deps import Operator, ServiceDep, Viewer
from cellsight.service.routes.common import RunId
from cellsight.service.state import Service
from cellsight.storage.records import TruthSource
from cellsight.storage.store import DuplicateRecordError

router = APIRouter(prefix="/v1")


class TruthIn(BaseModel):
    """What an audit (a sampled cell examined) or a teardown (a cell taken apart) found."""

    true_class: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_ -]*$",
                            description='"good", or the defect class found')
    source: Literal["audit", "teardown"]


class TruthOut(BaseModel):
    inspection_id: int
    true_class: str
    source: str
    recorded_by: str


@router.get("/truth", tags=["traceability"])
async def truth(
    _: Viewer, service: ServiceDep, run_id: RunId = None,
    lang: Annotated[str | None, Query(pattern=r"^[A-Za-z_-]{2,12}$", description="adds `display`: the panel as "
                                      "text in this language (en, zh_CN, de)")] = None,
) -> dict[str, Any]:
    """Escape/overkill against truth per station and line (Wilson 95%), confusion matrix, sampled estimate,
    and cost of quality, energy and CO2e per run, shift and day (default run: the latest line run with cells)."""
    run = run_id if run_id is not None else _default_run(service)
    try:
        report = await run_in_threadpool(run_truth_costs, service.trace, service.config, run)
    except KeyError as exc:
        raise HTTPException(404, f"run {run} is not in the store") from exc
    data = {"run_id": run, **report.to_json_dict()}
    if lang is not None:
        data["display"] = truth_costs_display(report, localizer(negotiate(None, lang)))
    return data


@router.post("/inspections/{inspection_id}/truth", response_model=TruthOut, tags=["review"])
def record_truth(inspection_id: int, body: TruthIn, who: Operator, service: ServiceDep) -> TruthOut:
    """Record an audit's or a teardown's finding for one inspection (once per source)."""
    record = service.store.inspection(inspection_id)
    if record is None:
        raise HTTPException(404, f"inspection {inspection_id} not found")
    try:
        service.trace.record_truth(record.run_id, record.sequence, record.station, body.true_class,
                                   TruthSource(body.source), recorded_by=who.name)
    except DuplicateRecordError as exc:
        raise HTTPException(409, str(exc)) from exc
    return TruthOut(inspection_id=inspection_id, true_class=body.true_class, source=body.source, recorded_by=who.name)


def _default_run(service: Service) -> int:
    """The newest run of this line with finished cells (a `line run` or this service's); else this service's."""
    for run in reversed(service.trace.runs(service.config.line)):
        if service.trace.counts(run.id)[1]:
            return run.id
    return service.run_id
