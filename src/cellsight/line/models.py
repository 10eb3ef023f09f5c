"""The models each station runs: the live one, an optional shadow, and their history in the store.

A station's models are swapped under its lock, so an inspection in flight always finishes with the model
it started with. A new model goes live only after it loads (which checks its content hash); files are
copied to output_dir/models/<station>/<version>-<hash12>.safetensors and never deleted, so a rollback
always finds its file. The store's history wins over the line configuration after the first start (what
admins deployed stays deployed across restarts) until `model:` is edited: a configured model whose hash
differs from the last one configured goes live at the next start, with a warning.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from cellsight.errors import ModelFileError
from cellsight.i18n import N_
from cellsight.inference.seam import InferenceBackend, LocalBackend
from cellsight.line.config import LineConfig, StationConfig
from cellsight.line.station import StationInspector
from cellsight.modelfile import LoadedModel, load_model
from cellsight.storage.service_store import Deployment, ServiceStore

log = logging.getLogger("cellsight.line")
CONFIGURED = N_("line configuration")
"""`created_by` of deployments that come from the line file's `model:` (the first, and each edit)."""


@dataclass
class StationSlot:
    """One station's models. `lock` serialises inference: detectors are not re-entrant."""

    config: StationConfig
    index: int
    live: StationInspector
    shadow: StationInspector | None
    lock: threading.Lock


