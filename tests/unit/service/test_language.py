"""The dashboard's language: Accept-Language, the language form (CSRF- and origin-checked), every page."""

from __future__ import annotations

from typing import Any

from cellsight.service.auth import COOKIE, csrf_token
from cellsight.ui.locale import LANG_COOKIE

ORIGIN = {"Origin": "http://testserver"}


def test_the_login_page_follows_accept_language(running_sqlite: Any) -> None:
    client = running_sqlite.client
    german = client.get("/login", headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}).text
    assert '<html lang="de">' in german and "Anmelden" in german and "Log in" not in german
    chinese = client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).text
    assert '<html lang="zh-CN">' in chinese and "登录" in chinese
    assert '<html lang="en">' in client.get("/login", headers={"Accept-Language": "fr-FR"}).text


def test_the_language_form_is_checked_and_remembered(running_sqlite: Any) -> None:
    client = running_sqlite.client
    form = {"lang": "zh_CN", "next": "/login"}
    assert client.post("/language", data=form, follow_redirects=False).status_code == 403  # no origin named
    foreign = client.post("/language", data=form, headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert foreign.status_code == 403
    assert client.post("/language", data={"lang": "xx"}, headers=ORIGIN).status_code == 400
    chosen = client.post("/language", data={"lang": "zh_CN", "next": "https://evil.example/"}, headers=ORIGIN,
                         follow_redirects=False)
    assert chosen.status_code == 303 and chosen.headers["location"] == "/"  # only our own pages
    assert chosen.cookies.get(LANG_COOKIE) == "zh_CN"
    client.cookies.set(LANG_COOKIE, "zh_CN")
    page = client.get("/login", headers={"Accept-Language": "de"}).text  # the choice beats the browser
    assert '<html lang="zh-CN">' in page


def test_a_logged_in_choice_needs_the_csrf_token_and_every_page_is_translated(running_sqlite: Any) -> None:
    run = running_sqlite
    client, token = run.client, run.tokens["operator"]
    client.cookies.set(COOKIE, token)
    refused = client.post("/language", data={"lang": "de", "next": "/gallery"}, headers=ORIGIN, follow_redirects=False)
    assert refused.status_code == 403
    done = client.post("/language", data={"lang": "de", "next": "/gallery", "csrf": csrf_token(token)},
                       headers=ORIGIN, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/gallery"
    client.cookies.set(LANG_COOKIE, "de")
    for path, words in (("/", "Linienübersicht"), ("/gallery", "NG-Galerie"), ("/review", "Nachprüfung"),
                        ("/cells?id=NOPE", "wurde nie geprüft"), ("/models", "Modelle")):
        page = client.get(path)
        assert page.status_code == 200 and '<html lang="de">' in page.text and words in page.text, path
    settings = client.get("/").text
    assert '"lang": "de"' in settings and '"updated": "aktualisiert"' in settings  # the script's strings too
