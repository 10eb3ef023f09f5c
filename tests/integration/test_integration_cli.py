"""The real CLI, as a user runs it: train, eval, predict, and what happens with bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.integration


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellsight", *map(str, args)], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def trained(tiny_mvtec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tmp_path_factory.mktemp("cli") / "station.safetensors"
    result = cli("train", "--detector", "patchcore", "--data", tiny_mvtec, "--out", model,
                 "--image-size", "96", "--option", "bank_size=1024")
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "fitted on 40 good images" in said and "cross-fitted (leave-one-image-out) images" in said
    return model


def test_train_cross_fits_on_every_good_or_holds_some_out_with_folds_0(tiny_mvtec: Path, tmp_path: Path) -> None:
    args = ("train", "--detector", "classical", "--data", tiny_mvtec, "--image-size", "48")
    crossed = cli(*args, "--out", tmp_path / "crossed.safetensors", "--folds", "4")
    assert crossed.returncode == 0, crossed.stderr
    said = " ".join(crossed.stderr.split())
    assert "fitted on 40 good images" in said and "cross-fitted (4 folds) images" in said
    training = json.loads(cli("info", tmp_path / "crossed.safetensors").stdout)["training"]
    assert training["folds"] == 4 and training["n_fit_images"] == training["n_calibration_good"] == 40
    assert training["cross_fit"] == "4 folds"
    summary = training["cross_fit_good_scores"]  # info summarises them; --all-scores lists each
    assert summary["count"] == 40 and summary["min"] <= summary["median"] <= summary["max"]
    every = json.loads(cli("info", "--all-scores", tmp_path / "crossed.safetensors").stdout)["training"]
    scores = every["cross_fit_good_scores"]
    assert len(scores) == 40 and (min(scores), max(scores)) == (summary["min"], summary["max"])

    held = cli(*args, "--out", tmp_path / "held.safetensors", "--folds", "0", "--val-fraction", "0.25")
    assert held.returncode == 0, held.stderr
    said = " ".join(held.stderr.split())
    assert "fitted on 30 good images" in said and "10 good / 0 defective held-out images" in said
    # --folds 1 is refused before any data is read (TrainRequest: tests/unit/detectors/test_detectors_cross_fit.py)


def test_help_explains_every_command() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for command in ("train", "eval", "predict", "info"):
        assert command in result.stdout
    train_help = cli("train", "--help").stdout
    assert "--detector" in train_help and "--overkill" in train_help


def test_eval_writes_json_with_image_and_pixel_metrics_and_html(trained: Path, tiny_mvtec: Path,
                                                                 tmp_path: Path) -> None:
    result = cli("eval", "--model", trained, "--data", tiny_mvtec, "--json", tmp_path / "r.json",
                 "--html", tmp_path / "r.html")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["image_auroc"] > 0.9
    assert report["pixel_auroc"] > 0.9
    assert 0.0 <= report["escape_rate"] <= 1.0 and 0.0 <= report["overkill_rate"] <= 1.0
    assert report["confusion"]["defective_ng"] + report["confusion"]["defective_ok"] == 10
    html = (tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in html and "<script src=\"http" not in html


def test_predict_reports_bad_files_as_error_rows_and_goes_on(trained: Path, tiny_mvtec: Path,
                                                            tmp_path: Path) -> None:
    good = tiny_mvtec / "test" / "good" / "000.png"
    png = good.read_bytes()
    bad = {
        "empty.png": b"",
        "text.png": b"hello, not an image",
        "truncated.png": png[: len(png) // 2],
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    bomb = tmp_path / "bomb.png"
    cv2.imwrite(str(bomb), np.zeros((1, 1), np.uint8))
    data = bytearray(bomb.read_bytes())
    data[16:24] = (60000).to_bytes(4, "big") + (60000).to_bytes(4, "big")  # IHDR claims 60000x60000
    import zlib

    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    bomb.write_bytes(bytes(data))
    out = tmp_path / "results.jsonl"
    result = cli("predict", "--model", trained, tiny_mvtec / "test", *[tmp_path / n for n in bad], bomb,
                 "--out", out, "--heatmaps", tmp_path / "heat")
    assert result.returncode == 3, result.stderr  # some files could not be inspected
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 20 + 4
    errors = {Path(r["path"]).name: r for r in rows if r["verdict"] == "ERROR"}
    assert set(errors) == {*bad, "bomb.png"}
    for name, row in errors.items():
        assert name in row["error"] and row["score"] is None
    assert "pixels" in errors["bomb.png"]["error"] or "large" in errors["bomb.png"]["error"]
    inspected = [r for r in rows if r["verdict"] != "ERROR"]
    assert all(r["verdict"] in ("OK", "NG") and Path(r["heatmap"]).exists() for r in inspected)
    assert sum(r["verdict"] == "NG" for r in inspected if "/good/" not in r["path"]) >= 8


def test_altered_model_is_refused_with_a_clear_message(trained: Path, tmp_path: Path) -> None:
    data = bytearray(trained.read_bytes())
    data[-100] ^= 0x01
    altered = tmp_path / "altered.safetensors"
    altered.write_bytes(bytes(data))
    result = cli("predict", "--model", altered, trained, "--out", tmp_path / "x.jsonl")
    assert result.returncode == 2
    assert "altered" in result.stderr and "altered.safetensors" in result.stderr


def test_train_from_a_csv_manifest_with_the_classical_detector(tiny_mvtec: Path, tmp_path: Path) -> None:
    rows = ["path,label,split"]
    rows += [f"{p},good,train" for p in sorted((tiny_mvtec / "train" / "good").glob("*.png"))]
    rows += [f"{p},good,test" for p in sorted((tiny_mvtec / "test" / "good").glob("*.png"))]
    rows += [f"{p},crack,test" for p in sorted((tiny_mvtec / "test" / "crack").glob("*.png"))]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    model = tmp_path / "classical.safetensors"
    assert cli("train", "--detector", "classical", "--data", manifest, "--out", model).returncode == 0
    result = cli("eval", "--model", model, "--data", manifest, "--json", tmp_path / "c.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["image_auroc"] > 0.8
    assert report.get("pixel_auroc") is None  # the manifest names no masks


def test_unknown_data_is_a_clear_error(tmp_path: Path) -> None:
    result = cli("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "m.safetensors")
    assert result.returncode == 2
    assert "nowhere" in result.stderr


def test_export_writes_a_verified_deployment_that_predicts_like_the_model(trained: Path, tiny_mvtec: Path,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    result = cli("export", "--model", trained, "--out", out, "--images", tiny_mvtec / "test")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} == {"backbone.onnx", "model.safetensors", "deploy.json"}
    manifest = json.loads((out / "deploy.json").read_text())
    assert manifest["verification"]["images"] == 20 and manifest["verification"]["verdicts_identical"]
    assert manifest["verification"]["max_diff_over_threshold"] <= manifest["verification"][
        "tolerance_diff_over_threshold"]
    # The folder is a model for predict (torch-vs-ONNX exactness itself: tests/unit/deploy).
    images = tiny_mvtec / "test"
    assert cli("predict", "--model", out, images, "--out", tmp_path / "d.jsonl").returncode == 0
    rows = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and {row["verdict"] for row in rows} <= {"OK", "NG"}
    defective = [row["verdict"] for row in rows if "/good/" not in row["path"]]
    assert defective.count("NG") >= len(defective) // 2
    # An altered graph is refused with the file named.
    onnx = out / "backbone.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10])
    refused = cli("predict", "--model", out, images, "--out", tmp_path / "x.jsonl")
    assert refused.returncode == 2 and "backbone.onnx" in refused.stderr


def test_a_wrong_setting_is_refused_with_every_valid_key_and_its_type(tiny_mvtec: Path, tmp_path: Path) -> None:
    result = cli("train", "--detector", "classical", "--data", tiny_mvtec, "--out", tmp_path / "m.safetensors",
                 "--option", "bogus=1", "--option", "image_size=big")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())  # rich wraps long lines
    assert "unknown setting 'bogus'" in message and "image_size: Input should be a valid integer" in message
    assert "image_size (int, default 256)" in message and "blur_sigma (float, default 1.5)" in message
    assert not (tmp_path / "m.safetensors").exists()
