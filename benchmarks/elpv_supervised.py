"""ELPV supervised benchmark: learning from labelled defects, "traditional vs deep", and the label budget.

Protocol: the fixed ELPV split (1,970 train / 654 test cells, defective = probability >= 0.5).
- Held-out validation goods: a seeded 15% of the train goods, the same for every method and budget;
  every threshold is set for 5% overkill on them (the `cellsight train` default).
- Labelled-defect budget n (10, 30, 100, all): n train defects drawn (seeded, nested), of which 15%
  (at least 1) are held out with the validation goods for early stopping and the hybrid's weights;
  the others train. Goods: all the remaining train goods. So a budget of 10 means 10 labelled defects
  in total, validation included, as on a new line.
- classical and patchcore fit on the same training goods (good-only); the hybrid is a logistic
  regression on validation [patchcore score, supervised logit] (`cellsight.detectors.hybrid`).
- The supervised frozen part runs once per train cell and view (the budgets share that pass); test
  scores come from the same cached features (checked against `score` on real images), averaged
  over the cell and its three flips when the detector's `tta` is on (as `score` does).
- Thresholds, none set on the test split: 5% overkill on the validation goods (the line's operating
  point); the classifier's own p = 0.5 (logit 0); and the threshold that maximises balanced accuracy
  on the validation split (goods + held-out defects).
- `--budgets all` runs only the headline (all labelled defects) and skips the label-budget sweep.

    PYTHONPATH=src .venv/bin/python benchmarks/elpv_supervised.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import RESULTS, header, save_json, write_section
from cellsight.calibration import calibrate_for_overkill
from cellsight.data import LazyImages, load_dataset
from cellsight.data.dataset import Dataset
from cellsight.detectors.base import AnyDetector, TrainingSet, make_predictions
from cellsight.detectors.classical import Classical
from cellsight.detectors.hybrid import COMBINATION, Hybrid
from cellsight.detectors.patchcore import PatchCore
from cellsight.detectors.supervised import Supervised
from cellsight.metrics import image_auroc, operating_point
from cellsight.metrics.operating_point import RateWithInterval
from cellsight.workflows.train import labelled_images

TARGET_OVERKILL = 0.05
VAL_FRACTION = 0.15


def scores_of(detector: AnyDetector, images: LazyImages, batch: int = 16) -> np.ndarray:
    out = [detector.score([images[i] for i in range(s, min(s + batch, len(images)))]).scores
           for s in range(0, len(images), batch)]
    return np.concatenate(out)


def balanced_threshold(val_scores: np.ndarray, val_labels: np.ndarray) -> float:
    """The raw threshold (score >= t is NG) that maximises balanced accuracy on the validation split;
    ties go to the midpoint between the tied score and the next one up, the lowest such threshold wins."""
    order = np.unique(val_scores)
    cuts = np.r_[order[0] - 1.0, (order[:-1] + order[1:]) / 2, order[-1] + 1.0]
    y = np.asarray(val_labels) == 1
    best, best_cut = -1.0, 0.0
    for cut in cuts:
        flagged = val_scores >= cut
        balanced = 0.5 * (flagged[y].mean() + (~flagged[~y]).mean())
        if balanced > best + 1e-12:
            best, best_cut = balanced, float(cut)
    return best_cut


def holdout(train: Dataset) -> tuple[Dataset, Dataset, int]:
    """The headline run's fit and validation parts of the train split (the all-defects budget below):
    a seeded 15% of the goods and 15% of the defects are held out. Returns (fit, val, validation goods);
    val lists its goods first. `elpv_finetune.py` trains on exactly these parts."""
    goods, defects = train.select(label=0), train.select(label=1)
    good_order = np.random.default_rng(0).permutation(len(goods))
    n_val_good = round(len(goods) * VAL_FRACTION)
    defect_order = np.random.default_rng(1).permutation(len(defects))
    n_val_defect = max(1, round(len(defects) * VAL_FRACTION))
    val = [goods.items[i] for i in good_order[:n_val_good]] + [defects.items[i] for i in defect_order[:n_val_defect]]
    fit = [goods.items[i] for i in good_order[n_val_good:]] + [defects.items[i] for i in defect_order[n_val_defect:]]
    return Dataset(train.name, tuple(fit)), Dataset(train.name, tuple(val)), n_val_good


def evaluate(val_good: np.ndarray, test: np.ndarray, test_data: Dataset, threshold: float | None = None
             ) -> dict[str, Any]:
    """Metrics at the 5%-overkill threshold from validation goods (or at a given raw threshold)."""
    calibration = calibrate_for_overkill(val_good, TARGET_OVERKILL)
    cut = calibration.threshold if threshold is None else threshold
    labels = np.asarray(test_data.labels)
    flagged = test >= cut
    result: dict[str, Any] = {"threshold": float(cut)}
    for part in ("all", "mono", "poly"):
        keep = np.ones(len(labels), bool) if part == "all" else np.array([i.meta["type"] == part for i in test_data])
        y, f = labels[keep], flagged[keep]
        acc = RateWithInterval.of(int((f == (y == 1)).sum()), len(y))
        esc = RateWithInterval.of(int((~f & (y == 1)).sum()), int((y == 1).sum()))
        ovk = RateWithInterval.of(int((f & (y == 0)).sum()), int((y == 0).sum()))
        result[part] = {"accuracy": acc.describe(), "accuracy_rate": acc.rate, "escape": esc.describe(),
                        "escape_rate": esc.rate, "overkill": ovk.describe(), "overkill_rate": ovk.rate,
                        "recall": 1.0 - esc.rate, "auroc": image_auroc(y.tolist(), test[keep]), "n": len(y)}
    preds = make_predictions(calibration, test, [np.zeros((1, 1), np.float32)] * len(test), 0.0)
    op = operating_point(labels, [p.verdict for p in preds], [i.defect_class for i in test_data])
    result["recall_per_class"] = {k: v.describe() for k, v in op.recall_per_class.items()}
    return result


def hybrid_rows(pc: dict[str, Any], val_logits: np.ndarray, test_logits: np.ndarray, val_labels: np.ndarray,
                n_val_good: int, test: Dataset) -> dict[str, Any]:
    """The hybrid detector's combination (logistic regression on validation [PatchCore score, logit])."""
    pc_val, pc_test = np.asarray(pc["val"]), np.asarray(pc["test"])
    hybrid = Hybrid().combine(pc_val, val_logits, val_labels)
    val_scores = hybrid.combine_scores(pc_val, val_logits)
    weights = dict(zip(COMBINATION, hybrid.combination.tolist(), strict=True))
    return {"val_auroc": image_auroc(val_labels.tolist(), val_scores), "weights": weights,
            **rows_at_thresholds(val_scores, hybrid.combine_scores(pc_test, test_logits), val_labels, n_val_good,
                                 test)}


