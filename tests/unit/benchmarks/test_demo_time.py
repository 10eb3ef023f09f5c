"""benchmarks/demo_time.py: make's recipes run through the tracing shell, and their time lands in the right phase."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from demo_time import TRACING_SHELL, line_summary, phases

# the demo's recipe shapes: one command per line, and a loop that trains each station
MAKEFILE = """demo:
\t: .venv/bin/pip install --quiet -e . ; sleep 0.3
\t: .venv/bin/cellsight synth --station all --out runs/demo/synth
\tfor station in electrode weld; do \\
\t\t: .venv/bin/cellsight train --data runs/demo/synth/$$station || exit 1; sleep 0.2; \\
\tdone
\t: .venv/bin/cellsight line run --config configs/demo-line.yaml ; sleep 0.4
"""


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("bash") is None, reason="needs make and bash")
def test_make_recipes_are_timed_phase_by_phase(tmp_path: Path) -> None:
    (tmp_path / "Makefile").write_text(MAKEFILE)
    shell, trace = tmp_path / "trace-shell", tmp_path / "trace.log"
    shell.write_text(TRACING_SHELL)
    shell.chmod(0o755)
    done = subprocess.run(["make", "demo", f"SHELL={shell}"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "DEMO_TRACE": str(trace)})
    assert done.returncode == 0, done.stderr
    spent = dict(phases(trace.read_text(), time.time()))
    assert list(spent) == ["pip: install cellsight (torch, ray, ...)", "synthesise 3 stations", "train electrode",
                           "train weld", "line run (1,000 cells)"]
    assert spent["pip: install cellsight (torch, ray, ...)"] >= 0.3 and spent["train electrode"] >= 0.2
    assert spent["line run (1,000 cells)"] >= 0.4


def test_the_line_runs_summary_row_is_read_from_its_table() -> None:
    table = ("┃ cells ┃    OK ┃  NG ┃ review ┃ yield ┃ cells/min ┃ late for takt ┃\n"
             "│ 1,000 │   860 │ 103 │     37 │ 86.0% │       301 │             0 │")
    assert line_summary(table) == "1,000 cells, 301 cells/min, 0 late for the takt"
