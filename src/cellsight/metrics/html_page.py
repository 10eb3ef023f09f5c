"""Pieces shared by every self-contained HTML report (evaluation, line quality).

plotly.js is embedded in the page itself, never loaded from a CDN: inspection PCs are often offline.
"""

from __future__ import annotations

import html
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

PAGE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;
 color:#1d2430;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.2em;margin-top:32px;border-bottom:1px solid #d0d5dd;
 padding-bottom:4px}.sub{color:#5a6473;margin-top:0}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d0d5dd;padding:5px 10px;text-align:left}
th{background:#f2f4f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.bad{background:#fde8e8}td.ok{background:#e8f6ec}
"""
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
