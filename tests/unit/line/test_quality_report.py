"""The line quality report: terminal summary, self-contained HTML, strict JSON."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs
from rich.console import Console

from cellsight.line.quality import genealogy, line_quality
from cellsight.line.quality_report import (
    print_genealogy,
    print_quality,
    render_quality_html,
    write_quality_html,
    write_quality_json,
)
from cellsight.storage.records import CellRecord, Disposition, InspectionRecord
from cellsight.types import Verdict

STATIONS = ("cosmetic", "el", "ir")
Line = tuple[list[InspectionRecord], list[CellRecord]]


def _console() -> Console:
    return Console(record=True, width=140, color_system=None)


def test_terminal_summary_shows_the_figures(line_records: Line) -> None:
    inspections, cells = line_records
    console = _console()
    print_quality(line_quality(inspections, cells, STATIONS), console, pareto_top=3)
    text = console.export_text()
    assert "88.0% (80.2%–93.0%)" in text  # cosmetic FPY with its Wilson interval
    assert "Rolled throughput yield: 75.0%" in text
    assert "75 OK / 100 cells, 22 NG, 3 REVIEW" in text
    assert "scratch" in text and "hotspot" in text and "finger" not in text  # top 3 only
    assert "run 1 #0-49" in text and "above UCL" in text and "below LCL" in text
    assert "20.0 ms" in text


def test_terminal_names_the_side_of_a_run(make_cell: Callable[..., CellRecord]) -> None:
    cells = [
        make_cell(f"C{i}", Disposition.NG if i % 10 == 0 and i >= 80 else Disposition.OK, sequence=i)
        for i in range(160)
    ]  # 8 subgroups with no reject, then 8 with one: two runs
    console = _console()
    print_quality(line_quality([], cells, STATIONS, subgroup_size=10), console)
    text = console.export_text()
    assert text.count("run of ≥8 below centre") == 8 and text.count("run of ≥8 above centre") == 8


def test_terminal_summary_of_nothing_says_so() -> None:
    console = _console()
    print_quality(line_quality([], [], STATIONS), console)
    text = console.export_text()
    assert text.count("undefined (no cells)") == 4  # three stations and the final yield
    assert "Rolled throughput yield: n/a" in text
    assert "no NG or ERROR inspections" in text and "no finished cells" in text


def test_terminal_genealogy(line_records: Line) -> None:
    inspections, cells = line_records
    console = _console()
    print_genealogy(genealogy("C024", inspections, cells), console)
    print_genealogy(genealogy("missing", inspections, cells), console)
    text = console.export_text()
    assert "Genealogy of C024" in text and "inspection_failed" in text and "REVIEW at ir" in text
    assert "No records for cell 'missing'" in text


def test_html_is_self_contained_with_three_charts(line_records: Line, tmp_path: Path) -> None:
    inspections, cells = line_records
    quality = line_quality(inspections, cells, STATIONS)
    path = write_quality_html(quality, tmp_path / "out" / "quality.html", genealogy("C024", inspections, cells))
    text = path.read_text(encoding="utf-8")
    assert text.count(get_plotlyjs()[:500]) == 1  # plotly.js embedded exactly once
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, flags=re.IGNORECASE)  # nothing loaded from outside
    assert not re.search(r"<link[^>]*https?://", text, flags=re.IGNORECASE)
    assert text.count("Plotly.newPlot") == 3  # FPY, Pareto, p-chart
    assert "FPY per station" in text and "Defect Pareto" in text and "p-chart of the reject rate" in text
    assert "Genealogy of C024" in text and "inspection_failed" in text
    assert "75.0%" in text and "88.0%" in text


def test_html_escapes_names_from_outside(make_inspection: Callable[..., InspectionRecord]) -> None:
    evil = "</script><script>alert(1)</script>"
    records = [make_inspection(evil, "el", Verdict.NG, defect=evil)]
    text = render_quality_html(line_quality(records, [], ["el"]), genealogy(evil, records, []))
    assert "<script>alert(1)" not in text
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in text


def test_html_of_nothing_explains_instead_of_plotting() -> None:
    text = render_quality_html(line_quality([], [], STATIONS))
    assert "Plotly.newPlot" not in text
    assert "FPY undefined" in text and "nothing to rank" in text and "no p-chart" in text


def test_json_file_is_strict_and_carries_the_genealogy(line_records: Line, tmp_path: Path) -> None:
    inspections, cells = line_records
    quality = line_quality(inspections, cells, STATIONS)
    path = write_quality_json(quality, tmp_path / "q.json", genealogy("C024", inspections, cells))
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["rty"] == pytest.approx(0.75) and data["final"]["cells"] == 100
    history = data["genealogy"]
    assert history["cell_id"] == "C024" and [r["station"] for r in history["inspections"]] == list(STATIONS)
    assert history["inspections"][-1]["score"] is None  # the ERROR's NaN score
    assert history["dispositions"][0]["finished_at"] == "2025-03-01T08:24:30"


def test_html_opens_standalone_in_a_headless_browser(line_records: Line, tmp_path: Path, chromium: str) -> None:
    inspections, cells = line_records
    path = write_quality_html(line_quality(inspections, cells, STATIONS), tmp_path / "quality.html")
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    assert dom.count('class="main-svg"') >= 3  # every chart drawn by the embedded plotly.js
