"""Several service processes on one run of one database: sequence numbers and duplicate checks come from
the database, so two worker processes inspecting the same cells at once give unique sequences, one per
cell, duplicates caught, nothing lost. Real processes (not threads), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cellsight.line.config import load_line_config
from cellsight.service.testing import make_good_set, train_tiny_model, write_line_config
from cellsight.storage.store import TraceStore

pytestmark = pytest.mark.integration

WORKER = r'''
import json, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np
from cellsight.line.config import load_line_config
from cellsight.line.models import ModelRegistry
from cellsight.line.recorder import LineRecorder
from cellsight.service.testing import cell_image, png_bytes
from cellsight.storage.service_store import ServiceStore
from cellsight.storage.store import TraceStore

config_path, run_id, jobs = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
config, _ = load_line_config(config_path)
store = ServiceStore(TraceStore.open(config.database))
recorder = LineRecorder(config, store, ModelRegistry(config, store), run_id)
image = png_bytes(cell_image(np.random.default_rng(0)))
with ThreadPoolExecutor(4) as pool:
    done = list(pool.map(lambda job: recorder.inspect(job[0], image, "cell.png", job[1]), jobs))
print(json.dumps([[r.id, r.record.sequence, r.record.cell_id, r.record.station, r.record.reason] for r in done]))
'''


def test_two_worker_processes_give_unique_sequences_and_lose_nothing(tmp_path: Path, database_url: str) -> None:
    model = train_tiny_model(make_good_set(tmp_path / "data"), tmp_path / "model.safetensors", "v1")
    config_path = write_line_config(tmp_path / "line", database_url, model, on_ng="inspect_all", save_images="none")
    config, sha = load_line_config(config_path)
    with TraceStore.open(config.database) as trace:
        run_id = trace.start_run(config.line, sha, config.station_names)
    cells = [f"LC{i:04d}" for i in range(24)]
    # Worker A inspects every cell at the first station, worker B at the second, at the same time; B also
    # sends four cells to the first station again (a second part wearing the same code).
    jobs = {"a": [("electrode", c) for c in cells],
            "b": [("can", c) for c in cells] + [("electrode", c) for c in cells[:4]]}
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    workers = [subprocess.Popen([sys.executable, str(script), str(config_path), str(run_id), json.dumps(j)],
                                stdout=subprocess.PIPE, text=True) for j in jobs.values()]
    results = []
    for worker in workers:
        out, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0
        results += json.loads(out.strip().splitlines()[-1])
    assert len(results) == 52
    with TraceStore.open(config.database) as trace:
        stored = trace.inspections(run_id)
        assert sorted(r[0] for r in results) == sorted(set(r[0] for r in results))  # one row each
        assert len(stored) == 52  # nothing lost
    by_cell: dict[str, set[int]] = {}
    for record in stored:
        if record.reason is None:
            by_cell.setdefault(record.cell_id, set()).add(record.sequence)
    assert all(len(sequences) == 1 for sequences in by_cell.values())  # both stations agree on a cell's number
    normal = sorted(next(iter(s)) for s in by_cell.values())
    duplicates = [r for r in stored if r.reason is not None]
    assert len(normal) == 24 and len(set(normal)) == 24
    assert len(duplicates) == 4 and all(r.reason.value == "duplicate_id" for r in duplicates)
    assert {r.cell_id for r in duplicates} == set(cells[:4])
    everything = normal + [r.sequence for r in duplicates]
    assert len(set(everything)) == 28  # no sequence handed out twice