class ModelRegistry:
    """All stations' models, loaded at start from the store's deployment history (or the configuration).

    Every model that goes live is first copied into the model store (`output_dir/models/<station>/`,
    named by version and content hash) and its deployment row points at that copy, so history never
    depends on a file someone may overwrite; a stored copy whose hash no longer matches is refused.
    """

    def __init__(self, config: LineConfig, store: ServiceStore, backend: InferenceBackend | None = None) -> None:
        self.store = store
        self.backend = backend or LocalBackend()
        self.models_dir = config.output_dir / "models"
        self._admin = threading.Lock()  # one deploy / rollback / shadow change at a time
        self.slots: dict[str, StationSlot] = {}
        for index, station in enumerate(config.stations):
            live = self._start_live(station)
            shadow_row = store.current(station.name, "shadow")
            shadow = None if shadow_row is None else self._verified(station, shadow_row, read_code=False)
            self.slots[station.name] = StationSlot(station, index, live, shadow, threading.Lock())

    def _start_live(self, station: StationConfig) -> StationInspector:
        """The configured model on a first start, or when `model:` was edited since; else the live one."""
        configured = load_model(station.model)  # ModelFileError naming the file
        self._check_station(station.name, configured, station.model, force=False)
        current = self.store.current(station.name, "live")
        from_config = [d for d in self.store.deployments(station.name) if d.created_by.startswith(CONFIGURED)]
        if current is None or not from_config or from_config[-1].model_sha256 != configured.content_hash:
            stored = self._keep(station.name, station.model)
            live = self._inspector(station, stored)
            by = CONFIGURED if current is None else f"{CONFIGURED} (model: edited)"
            if current is not None:
                log.warning("%s: the configured model changed (%s): it goes live, replacing %s", station.name,
                            configured.content_hash[:12], current.version)
            self.store.add_deployment(station.name, "live", live.model_version, live.model_hash, str(stored), by)
            return live
        return self._verified(station, current)

    def _verified(self, station: StationConfig, deployment: Deployment,
                  read_code: bool | None = None) -> StationInspector:
        inspector = self._inspector(station, Path(deployment.path), read_code)
        if inspector.model_hash != deployment.model_sha256:
            raise ModelFileError(Path(deployment.path), f"content hash {inspector.model_hash[:12]} is not the "
                                 f"{deployment.model_sha256[:12]} recorded when it was deployed to {station.name}")
        return inspector

    def slot(self, station: str) -> StationSlot:
        """KeyError naming the known stations when `station` is not one of them."""
        try:
            return self.slots[station]
        except KeyError:
            raise KeyError(f"unknown station {station!r}; stations: {', '.join(self.slots)}") from None

    def deploy(self, station: str, source: Path, by: str, shadow: bool = False, force: bool = False) -> Deployment:
        """Verify `source`, copy it into the model store, record the copy and swap it in (live or shadow).

        A model trained for another station is refused unless `force` (then the deployment says so)."""
        slot = self.slot(station)
        with self._admin:
            trained_for = self._check_station(station, load_model(source), source, force)
            stored = self._keep(station, source)
            inspector = self._inspector(slot.config, stored, read_code=False if shadow else None)
            kind = "shadow" if shadow else "live"
            if trained_for is not None and trained_for != station:
                by = f"{by} (forced: trained for {trained_for})"
            deployment = self.store.add_deployment(station, kind, inspector.model_version, inspector.model_hash,
                                                   str(stored), by)
            with slot.lock:
                if shadow:
                    slot.shadow = inspector
                else:
                    slot.live = inspector
            return deployment

    def rollback(self, station: str, sha256: str | None = None, by: str = "rollback") -> Deployment:
        """Put the model live before the current one back, or the stored model with this content hash.

        LookupError when there is none; ModelFileError when its stored copy no longer has its hash."""
        slot = self.slot(station)
        with self._admin:
            if sha256 is not None:
                found = [d for d in self.store.deployments(station) if d.model_sha256 == sha256]
                if not found:
                    raise LookupError(f"station {station}: no model with SHA-256 {sha256[:12]}... was ever deployed")
                inspector = self._verified(slot.config, found[-1])
                deployment = self.store.add_deployment(station, "live", inspector.model_version, sha256,
                                                       found[-1].path, f"{by} (to {sha256[:12]})")
            else:
                history = [d for d in self.store.deployments(station) if d.kind == "live" and d.ended_at is None]
                if len(history) < 2:
                    raise LookupError(f"station {station}: no earlier model to roll back to")
                inspector = self._verified(slot.config, history[-2])  # check first: a changed file stops here
                deployment = self.store.rollback(station)
            with slot.lock:
                slot.live = inspector
            return deployment

    def clear_shadow(self, station: str) -> bool:
        slot = self.slot(station)
        with self._admin:
            cleared = self.store.clear_shadow(station)
            with slot.lock:
                slot.shadow = None
            return cleared

    @staticmethod
    def _check_station(station: str, loaded: LoadedModel, path: Path, force: bool) -> str | None:
        """The station the model was trained for (None when the file does not say); refused at another one."""
        training = loaded.metadata.get("training")
        trained_for = training.get("station") if isinstance(training, dict) else None
        if trained_for is not None and trained_for != station and not force:
            raise ModelFileError(path, f"the model was trained for station {trained_for}, not {station} "
                                       "(deploy with force to override)")
        return None if trained_for is None else str(trained_for)

    def _keep(self, station: str, source: Path) -> Path:
        loaded = load_model(source)  # ModelFileError for anything unreadable or altered
        version = re.sub(r"[^A-Za-z0-9_.-]", "_", loaded.version or source.stem)[:80]
        folder = self.models_dir / station
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{version}-{loaded.content_hash[:12]}.safetensors"
        if not target.exists() or load_model(target).content_hash != loaded.content_hash:
            partial = folder / f".{uuid.uuid4().hex}.partial"
            shutil.copyfile(source, partial)
            partial.replace(target)
        return target

    def _inspector(self, station: StationConfig, path: Path, read_code: bool | None = None) -> StationInspector:
        """A loaded and warmed-up inspector (on the registry's backend): it goes live only once its first
        inspection is already cheap."""
        inspector = StationInspector(station.name, path, station.threshold,
                                     station.read_code if read_code is None else read_code, station.images,
                                     self.backend)
        inspector.warm_up()
        return inspector
