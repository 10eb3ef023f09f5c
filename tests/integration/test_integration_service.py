"""A real uvicorn server on a free port: many concurrent clients, and the dashboard in headless Chromium."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn

from cellsight.line.config import load_line_config
from cellsight.service.app import create_app
from cellsight.service.state import Service
from cellsight.service.testing import role_tokens, train_tiny_model, write_line_config

pytestmark = pytest.mark.integration
SHOTS = Path("/tmp/shots")


@dataclass
class Server:
    url: str
    service: Service
    tokens: dict[str, str]
    server: uvicorn.Server
    thread: threading.Thread

    def headers(self, role: str = "operator") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(folder: Path, database_url: str, model: Path) -> Server:
    """Start the service as `cellsight serve` does, on its own thread, and wait until it accepts requests."""
    config, sha = load_line_config(write_line_config(folder, database_url, model))
    service = Service.start(config, sha)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return Server(f"http://127.0.0.1:{port}", service, role_tokens(service.store), server, thread)


@pytest.fixture(scope="module")
def model(tiny_mvtec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_model(tiny_mvtec, tmp_path_factory.mktemp("svc") / "v1.safetensors", "v1")


def test_concurrent_clients_every_request_answered_and_recorded(database_url: str, model: Path, tiny_mvtec: Path,
                                                                tmp_path: Path) -> None:
    images = [p.read_bytes() for p in sorted((tiny_mvtec / "test").rglob("*.png"))]
    running = serve(tmp_path / "line", database_url, model)
    try:
        def client_work(worker: int) -> list[dict[str, object]]:
            answers = []
            with httpx.Client(base_url=running.url, headers=running.headers(), timeout=60) as client:
                for i in range(25):
                    station = ("electrode", "can")[i % 2]
                    response = client.post(f"/v1/stations/{station}/inspect", data={"cell_id": f"W{worker}-{i:03d}"},
                                           files={"image": ("cell.png", images[(worker + i) % len(images)])})
                    assert response.status_code == 200, response.text
                    answers.append(response.json())
            return answers

        with ThreadPoolExecutor(8) as pool:
            answers = [a for batch in pool.map(client_work, range(8)) for a in batch]
        assert len(answers) == 200
        records = running.service.trace.inspections(run_id=running.service.run_id)
        assert len(records) == 200
        assert len({(r.sequence, r.station) for r in records}) == 200  # unique in the run
        assert len({r.sequence for r in records}) == 200  # every upload a distinct cell
        assert {a["id"] for a in answers} == set(running.service.store.inspection_ids(running.service.run_id))
        assert all(r.reason is None or r.reason.value != "duplicate_id" for r in records)
        metrics = httpx.get(f"{running.url}/metrics", headers=running.headers("viewer")).text
        total = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith("cellsight_inspections_total{"))
        assert total == 200
    finally:
        running.stop()


def _until(page: Any, expression: str, timeout: float = 30.0) -> None:
    """Poll a JS expression through the DevTools protocol: the pages' Content-Security-Policy forbids the
    eval that playwright's wait_for_function uses."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def dashboard(model: Path, tiny_mvtec: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("dash")
    running = serve(folder / "line", f"sqlite:///{folder / 'trace.db'}", model)
    strict = train_tiny_model(tiny_mvtec, folder / "strict.safetensors", "strict", overkill=0.6)
    with httpx.Client(base_url=running.url, timeout=60) as client:
        client.post("/v1/stations/electrode/models/shadow", data={"path": str(strict)},
                    headers=running.headers("admin")).raise_for_status()
        images = sorted((tiny_mvtec / "test").rglob("*.png"))
        for i in range(60):
            path = images[i % len(images)]
            for station in ("electrode", "can"):
                client.post(f"/v1/stations/{station}/inspect", data={"cell_id": f"L1-{i:04d}"},
                            files={"image": (path.name, path.read_bytes())}, headers=running.headers())
    yield running
    running.stop()


