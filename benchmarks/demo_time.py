"""`make demo` from a clean clone: the wall time a new user waits, install included.

Clones this repository's HEAD into a temporary folder (no .venv, no runs/) and runs `make demo` there.

    .venv/bin/python benchmarks/demo_time.py   (the venv only names torch and the GPU in the header)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import ROOT, header, write_section


def main() -> None:
    title = header("make demo from a clean clone")
    with tempfile.TemporaryDirectory(prefix="cellsight-demo-") as folder:
        clone = Path(folder) / "cellsight"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        start = time.perf_counter()
        done = subprocess.run(["make", "demo"], cwd=clone, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"make demo failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = [line for line in done.stderr.splitlines() if "Rolled throughput yield" in line or "Final yield" in line]
    takt = yaml.safe_load((ROOT / "configs" / "demo-line.yaml").read_text())["takt_per_minute"]
    body = title + (
        f"\nWall time of `make demo` (venv, pip install from the local wheels, synthetic data, three PatchCore "
        f"trainings, 1,000 cells at takt {takt:g}/min on SQLite, report): **{seconds / 60:.1f} min** (budget 10 min). "
        f"The line alone takes at least 1000 / {takt:g} = {1000 / takt:.1f} min by its takt.\n\n"
        + "\n".join(f"- {line.strip()}" for line in summary) + "\n"
    )
    write_section("demo-time", body)
    print(body)


if __name__ == "__main__":
    main()
