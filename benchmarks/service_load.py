"""Inspection service under load: latency with one client, sustained rate with 1, 4 and 8 concurrent clients.

The service runs as `cellsight serve` does, in its own process (uvicorn on loopback), with a small classical
model on 128x128 images; clients are threads with keep-alive connections. After each round, every answered
inspection must be in the store, with no request lost and no sequence number repeated.

    PYTHONPATH=src .venv/bin/python benchmarks/service_load.py [--requests 100] [--no-record]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import header, save_json, write_section
from cellsight.service.testing import cell_image, make_good_set, png_bytes, train_tiny_model, write_line_config
from cellsight.storage.store import TraceStore

SIZE = 128


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(config: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    """`cellsight serve` in a child process; returns it and the admin token it prints on first start."""
    code = "import typer; from cellsight.cli.serve import serve; typer.run(serve)"
    proc = subprocess.Popen([sys.executable, "-c", code, "--config", str(config), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    token = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline().strip()
        if line.startswith("cs_"):
            token = line
        if "Uvicorn running" in line or "Application startup complete" in line:
            # Keep reading its output (the access log): a full pipe would stall the server mid-benchmark.
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            return proc, token
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("the service did not start")


def run_round(url: str, token: str, images: list[bytes], clients: int, per_client: int, tag: str) -> dict[str, float]:
    def work(worker: int) -> list[tuple[float, int]]:
        out = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
            for i in range(per_client):
                started = time.perf_counter()
                response = client.post("/v1/stations/cell/inspect", data={"cell_id": f"{tag}-{worker}-{i}"},
                                       files={"image": ("cell.png", images[(worker * 7 + i) % len(images)])})
                out.append(((time.perf_counter() - started) * 1000.0, response.status_code))
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for batch in pool.map(work, range(clients)) for r in batch]
    wall = time.perf_counter() - started
    latencies = np.array([ms for ms, _ in results])
    failed = sum(status != 200 for _, status in results)
    return {"clients": clients, "requests": len(results), "failed": failed, "seconds": wall,
            "per_second": len(results) / wall, "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100, help="requests per client in each round")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    title = header(f"Inspection service load (uvicorn on loopback, classical model, {SIZE}x{SIZE} PNG)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = train_tiny_model(make_good_set(work / "data", n=40, size=SIZE), work / "model.safetensors", "bench",
                                 image_size=SIZE)
        database = f"sqlite:///{work / 'trace.db'}"
        config = write_line_config(work / "line", database, model, stations=("cell",), save_images="not_ok")
        rng = np.random.default_rng(0)
        images = [png_bytes(cell_image(rng, SIZE, defect=i % 10 == 0)) for i in range(50)]
        proc, token = start_server(config, port := free_port())
        url = f"http://127.0.0.1:{port}"
        try:
            rounds = [run_round(url, token, images, clients, args.requests, f"c{clients}") for clients in (1, 4, 8)]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        with TraceStore.open(database) as store:
            records = store.inspections()
    sent = sum(int(r["requests"]) for r in rounds)
    lost = sent - len(records) + sum(int(r["failed"]) for r in rounds)
    unique = len({(r.run_id, r.sequence) for r in records}) == len(records)
    rows = "\n".join(
        f"| {r['clients']:.0f} | {r['requests']:.0f} | {r['per_second']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
        f"| {r['failed']:.0f} |" for r in rounds
    )
    body = title + (
        f"- requests sent {sent}, inspections in the store {len(records)}, lost or failed {lost}, "
        f"sequence numbers unique: {unique}\n\n"
        "| clients | requests | inspections/s | p50 ms | p99 ms | failed |\n|---:|---:|---:|---:|---:|---:|\n"
        f"{rows}\n\nOne client's p50/p99 is the per-inspection latency (upload, decode, inference under the "
        "station lock, PNG files for NG, commit with synchronous=FULL, answer). More clients than stations "
        "mostly queue on the one station's lock: the rate shows what one station sustains, not a scale-out.\n"
    )
    print(body)
    save_json("service_load", {"rounds": rounds, "sent": sent, "stored": len(records), "lost": lost})
    if not args.no_record:
        write_section("service-load", body)
    if lost or not unique:
        raise SystemExit(f"lost {lost} inspections or repeated sequence numbers")


if __name__ == "__main__":
    main()
