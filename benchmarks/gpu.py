"""GPU throughput of the default detector (PatchCore, lite0, 256x256): one prepared script for a lent GPU.

Fits on ELPV good cells with the CPU path's settings, then scores a fixed batch of other cells on the GPU
(runtime "cuda": half-precision backbone, exact matrix-product neighbour search on the GPU) at several
batch sizes. Pre-decoded images; the CPU-side resize is included. Writes its BENCHMARKS.md section.
`--data-dir` reads an ELPV data folder holding the train cells only (a GPU machine given those alone,
see `elpv_pack.py`), `--images` any folder of images (the first --n-fit fit, the others are scored):
throughput does not depend on which cells; accuracy is measured elsewhere. Each batch size is timed
twice: with the per-image steps (resize, map blur) on one thread and on all cores (the GPU default).

    .venv/bin/python benchmarks/gpu.py --n-fit 300
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import header, save_json, write_section
from cellsight.data import LazyImages, load_dataset
from cellsight.data.elpv import load_elpv
from cellsight.detectors.base import TrainingSet
from cellsight.detectors.patchcore import PatchCore
from cellsight.features.extractor import PatchFeatureExtractor
from cellsight.features.threads import gpu_workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-fit", type=int, default=300)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--data-dir", type=Path, help="ELPV data folder with the train cells (labels.csv + images/)")
    parser.add_argument("--images", type=Path, help="a folder of images instead of ELPV")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no GPU visible to torch: this benchmark needs one")
    if args.images:
        files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".bmp", ".tif"))
        goods, scored = files[: args.n_fit], files[args.n_fit :]
    elif args.data_dir:
        train = load_elpv(args.data_dir, splits=("train",))
        goods = train.select(defect_class="good").paths[: args.n_fit]
        fitted = set(goods)
        scored = [p for p in train.paths if p not in fitted][:654]
    else:
        dataset = load_dataset("elpv")
        goods = dataset.select(split="train", defect_class="good").paths[: args.n_fit]
        scored = dataset.select(split="test").paths
    started = time.perf_counter()
    detector = PatchCore(runtime="cuda").fit(TrainingSet.good(LazyImages(goods)))
    fit_s = time.perf_counter() - started
    test = list(LazyImages(scored))
    rows = []
    threaded = PatchFeatureExtractor.workers
    for batch in args.batches:
        images = [test[i % len(test)] for i in range(batch)]
        row: dict[str, float] = {"batch": batch}
        for mode, workers in (("one_thread", property(lambda self: 1)), ("threads", threaded)):
            setattr(PatchFeatureExtractor, "workers", workers)  # noqa: B010 -- the per-image steps' threads
            detector.score(images)  # warm-up: cuDNN autotuning, bank upload
            torch.cuda.synchronize()
            repeats = max(3, 2048 // batch)
            started = time.perf_counter()
            for _ in range(repeats):
                detector.score(images)
            torch.cuda.synchronize()
            row[mode] = batch * repeats / (time.perf_counter() - started)
        row["images_per_s"] = row["threads"]
        rows.append(row)
        print(row, flush=True)
    save_json("gpu", {"card": torch.cuda.get_device_name(0), "fit_seconds": fit_s, "rows": rows})
    lines = [header("GPU throughput (PatchCore, tf_efficientnet_lite0, 256x256)"),
             f"Card: {torch.cuda.get_device_name(0)}; fitted on {len(goods)} ELPV good cells in {fit_s:.1f} s.", "",
             f"Per-image steps on {gpu_workers()} threads (default) and on one thread, same run.", "",
             "| batch | images/s | images/s, per-image steps on one thread |", "|---|---|---|"]
    lines += [f"| {row['batch']} | {row['threads']:.0f} | {row['one_thread']:.0f} |" for row in rows]
    write_section("gpu", "\n".join(lines))
    print("\n".join(lines), np.round([r["images_per_s"] for r in rows]))


if __name__ == "__main__":
    main()
