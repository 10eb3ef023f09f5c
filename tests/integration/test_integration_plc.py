"""The PLC link over real OPC UA: an asyncua client plays the PLC against PlcServer on 127.0.0.1.

Every test runs over the production set-up (Basic256Sha256 SignAndEncrypt, user name and password, a
trusted client certificate) unless it tests the set-up itself.
"""

from __future__ import annotations

import asyncio
import math
import socket
import sys
import threading
from asyncio.subprocess import PIPE
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from asyncua import Client, ua
from asyncua.ua.uaerrors import (
    BadCertificateUntrusted,
    BadIdentityTokenRejected,
    BadUserAccessDenied,
    UaError,
)

from cellsight.plc import PlcConfig, PlcResult, PlcServer
from cellsight.plc.auth import hash_password
from cellsight.plc.certs import write_self_signed
from cellsight.plc.opcua_server import APPLICATION_URI
from cellsight.plc.simulate_plc import SIMULATOR_URI, heartbeat_node, make_client, run_cycle, secure, station_nodes
from cellsight.types import Verdict

pytestmark = pytest.mark.integration
T = TypeVar("T")
USER, PASSWORD = "plc", "line-1-secret"
TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Pki:
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    trusted: Path
    untrusted_cert: Path
    untrusted_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    (root / "trusted").mkdir()
    pki = Pki(
        root / "server.pem",
        root / "server.key",
        root / "trusted" / "plc.pem",
        root / "plc.key",
        root / "trusted",
        root / "rogue.pem",
        root / "rogue.key",
    )
    write_self_signed(pki.server_cert, pki.server_key, APPLICATION_URI, server=True, host="127.0.0.1")
    write_self_signed(pki.client_cert, pki.client_key, SIMULATOR_URI, server=False, host="127.0.0.1")
    write_self_signed(pki.untrusted_cert, pki.untrusted_key, SIMULATOR_URI, server=False, host="127.0.0.1")
    return pki


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(pki: Pki, **overrides: Any) -> PlcConfig:
    values: dict[str, Any] = {
        "endpoint": f"opc.tcp://127.0.0.1:{_free_port()}/cellsight/",
        "stations": ["EL", "VIS"],
        "users": {USER: hash_password(PASSWORD, n=2**10)},
        "certificate": pki.server_cert,
        "private_key": pki.server_key,
        "trusted_client_certificates": pki.trusted,
        "inspect_timeout_s": TIMEOUT_S,
    }
    values.update(overrides)
    return PlcConfig(**values)


_arrived: dict[str, set[str]] = {}


async def inspect(station: str, cell_id: str | None) -> PlcResult:
    """Behaviour chosen by the cell ID's prefix: OK-, NG-, ERR-, RAISE-, HANG-, SLOW-, PAIR-."""
    cell = cell_id or "READ-0001"
    kind = cell.split("-")[0]
    if kind == "RAISE":
        raise RuntimeError("camera unplugged")
    if kind == "HANG":
        await asyncio.sleep(3600)
    if kind == "SLOW":
        await asyncio.sleep(0.15)
    if kind == "PAIR":  # returns only once two stations are inspecting this cell at the same time
        _arrived.setdefault(cell, set()).add(station)
        while len(_arrived[cell]) < 2:
            await asyncio.sleep(0.005)
        cell = f"{cell}@{station}"
    verdict = {"NG": Verdict.NG, "ERR": Verdict.ERROR}.get(kind, Verdict.OK)
    score = {Verdict.OK: 0.1, Verdict.NG: 0.9, Verdict.ERROR: math.nan}[verdict]
    return PlcResult(verdict, score, "crack" if verdict is Verdict.NG else None, cell, f"{station}-model-3")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 20))


async def _secure_client(server: PlcServer, pki: Pki, password: str = PASSWORD) -> Client:
    client = make_client(server.config.endpoint, USER, password)
    await secure(client, pki.client_cert, pki.client_key)
    return client


class ServerThread:
    """A PlcServer on its own event loop and thread, shared by the module's tests (asyncua takes ~2 s to start).

    Each test drives its own stations, so no test sees another's handshake state.
    """

    def __init__(self, config: PlcConfig) -> None:
        self.server = PlcServer(config, inspect)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


STATIONS = ["EL", "VIS", "Busy1", "Fail1", "Fail2", "Fail3", "Refuse1", "Access1", "Misc1"]


@pytest.fixture(scope="module")
def plc(pki: Pki) -> Iterator[PlcServer]:
    thread = ServerThread(_config(pki, stations=STATIONS))
    yield thread.server
    thread.close()


def with_plc(plc: PlcServer, pki: Pki, body: Callable[[PlcServer, Client], Awaitable[None]]) -> None:
    """Connect a secure PLC client to the shared server and run `body`."""

    async def go() -> None:
        client = await _secure_client(plc, pki)
        async with client:
            await body(plc, client)

    run(go())


