"""The station handshake without a network: the cycle, refusals, failures never OK."""

from __future__ import annotations

import math

import pytest

from cellsight.plc.handshake import State, StationHandshake, SubState, plc_result
from cellsight.plc.result import PlcResult
from cellsight.types import Verdict


def _ready() -> StationHandshake:
    hs = StationHandshake("EL")
    hs.set_operational()
    return hs


def _outcome(verdict: Verdict = Verdict.OK, cell: str = "C1", error: str | None = None) -> PlcResult:
    return PlcResult(verdict, 0.2, "crack" if verdict is Verdict.NG else None, cell, "m1", error)


def test_full_cycle() -> None:
    hs = _ready()
    step = hs.on_trigger(True, "C1")
    assert step.start and step.cell_id == "C1"
    assert step.outputs.busy and not step.outputs.result_ready
    assert step.outputs.sub_state is SubState.SINGLE_EXECUTION
    out = hs.on_result(_outcome(Verdict.NG)).outputs
    assert (out.busy, out.result_ready, out.result, out.defect_class) == (False, True, "NG", "crack")
    assert (out.result_cell_id, out.model_version, out.inspection_count) == ("C1", "m1", 1)
    assert out.sub_state is SubState.AWAITING_ACK and out.error_text == ""
    out = hs.on_ack(True).outputs
    assert not out.result_ready and out.sub_state is SubState.READY
    hs.on_trigger(False, "C1")
    hs.on_ack(False)
    step = hs.on_trigger(True, "C2")
    assert step.start and step.outputs.result == "" and math.isnan(step.outputs.score)


def test_only_a_rising_edge_triggers() -> None:
    hs = _ready()
    assert hs.on_trigger(True, "C1").start
    hs.on_result(_outcome())
    hs.on_ack(True)
    assert not hs.on_trigger(True, "C1").start  # Trigger written True again while still True
    hs.on_ack(False)
    assert not hs.on_trigger(True, "C1").start
    hs.on_trigger(False, "C1")
    assert hs.on_trigger(True, "C2").start


def test_empty_cell_id_means_the_vision_system_reads_it() -> None:
    step = _ready().on_trigger(True, "")
    assert step.start and step.cell_id is None


@pytest.mark.parametrize("verdict", [Verdict.ERROR, Verdict.OK])
def test_failed_inspection_is_ng_with_error_text(verdict: Verdict) -> None:
    hs = _ready()
    hs.on_trigger(True, "C1")
    error = None if verdict is Verdict.ERROR else "inspection timed out after 5 s"
    out = hs.on_result(_outcome(verdict, error=error)).outputs
    assert out.result == "NG" and out.result_ready
    assert out.error_text == (error or "inspection of cell C1 returned ERROR")
    assert out.state is State.OPERATIONAL


def test_plc_sees_only_ok_or_ng() -> None:
    assert [plc_result(v) for v in Verdict] == ["OK", "NG", "NG"]


def test_trigger_while_busy_is_refused_not_queued() -> None:
    hs = _ready()
    hs.on_trigger(True, "C1")
    hs.on_trigger(False, "C1")  # a pulsed trigger is fine
    step = hs.on_trigger(True, "C2")
    assert not step.start
    assert step.outputs.state is State.ERROR and step.outputs.busy
    assert "C2 refused" in step.outputs.error_text and "busy with cell C1" in step.outputs.error_text
    out = hs.on_result(_outcome(cell="C1")).outputs  # the inspection in flight still reports
    assert out.result == "OK" and out.result_cell_id == "C1" and "refused" in out.error_text
    hs.on_ack(True)
    hs.on_ack(False)
    hs.on_trigger(False, "C2")
    step = hs.on_trigger(True, "C2")
    assert step.start and step.outputs.state is State.OPERATIONAL and step.outputs.error_text == ""


def test_trigger_before_acknowledge_is_refused() -> None:
    hs = _ready()
    hs.on_trigger(True, "C1")
    hs.on_trigger(False, "C1")
    hs.on_result(_outcome())
    step = hs.on_trigger(True, "C2")
    assert not step.start and "not yet acknowledged" in step.outputs.error_text
    assert step.outputs.result_ready and step.outputs.result == "OK"  # the unacknowledged result stays


def test_trigger_with_ack_still_high_is_refused() -> None:
    hs = _ready()
    hs.on_trigger(True, "C1")
    hs.on_result(_outcome())
    hs.on_ack(True)
    hs.on_trigger(False, "C1")
    step = hs.on_trigger(True, "C2")
    assert not step.start and "ResultAck still high" in step.outputs.error_text


def test_ack_raised_early_does_not_release_a_later_result() -> None:
    hs = _ready()
    hs.on_trigger(True, "C1")
    hs.on_ack(True)  # too early: ignored
    assert hs.on_result(_outcome()).outputs.result_ready
    assert hs.on_ack(True).outputs.result_ready  # still high, no new edge
    hs.on_ack(False)
    assert not hs.on_ack(True).outputs.result_ready


@pytest.mark.parametrize("state", ["pre", "halted"])
def test_no_trigger_outside_operational(state: str) -> None:
    hs = StationHandshake("EL")
    if state == "halted":
        hs.set_operational()
        hs.set_halted()
    step = hs.on_trigger(True, "C1")
    assert not step.start and "refused" in step.outputs.error_text
    assert step.outputs.state in (State.PREOPERATIONAL, State.HALTED)


def test_inspection_count_wraps_like_uint32() -> None:
    hs = _ready()
    hs.outputs = hs.outputs.__class__(state=State.OPERATIONAL, inspection_count=2**32 - 1)
    hs.on_trigger(True, "C1")
    assert hs.on_result(_outcome()).outputs.inspection_count == 0
