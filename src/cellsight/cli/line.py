"""`cellsight line run` and `cellsight line report`: the production line from the terminal."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cellsight.cli.errors import user_errors
from cellsight.cli.progress import console, fail
from cellsight.line.config import LineConfig, LineConfigError, load_line_config
from cellsight.line.quality import genealogy, line_quality
from cellsight.line.quality_report import print_genealogy, print_quality, write_quality_html, write_quality_json
from cellsight.line.runtime import LineProgress, LineRuntime, LineSummary
from cellsight.storage.records import Disposition
from cellsight.storage.store import TraceStore

line_app = typer.Typer(help="Run a production line's stations and report its quality figures.", no_args_is_help=True)

ConfigOption = Annotated[Path, typer.Option("--config", help="Line configuration (YAML).")]
DatabaseOption = Annotated[
    str | None, typer.Option("--db", help="Database URL, instead of the configuration's (sqlite:///... or postgresql://...).")
]


@line_app.command("run")
@user_errors
def run(
    config: ConfigOption,
    cells: Annotated[int | None, typer.Option(help="Stop once the run holds this many cells.")] = None,
    new_run: Annotated[bool, typer.Option(help="Start a new run even if the last one did not finish.")] = False,
    db: DatabaseOption = None,
) -> None:
    """Move cells through the stations at the takt; every verdict is committed before it is shown."""
    line_config, sha = _load(config, db)
    stop_requested: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop_requested.append(signum)  # finish the cell in hand, then stop cleanly

    previous = signal.signal(signal.SIGTERM, request_stop), signal.signal(signal.SIGINT, request_stop)
    try:
        with TraceStore.open(line_config.database) as store:
            runtime = LineRuntime(line_config, sha, store)
            try:
                summary = _run_with_progress(runtime, cells, new_run, lambda: bool(stop_requested))
            finally:
                runtime.close()
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    _print_summary(line_config, summary)


@line_app.command("report")
@user_errors
def report(
    config: ConfigOption,
    run_id: Annotated[int | None, typer.Option("--run", help="Run to report (default: the latest).")] = None,
    html: Annotated[Path | None, typer.Option(help="Write the HTML report with charts here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures as JSON here.")] = None,
    cell: Annotated[str | None, typer.Option(help="Show this cell's genealogy.")] = None,
    subgroup: Annotated[int, typer.Option(help="Cells per p-chart subgroup.")] = 50,
    db: DatabaseOption = None,
) -> None:
    """First-pass yield per station, rolled throughput yield, defect Pareto, p-chart, cell genealogy."""
    line_config, _ = _load(config, db)
    with TraceStore.open(line_config.database) as store:
        run = store.run(run_id) if run_id is not None else store.latest_run(line_config.line)
        if run is None:
            raise fail(f"{line_config.database}: no run of line {line_config.line!r} recorded yet")
        quality = line_quality(store.inspections(run.id), store.cells(run.id), run.stations, subgroup_size=subgroup)
        cell_genealogy = genealogy(cell, store.inspections(cell_id=cell), store.cells(cell_id=cell)) if cell else None
    console.print(f"line {line_config.line}, run {run.id} ({run.status}), started {run.started_at:%Y-%m-%d %H:%M} UTC")
    print_quality(quality, console)
    if cell_genealogy is not None:
        print_genealogy(cell_genealogy, console)
    if html is not None:
        write_quality_html(quality, html, genealogy=cell_genealogy, title=f"{line_config.line}: run {run.id}")
        console.print(f"HTML report: {html}")
    if json_out is not None:
        write_quality_json(quality, json_out, genealogy=cell_genealogy)
        console.print(f"JSON figures: {json_out}")


def _load(path: Path, db: str | None) -> tuple[LineConfig, str]:
    try:
        line_config, sha = load_line_config(path)
    except LineConfigError as exc:
        raise fail(str(exc)) from exc
    if db is not None:
        line_config = line_config.model_copy(update={"database": db})
    return line_config, sha


def _run_with_progress(
    runtime: LineRuntime, cells: int | None, new_run: bool, should_stop: Callable[[], bool]
) -> LineSummary:
    total = cells or runtime.config.cells
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[live]}"), console=console,
    ) as bar:
        task = bar.add_task(f"line {runtime.config.line}", total=total, live="")

        def on_cell(progress: LineProgress) -> None:
            d = progress.dispositions
            bar.update(
                task, advance=1,
                live=f"yield {progress.yield_fraction:.1%}  NG {d[Disposition.NG]}  review {d[Disposition.REVIEW]}",
            )

        return runtime.run(cells, new_run=new_run, on_cell=on_cell, should_stop=should_stop)


def _print_summary(config: LineConfig, summary: LineSummary) -> None:
    p = summary.progress
    table = Table(title=f"line {config.line}: run {summary.run_id}")
    for column in ("cells", "OK", "NG", "review", "yield", "cells/min", "late for takt"):
        table.add_column(column, justify="right")
    table.add_row(
        str(p.cells), str(p.dispositions[Disposition.OK]), str(p.dispositions[Disposition.NG]),
        str(p.dispositions[Disposition.REVIEW]), f"{p.yield_fraction:.1%}", f"{summary.cells_per_minute:.0f}",
        str(p.late_cells),
    )
    console.print(table)
    if summary.resumed_from:
        console.print(f"resumed run {summary.run_id} at cell {summary.resumed_from}")
    if summary.stopped_early:
        console.print(f"stopped: {summary.stopped_early}")
    times = summary.times.as_dict()
    spent = sum(times.values()) or 1.0
    stages = ", ".join(f"{k.removesuffix('_ms')} {v / 1000:.1f} s ({v / spent:.0%})" for k, v in times.items())
    console.print(f"time per stage: {stages}")
