"""The whole station as a plant wires it: `cellsight serve --plc` with an asyncua client as the PLC.

The PLC triggers; cellsight takes the station's next synthetic camera image, reads the DataMatrix, inspects,
commits, and only then raises ResultReady. A restarted service continues with the next image.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cellsight.data.sources import load_dataset
from cellsight.data.synth import write_station_dataset
from cellsight.plc.simulate_plc import Cycle, make_client, run_cycle, station_nodes
from cellsight.storage.records import Reason
from cellsight.storage.store import TraceStore
from cellsight.types import Verdict
from cellsight.workflows.train import TrainRequest, train

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def can_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plc-line")
    data = write_station_dataset("can", root / "synth", n_train=24, n_test_good=2, n_test_per_defect=1, seed=0,
                                 size=256)
    out = root / "can.safetensors"
    train(load_dataset(data), out, TrainRequest("classical", val_fraction=0.25))
    return out


def _write_configs(folder: Path, model: Path, database: str, opc_port: int) -> tuple[Path, Path]:
    line = folder / "line.yaml"
    line.write_text(f"""
line: plc-line
database: {database}
output_dir: {folder / "out"}
stations:
  - name: can
    model: {model}
    source: {{kind: synthetic, station: can, size: 256, seed: 5, defect_rate: 0.2}}
  - name: weld
    model: {model}
    source: {{kind: synthetic, station: weld, bad_image_rate: 1.0}}
""")
    plc = folder / "plc.yaml"
    plc.write_text(f"endpoint: opc.tcp://127.0.0.1:{opc_port}/cellsight/\nallow_insecure: true\n")
    return line, plc


def _serve(line: Path, plc: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "cellsight", "serve", "--config", str(line), "--plc", str(plc),
               "--port", str(_free_port())]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


async def _plc_cycles(endpoint: str, station: str, n: int) -> list[Cycle]:
    deadline = time.monotonic() + 90
    while True:  # the service imports torch and loads models before the OPC UA server answers
        client = make_client(endpoint)
        try:
            await client.connect()
            break
        except (TimeoutError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        nodes = await station_nodes(client, station)
        return [await run_cycle(client, nodes, "", timeout_s=30) for _ in range(n)]
    finally:
        await client.disconnect()


def _stop(process: subprocess.Popen[str]) -> str:
    os.kill(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output


def test_plc_triggers_inspections_that_are_recorded_and_resume_after_a_restart(
    tmp_path: Path, can_model: Path, database_url: str
) -> None:
    opc_port = _free_port()
    line, plc = _write_configs(tmp_path, can_model, database_url, opc_port)
    endpoint = f"opc.tcp://127.0.0.1:{opc_port}/cellsight/"
    process = _serve(line, plc)
    try:
        cycles = asyncio.run(_plc_cycles(endpoint, "can", 4))
        bad = asyncio.run(_plc_cycles(endpoint, "weld", 1))
    finally:
        output = _stop(process)
    assert "PLC link (OPC UA)" in output
    assert all(c.result in ("OK", "NG") for c in cycles)
    ids = [c.cell_id for c in cycles]
    assert all(i.startswith("LC") for i in ids) and len(set(ids)) == 4  # read from each image's DataMatrix
    assert bad[0].result == "NG" and bad[0].error_text  # a truncated camera file: NG to the PLC, with the reason

    process = _serve(line, plc)
    try:
        later = asyncio.run(_plc_cycles(endpoint, "can", 2))
    finally:
        _stop(process)
    assert not {c.cell_id for c in later} & set(ids)  # the next images, not the first ones again

    with TraceStore.open(database_url) as store:
        records = store.inspections()
    by_id = {r.cell_id: r for r in records if r.station == "can"}
    for cycle in cycles + later:  # what the PLC was told is what the store holds
        record = by_id[cycle.cell_id]
        assert record.verdict.passes == (cycle.result == "OK")
    (weld,) = [r for r in records if r.station == "weld"]
    assert weld.verdict is Verdict.ERROR and weld.reason is Reason.BAD_IMAGE
