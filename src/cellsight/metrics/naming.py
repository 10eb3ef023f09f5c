"""How well a detector names the defects it flags: accuracy and confusion over the flagged defective images.

Only flagged (NG) defective images count: an escaped defect has no name to judge, and its cost is already
in the escape rate. A model that names nothing (every NG is "anomaly") has no naming summary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from cellsight.types import Prediction, Verdict

UNNAMED = "anomaly"


def naming_summary(
    labels: Sequence[int], defect_classes: Sequence[str], predictions: Sequence[Prediction]
) -> dict[str, Any] | None:
    """Accuracy, per-class accuracy, unknown count and confusion (true -> named -> count); None if nothing is named."""
    flagged = [
        (str(true), p.defect_class or UNNAMED)
        for y, true, p in zip(labels, defect_classes, predictions, strict=True)
        if int(y) == 1 and p.verdict is Verdict.NG
    ]
    if not any(p.verdict is Verdict.NG and p.defect_class not in (None, UNNAMED) for p in predictions):
        return None
    confusion: dict[str, Counter[str]] = {}
    for true, named in flagged:
        confusion.setdefault(true, Counter())[named] += 1
    correct = sum(true == named for true, named in flagged)
    return {
        "n_flagged_defective": len(flagged),
        "accuracy": correct / len(flagged) if flagged else float("nan"),
        "accuracy_per_class": {t: row[t] / sum(row.values()) for t, row in sorted(confusion.items())},
        "n_unknown": sum(named == "unknown" for _, named in flagged),
        "confusion": {t: dict(sorted(row.items())) for t, row in sorted(confusion.items())},
    }
