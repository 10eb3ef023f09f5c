"""Line configuration: validated, paths resolved against the file, clear errors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellsight.line.config import LineConfigError, OnNg, SyntheticSource, load_line_config

GOOD = """
line: cell-line-1
database: sqlite:///trace.db
takt_per_minute: 120
on_ng: inspect_all
stations:
  - name: electrode
    model: models/electrode.safetensors
    source: {kind: synthetic, station: electrode, defect_rate: 0.1}
    threshold: {ng_at: 0.5, review_band: 0.05}
  - name: can
    model: /abs/can.safetensors
    source: {kind: folder, path: images/can}
    read_code: false
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "line.yaml"
    path.write_text(text)
    return path


def test_a_valid_configuration_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    config, sha = load_line_config(_write(tmp_path, GOOD))
    assert config.station_names == ["electrode", "can"]
    assert config.on_ng is OnNg.INSPECT_ALL and config.takt_per_minute == 120
    assert config.stations[0].model == tmp_path / "models/electrode.safetensors"
    assert config.stations[1].model == Path("/abs/can.safetensors")
    assert config.stations[1].source.path == tmp_path / "images/can"  # type: ignore[union-attr]
    assert isinstance(config.stations[0].source, SyntheticSource)
    assert config.database == f"sqlite:///{tmp_path / 'trace.db'}"
    assert len(sha) == 64


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("kind: folder", "kind: camera"), "stations.1.source"),
        (GOOD.replace("on_ng: inspect_all", "on_ng: maybe"), "on_ng"),
        (GOOD.replace("name: can", "name: electrode"), "repeated: electrode"),
        (GOOD.replace("review_band: 0.05", "review_band: 0.6"), "review_band"),
        (GOOD.replace("takt_per_minute: 120", "takt_per_minute: -1"), "takt_per_minute"),
        (GOOD.replace("line: cell-line-1", "line: cell-line-1\nlnie: typo"), "lnie"),
        ("line: x\nstations: []", "stations"),
        ("- just\n- a list", "a mapping"),
        ("line: [unclosed", "not valid YAML"),
    ],
)
def test_bad_configurations_name_the_file_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(LineConfigError, match=message) as info:
        load_line_config(path)
    assert str(path) in str(info.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LineConfigError, match="cannot read the line configuration"):
        load_line_config(tmp_path / "nope.yaml")
