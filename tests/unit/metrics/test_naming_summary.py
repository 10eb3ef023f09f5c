"""The naming summary: only flagged defective images count; a model that names nothing has none."""

from __future__ import annotations

from cellsight.metrics.naming import naming_summary
from cellsight.types import Prediction, Verdict


def ng(name: str | None) -> Prediction:
    return Prediction(score=0.9, verdict=Verdict.NG, defect_class=name)


def test_accuracy_and_confusion_over_flagged_defects() -> None:
    ok = Prediction(score=0.1, verdict=Verdict.OK)
    labels = [0, 0, 1, 1, 1, 1]
    truth = ["good", "good", "dent", "dent", "scratch", "scratch"]
    predictions = [ok, ng("dent"), ng("dent"), ng("scratch"), ng("unknown"), ok]  # a false call, an escape
    summary = naming_summary(labels, truth, predictions)
    assert summary is not None
    assert summary["n_flagged_defective"] == 3
    assert summary["accuracy"] == 1 / 3
    assert summary["n_unknown"] == 1
    assert summary["confusion"] == {"dent": {"dent": 1, "scratch": 1}, "scratch": {"unknown": 1}}
    assert summary["accuracy_per_class"] == {"dent": 0.5, "scratch": 0.0}


def test_no_summary_when_every_ng_is_anomaly() -> None:
    assert naming_summary([1, 0], ["dent", "good"], [ng("anomaly"), ng("anomaly")]) is None
