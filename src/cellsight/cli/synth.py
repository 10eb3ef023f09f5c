"""`cellsight synth`: write synthetic lithium-ion station data sets in the MVTec AD layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cellsight.cli.errors import user_errors
from cellsight.cli.progress import console, progress_bars
from cellsight.data.synth import STATIONS, write_station_dataset
from cellsight.data.synth.common import MAX_SIZE, MIN_SIZE

ALL = "all"


@user_errors
def synth(
    station: Annotated[str, typer.Option(help=f"Station: {', '.join(STATIONS)}, or '{ALL}'.")],
    out: Annotated[Path, typer.Option(help="Root folder; each station goes to <out>/<station>/.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Good training images per station.")] = 200,
    n_test_good: Annotated[int, typer.Option(min=0, help="Good test images per station.")] = 50,
    n_test_per_defect: Annotated[int, typer.Option(min=0, help="Test images per defect class.")] = 20,
    n_train_per_defect: Annotated[
        int, typer.Option(min=0, help="Labelled train defects per class (train/<class>/), to name defects.")
    ] = 0,
    seed: Annotated[int, typer.Option(min=0, help="Seed: the same seed writes the same bytes.")] = 0,
    size: Annotated[int, typer.Option(min=MIN_SIZE, max=MAX_SIZE, help="Image side in pixels.")] = 256,
    overwrite: Annotated[bool, typer.Option(help="Replace existing station folders.")] = False,
) -> None:
    """Write synthetic station images with pixel masks and DataMatrix cell IDs (MVTec AD layout)."""
    name = station.strip().lower()
    if name != ALL and name not in STATIONS:
        raise typer.BadParameter(f"unknown station {station!r}; choose from {', '.join(STATIONS)} or {ALL}",
                                 param_hint="--station")
    stations = list(STATIONS) if name == ALL else [name]
    busy = [out / s for s in stations if (out / s).is_dir() and any((out / s).iterdir())]
    if busy and not overwrite:
        raise typer.BadParameter(f"{busy[0]} exists and is not empty; pass --overwrite to replace it",
                                 param_hint="--out")
    with progress_bars() as bar:
        for current in stations:
            total = n + n_test_good + (n_test_per_defect + n_train_per_defect) * len(STATIONS[current])
            folder = write_station_dataset(current, out, n, n_test_good, n_test_per_defect, seed, size,
                                           overwrite=overwrite, progress=bar(current, total),
                                           n_train_per_defect=n_train_per_defect)
            console.print(f"{current}: {total} images -> {folder}")
