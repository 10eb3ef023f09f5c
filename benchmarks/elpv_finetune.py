"""ELPV end-to-end fine-tuning: `supervised` with fine_tune="full", trained on a GPU, tested on the CPU.

The frozen-prefix training of `elpv_supervised.py` stops at 87-88% accuracy; this trains the whole net
(stem and first block aside) on freshly augmented 300 px cells, which takes minutes on a GPU and hours
on 2 CPU cores. Same protocol as `elpv_supervised.py` (its `holdout`: the same fit and validation cells,
threshold for 5% overkill on the validation goods, nothing tuned on the test split); the model is chosen
among the trained configurations by validation AUROC, and every configuration's test row is reported.

Steps, one subcommand each (the train cells travel to a GPU machine with `elpv_pack.py`):
  train     each `--config name:key=value,...` on the fit cells; calibrated model files + JSON
  evaluate  here: the model files (trained anywhere) on the validation and test cells; BENCHMARKS.md
  ensemble  the model files as one deployable `ensemble` model file (after evaluate: uses its scores)

    python3 benchmarks/elpv_finetune.py train --data-dir /tmp/elpv --out $OUT --config a:image_size=300
    PYTHONPATH=src .venv/bin/python benchmarks/elpv_finetune.py evaluate --models runs/gpu/*.safetensors
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
from _record import header, machine, save_json, write_section
from cellsight.calibration import calibrate_for_overkill
from cellsight.data import LazyImages, load_dataset
from cellsight.data.dataset import Dataset
from cellsight.data.elpv import load_elpv
from cellsight.detectors.base import MapSize, TrainingSet
from cellsight.detectors.patchcore import PatchCore
from cellsight.detectors.supervised import Supervised
from cellsight.detectors.supervised.ensemble import SupervisedEnsemble
from cellsight.metrics import image_auroc
from cellsight.modelfile import load_model, save_model
from cellsight.workflows.train import labelled_images
from elpv_supervised import holdout, hybrid_rows, rows_at_thresholds, scores_of

TARGET_OVERKILL = 0.05
CHECK_CELLS = 8  # validation cells scored on the training device too: the model file must agree here


def parse_config(text: str) -> tuple[str, dict[str, Any]]:
    """`name:key=value,key=value` (JSON values) -> (name, supervised options)."""
    name, _, settings = text.partition(":")
    options = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in settings.split(",") if kv)}
    return name, options


def train(data_dir: Path | None, out: Path, configs: list[str], budget_s: float) -> None:
    """Fit each configuration on the fit cells; a configuration is skipped when the time spent plus the
    longest fit so far would pass `budget_s` (a lent GPU's minutes are counted)."""
    cells = load_elpv(data_dir, splits=("train",)) if data_dir else load_dataset("elpv").select(split="train")
    fit, val, n_val_good = holdout(cells)
    out.mkdir(parents=True, exist_ok=True)
    started_all = time.monotonic()
    runs: list[dict[str, Any]] = []
    state = {"machine": machine(), "n_fit": len(fit), "n_val": len(val), "n_val_good": n_val_good, "runs": runs}
    for text in configs:
        name, options = parse_config(text)
        longest = max((r["fit_seconds"] for r in runs if "fit_seconds" in r), default=0.0)
        if time.monotonic() - started_all + longest > budget_s:  # would likely not end within the budget
            runs.append({"name": name, "options": options, "skipped": "time budget spent"})
            continue
        detector = Supervised(**options)
        if detector.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        detector.fit(labelled_images(fit, val))
        fit_s = time.perf_counter() - started
        val_scores = scores_of(detector, LazyImages(val.paths))  # the deployed scoring path, float32
        labels = np.asarray(val.labels)
        detector.calibration = calibrate_for_overkill(val_scores[:n_val_good], TARGET_OVERKILL)
        check = val_scores[:CHECK_CELLS]
        path = out / f"{name}.safetensors"
        content_hash = save_model(path, detector, training={"benchmark": "elpv_finetune", "config": name})
        runs.append({
            "name": name, "options": options, "model_file": path.name, "content_hash": content_hash,
            "fit_seconds": fit_s, "epochs_run": len(detector.history), "best_epoch": detector.best_epoch,
            "history": detector.history, "device": str(detector.device), "fine_tune": detector.settings.fine_tune,
            "val_auroc": image_auroc(labels.tolist(), val_scores), "check_scores": check.tolist(),
            "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if detector.device.type == "cuda" else None,
        })
        print(f"{name}: {fit_s:.0f} s, {len(detector.history)} epochs (best {detector.best_epoch + 1}), "
              f"val AUROC {runs[-1]['val_auroc']:.4f}", flush=True)
        (out / "elpv_finetune_train.json").write_text(json.dumps(state, indent=1))
    (out / "elpv_finetune_train.json").write_text(json.dumps(state, indent=1))


def cpu_training_estimate(options: dict[str, Any], fit: Dataset, val: Dataset, epochs: int) -> dict[str, float]:
    """One end-to-end epoch over 64 fit + 32 validation cells on this CPU, scaled to the full run."""
    small_fit = Dataset(fit.name, fit.items[:48] + fit.items[-16:])
    small_val = Dataset(val.name, val.items[:24] + val.items[-8:])
    detector = Supervised(**{**options, "device": "cpu", "max_epochs": 1})
    started = time.perf_counter()
    detector.fit(labelled_images(small_fit, small_val))
    seconds = time.perf_counter() - started
    per_epoch = seconds * (len(fit) + len(val)) / (len(small_fit) + len(small_val))
    return {"sample_seconds": seconds, "epoch_seconds": per_epoch, "run_hours": per_epoch * epochs / 3600}


def model_scores(path: Path, val: Dataset, test: Dataset) -> dict[str, Any]:
    """Validation and test logits of one model file on this CPU, cached beside it (keyed by content hash)."""
    loaded = load_model(path)  # content hash checked
    cache = path.with_suffix(".scores.json")
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached["content_hash"] == loaded.content_hash:
            return dict(cached)
    detector = loaded.detector
    assert isinstance(detector, Supervised)
    val_scores = scores_of(detector, LazyImages(val.paths))
    started = time.perf_counter()
    test_scores = scores_of(detector, LazyImages(test.paths))
    result = {"content_hash": loaded.content_hash, "val": val_scores.tolist(), "test": test_scores.tolist(),
              "cpu_ms_per_image": (time.perf_counter() - started) * 1000 / len(test)}
    cache.write_text(json.dumps(result))
    return result


def patchcore_scores(fit: Dataset, val: Dataset, test: Dataset, cache: Path) -> dict[str, Any]:
    """Default PatchCore fitted on the fit goods (as in `elpv_supervised.py`), validation and test scores;
    cached in `cache` (delete it to refit)."""
    if cache.is_file():
        return dict(json.loads(cache.read_text()))
    goods = fit.select(label=0)
    detector = PatchCore().fit(TrainingSet.good(LazyImages(goods.paths)))
    result = {"n_fit_goods": len(goods), "val": scores_of(detector, LazyImages(val.paths)).tolist(),
              "test": scores_of(detector, LazyImages(test.paths)).tolist()}
    cache.write_text(json.dumps(result))
    return result


def evaluate_models(models: list[Path], train_json: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    trained = json.loads(train_json.read_text())
    on_gpu = "no GPU" not in trained["machine"]
    title = header("ELPV supervised, end-to-end fine-tuning (trained on a GPU, tested on this CPU)" if on_gpu
                   else "ELPV supervised, end-to-end fine-tuning on the CPU (no GPU)")
    dataset = load_dataset("elpv")
    fit, val, n_val_good = holdout(dataset.select(split="train"))
    test = dataset.select(split="test")
    by_file = {run["model_file"]: run for run in trained["runs"] if "model_file" in run}
    val_labels = np.asarray(val.labels)
    rows: list[dict[str, Any]] = []
    all_val, all_test = [], []
    for path in models:
        run = by_file[path.name]
        scores = model_scores(path, val, test)
        val_scores, test_scores = np.asarray(scores["val"]), np.asarray(scores["test"])
        all_val.append(val_scores)
        all_test.append(test_scores)
        check = np.abs(val_scores[:CHECK_CELLS] - np.asarray(run["check_scores"])).max()
        row = {
            "name": run["name"], "options": run["options"], "val_auroc": image_auroc(val_labels.tolist(), val_scores),
            "gpu_fit_seconds": run["fit_seconds"], "epochs_run": run["epochs_run"], "best_epoch": run["best_epoch"],
            "cpu_ms_per_image": scores["cpu_ms_per_image"], "gpu_vs_cpu_max_abs_diff": float(check),
            **rows_at_thresholds(val_scores, test_scores, val_labels, n_val_good, test),
        }
        rows.append(row)
        print(f"{row['name']}: val AUROC {row['val_auroc']:.4f}, test accuracy "
              f"{row['at_5pct_overkill']['all']['accuracy_rate']:.4f}, AUROC "
              f"{row['at_5pct_overkill']['all']['auroc']:.4f}, GPU vs CPU {check:.1e}", flush=True)
    chosen = max(rows, key=lambda r: r["val_auroc"])
    mean_val, mean_test = np.mean(all_val, axis=0), np.mean(all_test, axis=0)
    ensemble = {"models": [r["name"] for r in rows], "val_auroc": image_auroc(val_labels.tolist(), mean_val),
                **rows_at_thresholds(mean_val, mean_test, val_labels, n_val_good, test)}
    pc = patchcore_scores(fit, val, test, models[0].parent / "patchcore.scores.json")
    chosen_index = rows.index(chosen)
    hybrids = {
        "chosen": hybrid_rows(pc, all_val[chosen_index], all_test[chosen_index], val_labels, n_val_good, test),
        "ensemble": hybrid_rows(pc, mean_val, mean_test, val_labels, n_val_good, test),
    }
    if not on_gpu:  # trained here: its own short section, the GPU section stays as it is
        save_json("elpv_finetune_cpu", {"train": trained, "rows": rows, "chosen": chosen["name"], "hybrids": hybrids})
        text = report_cpu_trained(title, trained, chosen, hybrids["chosen"])
        write_section("elpv-finetune-cpu", text)
        print(text)
        return
    estimate = cpu_training_estimate(chosen["options"], fit, val, chosen["epochs_run"])
    save_json("elpv_finetune", {"train": trained, "rows": rows, "chosen": chosen["name"], "ensemble": ensemble,
                                "hybrids": hybrids, "cpu_estimate": estimate})
    text = report(title, trained, rows, chosen, ensemble, hybrids, estimate)
    text += deployed_ensemble_line(models[0].parent / "ensemble-eval.json")
    write_section("elpv-finetune", text)
    print(text)


def report(title: str, trained: dict[str, Any], rows: list[dict[str, Any]], chosen: dict[str, Any],
           ensemble: dict[str, Any], hybrids: dict[str, dict[str, Any]], estimate: dict[str, float]) -> str:
    lines = [
        title,
        f"Trained on: {trained['machine']}. Protocol of `elpv_supervised.py` (`holdout`): {trained['n_fit']} fit "
        f"cells, {trained['n_val']} validation cells ({trained['n_val_good']} goods); threshold for 5% overkill "
        "on the validation goods unless stated; test = the fixed 654-cell split, scored here on the CPU from "
        "the model files the GPU wrote. Intervals: Wilson 95%. Model chosen by validation AUROC: "
        f"**{chosen['name']}**.",
        "",
        "| config | settings | val AUROC | test accuracy | escape | overkill | test AUROC | GPU fit (s) | epochs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a = r["at_5pct_overkill"]["all"]
        settings = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        lines.append(f"| {r['name']} | {settings} | {r['val_auroc']:.4f} | {a['accuracy']} | {a['escape']} | "
                     f"{a['overkill']} | {a['auroc']:.4f} | {r['gpu_fit_seconds']:.0f} | {r['epochs_run']} "
                     f"(best {r['best_epoch'] + 1}) |")
    for title_text, source in ((f"Chosen model ({chosen['name']})", chosen),
                               (f"Mean logit of all {len(rows)} models (val AUROC {ensemble['val_auroc']:.4f}; "
                                "deployable as one `ensemble` model file: `elpv_finetune.py ensemble`)",
                                ensemble)):
        lines += ["", f"{title_text}, by threshold and cell type:", "",
                  "| threshold | cells | accuracy | escape | overkill | AUROC |", "|---|---|---|---|---|---|"]
        for label, key in (("5% overkill on val goods", "at_5pct_overkill"), ("classifier p = 0.5", "at_p05"),
                           ("max balanced accuracy on val", "at_val_balanced")):
            for part in ("all", "mono", "poly"):
                r = source[key][part]
                lines.append(f"| {label} | {part} ({r['n']}) | {r['accuracy']} | {r['escape']} | {r['overkill']} | "
                             f"{r['auroc']:.4f} |")
    lines += ["", "Summary at the line's operating point (threshold for 5% overkill on the validation goods):", "",
              "| method | val AUROC | test accuracy | escape | overkill | test AUROC |", "|---|---|---|---|---|---|"]
    for label, source in ((f"supervised, chosen model {chosen['name']}", chosen),
                          (f"hybrid: PatchCore + {chosen['name']}", hybrids["chosen"]),
                          (f"mean logit of {len(rows)} models", ensemble),
                          (f"hybrid: PatchCore + mean logit of {len(rows)} models", hybrids["ensemble"])):
        a = source["at_5pct_overkill"]["all"]
        lines.append(f"| {label} | {source['val_auroc']:.4f} | {a['accuracy']} | {a['escape']} | {a['overkill']} | "
                     f"{a['auroc']:.4f} |")
    lines += [
        "",
        f"Same model file on both devices: the GPU's scores of {CHECK_CELLS} validation cells and this CPU's "
        f"differ by at most {chosen['gpu_vs_cpu_max_abs_diff']:.1e} (logit units). CPU inference "
        f"{chosen['cpu_ms_per_image']:.0f} ms per cell (4 test-time flips, batch 16). Training time: "
        f"{chosen['gpu_fit_seconds']:.0f} s on the GPU; on this CPU one end-to-end epoch would take "
        f"{estimate['epoch_seconds'] / 60:.0f} min (measured on 96 cells, scaled), so the same "
        f"{chosen['epochs_run']} epochs about {estimate['run_hours']:.1f} h.",
        "",
        "Per-class recall and histories: `benchmarks/results/elpv_finetune.json`.",
    ]
    return "\n".join(lines)


def build_ensemble(models: list[Path], out: Path) -> None:
    """One deployable `ensemble` model file from trained model files, calibrated like `train` does (5% overkill
    on the validation goods, from the members' cached validation scores: run `evaluate` first)."""
    dataset = load_dataset("elpv")
    _, val, n_val_good = holdout(dataset.select(split="train"))
    members, val_scores = [], []
    for path in models:
        loaded = load_model(path)
        cache = json.loads(path.with_suffix(".scores.json").read_text())
        if cache["content_hash"] != loaded.content_hash:
            raise SystemExit(f"{path}: cached scores are of another model file; run evaluate again")
        assert isinstance(loaded.detector, Supervised)
        members.append(loaded.detector)
        val_scores.append(np.asarray(cache["val"]))
    ensemble = SupervisedEnsemble.from_members(members)
    mean_val = np.mean(val_scores, axis=0)
    ensemble.calibration = calibrate_for_overkill(mean_val[:n_val_good], TARGET_OVERKILL)
    check = ensemble.score(list(LazyImages(val.paths[:CHECK_CELLS])), MapSize.NONE).scores
    deviation = float(np.abs(check - mean_val[:CHECK_CELLS]).max())
    if deviation > 1e-4:
        raise SystemExit(f"the ensemble does not reproduce its members' mean logit (max |diff| {deviation:.1e})")
    training = {"benchmark": "elpv_finetune", "members": [m.name for m in models]}
    content_hash = save_model(out, ensemble, training=training)
    print(f"{out}: {len(members)} members, hash {content_hash[:12]}, {out.stat().st_size / 1e6:.0f} MB; "
          f"reproduces the members' mean logit to {deviation:.1e}")


def deployed_ensemble_line(eval_json: Path) -> str:
    """What `cellsight eval` said of the one-file ensemble (`ensemble` step), where it was run."""
    if not eval_json.is_file():
        return ""
    e = json.loads(eval_json.read_text())
    return (
        f"\n\nThe deployable ensemble file through the real CLI (`cellsight eval --model ensemble.safetensors "
        f"--data elpv`): accuracy {e['accuracy']:.2%}, escape {e['escape_rate']:.1%}, overkill "
        f"{e['overkill_rate']:.1%}, AUROC {e['image_auroc']:.4f} on the {e['n_images']} test cells (the mean-logit "
        f"row above, as it should be); {e['timing']['predict_images_per_second']:.1f} images/s on this CPU "
        "(4 members x 4 flips)."
    )


def report_cpu_trained(title: str, trained: dict[str, Any], row: dict[str, Any], hybrid: dict[str, Any]) -> str:
    """A model trained end to end on this CPU (smaller images to keep it to minutes, not hours)."""
    settings = ", ".join(f"{k}={v}" for k, v in row["options"].items())
    lines = [
        title,
        f"What a plant without a GPU gets from `fine_tune=full`: {settings}. Same protocol as the GPU section "
        f"({trained['n_fit']} fit cells, {trained['n_val']} validation cells; threshold for 5% overkill on the "
        f"validation goods). Training: {row['gpu_fit_seconds'] / 60:.0f} min on this CPU, {row['epochs_run']} "
        f"epochs (best {row['best_epoch'] + 1}); inference {row['cpu_ms_per_image']:.0f} ms per cell.",
        "",
        "| method | threshold | cells | accuracy | escape | overkill | AUROC |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, source in (("supervised", row), ("hybrid with PatchCore", hybrid)):
        for key, rule in (("at_5pct_overkill", "5% overkill on val goods"), ("at_p05", "logit 0")):
            for part in ("all", "mono", "poly"):
                r = source[key][part]
                lines.append(f"| {label} | {rule} | {part} ({r['n']}) | {r['accuracy']} | {r['escape']} | "
                             f"{r['overkill']} | {r['auroc']:.4f} |")
    return "\n".join([*lines, "", "Histories: `benchmarks/results/elpv_finetune_cpu.json`."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p_train = sub.add_parser("train")
    p_train.add_argument("--data-dir", type=Path, help="an ELPV data folder (labels.csv + images/)")
    p_train.add_argument("--out", type=Path, required=True)
    p_train.add_argument("--config", action="append", required=True, help="name:key=value,... (JSON values)")
    p_train.add_argument("--budget-seconds", type=float, default=float("inf"))
    p_eval = sub.add_parser("evaluate")
    p_eval.add_argument("--models", type=Path, nargs="+", required=True)
    p_eval.add_argument("--train-json", type=Path, help="default: elpv_finetune_train.json beside the models")
    p_eval.add_argument("--threads", type=int, default=2)
    p_ens = sub.add_parser("ensemble")
    p_ens.add_argument("--models", type=Path, nargs="+", required=True)
    p_ens.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.step == "train":
        train(args.data_dir, args.out, args.config, args.budget_seconds)
    elif args.step == "ensemble":
        build_ensemble(args.models, args.out)
    else:
        evaluate_models(args.models, args.train_json or args.models[0].parent / "elpv_finetune_train.json",
                        args.threads)


if __name__ == "__main__":
    main()
