"""Dashboard pages. Each one needs at least the viewer role (cookie from the login form); JS fills in data."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import plotly
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from cellsight.i18n import negotiate
from cellsight.service.auth import COOKIE, Principal, Role, RoleDependency, authenticate
from cellsight.service.state import Service, get_service
from cellsight.ui.layout import escape, page
from cellsight.ui.script import DASHBOARD_JS

router = APIRouter(include_in_schema=False)
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class PageAuth(RoleDependency):
    """Like the API's check, but a browser without a valid cookie is sent to the login form."""

    def __call__(self, request: Request) -> Principal:
        try:
            return super().__call__(request)
        except HTTPException as exc:
            if exc.status_code != 401:
                raise
            raise HTTPException(303, "log in first", headers={"Location": "/login"}) from exc


ServiceDep = Annotated[Service, Depends(get_service)]
Who = Annotated[Principal, Depends(PageAuth(Role.VIEWER))]


def _settings(service: Service, who: Principal, **extra: object) -> str:
    data = {"images": who.role >= Role.OPERATOR, "review": who.role >= Role.OPERATOR,
            "refresh": service.settings.refresh_seconds, **extra}
    return f"window.CS = {json.dumps(data)};"


@router.get("/static/plotly.min.js")
def plotly_js() -> FileResponse:
    """plotly.js from the installed plotly wheel: the dashboard never loads anything from the internet."""
    return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)


@router.get("/static/dashboard.js")
def dashboard_js() -> Response:
    return Response(DASHBOARD_JS, media_type="text/javascript")


@router.get("/login", response_class=HTMLResponse)
def login_form(error: str | None = None) -> str:
    message = f"<p class='error'>{escape(error)}</p>" if error else ""
    body = (f"<h1>Log in</h1><p class='sub'>Paste your cellsight API token (from <code>cellsight token create</code>)."
            f"</p>{message}<form method='post' action='/login' class='panel' style='max-width:520px'>"
            "<input type='password' name='token' id='token' placeholder='cs_...' size='48' autofocus> "
            "<button type='submit'>Log in</button></form>")
    return page("Log in", body, None)


@router.post("/login")
def login(request: Request, service: ServiceDep, token: Annotated[str, Form()] = "") -> Response:
    """Check the token, then keep it in an HttpOnly, SameSite=Strict cookie (no script can read it)."""
    if authenticate(service.store, token.strip()) is None:
        return RedirectResponse("/login?error=unknown+token", status_code=303)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict", secure=service.settings.secure_cookie,
                        max_age=12 * 3600)
    return response


