"""Probe (issue 12, items 2-3) on the val splits: the SimpleNet-style discriminator's training settings, and
PatchCore's image score (blurred-map maximum vs the raw patch maximum vs the paper's re-weighting).

    python benchmarks/simplenet_probe.py [--sets bsdata,weld,elpv] [--max-fit 100] [--max-eval 50] [--write]

Per set (the harness's val split, `accuracy.load_set`): the default backbone's patch features of the fit and
evaluated images are computed once; every discriminator setting is trained on the same fit features
(`simplenet.train_discriminator`, as `SimpleNet.fit` does) and scored on the same evaluated features, so the
rows differ only in training. PatchCore (default settings) is fitted on the same images; its patch distances
give every image-score variant from one search:
- `blur sigma S max`: the maximum of the patch map upsampled to the working size and blurred (S = 4: the
  default, what `cellsight` scores);
- `raw max`: the largest patch distance; `top-3 mean`: the mean of the three largest;
- `re-weighted`: the raw maximum times 1 - softmax(distances of that patch to its nearest bank row's 9
  nearest bank rows)[0] (Roth et al. 2022, eq. 7; anomalib's `compute_anomaly_score`).
Image AUROC only (val splits: nothing here is a test number). `--write` records the BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import header, save_json, write_section
from accuracy import load_set
from cellsight.data import LazyImages
from cellsight.detectors.base import TrainingSet
from cellsight.detectors.patchcore import PatchCore
from cellsight.detectors.simplenet import SimpleNet, SimpleNetSettings, train_discriminator
from cellsight.metrics import image_auroc

FAST = {"hidden": 256, "batch_patches": 512, "learning_rate": 1e-3}
TRAININGS: dict[str, dict[str, Any]] = {
    "default (hidden 1024, batch 2048, lr 2e-4, 1500 steps, noise 0.25 x3)": {},
    "default, seed 1": {"seed": 1},
    "noise 0.5": {"noise_std": 0.5},
    "one noise scale": {"noise_scales": 1},
    "hidden 256, batch 512, lr 1e-3": FAST,
    "same, 3000 steps": FAST | {"steps": 3000},
}
SIDE = 256  # the working size: maps are upsampled to it before blurring, as PatchCore's are


def features(detector: SimpleNet, paths: list[Path]) -> torch.Tensor:
    images = LazyImages(paths)
    out = [
        detector._features([images[i] for i in range(s, min(s + 16, len(images)))]) for s in range(0, len(images), 16)
    ]
    return torch.cat(out)


def blurred_max(patch_map: np.ndarray, sigma: float) -> float:
    up = cv2.resize(patch_map.astype(np.float32), (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)
    return float(cv2.GaussianBlur(up, (0, 0), sigma).max())


def discriminator_rows(set_name: str, fit: torch.Tensor, evaluated: torch.Tensor, labels: np.ndarray) -> dict[str, Any]:
    rows = fit.reshape(-1, fit.shape[-1])
    out: dict[str, Any] = {}
    for name, options in TRAININGS.items():
        started = time.perf_counter()
        model = train_discriminator(rows, SimpleNetSettings(**options))
        seconds = time.perf_counter() - started
        with torch.inference_mode():
            patch_scores = (-model(evaluated)).numpy()
        scores = np.array([blurred_max(p, 4.0) for p in patch_scores])
        out[name] = {"image_auroc": image_auroc(labels, scores), "train_seconds": seconds}
        print(f"{set_name} simplenet {name}: {out[name]['image_auroc']:.3f} ({seconds:.0f} s)", flush=True)
    return out


def patchcore_rows(
    set_name: str, fit_paths: list[Path], eval_paths: list[Path], labels: np.ndarray
) -> dict[str, float]:
    detector = PatchCore().fit(TrainingSet.good(LazyImages(fit_paths)))
    assert detector.memory_bank is not None
    bank = np.ascontiguousarray(detector.memory_bank)
    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(bank)
    variants: dict[str, list[float]] = {
        k: []
        for k in (
            "blur sigma 4 max (default)",
            "blur sigma 2 max",
            "blur sigma 1 max",
            "raw max",
            "top-3 mean",
            "re-weighted",
        )
    }
    images = LazyImages(eval_paths)
    for start in range(0, len(images), 16):
        feats = detector.extractor([images[i] for i in range(start, min(start + 16, len(images)))]).numpy()
        _, h, w, dim = feats.shape
        for image_feats in feats:
            rows = np.ascontiguousarray(image_feats.reshape(-1, dim))
            squared, nearest = index.search(rows, 1)
            distances = np.sqrt(np.maximum(squared[:, 0], 0.0))
            patch_map = distances.reshape(h, w)
            for sigma in (4.0, 2.0, 1.0):
                label = f"blur sigma {sigma:g} max" + (" (default)" if sigma == 4.0 else "")
                variants[label].append(blurred_max(patch_map, sigma))
            variants["raw max"].append(float(distances.max()))
            variants["top-3 mean"].append(float(np.sort(distances)[-3:].mean()))
            worst = int(distances.argmax())
            _, support = index.search(bank[nearest[worst, 0]][None], min(9, len(bank)))
            to_support = torch.from_numpy(np.linalg.norm(bank[support[0]] - rows[worst], axis=1))
            variants["re-weighted"].append(float((1.0 - torch.softmax(to_support, 0)[0]) * distances.max()))
    out = {k: image_auroc(labels, np.asarray(v)) for k, v in variants.items()}
    print(f"{set_name} patchcore " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="bsdata,weld,elpv")
    parser.add_argument("--max-fit", type=int, default=100)
    parser.add_argument("--max-eval", type=int, default=50)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for set_name in args.sets.split(","):
        bench = load_set(set_name, "val", args.max_fit, args.max_eval)
        labels = np.asarray(bench.evaluate.labels)
        extractor = SimpleNet()
        fit, evaluated = features(extractor, list(bench.fit.paths)), features(extractor, list(bench.evaluate.paths))
        results[set_name] = {
            "simplenet": discriminator_rows(set_name, fit, evaluated, labels),
            "patchcore": patchcore_rows(set_name, list(bench.fit.paths), list(bench.evaluate.paths), labels),
            "fit": len(bench.fit),
            "evaluated": f"{labels.tolist().count(0)} / {labels.tolist().count(1)}",
        }
    save_json("simplenet_probe_val", results)
    sets = list(results)
    lines = ["| SimpleNet training (val image AUROC) | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
    for name in TRAININGS:
        found = [results[s]["simplenet"][name] for s in sets]
        cells = [f"{r['image_auroc']:.3f} ({r['train_seconds']:.0f} s)" for r in found]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        "| PatchCore default, for reference | "
        + " | ".join(f"{results[s]['patchcore']['blur sigma 4 max (default)']:.3f}" for s in sets)
        + " |"
    )
    lines += [
        "",
        "| PatchCore image score (val image AUROC) | " + " | ".join(sets) + " |",
        "|---" * (len(sets) + 1) + "|",
    ]
    for variant in results[sets[0]]["patchcore"]:
        lines.append(f"| {variant} | " + " | ".join(f"{results[s]['patchcore'][variant]:.3f}" for s in sets) + " |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        sizes = ", ".join(f"{s} {results[s]['fit']} fit / {results[s]['evaluated']} good / defective" for s in sets)
        write_section(
            "simplenet-probe",
            header(
                "SimpleNet-style discriminator and PatchCore's image score on the val "
                "splits (issue 12; neither adopted)"
            )
            + f"- val splits only ({sizes}); seconds are training only, on cached features\n\n"
            + table
            + "\n",
        )


if __name__ == "__main__":
    main()
