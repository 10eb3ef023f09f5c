"""The rule-based baseline through the real CLI: trained on good images only, evaluated with pixel metrics."""

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


def test_rules_trains_and_evaluates_through_the_cli(tiny_mvtec: Path, tmp_path: Path) -> None:
    model = tmp_path / "rules.safetensors"
    trained = cli("train", "--detector", "rules", "--data", tiny_mvtec, "--out", model,
                  "--option", "image_size=96", "--val-fraction", "0.25")
    assert trained.returncode == 0, trained.stderr
    result = cli("eval", "--model", model, "--data", tiny_mvtec, "--json", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["image_auroc"] > 0.8  # tiny_mvtec's cracks and spots on a smooth background
    assert report["pixel_auroc"] > 0.8


def test_rules_refuses_an_unknown_setting(tiny_mvtec: Path, tmp_path: Path) -> None:
    result = cli("train", "--detector", "rules", "--data", tiny_mvtec, "--out", tmp_path / "m.safetensors",
                 "--option", "registration=ecc2")
    assert result.returncode != 0
    assert "registration" in result.stderr and "'phase' | 'none'" in result.stderr
