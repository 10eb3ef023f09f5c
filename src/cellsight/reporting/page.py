"""Pieces shared by every self-contained HTML report (evaluation, line quality).

plotly.js is embedded in the page itself, never loaded from a CDN: inspection PCs are often offline. The
style sheets are package data (`reporting/static/*.css`), read once and inlined into each page.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs


@cache
def stylesheet(name: str) -> str:
    """A style sheet shipped in `cellsight/reporting/static/`, to inline into a self-contained page."""
    return resources.files("cellsight.reporting").joinpath("static", name).read_text(encoding="utf-8")


PAGE_CSS = stylesheet("page.css")
"""The look every report shares (page, headings, tables); each report appends its own rules."""


def escape(value: Any) -> str:
    """HTML-escape any value shown on a page (cell IDs and defect names come from outside)."""
    return html.escape(str(value), quote=True)


def plotly_script_tag() -> str:
    """The whole plotly.js library as one inline <script> for the page head: embed it exactly once."""
    return f"<script type='text/javascript'>{get_plotlyjs()}</script>"


def figure_html(fig: go.Figure, width: int = 560, height: int = 420) -> str:
    """A figure as a <div> plus its plot call, relying on the page's single embedded plotly.js."""
    # Fixed size: a responsive plot sized before the page lays out can end up clipped.
    fig.update_layout(template="plotly_white", width=width, height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50})
    config = {"displaylogo": False, "responsive": False}
    return str(fig.to_html(full_html=False, include_plotlyjs=False, config=config))
