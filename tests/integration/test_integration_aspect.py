"""`--option aspect=keep` through the real CLI on a non-square station: train (leave-one-image-out), eval with
masks at the input's size, predict with heat maps, export a verified deployment of the square tile graph."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cellsight.data import read_image
from cellsight.modelfile import load_model

pytestmark = pytest.mark.integration

HEIGHT, WIDTH = 48, 144


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellsight", *map(str, args)], capture_output=True, text=True, timeout=600
    )


def _rod(rng: np.random.Generator) -> np.ndarray:
    """A ground rod seen from the side: fine machining grooves across it and a little noise."""
    x = np.arange(WIDTH, dtype=np.float32)[None, :]
    image = 130.0 + 20.0 * np.sin(x / 3.0) + rng.normal(0.0, 4.0, (HEIGHT, WIDTH))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def wide_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MVTec layout, 48x144 images; the pits sit anywhere along the rod."""
    root = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(5)
    for folder in ("train/good", "test/good", "test/pit", "ground_truth/pit"):
        (root / folder).mkdir(parents=True)
    for i in range(16):
        cv2.imwrite(str(root / "train/good" / f"{i:03d}.png"), _rod(rng))
    for i in range(5):
        cv2.imwrite(str(root / "test/good" / f"{i:03d}.png"), _rod(rng))
        image, mask = _rod(rng), np.zeros((HEIGHT, WIDTH), np.uint8)
        cv2.circle(mask, (int(rng.integers(12, WIDTH - 12)), int(rng.integers(12, HEIGHT - 12))), 5, 255, -1)
        image[mask > 0] = 25
        cv2.imwrite(str(root / "test/pit" / f"{i:03d}.png"), image)
        cv2.imwrite(str(root / "ground_truth/pit" / f"{i:03d}_mask.png"), mask)
    return root


def test_train_eval_predict_and_export_keep_the_aspect(wide_set: Path, tmp_path: Path) -> None:
    model = tmp_path / "rod.safetensors"
    trained = cli("train", "--data", wide_set, "--out", model, "--image-size", "48",
                  "--option", "aspect=keep", "--option", "bank_size=1024")
    assert trained.returncode == 0, trained.stderr
    assert "cross-fitted (leave-one-image-out)" in " ".join(trained.stderr.split())
    assert load_model(model).detector.settings.aspect == "keep"

    evaluated = cli("eval", "--model", model, "--data", wide_set, "--json", tmp_path / "r.json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["image_auroc"] > 0.9 and report["pixel_auroc"] > 0.9  # maps line up with the input's masks

    predicted = cli("predict", "--model", model, wide_set / "test", "--out", tmp_path / "p.jsonl",
                    "--heatmaps", tmp_path / "heat")
    assert predicted.returncode == 0, predicted.stderr
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(read_image(r["heatmap"]).shape[:2] == (HEIGHT, WIDTH) for r in rows)

    exported = cli("export", "--model", model, "--out", tmp_path / "deploy", "--images", wide_set / "test")
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads((tmp_path / "deploy" / "deploy.json").read_text())
    assert manifest["input"]["aspect"] == "keep" and manifest["verification"]["verdicts_identical"]
