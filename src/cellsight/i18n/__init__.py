"""The operator's language: gettext catalogues (English, Simplified Chinese, German), the browser's choice
(Accept-Language) or the user's, and numbers, money and dates written the locale's way (Babel).

Catalogues are the `.po` files under `locales/` (package data), read with Babel at first use: nothing to
compile at install, nothing fetched. Text is marked with `_("...")` (or `N_` for a constant translated
later) where it is written (Python) and with `{{ _("...") }}` / `{% trans %}` in templates;
`pybabel extract -F babel.cfg` finds them (DEVELOPERS.md).
English is the source language: its catalogue is the message ids themselves.
"""

from __future__ import annotations

import gettext
import io
import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from importlib.resources import files

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent

LOCALES = ("en", "zh_CN", "de")
DEFAULT = "en"
DOMAIN = "cellsight"
NAMES = {"en": "English", "zh_CN": "简体中文", "de": "Deutsch"}  # each in its own language
_LANGUAGE = {"en": "en", "zh": "zh_CN", "de": "de"}
_TAG = re.compile(r"^[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*$")


def N_(message: str) -> str:  # noqa: N802 (gettext's name for the no-op marker)
    """Marks a module-level string for extraction; it is translated where shown (`Localizer.gettext`)."""
    return message


def catalogue_path(locale: str) -> str:
    return str(files("cellsight.i18n") / "locales" / locale / "LC_MESSAGES" / f"{DOMAIN}.po")


@cache
def translations(locale: str) -> gettext.NullTranslations:
    """The locale's catalogue, read from its .po file (English: the ids themselves)."""
    if locale not in LOCALES:
        raise ValueError(f"unknown locale {locale!r}; choose from {', '.join(LOCALES)}")
    if locale == DEFAULT:
        return gettext.NullTranslations()
    with open(catalogue_path(locale), "rb") as handle:
        catalog = read_po(handle, locale=locale, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def supported(tag: str | None) -> str | None:
    """The supported locale a language tag asks for ("zh-CN", "zh-Hans", "de-AT", "en_US"), or None."""
    if not tag or not _TAG.match(tag.strip()):
        return None
    parts = tag.strip().replace("-", "_").split("_")
    exact = {loc.lower(): loc for loc in LOCALES}.get("_".join(parts).lower())
    return exact or _LANGUAGE.get(parts[0].lower())


def negotiate(accept_language: str | None, choice: str | None = None) -> str:
    """The user's explicit choice when supported, else the best of the browser's Accept-Language, else English."""
    chosen = supported(choice)
    if chosen is not None:
        return chosen
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _sep, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _eq, value = param.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0 and (locale := supported(tag)) is not None:
            ranked.append((-quality, index, locale))
    return min(ranked)[2] if ranked else DEFAULT


def terminal_locale(choice: str | None = None) -> str:
    """For the CLI: `--lang`, else CELLSIGHT_LANG, LC_ALL, LC_MESSAGES or LANG ("de_DE.UTF-8"), else English."""
    import os

    if supported(choice) is not None:
        return negotiate(None, choice)
    for name in ("CELLSIGHT_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "").split(".")[0].split("@")[0]
        if value and value not in ("C", "POSIX"):
            return supported(value) or DEFAULT
    return DEFAULT


@dataclass(frozen=True)
class Localizer:
    """Text and numbers in one locale. `gettext` is also exposed as `_` to templates."""

    locale: str

    def gettext(self, message: str) -> str:
        return translations(self.locale).gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return translations(self.locale).ngettext(singular, plural, n)

    @property
    def html_lang(self) -> str:
        """The BCP 47 tag for `<html lang>`: zh-CN, de, en."""
        return self.locale.replace("_", "-")

    def number(self, value: float | None, digits: int = 0) -> str:
        if value is None or value != value:
            return self.gettext("n/a")
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(value, pattern, locale=self.locale)

    def percent(self, value: float | None, digits: int = 1) -> str:
        if value is None or value != value:
            return self.gettext("n/a")
        pattern = Locale.parse(self.locale).percent_formats[None].pattern  # e.g. "#,##0 %" (de)
        if digits:
            at = pattern.index("0")
            pattern = pattern[: at + 1] + "." + "0" * digits + pattern[at + 1 :]
        return format_percent(value, pattern, locale=self.locale)

    def money(self, value: float, currency: str) -> str:
        return format_currency(value, currency, locale=self.locale)

    def datetime(self, value: datetime) -> str:
        from babel.dates import format_datetime

        return format_datetime(value, "medium", locale=self.locale)

    def date(self, value: date) -> str:
        from babel.dates import format_date

        return format_date(value, "medium", locale=self.locale)


@cache
def localizer(locale: str = DEFAULT) -> Localizer:
    translations(locale)  # an unknown locale fails here, not at the first string
    return Localizer(locale)
