"""The dashboard's language for one request: the user's choice (a cookie set by the language form) or the
browser's Accept-Language; and the dashboard script's own strings in that language.

The script's strings are the `t("...")` calls in static/dashboard.js, extracted with Babel's JavaScript
extractor (the same one `pybabel extract -F babel.cfg -k t` uses), so a string added there is in the
catalogue test's view at once.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from babel.messages.extract import extract

from cellsight.i18n import LOCALES, NAMES, Localizer, localizer, negotiate

LANG_COOKIE = "cs_lang"
CHOICES: tuple[tuple[str, str], ...] = tuple((loc, NAMES[loc]) for loc in LOCALES)
"""(locale, name in its own language) for the language form."""


def request_localizer(accept_language: str | None, cookie: str | None) -> Localizer:
    return localizer(negotiate(accept_language, cookie))


@cache
def script_messages() -> tuple[str, ...]:
    """Every `t("...")` string of the dashboard script."""
    with (files("cellsight.ui") / "static" / "dashboard.js").open("rb") as handle:
        found = [message for _line, message, _comments, _context in extract(
            "javascript", handle, keywords={"t": None}, options={})]
    return tuple(dict.fromkeys(m for m in found if isinstance(m, str)))


def script_text(loc: Localizer) -> dict[str, str]:
    """The script's strings in `loc`'s language (the script's `t()` looks them up)."""
    return {message: loc.gettext(message) for message in script_messages()}
