"""One entry point from whatever the user typed after --data to a Dataset."""

from __future__ import annotations

from pathlib import Path

from cellsight.data.dataset import Dataset
from cellsight.data.elpv import NAME as ELPV_NAME
from cellsight.data.elpv import load_elpv
from cellsight.data.errors import DatasetError
from cellsight.data.manifest import load_manifest
from cellsight.data.mvtec import is_mvtec_layout, load_mvtec

ACCEPTED = (
    f"'{ELPV_NAME}' (the ELPV solar-cell data set), a CSV manifest (*.csv with columns path,label), "
    "or a folder in MVTec AD layout (train/good/, test/<class>/)"
)


def load_dataset(source: str | Path) -> Dataset:
    """Load `source`: the name "elpv", a .csv manifest, or an MVTec-layout folder.

    The bare string "elpv" always means the built-in data set; a local folder of that name is
    reached as "./elpv". A Path object is always treated as a path.
    """
    if isinstance(source, str) and source.strip().lower() == ELPV_NAME:
        return load_elpv()
    path = Path(source)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return load_manifest(path)
        raise DatasetError(
            f"{path}: cannot load a data set from a {path.suffix or 'suffix-less'} file; accepted: {ACCEPTED}"
        )
    if path.is_dir():
        if is_mvtec_layout(path):
            return load_mvtec(path)
        raise DatasetError(
            f"{path}: folder is not in MVTec AD layout (no train/good/ or test/); accepted: {ACCEPTED}. "
            "To inspect a plain folder of images use `cellsight predict`."
        )
    raise DatasetError(f"{source}: no such file or folder; accepted: {ACCEPTED}")
