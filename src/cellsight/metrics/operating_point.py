"""What the line sees at the calibrated threshold: escapes, false calls and per-class detection.

Every rate comes with its count and a Wilson 95% interval, because "0.0% escape" on 20 defective
images is a very different claim from 0.0% on 2,000.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cellsight.metrics._common import check_labels, jsonable
from cellsight.metrics.intervals import wilson_interval
from cellsight.types import Verdict


@dataclass(frozen=True)
class RateWithInterval:
    """`count` out of `n`, the rate (NaN when n == 0) and its Wilson 95% interval."""

    count: int
    n: int
    rate: float
    low: float
    high: float

    @classmethod
    def of(cls, count: int, n: int) -> RateWithInterval:
        low, high = wilson_interval(count, n)
        return cls(int(count), int(n), count / n if n else float("nan"), low, high)

    def describe(self) -> str:
        """E.g. "12.3% (25/204, 95% CI 8.4–17.6%)"."""
        if self.n == 0:
            return "n/a (0 images)"
        interval = f"95% CI {100 * self.low:.1f}–{100 * self.high:.1f}%"
        return f"{100 * self.rate:.1f}% ({self.count}/{self.n}, {interval})"


@dataclass
class OperatingPoint:
    """Verdict counts at one threshold, in a quality engineer's terms.

    `confusion` keys: good_ok, good_ng, defective_ok, defective_ng, error. An image that could not be
    inspected (ERROR) is counted as NG in good_ng/defective_ng — it never passes — and again in `error`.
    """

    escape: RateWithInterval
    overkill: RateWithInterval
    confusion: dict[str, int]
    recall_per_class: dict[str, RateWithInterval]
    overkill_per_class: dict[str, RateWithInterval] = field(default_factory=dict)
    accuracy: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN → None)."""
        result: dict[str, Any] = jsonable(asdict(self))
        return result


def _verdict(value: Verdict | str) -> Verdict:
    try:
        return Verdict(value)
    except ValueError:
        raise ValueError(f"unknown verdict {value!r}; expected one of {[v.value for v in Verdict]}") from None


def operating_point(
    labels: Sequence[int] | np.ndarray,
    verdicts: Sequence[Verdict],
    defect_classes: Sequence[str],
) -> OperatingPoint:
    """Count verdicts against labels.

    `defect_classes` names each image's class ("good" for good images). Recall is reported for every
    class with label 1; overkill for every class with label 0 (data sets such as ELPV have several
    good-like classes, e.g. "maybe_good", whose false-call rates differ).
    """
    passed = np.array([_verdict(v).passes for v in verdicts], dtype=bool)
    errors = np.array([_verdict(v) is Verdict.ERROR for v in verdicts], dtype=bool)
    y = check_labels(labels, passed.size)
    if len(defect_classes) != passed.size:
        raise ValueError(f"got {len(defect_classes)} defect classes for {passed.size} verdicts")
    classes = np.asarray([str(c) for c in defect_classes], dtype=object)
    good, defective = y == 0, y == 1
    confusion = {
        "good_ok": int(np.sum(good & passed)),
        "good_ng": int(np.sum(good & ~passed)),
        "defective_ok": int(np.sum(defective & passed)),
        "defective_ng": int(np.sum(defective & ~passed)),
        "error": int(errors.sum()),
    }
    recall: dict[str, RateWithInterval] = {}
    overkill: dict[str, RateWithInterval] = {}
    for name in sorted(set(classes.tolist())):
        in_class = classes == name
        for per_class, members in ((recall, in_class & defective), (overkill, in_class & good)):
            if members.any():
                per_class[name] = RateWithInterval.of(int(np.sum(members & ~passed)), int(members.sum()))
    n = int(y.size)
    return OperatingPoint(
        escape=RateWithInterval.of(confusion["defective_ok"], int(defective.sum())),
        overkill=RateWithInterval.of(confusion["good_ng"], int(good.sum())),
        confusion=confusion,
        recall_per_class=recall,
        overkill_per_class=overkill,
        accuracy=(confusion["good_ok"] + confusion["defective_ng"]) / n if n else float("nan"),
    )
