"""`cellsight train` defaults to the accurate PatchCore; `--fast` is one option away and --option still wins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cellsight.modelfile import load_model

pytestmark = pytest.mark.integration

TINY = ["--image-size", "64", "--option", "bank_size=256", "--val-fraction", "0.25"]


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellsight", *map(str, args)], capture_output=True, text=True, timeout=600
    )


def test_default_is_exact_search_over_every_patch(tiny_mvtec: Path, tmp_path: Path) -> None:
    model = tmp_path / "default.safetensors"
    result = cli("train", "--data", tiny_mvtec, "--out", model, *TINY)
    assert result.returncode == 0, result.stderr
    settings = load_model(model).detector.settings
    assert (settings.search, settings.per_image_fraction) == ("exact", 1.0)  # type: ignore[attr-defined]


def test_fast_preset_and_an_explicit_option_over_it(tiny_mvtec: Path, tmp_path: Path) -> None:
    model = tmp_path / "fast.safetensors"
    result = cli("train", "--data", tiny_mvtec, "--out", model, "--fast", *TINY, "--option", "per_image_fraction=0.5")
    assert result.returncode == 0, result.stderr
    settings = load_model(model).detector.settings
    assert (settings.search, settings.per_image_fraction) == ("hnsw", 0.5)  # type: ignore[attr-defined]
    evaluated = cli("eval", "--model", model, "--data", tiny_mvtec)
    assert evaluated.returncode == 0, evaluated.stderr


def test_fast_is_refused_for_a_detector_without_a_preset(tiny_mvtec: Path, tmp_path: Path) -> None:
    result = cli("train", "--detector", "rules", "--fast", "--data", tiny_mvtec, "--out", tmp_path / "m.safetensors")
    assert result.returncode != 0 and "--fast is PatchCore's preset" in result.stderr
