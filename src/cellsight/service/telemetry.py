"""Prometheus metrics: requests, latency and verdicts. One registry per app, so tests can build many apps."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("cellsight_http_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("cellsight_http_request_seconds", "HTTP request latency", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.verdicts = Counter("cellsight_inspections", "Inspections committed, by verdict", ["station", "verdict"],
                                registry=self.registry)
        self.inspect_seconds = Histogram("cellsight_inspection_seconds", "Decode + inference time per inspection",
                                         ["station"], buckets=_LATENCY_BUCKETS, registry=self.registry)

    async def middleware(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        # The route's template (/v1/inspections/{inspection_id}), never the raw path: bounded label values.
        name = getattr(route, "path", "unmatched")
        method = request.method if request.method in _METHODS else "OTHER"  # a client may send any token here
        self.requests.labels(method, name, str(response.status_code)).inc()
        self.latency.labels(name).observe(time.perf_counter() - started)
        return response

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
