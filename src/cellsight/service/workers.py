"""`cellsight serve --workers N`: uvicorn starts N processes, each building the app with this factory.

The CLI starts the service run once and hands every worker the line file and the run's id through the
environment (service settings travel as the CELLSIGHT_* variables `Settings` reads); the workers share the
run through the database (sequence counters, unique cell claims), so no process holds a lock the others need.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from cellsight.line.config import load_line_config
from cellsight.service.app import create_app
from cellsight.service.settings import Settings
from cellsight.service.state import Service

CONFIG_ENV = "CELLSIGHT_SERVE_CONFIG"
RUN_ENV = "CELLSIGHT_SERVE_RUN"


def worker_app() -> FastAPI:
    """One worker's app on the run named in the environment (set by `cellsight serve --workers`)."""
    config, sha = load_line_config(os.environ[CONFIG_ENV])
    return create_app(Service.start(config, sha, Settings(), run_id=int(os.environ[RUN_ENV])))
