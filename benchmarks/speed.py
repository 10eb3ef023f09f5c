"""Speed side by side: fit time, peak memory, throughput and latency, and how PatchCore's fit grows.

Each measurement runs in a fresh child process, so peak memory (max RSS) is that method's alone.
anomalib's PaDiM and PatchCore run through `benchmarks/anomalib_runner.py` in `.venv-anomalib` on the same
images (skipped when that environment is missing: `make anomalib-env`). Results are printed as ratios.
PatchCore has one row per CPU runtime offered (ONNX Runtime, the default; OpenVINO where installed;
TorchScript) and one for the opt-in int8 backbone (ONNX Runtime, `cellsight export --int8`), and the
exactness table scores the whole ELPV test split and a synthetic weld station with each runtime and
precision against the TorchScript reference (same model, same threshold): verdict agreement, score
difference, AUROC and its change.

    .venv/bin/python benchmarks/speed.py                      # ELPV table + scaling 100/1,000/10,000
    .venv/bin/python benchmarks/speed.py --scaling 100 1000   # a shorter scaling run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import ROOT, header, save_json, write_section

ANOMALIB_PYTHON = ROOT / ".venv-anomalib" / "bin" / "python"
EXACTNESS_SETS = ("elpv", "synthetic weld")


def child_measure(detector: str, n_fit: int, options: dict[str, Any], threads: int) -> dict[str, Any]:
    """Runs inside the child: fit on n_fit good images, then time predict at batch 1 and 16."""
    import torch

    from cellsight.data import LazyImages, load_dataset
    from cellsight.detectors.base import TrainingSet
    from cellsight.detectors.registry import detector_class

    torch.set_num_threads(threads)
    dataset = load_dataset("elpv")
    goods = dataset.select(split="train", defect_class="good").paths
    images = _Augmented(LazyImages(goods), n_fit)
    options = dict(options)
    precision = options.pop("precision", "float32")
    model = detector_class(detector)(**options)
    started = time.perf_counter()
    model.fit(TrainingSet.good(images))
    if precision == "int8":  # quantised after the fit, calibrated on fitted good cells: counted in the fit
        _use_int8(model, [images[i] for i in range(min(INT8_CALIBRATION, len(images)))])
    fit_seconds = time.perf_counter() - started
    test = [LazyImages(dataset.select(split="test").paths)[i] for i in range(64)]
    model.score(test[:16])  # warm-up (first-call tracing, caches)
    started = time.perf_counter()
    for start in range(0, 64, 16):
        model.score(test[start : start + 16])
    batched = 64 / (time.perf_counter() - started)
    latencies = []
    for image in test[:40]:
        t = time.perf_counter()
        model.score([image])
        latencies.append((time.perf_counter() - t) * 1000.0)
    bank = getattr(model, "memory_bank", None)
    runtime = options.get("runtime")
    runtime = runtime if precision == "float32" else f"{runtime} {precision}"
    return {
        "detector": detector if runtime is None else f"{detector} ({runtime})",
        "n_fit": n_fit, "fit_seconds": fit_seconds,
        "images_per_s_batch16": batched, "images_per_s_batch1": 1000.0 / float(np.mean(latencies)),
        "latency_ms_p50": float(np.percentile(latencies, 50)), "latency_ms_p99": float(np.percentile(latencies, 99)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bank_rows": None if bank is None else int(bank.shape[0]),
    }


class _Augmented:
    """n images cycling through the good cells, flipped/rotated on later cycles: a larger good set."""

    def __init__(self, base: Any, n: int) -> None:
        self.base, self.n = base, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> np.ndarray:
        cycle, i = divmod(index, len(self.base))
        image = self.base[i]
        image = np.rot90(image, cycle % 4) if cycle % 8 < 4 else np.fliplr(np.rot90(image, cycle % 4))
        return np.ascontiguousarray(image)


INT8_CALIBRATION = 32
"""Good cells an int8 backbone is calibrated on (the first fitted ones: the station's good images)."""


def _use_int8(model: Any, calibration: list[np.ndarray]) -> None:
    """Run `model`'s backbone as its feature graph quantised to int8 (`cellsight export --int8`'s graph)."""
    from cellsight.features.quantize import quantize_features

    model.use_runtime("onnx")
    model.use_backbone_graph(quantize_features(model.extractor.onnx_bytes(), model.graph_pixels(calibration)))


def _exactness_set(name: str, n_fit: int) -> tuple[list[Any], list[Any], list[Any], np.ndarray, dict[str, Any]]:
    """(fit goods, held-out goods, test images, test labels, PatchCore options) of a set in the table.

    "elpv": the real set (its test split). "synthetic weld": the synthetic weld station of `make demo`
    (its code label left out by an ignore box, as the demo trains it), 100 good + 100 defective test cells.
    """
    from cellsight.data import LazyImages, load_dataset

    if name == "elpv":
        dataset = load_dataset("elpv")
        goods = dataset.select(split="train", defect_class="good").paths
        test = dataset.select(split="test")
        return (list(LazyImages(goods[:n_fit])), list(LazyImages(goods[n_fit : n_fit + 100])),
                list(LazyImages(test.paths)), np.array(test.labels), {})
    from datetime import date

    from cellsight.data.synth import check_station, make_cell_id, render_cell

    classes = check_station("weld")

    def cell(seed: int, defect: str | None = None) -> np.ndarray:
        return render_cell("weld", make_cell_id(seed, day=date(2026, 1, 1)), seed, defect).image

    fit = [cell(seed) for seed in range(n_fit)]
    held_out = [cell(seed) for seed in range(n_fit, n_fit + 100)]
    test_good = [cell(seed) for seed in range(n_fit + 100, n_fit + 200)]
    test_bad = [cell(seed, classes[seed % len(classes)]) for seed in range(n_fit + 200, n_fit + 300)]
    labels = np.array([0] * len(test_good) + [1] * len(test_bad))
    return fit, held_out, test_good + test_bad, labels, {"ignore_boxes": [[0.0, 0.0, 0.34, 0.34]]}


def child_exactness(n_fit: int, threads: int, runtimes: list[str], set_name: str = "elpv") -> list[dict[str, Any]]:
    """One PatchCore, a set's test images scored by every runtime and precision; TorchScript is the reference."""
    import torch

    from cellsight.calibration import calibrate_for_overkill
    from cellsight.detectors.base import MapSize, TrainingSet
    from cellsight.detectors.patchcore import PatchCore
    from cellsight.metrics.image_metrics import image_auroc

    torch.set_num_threads(threads)
    fit, held_out, images, labels, options = _exactness_set(set_name, n_fit)
    model = PatchCore(runtime="torch", **options).fit(TrainingSet.good(fit))
    threshold = calibrate_for_overkill(model.score(held_out, MapSize.NONE).scores, 0.05).threshold
    reference = model.score(images, MapSize.NONE).scores
    rows = []
    for runtime, precision in [("torch", "float32"), *((r, "float32") for r in runtimes), ("onnx", "int8")]:
        if precision == "int8":
            _use_int8(model, fit[:INT8_CALIBRATION])
        else:
            model.use_runtime(runtime)  # type: ignore[arg-type]
        scores = model.score(images, MapSize.NONE).scores
        diff = np.abs(scores.astype(np.float64) - reference)
        rows.append({"set": set_name, "runtime": runtime, "precision": precision, "images": len(images),
                     "verdicts_agree": float(np.mean((scores >= threshold) == (reference >= threshold))),
                     "max_diff_over_threshold": float(diff.max() / threshold),
                     "auroc": image_auroc(labels, scores),
                     "auroc_delta": image_auroc(labels, scores) - image_auroc(labels, reference)})
    return rows


def run_child(detector: str, n_fit: int, options: dict[str, Any], threads: int) -> Any:
    command = [sys.executable, __file__, "--child", json.dumps([detector, n_fit, options, threads])]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_runtimes() -> list[str]:
    """The CPU runtimes this installation offers besides the TorchScript reference."""
    from cellsight.features.onnx_backbone import onnxruntime_version
    from cellsight.features.openvino_backbone import openvino_version

    return [name for name, there in (("onnx", onnxruntime_version()), ("openvino", openvino_version())) if there]


def run_anomalib(
    n_fit: int, threads: int, python: Path = ANOMALIB_PYTHON, models: tuple[str, ...] = ("padim", "patchcore")
) -> list[dict[str, Any]]:
    from cellsight.data import load_dataset
    from cellsight.features.backbones import backbone_spec

    dataset = load_dataset("elpv")
    goods = dataset.select(split="train", defect_class="good").paths[:n_fit]
    test = dataset.select(split="test").paths[:64]
    spec = backbone_spec("tf_efficientnet_lite0")
    rows = []
    chosen = [(m, extra) for m, extra in (("padim", {}), ("patchcore", {"coreset_sampling_ratio": 0.1})) if m in models]
    for model, extra in chosen:
        spec_json = {
            "backbone": "tf_efficientnet_lite0", "layers": ["blocks.2", "blocks.4"], "image_size": 256,
            "mean": list(spec.mean), "std": list(spec.std), "fit": [str(p) for p in goods],
            "calibrate": [str(p) for p in test[:8]], "test": [str(p) for p in test], "patchcore": extra,
            "threads": threads, "batch_size": 16,  # the batch cellsight's rows are timed at
        }
        path, out = ROOT / "runs" / f"speed-spec-{model}.json", ROOT / "runs" / f"speed-{model}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(spec_json))
        done = subprocess.run([str(python), str(ROOT / "benchmarks" / "anomalib_runner.py"), "--spec",
                               str(path), "--out", str(out), "--model", model], capture_output=True, text=True)
        if done.returncode != 0:  # reported as a failed row, never dropped silently
            last = [line for line in done.stderr.splitlines() if "Error" in line and "oneMKL" not in line]
            rows.append({"detector": f"anomalib {model}", "failed": last[-1] if last else f"exit {done.returncode}"})
            continue
        data = json.loads(out.read_text())["models"][model]
        rows.append({"detector": f"anomalib {model}", "n_fit": len(goods), "fit_seconds": data["fit_seconds"],
                     "images_per_s_batch16": data["predict_images_per_s"],
                     "images_per_s_batch1": 1000.0 / data["latency_ms_p50"] if data.get("latency_ms_p50") else None,
                     "latency_ms_p50": data.get("latency_ms_p50"), "latency_ms_p99": data.get("latency_ms_p99"),
                     "peak_rss_mb": data.get("peak_rss_mb"), "bank_rows": None, "config": data.get("config")})
    return rows


def _fmt(value: Any, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-fit", type=int, default=100, help="good images for the side-by-side table")
    parser.add_argument("--scaling", type=int, nargs="*", default=[100, 1000, 10000])
    parser.add_argument("--skip-anomalib", action="store_true")
    parser.add_argument("--anomalib-python", type=Path, default=ANOMALIB_PYTHON,
                        help="the python of .venv-anomalib (a worktree can use the main checkout's)")
    parser.add_argument("--anomalib-models", nargs="+", default=["padim", "patchcore"])
    args = parser.parse_args()
    if args.child:
        detector, n_fit, options, threads = json.loads(args.child)
        if detector == "exactness":
            print(json.dumps(child_exactness(n_fit, threads, options["runtimes"], options["set"])))
        else:
            print(json.dumps(child_measure(detector, n_fit, options, threads)))
        return

    title = header("Speed side by side (ELPV cells, 256x256)")  # now: its load average is the start's
    runtimes = cpu_runtimes()
    table = [run_child("patchcore", args.n_fit, {"runtime": r}, args.threads) for r in [*runtimes, "torch"]]
    table.append(run_child("patchcore", args.n_fit, {"runtime": "onnx", "precision": "int8"}, args.threads))
    table.append(run_child("classical", args.n_fit, {}, args.threads))
    if not args.skip_anomalib and args.anomalib_python.exists():
        table += run_anomalib(args.n_fit, args.threads, args.anomalib_python, tuple(args.anomalib_models))
    exactness = [row for name in EXACTNESS_SETS
                 for row in run_child("exactness", args.n_fit, {"runtimes": runtimes, "set": name}, args.threads)]
    scaling = [run_child("patchcore", n, {}, args.threads) for n in args.scaling]
    save_json("speed", {"threads": args.threads, "table": table, "exactness": exactness, "scaling": scaling})

    reference = next((r for r in table if r["detector"] == "anomalib patchcore" and "failed" not in r), None)
    lines = [title,
             f"Fit on {args.n_fit} good cells (anomalib PatchCore at its default 10% coreset), predict on 64 test "
             "cells (decoded beforehand), at batch 16 and one by one (batch 1, latency percentiles over 40 calls). "
             f"Every row, anomalib's too, runs with {args.threads} threads, in its own process (peak RSS is "
             "that method's), one after another in this run on this machine, which is shared with other work "
             "(see the load averages). Ratios are against anomalib PatchCore in this run.", "",
             "| method | fit (s) | images/s batch 16 | images/s batch 1 | latency p50 / p99 (ms) | peak RSS (MB) |"
             " fit speed-up | predict speed-up |", "|---|---|---|---|---|---|---|---|"]
    for row in table:
        if "failed" in row:
            lines.append(f"| {row['detector']} | failed: {row['failed'][:160]} | | | | | | |")
            continue
        fit_ratio = predict_ratio = ""
        if reference is not None:
            fit_ratio = f"{reference['fit_seconds'] / row['fit_seconds']:.1f}x"
            predict_ratio = f"{row['images_per_s_batch16'] / reference['images_per_s_batch16']:.1f}x"
        lines.append(
            f"| {row['detector']} | {_fmt(row['fit_seconds'])} | {_fmt(row['images_per_s_batch16'])} | "
            f"{_fmt(row['images_per_s_batch1'])} | {_fmt(row['latency_ms_p50'])} / {_fmt(row['latency_ms_p99'])} | "
            f"{_fmt(row['peak_rss_mb'], 0)} | {fit_ratio} | {predict_ratio} |")
    lines += ["", f"Exactness: per set one PatchCore (fitted on {args.n_fit} good cells, threshold for 5% overkill "
              "on 100 held-out good cells), its test cells scored by each runtime and precision; the reference is "
              "TorchScript with pooling in eager torch. ELPV: the real test split; synthetic weld: the demo's weld "
              f"station, 100 good + 100 defective cells. int8: the ONNX feature graph quantised (QDQ, "
              f"`cellsight export --int8`), calibrated on {INT8_CALIBRATION} of the fitted good cells; opt-in "
              "only, a default only where verdicts agree on >= 99.9% and AUROC moves <= 0.002 on every set.", "",
              "| set | runtime | precision | test images | verdicts agreeing with the reference | "
              "max score diff / threshold | image AUROC | AUROC delta |", "|---|---|---|---|---|---|---|---|"]
    for row in exactness:
        lines.append(f"| {row['set']} | {row['runtime']} | {row['precision']} | {row['images']} | "
                     f"{100 * row['verdicts_agree']:.2f}% | {row['max_diff_over_threshold']:.1e} | "
                     f"{row['auroc']:.4f} | {row['auroc_delta']:+.4f} |")
    lines += ["", "PatchCore fit as the good set grows (cells beyond 1,131 are flips/rotations of the real ones):", "",
              "| good images | fit (s) | s per 1,000 images | memory bank rows | peak RSS (MB) |",
              "|---|---|---|---|---|"]
    for row in scaling:
        per_thousand = row["fit_seconds"] / row["n_fit"] * 1000
        lines.append(f"| {row['n_fit']} | {_fmt(row['fit_seconds'])} | {_fmt(per_thousand)} | "
                     f"{row['bank_rows']} | {_fmt(row['peak_rss_mb'], 0)} |")
    write_section("speed", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
