"""The demo line's truth table: what `make demo` runs, measured against the synthetic source's truth.

Runs the Makefile's demo steps (synthetic station images, one PatchCore model per station, 1,000 cells
through `configs/demo-line.yaml` at its takt on SQLite) and writes escape and overkill against truth per
station and for the line, the confusion matrix, the audit-sample estimate beside the full truth, where
"unknown" defect names come from, and the cost of quality and energy, to BENCHMARKS.md.

    PYTHONPATH=src .venv/bin/python benchmarks/demo_truth.py [--reuse-models]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import ROOT, header, write_section
from cellsight.line.config import LineConfig, load_line_config
from cellsight.line.truth import TruthRates
from cellsight.line.truth_report import TruthCosts, naming_sentence, run_truth_costs
from cellsight.metrics.operating_point import RateWithInterval
from cellsight.storage.store import TraceStore
from demo_time import line_summary

CONFIG = ROOT / "configs" / "demo-line.yaml"
DEMO = ROOT / "runs" / "demo"


def makefile_line(name: str) -> str:
    """A variable of the Makefile (so this runs exactly what `make demo` runs)."""
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith(f"{name} :="):
            return line.split(":=", 1)[1].strip()
    raise SystemExit(f"Makefile has no {name}")


def cellsight(*args: str) -> str:
    """Run a cellsight command as `make demo` does; its output (stdout and stderr)."""
    done = subprocess.run([sys.executable, "-m", "cellsight", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cellsight {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout + "\n" + done.stderr


def build(reuse: bool) -> None:
    stations = makefile_line("DEMO_STATIONS").split()
    if reuse and all((DEMO / "models" / f"{s}.safetensors").is_file() for s in stations):
        return
    cellsight("synth", "--station", "all", *shlex.split(makefile_line("DEMO_SYNTH")), "--out", str(DEMO / "synth"),
              "--overwrite")
    for station in stations:
        cellsight("train", *shlex.split(makefile_line("DEMO_TRAIN")), "--data", str(DEMO / "synth" / station),
                  "--out", str(DEMO / "models" / f"{station}.safetensors"))


def _rate(rate: RateWithInterval) -> str:
    if not rate.n:
        return "n/a"
    return f"{100 * rate.rate:.2f}% ({rate.count}/{rate.n}; {100 * rate.low:.2f}–{100 * rate.high:.2f}%)"


def _row(r: TruthRates) -> str:
    c = r.confusion
    return (f"| {r.scope} | {r.with_truth}/{r.inspected} | {_rate(r.escape)} | {_rate(r.overkill)} | "
            f"{_rate(r.good_to_review)} | {' / '.join(map(str, c.good))} | {' / '.join(map(str, c.defective))} |")


def body(report: TruthCosts, seconds: float, config: LineConfig, ran: str) -> str:
    s = report.sampled
    mode = "pipelined" if config.pipelined else "sequential"
    lines = [
        f"\n1,000 cells through `configs/demo-line.yaml` (takt {config.takt_per_minute:g}/min, {mode}, reject at "
        f"once, review band 0.47-0.5, synthetic defect rates 2.5 / 2 / 1.5%, bad images and smudged codes 0.2% "
        f"each per station; models trained as `make demo` trains them: `{makefile_line('DEMO_SYNTH')}`); line run "
        f"{seconds / 60:.1f} min{ran}. Truth: the class the synthetic source rendered, stored with every "
        "inspection.\n",
        "| scope | with truth | escape (defective passed) | overkill (good NG) | good sent to review "
        "| good: OK / NG / REVIEW | defective: OK / NG / REVIEW |",
        "|---|---|---|---|---|---|---|",
        *(_row(r) for r in (*report.stations, report.line)),
        "",
        f"From samples alone (what a real line knows): the audit of {s.audited} of {s.shipped} shipped cells "
        f"(5% drawn) found {s.found_defective} defective ({_rate(s.outgoing_defective)}); every rejected cell was "
        f"looked at again ({s.reviewed} of {s.rejected}) and {s.found_good} were good. Estimated line escape "
        + (f"{100 * s.escape_rate[0]:.1f}% (≈95% {100 * s.escape_rate[1]:.1f}–{100 * s.escape_rate[2]:.1f}%)"
           if s.escape_rate else "n/a")
        + ", overkill "
        + (f"{100 * s.overkill_rate[0]:.1f}% (≈95% {100 * s.overkill_rate[1]:.1f}–{100 * s.overkill_rate[2]:.1f}%)"
           if s.overkill_rate else "n/a")
        + f", against the full truth's {_rate(report.line.escape)} and {_rate(report.line.overkill)}.",
        "",
        f"Defect names: {naming_sentence(report.naming)}.",
    ]
    if report.run_costs is not None:
        r = report.run_costs
        lines += [
            "",
            f"Cost of quality ({report.currency}, cost model in the line file): {r.caught} defective cells rejected "
            f"before the end-of-line test avoided {r.scrap_value_avoided:,.2f} of scrap value, "
            f"{r.energy_avoided_kwh:,.1f} kWh and {r.co2e_avoided_kg:,.1f} kg CO2e; {r.escapes} escapes cost "
            f"{r.escape_cost:,.2f}, {r.false_calls} false calls {r.false_call_cost:,.2f}, {r.reviews} reviews "
            f"{r.review_cost:,.2f}: cost of quality {r.cost_of_quality:,.2f}, net {r.net_saving:,.2f} per 1,000 cells.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse-models", action="store_true", help="keep runs/demo/models when all three exist")
    args = parser.parse_args()
    title = header("Demo line against truth (make demo)")
    build(args.reuse_models)
    config, _ = load_line_config(CONFIG)
    for suffix in ("", "-wal", "-shm"):
        (DEMO / f"trace.db{suffix}").unlink(missing_ok=True)
    start = time.perf_counter()
    output = cellsight("line", "run", "--config", str(CONFIG))
    seconds = time.perf_counter() - start
    with TraceStore.open(config.database) as store:
        run = store.latest_run(config.line)
        assert run is not None
        report = run_truth_costs(store, config, run.id)
    summary = line_summary(output)
    text = title + body(report, seconds, config, f" ({summary})" if summary else "")
    write_section("demo-truth", text)
    print(text)


if __name__ == "__main__":
    main()
