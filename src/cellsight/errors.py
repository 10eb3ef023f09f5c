"""The one error root: every failure a user can cause or fix is a `CellsightError`.

The CLI and the service turn these (and only these) into a one-line message or a 4xx answer naming the
file, field or request at fault; anything else is a bug and keeps its traceback. Each branch also
derives from the built-in error it replaces, so callers that caught `ValueError` keep working.
"""

from __future__ import annotations


class CellsightError(Exception):
    """A problem with the user's data, model files, deployment or configuration: never a bug."""


class DataError(CellsightError, ValueError):
    """An image or a data set that cannot be used; the message names the file (and line) at fault."""


class ModelFileError(CellsightError, ValueError):
    """A model file that cannot be trusted: unreadable, truncated, altered, or of an unknown format."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class DeploymentError(CellsightError, ValueError):
    """An export that would not score like the model, or a deployment folder that fails verification."""


class ConfigError(CellsightError, ValueError):
    """A setting, option or configuration file that cannot be used; names the file or key and the problem."""


class NotFittedError(CellsightError, RuntimeError):
    """A detector used before it was fitted (or calibrated): the model is incomplete, not the input."""
