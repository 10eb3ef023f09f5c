"""The FastAPI app: the /v1 API, the dashboard, health and metrics, behind a body-size limit."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from cellsight import __version__
from cellsight.service.api import router
from cellsight.service.limits import BodyLimit
from cellsight.service.state import Service, get_service
from cellsight.service.truth import router as truth_router
from cellsight.ui.pages import router as ui_router

log = logging.getLogger("cellsight.service")

# Routes anyone may call: health for load balancers, metrics for Prometheus (counts only, no cell data),
# the API description, the login form and the plotly.js file. Tests check every other route needs a token.
PUBLIC_PATHS = frozenset({
    "/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/login", "/logout",
    "/static/plotly.min.js", "/static/dashboard.js", "/favicon.ico",
})


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
    app.include_router(router)
    app.include_router(truth_router)
    app.include_router(ui_router)

    @app.get("/healthz", tags=["ops"])
    def healthz(service: Annotated[Service, Depends(get_service)]) -> dict[str, object]:
        return {"status": "ok", "run_id": service.run_id, "stations": service.config.station_names}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics(service: Annotated[Service, Depends(get_service)]) -> Response:
        return service.telemetry.exposition()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    if service is not None:
        app.middleware("http")(service.telemetry.middleware)
        app.add_middleware(BodyLimit, max_bytes=service.settings.max_upload_bytes)
    return app


def openapi_json() -> str:
    """The published API description (docs/openapi.json), stable text so a test can compare it."""
    return json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n"