def test_two_stations_full_cycle_concurrently(plc: PlcServer, pki: Pki) -> None:
    async def body(server: PlcServer, client: Client) -> None:
        el, vis = await station_nodes(client, "EL"), await station_nodes(client, "VIS")
        assert await el.state.read_value() == "Operational"
        # one PLC drives both stations at once: each PAIR inspection waits for the other station's (else it would
        # time out and come back NG), so the two must run concurrently
        a, b = await asyncio.gather(run_cycle(client, el, "PAIR-1"), run_cycle(client, vis, "PAIR-1"))
        assert (a.result, a.cell_id, a.defect_class, a.error_text) == ("OK", "PAIR-1@EL", "", "")
        assert (b.result, b.cell_id, b.error_text) == ("OK", "PAIR-1@VIS", "")
        c, d = await asyncio.gather(run_cycle(client, el, "SLOW-EL-2"), run_cycle(client, vis, "NG-VIS-2"))
        assert (c.result, c.cell_id, c.trigger_to_result_s >= 0.15) == ("OK", "SLOW-EL-2", True)
        assert (d.result, d.cell_id, d.defect_class, d.score) == ("NG", "NG-VIS-2", "crack", 0.9)
        for station, nodes in (("EL", el), ("VIS", vis)):
            values = await client.read_values([nodes.busy, nodes.result_ready, nodes.state])
            assert values == [False, False, "Operational"]
            assert server.outputs(station).inspection_count == 2
        model = client.get_node(f"ns={server.namespace_index};s=VIS.ModelVersion")
        assert await model.read_value() == "VIS-model-3"
        for i in range(3):  # back-to-back cycles on one station
            assert (await run_cycle(client, el, f"OK-{i}")).result == "OK"
        assert server.outputs("EL").inspection_count == 5

    with_plc(plc, pki, body)


def test_busy_is_set_when_the_trigger_write_returns(plc: PlcServer, pki: Pki) -> None:
    async def body(server: PlcServer, client: Client) -> None:
        st = await station_nodes(client, "Busy1")
        await st.cell_id.write_value("SLOW-1")
        await st.trigger.write_value(True)
        assert await client.read_values([st.busy, st.result_ready]) == [True, False]
        ns = server.namespace_index
        assert await client.get_node(f"ns={ns};s=Busy1.SubState").read_value() == "SingleExecution"
        while not await st.result_ready.read_value():
            await asyncio.sleep(0.01)
        await st.ack.write_value(True)
        await client.write_values([st.trigger, st.ack], [False, False])

    with_plc(plc, pki, body)


@pytest.mark.parametrize(
    ("station", "cell", "error"),
    [
        ("Fail1", "ERR-1", "inspection of cell ERR-1 returned ERROR"),
        ("Fail2", "RAISE-1", "inspection failed: RuntimeError: camera unplugged"),
        ("Fail3", "HANG-1", f"inspection timed out after {TIMEOUT_S:g} s"),
    ],
)
def test_failed_inspection_reaches_the_plc_as_ng(plc: PlcServer, pki: Pki, station: str, cell: str, error: str) -> None:
    async def body(server: PlcServer, client: Client) -> None:
        cycle = await run_cycle(client, await station_nodes(client, station), cell)
        assert cycle.result == "NG" and cycle.error_text == error and math.isnan(cycle.score)
        if cell == "HANG-1":
            assert TIMEOUT_S <= cycle.trigger_to_result_s < TIMEOUT_S + 0.5
        ok = await run_cycle(client, await station_nodes(client, station), "OK-2")  # the station recovers
        assert ok.result == "OK" and ok.error_text == ""

    with_plc(plc, pki, body)


def test_trigger_during_busy_is_refused(plc: PlcServer, pki: Pki) -> None:
    async def body(server: PlcServer, client: Client) -> None:
        el = await station_nodes(client, "Refuse1")
        await client.write_values([el.cell_id, el.trigger], ["SLOW-1", True])
        await el.trigger.write_value(False)
        await client.write_values([el.cell_id, el.trigger], ["OK-2", True])  # second rising edge while busy
        assert await el.state.read_value() == "Error"
        assert await el.error_text.read_value() == "trigger for cell OK-2 refused: station busy with cell SLOW-1"
        while not await el.result_ready.read_value():
            await asyncio.sleep(0.01)
        assert await client.read_values([el.result, el.result_cell_id]) == ["OK", "SLOW-1"]
        assert server.outputs("Refuse1").inspection_count == 1  # the refused trigger was not queued
        await el.ack.write_value(True)
        await client.write_values([el.trigger, el.ack], [False, False])
        cycle = await run_cycle(client, el, "OK-3")
        assert cycle.result == "OK" and await el.state.read_value() == "Operational"
        assert server.outputs("Refuse1").inspection_count == 2

    with_plc(plc, pki, body)


