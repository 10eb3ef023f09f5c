"""Fault soak: the inspection service and `line run` killed and starved mid-load, then counted.

Bounded (a few minutes on 2 cores): N clients post inspections to `cellsight serve` (its own process,
SQLite, a tiny classical model) while the service is SIGKILLed and restarted; an unreadable model is
offered mid-load; optionally (--postgres) the same load on a PostgreSQL database whose connections are
terminated mid-run; then `cellsight line run` is SIGKILLed and resumed. Afterwards every answered
inspection is looked up in the store:

- answered-but-lost: a 200 whose inspection is not in the store (must be 0);
- duplicates: a retried request whose first attempt was committed before the kill (recorded as ERROR
  duplicate_id: visible, never OK);
- 5xx answers, ERRORs, and the time from restart to /healthz answering 200.

    PYTHONPATH=src .venv/bin/python benchmarks/faults.py [--clients 4] [--kills 3] [--postgres URL] [--no-record]

Not covered (say so, not pretend): a full disk (needs a tmpfs or loop device this sandbox cannot mount).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import header, save_json, write_section
from cellsight.service.testing import cell_image, make_good_set, png_bytes, train_tiny_model, write_line_config
from cellsight.storage.store import TraceStore
from service_load import free_port, start_server

SIZE = 96


@dataclass
class Tally:
    answered: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # id -> (cell, station, verdict)
    sent: int = 0
    retries: int = 0
    server_errors: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def client_loop(url: str, token: str, images: list[bytes], worker: int, stop: threading.Event, tally: Tally) -> None:
    """Post until `stop`; a connection error (the service is down) is retried with the same cell ID."""
    i = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        while not stop.is_set():
            station = ("electrode", "can")[i % 2]
            cell = f"W{worker}-{i // 2:05d}"
            while not stop.is_set():
                try:
                    response = client.post(f"/v1/stations/{station}/inspect", data={"cell_id": cell},
                                           files={"image": ("c.png", images[(worker + i) % len(images)])})
                except httpx.TransportError:
                    with tally.lock:
                        tally.retries += 1
                    time.sleep(0.2)
                    continue
                with tally.lock:
                    tally.sent += 1
                    if response.status_code == 200:
                        body = response.json()
                        tally.answered[body["id"]] = (body["cell_id"], body["station"], body["verdict"])
                    elif response.status_code >= 500:
                        tally.server_errors += 1
                    else:
                        tally.refused += 1
                break
            i += 1


def wait_healthy(url: str, timeout: float = 120.0) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy in {timeout} s")


def restart(config: Path, port: int) -> tuple[subprocess.Popen[str], float]:
    started = time.perf_counter()
    proc, _ = start_server(config, port)
    wait_healthy(f"http://127.0.0.1:{port}")
    return proc, time.perf_counter() - started


def kill_postgres_connections(database_url: str) -> int:
    """Terminate every connection to our own benchmark database (never to anyone else's)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from cellsight.storage.engine import normalise_url

    url = make_url(normalise_url(database_url))
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        killed = connection.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :d AND pid <> "
            "pg_backend_pid()"), {"d": url.database}).scalar() or 0
    admin.dispose()
    return int(killed)


def service_soak(work: Path, database: str, model: Path, images: list[bytes], clients: int, kills: int,
                 fault: str) -> dict[str, object]:
    config = write_line_config(work / f"line-{fault}", database, model, save_images="not_ok")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc, token = start_server(config, port)
    wait_healthy(url)
    tally, stop, recoveries, garbage = Tally(), threading.Event(), [], None
    pool = ThreadPoolExecutor(clients)
    futures = [pool.submit(client_loop, url, token, images, w, stop, tally) for w in range(clients)]
    try:
        for k in range(kills):
            time.sleep(4.0)
            if fault == "sigkill":
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                proc, seconds = restart(config, port)
                recoveries.append(seconds)
            else:  # postgres: drop our connections under the running service
                kill_postgres_connections(database)
                recoveries.append(0.0)
            if k == 0:  # an unreadable model offered mid-load: refused, the live one keeps working
                garbage = httpx.post(f"{url}/v1/stations/electrode/models", timeout=60,
                                     headers={"Authorization": f"Bearer {token}"},
                                     files={"model": ("broken.safetensors", os.urandom(4096))}).status_code
        time.sleep(3.0)
    finally:
        stop.set()
        for future in futures:
            future.result()
        pool.shutdown()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    with TraceStore.open(database) as store:
        records = {i: r for i, r in ((i, store_record(store, i)) for i in tally.answered) if r is not None}
        everything = store.inspections()
    lost = [i for i in tally.answered if i not in records]
    changed = [i for i, r in records.items() if (r.cell_id, r.station, r.verdict.value) != tally.answered[i]]
    return {
        "fault": fault, "clients": clients, "faults": kills, "requests_answered": tally.sent,
        "ok_answers": len(tally.answered), "records": len(everything), "answered_but_lost": len(lost),
        "answered_but_changed": len(changed), "retries_after_connection_error": tally.retries,
        "duplicates_recorded": sum(r.reason is not None and r.reason.value == "duplicate_id" for r in everything),
        "errors_recorded": sum(r.verdict.value == "ERROR" for r in everything),
        "server_errors_5xx": tally.server_errors, "refused_4xx": tally.refused,
        "unreadable_model_answer": garbage,
        "recovery_seconds": [round(s, 1) for s in recoveries],
    }