def test_dashboard_in_headless_chromium(dashboard: Server, chromium: str) -> None:
    from playwright import sync_api as playwright_api
    SHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        outside: list[str] = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(dashboard.url) else None)

        page.goto(dashboard.url + "/")
        assert page.url.endswith("/login")
        page.screenshot(path=str(SHOTS / "login.png"), full_page=True)
        page.fill("#token", dashboard.tokens["operator"])
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_selector("#fpy .main-svg")
        page.wait_for_selector("#pareto .main-svg")
        page.wait_for_selector("#pchart .main-svg")
        assert "test-operator" in page.inner_text("header")
        assert page.locator("#stations tr").count() == 3  # header + two stations
        page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)

        page.click("text=NG gallery")
        page.wait_for_selector("#gallery .card img")
        _until(page, "Array.from(document.querySelectorAll('#gallery img')).every(i => i.naturalWidth > 0)")
        page.screenshot(path=str(SHOTS / "gallery.png"), full_page=True)

        page.click("text=Cell lookup")
        page.fill("#cell-id", "L1-0003")
        page.press("#cell-id", "Enter")
        page.wait_for_selector("#genealogy")
        assert page.locator("table tr").count() >= 2
        page.screenshot(path=str(SHOTS / "cell.png"), full_page=True)

        page.click("text=Review queue")
        page.wait_for_selector("#queue .card")
        _until(page, "document.getElementById('count').textContent !== '…'")
        before = int(page.inner_text("#count"))
        page.screenshot(path=str(SHOTS / "review.png"), full_page=True)
        page.locator("#queue .card button.false").first.click()
        _until(page, f"document.getElementById('count').textContent === '{before - 1}'")
        page.reload()
        _until(page, f"document.getElementById('count').textContent === '{before - 1}'")
        page.screenshot(path=str(SHOTS / "review-after.png"), full_page=True)

        page.click("text=Models")
        page.wait_for_selector("#disagreements")
        page.screenshot(path=str(SHOTS / "models.png"), full_page=True)
        browser.close()
    assert not errors, errors
    assert not outside, f"the dashboard loaded from outside the service: {outside[:3]}"
    assert len(dashboard.service.store.review_queue()) == before - 1


HOSTILE_CELL = "C9'\"><img src=x onerror=\"window.__xss='cell'\">"
HOSTILE_CLASS = "crack' autofocus onfocus='window.__xss=\"class\"' x='\"><script>window.__xss='script'</script>"


def test_hostile_names_show_as_text_and_never_run_script(dashboard: Server, chromium: str) -> None:
    """Issue 13 #2: a model's class name and a cell ID with quotes once broke out of attributes and ran."""
    from datetime import UTC, datetime

    from playwright import sync_api as playwright_api

    from cellsight.storage.records import InspectionRecord
    from cellsight.types import Verdict

    service = dashboard.service
    for offset, (cell, cls) in enumerate([(HOSTILE_CELL, HOSTILE_CLASS), ("C9-plain", HOSTILE_CLASS)]):
        service.trace.record_inspection(InspectionRecord(
            run_id=service.run_id, sequence=90_000 + offset, cell_id=cell, station="electrode", station_index=0,
            verdict=Verdict.NG, score=0.9, defect_class=cls, reason=None, model_version="v1", model_hash="0" * 64,
            latency_ms=1.0, image_path=None, heatmap_path=None, inspected_at=datetime.now(UTC)))
    dialogs: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(dashboard.url + "/login")
        page.fill("#token", dashboard.tokens["operator"])
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_url(dashboard.url + "/")
        for path, ready in (("/gallery", "#gallery .card"), ("/review", "#queue .card"),
                            ("/cells?id=" + quote(HOSTILE_CELL), "#genealogy"), ("/models", "h1")):
            response = page.goto(dashboard.url + path)
            assert response is not None
            assert "script-src 'self'" in response.headers["content-security-policy"]
            page.wait_for_selector(ready)
            if path != "/models":
                _until(page, "document.body.innerText.includes('crack')")
            page.locator("input").first.focus()  # an injected onfocus would fire here
            assert page.evaluate("window.__xss") is None, (path, page.evaluate("window.__xss"))
            assert page.locator("script:not([src]):not([type='application/json'])").count() == 0, path
            if path in ("/gallery", "/review"):
                assert HOSTILE_CELL in page.inner_text("main"), path  # shown as text, whole
                assert page.locator(f"#{'gallery' if path == '/gallery' else 'queue'} img[src='x']").count() == 0
            if path == "/review":
                values = page.eval_on_selector_all("#queue input", "els => els.map(e => e.value)")
                assert HOSTILE_CLASS in values  # the class sits whole in the field, not in the markup
        # The policy itself: an inline script that somehow reached the page does not run.
        page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1';"
                      " document.body.append(s); }")
        assert page.evaluate("window.__inline") is None
        browser.close()
    assert not dialogs
