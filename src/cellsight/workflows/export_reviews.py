"""Reviewed inspections as the next training set: what people decided, in the MVTec layout plus a manifest.

False calls are good images the model got wrong: the most useful goods there are, so they go to
train/good/. Confirmed defects go to test/<defect class>/ (a defect-free detector must not fit on them; a
supervised one can be pointed at the manifest). Only an inspection's newest review counts. Images not
stored by the service (save_images policy) or since deleted are skipped and counted, never guessed.
"""

from __future__ import annotations

import csv
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from cellsight.errors import ConfigError, DataError
from cellsight.storage.service_store import ServiceStore

_COLUMNS = ("path", "label", "split", "defect_class", "inspection_id", "cell_id", "station", "decision", "reviewer",
            "reviewed_at", "model_version", "score", "note")


@dataclass(frozen=True)
class ExportSummary:
    good: int
    defective: int
    skipped: int  # reviewed, but the image was not stored or is gone
    manifest: Path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "defect"


def export_reviewed(store: ServiceStore, out: Path, station: str | None = None) -> ExportSummary:
    """Copy every reviewed image into `out` (MVTec layout) and write out/manifest.csv.

    `out` must be new or empty: files left from an earlier export could contradict a changed review.
    """
    try:
        return _export(store, out, station)
    except OSError as exc:  # the output folder (or a stored image) cannot be written or read
        raise DataError(f"{exc.filename or out}: {exc.strerror or exc}") from exc


def _export(store: ServiceStore, out: Path, station: str | None) -> ExportSummary:
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: folder is not empty; export into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    skipped = 0
    for review, inspection_id, record in store.latest_reviews(station):
        if record.image_path is None or not Path(record.image_path).is_file():
            skipped += 1
            continue
        good = review.decision == "false_call"
        defect_class = "good" if good else _safe(review.defect_class or record.defect_class or "defect")
        split = "train" if good else "test"
        target = out / split / defect_class / f"{inspection_id:08d}-{_safe(record.cell_id)}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(record.image_path, target)
        rows.append({
            "path": target.relative_to(out).as_posix(), "label": defect_class, "split": split,
            "defect_class": "" if good else defect_class, "inspection_id": inspection_id,
            "cell_id": _cell_text(record.cell_id),
            "station": record.station, "decision": review.decision, "reviewer": _cell_text(review.reviewer),
            "reviewed_at": review.reviewed_at.isoformat(), "model_version": _cell_text(record.model_version),
            "score": "" if record.score != record.score else f"{record.score:.6f}",
            "note": _cell_text(review.note or ""),
        })
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    good_count = sum(r["split"] == "train" for r in rows)
    return ExportSummary(good_count, len(rows) - good_count, skipped, manifest)


def _cell_text(value: str) -> str:
    """Free text for a CSV cell that a spreadsheet will not run: a leading = + - @ (or tab, CR) is quoted
    with an apostrophe, the usual guard against formula injection."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
