"""/v1/truth and recording an audit's finding, on each database, through the HTTP API."""

from __future__ import annotations

from tests.unit.service.conftest import Models, Running


def test_truth_from_reviews_and_audits_shows_in_the_rates(running: Running, models: Models) -> None:
    run = running
    flagged = run.inspect("can", models.defect, "T1").json()
    passed = run.inspect("can", models.good, "T2").json()
    assert (flagged["verdict"], passed["verdict"]) == ("NG", "OK")
    review = run.client.post(f"/v1/inspections/{flagged['id']}/review", json={"decision": "false_call"},
                             headers=run.auth())
    assert review.status_code == 200
    body = {"true_class": "crack", "source": "audit"}
    assert run.client.post(f"/v1/inspections/{passed['id']}/truth", json=body, headers=run.auth("viewer")
                           ).status_code == 403
    recorded = run.client.post(f"/v1/inspections/{passed['id']}/truth", json=body, headers=run.auth())
    assert recorded.status_code == 200 and recorded.json()["recorded_by"]
    again = run.client.post(f"/v1/inspections/{passed['id']}/truth", json=body, headers=run.auth())
    assert again.status_code == 409 and "already recorded" in again.json()["detail"]
    bad = run.client.post(f"/v1/inspections/{passed['id']}/truth", json={"true_class": "<b>", "source": "audit"},
                          headers=run.auth())
    assert bad.status_code == 422

    figures = run.client.get(f"/v1/truth?run_id={run.service.run_id}", headers=run.auth("viewer")).json()
    can = next(s for s in figures["stations"] if s["scope"] == "can")
    assert can["with_truth"] == 2 and can["inspected"] == 2
    assert can["confusion"] == {"good": [0, 1, 0], "defective": [1, 0, 0]}  # a false call and an escape
    assert can["escape"]["count"] == 1 and can["overkill"]["count"] == 1
    assert dict(can["sources"]) == {"audit": 1, "review": 1}
    assert figures["currency"] is None and figures["run_costs"] is None  # this line has no cost model
    assert run.client.get("/v1/truth?run_id=999", headers=run.auth("viewer")).status_code == 404
    shown = run.client.get(f"/v1/truth?run_id={run.service.run_id}&lang=de", headers=run.auth("viewer")).json()
    display = shown["display"]
    assert display["locale"] == "de" and display["truth"]["head"][2] == "Durchschlupf"
    assert display["truth"]["rows"][-1][0] == "Linie" and display["costs"] is None
    assert run.client.get("/v1/truth").status_code == 401

