"""The dashboard's pages: each needs at least the viewer role (cookie from the login form). The data of
the live pages comes from the JSON API; the script draws it with DOM APIs. Templates live in cellsight.ui."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import plotly
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from cellsight.i18n import LOCALES, Localizer
from cellsight.line.models import CONFIGURED
from cellsight.service.auth import COOKIE, Principal, Role, authenticate, check_csrf, csrf_token, origin_allowed
from cellsight.service.deps import PageViewer, ServiceDep
from cellsight.service.state import Service
from cellsight.ui.locale import LANG_COOKIE, request_localizer, script_text
from cellsight.ui.render import STATIC, render
from cellsight.ui.strings import LOGIN_ERRORS, NAV

router = APIRouter(include_in_schema=False)
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
_STATIC_TYPES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


def _loc(request: Request) -> Localizer:
    """The page's language: the user's choice (language form) or else the browser's Accept-Language."""
    return request_localizer(request.headers.get("accept-language"), request.cookies.get(LANG_COOKIE))


def _page(request: Request, service: Service, who: Principal, template: str, active: str, live: str = "",
          loc: Localizer | None = None, **context: Any) -> HTMLResponse:
    """A page for `who` in their language: navigation, the CSRF token for its forms and requests, and the
    script's settings (with its strings in that language)."""
    loc = loc or _loc(request)
    token = request.cookies.get(COOKIE) or ""
    csrf = csrf_token(token) if token else ""
    settings = {"images": who.role >= Role.OPERATOR, "review": who.role >= Role.OPERATOR,
                "refresh": service.settings.refresh_seconds, "csrf": csrf, "lang": loc.html_lang,
                "locale": loc.locale, "text": script_text(loc)}
    return HTMLResponse(render(template, loc, who=who, active=active, csrf=csrf, page=live, settings=settings,
                               **context))


@router.get("/static/plotly.min.js")
def plotly_js() -> FileResponse:
    """plotly.js from the installed plotly wheel: the dashboard never loads anything from the internet."""
    return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    if name not in _STATIC_TYPES:
        raise HTTPException(404, "no such file")
    return FileResponse(STATIC / name, media_type=_STATIC_TYPES[name])


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, error: str | None = None) -> HTMLResponse:
    loc = _loc(request)
    message = LOGIN_ERRORS.get(error or "", "")
    return HTMLResponse(render("login.html", loc, who=None, active="/login",
                               error=loc.gettext(message) if message else ""))


_LANGUAGE_TARGETS = frozenset({"/login", *(href for href, _label in NAV)})


@router.post("/language")
def language(request: Request, service: ServiceDep, lang: Annotated[str, Form(max_length=12)] = "",
             next: Annotated[str, Form(max_length=64)] = "/", csrf: Annotated[str, Form(max_length=128)] = ""
             ) -> Response:
    """Remember the user's language in a cookie. A logged-in browser must send its CSRF token (and our
    origin); before login the form must come from our own pages. Only our own pages are redirect targets."""
    if lang not in LOCALES:
        raise HTTPException(400, f"unknown language {lang!r}; choose from {', '.join(LOCALES)}")
    token = request.cookies.get(COOKIE)
    if token:
        check_csrf(request, token, csrf)
    elif not origin_allowed(request, service.settings.allowed_origins):
        raise HTTPException(403, "the language form must be sent from this site")
    response = RedirectResponse(next if next in _LANGUAGE_TARGETS else "/", status_code=303)
    response.set_cookie(LANG_COOKIE, lang, httponly=True, samesite="strict", secure=service.settings.secure_cookie,
                        max_age=365 * 24 * 3600)
    return response


