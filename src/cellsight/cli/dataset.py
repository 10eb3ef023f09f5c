"""`cellsight dataset export`: reviewed inspections as a training set for the next model.

Register in cli/main.py with:
    from cellsight.cli.dataset import dataset_app
    app.add_typer(dataset_app, name="dataset")
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cellsight.cli.errors import user_errors
from cellsight.cli.progress import console

dataset_app = typer.Typer(help="Data sets built from the line's records.", no_args_is_help=True)


@dataset_app.command("export")
@user_errors
def export(
    db: Annotated[str, typer.Option(help="Database URL (sqlite:///... or postgresql://...).")],
    out: Annotated[Path, typer.Option(help="New or empty folder to write (MVTec layout + manifest.csv).")],
    station: Annotated[str | None, typer.Option(help="Only this station's inspections.")] = None,
) -> None:
    """False calls become train/good, confirmed defects test/<class>; the newest review of each counts."""
    from cellsight.storage.service_store import ServiceStore
    from cellsight.storage.store import TraceStore
    from cellsight.workflows.export_reviews import export_reviewed

    with TraceStore.open(db, create=False) as store:
        summary = export_reviewed(ServiceStore(store), out, station)
    console.print(
        f"wrote {summary.good} good (false calls) and {summary.defective} defective (confirmed) images to {out}; "
        f"{summary.skipped} reviewed inspections had no stored image; manifest {summary.manifest}", markup=False,
    )
