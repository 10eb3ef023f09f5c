"""`cellsight synth` as a user runs it: every station into one root, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cellsight.cli.synth import synth
from cellsight.data import load_dataset
from cellsight.data.synth import STATIONS

pytestmark = pytest.mark.integration


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.command()(synth)
    app.command("noop")(lambda: None)  # two commands, so `synth` is addressed by name as in cellsight
    return app


def test_synth_all_writes_every_station(app: typer.Typer, tmp_path: Path) -> None:
    args = ["synth", "--station", "all", "--n", "3", "--out", str(tmp_path), "--n-test-good", "1",
            "--n-test-per-defect", "1", "--size", "128", "--seed", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for station, classes in STATIONS.items():
        data = load_dataset(tmp_path / station)
        assert len(data) == 3 + 1 + len(classes)
        assert sorted({i.defect_class for i in data.select(label=1)}) == sorted(classes)
        assert (tmp_path / station / "cells.csv").is_file()
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and "--overwrite" in again.output
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--station", "cathode"], "electrode, weld, can or all"),
        (["--station", "can", "--n", "0"], "--n"),
        (["--station", "can", "--size", "16"], "--size"),
        (["--station", "can", "--n-test-per-defect", "-1"], "--n-test-per-defect"),
    ],
)
def test_bad_arguments_are_clear_errors(app: typer.Typer, tmp_path: Path, extra: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), *extra])
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())  # rich wraps the error panel
    assert not any(tmp_path.iterdir())