@router.post("/login")
def login(request: Request, service: ServiceDep, token: Annotated[str, Form(max_length=512)] = "") -> Response:
    """Check the token, then keep it in an HttpOnly, SameSite=Strict cookie (no script can read it).

    The form must come from this service's own pages (Origin): another site cannot log a browser in
    under the attacker's token. (A client that names no origin is no browser on another site.)"""
    named = "origin" in request.headers or "referer" in request.headers
    if named and not origin_allowed(request, service.settings.allowed_origins):
        return RedirectResponse("/login?error=origin", status_code=303)
    if authenticate(service.store, token.strip()) is None:
        return RedirectResponse("/login?error=unknown-token", status_code=303)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict", secure=service.settings.secure_cookie,
                        max_age=12 * 3600)
    return response


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        check_csrf(request, token, csrf)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, who: PageViewer, service: ServiceDep) -> HTMLResponse:
    return _page(request, service, who, "overview.html", "/", live="overview", plotly=True,
                 line=service.config.line, run_id=service.run_id)


@router.get("/gallery", response_class=HTMLResponse)
def gallery(request: Request, who: PageViewer, service: ServiceDep) -> HTMLResponse:
    return _page(request, service, who, "gallery.html", "/gallery", live="gallery")


@router.get("/review", response_class=HTMLResponse)
def review(request: Request, who: PageViewer, service: ServiceDep) -> HTMLResponse:
    return _page(request, service, who, "review.html", "/review", live="review", can_review=who.role >= Role.OPERATOR)


@router.get("/cells", response_class=HTMLResponse)
def cells(request: Request, who: PageViewer, service: ServiceDep, id: str | None = None) -> HTMLResponse:
    loc = _loc(request)
    found = service.store.cell_inspections(id) if id else []
    dispositions = service.trace.cells(cell_id=id) if id else []
    rows = [{
        "time": loc.datetime(r.inspected_at), "run_seq": f"{r.run_id}/{r.sequence}",
        "station": r.station, "verdict": r.verdict.value, "score": "–" if math.isnan(r.score) else f"{r.score:.3f}",
        "label": r.defect_class or (r.reason.value if r.reason else ""), "model": r.model_version,
        "stored": (r.heatmap_path or r.image_path) is not None, "base": f"/v1/inspections/{i}",
        "kind": "heatmap" if (r.heatmap_path or r.image_path or "").endswith("_heatmap.png") else "image",
    } for i, r in found]
    fates = [{
        "run_id": c.run_id, "sequence": c.sequence, "disposition": c.disposition.value,
        "css": "OK" if c.disposition.value == "OK" else "NG", "failed_station": c.failed_station,
        "finished_at": loc.datetime(c.finished_at),
    } for c in dispositions]
    return _page(request, service, who, "cells.html", "/cells", loc=loc, cell_id=id or "",
                 found=bool(found or dispositions), rows=rows, dispositions=fates,
                 see_images=who.role >= Role.OPERATOR)


def _score(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"({value:.3f})"


@router.get("/models", response_class=HTMLResponse)
def models(request: Request, who: PageViewer, service: ServiceDep) -> HTMLResponse:
    loc = _loc(request)
    stations = []
    for station in service.config.station_names:
        live, shadow = service.store.current(station, "live"), service.store.current(station, "shadow")
        scored, differ = service.store.shadow_counts(station)
        history = [{
            "id": d.id, "kind": d.kind, "version": d.version, "sha": d.model_sha256[:12],
            "by": loc.gettext(CONFIGURED) if d.created_by == CONFIGURED else d.created_by,
            "when": loc.datetime(d.created_at),
            "state": "live" if live and d.id == live.id else "shadow" if shadow and d.id == shadow.id else "",
            "ended": loc.datetime(d.ended_at) if d.ended_at else "",
        } for d in reversed(service.store.deployments(station))]
        stations.append({"station": station, "live": live.version if live else None,
                         "shadow": shadow.version if shadow else None, "scored": scored, "differ": differ,
                         "history": history})
    rows = [{**d.__dict__, "live_score": _score(d.live_score), "shadow_score": _score(d.shadow_score)}
            for d in service.store.disagreements(limit=50)]
    return _page(request, service, who, "models.html", "/models", loc=loc, stations=stations, disagreements=rows)
