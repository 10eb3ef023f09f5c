"""Defect naming on the synthetic stations: how often a flagged defect gets its true class, and proof that
the anomaly model (bank, scores, AUROC) does not change when a station adds labelled defects.

Per station: write the set (train goods, labelled train defects with masks, test goods and defects),
train PatchCore as the demo does (ignore box on the code label, 1% overkill) once with and once without
the train defects, evaluate both on the test split. Then, on the same descriptors, compare the namer's
methods and check "unknown": each class left out of the namer in turn should come out unknown.

    PYTHONPATH=src .venv/bin/python benchmarks/defect_naming.py [--n-train 200] [--per-defect 15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import header, save_json, write_section
from cellsight.data import load_mvtec
from cellsight.data.dataset import Dataset
from cellsight.data.images import read_image
from cellsight.data.synth import STATIONS, write_station_dataset
from cellsight.detectors.naming import UNKNOWN, DefectNamer
from cellsight.detectors.patchcore import PatchCore, PatchCoreSettings
from cellsight.modelfile import load_model
from cellsight.workflows.evaluate import evaluate
from cellsight.workflows.train import TrainRequest, train

SETTINGS = PatchCoreSettings(ignore_boxes=((0, 0, 0.34, 0.34),))


def station_run(station: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    write_station_dataset(station, root, args.n_train, args.test_good, args.test_per_defect, args.seed,
                          n_train_per_defect=args.per_defect, overwrite=True)
    data = load_mvtec(root / station)
    goods_only = Dataset(data.name, tuple(i for i in data if not (i.split == "train" and i.label == 1)))
    request = TrainRequest("patchcore", SETTINGS, target=0.01, seed=args.seed)
    named = train(data, root / f"{station}.safetensors", request)
    plain = train(goods_only, root / f"{station}-plain.safetensors", request)
    report = evaluate(load_model(root / f"{station}.safetensors"), data)
    plain_report = evaluate(load_model(root / f"{station}-plain.safetensors"), data)
    detector = named.detector
    assert isinstance(detector, PatchCore) and isinstance(plain.detector, PatchCore)
    assert detector.namer is not None and plain.detector.memory_bank is not None
    same_bank = bool(np.array_equal(detector.memory_bank, plain.detector.memory_bank))
    return {
        "station": station,
        "examples_per_class": named.naming_examples,
        "image_auroc": report.image_auroc,
        "image_auroc_without_train_defects": plain_report.image_auroc,
        "same_memory_bank": same_bank,
        "same_threshold": named.calibration.threshold == plain.calibration.threshold,
        "naming": report.naming,
        **variants(detector, data, report.scores),
    }


def variants(detector: PatchCore, data: Dataset, test_scores: np.ndarray) -> dict[str, Any]:
    """knn vs class mean on the same descriptors, and how a class never taught comes out (unknown?).

    `test_scores`: the evaluation's normalised scores of the test split, in its order (NG at >= 0.5).
    """
    assert detector.namer is not None
    namer = detector.namer
    train_defects = data.select(split="train", label=1)
    images = [read_image(p) for p in train_defects.paths]
    masks = [None if i.mask_path is None else read_image(i.mask_path) for i in train_defects]
    classes = [i.defect_class for i in train_defects]
    train_desc = detector.defect_descriptors(images, masks, namer.top_patches)
    test = data.select(split="test")
    flagged = [(item.path, item.defect_class) for item, score in zip(test, test_scores, strict=True)
               if item.label == 1 and score >= 0.5]
    test_desc = detector.defect_descriptors([read_image(p) for p, _ in flagged], None, namer.top_patches)
    truth = [c for _, c in flagged]
    out: dict[str, Any] = {"accuracy_by_method": {}, "left_out_class": {}}
    for method, k in (("knn", 3), ("knn", 1), ("mean", 1)):
        fitted = DefectNamer.fit(train_desc, classes, namer.center, method, k, namer.top_patches)
        names = fitted.name(test_desc)
        out["accuracy_by_method"][f"{method}{k if method == 'knn' else ''}"] = float(
            np.mean([n == t for n, t in zip(names, truth, strict=True)])
        )
    for left in sorted(set(classes)):
        keep = [i for i, c in enumerate(classes) if c != left]
        fitted = DefectNamer.fit(train_desc[keep], [classes[i] for i in keep], namer.center, namer.method, namer.k,
                                 namer.top_patches)
        names = fitted.name(test_desc)
        unseen = [n for n, t in zip(names, truth, strict=True) if t == left]
        seen = [n == t for n, t in zip(names, truth, strict=True) if t != left]
        out["left_out_class"][left] = {
            "unknown_rate": float(np.mean([n == UNKNOWN for n in unseen])) if unseen else float("nan"),
            "others_accuracy": float(np.mean(seen)) if seen else float("nan"),
        }
    return out


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        header("Defect naming (PatchCore + few labelled defects)"),
        f"Synthetic stations, {args.n_train} train goods + {args.per_defect} labelled train defects per class "
        f"(with masks); test {args.test_good} good + {args.test_per_defect} per class. PatchCore as in the demo "
        "(ignore box on the code label, 1% overkill). Naming accuracy counts the flagged (NG) test defects "
        "only; \"unknown\" counts as wrong.",
        "",
        "| station | flagged defects | naming accuracy (knn3, default) | class mean | 1-NN | unknown | "
        "AUROC with / without train defects | same bank, same threshold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        naming = r["naming"] or {}
        acc = r["accuracy_by_method"]
        lines.append(
            f"| {r['station']} | {naming.get('n_flagged_defective', 0)} | {naming.get('accuracy', float('nan')):.3f} | "
            f"{acc['mean']:.3f} | {acc['knn1']:.3f} | {naming.get('n_unknown', 0)} | "
            f"{r['image_auroc']:.4f} / {r['image_auroc_without_train_defects']:.4f} | "
            f"{r['same_memory_bank']}, {r['same_threshold']} |"
        )
    lines += ["", "Per class (flagged test defects named right; a class left out of the namer: share named unknown, "
              "accuracy on the other classes meanwhile):", ""]
    for r in results:
        per = r["naming"]["accuracy_per_class"] if r["naming"] else {}
        parts = [
            f"{c} {per.get(c, float('nan')):.2f} (left out: unknown {v['unknown_rate']:.2f}, others "
            f"{v['others_accuracy']:.2f})" for c, v in r["left_out_class"].items()
        ]
        lines.append(f"- {r['station']}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--per-defect", type=int, default=15)
    parser.add_argument("--test-good", type=int, default=40)
    parser.add_argument("--test-per-defect", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stations", nargs="*", default=list(STATIONS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for station in args.stations:
            results.append(station_run(station, Path(tmp), args))
            print(results[-1], flush=True)
    save_json("defect_naming", results)
    write_section("defect-naming", markdown(results, args))


if __name__ == "__main__":
    main()
