"""Self-contained HTML reports: the evaluation page here, the shared page pieces (`page.py`) that the line's
quality report uses too. Style sheets are package data under `static/`."""

from cellsight.reporting.evaluation import render_html, write_evaluation_html

__all__ = ["render_html", "write_evaluation_html"]
