"""The ELPV data set: 2,624 electroluminescence images of solar cells, from the PyPI package
`elpv-dataset` (Buerhop-Lutz et al., Deitsch et al.; licence CC BY-NC-SA 4.0).

The images stay inside the installed package and are never copied into this repository (the
licence forbids redistributing them commercially). What ships with cellsight is only the fixed
benchmark split `elpv_split.csv` (image, defect_probability, type, split), so every run and every
published number uses the same 1,970 training and 654 test cells.

Experts rated each cell's defect probability as 0, 1/3, 2/3 or 1; label 1 (defective) means a
probability of at least 0.5, as in the ELPV papers.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection
from importlib import resources
from pathlib import Path

from cellsight.data.dataset import GOOD, Dataset, Item
from cellsight.data.errors import DatasetError

NAME = "elpv"
SPLIT_FILE = "elpv_split.csv"
PACKAGE = "elpv_dataset"
# Defect probability in thirds -> defect class.
CLASSES = (GOOD, "maybe_good", "maybe_defective", "defective")
_TOLERANCE = 1e-6


def elpv_data_dir() -> Path:
    """The installed package's data folder (holding labels.csv and images/)."""
    try:
        package_root = resources.files(PACKAGE)
    except ModuleNotFoundError:
        raise DatasetError(
            f"the ELPV data set needs the PyPI package elpv-dataset (module {PACKAGE}); "
            "install it with: pip install elpv-dataset==1.0.0.post1"
        ) from None
    data_dir = package_root / "data"
    if not isinstance(data_dir, Path) or not data_dir.is_dir():
        raise DatasetError(
            f"{data_dir}: the {PACKAGE} package has no data folder on disk; reinstall elpv-dataset"
        )
    return data_dir


def load_elpv(data_dir: Path | None = None, splits: Collection[str] = ("train", "test")) -> Dataset:
    """The ELPV cells with cellsight's fixed train/test split, checked against the package's labels.

    `data_dir` defaults to the installed package's data folder (labels.csv + images/). meta holds
    "type" (mono / poly) and "probability" (the expert rating, as text). `splits` limits the cells to
    those splits: only their images must be present (a training machine given the train cells alone).
    """
    data_dir = elpv_data_dir() if data_dir is None else Path(data_dir)
    package_labels = _read_package_labels(data_dir / "labels.csv")
    split_rows = _read_split()
    _check_agreement(package_labels, split_rows, data_dir / "labels.csv")
    unknown = set(splits) - {"train", "test"}
    if unknown:
        raise DatasetError(f"ELPV has train and test splits, not {', '.join(sorted(unknown))}")
    images = data_dir / "images"
    items: list[Item] = []
    for image, probability_text, cell_type, split in split_rows:
        if split not in splits:
            continue
        probability = float(probability_text)
        path = images / image
        if not path.is_file():
            raise DatasetError(
                f"{path}: ELPV image missing from the installed package; reinstall elpv-dataset"
            )
        items.append(
            Item(
                path=path,
                label=1 if probability >= 0.5 else 0,
                defect_class=_defect_class(probability, image),
                split=split,
                meta={"type": cell_type, "probability": probability_text},
            )
        )
    return Dataset(NAME, tuple(items))


def _defect_class(probability: float, image: str) -> str:
    thirds = round(probability * 3)
    if not 0 <= thirds <= 3 or abs(probability * 3 - thirds) > _TOLERANCE:
        raise DatasetError(
            f"{SPLIT_FILE}: {image} has defect probability {probability}, expected 0, 1/3, 2/3 or 1"
        )
    return CLASSES[thirds]


def _read_package_labels(labels_csv: Path) -> dict[str, tuple[float, str]]:
    """labels.csv is whitespace separated: `images/cell0001.png  1.0  mono`."""
    try:
        lines = labels_csv.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"{labels_csv}: cannot read the ELPV labels ({exc.strerror or exc})") from exc
    labels: dict[str, tuple[float, str]] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise DatasetError(f"{labels_csv} line {number}: expected 'path probability type', got {line!r}")
        labels[Path(fields[0]).name] = (float(fields[1]), fields[2])
    return labels


def _read_split() -> list[tuple[str, str, str, str]]:
    text = resources.files("cellsight.data").joinpath(SPLIT_FILE).read_text(encoding="utf-8")
    rows: list[tuple[str, str, str, str]] = []
    for number, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):
        split = row["split"]
        if split not in ("train", "test"):
            raise DatasetError(f"{SPLIT_FILE} line {number}: unknown split {split!r}")
        rows.append((row["image"], row["defect_probability"], row["type"], split))
    return rows


def _check_agreement(
    package_labels: dict[str, tuple[float, str]],
    split_rows: list[tuple[str, str, str, str]],
    labels_csv: Path,
) -> None:
    """Fail if the installed package and our split disagree: a different package release would
    silently change the benchmark."""
    split_names = {row[0] for row in split_rows}
    problems = [
        f"{name} is in {SPLIT_FILE} but not in the package"
        for name in sorted(split_names - package_labels.keys())
    ]
    problems += [
        f"{name} is in the package but not in {SPLIT_FILE}"
        for name in sorted(package_labels.keys() - split_names)
    ]
    if len(split_names) != len(split_rows):
        problems.append(f"{SPLIT_FILE} lists some images more than once")
    for image, probability, cell_type, _split in split_rows:
        if image not in package_labels:
            continue
        expected_probability, expected_type = package_labels[image]
        if not math.isclose(float(probability), expected_probability, abs_tol=_TOLERANCE):
            problems.append(
                f"{image}: probability {probability} in {SPLIT_FILE}, {expected_probability} in the package"
            )
        if cell_type != expected_type:
            problems.append(f"{image}: type {cell_type} in {SPLIT_FILE}, {expected_type} in the package")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise DatasetError(f"{labels_csv} disagrees with cellsight's {SPLIT_FILE}: {shown}")
