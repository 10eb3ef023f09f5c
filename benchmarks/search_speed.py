"""Nearest-neighbour search per image: full scan vs pruned exact search vs HNSW, in one process, A/B alternated.

PatchCore's default search is exact over an 8,192-row bank of 152-dim features; this measures what one
256 px image's search (1,024 patches) costs with each method on an ELPV-fitted bank, and how exact each is:

- `full`: the full scan (`exact_search.py`, ONNX Runtime Gemm + row minimum), the default before;
- `pruned`: the certified pruned search (`pruned_search.py`), what search="exact" runs now;
- `hnsw ef16` / `hnsw ef64`: faiss HNSW (`--fast` uses efSearch 16) over the same bank.

The bank is fitted on the first `--fit` ELPV train goods (default settings); the queries are the patch
features of other train images (goods not fitted and train defects; the test split is not used). Timing:
rounds over the images; in each round every method searches the same image (batch 1: one image, timed
alone) or the same 16 images one call per image (batch 16, as `PatchCore.score` searches a batch), in an
order rotated every round so that load from other work on the machine falls on all methods alike.
Exactness against the full scan: patches whose distance is larger than the full scan's by more than float32
rounding (missed the nearest row), and the largest change in an image's score (max of the smoothed map).

    PYTHONPATH=src .venv/bin/python benchmarks/search_speed.py [--threads 2] [--rounds 6] [--write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import header, load_average, save_json, write_section

METHODS = ("full", "pruned", "hnsw ef16", "hnsw ef64")


def fit_and_features(fit: int, goods: int, defects: int) -> tuple[Any, np.ndarray]:
    """A default PatchCore fitted on ELPV train goods, and (images, patches, dim) features of other train images."""
    from cellsight.data import LazyImages, load_dataset
    from cellsight.data.images import read_image
    from cellsight.detectors.base import TrainingSet
    from cellsight.detectors.patchcore import PatchCore

    data = load_dataset("elpv")
    train = data.select(split="train")
    good_paths = train.select(defect_class="good").paths
    rng = np.random.default_rng(0)
    rest = good_paths[fit:]
    bad = train.select(label=1).paths
    chosen = [rest[i] for i in rng.choice(len(rest), goods, replace=False)]
    chosen += [bad[i] for i in rng.choice(len(bad), defects, replace=False)]
    detector = PatchCore().fit(TrainingSet.good(LazyImages(good_paths[:fit])))
    features = [detector.extractor([read_image(p)]).numpy() for p in chosen]
    grid = np.concatenate(features)
    return detector, grid.reshape(len(chosen), -1, grid.shape[-1])


def searches(bank: np.ndarray) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    import faiss

    from cellsight.detectors.exact_search import ExactSearch
    from cellsight.detectors.patchcore import HNSW_EF_CONSTRUCTION, HNSW_LINKS

    full = ExactSearch(bank, prune=None)
    pruned = ExactSearch(bank)
    assert pruned.prune is not None
    hnsw = faiss.IndexHNSWFlat(bank.shape[1], HNSW_LINKS)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    hnsw.add(bank)

    def graph(ef: int) -> Callable[[np.ndarray], np.ndarray]:
        params = faiss.SearchParametersHNSW(efSearch=ef)  # type: ignore[attr-defined]
        return lambda rows: np.asarray(hnsw.search(rows, 1, params=params)[0][:, 0])

    return {"full": full.squared, "pruned": pruned.squared, "hnsw ef16": graph(16), "hnsw ef64": graph(64),
            "_pruned_index": pruned}  # type: ignore[dict-item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fit", type=int, default=100, help="ELPV train goods the bank is fitted on")
    parser.add_argument("--images", type=int, default=32, help="query images: half goods, half defects")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--write", action="store_true", help="record the table in BENCHMARKS.md")
    args = parser.parse_args()
    os.environ["CELLSIGHT_THREADS"] = str(args.threads)
    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    title = header("Nearest-neighbour search per image: full scan, pruned exact, HNSW (ELPV bank)")
    print(title, flush=True)
    detector, queries = fit_and_features(args.fit, args.images // 2, args.images - args.images // 2)
    bank = detector.memory_bank
    methods = searches(bank)
    pruned_index = methods.pop("_pruned_index")
    h = w = round(queries.shape[1] ** 0.5)
    print(f"bank {bank.shape}, queries {queries.shape}", flush=True)

    # Exactness (and warm-up): every method on every image, against the full scan.
    found = {name: np.stack([search(q) for q in queries]) for name, search in methods.items()}
    certified, searched = [], []
    for q in queries:
        pruned_index.squared(q)
        stats = pruned_index._pruning().last_stats
        certified.append(1.0 - stats["fallback"])
        searched.append(stats["searched"])
    reference = found["full"]
    scale = float(np.square(bank - bank.mean(0)).sum(1).max())
    scores = {name: np.array([detector._work_map(np.sqrt(np.maximum(d, 0)).reshape(h, w)).max() for d in dist])
              for name, dist in found.items()}
    exactness: dict[str, dict[str, float]] = {}
    root = np.sqrt(np.maximum(reference, 0))
    for name, dist in found.items():
        missed = dist > reference + 1e-5 * scale + 1e-5 * reference
        exactness[name] = {
            "missed": float(missed.mean()),
            "max_distance_change": float(np.abs(np.sqrt(np.maximum(dist, 0)) - root).max()),
            "max_score_change": float(np.abs(scores[name] - scores["full"]).max() / scores["full"].mean()),
        }

    # Timing: rounds over images, methods in rotated order within each round.
    names = list(methods)
    times: dict[str, dict[int, list[float]]] = {name: {1: [], 16: []} for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for i in range(len(queries)):  # batch 1: one image, timed alone
            for name in order:
                t0 = time.perf_counter()
                methods[name](queries[(i + r) % len(queries)])
                times[name][1].append((time.perf_counter() - t0) * 1000.0)
        for start in range(0, len(queries) - 15, 16):  # batch 16: 16 images, one call each
            for name in order:
                t0 = time.perf_counter()
                for q in queries[start : start + 16]:
                    methods[name](q)
                times[name][16].append((time.perf_counter() - t0) * 1000.0 / 16)
    results = {
        name: {
            "batch1_median_ms": float(np.median(times[name][1])),
            "batch1_p90_ms": float(np.percentile(times[name][1], 90)),
            "batch16_median_ms": float(np.median(times[name][16])),
            **exactness[name],
        }
        for name in names
    }
    results["pruned"] |= {"certified": float(np.mean(certified)), "groups_searched": float(np.mean(searched))}
    save_json("search_speed", {"bank": list(bank.shape), "queries": list(queries.shape), "results": results,
                               "load_average_end": load_average()})
    full_ms = results["full"]["batch1_median_ms"]
    lines = [
        title,
        f"Bank: {bank.shape[0]:,} rows x {bank.shape[1]} dims, default PatchCore fitted on {args.fit} ELPV train "
        f"goods; queries: {len(queries)} other ELPV train images ({len(queries) // 2} goods, the rest defects; not "
        f"the test split), {queries.shape[1]:,} patches each. {args.threads} threads, one call per image. "
        f"ms per image: median over {args.rounds} rounds (batch 1: each image timed alone; batch 16: 16 images' "
        "calls timed together / 16), methods alternated in rotated order. Missed: patches whose distance exceeds "
        "the full scan's by more than float32 rounding; score change: largest |image score - full scan's| over "
        "the mean score.",
        "",
        "| method | batch 1 ms (median / p90) | batch 16 ms per image | vs full | missed patches | max score change |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        res = results[name]
        lines.append(
            f"| {name} | {res['batch1_median_ms']:.1f} / {res['batch1_p90_ms']:.1f} | {res['batch16_median_ms']:.1f} "
            f"| {full_ms / res['batch1_median_ms']:.2f}x | {100 * res['missed']:.3f}% | {res['max_score_change']:.2e} |"
        )
    pr = results["pruned"]
    lines += ["", f"Pruned: {100 * pr['certified']:.2f}% of patches answered under the certificate (the rest by "
              f"the full scan), {100 * pr['groups_searched']:.1f}% of the bank's 64-row groups searched exactly "
              f"per patch on average; largest distance change vs the full scan {pr['max_distance_change']:.2e} "
              "(float32 rounding)."]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("search-speed", text)


if __name__ == "__main__":
    main()
