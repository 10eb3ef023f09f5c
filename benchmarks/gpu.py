"""GPU throughput of the default detector (PatchCore, lite0, 256x256): one prepared script for a lent GPU.

Fits on ELPV good cells with the CPU path's settings, then scores a fixed batch of test cells on the GPU
(runtime "cuda": half-precision backbone, exact matrix-product neighbour search on the GPU) at several
batch sizes. Pre-decoded images; the CPU-side resize is included. Writes its BENCHMARKS.md section.

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
from cellsight.detectors.patchcore import PatchCore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-fit", type=int, default=300)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 512])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no GPU visible to torch: this benchmark needs one")
    dataset = load_dataset("elpv")
    goods = dataset.select(split="train", defect_class="good").paths[: args.n_fit]
    detector = PatchCore(runtime="cuda").fit(LazyImages(goods))
    test = list(LazyImages(dataset.select(split="test").paths))
    rows = []
    for batch in args.batches:
        images = [test[i % len(test)] for i in range(batch)]
        detector.score_images(images)  # warm-up: cuDNN autotuning, bank upload
        torch.cuda.synchronize()
        repeats = max(3, 2048 // batch)
        started = time.perf_counter()
        for _ in range(repeats):
            detector.score_images(images)
        torch.cuda.synchronize()
        rows.append({"batch": batch, "images_per_s": batch * repeats / (time.perf_counter() - started)})
    save_json("gpu", {"card": torch.cuda.get_device_name(0), "rows": rows})
    lines = [header("GPU throughput (PatchCore, tf_efficientnet_lite0, 256x256)"),
             f"Card: {torch.cuda.get_device_name(0)}; fitted on {len(goods)} ELPV good cells.", "",
             "| batch | images/s |", "|---|---|"]
    lines += [f"| {row['batch']} | {row['images_per_s']:.0f} |" for row in rows]
    write_section("gpu", "\n".join(lines))
    print("\n".join(lines), np.round([r["images_per_s"] for r in rows]))


if __name__ == "__main__":
    main()
