"""Issue 13 #7 and #10: everything is checked at start and named (file and field), never a traceback later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cellsight.cli.main import app
from cellsight.errors import ConfigError
from cellsight.line.config import LineConfigError, load_line_config
from cellsight.service.state import Service
from cellsight.service.testing import write_line_config
from cellsight.storage.store import TraceStore


def _config(folder: Path, database: str, model: Path, **replace: str) -> Path:
    path = write_line_config(folder, database, model)
    text = path.read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    path.write_text(text)
    return path


def test_an_unwritable_output_dir_stops_the_start(tmp_path: Path, models: Any) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    path = _config(tmp_path / "line", f"sqlite:///{tmp_path / 't.db'}", models.v1)
    path.write_text(path.read_text().replace(f"output_dir: {tmp_path / 'line' / 'out'}", f"output_dir: {blocker}/out"))
    config, sha = load_line_config(path)
    with pytest.raises(LineConfigError, match=r"output_dir .*a-file/out: cannot write there"):
        Service.start(config, sha)


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://cellsight:secret@127.0.0.1:9/nowhere", r"127\.0\.0\.1:9/nowhere: cannot use the database"),
    ("not a url", "not a database URL"),
    ("mysql://x@localhost/y", "unsupported database"),
])
def test_a_database_that_cannot_be_used_is_named(url: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        TraceStore.open(url)
    assert "secret" not in str(caught.value)  # the password is never printed


def test_yaml_that_is_not_utf8_or_repeats_a_key_is_refused(tmp_path: Path, models: Any) -> None:
    path = _config(tmp_path, f"sqlite:///{tmp_path / 't.db'}", models.v1)
    path.write_bytes(path.read_bytes().replace(b"service-test", b"service-t\xe9st"))
    with pytest.raises(LineConfigError, match=r"line\.yaml: not UTF-8"):
        load_line_config(path)
    path = _config(tmp_path, f"sqlite:///{tmp_path / 't.db'}", models.v1)
    path.write_text(path.read_text() + "on_ng: inspect_all\n")  # on_ng written twice: once reject
    with pytest.raises(LineConfigError, match=r"line\.yaml: not valid YAML.*'on_ng' appears twice"):
        load_line_config(path)


def test_commands_on_an_existing_database_do_not_create_one(tmp_path: Path) -> None:
    runner = CliRunner()
    typo = tmp_path / "typo.db"
    result = runner.invoke(app, ["dataset", "export", "--db", f"sqlite:///{typo}", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no such database file" in result.output
    assert not typo.exists()
    made = runner.invoke(app, ["token", "create", "--role", "viewer", "--name", "x", "--db", f"sqlite:///{typo}"])
    assert made.exit_code == 2 and not typo.exists()
    broken = tmp_path / "broken.yaml"
    broken.write_text("line: [unclosed\n")
    result = runner.invoke(app, ["token", "create", "--role", "viewer", "--name", "x", "--config", str(broken)])
    assert result.exit_code == 2 and "broken.yaml: not valid YAML" in result.output
    assert "Traceback" not in result.output


def test_runs_killed_before_they_stopped_are_marked_interrupted(tmp_path: Path, models: Any) -> None:
    config, sha = load_line_config(_config(tmp_path, f"sqlite:///{tmp_path / 't.db'}", models.v1))
    killed = Service.start(config, sha)  # never stopped: as after a SIGKILL
    assert killed.ready.is_set()  # models loaded and warmed up
    killed.trace.close()
    again = Service.start(config, sha)
    try:
        assert again.trace.run(killed.run_id).status == "interrupted"
        assert again.trace.run(again.run_id).status == "running"
    finally:
        again.stop()
