"""Accuracy on real sets: every candidate configuration x every set, one run, one table.

    python benchmarks/prepare_bsdata.py --repo BSData && python benchmarks/prepare_deeppcb.py --repo DeepPCB
    python benchmarks/accuracy.py [--sets elpv,weld,...] [--configs default,...] [--anomalib] \
        [--split val|test] [--max-fit N] [--max-eval N] [--write]

Protocol, identical for every method (cellsight's configurations and anomalib's PatchCore):
- fit on what `cellsight train --data DIR` fits on (`calibration_split(...).fit`: every train good, since
  the threshold comes from cross-fitted scores; before cross-fitting, a seeded 15% was held out), capped at
  `--max-fit` evenly spaced (the threshold plays no part: every figure is threshold-free or set on the
  evaluated goods);
- score the evaluation images (`--split test`: the test split; `--split val`: a validation part never used
  by the table, for choosing settings), capped at `--max-eval` per label, seeded;
- image AUROC; pixel AUROC and AUPRO where the set has masks (maps and masks resized to a longest side of
  256 px for both methods); recall of defective images at the score cut that passes 99% / 95% of the
  evaluated goods (1% / 5% overkill), with 95% Wilson intervals; fit seconds; images/s scored at batch 16.

Sets: ELPV (fixed split shipped with cellsight); the three synthetic stations (test: seed 0, val: seed 1);
BSData and DeepPCB in MVTec form from `benchmarks/prepare_*.py`. Settings are chosen on the val split of
ELPV, the synthetic stations and BSData; DeepPCB is the held-out check nobody tunes on.
`--write` records the table as BENCHMARKS.md "Accuracy on real sets" (only from a `--split test` run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _prepare import DATA
from _record import RESULTS, ROOT, header, load_average, save_json, write_section
from cellsight.data import LazyImages, load_mvtec
from cellsight.data.dataset import GOOD, Dataset
from cellsight.data.elpv import load_elpv
from cellsight.data.images import read_image
from cellsight.data.synth.writer import write_station_dataset
from cellsight.detectors.base import AnyDetector, MapSize, TrainingSet
from cellsight.detectors.patchcore import FAST_PRESET
from cellsight.features.backbones import backbone_spec
from cellsight.metrics import aupro, image_auroc, pixel_auroc, wilson_interval
from cellsight.workflows.train import TrainRequest, calibration_split

ANOMALIB_PYTHON = Path("/work/main/.venv-anomalib/bin/python")
ANOMALIB_PYTHON = ANOMALIB_PYTHON if ANOMALIB_PYTHON.exists() else ROOT / ".venv-anomalib" / "bin" / "python"
EVAL_SIDE = 256
OVERKILLS = (0.01, 0.05)
LICENCES = {
    "elpv": "CC BY-NC-SA 4.0",
    "weld": "synthetic (cellsight)",
    "electrode": "synthetic (cellsight)",
    "can": "synthetic (cellsight)",
    "bsdata": "CC BY-SA 4.0",
    "deeppcb": "MIT; held out: never tuned on",
}

# Candidate configurations: name -> (detector, options). "default" is whatever `cellsight train` uses.
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("", {}),
    "fast": ("patchcore", dict(FAST_PRESET)),  # `cellsight train --fast`, the default before this harness
    "patchcore-exact": ("patchcore", {"search": "exact", "per_image_fraction": 0.125}),
    "patchcore-exact-frac1": ("patchcore", {"search": "exact", "per_image_fraction": 1.0}),
    "patchcore-exact-layers123": ("patchcore", {"search": "exact", "per_image_fraction": 0.125, "layers": (1, 2, 3)}),
    "patchcore-exact-sigma2": ("patchcore", {"search": "exact", "per_image_fraction": 0.125, "smoothing_sigma": 2.0}),
    **{f"bank{n}": ("patchcore", {"bank_size": n}) for n in (16384, 8192, 4096, 2048)},  # bank-size study (#17)
    "aspect-squash": ("patchcore", {"aspect": "squash"}),  # aspect study (#12): the whole image to a square
    "aspect-keep": ("patchcore", {"aspect": "keep"}),  # shorter side to image_size, square tiles along the longer
    "aspect-keep-bank3x": ("patchcore", {"aspect": "keep", "bank_size": 24576}),  # BSData: 3 tiles, same density
    # working-resolution study (#12): 8,192 rows hold a smaller share of the patches at larger sizes (patches grow
    # with the square of the side), so "size384-bank18432" keeps the default's rows per patch (2.25x) at 384
    **{f"size{n}": ("patchcore", {"image_size": n}) for n in (224, 256, 320, 384)},
    "size384-bank18432": ("patchcore", {"image_size": 384, "bank_size": 18432}),
    # trained feature-space discriminator (#12, SimpleNet-style): noise scale in units of the good features' spread
    "simplenet": ("simplenet", {}),
    **{f"simplenet-noise{v}": ("simplenet", {"noise_std": v}) for v in (0.1, 0.5, 1.0)},
    "classical": ("classical", {}),
    "rules": ("rules", {}),
}


@dataclass(frozen=True)
class BenchSet:
    name: str
    fit: Dataset
    evaluate: Dataset
    color: bool


def elpv_set(split: str) -> tuple[Dataset, Dataset]:
    """Test: the fixed split. Val: 30% of the train goods (seeded) plus the train defects, fit on the rest."""
    data = load_elpv()
    if split == "test":
        return data, data.select(split="test")
    train = data.select(split="train")
    goods = train.select(defect_class=GOOD)
    held = set(np.random.default_rng(1).permutation(len(goods))[: round(0.3 * len(goods))].tolist())
    fit = Dataset("elpv-val", tuple(item for i, item in enumerate(goods.items) if i not in held))
    rest = tuple(item for i, item in enumerate(goods.items) if i in held) + train.select(label=1).items
    return fit, Dataset("elpv-val", rest)


def synth_set(station: str, split: str) -> tuple[Dataset, Dataset]:
    seed = 0 if split == "test" else 1
    root = DATA / f"synth-seed{seed}"
    folder = root / station
    if not (folder / "cells.csv").exists():
        write_station_dataset(station, root, n_train=200, n_test_good=100, n_test_per_defect=25, seed=seed,
                              overwrite=True)
    data = load_mvtec(folder, station)
    return data, data.select(split="test")


def mvtec_set(name: str, split: str) -> tuple[Dataset, Dataset]:
    folder = DATA / name
    if not folder.is_dir():
        raise SystemExit(f"{folder}: missing; run benchmarks/prepare_{name}.py --repo <clone of the repository>")
    data = load_mvtec(folder, name)
    return data, data.select(split=split)


def load_set(name: str, split: str, max_fit: int, max_eval: int) -> BenchSet:
    if name == "elpv":
        data, evaluate = elpv_set(split)
    elif name in ("weld", "electrode", "can"):
        data, evaluate = synth_set(name, split)
    else:
        data, evaluate = mvtec_set(name, split)
    if name == "elpv" and split == "val":
        fit = data  # already the fitting part
    else:
        request = TrainRequest()
        fit = calibration_split(data, request.val_fraction, request.seed, request.folds).fit
    fit = Dataset(fit.name, tuple(fit.items[i] for i in evenly_spaced(len(fit), max_fit)))
    rng = np.random.default_rng(0)
    kept = []
    for label in (0, 1):
        part = evaluate.select(label=label).items
        kept += [part[i] for i in sorted(rng.permutation(len(part))[:max_eval].tolist())]
    color = read_image(fit.items[0].path).ndim == 3
    return BenchSet(name, fit, Dataset(evaluate.name, tuple(kept)), color)


def evenly_spaced(n: int, keep: int) -> list[int]:
    if keep >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(1, keep - 1)) for i in range(keep)})


def eval_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """(width, height) with the longest side EVAL_SIDE, aspect kept."""
    height, width = shape[:2]
    scale = EVAL_SIDE / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def masks_of(bench: BenchSet) -> list[np.ndarray] | None:
    if not any(item.mask_path for item in bench.evaluate):
        return None
    out = []
    for item in bench.evaluate:
        size = eval_size(read_image(item.path).shape) if item.mask_path is None else None
        if item.mask_path is None:
            assert size is not None
            out.append(np.zeros((size[1], size[0]), bool))
            continue
        mask = read_image(item.mask_path)
        mask = mask if mask.ndim == 2 else mask.max(axis=2)
        out.append(cv2.resize(mask, eval_size(mask.shape), interpolation=cv2.INTER_NEAREST) > 0)
    return out


def run_cellsight(config: str, bench: BenchSet, with_maps: bool) -> dict[str, Any]:
    name, options = CONFIGS[config]
    request = TrainRequest.with_options(name, options) if name else TrainRequest()
    detector = request.build_detector()
    started = time.perf_counter()
    detector.fit(TrainingSet.good(LazyImages(bench.fit.paths)))
    fit_seconds = time.perf_counter() - started
    scores, maps, ips = score_all(detector, LazyImages(bench.evaluate.paths), with_maps)
    return {"detector": request.detector, "settings": detector.settings.to_json(), "fit_seconds": fit_seconds,
            "images_per_s": ips, "scores": scores, "maps": maps}


def score_all(detector: AnyDetector, images: LazyImages, with_maps: bool,
              batch: int = 16) -> tuple[np.ndarray, list[np.ndarray], float]:
    scores, maps = [], []
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        chunk = [images[i] for i in range(start, min(start + batch, len(images)))]
        found = detector.score(chunk, MapSize.WORKING if with_maps else MapSize.NONE)
        scores.append(found.scores)
        if with_maps and found.maps is not None:
            maps += [cv2.resize(m.astype(np.float32), eval_size(image.shape), interpolation=cv2.INTER_LINEAR)
                     for m, image in zip(found.maps, chunk, strict=True)]
    elapsed = time.perf_counter() - started
    return np.concatenate(scores).astype(np.float64), maps, len(images) / elapsed


def block_names(backbone: str, levels: Sequence[int]) -> list[str]:
    """timm module names of cellsight's feature levels: tf_efficientnet_lite0's level 3 is `blocks.4` (the end of
    the stride-16 stage), not `blocks.3`. Runs before 2026-12-03 passed `blocks.{level}` (blocks.3), so their
    anomalib rows were not same-layers (BENCHMARKS "PatchCore feature blocks")."""
    import timm

    model = timm.create_model(backbone, pretrained=False, features_only=True, out_indices=tuple(levels))
    info: Any = model.feature_info
    return list(info.module_name())


def run_anomalib(bench: BenchSet, with_maps: bool, fit_budget: float, key: str) -> dict[str, Any]:
    """anomalib 2.7 PatchCore, same backbone, layers and size as the default, through anomalib_runner.py.

    Its coreset (KCenterGreedy over every patch) is quadratic: the runner fits on the largest evenly spaced
    subset of the fit images it predicts to finish in `fit_budget` seconds (the table says how many).
    Results are cached under benchmarks/data/cache/ (they do not change when cellsight does).
    """
    settings = TrainRequest().build_detector().settings
    layers = block_names(settings.backbone, settings.layers)  # type: ignore[attr-defined]
    cache = DATA / "cache" / f"anomalib-{key}-{'+'.join(layers)}.npz"
    if cache.exists():
        stored = np.load(cache, allow_pickle=False)
        meta = json.loads(str(stored["meta"]))
        return meta | {"scores": stored["scores"], "maps": _resized(stored["maps"], bench) if with_maps else []}
    spec_b = backbone_spec(settings.backbone)  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as tmp:
        spec = {
            "backbone": settings.backbone,  # type: ignore[attr-defined]
            "layers": layers,
            "image_size": settings.image_size,  # type: ignore[attr-defined]
            "mean": list(spec_b.mean), "std": list(spec_b.std),
            "fit": [str(p) for p in bench.fit.paths], "calibrate": [],
            "test": [str(p) for p in bench.evaluate.paths], "threads": 2, "batch_size": 16, "seed": 0,
            "patchcore": {"max_fit_seconds": fit_budget},
            "color": bench.color, "maps_out": str(Path(tmp) / "maps.npy") if with_maps else None,
        }
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        out = Path(tmp) / "out.json"
        subprocess.run([str(ANOMALIB_PYTHON), str(ROOT / "benchmarks" / "anomalib_runner.py"), "--spec",
                        str(Path(tmp) / "spec.json"), "--out", str(out), "--model", "patchcore"], check=True)
        result = json.loads(out.read_text())["models"]["patchcore"]
        raw = np.load(Path(tmp) / "maps.npy") if with_maps else np.zeros((0, 1, 1), np.float16)
    meta = {"detector": f"anomalib {result['versions']['anomalib']} PatchCore", "fit_seconds": result["fit_seconds"],
            "images_per_s": result["predict_images_per_s"], "fit_images": result["config"]["fit_images_used"]}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, meta=json.dumps(meta), scores=np.asarray(result["test_scores"]), maps=raw)
    return meta | {"scores": np.asarray(result["test_scores"]), "maps": _resized(raw, bench) if with_maps else []}


def _resized(raw: np.ndarray, bench: BenchSet) -> list[np.ndarray]:
    return [cv2.resize(m.astype(np.float32), eval_size(read_image(p).shape), interpolation=cv2.INTER_LINEAR)
            for m, p in zip(raw, bench.evaluate.paths, strict=True)]


def metrics(bench: BenchSet, run: dict[str, Any], masks: list[np.ndarray] | None) -> dict[str, Any]:
    labels = np.asarray(bench.evaluate.labels)
    scores = run["scores"]
    goods, defects = np.sort(scores[labels == 0]), scores[labels == 1]
    row: dict[str, Any] = {"image_auroc": image_auroc(labels, scores), "n_good": int((labels == 0).sum()),
                           "n_defective": int(labels.sum()), "fit_images": run.get("fit_images", len(bench.fit)),
                           "fit_seconds": run["fit_seconds"], "images_per_s": run["images_per_s"],
                           "detector": run["detector"]}
    for overkill in OVERKILLS:
        # the cut passes the lowest ceil((1 - overkill) * n) goods: at most `overkill` of them fail
        cut = goods[min(len(goods) - 1, int(np.ceil((1 - overkill) * len(goods))) - 1)]
        found = int((defects > cut).sum())
        low, high = wilson_interval(found, len(defects))
        row[f"recall_at_{overkill:g}"] = {"rate": found / len(defects), "low": low, "high": high}
    if masks is not None and run["maps"]:
        row["pixel_auroc"] = pixel_auroc(masks, run["maps"])
        row["aupro"] = aupro(masks, run["maps"])
    return row


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["| set (licence) | method | image AUROC | pixel AUROC | AUPRO | recall @1% overkill | "
             "recall @5% overkill | eval good / defective | fit images | fit s | images/s |", "|" + "---|" * 11]

    def recall(r: dict[str, float]) -> str:
        return f"{r['rate']:.1%} [{r['low']:.0%}, {r['high']:.0%}]"

    for set_name, methods in results.items():
        for method, r in methods.items():
            pix = f"{r['pixel_auroc']:.3f}" if "pixel_auroc" in r else "-"
            pro = f"{r['aupro']:.3f}" if "aupro" in r else "-"
            lines.append(
                f"| {set_name} ({LICENCES.get(set_name, '')}) | {method} | {r['image_auroc']:.3f} | {pix} | {pro} | "
                f"{recall(r['recall_at_0.01'])} | {recall(r['recall_at_0.05'])} | {r['n_good']} / {r['n_defective']} | "
                f"{r['fit_images']} | "
                f"{r['fit_seconds']:.0f} | {r['images_per_s']:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="elpv,weld,electrode,can,bsdata,deeppcb")
    parser.add_argument("--configs", default="default")
    parser.add_argument("--anomalib", action="store_true", help="add anomalib PatchCore (needs .venv-anomalib)")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--max-fit", type=int, default=400)
    parser.add_argument("--max-eval", type=int, default=150, help="per label (good, defective)")
    parser.add_argument("--anomalib-fit-seconds", type=float, default=240.0,
                        help="anomalib's fit budget: it fits on as many fit images as it can in this time")
    parser.add_argument("--no-pixel", action="store_true", help="skip maps and pixel metrics")
    parser.add_argument("--write", action="store_true", help="record the table in BENCHMARKS.md (test split)")
    parser.add_argument("--notes", type=Path,
                        help="with --write: a file of bullets for the section (budgets, what makes a number weak)")
    parser.add_argument("--merge", action="store_true",
                        help="add these configs' rows to the set's saved results (other rows and their run kept)")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: the table from the per-set results already saved (sets run one by one)")
    args = parser.parse_args()
    if args.write and args.split != "test":
        raise SystemExit("--write records test-split tables only")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    runs: dict[str, dict[str, Any]] = {}
    for set_name in args.sets.split(","):
        if args.table_only:
            results[set_name] = json.loads((RESULTS / f"accuracy_{args.split}_{set_name}.json").read_text())
            run_file = RESULTS / f"accuracy_{args.split}_{set_name}_run.json"
            if run_file.exists():
                runs[set_name] = json.loads(run_file.read_text())
            continue
        started = {"start": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_at_start": load_average()}
        bench = load_set(set_name, args.split, args.max_fit, args.max_eval)
        masks = None if args.no_pixel else masks_of(bench)
        methods = [c for c in args.configs.split(",") if c] + (["anomalib PatchCore"] if args.anomalib else [])
        results[set_name] = {}
        for method in methods:
            if method == "anomalib PatchCore":
                key = f"{set_name}-{args.split}-{args.max_fit}-{args.max_eval}-{args.anomalib_fit_seconds:g}"
                run = run_anomalib(bench, masks is not None, args.anomalib_fit_seconds, key)
            else:
                run = run_cellsight(method, bench, masks is not None)
            row = metrics(bench, run, masks)
            results[set_name][method] = row
            pix = f" pixel {row['pixel_auroc']:.3f}" if "pixel_auroc" in row else ""
            print(f"{set_name} {method}: image AUROC {row['image_auroc']:.3f}{pix} "
                  f"fit {row['fit_seconds']:.0f}s {row['images_per_s']:.1f} img/s", flush=True)
        command = " ".join(["python benchmarks/accuracy.py", *sys.argv[1:]])
        run = started | {"end": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_at_end": load_average(),
                         "command": command}
        if args.merge:  # the earlier rows stay, with their run; this run is listed as added
            saved = RESULTS / f"accuracy_{args.split}_{set_name}"
            results[set_name] = json.loads(saved.with_suffix(".json").read_text()) | results[set_name]
            earlier = json.loads((RESULTS / f"accuracy_{args.split}_{set_name}_run.json").read_text())
            run = earlier | {"added": [*earlier.get("added", []), run | {"methods": methods}]}
        save_json(f"accuracy_{args.split}_{set_name}", results[set_name])
        save_json(f"accuracy_{args.split}_{set_name}_run", run)
    print(table(results))
    if args.write:
        body = header("Accuracy on real sets") + (
            "- protocol: benchmarks/accuracy.py docstring; fit capped, evaluation subsampled per label (seeded; "
            "sizes in the table); settings chosen on val splits, DeepPCB never tuned on; each set "
            "was run alone (`--sets NAME`), then this table was assembled with `--table-only --write`\n\n"
            + "- sets: ELPV good = defect probability 0 (fixed split shipped with cellsight); synthetic stations "
            "from `cellsight.data.synth` (200 train goods, seed 0); BSData type 2 only, good = the 710 images "
            "without an annotation file (`benchmarks/prepare_bsdata.py`); DeepPCB good = the defect-free templates, "
            "defective = the tested images, masks = the defect boxes (`benchmarks/prepare_deeppcb.py`)\n"
            "- anomalib PatchCore fits on as many fit images as its coreset finishes in the budget (its `fit images` "
            "column); cellsight `default` is `cellsight train` with no options, `fast` is `--fast`, `rules` the "
            "rule-based baseline (`--detector rules`)\n"
            + "".join(f"- {name}: `{r['command']}`, {r['start']} to {r['end']}, load average {r['load_at_start']} "
                      f"at start, {r['load_at_end']} at the end\n" for name, r in runs.items())
            + "".join(f"- {name}, rows {', '.join(a['methods'])} added later (`--merge`): `{a['command']}`, "
                      f"{a['start']} to {a['end']}, load average {a['load_at_start']} at start\n"
                      for name, r in runs.items() for a in r.get("added", []))
            + (args.notes.read_text().rstrip() + "\n" if args.notes else "") + "\n"
            + table(results) + "\n"
        )
        write_section("accuracy", body)


if __name__ == "__main__":
    main()
