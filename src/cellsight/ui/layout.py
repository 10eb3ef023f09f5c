"""The page shell shared by every dashboard page: navigation, styles, the offline plotly.js and our script."""

from __future__ import annotations

import html
from typing import Any

from cellsight.service.auth import Principal

NAV = (("/", "Line overview"), ("/gallery", "NG gallery"), ("/cells", "Cell lookup"), ("/review", "Review queue"),
       ("/models", "Models"))

CSS = """
*{box-sizing:border-box}body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;
 background:#f6f7f9}header{background:#1d2430;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center}
header b{font-size:1.1em;margin-right:12px}
header a{color:#cfd6e1;text-decoration:none;padding:4px 8px;border-radius:4px}
header a.on{background:#3b4658;color:#fff}header .who{margin-left:auto;color:#9aa4b2;font-size:.9em}
main{padding:16px 24px;max-width:1400px}h1{font-size:1.4em;margin:8px 0 4px}.sub{color:#5a6473;margin:0 0 12px}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#fff;border:1px solid #d0d5dd;border-radius:6px;
 padding:10px;width:250px;font-size:.88em}
.card img{width:100%;border-radius:4px;display:block;background:#eee;min-height:60px}
.card .v{font-weight:bold}.NG{color:#b42318}.ERROR{color:#b54708}.OK{color:#067647}
.panel{background:#fff;border:1px solid #d0d5dd;border-radius:6px;padding:12px;margin-bottom:16px}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plot{min-width:380px}
table{border-collapse:collapse;background:#fff;font-size:.9em}
td,th{border:1px solid #d0d5dd;padding:4px 8px;text-align:left}
th{background:#f2f4f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.kpi{display:inline-block;margin-right:28px}.kpi b{font-size:1.6em;display:block}
button{padding:6px 10px;border-radius:4px;border:1px solid #98a2b3;background:#fff;cursor:pointer}
button.confirm{border-color:#b42318;color:#b42318}button.false{border-color:#067647;color:#067647}
input[type=text],input[type=password]{padding:6px;border:1px solid #98a2b3;border-radius:4px}
.note{color:#5a6473;font-size:.9em}.error{color:#b42318}
"""


def escape(value: Any) -> str:
    """Every value from outside (cell IDs, defect classes, notes) passes here before it reaches a page."""
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: str, who: Principal | None, active: str = "", plotly: bool = False,
         settings: str = "", script: str = "") -> str:
    """A whole page; `settings` (window.CS) runs before the dashboard script, `script` after it."""
    nav = "".join(
        f"<a href='{href}' class='{'on' if href == active else ''}'>{escape(label)}</a>" for href, label in NAV
    ) if who is not None else ""
    user = (f"<span class='who'>{escape(who.name)} ({who.role.label}) · <a href='/logout'>log out</a></span>"
            if who is not None else "")
    head = "<script src='/static/plotly.min.js'></script>" if plotly else ""
    tail = (f"<script>{settings}</script><script src='/static/dashboard.js'></script><script>{script}</script>"
            if script else "")
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)} · cellsight</title>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style>{head}</head>"
        f"<body><header><b>cellsight</b>{nav}{user}</header><main>{body}</main>{tail}</body></html>"
    )
