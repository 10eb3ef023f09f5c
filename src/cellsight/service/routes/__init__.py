"""The service's routes, one module per concern; `cellsight.service.app` includes every router in ROUTERS."""

from __future__ import annotations

from fastapi import APIRouter

from cellsight.service.routes import inspection, models, ops, pages, tokens, trace

ROUTERS: tuple[APIRouter, ...] = (
    inspection.router, trace.router, models.router, tokens.router, ops.router, pages.router,
)
