"""The CLI's one rule for failures: only a CellsightError becomes a one-line message (exit 2); anything else
is a bug and keeps its traceback."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from cellsight.cli.errors import user_errors
from cellsight.errors import CellsightError, ConfigError, DataError

app = typer.Typer()


@app.command()
@user_errors
def fails(kind: str) -> None:
    """Raise the error named by `kind`."""
    errors: dict[str, Exception] = {
        "data": DataError("/data/cell_7.png: truncated PNG"),
        "config": ConfigError("patchcore settings: unknown setting 'bogus'"),
        "bug": ValueError("an internal invariant broke"),
        "os": OSError(13, "Permission denied"),
    }
    raise errors[kind]


@pytest.mark.parametrize("kind", ["data", "config"])
def test_user_errors_are_one_line_with_exit_code_2(kind: str) -> None:
    result = CliRunner().invoke(app, [kind])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("kind", ["bug", "os"])
def test_anything_else_is_a_bug_and_propagates(kind: str) -> None:
    result = CliRunner().invoke(app, [kind])
    assert result.exit_code == 1
    assert result.exception is not None and not isinstance(result.exception, CellsightError)
