"""CPU profile: where PatchCore's time goes per image at batch 1 and 16, and what the thread settings do.

Steps timed one by one inside `PatchCore.score`'s own code path (ELPV cells, 256x256, default settings,
fitted on 100 good cells): decode (PNG from disk), prepare (gray, scale, INTER_AREA resize), features
(the runtime's feature step), search (nearest neighbour, per image, as `score` runs it), maps
(upsample + Gaussian blur + max),
and the whole `score` call (the rest is Python overhead). Each configuration runs in its own child
process, since OpenMP reads its wait policy once at start: `passive` is the default
(`OMP_WAIT_POLICY=PASSIVE`, ONNX Runtime not spinning), `spinning` is how it ran before.

    PYTHONPATH=src .venv/bin/python benchmarks/step_profile.py [--threads 2] [--configs passive]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import header, save_json, write_section

STEPS = ("decode", "prepare", "features", "search", "maps", "score")
CONFIGS = {
    "passive": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "spinning": False, "runtime": "onnx"},
    "spinning": {"env": {"OMP_WAIT_POLICY": "ACTIVE"}, "spinning": True, "runtime": "onnx"},
    "torch, passive": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "spinning": False, "runtime": "torch"},
}


def child(config: dict[str, Any], threads: int, repeats: int) -> dict[str, Any]:
    """Per-step milliseconds per image (median over repeats) at batch 1 and 16."""
    import cv2
    import faiss
    import torch

    from cellsight.data import LazyImages, load_dataset
    from cellsight.data.images import read_image
    from cellsight.detectors.base import MapSize, TrainingSet
    from cellsight.detectors.patchcore import PatchCore, _nearest_squared
    from cellsight.features.onnx_backbone import OnnxBackbone

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    dataset = load_dataset("elpv")
    goods = dataset.select(split="train", defect_class="good").paths[:100]
    paths = dataset.select(split="test").paths[:16]
    detector = PatchCore(runtime=config["runtime"]).fit(TrainingSet.good(LazyImages(goods)))
    extractor = detector.extractor
    if config["runtime"] == "onnx":  # the same graph, with the session's spinning as configured
        extractor._onnx = OnnxBackbone(extractor.onnx_bytes(), threads, spinning=config["spinning"])
    index = detector._index
    assert index is not None
    sigma, size = detector.settings.smoothing_sigma, detector.features.image_size
    out: dict[str, Any] = {}
    for batch in (1, 16):
        times: dict[str, list[float]] = {step: [] for step in STEPS}
        for repeat in range(repeats + 1):
            chosen = paths[:batch] if batch > 1 else paths[repeat % 16 : repeat % 16 + 1]
            t0 = time.perf_counter()
            images = [read_image(p) for p in chosen]
            t1 = time.perf_counter()
            extractor.prepare(images)
            t2 = time.perf_counter()
            feats = extractor(images)
            t3 = time.perf_counter()
            n, h, w, dim = feats.shape
            squared = np.concatenate([_nearest_squared(index, rows) for rows in feats.numpy().reshape(n, -1, dim)])
            t4 = time.perf_counter()
            for patch in np.sqrt(np.maximum(squared, 0.0)).reshape(n, h, w):
                cv2.GaussianBlur(cv2.resize(patch, (size, size)), (0, 0), sigma).max()
            t5 = time.perf_counter()
            detector.score(images, MapSize.NONE)
            t6 = time.perf_counter()
            if repeat == 0:
                continue  # warm-up
            # prepare is also inside features: features alone = (t3 - t2) - prepare
            spans = (t1 - t0, t2 - t1, (t3 - t2) - (t2 - t1), t4 - t3, t5 - t4, t6 - t5)
            for step, span in zip(STEPS, spans, strict=True):
                times[step].append(span * 1000.0 / batch)
        out[str(batch)] = {step: float(np.median(values)) for step, values in times.items()}
    return out


def run_child(name: str, threads: int, repeats: int) -> dict[str, Any]:
    env = {**os.environ, **CONFIGS[name]["env"]}
    command = [sys.executable, __file__, "--child", json.dumps([name, threads, repeats])]
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                        help="a subset, for a short run")
    args = parser.parse_args()
    if args.child:
        name, threads, repeats = json.loads(args.child)
        print(json.dumps(child(CONFIGS[name], threads, repeats)))
        return
    title = header("CPU profile: PatchCore per image, step by step (ELPV, 256x256)")
    results = {name: run_child(name, args.threads, args.repeats) for name in args.configs}
    save_json("step_profile", results)
    lines = [title, f"ms per image, median of {args.repeats} repeats, {args.threads} threads; `score` is the whole "
             "call (features + search + maps + Python), measured separately. `passive`: OpenMP threads sleep "
             "when idle and ONNX Runtime does not spin (the default); `spinning`: both spin, as before; "
             "`torch`: the TorchScript backbone with pooling in eager torch (the reference runtime).", "",
             "| configuration | batch | " + " | ".join(STEPS) + " |", "|---|---|" + "---|" * len(STEPS)]
    for name, result in results.items():
        for batch, steps in result.items():
            lines.append(f"| {name} | {batch} | " + " | ".join(f"{steps[s]:.1f}" for s in STEPS) + " |")
    write_section("step-profile", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
