"""Inspect image files in batches, where one bad file never stops or passes the rest.

An unreadable file becomes an ERROR prediction naming the file and the problem; if a whole batch fails
inside the detector, its images are retried one by one so that only the culprit gets ERROR.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellsight.data.images import ImageReadError, read_image
from cellsight.detectors.base import AnyDetector, MapSize, NotCalibratedError, predict_scored
from cellsight.types import Prediction


@dataclass(frozen=True)
class Inspection:
    path: Path
    prediction: Prediction
    raw_map: np.ndarray | None = None  # the detector's own map, kept only when asked (pixel metrics)


def inspect_paths(
    detector: AnyDetector,
    paths: Sequence[Path],
    batch_size: int = 16,
    keep_raw_maps: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Inspection]:
    """Yield one Inspection per path, in order; maps at each image's size."""
    if detector.calibration is None:
        raise NotCalibratedError(f"{detector.name} model has no calibration: it cannot decide OK/NG")
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        yield from _inspect_chunk(detector, chunk, keep_raw_maps)
        if progress is not None:
            progress(len(chunk))


def _inspect_chunk(detector: AnyDetector, chunk: Sequence[Path], keep_raw_maps: bool) -> list[Inspection]:
    results: dict[int, Inspection] = {}
    images: list[np.ndarray] = []
    positions: list[int] = []
    for position, path in enumerate(chunk):
        start = time.perf_counter()
        try:
            images.append(read_image(path))
            positions.append(position)
        except ImageReadError as exc:
            elapsed = (time.perf_counter() - start) * 1000.0
            results[position] = Inspection(path, Prediction.failed(str(exc), elapsed))
    if images:
        for position, inspection in zip(positions, _score(detector, chunk, positions, images, keep_raw_maps),
                                        strict=True):
            results[position] = inspection
    return [results[i] for i in range(len(chunk))]


def _score(
    detector: AnyDetector,
    chunk: Sequence[Path],
    positions: list[int],
    images: list[np.ndarray],
    keep_raw_maps: bool,
) -> list[Inspection]:
    assert detector.calibration is not None
    try:
        predictions, raw = predict_scored(detector, images, MapSize.INPUT)
    except Exception as exc:  # a detector failure on one image must not take the batch with it
        if len(images) == 1:
            error = f"{chunk[positions[0]]}: inspection failed: {type(exc).__name__}: {exc}"
            return [Inspection(chunk[positions[0]], Prediction.failed(error))]
        return [
            _score(detector, chunk, [p], [image], keep_raw_maps)[0]
            for p, image in zip(positions, images, strict=True)
        ]
    raw_maps = raw.maps if keep_raw_maps and raw.maps is not None else [None] * len(predictions)
    return [
        Inspection(chunk[p], prediction, raw_map)
        for p, prediction, raw_map in zip(positions, predictions, raw_maps, strict=True)
    ]
