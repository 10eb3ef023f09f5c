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

from cellsight.i18n import DEFAULT, Localizer, localizer, translations
from cellsight.ui.locale import CHOICES
from cellsight.ui.strings import NAV

STATIC = Path(str(files("cellsight.ui") / "static"))
"""The dashboard's own script and stylesheet (package data)."""


@cache
def environment(locale: str = DEFAULT) -> Environment:
    """The environment of one language: `_` in its templates is that language's catalogue."""
    env = Environment(
        loader=PackageLoader("cellsight.ui", "templates"), autoescape=True, undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.globals["nav"] = NAV
    env.globals["languages"] = CHOICES
    return env


def render(template: str, loc: Localizer | None = None, **context: Any) -> str:
    """The named template (e.g. "overview.html") with `context` in `loc`'s language; every page extends
    base.html, which gets the language (`lang`) for `<html lang>` and the language form."""
    loc = loc or localizer()
    return environment(loc.locale).get_template(template).render(lang=loc.html_lang, locale=loc.locale, **context)
