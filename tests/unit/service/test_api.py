"""The inspection API on SQLite and PostgreSQL: inspect, trace, stats, models, shadows, reviews, export."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from cellsight.data.sources import load_dataset
from cellsight.storage.records import Disposition
from cellsight.workflows.export_reviews import export_reviewed


def test_inspect_commits_before_answering_and_serves_images(running: Any, models: Any) -> None:
    ok = running.inspect("electrode", models.good, "C0001")
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert (body["verdict"], body["cell_id"], body["station"], body["model_version"]) == ("OK", "C0001",
                                                                                         "electrode", "v1")
    stored = running.service.store.inspection(body["id"])  # already durable when the answer arrived
    assert stored is not None and stored.verdict.value == "OK" and stored.cell_id == "C0001"
    ng = running.inspect("electrode", models.defect, "C0002").json()
    assert ng["verdict"] == "NG" and ng["score"] >= 0.5 and ng["defect_class"]
    for url in (ng["heatmap_url"], ng["image_url"]):
        png = running.client.get(url, headers=running.auth())
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert running.client.get("/metrics").status_code == 401  # production figures need a token
    metrics = running.client.get("/metrics", headers=running.auth("viewer")).text
    assert 'cellsight_inspections_total{station="electrode",verdict="NG"} 1.0' in metrics
    assert "cellsight_http_request_seconds_bucket" in metrics


def test_genealogy_follows_a_cell_through_stations_and_a_duplicate_code_is_an_error(running: Any,
                                                                                    models: Any) -> None:
    first = running.inspect("electrode", models.good, "CELL-7").json()
    second = running.inspect("can", models.good, "CELL-7").json()
    assert first["sequence"] == second["sequence"]  # the same cell at its next station
    genealogy = running.client.get("/v1/cells/CELL-7", headers=running.auth("viewer")).json()
    assert [i["station"] for i in genealogy["inspections"]] == ["electrode", "can"]
    assert [d["disposition"] for d in genealogy["dispositions"]] == ["OK"]  # finished at the last station
    again = running.inspect("electrode", models.good, "CELL-7").json()
    assert again["verdict"] == "ERROR" and again["reason"] == "duplicate_id" and "CELL-7" in again["error"]
    assert again["sequence"] != first["sequence"]
    cells = running.service.trace.cells(cell_id="CELL-7")
    assert [c.disposition for c in cells] == [Disposition.OK, Disposition.REVIEW]
    assert running.client.get("/v1/cells/NOPE", headers=running.auth("viewer")).status_code == 404


def test_station_stats_and_models(running: Any, models: Any) -> None:
    running.inspect("electrode", models.good, "S1")
    running.inspect("electrode", models.defect, "S2")
    stats = running.client.get("/v1/stations/electrode/stats", headers=running.auth("viewer")).json()
    assert stats["inspections"] == 2 and stats["verdicts"] == {"OK": 1, "NG": 1, "ERROR": 0}
    assert stats["fpy"] == 0.5 and stats["live_model"] == "v1"
    listed = running.client.get("/v1/models", headers=running.auth("viewer")).json()
    assert [m["station"] for m in listed] == ["electrode", "can"] and listed[0]["live"]["version"] == "v1"
    quality = running.client.get("/v1/quality", headers=running.auth("viewer")).json()
    assert quality["inspections"] == 2 and quality["final"]["cells"] == 1  # S2 rejected at electrode


def test_bad_uploads_are_clear_4xx_and_the_service_goes_on(running: Any, models: Any) -> None:
    text = running.inspect("electrode", b"hello, not an image", "B1", name="notes.txt")
    assert text.status_code == 422 and "notes.txt" in text.json()["detail"]
    truncated = running.inspect("electrode", models.good[: len(models.good) // 2], "B2", name="half.png")
    assert truncated.status_code == 422 and "half.png" in truncated.json()["detail"]
    huge = running.inspect("electrode", b"\x89PNG" + b"\0" * (3 * 1024 * 1024), "B3")
    assert huge.status_code == 413 and "limit" in huge.json()["detail"]
    wrong = running.inspect("nowhere", models.good, "B4")
    assert wrong.status_code == 404 and "nowhere" in wrong.json()["detail"]
    anonymous = running.client.post("/v1/stations/electrode/inspect", files={"image": ("a.png", models.good)})
    assert anonymous.status_code == 401 and "token" in anonymous.json()["detail"]
    no_id = running.inspect("electrode", models.good)
    assert no_id.status_code == 422 and "cell_id" in no_id.json()["detail"]
    bad_id = running.inspect("electrode", models.good, "has space")
    assert bad_id.status_code == 422
    assert running.service.trace.counts(running.service.run_id) == (0, 0)  # nothing was recorded
    assert running.inspect("electrode", models.good, "B5").status_code == 200


def test_deploy_verifies_keeps_history_and_rolls_back(running: Any, models: Any, tmp_path: Path) -> None:
    admin = running.auth("admin")
    with models.v2.open("rb") as handle:
        deployed = running.client.post("/v1/stations/electrode/models", headers=admin,
                                       files={"model": ("v2.safetensors", handle)})
    assert deployed.status_code == 200, deployed.text
    kept = Path(deployed.json()["path"])
    assert kept.parent == running.service.output_dir / "models" / "electrode"
    assert kept.name == f"v2-{deployed.json()['model_sha256'][:12]}.safetensors" and kept.is_file()
    assert running.inspect("electrode", models.good, "M1").json()["model_version"] == "v2"
    assert running.inspect("can", models.good, "M2").json()["model_version"] == "v1"  # other station untouched
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(models.v2.read_bytes()[:-100])
    refused = running.client.post("/v1/stations/electrode/models", headers=admin, data={"path": str(corrupt)})
    assert refused.status_code == 422 and "model refused" in refused.json()["detail"]
    assert running.inspect("electrode", models.good, "M3").json()["model_version"] == "v2"
    back = running.client.post("/v1/stations/electrode/models/rollback", headers=admin)
    assert back.status_code == 200 and back.json()["version"] == "v1"
    assert running.inspect("electrode", models.good, "M4").json()["model_version"] == "v1"
    assert running.client.post("/v1/stations/electrode/models/rollback", headers=admin).status_code == 409
    by_path = running.client.post("/v1/stations/electrode/models", headers=admin, data={"path": str(models.v2)})
    assert by_path.status_code == 200 and by_path.json()["version"] == "v2"
    history = running.client.get("/v1/models", headers=admin).json()[0]["history"]
    assert [h["version"] for h in history] == ["v1", "v2", "v2"] and history[1]["ended_at"] is not None


def test_shadow_scores_every_inspection_but_never_decides(running: Any, models: Any) -> None:
    admin = running.auth("admin")
    shadow = running.client.post("/v1/stations/electrode/models/shadow", headers=admin,
                                 data={"path": str(models.strict)})
    assert shadow.status_code == 200 and shadow.json()["kind"] == "shadow"
    answered = {}
    for i, image in enumerate(models.goods):
        body = running.inspect("electrode", image, f"SH{i}").json()
        answered[body["id"]] = body["verdict"]
    listed = running.client.get("/v1/models", headers=admin).json()[0]
    assert listed["shadow"]["version"] == "strict" and listed["shadow_scored"] == len(models.goods)
    disagreements = running.client.get("/v1/shadow-disagreements", headers=admin).json()
    assert len(disagreements) == listed["shadow_disagreements"] > 0
    for d in disagreements:  # the answer was always the live model's verdict, never the shadow's
        assert answered[d["inspection_id"]] == d["live_verdict"] != d["shadow_verdict"] == "NG"
    assert running.client.delete("/v1/stations/electrode/models/shadow", headers=admin).json() == {"cleared": True}
    running.inspect("electrode", models.good, "SH9")
    assert running.client.get("/v1/models", headers=admin).json()[0]["shadow_scored"] == len(models.goods)


def test_reviews_empty_the_queue_and_export_a_training_set(running: Any, models: Any, tmp_path: Path) -> None:
    ids = [running.inspect("electrode", models.defect, f"R{i}").json()["id"] for i in range(3)]
    queue = running.client.get("/v1/review-queue", headers=running.auth("viewer")).json()
    assert [q["id"] for q in queue] == ids
    viewer = running.client.post(f"/v1/inspections/{ids[0]}/review", json={"decision": "false_call"},
                                 headers=running.auth("viewer"))
    assert viewer.status_code == 403
    first = running.client.post(f"/v1/inspections/{ids[0]}/review", json={"decision": "false_call"},
                                headers=running.auth())
    assert first.status_code == 200 and first.json()["reviewer"] == "test-operator"
    running.client.post(f"/v1/inspections/{ids[0]}/review", headers=running.auth(),
                        json={"decision": "confirmed_defect", "defect_class": "crack", "note": "second look"})
    running.client.post(f"/v1/inspections/{ids[1]}/review", json={"decision": "false_call"}, headers=running.auth())
    bad = running.client.post(f"/v1/inspections/{ids[2]}/review", json={"decision": "maybe"}, headers=running.auth())
    assert bad.status_code == 422
    queue = running.client.get("/v1/review-queue", headers=running.auth()).json()
    assert [q["id"] for q in queue] == [ids[2]]
    history = running.client.get(f"/v1/inspections/{ids[0]}/reviews", headers=running.auth()).json()
    assert [h["decision"] for h in history] == ["false_call", "confirmed_defect"]

    out = tmp_path / "reviewed"
    summary = export_reviewed(running.service.store, out)
    assert (summary.good, summary.defective, summary.skipped) == (1, 1, 0)  # the latest review counts
    dataset = load_dataset(out)
    assert sorted((i.split, i.defect_class) for i in dataset.items) == [("test", "crack"), ("train", "good")]
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert {r["cell_id"] for r in rows} == {"R0", "R1"} and load_dataset(out / "manifest.csv").items


def test_a_cell_with_an_ng_never_ends_ok_whatever_the_order(running_sqlite: Any, models: Any) -> None:
    """Issue 13 #1: OK at the last station then NG at the first once gave OK; a cell seen only last, too."""
    run = running_sqlite
    assert run.inspect("can", models.good, "ORDER-1").json()["verdict"] == "OK"
    (early,) = run.service.trace.cells(cell_id="ORDER-1")
    assert (early.disposition.value, early.failed_station) == ("REVIEW", "electrode")  # electrode never saw it
    assert run.inspect("electrode", models.defect, "ORDER-1").json()["verdict"] == "NG"
    (cell,) = run.service.trace.cells(cell_id="ORDER-1")
    assert (cell.disposition.value, cell.failed_station) == ("NG", "electrode")
    body = run.client.get("/v1/cells/ORDER-1", headers=run.auth("viewer")).json()
    assert [d["disposition"] for d in body["dispositions"]] == ["NG"]
    # In order and both OK: OK. Only the last station: REVIEW, never OK.
    run.inspect("electrode", models.good, "ORDER-2")
    run.inspect("can", models.good, "ORDER-2")
    assert [c.disposition.value for c in run.service.trace.cells(cell_id="ORDER-2")] == ["OK"]
    run.inspect("can", models.good, "ORDER-3")
    assert [c.disposition.value for c in run.service.trace.cells(cell_id="ORDER-3")] == ["REVIEW"]


