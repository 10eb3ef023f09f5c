"""The one error every data-set loader raises, so the CLI can print it without a traceback."""

from __future__ import annotations

from cellsight.errors import DataError


class DatasetError(DataError):
    """A data set that cannot be loaded; the message names the file or folder (and line) at fault."""
