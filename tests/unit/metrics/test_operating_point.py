"""Verdict counting: escapes, false calls, per-class rates, and errors that never pass."""

from __future__ import annotations

import json
import math

import pytest

from cellsight.metrics import RateWithInterval, operating_point
from cellsight.types import Verdict

OK, NG, ERR = Verdict.OK, Verdict.NG, Verdict.ERROR


def test_counts_rates_and_classes() -> None:
    labels = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    verdicts = [OK, OK, NG, ERR, OK, NG, OK, NG, NG, ERR, OK]
    classes = ["good"] * 3 + ["maybe_good"] * 2 + ["crack"] * 3 + ["finger"] * 3
    op = operating_point(labels, verdicts, classes)
    assert op.confusion == {"good_ok": 3, "good_ng": 2, "defective_ok": 2, "defective_ng": 4, "error": 2}
    assert (op.escape.count, op.escape.n, op.escape.rate) == (2, 6, pytest.approx(2 / 6))
    assert (op.overkill.count, op.overkill.n, op.overkill.rate) == (2, 5, pytest.approx(0.4))
    assert op.accuracy == pytest.approx(7 / 11)
    assert set(op.recall_per_class) == {"crack", "finger"}
    assert (op.recall_per_class["crack"].count, op.recall_per_class["crack"].n) == (2, 3)
    assert (op.recall_per_class["finger"].count, op.recall_per_class["finger"].n) == (2, 3)  # ERROR counts
    assert set(op.overkill_per_class) == {"good", "maybe_good"}
    assert (op.overkill_per_class["maybe_good"].count, op.overkill_per_class["maybe_good"].n) == (1, 2)
    assert op.escape.low < op.escape.rate < op.escape.high


def test_errors_are_never_counted_ok() -> None:
    op = operating_point([0, 0, 1, 1], [ERR] * 4, ["good", "good", "crack", "crack"])
    assert op.confusion == {"good_ok": 0, "good_ng": 2, "defective_ok": 0, "defective_ng": 2, "error": 4}
    assert op.escape.rate == 0.0
    assert op.overkill.rate == 1.0


def test_verdict_strings_accepted_and_unknown_rejected() -> None:
    op = operating_point([1, 0], ["NG", "OK"], ["crack", "good"])
    assert op.accuracy == 1.0
    with pytest.raises(ValueError, match="unknown verdict"):
        operating_point([1], ["MAYBE"], ["crack"])


def test_length_mismatches_rejected() -> None:
    with pytest.raises(ValueError, match="labels"):
        operating_point([0, 1], [OK], ["good"])
    with pytest.raises(ValueError, match="defect classes"):
        operating_point([0, 1], [OK, NG], ["good"])


def test_good_only_set_has_undefined_escape_and_strict_json() -> None:
    op = operating_point([0, 0, 0], [OK, OK, NG], ["good"] * 3)
    assert op.escape.n == 0 and math.isnan(op.escape.rate)
    assert (op.escape.low, op.escape.high) == (0.0, 1.0)
    data = op.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["escape"] == {"count": 0, "n": 0, "rate": None, "low": 0.0, "high": 1.0}
    assert data["overkill"]["count"] == 1 and data["confusion"]["good_ng"] == 1


def test_rate_description_reads_like_a_report() -> None:
    assert RateWithInterval.of(5, 10).describe() == "50.0% (5/10, 95% CI 23.7–76.3%)"
    assert RateWithInterval.of(0, 0).describe() == "n/a (0 images)"
