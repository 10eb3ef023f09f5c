"""The SimpleNet-style detector through the real CLI: trained on good images only, cross-fitted, evaluated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellsight", *map(str, args)], capture_output=True, text=True, timeout=600
    )


def test_simplenet_trains_and_evaluates_through_the_cli(tiny_mvtec: Path, tmp_path: Path) -> None:
    model = tmp_path / "simplenet.safetensors"
    options = ["image_size=96", "hidden=128", "steps=200", "batch_patches=512"]
    trained = cli(
        "train",
        "--detector",
        "simplenet",
        "--data",
        tiny_mvtec,
        "--out",
        model,
        *[part for option in options for part in ("--option", option)],
    )
    assert trained.returncode == 0, trained.stderr
    info = cli("info", model)
    assert info.returncode == 0, info.stderr
    assert '"simplenet"' in info.stdout and "folds" in info.stdout  # cross-fitted, and says how
    result = cli("eval", "--model", model, "--data", tiny_mvtec, "--json", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["image_auroc"] > 0.9  # tiny_mvtec's cracks and spots on a smooth background
    assert report["pixel_auroc"] > 0.8
