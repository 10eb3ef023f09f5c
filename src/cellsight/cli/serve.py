"""`cellsight serve` (the inspection service and dashboard) and `cellsight token create`.

Register in cli/main.py with:
    from cellsight.cli.serve import serve, token_app
    app.command()(serve)
    app.add_typer(token_app, name="token")
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cellsight.cli.errors import user_errors
from cellsight.cli.progress import console

token_app = typer.Typer(help="API tokens for the inspection service.", no_args_is_help=True)


def serve(
    config: Annotated[Path | None, typer.Option(help="Line configuration (YAML): stations, models, database.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for the whole network).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_upload_mb: Annotated[
        float | None, typer.Option(help="Largest body in MB (413 above); default 32 or CELLSIGHT_MAX_UPLOAD_BYTES.")
    ] = None,
    secure_cookie: Annotated[
        bool | None, typer.Option(help="Mark the dashboard cookie Secure (behind HTTPS); or CELLSIGHT_SECURE_COOKIE.")
    ] = None,
    plc: Annotated[
        Path | None, typer.Option(help="PLC link (YAML: endpoint, users, certificate): start the OPC UA server too.")
    ] = None,
    openapi: Annotated[
        Path | None, typer.Option(help="Write the OpenAPI description to this file and exit (docs/openapi.json).")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Service processes sharing one run (sequence numbers come from the database).")
    ] = 1,
) -> None:
    """Serve inspections over HTTP with the dashboard at /. Prints an admin token on the very first start."""
    if openapi is not None:
        from cellsight.service.app import openapi_json

        openapi.parent.mkdir(parents=True, exist_ok=True)
        openapi.write_text(openapi_json())
        console.print(f"wrote {openapi}")
        return
    if config is None:
        raise typer.BadParameter("--config is required (the line configuration)", param_hint="--config")
    import uvicorn
    from pydantic import ValidationError

    from cellsight.errors import CellsightError
    from cellsight.line.config import load_line_config
    from cellsight.service.app import create_app
    from cellsight.service.auth import Role, create_token
    from cellsight.service.state import Service, Settings

    try:
        line, sha = load_line_config(config)
        given: dict[str, object] = {}  # options given on the command line win over CELLSIGHT_* variables
        if max_upload_mb is not None:
            given["max_upload_bytes"] = int(max_upload_mb * 1024 * 1024)
        if secure_cookie is not None:
            given["secure_cookie"] = secure_cookie
        service = Service.start(line, sha, Settings(**given))  # type: ignore[arg-type]
    except CellsightError as exc:  # the line file, a model, a source: the user's to fix; anything else is a bug
        console.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from exc
    except ValidationError as exc:  # a CELLSIGHT_* variable or option the settings refuse
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        console.print(f"error: service settings (CELLSIGHT_* variables / options): {problems}", markup=False)
        raise typer.Exit(2) from exc
    if service.store.token_count() == 0:
        token = create_token(service.store, "admin (first start)", Role.ADMIN)
        console.print("No API tokens yet; created an admin token. It is shown only now, keep it safe:")
        console.print(token, markup=False, highlight=False)
    if workers > 1:
        if plc is not None:
            service.stop()
            raise typer.BadParameter("the PLC link runs in one process: use --workers 1 with --plc", param_hint="--plc")
        _serve_workers(config, service, host, port, workers, given)
        return
    companions = []
    if plc is not None:
        from cellsight.plc import PlcServer
        from cellsight.plc.line_link import PlcConfigError, line_callback, load_plc_config

        try:
            plc_config = load_plc_config(plc, line.station_names)
        except PlcConfigError as exc:
            service.stop()
            console.print(f"error: {exc}", markup=False)
            raise typer.Exit(2) from exc
        callback = line_callback(line, service.recorder)
        companions.append(lambda: PlcServer(plc_config, callback))
        console.print(f"PLC link (OPC UA): {plc_config.endpoint}", markup=False)
    console.print(f"service run {service.run_id} for line {line.line}: http://{host}:{port}/", markup=False)
    uvicorn.run(create_app(service, companions), host=host, port=port, log_level="info")


def _serve_workers(config: Path, service: object, host: str, port: int, workers: int,
                   given: dict[str, object]) -> None:
    """Hand the run to `workers` uvicorn processes (each builds its app in `service.workers.worker_app`)."""
    import os

    import uvicorn

    from cellsight.service import workers as worker_env
    from cellsight.service.state import Service

    assert isinstance(service, Service)
    run_id = service.run_id
    service.registry.backend.close()
    service.trace.close()  # the workers open their own connections; the run stays "running"
    os.environ.update({worker_env.CONFIG_ENV: str(config.resolve()), worker_env.RUN_ENV: str(run_id)})
    # the options given here reach the workers' Settings as the CELLSIGHT_* variables they read
    os.environ.update({f"CELLSIGHT_{key.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
                       for key, value in given.items()})
    console.print(f"service run {run_id}: {workers} worker processes on http://{host}:{port}/", markup=False)
    uvicorn.run("cellsight.service.workers:worker_app", factory=True, workers=workers, host=host, port=port,
                log_level="info")


@token_app.command("create")
@user_errors
def token_create(
    role: Annotated[str, typer.Option(help="viewer (read), operator (inspect, review) or admin (models, tokens).")],
    name: Annotated[str, typer.Option(help="Who holds it; recorded as the reviewer or deployer.")],
    config: Annotated[Path | None, typer.Option(help="Line configuration whose database to use.")] = None,
    db: Annotated[str | None, typer.Option(help="Database URL instead of --config.")] = None,
) -> None:
    """Create a token and print it once; only its SHA-256 is stored."""
    from cellsight.line.config import load_line_config
    from cellsight.service.auth import Role, create_token
    from cellsight.storage.service_store import ServiceStore
    from cellsight.storage.store import TraceStore

    try:
        parsed = Role.parse(role)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--role") from exc
    if (config is None) == (db is None):
        raise typer.BadParameter("give exactly one of --config or --db")
    url = db if db is not None else load_line_config(config)[0].database  # type: ignore[arg-type]
    with TraceStore.open(url, create=config is not None) as store:  # --db: an existing database only
        typer.echo(create_token(ServiceStore(store), name, parsed))


@token_app.command("revoke")
@user_errors
def token_revoke(
    name: Annotated[str, typer.Option(help="Name the tokens were created with; every live one is revoked.")],
    config: Annotated[Path | None, typer.Option(help="Line configuration whose database to use.")] = None,
    db: Annotated[str | None, typer.Option(help="Database URL instead of --config.")] = None,
) -> None:
    """Revoke tokens by name: they stop working on their next request."""
    from cellsight.line.config import load_line_config
    from cellsight.storage.service_store import ServiceStore
    from cellsight.storage.store import TraceStore

    if (config is None) == (db is None):
        raise typer.BadParameter("give exactly one of --config or --db")
    url = db if db is not None else load_line_config(config)[0].database  # type: ignore[arg-type]
    with TraceStore.open(url, create=False) as store:
        count = ServiceStore(store).revoke_tokens(name)
    if count == 0:
        raise typer.BadParameter(f"no live token named {name!r}", param_hint="--name")
    typer.echo(f"revoked {count} token(s) named {name!r}")
