"""The line runtime end to end on real files and a real database (SQLite and PostgreSQL).

Stations read images from folders (the synthetic stations have their own tests); a classical model
keeps these fast. What matters here is the line's bookkeeping: every inspection recorded, bad images
never OK, rejects leave the line, runs resume, SIGKILL loses nothing committed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from cellsight.data.sources import load_dataset
from cellsight.inference.seam import LocalModel
from cellsight.line.config import load_line_config
from cellsight.line.runtime import LineRuntime
from cellsight.storage.records import Disposition, Reason
from cellsight.storage.store import TraceStore
from cellsight.types import Prediction, Verdict
from cellsight.workflows.train import TrainRequest, train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def station_model(tiny_mvtec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("line-model") / "classical.safetensors"
    train(load_dataset(tiny_mvtec), out, TrainRequest("classical", val_fraction=0.25))
    return out


@pytest.fixture(scope="module")
def station_images(tiny_mvtec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two stations' folders: 10 good, 5 cracks, 5 spots each, interleaved, and one truncated file."""
    root = tmp_path_factory.mktemp("line-images")
    files = sorted((tiny_mvtec / "test").glob("*/*.png"), key=lambda p: (p.stem, p.parent.name))
    for station in ("first", "second"):
        folder = root / station
        folder.mkdir()
        for i, path in enumerate(files):
            shutil.copy(path, folder / f"{i:03d}-{path.parent.name}.png")
    truncated = root / "first" / "004-good.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    return root


def _config(tmp_path: Path, model: Path, images: Path, database: str, extra: str = "") -> Path:
    path = tmp_path / "line.yaml"
    path.write_text(
        f"""
line: test-line
database: {database}
output_dir: {tmp_path / "out"}
save_images: not_ok
{extra}
stations:
  - name: first
    model: {model}
    source: {{kind: folder, path: {images / "first"}}}
    read_code: false
  - name: second
    model: {model}
    source: {{kind: folder, path: {images / "second"}}}
    read_code: false
"""
    )
    return path


def _runtime(path: Path) -> tuple[LineRuntime, TraceStore]:
    config, sha = load_line_config(path)
    store = TraceStore.open(config.database)
    return LineRuntime(config, sha, store), store


def test_reject_policy_records_every_inspection_and_rejects_at_the_first_ng(
    tmp_path: Path, station_model: Path, station_images: Path, database_url: str
) -> None:
    runtime, store = _runtime(_config(tmp_path, station_model, station_images, database_url))
    with store:
        summary = runtime.run()
        assert summary.progress.cells == 20 and summary.stopped_early is not None  # the folders ran dry
        cells = store.cells(summary.run_id)
        inspections = store.inspections(summary.run_id)
        assert [c.sequence for c in cells] == list(range(20))
        by_cell = {c.sequence: [r for r in inspections if r.sequence == c.sequence] for c in cells}
        for cell in cells:
            records = by_cell[cell.sequence]
            if cell.disposition is Disposition.OK:
                assert [r.verdict for r in records] == [Verdict.OK, Verdict.OK]
            else:  # rejected at once: nothing after the first station that did not pass it
                assert records[-1].station == cell.failed_station and not records[-1].verdict.passes
                assert all(r.verdict.passes for r in records[:-1])
        bad = next(c for c in cells if c.sequence == 4)
        assert (bad.disposition, bad.reason, bad.failed_station) == (Disposition.REVIEW, Reason.BAD_IMAGE, "first")
        (record,) = by_cell[4]
        assert record.verdict is Verdict.ERROR and "004-good.png" in (record.error or "")
        defects = [c for c in cells if "good" not in Path(by_cell[c.sequence][0].image_path or "x-good").stem]
        assert sum(c.disposition is Disposition.NG for c in defects) >= 8  # the classical model finds most
        ng = next(r for r in inspections if r.verdict is Verdict.NG)
        assert ng.heatmap_path is not None and Path(ng.heatmap_path).is_file()
        assert store.run(summary.run_id).status == "finished"


def test_inspect_all_policy_inspects_every_cell_at_every_station(
    tmp_path: Path, station_model: Path, station_images: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'trace.db'}"
    runtime, store = _runtime(_config(tmp_path, station_model, station_images, database, "on_ng: inspect_all"))
    with store:
        summary = runtime.run()
        assert store.counts(summary.run_id) == (40, 20)


def test_a_run_resumes_where_it_stopped(tmp_path: Path, station_model: Path, station_images: Path) -> None:
    path = _config(tmp_path, station_model, station_images, f"sqlite:///{tmp_path / 'trace.db'}")
    runtime, store = _runtime(path)
    with store:
        first = runtime.run(cells=7, should_stop=None)
    runtime, store = _runtime(path)
    with store:
        store.set_run_status(first.run_id, "stopped")
        second = runtime.run()
        assert (second.run_id, second.resumed_from, second.progress.cells) == (first.run_id, 7, 13)
        assert [c.sequence for c in store.cells(first.run_id)] == list(range(20))
        third = runtime.run()  # the finished run is not resumed: a new one starts
        assert third.run_id != first.run_id


