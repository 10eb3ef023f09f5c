"""The CLI's one rule for failures: a `CellsightError` (the user's data, model, configuration) becomes one
line naming the file or setting and exit code 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from cellsight.cli.progress import fail
from cellsight.errors import CellsightError

P = ParamSpec("P")
R = TypeVar("R")


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command (under `@app.command()`): its `CellsightError`s print as one line, exit code 2."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CellsightError as exc:
            raise fail(str(exc)) from exc

    return run
