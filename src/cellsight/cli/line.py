"""`cellsight line run` and `cellsight line report`: the production line from the terminal."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cellsight.cli.errors import user_errors
from cellsight.cli.progress import console, fail
from cellsight.i18n import Localizer, localizer, terminal_locale

if TYPE_CHECKING:  # the line's modules pull in torch and scikit-learn: imported by the commands that run
    from cellsight.line.config import LineConfig
    from cellsight.line.runtime import LineProgress, LineRuntime, LineSummary

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
    lang: Annotated[
        str | None, typer.Option(help="Language of the output: en, zh_CN, de (default: from LANG).")
    ] = None,
) -> None:
    """Move cells through the stations at the takt; every verdict is committed before it is shown."""
    from cellsight.line.runtime import LineRuntime
    from cellsight.storage.store import TraceStore

    loc = localizer(terminal_locale(lang))
    line_config, sha = _load(config, db)
    stop_requested: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop_requested.append(signum)  # finish the cell in hand, then stop cleanly

    previous = signal.signal(signal.SIGTERM, request_stop), signal.signal(signal.SIGINT, request_stop)
    try:
        with TraceStore.open(line_config.database) as store:
            runtime = LineRuntime(line_config, sha, store)
            try:
                summary = _run_with_progress(runtime, cells, new_run, lambda: bool(stop_requested), loc)
            finally:
                runtime.close()
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    _print_summary(line_config, summary, loc)


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
    lang: Annotated[
        str | None, typer.Option(help="Language of the truth and cost figures: en, zh_CN, de (default: from LANG).")
    ] = None,
) -> None:
    """First-pass yield per station, rolled throughput yield, defect Pareto, p-chart, cell genealogy."""
    from cellsight.line.quality import genealogy, line_quality
    from cellsight.line.quality_report import (
        print_genealogy,
        print_quality,
        write_quality_html,
        write_quality_json,
    )
    from cellsight.line.truth_report import print_truth_costs, run_truth_costs, truth_costs_html
    from cellsight.storage.store import TraceStore

    line_config, _ = _load(config, db)
    with TraceStore.open(line_config.database) as store:
        run = store.run(run_id) if run_id is not None else store.latest_run(line_config.line)
        if run is None:
            raise fail(f"{line_config.database}: no run of line {line_config.line!r} recorded yet")
        quality = line_quality(store.inspections(run.id), store.cells(run.id), run.stations, subgroup_size=subgroup)
        cell_genealogy = genealogy(cell, store.inspections(cell_id=cell), store.cells(cell_id=cell)) if cell else None
        truth = run_truth_costs(store, line_config, run.id)
    loc = localizer(terminal_locale(lang))
    console.print(loc.gettext("line {line}, run {run} ({status}), started {started}").format(
        line=line_config.line, run=run.id, status=run.status, started=loc.datetime(run.started_at)))
    print_quality(quality, console, loc=loc)
    print_truth_costs(truth, console, loc)
    if cell_genealogy is not None:
        print_genealogy(cell_genealogy, console, loc)
    if html is not None:
        write_quality_html(quality, html, genealogy=cell_genealogy, title=f"{line_config.line}: run {run.id}",
                           extra_html=truth_costs_html(truth, loc), loc=loc)
        console.print(loc.gettext("HTML report: {path}").format(path=html))
    if json_out is not None:
        write_quality_json(quality, json_out, genealogy=cell_genealogy, extra={"truth": truth.to_json_dict()})
        console.print(loc.gettext("JSON figures: {path}").format(path=json_out))


def _load(path: Path, db: str | None) -> tuple[LineConfig, str]:
    from cellsight.line.config import LineConfigError, load_line_config

    try:
        line_config, sha = load_line_config(path)
    except LineConfigError as exc:
        raise fail(str(exc)) from exc
    if db is not None:
        line_config = line_config.model_copy(update={"database": db})
    return line_config, sha


def _run_with_progress(
    runtime: LineRuntime, cells: int | None, new_run: bool, should_stop: Callable[[], bool], loc: Localizer
) -> LineSummary:
    from cellsight.storage.records import Disposition

    _ = loc.gettext
    total = cells or runtime.config.cells
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[live]}"), console=console,
    ) as bar:
        task = bar.add_task(_("line {line}").format(line=runtime.config.line), total=total, live="")
        live = _("yield {fraction}  NG {ng}  review {review}")

        def on_cell(progress: LineProgress) -> None:
            d = progress.dispositions
            bar.update(task, advance=1, live=live.format(
                fraction=loc.percent(progress.yield_fraction), ng=d[Disposition.NG], review=d[Disposition.REVIEW]))

        return runtime.run(cells, new_run=new_run, on_cell=on_cell, should_stop=should_stop)


def _print_summary(config: LineConfig, summary: LineSummary, loc: Localizer) -> None:
    from cellsight.storage.records import Disposition

    _ = loc.gettext
    p = summary.progress
    table = Table(title=_("line {line}: run {run}").format(line=config.line, run=summary.run_id))
    for column in (_("cells"), "OK", "NG", _("review"), _("yield"), _("cells/min"), _("late for takt")):
        table.add_column(column, justify="right")
    table.add_row(
        loc.number(p.cells), loc.number(p.dispositions[Disposition.OK]), loc.number(p.dispositions[Disposition.NG]),
        loc.number(p.dispositions[Disposition.REVIEW]), loc.percent(p.yield_fraction),
        loc.number(summary.cells_per_minute), loc.number(p.late_cells),
    )
    console.print(table)
    if summary.resumed_from:
        console.print(_("resumed run {run} at cell {cell}").format(run=summary.run_id, cell=summary.resumed_from))
    if summary.stopped_early:
        console.print(_("stopped: {why}").format(why=summary.stopped_early))
    times = summary.times.as_dict()
    spent = sum(times.values()) or 1.0
    stages = ", ".join(f"{k.removesuffix('_ms')} {loc.number(v / 1000, 1)} s ({loc.percent(v / spent, 0)})"
                       for k, v in times.items())
    console.print(_("time per stage: {stages}").format(stages=stages))
