"""Data sets as plain lists of items: image path, label, defect class, optional mask, split.

Every loader (MVTec layout, CSV manifest, ELPV, synthetic stations) produces this one shape, so
detectors, calibration and metrics never care where images came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cellsight.errors import DataError

GOOD = "good"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Item:
    """One image. `label` is 0 for good, 1 for defective; `defect_class` is "good" for good images."""

    path: Path
    label: int
    defect_class: str = GOOD
    split: str = "train"
    mask_path: Path | None = None
    meta: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label not in (0, 1):
            raise DataError(f"{self.path}: label must be 0 (good) or 1 (defective), got {self.label!r}")
        if self.split not in SPLITS:
            raise DataError(f"{self.path}: split must be one of {SPLITS}, got {self.split!r}")


@dataclass(frozen=True)
class Dataset:
    """An ordered, immutable collection of items with a name for reports."""

    name: str
    items: tuple[Item, ...]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def select(
        self,
        split: str | None = None,
        label: int | None = None,
        defect_class: str | None = None,
    ) -> Dataset:
        """The items matching every given criterion, in order."""
        kept = tuple(
            item
            for item in self.items
            if (split is None or item.split == split)
            and (label is None or item.label == label)
            and (defect_class is None or item.defect_class == defect_class)
        )
        return Dataset(self.name, kept)

    @property
    def paths(self) -> list[Path]:
        return [item.path for item in self.items]

    @property
    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    @property
    def has_masks(self) -> bool:
        return any(item.mask_path is not None for item in self.items)

    def fingerprint(self) -> str:
        """SHA-256 over every image's name, label, split and bytes: identifies a training set exactly."""
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(f"{item.path.name}\0{item.label}\0{item.defect_class}\0{item.split}\0".encode())
            digest.update(_file_digest(item.path))
        return digest.hexdigest()


def _file_digest(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").digest()
    except OSError:
        return b"<unreadable>"


def concat(name: str, parts: Iterable[Dataset]) -> Dataset:
    return Dataset(name, tuple(item for part in parts for item in part.items))
