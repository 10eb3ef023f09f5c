"""The trigger / busy / result / acknowledge handshake of one station, as plain code.

The OPC UA server only moves values in and out; every decision lives here so that it can be tested without
a network. Each event returns the station's new `Outputs` (the values cellsight writes) and, for an accepted
trigger, the cell to inspect.

Normal cycle (PLC signals on the left, cellsight's on the right):

1. Ready: Trigger, ResultAck, Busy, ResultReady all False.
2. PLC writes CellId, raises Trigger           -> Busy=True, SubState SingleExecution, ErrorText "".
3. the inspection ends                         -> Result, DefectClass, Score, ... written, Busy=False,
                                                  ResultReady=True, SubState AwaitingAck.
4. PLC raises ResultAck                        -> ResultReady=False, SubState Ready.
5. PLC drops Trigger and ResultAck             -> nothing to do; the next rising edge of Trigger starts a cycle.

Only a rising edge of Trigger starts an inspection, so a PLC may hold Trigger until step 5 or pulse it.
A rising edge while Busy, while a result waits for its acknowledge, or while ResultAck is still high is a
protocol error: it is refused (never queued), State becomes Error and ErrorText says why; the inspection in
flight, if any, still reports its result. State returns to Operational at the next accepted trigger.
An inspection that raised, timed out or returned ERROR is reported as NG with ErrorText, never OK.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from cellsight.plc.result import PlcResult
from cellsight.types import Verdict


class State(StrEnum):
    """The station's top-level state, named after OPC 40100's VisionStateMachine."""

    PREOPERATIONAL = "Preoperational"  # starting: triggers are refused
    OPERATIONAL = "Operational"
    ERROR = "Error"  # the last trigger was refused (protocol error); cleared by the next accepted trigger
    HALTED = "Halted"  # stopping: triggers are refused


class SubState(StrEnum):
    """Where the station is within Operational (OPC 40100's automatic mode, plus the acknowledge wait)."""

    READY = "Ready"
    SINGLE_EXECUTION = "SingleExecution"
    AWAITING_ACK = "AwaitingAck"


@dataclass(frozen=True)
class Outputs:
    """The values cellsight writes for one station (the PLC's inputs)."""

    busy: bool = False
    result_ready: bool = False
    result: str = ""  # "OK" or "NG"; "" while no result is valid
    result_cell_id: str = ""
    defect_class: str = ""
    score: float = math.nan
    model_version: str = ""
    state: State = State.PREOPERATIONAL
    sub_state: SubState = SubState.READY
    error_text: str = ""
    inspection_count: int = 0


@dataclass(frozen=True)
class Step:
    """The result of one event: the new outputs and, for an accepted trigger, what to inspect."""

    outputs: Outputs
    start: bool = False
    cell_id: str | None = None  # the cell to inspect; None: the vision system reads the code itself


def plc_result(verdict: Verdict) -> str:
    """The PLC sees OK or NG only: ERROR (and anything else that is not an explicit OK) is NG."""
    return "OK" if verdict.passes else "NG"


class StationHandshake:
    """The handshake state of one station. Not thread-safe: the server drives it from one event loop."""

    def __init__(self, station: str) -> None:
        self.station = station
        self.outputs = Outputs()
        self._trigger = False
        self._ack = False
        self._cell_in_flight: str | None = None

    def set_operational(self) -> Outputs:
        """The server is listening: triggers are accepted from now on."""
        self.outputs = replace(self.outputs, state=State.OPERATIONAL)
        return self.outputs

    def set_halted(self) -> Outputs:
        """The server is stopping: the PLC sees Halted and further triggers are refused."""
        self.outputs = replace(self.outputs, state=State.HALTED)
        return self.outputs

    def on_trigger(self, value: bool, cell_id: str) -> Step:
        """A write of Trigger. Only a rising edge counts; it starts an inspection or is refused."""
        rising = value and not self._trigger
        self._trigger = value
        if not rising:
            return Step(self.outputs)
        out = self.outputs
        reason = None
        if out.state in (State.PREOPERATIONAL, State.HALTED):
            reason = f"vision system is {out.state.value}"
        elif out.busy:
            reason = f"station busy with cell {self._cell_in_flight or '<unread>'}"
        elif out.result_ready:
            reason = f"result for cell {out.result_cell_id or '<unread>'} not yet acknowledged"
        elif self._ack:
            reason = "ResultAck still high from the previous cycle"
        if reason is not None:
            text = f"trigger for cell {cell_id or '<unread>'} refused: {reason}"
            if out.state in (State.OPERATIONAL, State.ERROR):
                self.outputs = replace(out, state=State.ERROR, error_text=text)
            else:
                self.outputs = replace(out, error_text=text)
            return Step(self.outputs)
        self._cell_in_flight = cell_id or None
        self.outputs = replace(
            out,
            busy=True,
            result="",
            result_cell_id="",
            defect_class="",
            score=math.nan,
            state=State.OPERATIONAL,
            sub_state=SubState.SINGLE_EXECUTION,
            error_text="",
        )
        return Step(self.outputs, start=True, cell_id=self._cell_in_flight)

    def on_ack(self, value: bool) -> Step:
        """A write of ResultAck. A rising edge while a result is ready releases it."""
        rising = value and not self._ack
        self._ack = value
        if rising and self.outputs.result_ready:
            self.outputs = replace(self.outputs, result_ready=False, sub_state=SubState.READY)
        return Step(self.outputs)

    def on_result(self, outcome: PlcResult) -> Step:
        """The inspection in flight ended (well or not): publish it and wait for the acknowledge."""
        failed = outcome.error is not None or outcome.verdict is Verdict.ERROR
        error_text = ""
        if failed:
            error_text = outcome.error or f"inspection of cell {outcome.cell_id or '<unread>'} returned ERROR"
        out = self.outputs
        if out.state is State.ERROR and out.error_text:
            # keep the protocol error visible: it concerns a refused trigger the PLC must still deal with
            error_text = f"{out.error_text}; {error_text}" if error_text else out.error_text
        self._cell_in_flight = None
        self.outputs = replace(
            out,
            busy=False,
            result_ready=True,
            result="NG" if failed else plc_result(outcome.verdict),
            result_cell_id=outcome.cell_id,
            defect_class=outcome.defect_class or "",
            score=outcome.score,
            model_version=outcome.model_version or out.model_version,
            sub_state=SubState.AWAITING_ACK,
            error_text=error_text,
            inspection_count=(out.inspection_count + 1) % 2**32,
        )
        return Step(self.outputs)
