"""Small helpers the route modules share: refusing with a logged reason and checking a station name."""

from __future__ import annotations

import logging
import math
from typing import Annotated

from fastapi import HTTPException, Path, Query

from cellsight.service.auth import Principal
from cellsight.service.state import Service

log = logging.getLogger("cellsight.service")


_ID_MAX = 2**63 - 1  # what a database BIGINT holds: larger numbers are a 422, not an overflow (500)
InspectionId = Annotated[int, Path(ge=1, le=_ID_MAX, description="an inspection's id")]
RunId = Annotated[int | None, Query(ge=1, le=_ID_MAX, description="a run's id; default: this service run")]


def check_station(service: Service, station: str) -> None:
    if station not in service.registry.slots:
        raise HTTPException(404, f"unknown station {station!r}; stations: {', '.join(service.registry.slots)}")


def refuse(status: int, detail: str, who: Principal | None = None) -> HTTPException:
    log.warning("refused (%s, %s): %s", status, who.name if who else "-", detail)
    return HTTPException(status, detail)


def finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value
