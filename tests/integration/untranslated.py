"""Find untranslated text on a rendered page: what a browser shows, against the English catalogue.

Used by the Chromium tests of every localised page. A text is untranslated when it is (or, for phrases
of two or more words, contains) an English message whose translation in the page's locale differs; for
Simplified Chinese also any Latin word that is neither a known data value nor a unit or code.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from babel.messages.pofile import read_po

from cellsight.i18n import catalogue_path

VISIBLE_TEXT_JS = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.textContent.trim(), e = n.parentElement;
    if (!text || !e || e.closest('script,style,noscript,template,code')) continue;
    const style = getComputedStyle(e);
    if (style.display === 'none' || style.visibility === 'hidden') continue;
    out.push(text);
  }
  for (const e of document.querySelectorAll('[placeholder],[title],[aria-label],[alt]'))
    for (const a of ['placeholder', 'title', 'aria-label', 'alt']) {
      const v = e.getAttribute(a);
      if (v) out.push(v.trim());
    }
  for (const e of document.querySelectorAll('input[type=submit],input[type=button]')) out.push(e.value);
  for (const e of document.querySelectorAll('option')) out.push(e.textContent.trim());
  out.push(document.title);
  return out;
}"""

# Codes, units and names that read the same in every language
ALWAYS = {"OK", "NG", "ERROR", "REVIEW", "FPY", "RTY", "UCL", "LCL", "CO2e", "kWh", "EUR", "CNY", "USD", "cellsight",
          "Wilson", "p-chart", "kg", "ms", "CI", "API", "PLC", "ID", "English", "Deutsch", "log", "png", "SHA"}
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]{2,}")


@cache
def english_messages(locale: str) -> dict[str, str]:
    """English message -> its translation, for messages whose translation differs from the English."""
    with open(catalogue_path(locale), "rb") as handle:
        catalogue = read_po(handle, locale=locale)
    return {str(m.id): str(m.string) for m in catalogue if m.id and m.string and m.string != m.id}


def untranslated(texts: list[str], locale: str, data_words: set[str]) -> list[str]:
    """The texts that show English where the locale has (or needs) a translation."""
    if locale == "en":
        return []
    messages = english_messages(locale)
    phrases = [m for m in messages if len(m.split()) >= 2 and len(m) >= 8 and "{" not in m]
    found = []
    for text in texts:
        if text in messages or any(p in text for p in phrases):
            found.append(text)
        elif locale == "zh_CN":
            words = {w.strip("-'’") for w in _LATIN_WORD.findall(text)} - ALWAYS - data_words
            if words:
                found.append(f"{text}  [latin: {', '.join(sorted(words))}]")
    return sorted(set(found))


def page_texts(page: Any) -> list[str]:
    texts: list[str] = page.evaluate(VISIBLE_TEXT_JS)
    return texts
