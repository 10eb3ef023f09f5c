"""The `ray` inference backend on a real local Ray cluster (2 CPUs, started once for this module).

What must hold: the same images give bit-identical scores, maps and verdicts on both backends; a replica
killed mid-run loses no verdict (each image is retried or ERROR, never OK, never dropped) and the
deployment recovers; a line on Ray records what the local line records.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cellsight.data.images import read_image
from cellsight.data.sources import load_dataset
from cellsight.detectors.patchcore import PatchCoreSettings
from cellsight.inference.seam import InferenceSettings, LocalBackend
from cellsight.types import Prediction, Verdict
from cellsight.workflows.train import TrainRequest, train

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.integration, pytest.mark.ray]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One small cluster for the module; its workers cache model files in a folder of the test's own."""
    before = os.environ.get("CELLSIGHT_MODEL_CACHE")
    os.environ["CELLSIGHT_MODEL_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))  # workers inherit it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        if before is None:
            os.environ.pop("CELLSIGHT_MODEL_CACHE", None)
        else:
            os.environ["CELLSIGHT_MODEL_CACHE"] = before


@pytest.fixture(scope="module")
def patchcore_model(tiny_mvtec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ray-model") / "patchcore.safetensors"
    settings = PatchCoreSettings(image_size=64, bank_size=256)
    train(load_dataset(tiny_mvtec), out, TrainRequest("patchcore", settings, val_fraction=0.25))
    return out


@pytest.fixture(scope="module")
def backend(cluster: None) -> Iterator[object]:
    from cellsight.inference.ray_serve import RayBackend

    ray_backend = RayBackend(InferenceSettings(backend="ray", address="auto", max_batch_size=8, batch_wait_ms=5,
                                               replica_cpus=0.25),
                             "test")
    yield ray_backend
    ray_backend.close()


@pytest.fixture(scope="module")
def images(tiny_mvtec: Path) -> list[np.ndarray]:
    return [read_image(p) for p in sorted((tiny_mvtec / "test").glob("*/*.png"))]


def _same(a: Prediction, b: Prediction) -> bool:
    maps = a.anomaly_map is not None and b.anomaly_map is not None and np.array_equal(a.anomaly_map, b.anomaly_map)
    return a.score == b.score and a.verdict is b.verdict and a.defect_class == b.defect_class and maps


def test_local_and_ray_give_bit_identical_predictions(backend, patchcore_model: Path, images) -> None:  # type: ignore[no-untyped-def]
    local = LocalBackend().load("weld", patchcore_model).predict(images)
    served = backend.load("weld", patchcore_model)
    assert served.model_hash == LocalBackend().load("weld", patchcore_model).model_hash
    remote = served.predict(images)  # all in flight at once: Serve batches them
    assert len(remote) == len(images)
    assert all(_same(a, b) for a, b in zip(remote, local, strict=True))
    assert {p.verdict for p in local} == {Verdict.OK, Verdict.NG}  # the data exercise both verdicts
    cached = list(Path(os.environ["CELLSIGHT_MODEL_CACHE"]).glob("*.safetensors"))
    assert [p.stem for p in cached] == [served.model_hash]  # shipped by content hash
    served.close()


def test_a_killed_replica_loses_no_verdict(backend, patchcore_model: Path, images) -> None:  # type: ignore[no-untyped-def]
    local = LocalBackend().load("can", patchcore_model).predict(images)
    served = backend.load("can", patchcore_model)
    pid = served.handle.pid.remote().result()
    many = images * 6
    out: list[list[Prediction]] = []
    worker = threading.Thread(target=lambda: out.append(served.predict(many)))
    worker.start()
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    worker.join(timeout=300)
    (results,) = out
    assert len(results) == len(many)  # nothing dropped
    expected = local * 6
    for got, want in zip(results, expected, strict=True):
        assert got.verdict is Verdict.ERROR or _same(got, want), got  # retried exactly, or ERROR: never a guess
    after = served.predict(images)  # the deployment recovers (Serve restarts the replica)
    assert all(_same(a, b) for a, b in zip(after, local, strict=True))
    assert served.handle.pid.remote().result() != pid
    served.close()


def test_a_pipelined_line_on_ray_records_what_the_sequential_local_line_records(  # type: ignore[no-untyped-def]
    backend, patchcore_model: Path, tiny_mvtec: Path, tmp_path: Path
) -> None:
    from cellsight.line.config import load_line_config
    from cellsight.line.runtime import LineRuntime
    from cellsight.storage.store import TraceStore

    folder = tmp_path / "images"
    folder.mkdir()
    for i, path in enumerate(sorted((tiny_mvtec / "test").glob("*/*.png"))):
        shutil.copy(path, folder / f"{i:03d}-{path.parent.name}.png")
    rows = {}
    for name, use in (("local", LocalBackend()), ("ray", backend)):
        yaml = tmp_path / f"{name}.yaml"
        yaml.write_text(
            f"line: l-{name}\ndatabase: sqlite:///{tmp_path / name}.db\noutput_dir: {tmp_path / name}\n"
            f"on_ng: inspect_all\npipelined: {str(name == 'ray').lower()}\nstations:\n"
            + "".join(f"  - {{name: {s}, model: {patchcore_model}, read_code: false, "
                      f"source: {{kind: folder, path: {folder}}}}}\n" for s in ("first", "second"))
        )
        config, sha = load_line_config(yaml)
        with TraceStore.open(config.database) as store:
            summary = LineRuntime(config, sha, store, use).run()
            rows[name] = sorted((r.sequence, r.station, r.cell_id, r.verdict, r.score, r.reason)
                                for r in store.inspections(summary.run_id))
    assert len(rows["local"]) == 2 * 20
    assert rows["ray"] == rows["local"]


def test_rescore_on_ray_data_matches_local_and_reports_flips(  # type: ignore[no-untyped-def]
    cluster: None, patchcore_model: Path, tiny_mvtec: Path, tmp_path: Path
) -> None:
    from cellsight.line.config import load_line_config
    from cellsight.line.runtime import LineRuntime
    from cellsight.storage.store import TraceStore
    from cellsight.workflows.rescore import rescore, stored_inspections, write_rescore_html

    folder = tmp_path / "images"
    folder.mkdir()
    for i, path in enumerate(sorted((tiny_mvtec / "test").glob("*/*.png"))):
        shutil.copy(path, folder / f"{i:03d}-{path.parent.name}.png")
    yaml = tmp_path / "line.yaml"
    yaml.write_text(f"line: l\ndatabase: sqlite:///{tmp_path / 'trace.db'}\noutput_dir: {tmp_path / 'out'}\n"
                    f"stations:\n  - {{name: s, model: {patchcore_model}, read_code: false, "
                    f"source: {{kind: folder, path: {folder}}}}}\n")
    config, sha = load_line_config(yaml)
    with TraceStore.open(config.database) as store:
        run_id = LineRuntime(config, sha, store).run().run_id
        records = stored_inspections(store, run_id=run_id)
    assert len(records) == 20
    (folder / "007-good.png").write_bytes(b"not a png any more")  # a stored image gone bad since
    local = rescore(patchcore_model, records)
    remote = rescore(patchcore_model, records, ray=True, workers=2, cpus_per_worker=0.5)
    (station,) = remote.stations
    assert station == local.stations[0]  # same counts, same flips, same scores
    assert (station.images, station.compared, station.agree) == (20, 19, 19)  # the same model agrees with itself
    (flip,) = station.flips
    assert flip.new == "ERROR" and "007-good.png" in (flip.error or "")
    page = write_rescore_html(remote, tmp_path / "report.html").read_text()
    assert "100.00%" in page and "007-good.png" in page and "Ray Data, 2 workers" in page


def test_parallel_fit_on_ray_gives_the_local_memory_bank(cluster: None, tiny_mvtec: Path) -> None:
    from cellsight.detectors.base import TrainingSet
    from cellsight.detectors.patchcore import PatchCore
    from cellsight.inference.parallel_fit import ray_fit_map

    images = [read_image(p) for p in sorted((tiny_mvtec / "train" / "good").glob("*.png"))]
    settings = PatchCoreSettings(image_size=64, bank_size=200, batch_size=8)
    local = PatchCore(settings).fit(TrainingSet.good(images))
    parallel = PatchCore(settings)
    parallel.fit_map = ray_fit_map("auto", workers=2, cpus_per_worker=0.5)
    parallel.fit(TrainingSet.good(images))
    assert local.memory_bank is not None and parallel.memory_bank is not None
    assert local.memory_bank.shape == (200, local.memory_bank.shape[1])
    assert np.array_equal(parallel.memory_bank, local.memory_bank)
