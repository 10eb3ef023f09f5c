"""The published OpenAPI file is current; the token and dataset commands work end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from cellsight.cli.dataset import dataset_app
from cellsight.cli.serve import serve, token_app
from cellsight.data.sources import load_dataset
from cellsight.service.app import openapi_json
from cellsight.service.auth import hash_token

SPEC = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"

# Registered as cli/main.py registers them (see the docstrings of cli/serve.py and cli/dataset.py).
cli = typer.Typer()
cli.command()(serve)
cli.add_typer(token_app, name="token")
cli.add_typer(dataset_app, name="dataset")


def test_serve_writes_the_openapi_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--openapi", str(tmp_path / "openapi.json")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "openapi.json").read_text() == openapi_json()


def test_docs_openapi_json_is_current() -> None:
    assert SPEC.is_file(), "write it: cellsight serve --openapi docs/openapi.json"
    assert SPEC.read_text() == openapi_json(), "docs/openapi.json is stale: cellsight serve --openapi docs/openapi.json"
    paths = json.loads(SPEC.read_text())["paths"]
    assert "/v1/stations/{station}/inspect" in paths and "/" not in paths  # dashboard pages are not API


def test_token_create_prints_a_token_that_works(running_sqlite: Any) -> None:
    url = running_sqlite.service.config.database
    result = CliRunner().invoke(cli, ["token", "create", "--role", "viewer", "--name", "QE tablet", "--db", url])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert running_sqlite.service.store.token(hash_token(token)).role == "viewer"
    bad = CliRunner().invoke(cli, ["token", "create", "--role", "boss", "--name", "x", "--db", url])
    assert bad.exit_code != 0 and "unknown role" in bad.output


def test_dataset_export_command(running_sqlite: Any, models: Any, tmp_path: Path) -> None:
    run = running_sqlite
    inspection = run.inspect("can", models.defect, "X1").json()
    run.client.post(f"/v1/inspections/{inspection['id']}/review", json={"decision": "false_call"}, headers=run.auth())
    out = tmp_path / "export"
    result = CliRunner().invoke(cli, ["dataset", "export", "--db", run.service.config.database, "--out", str(out),
                                              "--station", "can"])
    assert result.exit_code == 0, result.output
    assert "1 good" in result.output and [i.defect_class for i in load_dataset(out).items] == ["good"]
    again = CliRunner().invoke(cli, ["dataset", "export", "--db", run.service.config.database, "--out", str(out)])
    assert again.exit_code == 2 and "not empty" in again.output
