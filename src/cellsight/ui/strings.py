"""Every string the dashboard shows from Python, in one place; `_` marks them for gettext (Babel extracts
`_("...")` from here and from the templates). Until a catalogue is installed, `_` returns the text as is.
"""

from __future__ import annotations


def _(text: str) -> str:
    """The gettext marker: the text is translated where it is shown (templates get the catalogue's `_`)."""
    return text


SHOWN_TRANSLATED = (_("viewer"), _("operator"), _("admin"), _("live"), _("shadow"))
"""Values the templates pass through `_`: roles and deployment kinds."""


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
