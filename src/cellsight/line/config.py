"""The line configuration: a YAML file validated with pydantic, with errors that name the file and field.

Relative paths (models, folders, outputs, SQLite files) are relative to the YAML file, so a line's folder
can be moved or copied to another PC as a whole.
"""

from __future__ import annotations

import hashlib
import os
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


ImageFormat = Literal["PNG", "JPEG", "BMP", "TIFF"]


class ImageLimits(_Strict):
    """What a station decodes at all: a bounded file, a bounded pixel count, a sane size and format.

    One decoded image costs about pixels x channels x bytes per sample, and the detector's working copy
    is small beside it; `max_pixels` therefore bounds the memory of one request (about 3 bytes per pixel
    for 8-bit RGB, 6 for 16-bit). Its default follows the model: (16 x its working size)^2, at least
    2048 x 2048, so a 256-pixel model accepts 4096 x 4096 (50 MB as 8-bit RGB), not a 16384 x 8192 bomb.
    """

    max_bytes: int = Field(32 * 1024 * 1024, gt=0)
    max_pixels: int | None = Field(None, gt=0)
    min_side: int = Field(8, ge=1)  # a 1x1 "image" is a bad image, never a verdict
    formats: tuple[ImageFormat, ...] = Field(("PNG", "JPEG", "BMP", "TIFF"), min_length=1)

    def pixels_for(self, working_size: int) -> int:
        return self.max_pixels if self.max_pixels is not None else max(2048 * 2048, (16 * working_size) ** 2)


class StationConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    model: Path
    source: Source
    threshold: ThresholdPolicy = ThresholdPolicy()
    read_code: bool = True  # decode the cell's DataMatrix from this station's image
    images: ImageLimits = ImageLimits()


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key written twice in one mapping is an error instead of the last one winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str, path: Path) -> object:
    """A YAML document (safe types only, no repeated keys); a ConfigError naming the file and line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise LineConfigError(f"{path}: not valid YAML: {exc}") from exc


def check_output_dir(config: LineConfig) -> None:
    """The output folder exists (or can be made) and takes files: checked at start, not at the first NG."""
    folder = config.output_dir
    probe = folder / f".write-check-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise LineConfigError(f"output_dir {folder}: cannot write there ({exc.strerror or exc}); "
                              "fix output_dir in the line file or the folder's permissions") from exc


def load_line_config(path: Path | str) -> tuple[LineConfig, str]:
    """The validated configuration with paths resolved against its folder, and the file's SHA-256."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LineConfigError(f"{path}: cannot read the line configuration: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise LineConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                              "save the file as UTF-8") from exc
    data = load_yaml(text, path)
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
