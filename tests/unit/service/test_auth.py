"""Every route is walked: none may answer an anonymous client, and each enforces the role it declares."""

from __future__ import annotations

import re
from typing import Any

from fastapi.routing import APIRoute

from cellsight.service.app import PUBLIC_PATHS, create_app
from cellsight.service.auth import Role, RoleDependency, hash_token
from cellsight.service.state import Service

# What a read-only client may see; everything else needs more than the viewer role.
VIEWER_MAY = {"GET"}
NO_IMAGES = {"/v1/inspections/{inspection_id}/image.png", "/v1/inspections/{inspection_id}/heatmap.png"}


def _role(route: APIRoute) -> Role | None:
    stack = list(route.dependant.dependencies)
    while stack:
        dependant = stack.pop()
        if isinstance(dependant.call, RoleDependency):
            return dependant.call.role
        stack.extend(dependant.dependencies)
    return None


def _routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute, including those of included routers (FastAPI >= 0.165 wraps them)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found.extend(_routes(route.original_router.routes))
        else:
            assert getattr(route, "path", None) in PUBLIC_PATHS, f"unexpected route {route!r}: check its auth"
    return found


def _calls(service: Service) -> list[tuple[str, str, Role]]:
    calls = []
    for route in _routes(create_app(service).routes):
        if route.path in PUBLIC_PATHS:
            continue
        role = _role(route)
        assert role is not None, f"{route.path} declares no role: every non-public route must use require()"
        path = re.sub(r"\{station\}", "electrode", route.path)
        path = re.sub(r"\{inspection_id\}", "1", path)
        path = re.sub(r"\{cell_id\}", "C1", path)
        path = re.sub(r"\{name\}", "nobody", path)
        assert "{" not in path, f"fill in the path parameter of {route.path} in this test"
        for method in route.methods:
            calls.append((method, path, role))
    return calls


def test_every_route_requires_a_token_and_its_role(running_sqlite: Any) -> None:
    run = running_sqlite
    calls = _calls(run.service)
    assert len(calls) >= 20
    for method, path, role in calls:
        anonymous = run.client.request(method, path, follow_redirects=False)
        if path.startswith("/v1/") or path == "/metrics":
            assert anonymous.status_code == 401, (method, path, anonymous.status_code)
        else:  # dashboard pages send the browser to the login form
            assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login", (method, path)
        wrong = run.client.request(method, path, headers={"Authorization": "Bearer cs_not-a-token"},
                                   follow_redirects=False)
        assert wrong.status_code in (401, 303), (method, path)
        viewer = run.client.request(method, path, headers=run.auth("viewer"), follow_redirects=False)
        if role > Role.VIEWER:
            assert viewer.status_code == 403, (method, path, viewer.status_code)
        else:
            assert viewer.status_code not in (401, 403), (method, path, viewer.status_code)
    protected = {path for _, path, role in calls if role > Role.VIEWER}
    assert {p.replace("{inspection_id}", "1") for p in NO_IMAGES} <= protected
    assert {"/v1/stations/electrode/inspect", "/v1/inspections/1/review", "/v1/stations/electrode/models",
            "/v1/stations/electrode/models/rollback", "/v1/tokens"} <= protected


def test_operators_cannot_deploy_and_admins_make_tokens(running_sqlite: Any) -> None:
    run = running_sqlite
    assert run.client.post("/v1/stations/electrode/models/rollback", headers=run.auth("operator")).status_code == 403
    made = run.client.post("/v1/tokens", json={"name": "line-2 PLC", "role": "operator"}, headers=run.auth("admin"))
    assert made.status_code == 200
    token = made.json()["token"]
    assert run.service.store.token(hash_token(token)) is not None
    assert run.client.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_tokens_are_stored_only_hashed(running_sqlite: Any) -> None:
    from sqlalchemy import text

    with running_sqlite.service.trace.engine.connect() as connection:
        stored = {row[0] for row in connection.execute(text("SELECT token_sha256 FROM api_tokens"))}
    for token in running_sqlite.tokens.values():
        assert token not in stored and hash_token(token) in stored


def test_login_sets_an_http_only_cookie_that_opens_the_dashboard(running_sqlite: Any) -> None:
    run = running_sqlite
    refused = run.client.post("/login", data={"token": "cs_wrong"}, follow_redirects=False)
    assert refused.status_code == 303 and "error" in refused.headers["location"]
    login = run.client.post("/login", data={"token": run.tokens["viewer"]}, follow_redirects=False)
    cookie = login.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    page = run.client.get("/")
    assert page.status_code == 200 and "Line overview" in page.text and "/static/plotly.min.js" in page.text
    assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")  # nothing from the internet
    run.client.cookies.clear()


def _login(run: Any, role: str) -> str:
    """Log the test client in through the form; the CSRF token its pages carry."""
    from cellsight.service.auth import csrf_token

    assert run.client.post("/login", data={"token": run.tokens[role]}, follow_redirects=False).status_code == 303
    page = run.client.get("/review")
    token = csrf_token(run.tokens[role])
    assert token in page.text  # the pages hand it to the script
    return token


def test_cookie_requests_that_change_state_need_our_origin_and_the_csrf_token(running_sqlite: Any,
                                                                               models: Any) -> None:
    """Issue 13 #5: a page on another port of the same host deployed a model with an admin's cookie."""
    run = running_sqlite
    csrf = _login(run, "admin")
    own = "http://testserver"
    attacks = [
        {"origin": "http://testserver:9999"},  # another port of the same host: same site, other origin
        {"origin": "http://testserver:9999", "x-csrf-token": csrf},
        {"origin": "null", "x-csrf-token": csrf},
        {"origin": own},  # our origin but no token
        {"origin": own, "x-csrf-token": "0" * 64},
        {"x-csrf-token": csrf},  # names no origin at all
    ]
    for headers in attacks:
        deploy = run.client.post("/v1/stations/electrode/models", data={"path": str(models.v2)}, headers=headers)
        assert deploy.status_code == 403, (headers, deploy.status_code)
        made = run.client.post("/v1/tokens", json={"name": "evil", "role": "admin"}, headers=headers)
        assert made.status_code == 403, headers
    assert run.service.registry.slot("electrode").live.model_version == "v1"
    assert run.client.get("/v1/models").status_code == 200  # reading needs no token
    ok = run.client.post("/v1/tokens", json={"name": "mine", "role": "viewer"},
                         headers={"origin": own, "x-csrf-token": csrf})
    assert ok.status_code == 200
    referer = run.client.post("/v1/tokens", json={"name": "mine2", "role": "viewer"},
                              headers={"referer": own + "/models", "x-csrf-token": csrf})
    assert referer.status_code == 200
    # A bearer-token client (script, PLC gateway) sends no cookie: no CSRF token needed.
    run.client.cookies.clear()
    bearer = run.client.post("/v1/tokens", json={"name": "script", "role": "viewer"}, headers=run.auth("admin"))
    assert bearer.status_code == 200


def test_login_and_logout_refuse_other_origins(running_sqlite: Any) -> None:
    run = running_sqlite
    forged = run.client.post("/login", data={"token": run.tokens["viewer"]}, follow_redirects=False,
                             headers={"origin": "http://evil.example"})
    assert forged.status_code == 303 and "set-cookie" not in forged.headers
    csrf = _login(run, "viewer")
    assert run.client.post("/logout", headers={"origin": "http://testserver:1"}).status_code == 403
    assert run.client.get("/", follow_redirects=False).status_code == 200  # still logged in
    out = run.client.post("/logout", data={"csrf": csrf}, headers={"origin": "http://testserver"},
                          follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
