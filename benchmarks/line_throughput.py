"""Line runtime throughput: cells per minute through the three synthetic battery stations, and where the
time goes (image source, decode, code reading, inference, image files, storage), on SQLite and PostgreSQL
in the same process.

    PYTHONPATH=src .venv/bin/python benchmarks/line_throughput.py [--cells 300] [--postgres URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import header, save_json, write_section
from cellsight.data.sources import load_dataset
from cellsight.data.synth import STATIONS, write_station_dataset
from cellsight.detectors.patchcore import PatchCoreSettings
from cellsight.line.config import load_line_config
from cellsight.line.runtime import LineRuntime, LineSummary
from cellsight.storage.store import TraceStore
from cellsight.workflows.train import TrainRequest, train

STAGES = ("source_ms", "decode_ms", "code_ms", "inference_ms", "images_ms", "storage_ms")


def build_line(work: Path, n_train: int) -> dict[str, Path]:
    models = {}
    for station in STATIONS:
        data = write_station_dataset(station, work / "synth", n_train=n_train, n_test_good=4, n_test_per_defect=1,
                                     seed=0)
        models[station] = work / "models" / f"{station}.safetensors"
        request = TrainRequest("patchcore", PatchCoreSettings(ignore_boxes=((0, 0, 0.34, 0.34),)), target=0.01)
        result = train(load_dataset(data), models[station], request)
        print(f"trained {station} in {result.fit_seconds:.1f} s", file=sys.stderr)
    return models


def line_yaml(work: Path, models: dict[str, Path], database: str, name: str) -> Path:
    stations = "\n".join(
        f"  - name: {s}\n    model: {m}\n    source: {{kind: synthetic, station: {s}, defect_rate: 0.05, seed: 1, "
        f"bad_image_rate: 0.002, unreadable_code_rate: 0.003}}"
        for s, m in models.items()
    )
    path = work / f"{name}.yaml"
    path.write_text(f"line: bench-{name}\ndatabase: {database}\noutput_dir: {work / name}\nstations:\n{stations}\n")
    return path


def run_line(config_path: Path, cells: int) -> LineSummary:
    config, sha = load_line_config(config_path)
    with TraceStore.open(config.database) as store:
        return LineRuntime(config, sha, store).run(cells, new_run=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--train", type=int, default=120, help="good training images per station")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cellsight-line-bench-"))
    models = build_line(work, args.train)
    databases = {"SQLite (WAL, synchronous=FULL)": f"sqlite:///{work / 'trace.db'}",
                 "PostgreSQL (local server)": args.postgres}
    rows, results = [], {}
    run_line(line_yaml(work, models, databases["SQLite (WAL, synchronous=FULL)"], "warmup"), 10)
    for index, (label, url) in enumerate(databases.items()):
        summary = run_line(line_yaml(work, models, url, f"db{index}"), args.cells)
        times = summary.times.as_dict()
        inspections = sum(summary.progress.dispositions.values())
        per_cell = {k: times[k] / max(summary.progress.cells, 1) for k in STAGES}
        results[label] = {"cells_per_minute": summary.cells_per_minute, "cells": summary.progress.cells,
                          "elapsed_s": summary.elapsed_s, "ms_per_cell": per_cell, "inspections": inspections}
        rows.append(
            f"| {label} | {summary.progress.cells} | {summary.cells_per_minute:.0f} | "
            + " | ".join(f"{per_cell[k]:.1f}" for k in STAGES) + " |"
        )
        print(rows[-1], file=sys.stderr)
    body = header("Line runtime throughput (3 synthetic battery stations, 256x256, PatchCore)") + (
        f"\n{args.cells} cells per database, no takt (as fast as the line goes), reject-at-once, one process, "
        "one image at a time per station (batch 1: a line inspects each cell as it arrives). Per-cell times are "
        "summed over the cell's stations.\n\n"
        "| store | cells | cells/min | source ms/cell | decode | code read | inference | image files | storage |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    save_json("line_throughput", results)
    if not args.no_record:
        write_section("line-throughput", body)
    print(body)


if __name__ == "__main__":
    main()