@router.get("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, who: Who, service: ServiceDep) -> str:
    body = (
        f"<h1>Line overview: {escape(service.config.line)}</h1><p class='sub'>Service run {service.run_id} · "
        "live, refreshed every few seconds · <span id='updated'></span></p>"
        "<div class='panel' id='kpis'></div><div class='plots'>"
        "<div class='panel plot'><div id='fpy' style='width:560px;height:360px'></div></div>"
        "<div class='panel plot'><div id='pareto' style='width:620px;height:360px'></div></div></div>"
        "<div class='panel'><div id='pchart' style='width:1200px;height:360px'></div></div>"
        "<div class='panel'><table id='stations'></table></div>"
        "<div class='panel' id='truth-panel'><h2 id='truth-title'></h2><table id='truth'></table>"
        "<h3 id='confusion-title'></h3><table id='confusion'></table><p class='note' id='sampled'></p>"
        "<p class='note' id='naming'></p><h2 id='costs-title'></h2><table id='costs'></table></div>"
    )
    locale = negotiate(request.headers.get("accept-language"))  # the truth panel in the browser's language
    script = ("poll(() => Promise.all([getJSON('/v1/quality').then(renderOverview), "
              f"getJSON('/v1/truth?lang={locale}').then(renderTruth)]));")
    return page("Line overview", body, who, "/", plotly=True, settings=_settings(service, who), script=script)


@router.get("/gallery", response_class=HTMLResponse)
def gallery(who: Who, service: ServiceDep) -> str:
    body = ("<h1>NG gallery</h1><p class='sub'>Newest NG and ERROR inspections with their heat maps "
            "(blue normal, red well above the threshold) · <span id='updated'></span></p>"
            "<div class='cards' id='gallery'></div>")
    return page("NG gallery", body, who, "/gallery", settings=_settings(service, who),
                script="poll(renderGallery);")


@router.get("/review", response_class=HTMLResponse)
def review(who: Who, service: ServiceDep) -> str:
    hint = "" if who.role >= Role.OPERATOR else "<p class='note'>Reviewing needs the operator role.</p>"
    body = (f"<h1>Review queue: <span id='count'>…</span> to review</h1><p class='sub'>NG and ERROR inspections nobody "
            f"has reviewed, oldest first · <span id='updated'></span></p>{hint}<div class='cards' id='queue'></div>")
    return page("Review queue", body, who, "/review", settings=_settings(service, who),
                script="poll(renderQueue);")


@router.get("/cells", response_class=HTMLResponse)
def cells(who: Who, service: ServiceDep, id: str | None = None) -> str:
    form = (f"<h1>Cell lookup</h1><form method='get' action='/cells' class='panel'><input type='text' name='id' "
            f"id='cell-id' placeholder='cell ID' value='{escape(id or '')}' size='32'> <button>Look up</button></form>")
    if not id:
        return page("Cell lookup", form, who, "/cells")
    found = service.store.cell_inspections(id)
    dispositions = service.trace.cells(cell_id=id)
    if not found and not dispositions:
        return page("Cell lookup", form + f"<p class='error'>Cell {escape(id)} was never inspected.</p>", who, "/cells")
    see = who.role >= Role.OPERATOR
    rows = "".join(
        f"<tr><td>{escape(r.inspected_at.strftime('%Y-%m-%d %H:%M:%S'))}</td>"
        f"<td class='num'>{r.run_id}/{r.sequence}</td>"
        f"<td>{escape(r.station)}</td><td class='{r.verdict.value}'><b>{r.verdict.value}</b></td>"
        f"<td class='num'>{'–' if math.isnan(r.score) else f'{r.score:.3f}'}</td>"
        f"<td>{escape(r.defect_class or (r.reason.value if r.reason else ''))}</td><td>{escape(r.model_version)}</td>"
        f"<td>{_thumb(i, r.heatmap_path or r.image_path, see)}</td></tr>"
        for i, r in found
    )
    fates = "".join(
        f"<li>run {c.run_id} #{c.sequence}: <b class='{'OK' if c.disposition.value == 'OK' else 'NG'}'>"
        f"{c.disposition.value}</b>{' at ' + escape(c.failed_station) if c.failed_station else ''} "
        f"({escape(c.finished_at.strftime('%Y-%m-%d %H:%M:%S'))})</li>" for c in dispositions
    )
    head = "".join(f"<th>{h}</th>" for h in ("Time", "Run/seq", "Station", "Verdict", "Score", "Class / reason",
                                             "Model", "Image"))
    body = (f"{form}<div class='panel'><h2 id='genealogy'>Genealogy of {escape(id)}</h2>"
            f"<ul>{fates or '<li>not finished</li>'}</ul><table><tr>{head}</tr>{rows}</table></div>")
    return page(f"Cell {id}", body, who, "/cells")


def _thumb(inspection_id: int, path: str | None, see: bool) -> str:
    if path is None:
        return "<span class='note'>not stored</span>"
    if not see:
        return "<span class='note'>operator only</span>"
    kind = "heatmap" if path.endswith("_heatmap.png") else "image"
    base = f"/v1/inspections/{inspection_id}"
    return f"<a href='{base}/image.png'><img src='{base}/{kind}.png' width='96' alt='inspection image'></a>"


@router.get("/models", response_class=HTMLResponse)
def models(who: Who, service: ServiceDep) -> str:
    sections = []
    for station in service.config.station_names:
        live, shadow = service.store.current(station, "live"), service.store.current(station, "shadow")
        scored, differ = service.store.shadow_counts(station)
        history = "".join(
            f"<tr><td>{d.id}</td><td>{d.kind}</td><td>{escape(d.version)}</td><td><code>{d.model_sha256[:12]}</code></td>"
            f"<td>{escape(d.created_by)}</td><td>{d.created_at:%Y-%m-%d %H:%M}</td><td>"
            f"{'<b>LIVE</b>' if live and d.id == live.id else '<b>SHADOW</b>' if shadow and d.id == shadow.id else ''}"
            f"{'ended ' + format(d.ended_at, '%Y-%m-%d %H:%M') if d.ended_at else ''}</td></tr>"
            for d in reversed(service.store.deployments(station))
        )
        summary = (f"shadow <b>{escape(shadow.version)}</b>: scored {scored} inspections, disagreed on {differ}"
                   if shadow else "no shadow model")
        sections.append(
            f"<div class='panel'><h2>{escape(station)}</h2><p>live <b>{escape(live.version if live else '?')}</b> · "
            f"{summary}</p><table><tr><th>#</th><th>Kind</th><th>Version</th><th>SHA-256</th><th>By</th><th>When</th>"
            f"<th>State</th></tr>{history}</table></div>"
        )
    rows = "".join(
        f"<tr><td><a href='/cells?id={escape(d.cell_id)}'>{escape(d.cell_id)}</a></td><td>{escape(d.station)}</td>"
        f"<td class='{d.live_verdict}'>{d.live_verdict} {_score(d.live_score)}</td><td class='{d.shadow_verdict}'>"
        f"{d.shadow_verdict} {_score(d.shadow_score)}</td><td>{escape(d.shadow_version)}</td></tr>"
        for d in service.store.disagreements(limit=50)
    )
    head = "".join(f"<th>{h}</th>" for h in ("Cell", "Station", "Live", "Shadow", "Shadow model"))
    table = (f"<table id='disagreements'><tr>{head}</tr>{rows}</table>" if rows
             else "<p class='note'>No disagreements between live and shadow models.</p>")
    body = (f"<h1>Models</h1><p class='sub'>Live and shadow models per station, newest first.</p>{''.join(sections)}"
            f"<div class='panel'><h2>Where live and shadow disagree</h2>{table}</div>")
    return page("Models", body, who, "/models")


def _score(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"({value:.3f})"
