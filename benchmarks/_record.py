"""Write benchmark results into BENCHMARKS.md: one section per benchmark, with date, machine and command.

Each benchmark owns the text between its markers, so rerunning one never touches the others.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        threads = torch.get_num_threads()
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # torch missing or broken: the section still says what it can
        threads, gpu = -1, "unknown"
    return f"{cpu}, {os.cpu_count()} cores, torch threads {threads}, {gpu}, Python {platform.python_version()}"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def header(title: str) -> str:
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    return (
        f"## {title}\n\n"
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"- machine: {machine()}\n"
        f"- command: `{command}`\n"
        f"- commit: {git_commit()}\n"
        f"- load average at start: {load_average()} (other work on the machine inflates times)\n"
    )


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def write_section(key: str, body: str) -> None:
    """Replace (or append) the section between `<!-- bench:key -->` markers."""
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    block = f"{start}\n{body.rstrip()}\n\n_Load average at the end of the run: {load_average()}._\n{end}"
    empty = "# Benchmarks\n\nEvery section is written by a script under benchmarks/; rerun its command.\n"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else empty
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)


def save_json(name: str, data: object) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, allow_nan=False, default=str) + "\n")
    return path
