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
    costs = "\n".join(f"    {s}: {{value_added: {2 + i}, energy_kwh: {1 + i}, defect_rate: 0.25}}"
                      for i, s in enumerate(models))
    path.write_text(f"line: demo-small\ndatabase: {database}\noutput_dir: out\non_ng: inspect_all\n"
                    f"cells: 24\naudit: {{share: 0.5, rejected_share: 1.0}}\nstations:\n{stations}\n"
                    f"costs:\n  co2e_kg_per_kwh: 0.4\n  escape: 50\n  review: 0.5\n"
                    f"  end_of_line: {{value_added: 10, energy_kwh: 6}}\n  stations:\n{costs}\n")
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

    # truth: the synthetic source's class with every inspection, audit truth for every sampled cell
    with TraceStore.open(database_url) as store:
        truths = store.truths(run_info.id)
    synthetic = [t for t in truths if t.source.value == "synthetic"]
    assert len(synthetic) == len(inspections)
    audited = {c.sequence for c in cells if c.audit}
    assert audited and {t.sequence for t in truths if t.source.value == "audit"} == audited
    truth = figures["truth"]
    assert truth["line"]["with_truth"] == 24 and truth["currency"] == "EUR"
    confusion = truth["line"]["confusion"]
    assert sum(confusion["good"]) + sum(confusion["defective"]) == 24
    assert truth["run_costs"]["cells"] == 24 and truth["per_day"] and truth["per_shift"]
    printed = report.stdout + report.stderr
    assert "Against truth" in printed and "Cost of quality and energy (EUR)" in printed


def test_calibrate_chooses_the_least_cost_threshold(tmp_path: Path, station_models: dict[str, Path]) -> None:
    config = _line(tmp_path, station_models, f"sqlite:///{tmp_path / 'trace.db'}")
    data = station_models["weld"].parent / "synth" / "weld"
    out = tmp_path / "weld-cost.safetensors"
    done = cli("calibrate", "--model", station_models["weld"], "--data", data, "--costs", config, "--station", "weld",
               "--split", "test", "--out", out)  # these models had no train defects: the test split holds some
    assert done.returncode == 0, done.stderr
    assert "least expected" in done.stdout + done.stderr and "overkill" in done.stdout + done.stderr
    info = json.loads(cli("info", out).stdout)
    assert info["calibration"]["policy"] == "cost" and info["calibration"]["target"] == 0.25
    missing = cli("calibrate", "--model", station_models["weld"], "--data", data, "--costs", config)
    assert missing.returncode == 2 and "name the station" in missing.stderr + missing.stdout
    no_defects = cli("calibrate", "--model", station_models["weld"], "--data", data, "--costs", config, "--station",
                     "weld")
    assert no_defects.returncode == 2 and "needs held-out good and defective images" in no_defects.stderr
