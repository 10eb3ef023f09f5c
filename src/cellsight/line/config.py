"""The line configuration: a YAML file validated with pydantic, with errors that name the file and field.

Relative paths (models, folders, outputs, SQLite files) are relative to the YAML file, so a line's folder
can be moved or copied to another PC as a whole.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cellsight.errors import ConfigError
from cellsight.inference.seam import InferenceSettings
from cellsight.storage.engine import DEFAULT_URL


class LineConfigError(ConfigError):
    """A line configuration that cannot be used; the message names the file and every problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FolderSource(_Strict):
    """Images already on disk, taken in name order: the n-th file is the n-th cell."""

    kind: Literal["folder"]
    path: Path
    pattern: str = "*"


class WatchedFolderSource(_Strict):
    """A folder the camera PC writes into; the line waits for each next file (name order)."""

    kind: Literal["watched_folder"]
    path: Path
    pattern: str = "*"
    poll_s: float = Field(0.05, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    settle_s: float = Field(0.05, ge=0)  # a file must keep its size this long: the writer has finished


class SyntheticSource(_Strict):
    """Procedural station images (cellsight synth), with injected faults to exercise the line's checks."""

    kind: Literal["synthetic"]
    station: str
    defect_rate: float = Field(0.05, ge=0, le=1)
    seed: int = 0
    size: int = Field(256, ge=64, le=4096)
    bad_image_rate: float = Field(0.0, ge=0, le=1)
    unreadable_code_rate: float = Field(0.0, ge=0, le=1)


Source = Annotated[FolderSource | WatchedFolderSource | SyntheticSource, Field(discriminator="kind")]


class ThresholdPolicy(_Strict):
    """When a station says NG, on the normalised score (0.5 is the model's calibrated threshold).

    `review_band` sends scores just below `ng_at` to a person instead of passing them: with a band of
    0.05, a score of 0.47 is neither OK nor NG but needs review.
    """

    ng_at: float = Field(0.5, gt=0, lt=1)
    review_band: float = Field(0.0, ge=0, lt=0.5)

    @model_validator(mode="after")
    def _band_inside(self) -> ThresholdPolicy:
        if self.review_band >= self.ng_at:
            raise ValueError(f"review_band {self.review_band} must be smaller than ng_at {self.ng_at}")
        return self


class SaveImages(StrEnum):
    ALL = "all"
    NOT_OK = "not_ok"  # NG and needs-review images with their heat maps: what a reviewer looks at
    NONE = "none"


class StationConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    model: Path
    source: Source
    threshold: ThresholdPolicy = ThresholdPolicy()
    read_code: bool = True  # decode the cell's DataMatrix from this station's image


class OnNg(StrEnum):
    REJECT = "reject"  # an NG cell leaves the line at the station that found it
    INSPECT_ALL = "inspect_all"  # every station inspects every cell; the verdict is decided at the end


class LineConfig(_Strict):
    line: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    database: str = DEFAULT_URL
    output_dir: Path = Path("line-output")
    takt_per_minute: float | None = Field(None, gt=0)  # cells per minute; None: as fast as inspection goes
    on_ng: OnNg = OnNg.REJECT
    save_images: SaveImages = SaveImages.NOT_OK
    cells: int | None = Field(None, gt=0)  # stop after this many cells; None: until a source runs dry
    pipelined: bool = False  # stations work at the same time on successive cells (see line/pipeline.py)
    inference: InferenceSettings = InferenceSettings()  # local (in-process) or ray (Ray Serve replicas)
    stations: list[StationConfig] = Field(min_length=1)

    @field_validator("stations")
    @classmethod
    def _unique_names(cls, stations: list[StationConfig]) -> list[StationConfig]:
        names = [s.name for s in stations]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"station names must be unique; repeated: {', '.join(duplicates)}")
        return stations

    @property
    def station_names(self) -> list[str]:
        return [s.name for s in self.stations]


def load_line_config(path: Path | str) -> tuple[LineConfig, str]:
    """The validated configuration with paths resolved against its folder, and the file's SHA-256."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LineConfigError(f"{path}: cannot read the line configuration: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LineConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise LineConfigError(f"{path}: a line configuration is a mapping with 'line' and 'stations'")
    try:
        config = LineConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(top)'}: {error['msg']}" for error in exc.errors()
        )
        raise LineConfigError(f"{path}: {problems}") from exc
    return _resolve(config, path.parent.resolve()), hashlib.sha256(text.encode()).hexdigest()


def _resolve(config: LineConfig, base: Path) -> LineConfig:
    def absolute(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    stations = []
    for station in config.stations:
        source = station.source
        if isinstance(source, FolderSource | WatchedFolderSource):
            source = source.model_copy(update={"path": absolute(source.path)})
        stations.append(station.model_copy(update={"model": absolute(station.model), "source": source}))
    return config.model_copy(
        update={"stations": stations, "output_dir": absolute(config.output_dir),
                "database": _resolve_sqlite(config.database, base)}
    )


def _resolve_sqlite(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str(base / url[len(prefix):])
    return url
