"""The inference seam without a cluster: the local backend is the detector, the line YAML chooses the
backend, and a Ray address that does not answer is a clear error at once (not minutes of retries)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellsight.data.images import read_image
from cellsight.data.sources import load_dataset
from cellsight.errors import ModelFileError
from cellsight.inference.backends import open_backend
from cellsight.inference.cluster import ClusterError, connect, resolve_address
from cellsight.inference.seam import InferenceSettings, LocalBackend
from cellsight.line.config import LineConfigError, load_line_config
from cellsight.line.station import StationInspector
from cellsight.modelfile import load_model
from cellsight.types import Verdict
from cellsight.workflows.train import TrainRequest, train


@pytest.fixture(scope="module")
def classical_model(tiny_mvtec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seam") / "classical.safetensors"
    train(load_dataset(tiny_mvtec), out, TrainRequest("classical", val_fraction=0.25))
    return out


def test_local_backend_scores_exactly_as_the_detector(classical_model: Path, tiny_mvtec: Path) -> None:
    images = [read_image(p) for p in sorted((tiny_mvtec / "test").glob("*/*.png"))]
    model = LocalBackend().load("s", classical_model)
    direct = load_model(classical_model).detector.predict(images)
    seam = model.predict(images)
    assert [p.score for p in seam] == [p.score for p in direct]
    assert [p.verdict for p in seam] == [p.verdict for p in direct]
    assert model.model_hash == load_model(classical_model).content_hash
    assert model.predict([]) == []


def test_a_station_batch_decides_as_one_image_at_a_time(classical_model: Path, tiny_mvtec: Path) -> None:
    files = [(p.read_bytes(), p.name) for p in sorted((tiny_mvtec / "test").glob("*/*.png"))]
    files.insert(3, (b"not an image", "broken.png"))
    inspector = StationInspector("s", classical_model, read_code=False)
    batch = inspector.inspect_many(files)
    single = [inspector.inspect_bytes(data, name) for data, name in files]
    assert [(o.verdict, o.reason) for o in batch] == [(o.verdict, o.reason) for o in single]
    scores = [(o.score, s.score) for o, s in zip(batch, single, strict=True) if np.isfinite(o.score)]
    assert scores and all(a == b for a, b in scores)
    assert batch[3].verdict is Verdict.ERROR and "broken.png" in (batch[3].error or "")


def test_an_uncalibrated_or_altered_model_is_refused(classical_model: Path, tmp_path: Path) -> None:
    altered = tmp_path / "altered.safetensors"
    data = bytearray(classical_model.read_bytes())
    data[-10] ^= 0xFF
    altered.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="altered"):
        LocalBackend().load("s", altered)


def test_the_line_yaml_chooses_the_backend(tmp_path: Path) -> None:
    base = "line: l\nstations:\n  - {name: a, model: m.safetensors, source: {kind: folder, path: x}}\n"
    path = tmp_path / "line.yaml"
    path.write_text(base)
    config, _ = load_line_config(path)
    assert config.inference.backend == "local" and not config.pipelined
    assert isinstance(open_backend(config.inference), LocalBackend)
    ray = "inference: {backend: ray, address: auto, replicas: 2, max_batch_size: 16, batch_wait_ms: 5}\n"
    path.write_text(base + ray)
    config, _ = load_line_config(path)
    assert config.inference == InferenceSettings(backend="ray", address="auto", replicas=2)
    path.write_text(base + "inference: {backend: spark}\n")
    with pytest.raises(LineConfigError, match=r"line.yaml: inference.backend"):
        load_line_config(path)


def test_an_address_where_no_cluster_answers_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELLSIGHT_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) == "local"
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")
    assert resolve_address(None) == "10.1.2.3:6379"
    assert resolve_address("auto") == "auto"
    for address in ("127.0.0.1:9", "ray://127.0.0.1:9"):
        with pytest.raises(ClusterError, match=r"no Ray cluster answers at .*127\.0\.0\.1:9"):
            connect(address)
    with pytest.raises(ClusterError, match="not host:port"):
        connect("nowhere")