def test_a_cell_id_sent_at_a_station_that_reads_codes_is_compared(models: Any, tmp_path: Path) -> None:
    """Issue 13 #9: an image whose code reads A, sent as B, was recorded OK under B."""
    import cv2
    import numpy as np

    from cellsight.data.cellcode import render_code
    from cellsight.line.config import load_line_config
    from cellsight.service.app import create_app
    from cellsight.service.state import Service
    from cellsight.service.testing import role_tokens, write_line_config

    path = write_line_config(tmp_path / "line", f"sqlite:///{tmp_path / 't.db'}", models.v1)
    path.write_text(path.read_text().replace("read_code: false", "read_code: true", 1))  # electrode reads codes
    config, sha = load_line_config(path)
    service = Service.start(config, sha)
    image = cv2.imdecode(np.frombuffer(models.good, np.uint8), cv2.IMREAD_GRAYSCALE)
    image = cv2.resize(image, (192, 192))
    code = render_code("CODE-A", 3)
    image[4:4 + code.shape[0], 4:4 + code.shape[1]] = code
    ok, png = cv2.imencode(".png", image)
    assert ok
    token = role_tokens(service.store)["operator"]
    with TestClient(create_app(service)) as client:
        sent = client.post("/v1/stations/electrode/inspect", files={"image": ("c.png", png.tobytes())},
                           data={"cell_id": "CODE-B"}, headers={"Authorization": f"Bearer {token}"}).json()
        assert (sent["cell_id"], sent["reason"]) == ("CODE-B", "id_mismatch") and sent["verdict"] != "OK"
        assert "CODE-A" in sent["error"]
        read = client.post("/v1/stations/electrode/inspect", files={"image": ("c.png", png.tobytes())},
                           data={"cell_id": "CODE-A"}, headers={"Authorization": f"Bearer {token}"}).json()
        assert read["cell_id"] == "CODE-A" and read["reason"] != "id_mismatch"


def test_a_plc_cell_id_follows_the_apis_id_rules(running_sqlite: Any, models: Any) -> None:
    """Issue 13 #10: the PLC's CellId skipped the API's ID rules; now both go through the recorder's check."""
    recorder = running_sqlite.service.recorder
    result = recorder.inspect("electrode", models.good, "plc.png", "A B/C", record_unreadable=True)
    assert result.record.verdict.value == "ERROR" and result.record.reason.value == "unreadable_code"
    assert result.record.cell_id.startswith("UNREAD-") and "not a cell code" in (result.record.error or "")
