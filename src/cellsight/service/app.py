"""The FastAPI app: the /v1 API, the dashboard, health and metrics, behind a body-size limit and with
security headers on every answer (a Content-Security-Policy that allows no inline script)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from cellsight import __version__
from cellsight.service.limits import BodyLimit
from cellsight.service.routes import ROUTERS
from cellsight.service.state import Service

log = logging.getLogger("cellsight.service")

# Routes anyone may call: health for load balancers, the API description, the login form and the
# dashboard's static files. Tests check every other route needs a token.
PUBLIC_PATHS = frozenset({
    "/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/login", "/logout",
    "/static/plotly.min.js", "/static/{name}", "/favicon.ico",
})
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
"""No inline or foreign script: even a value that slipped past escaping cannot run. Inline styles stay
allowed because plotly.js sets them on its charts."""
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
}


async def _security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def create_app(
    service: Service | None = None, companions: Sequence[Callable[[], AbstractAsyncContextManager[Any]]] = ()
) -> FastAPI:
    """The app around a started service; without one, only good for its OpenAPI description.

    `companions` run for the app's lifetime on its event loop (the PLC link's OPC UA server): the
    composition happens in the CLI, so the service never imports the PLC layer.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for companion in companions:
                await stack.enter_async_context(companion())
            yield
        if service is not None:
            service.stop()

    app = FastAPI(
        title="cellsight inspection service", version=__version__, lifespan=lifespan,
        description="Inspect station images, trace cells, manage model versions and review NG calls. "
                    "Send `Authorization: Bearer <token>`; roles: viewer < operator < admin.",
    )
    app.state.service = service
    for router in ROUTERS:
        app.include_router(router)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    app.middleware("http")(_security_headers)
    if service is not None:
        app.middleware("http")(service.telemetry.middleware)
        app.add_middleware(BodyLimit, max_bytes=service.settings.max_upload_bytes)
    return app


def openapi_json() -> str:
    """The published API description (docs/openapi.json), stable text so a test can compare it."""
    return json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n"
