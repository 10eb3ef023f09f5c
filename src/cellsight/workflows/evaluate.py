"""Evaluate a saved model on a labelled split: every metric, as `EvaluationReport`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cellsight.data.dataset import Dataset
from cellsight.data.images import read_image, to_gray
from cellsight.errors import DataError
from cellsight.metrics.report import EvaluationReport, build_report
from cellsight.modelfile import LoadedModel
from cellsight.workflows.inspect import inspect_paths


def evaluate(
    model: LoadedModel,
    dataset: Dataset,
    split: str = "test",
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> EvaluationReport:
    test = dataset.select(split=split)
    if len(test) == 0:
        raise DataError(f"data set {dataset.name!r} has no images in its {split!r} split")
    detector = model.detector
    assert detector.calibration is not None
    with_masks = test.has_masks
    started = time.perf_counter()
    inspections = list(
        inspect_paths(detector, test.paths, batch_size=batch_size, keep_raw_maps=with_masks, progress=progress)
    )
    elapsed = time.perf_counter() - started
    masks = [_read_mask(item.mask_path) for item in test] if with_masks else None
    description = {
        "detector": detector.name,
        "model_version": model.version,
        "content_hash": model.content_hash,
        "config": model.metadata.get("config", {}),
        "training": model.metadata.get("training", {}),
    }
    return build_report(
        model=description,
        dataset=f"{dataset.name} ({split})",
        labels=test.labels,
        defect_classes=[item.defect_class for item in test],
        predictions=[inspection.prediction for inspection in inspections],
        calibration=detector.calibration,
        masks=masks,
        maps=[inspection.raw_map for inspection in inspections] if with_masks else None,
        load_image=lambda i: read_image(test.items[i].path),
        names=[item.path.name for item in test],
        fit_seconds=model.metadata.get("training", {}).get("fit_seconds"),
        images_per_second=len(test) / elapsed if elapsed > 0 else None,
    )


def _read_mask(path: Path | None) -> np.ndarray | None:
    """A defect mask as booleans; None (no mask) means an all-good image."""
    return None if path is None else to_gray(read_image(path)) > 0
