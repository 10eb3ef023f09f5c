"""Defect naming as a user runs it: synth with labelled train defects -> train -> predict and eval name classes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cellsight.data.synth import STATIONS

pytestmark = pytest.mark.integration


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellsight", *map(str, args)], capture_output=True, text=True, timeout=600
    )


def test_train_with_train_defects_names_what_predict_flags(tmp_path: Path) -> None:
    synth = cli("synth", "--station", "can", "--out", tmp_path, "--n", "24", "--n-test-good", "4",
                "--n-test-per-defect", "2", "--n-train-per-defect", "4", "--size", "128")
    assert synth.returncode == 0, synth.stderr
    station = tmp_path / "can"
    assert (station / "ground_truth" / "dent" / "train_000_mask.png").is_file()
    model = tmp_path / "can.safetensors"
    trained = cli("train", "--data", station, "--out", model, "--image-size", "64", "--option", "bank_size=256",
                  "--option", "ignore_boxes=[[0,0,0.34,0.34]]", "--val-fraction", "0.25")
    assert trained.returncode == 0, trained.stderr
    output = " ".join(trained.stdout.split() + trained.stderr.split())
    assert "fitted on 24 good images" in output  # the anomaly model still sees goods only (all: cross-fitted)
    assert "learned defect names from labelled train defects: dent 4, leak_stain 4, missing_film 4, scratch 4" in output

    rows = tmp_path / "rows.jsonl"
    predicted = cli("predict", "--model", model, "--out", rows, station / "test")
    assert predicted.returncode == 0, predicted.stderr
    results = [json.loads(line) for line in rows.read_text().splitlines()]
    named = {r["defect_class"] for r in results if r["verdict"] == "NG"}
    assert named and named <= {*STATIONS["can"], "unknown"}
    assert all(r["defect_class"] is None for r in results if r["verdict"] == "OK")

    evaluated = cli("eval", "--model", model, "--data", station, "--json", tmp_path / "eval.json")
    assert evaluated.returncode == 0, evaluated.stderr
    naming = json.loads((tmp_path / "eval.json").read_text())["naming"]
    assert naming["n_flagged_defective"] == sum(sum(row.values()) for row in naming["confusion"].values())
    assert 0.0 <= naming["accuracy"] <= 1.0
