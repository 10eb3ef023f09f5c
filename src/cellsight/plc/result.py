"""What the inspection callback hands the PLC link: a verdict already committed to the store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cellsight.types import Verdict


@dataclass(frozen=True)
class PlcResult:
    """One station's verdict on one cell, as recorded in the store before the PLC is told.

    ERROR is sent to the PLC as NG (never OK), with `error` (or a generic text) in ErrorText.
    """

    verdict: Verdict
    score: float
    defect_class: str | None
    cell_id: str
    model_version: str
    error: str | None = None


InspectCallback = Callable[[str, str | None], Awaitable[PlcResult]]
"""(station, cell ID from the PLC or None when the vision system reads the code) -> committed result."""
