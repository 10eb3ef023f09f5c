"""The models each station runs: the live one, an optional shadow, and their history in the store.

A station's models are swapped under its lock, so an inspection in flight always finishes with the model
it started with. A new model goes live only after it loads (which checks its content hash); files are
copied to output_dir/models/<station>/<version>-<hash12>.safetensors and never deleted, so a rollback
always finds its file. The store's history wins over the line configuration after the first start: the
configured model is the first live entry, and what admins deployed since stays deployed across restarts.
"""

from __future__ import annotations

import copy
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from cellsight.inference.seam import InferenceBackend, LocalBackend
from cellsight.line.config import LineConfig, StationConfig
from cellsight.line.station import StationInspector
from cellsight.modelfile import load_model
from cellsight.storage.service_store import Deployment, ServiceStore


@dataclass
class StationSlot:
    """One station's models. `lock` serialises inference: detectors are not re-entrant."""

    config: StationConfig
    index: int
    live: StationInspector
    shadow: StationInspector | None
    lock: threading.Lock

    def inspector(self, read_code: bool) -> StationInspector:
        """The live inspector, or a view of it that skips the code reading when the client sent the cell ID."""
        if read_code or not self.live.read_code:
            return self.live
        view = copy.copy(self.live)
        view.read_code = False
        return view


class ModelRegistry:
    """All stations' models, loaded at start from the store's deployment history (or the configuration)."""

    def __init__(self, config: LineConfig, store: ServiceStore, backend: InferenceBackend | None = None) -> None:
        self.store = store
        self.backend = backend or LocalBackend()
        self.models_dir = config.output_dir / "models"
        self._admin = threading.Lock()  # one deploy / rollback / shadow change at a time
        self.slots: dict[str, StationSlot] = {}
        for index, station in enumerate(config.stations):
            current = store.current(station.name, "live")
            if current is None:
                live = self._inspector(station, station.model)
                current = store.add_deployment(station.name, "live", live.model_version, live.model_hash,
                                               str(station.model), "line configuration")
            else:
                live = self._inspector(station, Path(current.path))
            shadow_row = store.current(station.name, "shadow")
            shadow = None if shadow_row is None else self._inspector(station, Path(shadow_row.path), read_code=False)
            self.slots[station.name] = StationSlot(station, index, live, shadow, threading.Lock())

    def slot(self, station: str) -> StationSlot:
        """KeyError naming the known stations when `station` is not one of them."""
        try:
            return self.slots[station]
        except KeyError:
            raise KeyError(f"unknown station {station!r}; stations: {', '.join(self.slots)}") from None

    def deploy(self, station: str, source: Path, by: str, shadow: bool = False) -> Deployment:
        """Verify `source`, keep a copy in the models folder, record it and swap it in (live or shadow)."""
        slot = self.slot(station)
        with self._admin:
            stored = self._keep(station, source)
            inspector = self._inspector(slot.config, stored, read_code=False if shadow else None)
            kind = "shadow" if shadow else "live"
            deployment = self.store.add_deployment(station, kind, inspector.model_version, inspector.model_hash,
                                                   str(stored), by)
            with slot.lock:
                if shadow:
                    slot.shadow = inspector
                else:
                    slot.live = inspector
            return deployment

    def rollback(self, station: str) -> Deployment:
        """Put the model live before the current one back; LookupError when there is none."""
        slot = self.slot(station)
        with self._admin:
            history = [d for d in self.store.deployments(station) if d.kind == "live" and d.ended_at is None]
            if len(history) < 2:
                raise LookupError(f"station {station}: no earlier model to roll back to")
            inspector = self._inspector(slot.config, Path(history[-2].path))  # load first: a missing file stops here
            previous = self.store.rollback(station)
            with slot.lock:
                slot.live = inspector
            return previous

    def clear_shadow(self, station: str) -> bool:
        slot = self.slot(station)
        with self._admin:
            cleared = self.store.clear_shadow(station)
            with slot.lock:
                slot.shadow = None
            return cleared

    def _keep(self, station: str, source: Path) -> Path:
        loaded = load_model(source)  # ModelFileError for anything unreadable or altered
        version = re.sub(r"[^A-Za-z0-9_.-]", "_", loaded.version or source.stem)[:80]
        folder = self.models_dir / station
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{version}-{loaded.content_hash[:12]}.safetensors"
        if not target.exists():
            partial = folder / f".{uuid.uuid4().hex}.partial"
            shutil.copyfile(source, partial)
            partial.replace(target)
        return target

    def _inspector(self, station: StationConfig, path: Path, read_code: bool | None = None) -> StationInspector:
        return StationInspector(station.name, path, station.threshold,
                                station.read_code if read_code is None else read_code, self.backend)
