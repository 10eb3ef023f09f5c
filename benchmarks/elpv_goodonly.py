"""ELPV good-only benchmark: cellsight's detectors beside anomalib's PaDiM and PatchCore, in one run.

Protocol (identical for every method): fit on the probability-0 train cells minus a seeded 15% held out
for calibration (the `cellsight train` default); threshold set for 5% overkill on those held-out good
cells; test on all 654 test cells, defective = probability >= 0.5. One calibration and metrics code
path scores every method, from the raw scores each produces.

    .venv/bin/python benchmarks/elpv_goodonly.py            # ours, plus anomalib if .venv-anomalib exists
    make anomalib-env                                      # optional: the anomalib environment
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import ROOT, header, save_json, write_section
from cellsight.calibration import calibrate_for_overkill
from cellsight.data import LazyImages, load_dataset
from cellsight.detectors.base import AnyDetector, TrainingSet, make_predictions
from cellsight.detectors.registry import detector_class
from cellsight.features.backbones import backbone_spec
from cellsight.metrics import average_precision, image_auroc, operating_point
from cellsight.workflows.train import calibration_split

TARGET_OVERKILL = 0.05
ANOMALIB_PYTHON = ROOT / ".venv-anomalib" / "bin" / "python"


def score_all(detector: AnyDetector, images: LazyImages, batch: int = 16) -> tuple[np.ndarray, float]:
    """Raw scores and throughput (images/s, decode included) at the given batch size."""
    scores = []
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        chunk = [images[i] for i in range(start, min(start + batch, len(images)))]
        scores.append(detector.score(chunk).scores)  # input-size maps too, as inspection makes them
    elapsed = time.perf_counter() - started
    return np.concatenate(scores), len(images) / elapsed


def summarise(name: str, calib: np.ndarray, test: np.ndarray, labels: list[int], classes: list[str],
              extra: dict[str, Any]) -> dict[str, Any]:
    calibration = calibrate_for_overkill(calib, TARGET_OVERKILL)
    predictions = make_predictions(calibration, test, [np.zeros((1, 1), np.float32)] * len(test), 0.0)
    op = operating_point(labels, [p.verdict for p in predictions], classes)
    return {
        "method": name,
        "image_auroc": image_auroc(labels, test),
        "image_ap": average_precision(labels, test),
        "escape": op.escape.describe(),
        "overkill": op.overkill.describe(),
        "escape_rate": op.escape.rate,
        "overkill_rate": op.overkill.rate,
        "recall_per_class": {k: v.describe() for k, v in op.recall_per_class.items()},
        **extra,
    }


def run_ours(name: str, options: dict[str, Any], fit_paths: list[Path], calib: LazyImages, test: LazyImages,
             labels: list[int], classes: list[str]) -> dict[str, Any]:
    detector = detector_class(name)(**options)
    started = time.perf_counter()
    detector.fit(TrainingSet.good(LazyImages(fit_paths)))
    fit_seconds = time.perf_counter() - started
    calib_scores, _ = score_all(detector, calib)
    test_scores, ips = score_all(detector, test)
    latency = []
    for i in range(20):
        t = time.perf_counter()
        detector.score([test[i]])
        latency.append((time.perf_counter() - t) * 1000)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{name}: fit {fit_seconds:.1f} s, {ips:.1f} images/s", flush=True)
    return summarise(f"cellsight {name}", calib_scores, test_scores, labels, classes, {
        "fit_seconds": fit_seconds, "fit_images": len(fit_paths), "images_per_s": ips,
        "latency_ms_p50_batch1": float(np.median(latency)),
        "peak_rss_mb_process": rss, "config": detector.config()["settings"],
    })


def run_anomalib(fit_paths: list[Path], calib: list[Path], test: list[Path], labels: list[int],
                 classes: list[str], models: list[str], patchcore: dict[str, Any]) -> list[dict[str, Any]]:
    spec_backbone = backbone_spec("tf_efficientnet_lite0")
    spec = {
        "backbone": "tf_efficientnet_lite0", "layers": ["blocks.2", "blocks.4"], "image_size": 256,
        "mean": list(spec_backbone.mean), "std": list(spec_backbone.std),
        "fit": [str(p) for p in fit_paths], "calibrate": [str(p) for p in calib], "test": [str(p) for p in test],
        "patchcore": patchcore, "threads": torch.get_num_threads(),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        command = [str(ANOMALIB_PYTHON), str(ROOT / "benchmarks" / "anomalib_runner.py"), "--spec", str(spec_path),
                   "--out", str(out_path)]
        for model in models:
            command += ["--model", model]
        subprocess.run(command, check=True)
        result = json.loads(out_path.read_text())
    for model, data in result["models"].items():
        rows.append(summarise(f"anomalib {result.get('anomalib_version', '')} {model}",
                              np.asarray(data["calibrate_scores"]), np.asarray(data["test_scores"]), labels, classes,
                              {"fit_seconds": data["fit_seconds"], "images_per_s": data["predict_images_per_s"],
                               "fit_images": (data.get("config") or {}).get("fit_images_used", len(fit_paths)),
                               "latency_ms_p50_batch1": data.get("latency_ms_p50"),
                               "peak_rss_mb_process": data.get("peak_rss_mb"), "config": data.get("config")}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-anomalib", action="store_true")
    parser.add_argument("--with-exact-search", action="store_true",
                        help="add a PatchCore row with exact (flat) neighbour search: the accuracy cost of HNSW")
    parser.add_argument("--anomalib-models", nargs="+", default=["padim", "patchcore"])
    parser.add_argument("--anomalib-coreset-ratio", type=float, default=0.1,
                        help="anomalib PatchCore coreset ratio (0.1 is its default)")
    parser.add_argument("--anomalib-max-fit-seconds", type=float, default=180.0,
                        help="anomalib PatchCore fits on the largest evenly spaced subset of the fit images that "
                             "its own coreset timing predicts will finish in this time (all ~960 would take ~37 h)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = load_dataset("elpv")
    split = calibration_split(dataset, val_fraction=0.15, seed=0)
    test = dataset.select(split="test")
    labels = test.labels
    classes = [item.defect_class for item in test]
    calib_images, test_images = LazyImages(split.good.paths), LazyImages(test.paths)
    rows = [
        run_ours("patchcore", {}, split.fit.paths, calib_images, test_images, labels, classes),
        run_ours("classical", {}, split.fit.paths, calib_images, test_images, labels, classes),
    ]
    if args.with_exact_search:
        exact = run_ours("patchcore", {"search": "exact"}, split.fit.paths, calib_images, test_images, labels,
                         classes)
        exact["method"] += " (exact search)"
        rows.insert(1, exact)
    if not args.skip_anomalib and ANOMALIB_PYTHON.exists():
        rows += run_anomalib(split.fit.paths, split.good.paths, test.paths, labels, classes, args.anomalib_models,
                             {"coreset_sampling_ratio": args.anomalib_coreset_ratio, "num_neighbors": 9,
                              "max_fit_seconds": args.anomalib_max_fit_seconds})
    elif not args.skip_anomalib:
        print("anomalib environment missing (make anomalib-env): anomalib rows skipped", flush=True)
    with_anomalib = any(row["method"].startswith("anomalib") for row in rows)
    key = "elpv_goodonly" if with_anomalib else "elpv_goodonly_cellsight_only"
    save_json(key, {"rows": rows, "n_fit": len(split.fit), "n_calibration": len(split.good),
                                "n_test": len(test), "n_test_defective": int(sum(labels))})
    lines = [
        header("ELPV good-only: cellsight vs anomalib" if with_anomalib else "ELPV good-only: cellsight alone"),
        f"Fit on {len(split.fit)} probability-0 train cells, threshold for {TARGET_OVERKILL:.0%} overkill on "
        f"{len(split.good)} held-out good cells, test on {len(test)} cells ({sum(labels)} defective, "
        "probability >= 0.5). Images resized to 256x256. Throughput: batch 16, decode included, same process.",
        "",
        "| method | image AUROC | AP | escape at 5% overkill target | overkill on test | fit images | fit (s) |"
        " images/s | latency p50 batch 1 (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        latency = row.get("latency_ms_p50_batch1")
        lines.append(
            f"| {row['method']} | {row['image_auroc']:.4f} | {row['image_ap']:.4f} | {row['escape']} | "
            f"{row['overkill']} | {row['fit_images']} | {row['fit_seconds']:.1f} | {row['images_per_s']:.1f} | "
            f"{'' if latency is None else f'{latency:.1f}'} |"
        )
    if with_anomalib:
        lines += ["", "anomalib PatchCore fits on the subset of the fit images its own coreset timing predicts to "
                  "finish within the cap; anomalib's greedy coreset grows with the square of the image count "
                  "(benchmarks/ANOMALIB.md: ~37 h for ~1,000 cells on this machine)."]
    lines += ["", f"Configurations and per-class recall: `benchmarks/results/{key}.json`."]
    write_section(key.replace("_", "-"), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
