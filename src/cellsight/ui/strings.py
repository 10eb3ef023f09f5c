"""Every string the dashboard shows from Python, in one place; `_` marks them for gettext (Babel extracts
`_("...")` from here and from the templates). Until a catalogue is installed, `_` returns the text as is.
"""

from __future__ import annotations


def _(text: str) -> str:
    """The gettext marker; `render.install_translations` swaps the templates' `_` for a real catalogue."""
    return text


NAV: tuple[tuple[str, str], ...] = (
    ("/", _("Line overview")),
    ("/gallery", _("NG gallery")),
    ("/cells", _("Cell lookup")),
    ("/review", _("Review queue")),
    ("/models", _("Models")),
)
"""The header's links: (path, label). A new page adds one line here and one template."""

LOGIN_ERRORS: dict[str, str] = {
    "unknown-token": _("Unknown token."),
    "origin": _("The login form must be sent from this site."),
}
"""Error codes the login redirect may carry; any other value shows nothing (no reflected text)."""
