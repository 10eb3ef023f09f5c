"""The real CLI trains and evaluates a supervised model on tiny generated labelled data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.run([sys.executable, "-m", "cellsight", *args], capture_output=True, text=True, env=env)


# end-to-end fine-tuning (`full`) trains and round-trips in tests/unit/detectors/test_detectors_supervised.py
@pytest.mark.parametrize("fine_tune", ["top", pytest.param("full", marks=pytest.mark.slow)])
def test_train_supervised_then_eval(tiny_labelled: Path, tmp_path: Path, fine_tune: str) -> None:
    """Both ways of training (frozen-prefix cache, end-to-end) through the real CLI."""
    model = tmp_path / "station.safetensors"
    settings = ["image_size=64", "views=1", "max_epochs=2", "batch_size=16", "lr=0.003", f"fine_tune={fine_tune}"]
    train = _cli(
        "train", "--detector", "supervised", "--data", str(tiny_labelled / "manifest.csv"), "--out", str(model),
        "--escape", "0.2", *[a for s in settings for a in ("--option", s)],
    )
    assert train.returncode == 0, train.stderr
    assert model.is_file()
    report = tmp_path / "eval.json"
    manifest = str(tiny_labelled / "manifest.csv")
    evaluated = _cli("eval", "--model", str(model), "--data", manifest, "--json", str(report))
    assert evaluated.returncode == 0, evaluated.stderr
    data = json.loads(report.read_text())
    text = json.dumps(data)
    for key in ("accuracy", "escape", "overkill"):
        assert key in text
    assert "\"detector\": \"supervised\"" in text
    assert f"\"fine_tune\": \"{fine_tune}\"" in text
    # predict names what it flags with the class head (the same path as eval and the line).
    lines = tmp_path / "predictions.jsonl"
    predicted = _cli("predict", "--model", str(model), "--out", str(lines), str(tiny_labelled))
    assert predicted.returncode == 0, predicted.stderr
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    named = {row.get("defect_class") for row in rows if row["verdict"] == "NG"}
    assert named and named <= {"crack", "spot"}


def test_supervised_refuses_good_only_data(tiny_mvtec: Path, tmp_path: Path) -> None:
    result = _cli("train", "--detector", "supervised", "--data", str(tiny_mvtec), "--out", str(tmp_path / "m.st"))
    assert result.returncode != 0
    assert "defective" in result.stderr + result.stdout


@pytest.mark.slow  # the ensemble's training and file round trip: tests/unit/detectors/test_detectors_supervised.py
def test_train_an_ensemble_then_predict(tiny_labelled: Path, tmp_path: Path) -> None:
    model = tmp_path / "ensemble.safetensors"
    supervised = json.dumps({"image_size": 64, "views": 1, "max_epochs": 2, "batch_size": 16, "lr": 0.003})
    train = _cli(
        "train", "--detector", "ensemble", "--data", str(tiny_labelled / "manifest.csv"), "--out", str(model),
        "--option", "members=2", "--option", f"supervised={supervised}",
    )
    assert train.returncode == 0, train.stderr
    report = tmp_path / "eval.json"
    manifest = str(tiny_labelled / "manifest.csv")
    evaluated = _cli("eval", "--model", str(model), "--data", manifest, "--json", str(report))
    assert evaluated.returncode == 0, evaluated.stderr
    text = report.read_text()
    assert "\"detector\": \"ensemble\"" in text and text.count("\"image_size\": 64") >= 2
