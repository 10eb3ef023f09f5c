"""Hypothesis fuzzing of the line configuration loader (issue 13): any bytes, any mutation of a valid file,
give either a validated configuration or a LineConfigError naming the file, never another exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellsight.line.config import LineConfigError, load_line_config

VALID: dict[str, Any] = {
    "line": "L1", "database": "sqlite:///trace.db", "output_dir": "out", "on_ng": "reject",
    "stations": [{"name": "electrode", "model": "m.safetensors", "read_code": False,
                  "source": {"kind": "folder", "path": "images"},
                  "images": {"max_bytes": 1000, "formats": ["PNG"]}}],
}
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20), st.binary(max_size=10).map(lambda b: b.decode("latin-1")))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


def _load(path: Path) -> None:
    try:
        config, sha = load_line_config(path)
    except LineConfigError as exc:
        assert str(path) in str(exc), exc  # the file is named
        return
    assert config.stations and len(sha) == 64


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_any_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "line.yaml"
    path.write_bytes(data)
    _load(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(["line", "database", "on_ng", "stations", "output_dir", "takt_per_minute", "bogus",
                              "s.name", "s.model", "s.source", "s.threshold", "s.images", "s.images.max_pixels",
                              "s.images.formats", "s.read_code"]),
       value=values)
def test_any_value_in_any_field(tmp_path: Path, where: str, value: Any) -> None:
    document = yaml.safe_load(yaml.safe_dump(VALID))
    target: Any = document
    parts = where.split(".")
    if parts[0] == "s":
        target, parts = document["stations"][0], parts[1:]
    for key in parts[:-1]:
        target = target.setdefault(key, {})
    target[parts[-1]] = value
    path = tmp_path / "line.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    _load(path)
