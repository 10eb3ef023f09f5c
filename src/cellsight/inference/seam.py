"""One station model behind a backend: `predict(images) -> predictions`, wherever it runs.

`StationModel` is what a station inspector calls instead of a detector. `LocalBackend` runs the detector
in this process; `cellsight.inference.ray_serve.RayBackend` runs it in Ray Serve replicas. A backend is
chosen once per line (`inference:` in the line YAML) by `cellsight.inference.backends.open_backend`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cellsight.detectors.base import AnyDetector
from cellsight.errors import ModelFileError
from cellsight.modelfile import load_model
from cellsight.types import Prediction


class InferenceSettings(BaseModel):
    """How stations run their models: the line YAML's `inference:` block.

    e.g. `inference: {backend: ray, address: auto, replicas: 2, max_batch_size: 16, batch_wait_ms: 5}`.
    `max_batch_size` also bounds the pipelined line's local batches.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["local", "ray"] = "local"
    address: str | None = None  # Ray: "auto", "ray://host:10001", "local" (start one here); None: env, else local
    replicas: int = Field(1, ge=1)
    max_batch_size: int = Field(16, ge=1, le=1024)
    batch_wait_ms: float = Field(5.0, ge=0, le=10_000)
    replica_cpus: float = Field(1.0, ge=0)
    replica_gpus: float = Field(0.0, ge=0)


class StationModel(Protocol):
    """A station's loaded model on some backend. `predict` keeps the order and length of `images`."""

    model_version: str
    model_hash: str
    detector_name: str
    working_size: int  # the side the model scores at (256 when the detector does not say)

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]: ...

    def close(self) -> None: ...


class InferenceBackend(Protocol):
    name: str

    def load(self, station: str, model_path: Path) -> StationModel: ...

    def close(self) -> None: ...


class LocalModel:
    """The detector in this process. Detectors are not re-entrant: one batch at a time (a lock)."""

    def __init__(self, model_path: Path) -> None:
        loaded = load_model(model_path)
        if loaded.detector.calibration is None:
            raise ModelFileError(model_path, "the model has no calibration, so it cannot decide OK/NG")
        self.detector: AnyDetector = loaded.detector
        self.model_version = loaded.version or model_path.stem
        self.model_hash = loaded.content_hash
        self.detector_name = loaded.detector.name
        self.working_size = working_size(loaded.detector)
        self._lock = threading.Lock()

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        if not images:
            return []
        with self._lock:
            return self.detector.predict(list(images))

    def close(self) -> None:
        return None


class LocalBackend:
    """In-process inference: the default, and what `make demo` runs."""

    name = "local"

    def load(self, station: str, model_path: Path) -> StationModel:
        return LocalModel(model_path)

    def close(self) -> None:
        return None


def working_size(detector: AnyDetector) -> int:
    """The side a detector scores at (images are resized to it); 256 when its settings do not say."""
    return int(getattr(detector.settings, "image_size", 256) or 256)