def test_sigkill_loses_no_committed_inspection_and_the_restart_resumes(
    tmp_path: Path, station_model: Path, station_images: Path, database_url: str
) -> None:
    path = _config(tmp_path, station_model, station_images, database_url, "takt_per_minute: 400")
    command = [sys.executable, "-m", "cellsight", "line", "run", "--config", str(path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store = TraceStore.open(database_url)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _committed_cells(store) < 6:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        (run,) = store.runs()
        assert run.status == "running"  # nobody got to mark it
        before = store.inspections(run.id)
        cells_before = store.cells(run.id)
        assert 6 <= len(cells_before) < 20
        assert all(r.model_hash and r.inspected_at and r.verdict in Verdict for r in before)
        restart = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert restart.returncode == 0, restart.stderr
        assert f"resumed run {run.id} at cell {len(cells_before)}" in restart.stderr.replace("\n", " ")
        after = store.inspections(run.id)
        assert list(map(repr, after[: len(before)])) == list(map(repr, before))  # nothing lost or rewritten (NaN-safe)
        assert [c.sequence for c in store.cells(run.id)] == list(range(20))
        keys = [(r.sequence, r.station) for r in after]
        assert len(keys) == len(set(keys))
        assert store.run(run.id).status == "finished"
    finally:
        if process.poll() is None:
            process.kill()
        store.close()


def _committed_cells(store: TraceStore) -> int:
    with store.engine.connect() as connection:
        try:
            return int(connection.execute(text("SELECT count(*) FROM cells")).scalar() or 0)
        except Exception:
            return 0


def test_line_report_cli_prints_yields_and_writes_html_and_json(
    tmp_path: Path, station_model: Path, station_images: Path
) -> None:
    path = _config(tmp_path, station_model, station_images, f"sqlite:///{tmp_path / 'trace.db'}")
    run = subprocess.run([sys.executable, "-m", "cellsight", "line", "run", "--config", str(path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "yield" in run.stderr and "time per stage" in run.stderr
    html, json_path = tmp_path / "q.html", tmp_path / "q.json"
    report = subprocess.run(
        [sys.executable, "-m", "cellsight", "line", "report", "--config", str(path), "--html", str(html),
         "--json", str(json_path), "--cell", "004-good", "--subgroup", "5"],
        capture_output=True, text=True, timeout=300,
    )
    assert report.returncode == 0, report.stderr
    output = report.stdout + report.stderr
    assert "first" in output and "second" in output and "bad_image" in output
    assert html.is_file() and "plotly" in html.read_text()
    figures = json.loads(json_path.read_text())
    with TraceStore.open(f"sqlite:///{tmp_path / 'trace.db'}") as store:
        run_row = store.latest_run("test-line")
        assert run_row is not None
        recorded = store.inspections(run_row.id)
    # Every cell is inspected at the first station; the second sees those the first did not reject.
    rejected_first = sum(1 for r in recorded if r.station == "first" and not r.verdict.passes)
    assert figures["final"]["cells"] == 20 and figures["inspections"] == len(recorded) == 40 - rejected_first
    assert figures["genealogy"]["cell_id"] == "004-good"


def _rows(store: TraceStore, run_id: int) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    inspections = [(r.sequence, r.station, r.cell_id, r.verdict, None if math.isnan(r.score) else r.score, r.reason,
                    r.defect_class, r.error) for r in store.inspections(run_id)]
    cells = [(c.sequence, c.cell_id, c.disposition, c.failed_station, c.reason) for c in store.cells(run_id)]
    return sorted(inspections, key=lambda r: (r[0], r[1])), cells


@pytest.mark.parametrize("on_ng", ["reject", "inspect_all"])
def test_a_pipelined_line_records_what_the_sequential_line_records(
    tmp_path: Path, station_model: Path, station_images: Path, on_ng: str
) -> None:
    results = {}
    for mode in ("sequential", "pipelined"):
        extra = f"on_ng: {on_ng}\npipelined: {str(mode == 'pipelined').lower()}\ninference: {{max_batch_size: 4}}"
        folder = tmp_path / mode
        folder.mkdir()
        runtime, store = _runtime(_config(folder, station_model, station_images,
                                          f"sqlite:///{folder / 'trace.db'}", extra))
        with store:
            summary = runtime.run()
            results[mode] = (_rows(store, summary.run_id), summary.progress.cells, summary.stopped_early,
                             store.run(summary.run_id).status)
            assert len(summary.latencies_ms) == summary.progress.cells
    assert results["pipelined"] == results["sequential"]
    assert results["sequential"][1] == 20 and results["sequential"][2] is not None  # the folders ran dry


def test_a_pipelined_run_resumes_where_it_stopped(tmp_path: Path, station_model: Path, station_images: Path) -> None:
    path = _config(tmp_path, station_model, station_images, f"sqlite:///{tmp_path / 'trace.db'}", "pipelined: true")
    runtime, store = _runtime(path)
    with store:
        first = runtime.run(cells=7)
        assert [c.sequence for c in store.cells(first.run_id)] == list(range(7))
        store.set_run_status(first.run_id, "stopped")
    runtime, store = _runtime(path)
    with store:
        second = runtime.run()
        assert (second.run_id, second.resumed_from, second.progress.cells) == (first.run_id, 7, 13)
        assert [c.sequence for c in store.cells(first.run_id)] == list(range(20))


def test_every_station_model_is_warmed_up_before_the_first_cell(
    tmp_path: Path, station_model: Path, station_images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold model makes the first cell seconds late: the runtime scores one blank image per station first."""
    scored: list[int] = []
    predict = LocalModel.predict

    def counted(self: LocalModel, images: Sequence[np.ndarray]) -> list[Prediction]:
        scored.append(len(images))
        return predict(self, images)

    monkeypatch.setattr(LocalModel, "predict", counted)
    runtime, store = _runtime(_config(tmp_path, station_model, station_images, f"sqlite:///{tmp_path / 't.db'}"))
    with store:
        assert scored == [1, 1] and store.latest_run("test-line") is None  # before any run or cell
        runtime.run(cells=2)
        runtime.close()
    assert len(scored) > 2
