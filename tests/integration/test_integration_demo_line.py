"""The demo battery line end to end, small: `cellsight synth` -> `train` per station -> `line run` -> `line report`,
on SQLite and on PostgreSQL, through the real CLI, with synthetic cells carrying DataMatrix IDs and injected faults.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cellsight.storage.records import Disposition, Reason
from cellsight.storage.store import TraceStore
from cellsight.types import Verdict

pytestmark = pytest.mark.integration
STATIONS = ("electrode", "weld", "can")


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cellsight", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def station_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo-line")
    made = cli("synth", "--station", "all", "--n", "40", "--n-test-good", "2", "--n-test-per-defect", "1",
               "--out", root / "synth")
    assert made.returncode == 0, made.stderr
    models = {}
    for station in STATIONS:
        models[station] = root / f"{station}.safetensors"
        trained = cli("train", "--detector", "patchcore", "--data", root / "synth" / station, "--out", models[station],
                      "--image-size", "128", "--option", "bank_size=2048", "--option",
                      "ignore_boxes=[[0,0,0.34,0.34]]", "--val-fraction", "0.25")
        assert trained.returncode == 0, trained.stderr
    return models


def _line(folder: Path, models: dict[str, Path], database: str) -> Path:
    stations = "\n".join(
        f"  - name: {s}\n    model: {m}\n    source: {{kind: synthetic, station: {s}, seed: {i + 3}, "
        f"defect_rate: 0.25, bad_image_rate: 0.1, unreadable_code_rate: 0.1}}"
        for i, (s, m) in enumerate(models.items())
    )
    path = folder / "line.yaml"
    path.write_text(f"line: demo-small\ndatabase: {database}\noutput_dir: out\non_ng: inspect_all\n"
                    f"cells: 24\nstations:\n{stations}\n")
    return path


def test_the_demo_line_runs_end_to_end(tmp_path: Path, station_models: dict[str, Path], database_url: str) -> None:
    config = _line(tmp_path, station_models, database_url)
    run = cli("line", "run", "--config", config)
    assert run.returncode == 0, run.stderr
    report_json = tmp_path / "figures.json"
    report = cli("line", "report", "--config", config, "--html", tmp_path / "report.html", "--json", report_json)
    assert report.returncode == 0, report.stderr
    assert "Rolled throughput yield" in report.stdout + report.stderr

    with TraceStore.open(database_url) as store:
        (run_info,) = store.runs()
        inspections = store.inspections(run_info.id)
        cells = store.cells(run_info.id)
    assert run_info.status == "finished" and len(cells) == 24 and len(inspections) == 24 * 3  # inspect_all
    for cell in cells:
        mine = [r for r in inspections if r.sequence == cell.sequence]
        if any(r.reason in (Reason.BAD_IMAGE, Reason.UNREADABLE_CODE) for r in mine):
            assert cell.disposition is not Disposition.OK  # faults are never passed
        if cell.disposition is Disposition.OK:
            assert all(r.verdict is Verdict.OK for r in mine)
            assert cell.cell_id.startswith("LC") and {r.cell_id for r in mine} == {cell.cell_id}
    reasons = {r.reason for r in inspections}
    assert Reason.BAD_IMAGE in reasons and Reason.UNREADABLE_CODE in reasons  # the injected faults were recorded
    assert all(r.model_hash and r.model_version for r in inspections)
    figures = json.loads(report_json.read_text())
    assert figures["final"]["cells"] == 24 and [s["station"] for s in figures["stations"]] == list(STATIONS)