def store_record(store: TraceStore, inspection_id: int):  # type: ignore[no-untyped-def]
    from cellsight.storage.service_store import ServiceStore

    return ServiceStore(store).inspection(inspection_id)


def line_soak(work: Path, model: Path, kills: int, cells: int) -> dict[str, object]:
    """`cellsight line run` over a folder of images, SIGKILLed `kills` times and resumed until done."""
    folder = work / "line-run" / "images"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(cells):
        (folder / f"L{i:05d}.png").write_bytes(png_bytes(cell_image(rng, SIZE, defect=i % 9 == 0)))
    database = f"sqlite:///{work / 'line-run' / 'trace.db'}"
    config = work / "line-run" / "line.yaml"
    config.write_text("\n".join([
        "line: faults-line", f"database: {database}", f"output_dir: {work / 'line-run' / 'out'}", "on_ng: inspect_all",
        "stations:", "  - name: electrode", f"    model: {model}", "    read_code: false",
        f"    source: {{kind: folder, path: {folder}}}",
        "  - name: can", f"    model: {model}", "    read_code: false", f"    source: {{kind: folder, path: {folder}}}",
    ]) + "\n")
    command = [sys.executable, "-m", "cellsight", "line", "run", "--config", str(config)]
    killed = 0
    started = time.perf_counter()
    while True:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if killed < kills:
            time.sleep(6.0)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed += 1
                continue
        proc.wait(timeout=600)
        break
    with TraceStore.open(database) as store:
        runs = store.runs("faults-line")
        run_id = runs[-1].id
        cell_rows = store.cells(run_id)
        inspections = store.inspections(run_id)
    sequences = [c.sequence for c in cell_rows]
    return {
        "cells_in_folder": cells, "sigkills": killed, "runs": len(runs), "cells_recorded": len(cell_rows),
        "missing_cells": cells - len(set(sequences)), "duplicate_cells": len(sequences) - len(set(sequences)),
        "inspections": len(inspections), "review": sum(c.disposition.value == "REVIEW" for c in cell_rows),
        "seconds": round(time.perf_counter() - started, 1),
    }


_MEMORY_PROBE = """
import sys
from pathlib import Path
from cellsight.line.station import StationInspector
inspector = StationInspector("probe", Path(sys.argv[1]), read_code=False)
inspector.warm_up()
data = Path(sys.argv[2]).read_bytes()
def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1])
Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
before = status("VmRSS:")
outcome = inspector.inspect_bytes(data, Path(sys.argv[2]).name)
print(inspector.max_pixels, outcome.verdict.value, outcome.reason, (status("VmHWM:") - before) // 1024)
"""


