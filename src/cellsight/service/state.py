"""Everything one running service holds, built once per app start (one `service` run in the store)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cellsight.inference.backends import open_backend
from cellsight.line.config import LineConfig, check_output_dir
from cellsight.line.models import ModelRegistry
from cellsight.line.recorder import LineRecorder
from cellsight.service.settings import Settings
from cellsight.service.telemetry import Telemetry
from cellsight.storage.service_store import ServiceStore
from cellsight.storage.store import TraceStore

log = logging.getLogger("cellsight.service")


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
    ready: threading.Event = field(default_factory=threading.Event)
    """Set once every station's model is loaded and warmed up; /healthz answers 503 before."""

    @classmethod
    def start(cls, config: LineConfig, config_sha256: str, settings: Settings | None = None,
              run_id: int | None = None) -> Service:
        """A new service run, or (`run_id`) one more worker process on a run another process started
        (`cellsight serve --workers N`: sequence numbers come from the database, so they share it)."""
        check_output_dir(config)  # an NG image with nowhere to go would be a 500 and an unrecorded verdict
        trace = TraceStore.open(config.database)
        try:
            store = ServiceStore(trace)
            # loads, verifies and warms up every station's model, on the line's inference backend
            registry = ModelRegistry(config, store, open_backend(config.inference, config.line))
            if run_id is None:
                interrupted = trace.interrupt_running(config.line)
                if interrupted:
                    log.warning("runs %s of line %s never finished (killed?): marked interrupted", interrupted,
                                config.line)
                run_id = trace.start_run(config.line, config_sha256, config.station_names)
        except BaseException:
            trace.close()
            raise
        service = cls(config, config_sha256, settings or Settings(), trace, store, registry,
                      LineRecorder(config, store, registry, run_id), run_id)
        service.ready.set()
        return service

    def stop(self) -> None:
        self.trace.set_run_status(self.run_id, "stopped")
        self.trace.close()
        self.registry.backend.close()

    @property
    def output_dir(self) -> Path:
        return self.config.output_dir
