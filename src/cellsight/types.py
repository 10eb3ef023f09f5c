"""The few types every layer shares: a verdict and a prediction.

A prediction that could not be made (unreadable image, failed inference) carries the ERROR verdict,
which is never OK: the line treats it like NG until a person reviews it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


class Verdict(StrEnum):
    OK = "OK"
    NG = "NG"
    ERROR = "ERROR"

    @property
    def passes(self) -> bool:
        """Only an explicit OK lets a part pass."""
        return self is Verdict.OK


@dataclass(frozen=True)
class Prediction:
    """One image's result.

    `score` is normalised so that the calibrated threshold sits at 0.5 (NG when score >= 0.5);
    `raw_score` is the detector's own number, kept for analysis. `anomaly_map` is float32, the size of
    the input image, on the same normalised scale as `score`.
    """

    score: float
    verdict: Verdict
    raw_score: float = float("nan")
    defect_class: str | None = None
    anomaly_map: np.ndarray | None = field(default=None, repr=False, compare=False)
    latency_ms: float = 0.0
    error: str | None = None

    @classmethod
    def failed(cls, error: str, latency_ms: float = 0.0) -> Prediction:
        """The result for an input that could not be inspected: never OK."""
        return cls(score=float("nan"), verdict=Verdict.ERROR, error=error, latency_ms=latency_ms)
