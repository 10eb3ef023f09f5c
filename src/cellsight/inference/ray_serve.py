"""The `ray` backend: one Ray Serve deployment per station model (named by line, station and content
hash), replicas with CPU or GPU resources, and `@serve.batch` dynamic batching.

Requests from the line, the service and the PLC link are single images; Serve groups the ones that
arrive within `batch_wait_ms` (up to `max_batch_size`) into one `detector.predict` call. PatchCore's
scores do not depend on how images are batched, so a verdict is the same as the local backend's.
A request whose replica dies is sent once more (Serve restarts the replica or routes to another); if
that fails too, the image's prediction is a failure (ERROR, recorded), never OK and never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from ray import serve

from cellsight.errors import ModelFileError
from cellsight.features.threads import THREADS_VARIABLE
from cellsight.inference import model_store
from cellsight.inference.cluster import connect, resolve_address, shutdown
from cellsight.inference.seam import InferenceSettings, LocalModel, StationModel, working_size
from cellsight.modelfile import load_model
from cellsight.types import Prediction

log = logging.getLogger("cellsight.inference")
ATTEMPTS = 2
RESULT_TIMEOUT_S = 120.0


@serve.deployment
class StationReplica:
    """One replica of a station model: fetches its file by content hash, verifies it, scores batches."""

    def __init__(self, station: str, content_hash: str, max_batch_size: int, batch_wait_ms: float,
                 threads: int) -> None:
        import torch

        # The replica's CPUs, not the node's: ONNX Runtime and OpenVINO sessions size their pools from it.
        os.environ[THREADS_VARIABLE] = str(max(1, threads))
        torch.set_num_threads(max(1, threads))
        path = model_store.fetch(content_hash)
        model = LocalModel(path)
        if model.model_hash != content_hash:
            raise ModelFileError(path, f"cached copy holds {model.model_hash[:12]}, not {content_hash[:12]}")
        self.station = station
        self.model = model
        batcher: Any = self.predict_batch  # serve.batch's wrapper carries the setters
        batcher.set_max_batch_size(max_batch_size)
        batcher.set_batch_wait_timeout_s(batch_wait_ms / 1000.0)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)  # set per station in __init__
    async def predict_batch(self, images: list[np.ndarray]) -> list[Prediction]:
        return await asyncio.to_thread(self.model.predict, images)

    async def __call__(self, image: np.ndarray) -> Prediction:
        result: Prediction = await self.predict_batch(image)
        return result

    def pid(self) -> int:
        """The replica's process id (the fault tests kill it)."""
        return os.getpid()


class RayModel:
    """A station model served by Ray: same interface as `LocalModel`, images sent one request each."""

    def __init__(self, station: str, app_name: str, handle: Any, model_version: str, model_hash: str,
                 detector_name: str, working_size: int) -> None:
        self.station = station
        self.working_size = working_size
        self.app_name = app_name
        self.handle = handle
        self.model_version = model_version
        self.model_hash = model_hash
        self.detector_name = detector_name

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """All images in flight at once (so Serve can batch them), results in order.

        Failed requests (a replica died, the deadline passed) are sent again together, once; what still
        fails becomes that image's failed prediction, so the caller records ERROR for it.
        """
        results: list[Prediction | None] = [None] * len(images)
        pending = {i: self.handle.remote(image) for i, image in enumerate(images)}
        failed: dict[int, BaseException] = {}
        for attempt in range(ATTEMPTS):
            deadline = time.monotonic() + RESULT_TIMEOUT_S
            failed = {}
            for i, response in pending.items():
                try:
                    results[i] = response.result(timeout_s=max(0.01, deadline - time.monotonic()))
                except Exception as exc:  # replica died, timed out or failed
                    failed[i] = exc
                    response.cancel()
            if not failed:
                break
            log.warning("%s: %d ray requests failed (attempt %d): %s", self.station, len(failed), attempt + 1,
                        next(iter(failed.values())))
            if attempt + 1 < ATTEMPTS:
                pending = {i: self.handle.remote(images[i]) for i in failed}
        for i, error in failed.items():
            results[i] = Prediction.failed(f"{self.station}: ray inference failed: {type(error).__name__}: {error}")
        return [r for r in results if r is not None]

    def close(self) -> None:
        serve.delete(self.app_name, _blocking=True)


class RayBackend:
    """Deploys each station model on the cluster named by the settings (started here for `local`)."""

    name = "ray"

    def __init__(self, settings: InferenceSettings, line: str = "cellsight") -> None:
        self.settings = settings
        self.line = line
        self.address = resolve_address(settings.address)
        self._started_here = connect(self.address)
        serve.start(proxy_location="Disabled")
        self.models: list[RayModel] = []

    def load(self, station: str, model_path: Path) -> StationModel:
        loaded = load_model(model_path)  # verify here first: a bad file is the driver's error, naming it
        if loaded.detector.calibration is None:
            raise ModelFileError(model_path, "the model has no calibration, so it cannot decide OK/NG")
        content_hash = loaded.content_hash
        model_store.publish(model_path, content_hash)
        s = self.settings
        app_name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{self.line}-{station}-{content_hash[:12]}")[:100]
        deployment = cast(Any, StationReplica).options(
            name=f"station-{station}",
            num_replicas=s.replicas,
            max_ongoing_requests=max(2 * s.max_batch_size, 8),
            ray_actor_options={"num_cpus": s.replica_cpus, "num_gpus": s.replica_gpus},
        )
        app = deployment.bind(station, content_hash, s.max_batch_size, s.batch_wait_ms,
                              max(1, round(s.replica_cpus)))
        handle = serve.run(app, name=app_name, route_prefix=None)
        model = RayModel(station, app_name, handle, loaded.version or model_path.stem, content_hash,
                         loaded.detector.name, working_size(loaded.detector))
        self.models.append(model)
        return model

    def close(self) -> None:
        """Remove this backend's deployments; stop the cluster when it was started here."""
        for model in self.models:
            try:
                model.close()
            except Exception as exc:  # closing is best effort: the cluster may already be gone
                log.warning("could not delete %s: %s", model.app_name, exc)
        self.models.clear()
        if self._started_here:
            serve.shutdown()
            shutdown()
