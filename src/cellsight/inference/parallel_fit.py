"""PatchCore's per-batch fitting stage (backbone features, each image's own coreset) on Ray workers.

A pool of actors each builds the backbone once from the settings (offline weights, the same bytes on
every worker) and takes batches in turn; the results come back in batch order, so the global coreset
that follows sees exactly the pool the local fit builds: the same memory bank, bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cellsight.detectors.patchcore import FitMap, PatchCore, PatchCoreSettings
from cellsight.inference.cluster import connect, import_ray


class _Fitter:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.detector = PatchCore(PatchCoreSettings.model_validate(settings))

    def keep(self, batch: list[np.ndarray]) -> np.ndarray:
        return self.detector.keep_patches(batch)


def ray_fit_map(address: str | None = None, workers: int = 2, cpus_per_worker: float = 1.0) -> FitMap:
    """A `PatchCore.fit_map` that spreads batches over `workers` Ray actors (cluster joined or started now)."""
    connect(address)
    ray = import_ray()
    from ray.util import ActorPool

    def fit_map(settings: PatchCoreSettings, batches: list[list[np.ndarray]]) -> list[np.ndarray]:
        actor = ray.remote(num_cpus=cpus_per_worker)(_Fitter)
        config = settings.model_dump(mode="json")
        actors = [actor.remote(config) for _ in range(max(1, min(workers, len(batches))))]
        try:
            pool = ActorPool(actors)
            return list(pool.map(lambda a, batch: a.keep.remote(batch), batches))
        finally:
            for handle in actors:
                ray.kill(handle)

    return fit_map
