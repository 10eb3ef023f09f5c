"""Everything one running service holds, built once per app start (one `service` run in the store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from cellsight.inference.backends import open_backend
from cellsight.line.config import LineConfig
from cellsight.line.models import ModelRegistry
from cellsight.line.recorder import LineRecorder
from cellsight.service.telemetry import Telemetry
from cellsight.storage.service_store import ServiceStore
from cellsight.storage.store import TraceStore


@dataclass(frozen=True)
class Settings:
    """Service knobs that are not part of the line configuration."""

    max_upload_bytes: int = 32 * 1024 * 1024
    pchart_subgroup: int = 20  # cells per p-chart point on the dashboard
    refresh_seconds: float = 5.0  # dashboard polling interval
    secure_cookie: bool = False  # set behind HTTPS so the login cookie never travels in clear text


@dataclass
class Service:
    config: LineConfig
    config_sha256: str
    settings: Settings
    trace: TraceStore
    store: ServiceStore
    registry: ModelRegistry
    recorder: LineRecorder
    run_id: int
    telemetry: Telemetry = field(default_factory=Telemetry)

    @classmethod
    def start(cls, config: LineConfig, config_sha256: str, settings: Settings | None = None,
              run_id: int | None = None) -> Service:
        """A new service run, or (`run_id`) one more worker process on a run another process started."""
        trace = TraceStore.open(config.database)
        store = ServiceStore(trace)
        registry = ModelRegistry(config, store, open_backend(config.inference, config.line))
        if run_id is None:
            run_id = trace.start_run(config.line, config_sha256, config.station_names)
        return cls(config, config_sha256, settings or Settings(), trace, store, registry,
                   LineRecorder(config, store, registry, run_id), run_id)

    def stop(self) -> None:
        self.trace.set_run_status(self.run_id, "stopped")
        self.trace.close()
        self.registry.backend.close()

    @property
    def output_dir(self) -> Path:
        return self.config.output_dir


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service
