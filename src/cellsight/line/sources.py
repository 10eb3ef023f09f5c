"""Where a station's images come from: a folder, a folder the camera writes into, or synthetic cells.

A source maps the cell's position in the run (its sequence number) to that cell's image at this
station, so that a restarted run asks for exactly the cell it stopped at. Each kind is one class; a
camera driver would be one more.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from cellsight.errors import ConfigError
from cellsight.line.config import FolderSource, Source, SyntheticSource, WatchedFolderSource


@dataclass(frozen=True)
class SourceImage:
    """One image for one cell at one station: encoded bytes (as a camera or file delivers them)."""

    data: bytes | None  # None: no image arrived
    name: str  # file name or synthetic label, used in error messages and stored paths
    path: Path | None = None  # the file on disk, when there is one (stored as the image path)
    error: str | None = None  # why there is no image
    truth: str | None = None  # synthetic only: the defect class rendered ("good" when none)


class SourceExhaustedError(Exception):
    """The source has no image for this cell and never will (a finite folder ran dry)."""


class ImageSource(Protocol):
    def image_for(self, sequence: int) -> SourceImage: ...


class FolderImages:
    """The n-th image file (name order) is the n-th cell."""

    def __init__(self, config: FolderSource) -> None:
        if not config.path.is_dir():
            raise ConfigError(f"{config.path}: image folder does not exist")
        self.files = sorted(p for p in config.path.glob(config.pattern) if p.is_file())

    def image_for(self, sequence: int) -> SourceImage:
        if sequence >= len(self.files):
            raise SourceExhaustedError(f"no image for cell {sequence}: the folder holds {len(self.files)}")
        path = self.files[sequence]
        return _from_file(path)


class WatchedFolderImages:
    """Waits for the camera PC to write the next file; a file counts once its size stops changing."""

    def __init__(self, config: WatchedFolderSource) -> None:
        config.path.mkdir(parents=True, exist_ok=True)
        self.config = config

    def image_for(self, sequence: int) -> SourceImage:
        deadline = time.monotonic() + self.config.timeout_s
        while True:
            files = sorted(p for p in self.config.path.glob(self.config.pattern) if p.is_file())
            if len(files) > sequence and _settled(files[sequence], self.config.settle_s):
                return _from_file(files[sequence])
            if time.monotonic() >= deadline:
                return SourceImage(
                    None, f"cell-{sequence}", error=f"{self.config.path}: no image for cell {sequence} "
                    f"arrived within {self.config.timeout_s:g} s",
                )
            time.sleep(self.config.poll_s)


class SyntheticImages:
    """Procedural cells (cellsight synth) whose IDs follow the run's sequence, with injected faults.

    Every station of a line computes the same ID for the same sequence, as a real cell carries one code
    through the line. Faults (truncated files, smudged codes) are drawn per (seed, station, sequence), so
    a rerun or a resumed run sees exactly the same cells.
    """

    def __init__(self, config: SyntheticSource) -> None:
        from cellsight.data.synth import STATIONS

        if config.station not in STATIONS:
            raise ConfigError(f"unknown synthetic station {config.station!r}; choose from {', '.join(STATIONS)}")
        self.config = config
        self.classes = STATIONS[config.station]
        self.first_serial = 1
        self.day = date.today()

    def for_run(self, run_id: int, day: date) -> None:
        """Serials start at run_id x 100,000 on the run's day: a new run never repeats an earlier run's IDs."""
        from cellsight.data.cellcode import MAX_SERIAL

        self.first_serial = (run_id * 100_000) % (MAX_SERIAL - 100_000)
        self.day = day

    def image_for(self, sequence: int) -> SourceImage:
        from cellsight.data.synth import make_cell_id, render_cell

        c = self.config
        rng = np.random.default_rng([c.seed, zlib.crc32(c.station.encode()), sequence])
        defect = str(rng.choice(self.classes)) if rng.random() < c.defect_rate else None
        cell_id = make_cell_id(self.first_serial + sequence, day=self.day)
        cell = render_cell(c.station, cell_id, seed=c.seed * 1_000_003 + sequence, defect_class=defect, size=c.size)
        image = cell.image
        if rng.random() < c.unreadable_code_rate:
            image = smudge_code(image, rng)
        ok, encoded = cv2.imencode(".png", image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        assert ok
        data = encoded.tobytes()
        if rng.random() < c.bad_image_rate:
            data = data[: len(data) // 3]  # a camera transfer cut short
        return SourceImage(data, f"{c.station}-{cell_id}.png", truth=cell.defect_class)


def smudge_code(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cover part of the code label with grime, as a dirty label or a glare spot makes it unreadable."""
    from cellsight.data.synth.common import label_for

    out = image.copy()
    label = label_for(min(image.shape[:2]))
    top, side = label.margin, label.side
    y0 = top + int(rng.integers(side // 4, side // 2))
    out[y0 : top + side + label.module_px * 2, : top + side + label.module_px * 2] = rng.uniform(90, 160)
    return out


def open_source(source: Source) -> ImageSource:
    if isinstance(source, FolderSource):
        return FolderImages(source)
    if isinstance(source, WatchedFolderSource):
        return WatchedFolderImages(source)
    return SyntheticImages(source)


def _from_file(path: Path) -> SourceImage:
    try:
        return SourceImage(path.read_bytes(), path.name, path=path)
    except OSError as exc:
        return SourceImage(None, path.name, path=path, error=f"{path}: cannot read: {exc.strerror}")


def _settled(path: Path, settle_s: float) -> bool:
    try:
        size = path.stat().st_size
        if settle_s > 0:
            time.sleep(settle_s)
        return size > 0 and path.stat().st_size == size
    except OSError:
        return False
