"""Play the line PLC against a cellsight PLC link: for commissioning, tests and cycle-time benchmarks.

    python -m cellsight.plc.simulate_plc --endpoint opc.tcp://127.0.0.1:4840/cellsight/ --station EL --cells 100

It runs the handshake the way a PLC program should (see `cellsight.plc.handshake`), polling as a PLC
scan would, and prints each result and the trigger-to-result and full cycle times.
Secure endpoints: `--user`, password from `--password` or CELLSIGHT_PLC_PASSWORD, and `--certificate` /
`--private-key` of the client for Basic256Sha256 SignAndEncrypt.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.crypto.uacrypto import CertProperties

from cellsight.plc.certs import pem_or_der
from cellsight.plc.opcua_server import HEARTBEAT, NAMESPACE_URI, node_id

SIMULATOR_URI = "urn:cellsight:plc:simulator"


@dataclass(frozen=True)
class StationNodes:
    """The nodes of one station as a PLC addresses them."""

    trigger: Node
    cell_id: Node
    ack: Node
    busy: Node
    result_ready: Node
    result: Node
    result_cell_id: Node
    defect_class: Node
    score: Node
    error_text: Node
    state: Node


@dataclass(frozen=True)
class Cycle:
    """One handshake as the PLC saw it."""

    result: str
    cell_id: str
    defect_class: str
    score: float
    error_text: str
    trigger_to_result_s: float
    cycle_s: float


async def station_nodes(client: Client, station: str) -> StationNodes:
    """Resolve a station's nodes through the namespace URI (its index is not fixed)."""
    ns = await client.get_namespace_index(NAMESPACE_URI)

    def get(name: str) -> Node:
        return client.get_node(node_id(ns, station, name))

    return StationNodes(
        trigger=get("Trigger"),
        cell_id=get("CellId"),
        ack=get("ResultAck"),
        busy=get("Busy"),
        result_ready=get("ResultReady"),
        result=get("Result"),
        result_cell_id=get("ResultCellId"),
        defect_class=get("DefectClass"),
        score=get("Score"),
        error_text=get("ErrorText"),
        state=get("State"),
    )


async def heartbeat_node(client: Client) -> Node:
    return client.get_node(node_id(await client.get_namespace_index(NAMESPACE_URI), None, HEARTBEAT))


async def _wait_for(node: Node, value: bool, deadline: float) -> None:
    while await node.read_value() != value:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{node.nodeid.to_string()} did not become {value}")


async def run_cycle(client: Client, nodes: StationNodes, cell_id: str, timeout_s: float = 10.0) -> Cycle:
    """CellId + Trigger, wait for ResultReady, read the result, ResultAck, drop Trigger and ResultAck."""
    start = time.perf_counter()
    deadline = start + timeout_s
    cell = ua.DataValue(ua.Variant(cell_id, ua.VariantType.String))
    await client.write_values(
        [nodes.cell_id, nodes.trigger], [cell, ua.DataValue(ua.Variant(True, ua.VariantType.Boolean))]
    )
    await _wait_for(nodes.result_ready, True, deadline)
    ready = time.perf_counter()
    result, result_cell, defect, score, error = await client.read_values(
        [nodes.result, nodes.result_cell_id, nodes.defect_class, nodes.score, nodes.error_text]
    )
    await nodes.ack.write_value(ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))
    await _wait_for(nodes.result_ready, False, deadline)
    false = ua.DataValue(ua.Variant(False, ua.VariantType.Boolean))
    await client.write_values([nodes.trigger, nodes.ack], [false, false])
    return Cycle(result, result_cell, defect, float(score), error, ready - start, time.perf_counter() - start)


def make_client(endpoint: str, user: str | None = None, password: str | None = None, timeout_s: float = 4.0) -> Client:
    """A client with user name and password set (security is set separately, it needs to await)."""
    client = Client(endpoint, timeout=timeout_s)
    client.application_uri = SIMULATOR_URI
    if user is not None:
        client.set_user(user)
        client.set_password(password or "")
    return client


async def secure(client: Client, certificate: Path, private_key: Path) -> None:
    """Basic256Sha256 SignAndEncrypt with the client's certificate (the server's is fetched from the endpoint)."""
    cert = CertProperties(certificate, pem_or_der(certificate))
    key = CertProperties(private_key, pem_or_der(private_key))
    await client.set_security(SecurityPolicyBasic256Sha256, cert, key, mode=ua.MessageSecurityMode.SignAndEncrypt)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


async def simulate(args: argparse.Namespace) -> list[Cycle]:
    password = args.password if args.password is not None else os.environ.get("CELLSIGHT_PLC_PASSWORD")
    client = make_client(args.endpoint, args.user, password)
    if args.certificate is not None:
        await secure(client, args.certificate, args.private_key)
    cycles: list[Cycle] = []
    async with client:
        nodes = await station_nodes(client, args.station)
        for i in range(args.cells):
            cycle = await run_cycle(client, nodes, f"{args.prefix}{i:06d}", args.timeout)
            cycles.append(cycle)
            if not args.quiet:
                err = f"  error: {cycle.error_text}" if cycle.error_text else ""
                print(
                    f"{cycle.cell_id:>14} {cycle.result:2} score={cycle.score:.3f} "
                    f"trigger->result {cycle.trigger_to_result_s * 1e3:7.2f} ms "
                    f"cycle {cycle.cycle_s * 1e3:7.2f} ms{err}"
                )
    return cycles


def summary(cycles: list[Cycle]) -> str:
    """p50 / p99 / max of trigger-to-result and full-cycle times, in ms."""
    lines = []
    for label, values in (
        ("trigger->result", [c.trigger_to_result_s * 1e3 for c in cycles]),
        ("full cycle", [c.cycle_s * 1e3 for c in cycles]),
    ):
        lines.append(
            f"{label:>16}: n={len(values)} mean={statistics.fmean(values):.2f} p50={percentile(values, 50):.2f} "
            f"p99={percentile(values, 99):.2f} max={max(values):.2f} ms"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Play the line PLC against a cellsight PLC link.")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--station", required=True)
    parser.add_argument("--cells", type=int, default=10)
    parser.add_argument("--prefix", default="SIM-", help="cell ID prefix")
    parser.add_argument("--user", default=None)
    parser.add_argument("--password", default=None, help="default: $CELLSIGHT_PLC_PASSWORD")
    parser.add_argument("--certificate", type=Path, default=None, help="client certificate (secure endpoint)")
    parser.add_argument("--private-key", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per cycle before giving up")
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    args = parser.parse_args(argv)
    if (args.certificate is None) != (args.private_key is None):
        parser.error("--certificate and --private-key go together")
    cycles = asyncio.run(simulate(args))
    if cycles:
        print(summary(cycles))


if __name__ == "__main__":
    main()
