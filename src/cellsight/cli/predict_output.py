"""Batch prediction output: JSON lines (one per image, errors included) and heat-map overlays."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2

from cellsight.data.images import read_image
from cellsight.metrics.overlay import overlay_heatmap
from cellsight.modelfile import LoadedModel
from cellsight.workflows.inspect import Inspection, inspect_paths


def write_predictions(
    model: LoadedModel,
    files: list[Path],
    out: Path,
    heatmaps: Path | None,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Inspect `files`, write one JSON line each (flushed as it goes); returns counts per verdict."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if heatmaps is not None:
        heatmaps.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    with out.open("w", encoding="utf-8") as handle:
        for inspection in inspect_paths(model.detector, files, batch_size=batch_size, progress=progress):
            heatmap_path = _write_heatmap(inspection, heatmaps) if heatmaps is not None else None
            handle.write(json.dumps(_row(inspection, model, heatmap_path), allow_nan=False) + "\n")
            handle.flush()
            counts[inspection.prediction.verdict.value] += 1
    return dict(counts)


def _row(inspection: Inspection, model: LoadedModel, heatmap: Path | None) -> dict[str, object]:
    p = inspection.prediction
    return {
        "path": str(inspection.path),
        "verdict": p.verdict.value,
        "score": None if math.isnan(p.score) else round(p.score, 6),
        "raw_score": None if math.isnan(p.raw_score) else round(p.raw_score, 6),
        "defect_class": p.defect_class,
        "error": p.error,
        "latency_ms": round(p.latency_ms, 3),
        "heatmap": str(heatmap) if heatmap else None,
        "model_version": model.version,
        "model_sha256": model.content_hash,
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


def _write_heatmap(inspection: Inspection, folder: Path) -> Path | None:
    anomaly_map = inspection.prediction.anomaly_map
    if anomaly_map is None:
        return None
    # The path's hash keeps same-named images from different folders apart.
    tag = hashlib.sha1(str(inspection.path.resolve()).encode()).hexdigest()[:8]
    target = folder / f"{inspection.path.stem}-{tag}.png"
    overlay = overlay_heatmap(read_image(inspection.path), anomaly_map)
    cv2.imwrite(str(target), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
    return target
