"""Re-score stored images of past runs with a candidate model, and show where it would disagree.

The evidence a quality engineer needs before deploying a model: per station, how often the candidate
agrees with the verdicts the line recorded, and every image whose verdict would flip (OK -> NG: new
rejects; NG -> OK: escapes the old model caught). Only inspections with a stored image take part; the
recorded ERROR verdicts (unreadable, uncertain) are counted apart, since there was no model verdict to
agree with. Scoring runs in this process or on Ray Data (`cellsight.inference.batch_scoring`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cellsight.errors import DataError
from cellsight.inference.batch_scoring import score_local, score_on_ray
from cellsight.reporting.page import PAGE_CSS, escape
from cellsight.storage.records import InspectionRecord
from cellsight.storage.store import TraceStore
from cellsight.types import Verdict


@dataclass(frozen=True)
class Flip:
    key: str
    cell_id: str
    image_path: str
    recorded: str
    recorded_score: float | None  # None where no score was made (ERROR)
    new: str
    new_score: float | None
    error: str | None


@dataclass
class StationAgreement:
    station: str
    images: int = 0
    compared: int = 0  # recorded OK or NG, and scored by the candidate
    agree: int = 0
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    flips: list[Flip] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return self.agree / self.compared if self.compared else math.nan


@dataclass(frozen=True)
class RescoreResult:
    model: Path
    stations: list[StationAgreement]
    images: int
    seconds: float
    backend: str

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan


def stored_inspections(store: TraceStore, run_id: int | None = None, since: datetime | None = None,
                       station: str | None = None) -> list[InspectionRecord]:
    """Inspections with a stored image, of one run or since a time (all when neither is given)."""
    records = store.inspections(run_id=run_id, station=station)
    if since is not None:
        records = [r for r in records if _aware(r.inspected_at) >= _aware(since)]
    return [r for r in records if r.image_path]


def rescore(model: Path, records: list[InspectionRecord], ray: bool = False, workers: int = 2,
            address: str | None = None, batch_size: int = 16, cpus_per_worker: float = 1.0) -> RescoreResult:
    """Score every record's stored image with `model` and compare with the recorded verdicts."""
    import time

    if not records:
        raise DataError("no stored images to re-score: the selection holds no inspection with a saved image")
    items = [{"key": f"{r.run_id}:{r.sequence}:{r.station}", "path": r.image_path} for r in records]
    start = time.perf_counter()
    if ray:
        rows = score_on_ray(model, items, workers=workers, batch_size=batch_size, address=address,
                            cpus_per_worker=cpus_per_worker)
    else:
        rows = score_local(model, items, batch_size=batch_size)
    seconds = time.perf_counter() - start
    stations: dict[str, StationAgreement] = {}
    for record, row in zip(records, rows, strict=True):
        agreement = stations.setdefault(record.station, StationAgreement(record.station))
        agreement.images += 1
        recorded, new = record.verdict.value, str(row["verdict"])
        agreement.transitions[(recorded, new)] += 1
        if record.verdict is Verdict.ERROR or new == Verdict.ERROR.value:
            if new == Verdict.ERROR.value and record.verdict is not Verdict.ERROR:
                agreement.flips.append(_flip(record, row))
            continue
        agreement.compared += 1
        if recorded == new:
            agreement.agree += 1
        else:
            agreement.flips.append(_flip(record, row))
    backend = f"Ray Data, {workers} workers" if ray else "local"
    return RescoreResult(model, list(stations.values()), len(records), seconds, backend)


def _flip(record: InspectionRecord, row: dict[str, Any]) -> Flip:
    return Flip(f"{record.run_id}:{record.sequence}:{record.station}", record.cell_id, str(record.image_path),
                record.verdict.value, _score(record.score), str(row["verdict"]), _score(float(row["score"])),
                row.get("error"))


def _score(value: float) -> float | None:
    return None if math.isnan(value) else value


def _shown(value: float | None) -> str:
    return "no score" if value is None else f"{value:.3f}"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.now().astimezone().tzinfo)


def write_rescore_html(result: RescoreResult, path: Path) -> Path:
    """A self-contained page: agreement per station and every flipped image (linked, with both scores)."""
    parts = [f"<h1>Re-scoring with {escape(result.model.name)}</h1>",
             f"<p>{result.images} stored images, {result.seconds:.1f} s ({result.images_per_second:.1f} images/s, "
             f"{escape(result.backend)}).</p>",
             "<table><tr><th>station</th><th>images</th><th>compared (OK/NG)</th><th>agreement</th>"
             "<th>OK&rarr;NG</th><th>NG&rarr;OK</th><th>&rarr;ERROR</th></tr>"]
    for s in result.stations:
        to_error = sum(n for (old, new), n in s.transitions.items() if new == "ERROR" and old != "ERROR")
        parts.append(
            f"<tr><td>{escape(s.station)}</td><td>{s.images}</td><td>{s.compared}</td>"
            f"<td>{'n/a' if math.isnan(s.agreement) else f'{100 * s.agreement:.2f}%'}</td>"
            f"<td>{s.transitions[('OK', 'NG')]}</td><td>{s.transitions[('NG', 'OK')]}</td><td>{to_error}</td></tr>"
        )
    parts.append("</table>")
    for s in result.stations:
        parts.append(f"<h2>{escape(s.station)}: {len(s.flips)} flipped images</h2>")
        if not s.flips:
            parts.append("<p>None: the candidate agrees on every compared image.</p>")
            continue
        parts.append("<table><tr><th>inspection</th><th>cell</th><th>recorded</th><th>candidate</th>"
                     "<th>image</th></tr>")
        for f in s.flips:
            uri = escape(Path(f.image_path).resolve().as_uri())
            parts.append(
                f"<tr><td>{escape(f.key)}</td><td>{escape(f.cell_id)}</td>"
                f"<td>{escape(f.recorded)} ({_shown(f.recorded_score)})</td>"
                f"<td>{escape(f.new)} ({_shown(f.new_score)}){' ' + escape(f.error) if f.error else ''}</td>"
                f"<td><a href='{uri}'><img src='{uri}' height='96' alt='{escape(f.key)}'></a></td></tr>"
            )
        parts.append("</table>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Re-scoring</title>"
            f"<style>{PAGE_CSS}</style></head><body>{''.join(parts)}</body></html>")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot write the report: {exc.strerror or exc}") from exc
    return path
