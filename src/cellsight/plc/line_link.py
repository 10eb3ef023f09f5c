"""PLC-triggered inspection on a line: a Trigger takes the station's next image from its configured source
(the camera's watched folder, a folder, synthetic cells), inspects it, commits it, and only then answers.

The recorder commits before returning, so the PLC is never told a verdict the store does not hold. Each
station's position in its source is kept in `<output_dir>/plc-cursor.json`, written after the commit, so
a restarted vision PC neither repeats nor skips an image (a crash between the two can re-inspect one
image; the store then shows it twice, with the second as a duplicate ID: visible, never lost).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import yaml
from pydantic import ValidationError

from cellsight.errors import ConfigError
from cellsight.line.config import LineConfig
from cellsight.line.recorder import LineRecorder
from cellsight.line.sources import ImageSource, SourceExhaustedError, open_source
from cellsight.plc.config import PlcConfig
from cellsight.plc.result import InspectCallback, PlcResult


class PlcConfigError(ConfigError):
    """A PLC link file that cannot be used; names the file and the problem."""


def load_plc_config(path: Path, stations: list[str]) -> PlcConfig:
    """The PLC link YAML; `stations` defaults to the line's, relative paths are relative to the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PlcConfigError(f"{path}: cannot read the PLC link configuration: {exc}") from exc
    if not isinstance(data, dict):
        raise PlcConfigError(f"{path}: the PLC link configuration is a mapping (endpoint, users, certificate...)")
    data.setdefault("stations", stations)
    for key in ("certificate", "private_key", "trusted_client_certificates"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(path.parent.resolve() / data[key])
    try:
        config = PlcConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise PlcConfigError(f"{path}: {problems}") from exc
    unknown = sorted(set(config.stations) - set(stations))
    if unknown:
        raise PlcConfigError(f"{path}: stations not in the line: {', '.join(unknown)}")
    return config


class AcquisitionCursor:
    """Per station, the index of the next image to take from its source; persisted atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._next: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}

    def peek(self, station: str) -> int:
        with self._lock:
            return self._next.get(station, 0)

    def advance(self, station: str, taken: int) -> None:
        with self._lock:
            self._next[station] = max(self._next.get(station, 0), taken + 1)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(self.path.name + ".part")
            partial.write_text(json.dumps(self._next, sort_keys=True))
            os.replace(partial, self.path)


def line_callback(config: LineConfig, recorder: LineRecorder) -> InspectCallback:
    """The PLC server's inspect callback for this line: acquire, inspect, record, then answer."""
    sources: dict[str, ImageSource] = {s.name: open_source(s.source) for s in config.stations}
    cursor = AcquisitionCursor(config.output_dir / "plc-cursor.json")
    station_locks = {name: threading.Lock() for name in sources}

    def inspect_now(station: str, cell_id: str | None) -> PlcResult:
        with station_locks[station]:  # one acquisition per station at a time: the cursor stays in order
            index = cursor.peek(station)
            try:
                image = sources[station].image_for(index)
                data, name, error = image.data, image.name, image.error
            except SourceExhaustedError as exc:
                data, name, error = None, f"image-{index}", f"{station}: {exc}"
            result = recorder.inspect(station, data, name, cell_id, record_unreadable=True, source_error=error)
            cursor.advance(station, index)
        record = result.record
        return PlcResult(record.verdict, record.score, record.defect_class, record.cell_id, record.model_version,
                         record.error)

    async def inspect(station: str, cell_id: str | None) -> PlcResult:
        return await asyncio.to_thread(inspect_now, station, cell_id)

    return inspect
