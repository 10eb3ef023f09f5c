"""One Jinja2 environment for every dashboard page: autoescaping on, undefined names an error.

Values reach pages only through template expressions (escaped for HTML text and quoted attributes) or
through `tojson` in a JSON data island, which the script reads and writes with DOM APIs (textContent).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from cellsight.ui.strings import NAV, _

STATIC = Path(str(files("cellsight.ui") / "static"))
"""The dashboard's own script and stylesheet (package data)."""


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("cellsight.ui", "templates"), autoescape=True, undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True,
    )
    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=_, ngettext=lambda s, p, n: s if n == 1 else p, newstyle=True  # the i18n extension adds it
    )
    env.globals["nav"] = NAV
    return env


def render(template: str, **context: Any) -> str:
    """The named template (e.g. "overview.html") with `context`; every page extends base.html."""
    return environment().get_template(template).render(**context)
