"""`cellsight rescore`: stored images of past runs through a candidate model, with an HTML report of
agreement and flips per station. Register in cli/main.py with `app.command()(rescore)`."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from cellsight.cli.errors import user_errors
from cellsight.cli.progress import console
from cellsight.errors import ConfigError


@user_errors
def rescore(
    model: Annotated[Path, typer.Option(help="The candidate model file.")],
    db: Annotated[str, typer.Option("--db", help="Traceability database URL (sqlite:///... or postgresql://...).")],
    out: Annotated[Path, typer.Option(help="HTML report to write.")],
    run: Annotated[int | None, typer.Option(help="Only this run's inspections.")] = None,
    since: Annotated[str | None, typer.Option(help="Only inspections at or after this ISO time.")] = None,
    station: Annotated[str | None, typer.Option(help="Only this station's inspections.")] = None,
    ray: Annotated[bool, typer.Option("--ray/--local", help="Score on Ray Data (default) or in this process.")] = True,
    address: Annotated[str | None, typer.Option(help="Ray address; default: RAY_ADDRESS, else local.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Ray Data scoring actors.")] = 2,
) -> None:
    """Re-score stored images with a candidate model: agreement with the recorded verdicts and every flip."""
    from cellsight.storage.store import TraceStore  # the workflow pulls in torch and Ray: only when it runs
    from cellsight.workflows.rescore import rescore as rescore_images
    from cellsight.workflows.rescore import stored_inspections, write_rescore_html

    try:
        moment = None if since is None else datetime.fromisoformat(since)
    except ValueError as exc:
        raise ConfigError(f"--since {since!r}: not an ISO date/time (e.g. 2026-12-01T06:00)") from exc
    with TraceStore.open(db) as store:
        records = stored_inspections(store, run, moment, station)
    result = rescore_images(model, records, ray=ray, workers=workers, address=address)
    write_rescore_html(result, out)
    for s in result.stations:
        share = "n/a" if math.isnan(s.agreement) else f"{100 * s.agreement:.2f}%"
        console.print(f"{s.station}: {s.images} images, agreement {share} on {s.compared}, {len(s.flips)} flips")
    console.print(f"{result.images} images in {result.seconds:.1f} s ({result.images_per_second:.1f}/s, "
                  f"{result.backend}); report: {out}")