def rows_at_thresholds(val_scores: np.ndarray, test_scores: np.ndarray, val_labels: np.ndarray, n_val_good: int,
                       test: Dataset) -> dict[str, Any]:
    """`evaluate` at the three thresholds; validation scores list the goods first."""
    return {
        "at_5pct_overkill": evaluate(val_scores[:n_val_good], test_scores, test),
        "at_p05": evaluate(val_scores[:n_val_good], test_scores, test, threshold=0.0),
        "at_val_balanced": evaluate(val_scores[:n_val_good], test_scores, test,
                                    threshold=balanced_threshold(val_scores, val_labels)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budgets", nargs="+", default=["10", "30", "100", "all"])
    parser.add_argument("--smoke", type=int, default=0, help="use only every k-th cell (a quick check of the script)")
    parser.add_argument("--option", nargs="*", default=[], help="supervised setting key=value (JSON values)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    title = header("ELPV supervised: labelled defects, traditional vs deep, label budget")  # load at start

    dataset = load_dataset("elpv")
    train, test = dataset.select(split="train"), dataset.select(split="test")
    if args.smoke:
        train, test = (Dataset(d.name, d.items[:: args.smoke]) for d in (train, test))
    goods, defects = train.select(label=0), train.select(label=1)
    good_order = np.random.default_rng(0).permutation(len(goods))
    n_val_good = round(len(goods) * VAL_FRACTION)
    val_good_idx, fit_good_idx = good_order[:n_val_good], good_order[n_val_good:]
    defect_order = np.random.default_rng(1).permutation(len(defects))
    budgets = [len(defects) if b == "all" else int(b) for b in args.budgets]
    n_val_defects = {n: max(1, round(n * VAL_FRACTION)) for n in budgets}
    val_defect_pool = defect_order[: max(n_val_defects.values())]
    test_images = LazyImages(test.paths)
    val_good_images = LazyImages([goods.items[i].path for i in val_good_idx])
    fit_good_paths = [goods.items[i].path for i in fit_good_idx]
    print(f"train goods {len(fit_good_idx)} + val goods {len(val_good_idx)}; train defects {len(defects)}; "
          f"test {len(test)} ({sum(test.labels)} defective)", flush=True)

    rows: dict[str, dict[str, Any]] = {
        "counts": {"train": len(train), "test": len(test), "test_defective": int(sum(test.labels))}
    }
    state: dict[str, Any] = {"rows": rows, "budgets": [], "n_val_goods": len(val_good_idx), "n_test": len(test),
                             "supervised_config": Supervised(**options).settings.to_json()}

    def checkpoint(final: bool = False) -> None:
        """Results so far: a partial run still leaves its numbers (the full report needs every stage)."""
        save_json("elpv_supervised" if final and not args.smoke else "elpv_supervised.partial", state)

    # Supervised first (the headline), from one encoding pass over every train cell (views) and test cell.
    sup0 = Supervised(**options)
    classes = sorted({i.defect_class for i in defects})
    sup0.build(classes, segmentation=False)
    started = time.perf_counter()
    enc_train = sup0.encode(labelled_images(train), sup0.settings.views)
    encode_s = time.perf_counter() - started
    enc_test = sup0.encode_tta(labelled_images(test))
    state["encode_train_seconds"] = encode_s
    print(f"encoded train in {encode_s:.0f} s", flush=True)
    train_index = {item.path: i for i, item in enumerate(train)}
    good_pos = np.array([train_index[goods.items[i].path] for i in range(len(goods))])
    defect_pos = np.array([train_index[defects.items[i].path] for i in range(len(defects))])

    sup_scores: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    budget_rows: list[dict[str, Any]] = state["budgets"]
    for n in sorted(budgets, reverse=True):
        chosen = defect_order[:n]
        val_d, fit_d = chosen[: n_val_defects[n]], chosen[n_val_defects[n]:]
        fit_idx = np.concatenate([good_pos[fit_good_idx], defect_pos[fit_d]])
        val_idx = np.concatenate([good_pos[val_good_idx], defect_pos[val_d]])
        sup = Supervised(**options)
        sup.build(classes, segmentation=False)
        started = time.perf_counter()
        sup.fit_encoded(enc_train.subset(fit_idx), enc_train.subset(val_idx))
        loop_s = time.perf_counter() - started
        val_scores = sup.score_encoded(enc_train.subset(val_idx))
        test_scores = sup.score_encoded(enc_test, all_views=sup.settings.tta)
        sup_scores[n] = (val_scores, test_scores)
        val_labels = np.r_[np.zeros(len(val_good_idx)), np.ones(len(val_d))].astype(int)
        at = rows_at_thresholds(val_scores, test_scores, val_labels, len(val_good_idx), test)
        sup_row, natural, balanced = at["at_5pct_overkill"], at["at_p05"], at["at_val_balanced"]
        budget_rows.append({
            "n_defects": n, "n_fit_defects": len(fit_d), "n_val_defects": len(val_d), "train_loop_seconds": loop_s,
            "epochs_run": len(sup.history), "best_epoch": sup.best_epoch, "history": sup.history,
            "supervised": sup_row, "supervised_at_p05": natural, "supervised_at_val_balanced": balanced,
        })
        print(f"budget {n}: loop {loop_s:.0f} s, {len(sup.history)} epochs, AUROC {sup_row['all']['auroc']:.4f} "
              f"acc {sup_row['all']['accuracy_rate']:.4f} (p=0.5: {natural['all']['accuracy_rate']:.4f}, "
              f"val-balanced: {balanced['all']['accuracy_rate']:.4f})", flush=True)
        if n == len(defects):
            check = sup.score([test_images[i] for i in range(16)]).scores
            deviation = float(np.abs(check - test_scores[:16]).max())
            print(f"cached vs score max |diff| {deviation:.2e}", flush=True)
            rows["supervised"] = {"fit_seconds": encode_s + loop_s, "cache_check_max_abs_diff": deviation, **sup_row}
            rows["supervised_at_p05"] = natural
            rows["supervised_at_val_balanced"] = balanced
        checkpoint()

    # Good-only baselines on the same training goods.
    raw: dict[str, dict[str, np.ndarray]] = {}
    for name, det in (("classical", Classical()), ("patchcore", PatchCore())):
        started = time.perf_counter()
        det.fit(TrainingSet.good(LazyImages(fit_good_paths)))
        fit_s = time.perf_counter() - started
        raw[name] = {"val_good": scores_of(det, val_good_images), "test": scores_of(det, test_images)}
        if name == "patchcore":
            raw[name]["val_defect_pool"] = scores_of(det, LazyImages([defects.items[i].path for i in val_defect_pool]))
        rows[name] = {"fit_seconds": fit_s, **evaluate(raw[name]["val_good"], raw[name]["test"], test)}
        print(f"{name}: fit {fit_s:.0f} s, AUROC {rows[name]['all']['auroc']:.4f}", flush=True)
        checkpoint()

    # Hybrid: logistic regression on validation [patchcore score, supervised logit], per budget.
    pc = raw["patchcore"]
    for row in budget_rows:
        n = row["n_defects"]
        val_scores, test_scores = sup_scores[n]
        pc_val = np.concatenate([pc["val_good"], pc["val_defect_pool"][: n_val_defects[n]]])
        labels_val = np.r_[np.zeros(len(val_good_idx)), np.ones(n_val_defects[n])].astype(int)
        hybrid = hybrid_rows({"val": pc_val, "test": pc["test"]}, val_scores, test_scores, labels_val,
                             len(val_good_idx), test)
        row["hybrid"], row["hybrid_at_val_balanced"] = hybrid["at_5pct_overkill"], hybrid["at_val_balanced"]
        row["hybrid_weights"] = hybrid["weights"]
        if n == len(defects):
            rows["hybrid"] = {"fit_seconds": rows["supervised"]["fit_seconds"] + rows["patchcore"]["fit_seconds"],
                              **row["hybrid"]}
            rows["hybrid_at_val_balanced"] = row["hybrid_at_val_balanced"]
    budget_rows.sort(key=lambda r: r["n_defects"])
    checkpoint(final=True)
    text = report(title, rows, budget_rows, encode_s, len(val_good_idx), len(fit_good_idx))
    if not args.smoke:
        write_section("elpv-supervised", text)
    print(text)


def end_to_end_rows() -> list[str]:
    """The GPU-trained end-to-end rows from `elpv_finetune.py`'s results, where they exist: same split,
    same validation goods, same threshold rule, so they belong in this table."""
    path = RESULTS / "elpv_finetune.json"
    if not path.is_file():
        return []
    saved = json.loads(path.read_text())
    chosen = next(r for r in saved["rows"] if r["name"] == saved["chosen"])
    minutes = chosen["gpu_fit_seconds"] / 60
    lines = []
    for label, source in ((f"supervised, end-to-end ({chosen['name']}, GPU)", chosen),
                          ("hybrid, end-to-end (GPU)", saved["hybrids"]["chosen"])):
        r = source["at_5pct_overkill"]["all"]
        lines.append(f"| {label} | {r['recall']:.1%} | {r['overkill']} | {r['accuracy']} | {r['auroc']:.4f} | "
                     f"{minutes:.1f} on the GPU |")
    note = ('End-to-end rows: `elpv_finetune.py` (section "ELPV supervised, end-to-end fine-tuning"), trained on '
            "a GPU, scored on this CPU; the other rows are this run's.")
    return [*lines, "", note]


def report(title: str, rows: dict[str, dict[str, Any]], budgets: list[dict[str, Any]], encode_s: float,
           n_val_good: int, n_fit_good: int) -> str:
    sup, nat, bal = rows["supervised"], rows["supervised_at_p05"], rows["supervised_at_val_balanced"]
    lines = [
        title,
        f"Fixed ELPV split: trained on the {rows['counts']['train']:,} train cells ({n_fit_good} goods + "
        f"labelled defects train; {n_val_good} goods + 15% of the labelled defects held out for early stopping "
        f"and threshold), tested on the {rows['counts']['test']} test cells ({rows['counts']['test_defective']} "
        "defective, probability >= 0.5). Thresholds for 5% overkill on the held-out goods unless stated. "
        "Intervals: Wilson 95%. Published anchors (accuracy): SVM 82.4%, CNN 88.4% "
        "(Deitsch et al. 2019), ResNet-152+GAN ~90%.",
        "",
        "### Supervised (all labelled train defects)",
        "",
        "| threshold | cells | accuracy | escape | overkill | AUROC |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in (("5% overkill on val goods", sup), ("classifier p = 0.5", nat),
                       ("max balanced accuracy on val", bal), ("hybrid, max balanced accuracy on val",
                                                               rows["hybrid_at_val_balanced"])):
        for part in ("all", "mono", "poly"):
            r = row[part]
            lines.append(f"| {label} | {part} ({r['n']}) | {r['accuracy']} | {r['escape']} | {r['overkill']} | "
                         f"{r['auroc']:.4f} |")
    lines += [
        "",
        f"Training time on this machine: {sup['fit_seconds'] / 60:.1f} min (frozen-part encoding of the "
        f"train cells {encode_s / 60:.1f} min, shared by the budget runs below, + training loop).",
        "",
        "### Traditional vs deep (same test split, threshold for 5% overkill on held-out goods)",
        "",
        "| method | recall of defective cells | overkill on test | accuracy | AUROC | fit (min) |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("classical", "patchcore", "supervised", "hybrid"):
        r = rows[name]["all"]
        lines.append(f"| {name} | {r['recall']:.1%} | {r['overkill']} | {r['accuracy']} | {r['auroc']:.4f} | "
                     f"{rows[name]['fit_seconds'] / 60:.1f} |")
    lines += end_to_end_rows()
    lines += [
        "",
        "### Labelled-defect budget (goods: all; n = labelled defects in total, 15% of them held out)",
        "",
        "| defects (train + val) | supervised accuracy | escape | overkill | AUROC | hybrid recall | hybrid AUROC |"
        " epochs | loop (min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in budgets:
        s, h = b["supervised"]["all"], b["hybrid"]["all"]
        lines.append(f"| {b['n_defects']} ({b['n_fit_defects']} + {b['n_val_defects']}) | {s['accuracy']} | "
                     f"{s['escape']} | {s['overkill']} | {s['auroc']:.4f} | {h['recall']:.1%} | {h['auroc']:.4f} | "
                     f"{b['epochs_run']} (best {b['best_epoch'] + 1}) | {b['train_loop_seconds'] / 60:.1f} |")
    if len(budgets) == 1:
        lines += ["", "Label-budget sweep not run this time (`--budgets all`, to keep the CPU run short): only the "
                  "all-defects row above; run without `--budgets` for 10, 30, 100 and all."]
    lines += ["", "Per-class recall, histories and hybrid weights: `benchmarks/results/elpv_supervised.json`."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
