"""CSV manifests: the plant's own list of images, labels and splits, e.g. exported from a MES or Excel.

    path,label,split,mask,line,shift
    cells/0001.png,ok,train,,L2,night
    cells/0002.png,crack,test,masks/0002.png,L2,day

Columns (names in any letter case, "," ";" or tab separated, UTF-8 with or without Excel's BOM):

* ``path`` (required): relative to the CSV's folder, or absolute. The file must exist.
* ``label`` (required): ``good``/``ok``/``0`` -> good; ``defect(ive)``/``ng``/``nok``/``bad``/``1`` ->
  defective (defect class "defect"); any other name, e.g. ``crack``, -> defective with that defect
  class. Words that mean "not sure" (``maybe``, ``unknown``, ``?`` ...) and other numbers are errors:
  an unsure image must be resolved by a person, not guessed into training or evaluation.
* ``split`` (optional): train / val / test. Missing column or empty cell -> ``default_split``
  ("train"), because a plain list of images is most often the good set a detector is fitted on;
  evaluate on a manifest with an explicit split column.
* ``defect_class`` (optional): overrides the class for defective rows; must agree with ``label``.
* ``mask`` (optional): defect mask path, same rules as ``path``; empty means no mask.
* Any other column is kept as text in ``Item.meta`` (line, shift, lot ...).

Errors name the CSV and the line, e.g. ``manifest.csv line 7: unknown label 'maybe'``. An image
listed twice is an error: the same cell in train and test would inflate every metric.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from cellsight.data.dataset import GOOD, SPLITS, Dataset, Item
from cellsight.data.errors import DatasetError

GOOD_LABELS = frozenset({"good", "ok", "0"})
DEFECT_LABELS = frozenset({"defect", "defective", "ng", "nok", "bad", "1"})
GENERIC_DEFECT = "defect"
_UNSURE_LABELS = frozenset(
    {"maybe", "unknown", "unsure", "uncertain", "?", "na", "n/a", "none", "null", "tbd"}
)
_CLASS_NAME = re.compile(r"[^\W\d][\w\- ]*")
_KNOWN_COLUMNS = ("path", "label", "split", "mask", "defect_class")


def load_manifest(csv_path: Path | str, default_split: str = "train", name: str | None = None) -> Dataset:
    """Load a CSV manifest (format in the module docstring); the data set is named after the file."""
    source = Path(csv_path)
    if default_split not in SPLITS:
        raise ValueError(f"default_split must be one of {SPLITS}, got {default_split!r}")
    try:
        text = source.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{source}: manifest not found") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 CSV"
        ) from exc
    except OSError as exc:
        raise DatasetError(f"{source}: cannot read manifest ({exc.strerror or exc})") from exc
    reader = csv.reader(io.StringIO(text, newline=""), dialect=_dialect(text))
    header = next(reader, None)
    if header is None:
        raise DatasetError(f"{source}: empty manifest (expected a header with columns path,label)")
    columns = [column.strip().lower() for column in header]
    for required in ("path", "label"):
        if required not in columns:
            raise DatasetError(f"{source} line 1: missing column {required!r} (header: {', '.join(header)})")
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise DatasetError(f"{source} line 1: column {duplicates[0]!r} appears more than once")

    items: list[Item] = []
    first_seen: dict[Path, int] = {}
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(columns):
            raise DatasetError(f"{source} line {line}: {len(cells)} fields but the header has {len(columns)}")
        row = {c: v.strip() for c, v in zip(columns, cells, strict=False)}
        item = _item(row, dict(zip(header, cells, strict=False)), source, line, default_split)
        if item.path in first_seen:
            raise DatasetError(
                f"{source} line {line}: {item.path} is already listed on line {first_seen[item.path]}"
            )
        first_seen[item.path] = line
        items.append(item)
    if not items:
        raise DatasetError(f"{source}: the manifest lists no images")
    return Dataset(name or source.stem, tuple(items))


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    """Comma, or the ';' / tab that Excel writes in many European locales, judged by the header."""
    header = text.split("\n", 1)[0]
    try:
        return csv.Sniffer().sniff(header, delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _item(row: dict[str, str], raw: dict[str, str], source: Path, line: int, default_split: str) -> Item:
    where = f"{source} line {line}"
    label, defect_class = _parse_label(row.get("label", ""), where)
    explicit_class = row.get("defect_class", "")
    if explicit_class:
        agrees = (
            explicit_class.lower() == GOOD
            if label == 0
            else explicit_class.lower() != GOOD
            and defect_class.lower() in (GENERIC_DEFECT, explicit_class.lower())
        )
        if not agrees:
            raise DatasetError(f"{where}: label {row['label']!r} contradicts defect_class {explicit_class!r}")
        defect_class = GOOD if label == 0 else explicit_class
    split = row.get("split", "").lower() or default_split
    if split not in SPLITS:
        raise DatasetError(f"{where}: unknown split {row['split']!r} (use {', '.join(SPLITS)})")
    meta = {
        key.strip(): value.strip() for key, value in raw.items() if key.strip().lower() not in _KNOWN_COLUMNS
    }
    return Item(
        path=_existing_file(row.get("path", ""), "image", source, where),
        label=label,
        defect_class=defect_class,
        split=split,
        mask_path=_existing_file(row["mask"], "mask", source, where) if row.get("mask") else None,
        meta=meta,
    )


def _parse_label(value: str, where: str) -> tuple[int, str]:
    word = value.lower()
    if word in GOOD_LABELS:
        return 0, GOOD
    if word in DEFECT_LABELS:
        return 1, GENERIC_DEFECT
    if not value:
        raise DatasetError(f"{where}: empty label")
    if word in _UNSURE_LABELS or not _CLASS_NAME.fullmatch(value):
        raise DatasetError(
            f"{where}: unknown label {value!r} "
            "(use good/ok/0, defect/ng/bad/1, or a defect class name like 'crack')"
        )
    return 1, value


def _existing_file(value: str, what: str, source: Path, where: str) -> Path:
    if not value:
        raise DatasetError(f"{where}: empty {what} path")
    path = Path(value)
    if not path.is_absolute():
        path = source.parent / path
    if not path.is_file():
        reason = "is a folder, not a file" if path.is_dir() else "file not found"
        raise DatasetError(f"{where}: {what} {path}: {reason}")
    return path
