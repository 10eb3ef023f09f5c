"""The detector contract, checked for every registered detector (scikit-learn's estimator checks, for images).

Parametrised over the registry: a new detector is checked as soon as it is registered, with its default
settings unless `TINY` gives smaller ones (add an entry to keep the suite fast). Each detector is trained
by the real train workflow on a tiny labelled set and must: validate its settings, only store them in
`__init__`, refuse to score before fitting, write a model file that loads back bit for bit, give the
same result for the same seed, call NG exactly when the normalised score is >= 0.5, return maps at the
size asked for, turn an unreadable image into ERROR on the inspection path, and export where it says
it can.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cellsight.data import LazyImages, read_image
from cellsight.data.manifest import load_manifest
from cellsight.deploy import export_deployment, load_deployment
from cellsight.detectors.base import AnyDetector, LearnsFrom, MapSize, TrainingSet, make_predictions
from cellsight.detectors.registry import detector_class, detector_names
from cellsight.detectors.settings import DetectorSettings
from cellsight.errors import ConfigError, DataError, DeploymentError, NotFittedError
from cellsight.modelfile import load_model, save_model
from cellsight.types import Verdict
from cellsight.workflows.inspect import inspect_paths
from cellsight.workflows.train import TrainRequest, TrainResult, train

_PATCHCORE = {"image_size": 32, "layers": [1, 2], "bank_size": 64, "batch_size": 8, "projection_dim": 16}
_SUPERVISED = {"image_size": 32, "views": 1, "max_epochs": 1, "batch_size": 16}
TINY: dict[str, dict[str, object]] = {
    "classical": {"image_size": 32},
    "rules": {"image_size": 32},
    "patchcore": _PATCHCORE,
    "supervised": _SUPERVISED,
    "hybrid": {"patchcore": {**_PATCHCORE, "search": "exact"}, "supervised": _SUPERVISED},
    "ensemble": {"members": 2, "supervised": _SUPERVISED},
    "simplenet": {"image_size": 32, "layers": [1, 2], "hidden": 32, "steps": 30, "batch_patches": 256, "batch_size": 8},
}
"""Settings that keep each detector's fit to seconds on 2 CPU cores; a detector not listed uses its defaults."""


@dataclass(frozen=True)
class Trained:
    name: str
    result: TrainResult
    model: Path
    test_paths: list[Path]

    @property
    def detector(self) -> AnyDetector:
        return self.result.detector

    def test_images(self) -> list[np.ndarray]:
        return [read_image(p) for p in self.test_paths]


def _request(name: str) -> TrainRequest:
    return TrainRequest.with_options(name, TINY.get(name, {}), target=0.2, val_fraction=0.25, seed=0)


@pytest.fixture(scope="module", params=detector_names())
def trained(
    request: pytest.FixtureRequest, tiny_contract_set: Path, tmp_path_factory: pytest.TempPathFactory
) -> Trained:
    name = str(request.param)
    data = load_manifest(tiny_contract_set / "manifest.csv")
    model = tmp_path_factory.mktemp(f"contract-{name}") / f"{name}.safetensors"
    result = train(data, model, _request(name))
    return Trained(name, result, model, list(data.select(split="test").paths))


def test_registration_and_settings_type(trained: Trained) -> None:
    cls = detector_class(trained.name)
    assert cls.name == trained.name and isinstance(trained.detector, cls)
    assert issubclass(cls.Settings, DetectorSettings) and cls.Settings.model_config.get("extra") == "forbid"
    assert isinstance(cls.learns_from, LearnsFrom)


def test_settings_are_validated_with_every_key_named(trained: Trained) -> None:
    cls = detector_class(trained.name)
    with pytest.raises(ConfigError, match="unknown setting 'bogus'") as caught:
        cls(bogus=1)
    for key in cls.Settings.model_fields:
        assert key in str(caught.value)  # the message lists every valid key (with its type)
    stored = trained.detector.settings.to_json()
    assert cls.Settings.from_options(stored).to_json() == stored  # what the model file holds reads back


def test_init_only_stores_settings_and_an_unfitted_detector_refuses_to_score(trained: Trained) -> None:
    fresh = detector_class(trained.name)(trained.detector.settings)
    assert not fresh.fitted and fresh.calibration is None
    with pytest.raises(NotFittedError):
        fresh.score(trained.test_images()[:1])
    with pytest.raises(NotFittedError):
        fresh.config()