def memory_probe(work: Path, model: Path) -> dict[str, object]:
    """Peak memory (VmHWM reset before the request, a fresh process each) of one request at the station's
    pixel limit, and of an all-zero 16384 x 8192 PNG (refused before decoding)."""
    import struct
    import zlib

    import cv2

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"".join(b"\0" + bytes(16384) for _ in range(8192)), 9)
    bomb = work / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16384, 8192, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    side = 2048  # (16 x 96)^2 is below the floor of 2048^2: the limit of this model's station
    largest = work / "largest.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(largest), rng.integers(0, 255, (side, side, 3), np.uint8))
    found = {}
    for name, path in (("bomb", bomb), ("largest", largest)):
        out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(model), str(path)], capture_output=True,
                             text=True, check=True).stdout.split()
        found[name] = {"bytes": path.stat().st_size, "verdict": out[1], "reason": out[2], "peak_mb": int(out[3]),
                       "max_pixels": int(out[0])}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--line-cells", type=int, default=150)
    parser.add_argument("--postgres", help="also soak on this PostgreSQL server (a database cellsight_faults is made)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    title = header("Faults: SIGKILLs, dropped database connections and a broken model under load")
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = train_tiny_model(make_good_set(work / "data", n=30, size=SIZE), work / "m.safetensors", "f1",
                                 image_size=SIZE)
        rng = np.random.default_rng(0)
        images = [png_bytes(cell_image(rng, SIZE, defect=i % 10 == 0)) for i in range(40)]
        results["service_sigkill"] = service_soak(work, f"sqlite:///{work / 'svc.db'}", model, images, args.clients,
                                                  args.kills, "sigkill")
        if args.postgres:
            from sqlalchemy import create_engine, text
            from sqlalchemy.engine import make_url

            from cellsight.storage.engine import normalise_url

            admin_url = make_url(normalise_url(args.postgres))
            admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(text('DROP DATABASE IF EXISTS "cellsight_faults" WITH (FORCE)'))
                connection.execute(text('CREATE DATABASE "cellsight_faults"'))
            url = admin_url.set(database="cellsight_faults").render_as_string(hide_password=False)
            try:
                results["postgres_drop"] = service_soak(work, url, model, images, args.clients, args.kills, "postgres")
            finally:
                with admin.connect() as connection:
                    connection.execute(text('DROP DATABASE IF EXISTS "cellsight_faults" WITH (FORCE)'))
                admin.dispose()
        results["line_sigkill"] = line_soak(work, model, args.kills, args.line_cells)
        results["memory"] = memory_probe(work, model)
    print(results)
    if args.no_record:
        return
    save_json("faults", results)
    rows = ["| fault | clients | faults | answers | 200 answers | records | answered-but-lost | changed | duplicates "
            "| ERRORs | 5xx | broken model | recovery s |", "|---" * 13 + "|"]
    for key in ("service_sigkill", "postgres_drop"):
        r = results.get(key)
        if isinstance(r, dict):
            rows.append(f"| {r['fault']} | {r['clients']} | {r['faults']} | {r['requests_answered']} "
                        f"| {r['ok_answers']} "
                        f"| {r['records']} | **{r['answered_but_lost']}** | {r['answered_but_changed']} "
                        f"| {r['duplicates_recorded']} | {r['errors_recorded']} | {r['server_errors_5xx']} "
                        f"| {r['unreadable_model_answer']} | {', '.join(map(str, r['recovery_seconds']))} |")
    line, memory = results["line_sigkill"], results["memory"]
    assert isinstance(line, dict) and isinstance(memory, dict)
    body = (f"{title}\n" + "\n".join(rows) + "\n\n"
            f"`line run` over {line['cells_in_folder']} cells x 2 stations, SIGKILLed {line['sigkills']} times and "
            f"resumed: {line['cells_recorded']} cells recorded, {line['missing_cells']} missing, "
            f"{line['duplicate_cells']} duplicated, {line['inspections']} inspections, {line['review']} REVIEW, "
            f"{line['seconds']} s in all ({line['runs']} run row(s)).\n\n"
            f"Memory per request (model working size {SIZE} px; the station's pixel limit is "
            f"{memory['largest']['max_pixels']:,}): an all-zero 16384 x 8192 PNG of {memory['bomb']['bytes']:,} bytes "
            f"is refused before decoding ({memory['bomb']['verdict']} {memory['bomb']['reason']}, peak "
            f"+{memory['bomb']['peak_mb']} MB); a random 2048 x 2048 RGB PNG at the limit is inspected "
            f"({memory['largest']['verdict']}) with a peak of +{memory['largest']['peak_mb']} MB over the loaded "
            "model (VmHWM reset just before the request, a fresh process each).\n\n"
            "Answered-but-lost counts 200 answers whose inspection is not in the store afterwards. Duplicates are "
            "retries of a request whose first attempt was committed before the kill: recorded as ERROR "
            "`duplicate_id`, never OK. Recovery: from the restart to `/healthz` 200 (model load and warm-up "
            "included). A request whose PostgreSQL connection is terminated mid-request answers 500, never OK; its "
            "inspection may already be committed (a later write of the same request failed: compare records with "
            "200 answers), so a client's resend then shows as duplicate_id. Not covered here: a full disk (no tmpfs "
            "or loop device in this sandbox).\n")
    write_section("faults", body)


if __name__ == "__main__":
    main()
