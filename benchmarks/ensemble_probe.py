"""Probe (issue 12, item 3): does a good-only ensemble (PatchCores on other backbones, SimpleNet) beat the default?

    python benchmarks/ensemble_probe.py --set elpv --members lite0,lite2 [--max-fit N] [--max-eval N]
    python benchmarks/ensemble_probe.py --set elpv --members lite0,lite2,mnv2 --combine-only

Each member is a detector (PatchCore, or the SimpleNet-style discriminator) fitted with `cross_fit` on the
harness's fit images (val split only), so it has its own cross-fitted good scores; its maps are z-normalised
by their mean and spread (members score on different scales), then averaged; the ensemble's score is the
averaged map's maximum.
Members are cached under benchmarks/data/cache/ (per set, sizes and member), so a combination costs nothing
once its members ran. Printed: image AUROC (and pixel AUROC where the set has masks) of every member alone
and of every combination of two or more, from the same fits and the same evaluated images.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _prepare import DATA
from accuracy import eval_size, load_set, masks_of
from cellsight.data import LazyImages
from cellsight.detectors.base import MapSize, TrainingSet
from cellsight.detectors.registry import detector_class
from cellsight.metrics import image_auroc, pixel_auroc

MEMBERS: dict[str, tuple[str, dict[str, Any]]] = {
    "lite0": ("patchcore", {}),  # the default
    "lite2": ("patchcore", {"backbone": "tf_efficientnet_lite2"}),
    "lite1": ("patchcore", {"backbone": "tf_efficientnet_lite1"}),
    "mnv2": ("patchcore", {"backbone": "mobilenetv2_100"}),
    "lite0-320": ("patchcore", {"image_size": 320}),
    "lite0-192": ("patchcore", {"image_size": 192}),
    "lite0-l123": ("patchcore", {"layers": (1, 2, 3)}),
    "simplenet": ("simplenet", {}),  # the trained feature-space discriminator, cross-fitted in 5 folds
    "simplenet-noise0.5": ("simplenet", {"noise_std": 0.5}),
}
FOLDS = 5  # detectors that refit per fold (PatchCore leaves each image out whatever the folds)
SIDE = 256  # every member's working map is resized to this square before combining


def run_member(member: str, set_name: str, max_fit: int, max_eval: int) -> dict[str, np.ndarray]:
    cache = DATA / "cache" / f"ensemble-{set_name}-val-{max_fit}-{max_eval}-{member}.npz"
    if cache.exists():
        stored = np.load(cache)
        return {k: stored[k] for k in stored.files}
    bench = load_set(set_name, "val", max_fit, max_eval)
    name, options = MEMBERS[member]
    detector = detector_class(name)(**options)
    started = time.perf_counter()
    folds = [i % FOLDS for i in range(len(bench.fit))]
    goods = detector.cross_fit(TrainingSet.good(LazyImages(bench.fit.paths)), folds)
    fit_s = time.perf_counter() - started
    images = LazyImages(bench.evaluate.paths)
    scores, maps = [], []
    started = time.perf_counter()
    for start in range(0, len(images), 16):
        chunk = [images[i] for i in range(start, min(start + 16, len(images)))]
        found = detector.score(chunk, MapSize.WORKING)
        assert found.maps is not None
        scores.append(found.scores)
        maps += [cv2.resize(m.astype(np.float32), (SIDE, SIDE), interpolation=cv2.INTER_LINEAR) for m in found.maps]
    predict_s = time.perf_counter() - started
    out = {"goods": goods.astype(np.float64), "scores": np.concatenate(scores).astype(np.float64),
           "maps": np.stack(maps).astype(np.float16), "fit_s": np.array(fit_s), "predict_s": np.array(predict_s)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def to_eval(maps: np.ndarray, bench_shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    pairs = zip(maps, bench_shapes, strict=True)
    return [cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) for m, size in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True)
    parser.add_argument("--members", default="lite0,lite2")
    parser.add_argument("--max-fit", type=int, default=100)
    parser.add_argument("--max-eval", type=int, default=50)
    parser.add_argument("--combine-only", action="store_true", help="only members already cached")
    args = parser.parse_args()
    names = args.members.split(",")
    bench = load_set(args.set, "val", args.max_fit, args.max_eval)
    labels = np.asarray(bench.evaluate.labels)
    masks = masks_of(bench)
    from cellsight.data.images import read_image

    shapes = [eval_size(read_image(p).shape) for p in bench.evaluate.paths] if masks is not None else []
    runs = {}
    for name in names:
        cache = DATA / "cache" / f"ensemble-{args.set}-val-{args.max_fit}-{args.max_eval}-{name}.npz"
        if args.combine_only and not cache.exists():
            continue
        runs[name] = run_member(name, args.set, args.max_fit, args.max_eval)
        r = runs[name]
        print(f"member {name}: fit+cross-fit {float(r['fit_s']):.0f}s predict {float(r['predict_s']):.0f}s "
              f"({len(labels)} images)", flush=True)
    for k in range(1, len(runs) + 1):
        for combo in itertools.combinations(runs, k):
            zmaps = []
            zscores = []
            for name in combo:
                r = runs[name]
                mu, sd = r["goods"].mean(), r["goods"].std() + 1e-12
                zmaps.append((r["maps"].astype(np.float32) - mu) / sd)
                zscores.append((r["scores"] - mu) / sd)
            mean_map = np.mean(zmaps, axis=0)
            map_score = mean_map.reshape(len(mean_map), -1).max(axis=1)
            line = f"{'+'.join(combo):28s} image AUROC map-avg {image_auroc(labels, map_score):.3f}"
            if k > 1:
                line += f"  score-avg {image_auroc(labels, np.mean(zscores, axis=0)):.3f}"
            if masks is not None:
                line += f"  pixel AUROC {pixel_auroc(masks, to_eval(mean_map, shapes)):.3f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
