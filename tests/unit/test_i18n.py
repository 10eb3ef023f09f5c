"""Every marked string has a translation in every catalogue; locale negotiation; numbers per locale."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from cellsight.i18n import LOCALES, catalogue_path, localizer, negotiate

ROOT = Path(__file__).resolve().parents[2]
FIELD = re.compile(r"\{(\w*)[^{}]*\}")


def _extracted() -> set[str]:
    with open(ROOT / "babel.cfg", encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    found = set()
    keywords = {"_": None, "N_": None, "t": None, "gettext": None, "ngettext": (1, 2)}
    for _file, _line, message, _comments, _context in extract_from_dir(
        ROOT / "src", method_map, options_map, keywords=keywords
    ):
        found.update([message] if isinstance(message, str) else [m for m in message if m])
    return found


@pytest.mark.parametrize("locale", [loc for loc in LOCALES if loc != "en"])
def test_every_marked_string_is_translated(locale: str) -> None:
    with open(catalogue_path(locale), "rb") as handle:
        catalogue = read_po(handle, locale=locale)
    messages = _extracted()
    assert len(messages) > 20  # the extraction found the marked strings
    untranslated, fuzzy, fields = [], [], []
    for message in sorted(messages):
        entry = catalogue.get(message)
        if entry is None or not entry.string:
            untranslated.append(message)
        elif entry.fuzzy:
            fuzzy.append(message)
        elif set(FIELD.findall(message)) != set(FIELD.findall(str(entry.string))):
            fields.append(message)
    assert not untranslated, f"{locale}: no translation for {untranslated} (pybabel update, then translate)"
    assert not fuzzy and not fields, f"{locale}: fuzzy {fuzzy}; placeholders differ in {fields}"


@pytest.mark.parametrize(
    ("header", "choice", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", None, "zh_CN"),
        ("de-AT,de;q=0.9", None, "de"),
        ("fr-FR,fr;q=0.9,de;q=0.5,en;q=0.4", None, "de"),
        ("en-US,zh;q=0.9", None, "en"),
        ("zh-Hans;q=0.5,de;q=0.8", None, "de"),
        ("fr", None, "en"),
        (None, None, "en"),
        ("garbage;;q=x,,", None, "en"),
        ("de", "zh_CN", "zh_CN"),  # the user's choice wins
        ("de", "xx", "de"),  # an unsupported choice is ignored
    ],
)
def test_the_language_is_negotiated(header: str | None, choice: str | None, expected: str) -> None:
    assert negotiate(header, choice) == expected


def test_numbers_money_and_dates_are_written_the_locales_way() -> None:
    de, zh, en = localizer("de"), localizer("zh_CN"), localizer("en")
    assert de.number(12345.678, 2) == "12.345,68" and en.number(12345.678, 2) == "12,345.68"
    assert de.percent(0.1234) == "12,3\xa0%" and zh.percent(0.1234) == "12.3%"
    assert de.money(1234.5, "EUR") == "1.234,50\xa0€" and zh.money(1234.5, "CNY") == "¥1,234.50"
    moment = datetime(2026, 12, 2, 6, 5, tzinfo=UTC)
    assert "2026年12月2日" in zh.datetime(moment) and de.date(moment.date()) == "02.12.2026"
    assert de.gettext("overkill") == "Pseudoausschuss" and zh.gettext("overkill") == "过杀"
    assert de.html_lang == "de" and zh.html_lang == "zh-CN"
    with pytest.raises(ValueError, match="unknown locale"):
        localizer("fr")


def test_no_marked_string_hides_inside_an_f_string() -> None:
    """Babel cannot extract `_("...")` written inside an f-string: such text would never be translated."""
    import ast

    hidden = []
    for path in (ROOT / "src" / "cellsight").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                for inner in ast.walk(node):
                    called = inner.func if isinstance(inner, ast.Call) else None
                    if isinstance(called, ast.Name) and called.id in ("_", "N_"):
                        hidden.append(f"{path.relative_to(ROOT)}:{called.lineno}")
    assert not hidden, f"move these out of their f-strings: {hidden}"
