"""Scoring many stored images with one model: in this process, or on Ray Data (`map_batches` with an
actor pool, each actor loading the model by content hash). Both call the same `score_batch`, so a row's
score is the same either way.

Items are dicts with `key` and `path`; results add `score` (NaN when not scored), `verdict`,
`defect_class` and `error` (an unreadable stored image is ERROR naming the file, never skipped).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cellsight.data.images import ImageReadError, read_image
from cellsight.inference import model_store
from cellsight.inference.cluster import connect, import_ray, shutdown
from cellsight.inference.seam import LocalModel, StationModel
from cellsight.types import Verdict

Row = dict[str, Any]


def score_batch(model: StationModel, items: Sequence[Row]) -> list[Row]:
    """One batch: read each stored image, score the readable ones together."""
    images: list[np.ndarray] = []
    readable: list[int] = []
    out: list[Row] = []
    for i, item in enumerate(items):
        row = {"key": item["key"], "score": math.nan, "verdict": Verdict.ERROR.value, "defect_class": None,
               "error": None}
        try:
            images.append(read_image(item["path"]))
            readable.append(i)
        except (ImageReadError, OSError, ValueError) as exc:
            row["error"] = str(exc)
        out.append(row)
    for i, prediction in zip(readable, model.predict(images), strict=True):
        out[i].update(score=float(prediction.score), verdict=prediction.verdict.value,
                      defect_class=prediction.defect_class, error=prediction.error)
    return out


def score_local(model_path: Path, items: Sequence[Row], batch_size: int = 16,
                progress: Callable[[int], None] | None = None) -> list[Row]:
    model = LocalModel(model_path)
    out: list[Row] = []
    for start in range(0, len(items), batch_size):
        out.extend(score_batch(model, items[start:start + batch_size]))
        if progress is not None:
            progress(len(out))
    return out


class _Scorer:
    """A Ray Data actor: the model fetched once by content hash, then batch after batch."""

    def __init__(self, content_hash: str) -> None:
        path = model_store.fetch(content_hash)
        self.model = LocalModel(path)
        if self.model.model_hash != content_hash:
            raise ValueError(f"{path}: holds {self.model.model_hash[:12]}, not {content_hash[:12]}")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        items = [{"key": k, "path": p} for k, p in zip(batch["key"], batch["path"], strict=True)]
        rows = score_batch(self.model, items)
        return {name: [row[name] for row in rows] for name in ("key", "score", "verdict", "defect_class", "error")}


def score_on_ray(model_path: Path, items: Sequence[Row], workers: int = 2, batch_size: int = 16,
                 address: str | None = None, cpus_per_worker: float = 1.0) -> list[Row]:
    """`items` scored by `workers` actors on Ray Data; a local cluster is started (and stopped) when no
    address is given. Rows come back in the order of `items`."""
    model = LocalModel(model_path)  # verify the file here first: a bad model is this caller's error
    started = connect(address)
    try:
        ray = import_ray()
        model_store.publish(model_path, model.model_hash)
        dataset = ray.data.from_items([{"key": str(i["key"]), "path": str(i["path"])} for i in items])
        scored = dataset.map_batches(
            _Scorer, fn_constructor_kwargs={"content_hash": model.model_hash}, batch_size=batch_size,
            batch_format="numpy", concurrency=workers, num_cpus=cpus_per_worker,
        )
        by_key = {row["key"]: dict(row) for row in scored.iter_rows()}
    finally:
        if started:
            shutdown()
    out = []
    for item in items:
        row = by_key[str(item["key"])]
        row["key"] = item["key"]
        row["score"] = float(row["score"])
        out.append(row)
    return out
