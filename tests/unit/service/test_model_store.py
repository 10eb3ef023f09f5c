"""Issue 13 #6: model history must not lie. Every model that goes live is copied and hashed, rollback goes
by hash, and a model trained for another station is refused unless forced."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from cellsight.service.testing import train_tiny_model


def _live(run: Any, station: str = "electrode") -> dict[str, Any]:
    (found,) = [m for m in run.client.get("/v1/models", headers=run.auth("viewer")).json() if m["station"] == station]
    return found["live"]


def test_the_configured_model_is_copied_so_overwriting_it_changes_nothing(models: Any, tmp_path: Path,
                                                                       start_service: Any) -> None:
    configured = tmp_path / "configured.safetensors"
    shutil.copyfile(models.v1, configured)
    run = start_service(tmp_path, configured)
    with run.client:
        first = _live(run)
        assert Path(first["path"]).parent == run.service.output_dir / "models" / "electrode"
        shutil.copyfile(models.v2, configured)  # someone overwrites the configured file
        deployed = run.client.post("/v1/stations/electrode/models", data={"path": str(models.strict)},
                                   headers=run.auth("admin"))
        assert deployed.status_code == 200, deployed.text
        back = run.client.post("/v1/stations/electrode/models/rollback", headers=run.auth("admin"))
        assert back.status_code == 200, back.text
        live = run.service.registry.slot("electrode").live
        assert live.model_hash == first["model_sha256"] == _live(run)["model_sha256"]
        assert run.service.registry.slot("electrode").live.model_version == "v1"
        configured.unlink()  # gone entirely: history still works from the store's copies
        strict_sha = deployed.json()["model_sha256"]
        to_strict = run.client.post(f"/v1/stations/electrode/models/rollback?sha256={strict_sha}",
                                    headers=run.auth("admin"))
        assert to_strict.status_code == 200, to_strict.text
        assert run.service.registry.slot("electrode").live.model_version == "strict"
        unknown = run.client.post(f"/v1/stations/electrode/models/rollback?sha256={'a' * 64}",
                                  headers=run.auth("admin"))
        assert unknown.status_code == 409 and "was ever deployed" in unknown.json()["detail"]


def test_a_changed_stored_copy_is_refused_at_rollback(running_sqlite: Any, models: Any) -> None:
    run = running_sqlite
    v1 = _live(run)
    assert run.client.post("/v1/stations/electrode/models", data={"path": str(models.v2)},
                           headers=run.auth("admin")).status_code == 200
    shutil.copyfile(models.strict, v1["path"])  # the store's copy of v1 is overwritten behind our back
    refused = run.client.post("/v1/stations/electrode/models/rollback", headers=run.auth("admin"))
    assert refused.status_code == 409 and "content hash" in refused.json()["detail"]
    assert run.service.registry.slot("electrode").live.model_version == "v2"  # nothing changed
    assert _live(run)["version"] == "v2"


def test_a_model_for_another_station_is_refused_unless_forced(running_sqlite: Any, tiny_mvtec: Path,
                                                             tmp_path: Path) -> None:
    run = running_sqlite
    weld = train_tiny_model(tiny_mvtec, tmp_path / "weld.safetensors", "weld-1", station="weld")
    refused = run.client.post("/v1/stations/electrode/models", data={"path": str(weld)}, headers=run.auth("admin"))
    assert refused.status_code == 422 and "trained for station weld" in refused.json()["detail"]
    assert _live(run)["version"] == "v1"
    forced = run.client.post("/v1/stations/electrode/models", data={"path": str(weld), "force": "true"},
                             headers=run.auth("admin"))
    assert forced.status_code == 200 and "forced: trained for weld" in forced.json()["created_by"]
    electrode = train_tiny_model(tiny_mvtec, tmp_path / "el.safetensors", "el-1", station="electrode")
    assert run.client.post("/v1/stations/electrode/models", data={"path": str(electrode)},
                           headers=run.auth("admin")).status_code == 200


def test_editing_model_in_the_line_file_takes_effect_at_the_next_start(models: Any, tmp_path: Path,
                                                                      start_service: Any) -> None:
    run = start_service(tmp_path, models.v1)
    with run.client:
        assert _live(run)["version"] == "v1"
    again = start_service(tmp_path, models.v1)  # unchanged: history wins (nothing redeployed)
    with again.client:
        assert _live(again)["version"] == "v1" and len(again.service.store.deployments("electrode")) == 1
    edited = start_service(tmp_path, models.v2)
    with edited.client:
        assert _live(edited)["version"] == "v2"
        assert edited.service.store.deployments("electrode")[-1].created_by == "line configuration (model: edited)"


def test_a_hashed_model_without_calibration_is_refused_not_a_500(running_sqlite: Any, models: Any,
                                                               tmp_path: Path) -> None:
    """Issue 13 #10: a model file with a valid hash but no calibration answered 500."""
    import json

    from safetensors.torch import load_file, save_file

    from cellsight.modelfile import content_hash

    tensors = load_file(str(models.v1))
    with open(models.v1, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        metadata = json.loads(handle.read(size))["__metadata__"]
    (meta_key,) = [k for k, v in metadata.items() if v.startswith("{")]
    (hash_key,) = [k for k in metadata if k != meta_key]
    description = json.loads(metadata[meta_key])
    description["calibration"] = None
    text = json.dumps(description, sort_keys=True)
    bad = tmp_path / "uncalibrated.safetensors"
    save_file(tensors, str(bad), metadata={meta_key: text, hash_key: content_hash(text, tensors)})
    run = running_sqlite
    refused = run.client.post("/v1/stations/electrode/models", data={"path": str(bad)}, headers=run.auth("admin"))
    assert refused.status_code == 422 and "uncalibrated.safetensors" in refused.json()["detail"]
    upload = run.client.post("/v1/stations/electrode/models", files={"model": ("mine.safetensors", bad.read_bytes())},
                             headers=run.auth("admin"))
    assert upload.status_code == 422 and "mine.safetensors" in upload.json()["detail"]
    assert ".upload-" not in upload.json()["detail"]  # no server temp path in the answer
