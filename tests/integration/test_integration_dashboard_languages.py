"""Every dashboard page in every language, in headless Chromium: no untranslated string, numbers and the
truth and cost panel in the page's language; the language form switches it (and is CSRF-checked)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from tests.integration.test_integration_service import Server, _until, free_port
from tests.integration.untranslated import page_texts, untranslated

from cellsight.line.config import load_line_config
from cellsight.service.app import create_app
from cellsight.service.auth import COOKIE
from cellsight.service.state import Service
from cellsight.service.testing import role_tokens, train_tiny_model, write_line_config

pytestmark = pytest.mark.integration
SHOTS = Path("/tmp/shots")
COSTS = """costs:
  currency: EUR
  co2e_kg_per_kwh: 0.38
  escape: 180
  review: 0.35
  end_of_line: {value_added: 16, energy_kwh: 9.5}
  stations:
    electrode: {value_added: 6.5, energy_kwh: 4.0}
    can: {value_added: 11.4, energy_kwh: 5.2}
"""
PAGES = (("/", "#truth tr + tr"), ("/gallery", "#gallery .card"), ("/review", "#queue .card"),
         ("/cells?id=T-0003", "#genealogy"), ("/models", "h1"))


@pytest.fixture(scope="module")
def line(tiny_mvtec: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A line with a cost model, 12 cells through two stations, audit truth for four and a false call reviewed."""
    folder = tmp_path_factory.mktemp("languages")
    model = train_tiny_model(tiny_mvtec, folder / "v1.safetensors", "v1")
    path = write_line_config(folder / "line", f"sqlite:///{folder / 'trace.db'}", model)
    path.write_text(path.read_text() + COSTS)
    config, sha = load_line_config(path)
    service = Service.start(config, sha)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    running = Server(f"http://127.0.0.1:{port}", service, role_tokens(service.store), server, thread)
    images = sorted((tiny_mvtec / "test").rglob("*.png"))
    with httpx.Client(base_url=running.url, timeout=60, headers=running.headers()) as client:
        ids = []
        for i in range(12):
            for station in ("electrode", "can"):
                image = images[i % len(images)]
                answer = client.post(f"/v1/stations/{station}/inspect", data={"cell_id": f"T-{i:04d}"},
                                     files={"image": (image.name, image.read_bytes())}).json()
                ids.append(answer["id"])
        for inspection_id, found in zip(ids[:8], ("good", "crack", "good", "good", "good", "spot", "good", "good"),
                                        strict=True):
            client.post(f"/v1/inspections/{inspection_id}/truth", json={"true_class": found, "source": "audit"})
    yield running
    running.stop()


def _data_words(server: Server) -> set[str]:
    """Values that are data, not text: station, cell, model, class and reason names, user names."""
    words = {"service-test", "electrode", "can", "crack", "spot", "good", "cs_", "test-operator", "test-viewer",
             "test-admin", "strict", "v1", "SHA-256"}
    for r in server.service.trace.inspections():
        words |= {r.cell_id, r.station, r.model_version, r.defect_class or "", r.reason.value if r.reason else ""}
    return {piece for word in words for piece in word.replace("-", " ").replace("_", " ").split()} | words


@pytest.mark.parametrize(("locale", "accept"), [("en", "en-US,en"), ("zh_CN", "zh-CN,zh;q=0.9"), ("de", "de-DE,de")])
def test_every_page_in_every_language_has_no_untranslated_string(line: Server, chromium: str, locale: str,
                                                                    accept: str) -> None:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    data, problems, errors = _data_words(line), {}, []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        context = browser.new_context(locale=accept.split(",")[0], extra_http_headers={"Accept-Language": accept},
                                      viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(line.url + "/login")
        assert page.get_attribute("html", "lang") == locale.replace("_", "-")
        problems["/login"] = untranslated(page_texts(page), locale, data)
        page.fill("#token", line.tokens["operator"])
        page.click("form[action='/login'] button[type=submit]")
        for path, ready in PAGES:
            page.goto(line.url + path)
            _until(page, f"document.querySelector({ready!r}) !== null")
            if path == "/":
                _until(page, "document.querySelector('#fpy .main-svg') !== null")
                _until(page, "document.querySelector('#costs tr + tr') !== null")
            assert page.get_attribute("html", "lang") == locale.replace("_", "-"), path
            problems[path] = untranslated(page_texts(page), locale, data)
            page.screenshot(path=str(SHOTS / f"{locale}{path.split('?')[0].replace('/', '-') or '-overview'}.png"),
                            full_page=True)
        page.goto(line.url + "/")
        _until(page, "document.querySelector('#truth tr + tr') !== null")
        truth_header = page.inner_text("#truth tr")
        browser.close()
    assert not errors, errors
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}
    expected = {"en": "escape", "zh_CN": "漏检", "de": "Durchschlupf"}[locale]
    assert expected in truth_header


def test_the_language_form_switches_and_keeps_the_choice(line: Server, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        context = browser.new_context(locale="en-US", extra_http_headers={"Accept-Language": "en-US,en"})
        page = context.new_page()
        page.goto(line.url + "/login")
        page.fill("#token", line.tokens["viewer"])
        page.click("form[action='/login'] button[type=submit]")
        page.goto(line.url + "/gallery")
        page.select_option("#lang", "de")
        page.click("form.lang button[type=submit]")
        _until(page, "document.documentElement.lang === 'de'")
        assert page.url.endswith("/gallery") and "NG-Galerie" in page.inner_text("h1")
        page.goto(line.url + "/")  # remembered across pages, whatever the browser asks for
        _until(page, "document.querySelector('#truth tr + tr') !== null")
        assert page.get_attribute("html", "lang") == "de" and "Durchschlupf" in page.inner_text("#truth")
        # German numbers from the server (Babel) and in the browser (Intl): a decimal comma
        assert "," in page.inner_text("#costs") and "€" in page.inner_text("#costs")
        browser.close()
    # another site cannot switch a logged-in user's language: no CSRF token
    forged = httpx.post(f"{line.url}/language", data={"lang": "zh_CN", "next": "/"}, follow_redirects=False,
                        headers={"Origin": line.url}, cookies={COOKIE: line.tokens["viewer"]})
    assert forged.status_code == 403