def test_model_file_round_trip_is_bit_identical(trained: Trained, tmp_path: Path) -> None:
    loaded = load_model(trained.model)
    assert loaded.content_hash == trained.result.content_hash
    original, again = trained.detector, loaded.detector
    assert again.config() == original.config()
    assert again.calibration == original.calibration
    tensors, stored = original.tensors(), again.tensors()
    assert tensors.keys() == stored.keys()
    assert all(torch.equal(tensors[k], stored[k]) for k in tensors)
    images = trained.test_images()
    before, after = original.score(images, MapSize.INPUT), again.score(images, MapSize.INPUT)
    np.testing.assert_array_equal(before.scores, after.scores)
    assert before.maps is not None and after.maps is not None
    for a, b in zip(before.maps, after.maps, strict=True):
        np.testing.assert_array_equal(a, b)
    # Saved once more, the file holds the same tensors and the same detector config.
    save_model(tmp_path / "again.safetensors", again, training={})
    resaved = load_file(str(tmp_path / "again.safetensors"))
    assert all(torch.equal(resaved[k], v.cpu()) for k, v in tensors.items())
    assert load_model(tmp_path / "again.safetensors").metadata["config"] == loaded.metadata["config"]


def test_same_seed_gives_the_same_model(trained: Trained, tiny_contract_set: Path, tmp_path: Path) -> None:
    data = load_manifest(tiny_contract_set / "manifest.csv")
    again = train(data, tmp_path / "again.safetensors", _request(trained.name))
    images = trained.test_images()
    np.testing.assert_array_equal(again.detector.score(images).scores, trained.detector.score(images).scores)
    assert again.calibration == trained.result.calibration


def test_ng_exactly_when_the_score_is_at_least_half(trained: Trained) -> None:
    detector = trained.detector
    predictions = detector.predict(trained.test_images())
    assert {p.verdict for p in predictions} <= {Verdict.OK, Verdict.NG}
    for p in predictions:
        assert (p.verdict is Verdict.NG) == (p.score >= 0.5)
        assert (p.defect_class is None) == (p.verdict is Verdict.OK)
    calibration = detector.calibration
    assert calibration is not None
    at, below = calibration.threshold, float(np.nextafter(calibration.threshold, -np.inf))
    edge = make_predictions(calibration, np.array([at, below]), None, 0.0)
    assert [p.verdict for p in edge] == [Verdict.NG, Verdict.OK] and edge[0].score >= 0.5 > edge[1].score


def test_maps_come_at_the_size_asked_for(trained: Trained) -> None:
    detector = trained.detector
    images = [*trained.test_images()[:2], np.full((40, 56), 120, np.uint8)]  # another size and aspect
    full = detector.score(images, MapSize.INPUT)
    working = detector.score(images, MapSize.WORKING)
    none = detector.score(images, MapSize.NONE)
    assert none.maps is None and full.maps is not None and working.maps is not None
    assert [m.shape for m in full.maps] == [image.shape[:2] for image in images]
    assert all(m.ndim == 2 and m.dtype == np.float32 for m in working.maps)
    assert full.scores.dtype == np.float32 and full.scores.shape == (len(images),)
    np.testing.assert_array_equal(full.scores, none.scores)
    np.testing.assert_array_equal(full.scores, working.scores)
    assert none.classes is None  # nothing named unless asked


def test_an_unreadable_image_is_error_on_the_inspection_path(trained: Trained, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    paths = [trained.test_paths[0], broken, empty, trained.test_paths[1]]
    inspections = list(inspect_paths(trained.detector, paths, batch_size=4))
    verdicts = [i.prediction.verdict for i in inspections]
    assert verdicts[1] is verdicts[2] is Verdict.ERROR and Verdict.ERROR not in (verdicts[0], verdicts[3])
    for inspection in inspections[1:3]:
        assert inspection.prediction.error and str(inspection.path) in inspection.prediction.error
        assert not inspection.prediction.verdict.passes


def test_what_it_learns_from_is_what_it_needs(trained: Trained) -> None:
    if trained.detector.learns_from is not LearnsFrom.LABELLED:
        pytest.skip("learns from good images")
    goods = TrainingSet.good(LazyImages(trained.test_paths[:4]))
    with pytest.raises(DataError):
        detector_class(trained.name)(trained.detector.settings).fit(goods)


def test_export_where_the_detector_supports_it(trained: Trained, tmp_path: Path) -> None:
    out = tmp_path / "deployment"
    if trained.detector.backbone_export() is None:
        with pytest.raises(DeploymentError, match="no backbone export"):
            export_deployment(trained.model, out)
        return
    images = trained.test_images()
    manifest = export_deployment(trained.model, out, images)
    assert manifest["detector"] == trained.name and manifest["verification"]["verdicts_identical"]
    deployed = load_deployment(out).model.detector.predict(images)
    reference = load_model(trained.model).detector.predict(images)
    assert [p.verdict for p in deployed] == [p.verdict for p in reference]