def test_heartbeat_increases(plc: PlcServer, pki: Pki) -> None:
    async def body(server: PlcServer, client: Client) -> None:
        beat = await heartbeat_node(client)
        assert await beat.read_data_type_as_variant_type() is ua.VariantType.UInt32
        first = await beat.read_value()
        await asyncio.sleep(1.3)
        assert await beat.read_value() > first

    with_plc(plc, pki, body)


def test_only_plc_inputs_are_writable(plc: PlcServer, pki: Pki) -> None:
    async def body(server: PlcServer, client: Client) -> None:
        el = await station_nodes(client, "Access1")
        for node in (el.trigger, el.cell_id, el.ack):
            assert await node.get_access_level() == {ua.AccessLevel.CurrentRead, ua.AccessLevel.CurrentWrite}
            assert ua.AccessLevel.CurrentWrite in await node.get_user_access_level()
        beat = await heartbeat_node(client)
        for node, value in ((el.result, "OK"), (el.busy, True), (el.result_ready, True), (el.state, "Operational")):
            assert ua.AccessLevel.CurrentWrite not in await node.get_access_level()
            with pytest.raises(BadUserAccessDenied):
                await node.write_value(value)
        with pytest.raises(BadUserAccessDenied):
            await beat.write_value(ua.Variant(7, ua.VariantType.UInt32))
        assert await el.result.read_value() == ""

    with_plc(plc, pki, body)


def test_wrong_password_rejected(plc: PlcServer, pki: Pki) -> None:
    async def go() -> None:
        client = await _secure_client(plc, pki, password="guess")
        with pytest.raises(BadUserAccessDenied):
            await client.connect()
        await client.disconnect()  # tidy the half-open channel

    run(go())


def test_anonymous_and_insecure_refused_when_secure(plc: PlcServer, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        endpoint = plc.config.endpoint
        endpoints = await Client(endpoint).connect_and_get_server_endpoints()
        assert {e.SecurityPolicyUri.rsplit("#", 1)[1] for e in endpoints} == {"Basic256Sha256"}
        assert {e.SecurityMode for e in endpoints} == {ua.MessageSecurityMode.SignAndEncrypt}
        anonymous = make_client(endpoint)
        await secure(anonymous, pki.client_cert, pki.client_key)
        with pytest.raises(BadIdentityTokenRejected):
            await anonymous.connect()
        await anonymous.disconnect()
        # A client that ignores the endpoint list and logs in over the discovery-only None channel, where asyncua
        # would activate a session: the server must refuse it even with the right password.
        monkeypatch.setattr(Client, "find_endpoint", staticmethod(lambda eps, mode, uri: eps[0]))
        plain = make_client(endpoint, USER, PASSWORD)
        await plain.connect_socket()
        try:
            await plain.send_hello()
            await plain.open_secure_channel()
            await plain.create_session()
            with pytest.raises(BadUserAccessDenied):
                await plain.activate_session(username=USER, password=PASSWORD)
            with pytest.raises(UaError):
                await (await station_nodes(plain, "Misc1")).trigger.write_value(True)
        finally:
            plain.disconnect_socket()
        assert plc.outputs("Misc1").inspection_count == 0 and not plc.outputs("Misc1").busy

    run(go())


def test_untrusted_client_certificate_refused(plc: PlcServer, pki: Pki) -> None:
    async def go() -> None:
        client = make_client(plc.config.endpoint, USER, PASSWORD)
        await secure(client, pki.untrusted_cert, pki.untrusted_key)
        with pytest.raises(BadCertificateUntrusted):
            await client.connect()
        await client.disconnect()

    run(go())


def test_commissioning_mode_allows_plain_anonymous(pki: Pki) -> None:
    async def go() -> None:
        config = _config(pki, allow_insecure=True, users={}, certificate=None, private_key=None)
        async with PlcServer(config, inspect):
            async with make_client(config.endpoint) as client:
                cycle = await run_cycle(client, await station_nodes(client, "VIS"), "")
                assert (cycle.result, cycle.cell_id) == ("OK", "READ-0001")  # no CellId: the vision system reads it
            # the commissioning tool, as a technician runs it
            args = ["--endpoint", config.endpoint, "--station", "EL", "--cells", "3", "--prefix", "NG-"]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cellsight.plc.simulate_plc", *args, stdout=PIPE, stderr=PIPE
            )
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            lines = out.decode().splitlines()
            assert [line.split()[:2] for line in lines[:3]] == [[f"NG-00000{i}", "NG"] for i in range(3)]
            assert lines[3].strip().startswith("trigger->result: n=3") and "p99=" in lines[3]

    run(go())
