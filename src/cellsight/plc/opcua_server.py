"""The OPC UA server a line PLC talks to: one object per station, a handshake, a heartbeat.

Namespace URI `urn:cellsight:plc` (look its index up in the server's NamespaceArray; do not hard-code it).
Node IDs are strings, so a PLC program can address them directly: `ns=<idx>;s=<Station>.<Variable>`.

Address space: Objects / Cellsight (`s=Cellsight`) / Heartbeat and one object per station (`s=<Station>`).

| Variable        | NodeId s=                 | Type    | Writer    | Meaning                                          |
|-----------------|---------------------------|---------|-----------|--------------------------------------------------|
| Heartbeat       | Heartbeat                 | UInt32  | cellsight | +1 every second (wraps); stuck = vision dead     |
| Trigger         | <Station>.Trigger         | Boolean | PLC       | rising edge starts one inspection                |
| CellId          | <Station>.CellId          | String  | PLC       | cell to inspect, before Trigger; "" = read code  |
| ResultAck       | <Station>.ResultAck       | Boolean | PLC       | rising edge: result read, clears ResultReady     |
| Busy            | <Station>.Busy            | Boolean | cellsight | inspection in progress                           |
| ResultReady     | <Station>.ResultReady     | Boolean | cellsight | result variables are valid until ResultAck       |
| Result          | <Station>.Result          | String  | cellsight | "OK" / "NG" ("" if none): the pass criterion     |
| ResultCellId    | <Station>.ResultCellId    | String  | cellsight | the cell the result belongs to                   |
| DefectClass     | <Station>.DefectClass     | String  | cellsight | defect class of an NG, else ""                   |
| Score           | <Station>.Score           | Double  | cellsight | 0.5 = threshold; NaN if none (decide on Result)  |
| ModelVersion    | <Station>.ModelVersion    | String  | cellsight | model that made the verdict                      |
| State           | <Station>.State           | String  | cellsight | Preoperational / Operational / Error / Halted    |
| SubState        | <Station>.SubState        | String  | cellsight | Ready / SingleExecution / AwaitingAck            |
| ErrorText       | <Station>.ErrorText       | String  | cellsight | why a trigger was refused / an inspection failed |
| InspectionCount | <Station>.InspectionCount | UInt32  | cellsight | results published since start (wraps)           |

Only Trigger, CellId and ResultAck are writable by clients (AccessLevel CurrentRead|CurrentWrite); writes to
the others are answered BadUserAccessDenied. The handshake itself is described in `cellsight.plc.handshake`.
String values are cut to 254 characters (an S7 STRING's limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import fields, replace
from types import TracebackType
from typing import Any, Self

from asyncua import Server, ua
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

from cellsight.plc.auth import PasswordUserManager
from cellsight.plc.certs import pem_or_der
from cellsight.plc.config import PlcConfig
from cellsight.plc.handshake import Outputs, StationHandshake, Step
from cellsight.plc.result import InspectCallback, PlcResult
from cellsight.types import Verdict

NAMESPACE_URI = "urn:cellsight:plc"
APPLICATION_URI = "urn:cellsight:plc:server"
ROOT = "Cellsight"
HEARTBEAT = "Heartbeat"
HEARTBEAT_PERIOD_S = 1.0
MAX_STRING = 254

_log = logging.getLogger(__name__)

# Outputs field -> (node name, variant type). Order matters: data first, then ResultReady, then Busy, so a
# PLC never sees Busy and ResultReady both low while a result is on its way.
_OUTPUT_NODES: dict[str, tuple[str, ua.VariantType]] = {
    "result": ("Result", ua.VariantType.String),
    "result_cell_id": ("ResultCellId", ua.VariantType.String),
    "defect_class": ("DefectClass", ua.VariantType.String),
    "score": ("Score", ua.VariantType.Double),
    "model_version": ("ModelVersion", ua.VariantType.String),
    "error_text": ("ErrorText", ua.VariantType.String),
    "inspection_count": ("InspectionCount", ua.VariantType.UInt32),
    "state": ("State", ua.VariantType.String),
    "sub_state": ("SubState", ua.VariantType.String),
    "result_ready": ("ResultReady", ua.VariantType.Boolean),
    "busy": ("Busy", ua.VariantType.Boolean),
}
assert set(_OUTPUT_NODES) == {f.name for f in fields(Outputs)}
PLC_WRITABLE: dict[str, ua.VariantType] = {
    "Trigger": ua.VariantType.Boolean,
    "CellId": ua.VariantType.String,
    "ResultAck": ua.VariantType.Boolean,
}


def node_id(namespace: int, station: str | None, name: str) -> ua.NodeId:
    """The string NodeId of a node: `<Station>.<Name>`, or `<Name>` for a server-level one."""
    return ua.NodeId(ua.String(f"{station}.{name}" if station else name), ua.Int16(namespace))


def _value(field_value: Any) -> Any:
    if isinstance(field_value, str):
        return str(field_value)[:MAX_STRING]
    return field_value


class PlcServer:
    """OPC UA server for the line PLC; `inspect` is called once per accepted trigger.

    Use as `async with PlcServer(config, inspect) as server: ...` or `await start()` / `await stop()`.
    The callback must commit its verdict to the store before returning: this link only reports.
    """

    def __init__(self, config: PlcConfig, inspect: InspectCallback) -> None:
        self.config = config
        self._inspect = inspect
        self._server: Server | None = None
        self._ns = 0
        self._stations = {name: StationHandshake(name) for name in config.stations}
        self._written: dict[str, Outputs] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._heartbeat = 0

    @property
    def namespace_index(self) -> int:
        return self._ns

    def outputs(self, station: str) -> Outputs:
        """What the PLC currently sees from `station` (diagnostics and tests)."""
        return self._stations[station].outputs

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Build the address space, open the endpoint and start the heartbeat."""
        cfg = self.config
        users = PasswordUserManager(
            cfg.users, allow_anonymous=cfg.allow_insecure, secure_channel_only=not cfg.allow_insecure
        )
        server = Server(user_manager=users)
        await server.init()
        server.set_endpoint(cfg.endpoint)
        server.set_server_name("cellsight vision system")
        await server.set_application_uri(APPLICATION_URI)
        policies = [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
        tokens: list[type] = [ua.UserNameIdentityToken]
        if cfg.allow_insecure:
            _log.warning("PLC link: unencrypted endpoint and anonymous login enabled (commissioning only)")
            policies.append(ua.SecurityPolicyType.NoSecurity)
            tokens.append(ua.AnonymousIdentityToken)
        server.set_security_policy(policies)
        server.set_identity_tokens(tokens)
        if cfg.certificate is not None and cfg.private_key is not None:
            await server.load_certificate(str(cfg.certificate), pem_or_der(cfg.certificate))
            await server.load_private_key(str(cfg.private_key), format=pem_or_der(cfg.private_key))
        if cfg.trusted_client_certificates is not None:
            store = TrustStore([cfg.trusted_client_certificates], [])
            await store.load()
            options = (
                CertificateValidatorOptions.BASIC_VALIDATION
                | CertificateValidatorOptions.TRUSTED
                | CertificateValidatorOptions.PEER_CLIENT
            )
            server.set_certificate_validator(CertificateValidator(options, store))
        self._ns = await server.register_namespace(NAMESPACE_URI)
        await self._build_address_space(server)
        await server.start()  # on failure (port taken, bad key) nothing is left running
        self._server = server
        for name, handshake in self._stations.items():
            await self._write(name, handshake.set_operational())
        self._heartbeat_task = asyncio.create_task(self._beat())

    async def stop(self) -> None:
        """Show Halted, abandon inspections in flight (their PLC sees no result) and close the endpoint."""
        if self._server is None:
            return
        for name, handshake in self._stations.items():
            await self._write(name, handshake.set_halted())
        tasks = [*self._tasks, *([self._heartbeat_task] if self._heartbeat_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server, self._server = self._server, None
        await server.stop()

    async def _build_address_space(self, server: Server) -> None:
        ns = self._ns
        root = await server.nodes.objects.add_object(node_id(ns, None, ROOT), ua.QualifiedName(ROOT, ns))
        await root.add_variable(node_id(ns, None, HEARTBEAT), ua.QualifiedName(HEARTBEAT, ns), 0, ua.VariantType.UInt32)
        aspace = server.iserver.aspace
        for station, handshake in self._stations.items():
            obj = await root.add_object(node_id(ns, None, station), ua.QualifiedName(station, ns))
            for name, vtype in PLC_WRITABLE.items():
                initial: Any = "" if vtype is ua.VariantType.String else False
                var = await obj.add_variable(node_id(ns, station, name), ua.QualifiedName(name, ns), initial, vtype)
                await var.set_writable()
                if name != "CellId":  # read when Trigger rises
                    # runs inside the PLC's Write request: Busy is already set when the PLC gets the response
                    callback = self._on_plc_write(station, name)
                    aspace.add_datachange_callback(var.nodeid, ua.AttributeIds.Value, callback)
            for attr, (name, vtype) in _OUTPUT_NODES.items():
                value = _value(getattr(handshake.outputs, attr))
                await obj.add_variable(node_id(ns, station, name), ua.QualifiedName(name, ns), value, vtype)
            self._written[station] = handshake.outputs

    def _on_plc_write(self, station: str, name: str) -> Any:
        async def changed(_handle: int, value: ua.DataValue) -> None:
            handshake = self._stations[station]
            flag = bool(value.Value.Value) if value.Value is not None else False
            if name == "Trigger":
                step = handshake.on_trigger(flag, self._read_cell_id(station))
            else:
                step = handshake.on_ack(flag)
            await self._apply(station, step)

        return changed

    def _read_cell_id(self, station: str) -> str:
        assert self._server is not None
        value = self._server.read_attribute_value(node_id(self._ns, station, "CellId")).Value
        return str(value.Value or "").strip() if value is not None else ""

    async def _apply(self, station: str, step: Step) -> None:
        await self._write(station, step.outputs)
        if step.start:
            task = asyncio.create_task(self._run_inspection(station, step.cell_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_inspection(self, station: str, cell_id: str | None) -> None:
        timeout = self.config.inspect_timeout_s
        try:
            result = await asyncio.wait_for(self._inspect(station, cell_id), timeout)
            if not isinstance(result, PlcResult) or not isinstance(result.verdict, Verdict):
                raise TypeError(f"inspection returned {type(result).__name__}, not a PlcResult")
            outcome = replace(result, score=float(result.score))
        except TimeoutError:
            outcome = _failed(cell_id, f"inspection timed out after {timeout:g} s")
        except Exception as exc:
            _log.exception("PLC link: inspection at %s of cell %s failed", station, cell_id)
            outcome = _failed(cell_id, f"inspection failed: {type(exc).__name__}: {exc}")
        await self._write(station, self._stations[station].on_result(outcome).outputs)

    async def _write(self, station: str, outputs: Outputs) -> None:
        """Write the outputs that changed since the last write, in the order of `_OUTPUT_NODES`."""
        if self._server is None:
            return
        before = self._written.get(station)
        for attr, (name, vtype) in _OUTPUT_NODES.items():
            value = getattr(outputs, attr)
            old = getattr(before, attr) if before is not None else None
            if before is not None and (value == old or (_isnan(value) and _isnan(old))):
                continue
            datavalue = ua.DataValue(ua.Variant(_value(value), vtype))
            await self._server.write_attribute_value(node_id(self._ns, station, name), datavalue)
        self._written[station] = outputs

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_PERIOD_S)
            self._heartbeat = (self._heartbeat + 1) % 2**32
            if self._server is not None:
                datavalue = ua.DataValue(ua.Variant(self._heartbeat, ua.VariantType.UInt32))
                await self._server.write_attribute_value(node_id(self._ns, None, HEARTBEAT), datavalue)


def _failed(cell_id: str | None, error: str) -> PlcResult:
    return PlcResult(Verdict.ERROR, math.nan, None, cell_id or "", model_version="", error=error)


def _isnan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


__all__ = ["APPLICATION_URI", "NAMESPACE_URI", "PLC_WRITABLE", "PlcServer", "node_id"]
