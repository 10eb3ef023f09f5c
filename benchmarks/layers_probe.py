"""Probe (issue 12, item 2) on the val splits: which tf_efficientnet_lite0 blocks should PatchCore's features come from?

    python benchmarks/layers_probe.py [--sets bsdata,weld,elpv,electrode,can] [--max-fit 100] [--max-eval 50] [--write]

cellsight's default `layers=(2, 3)` are timm feature levels 2 and 3, the ends of the stride-8 and stride-16
stages: `blocks.2` (40 channels) and `blocks.4` (112). The anomalib runner (ANOMALIB.md) takes `blocks.2` +
`blocks.3` (80 channels, the first stride-16 block), which timm's `features_only` cannot express. Here the
blocks are read from the full ImageNet classifier (same offline weights), pooled and joined as the default
features are (`features.graph.pool_levels`), and fed to an otherwise default PatchCore (bank, search, map
smoothing, image score), so the rows differ only in the blocks. The default row is checked against the
real extractor's features first. Val splits only; image AUROC.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import header, save_json, write_section
from accuracy import load_set
from cellsight.data import LazyImages
from cellsight.detectors.base import MapSize, TrainingSet
from cellsight.detectors.patchcore import PatchCore
from cellsight.features.backbones import create_classifier, preprocess
from cellsight.features.extractor import PatchFeatureExtractor
from cellsight.features.graph import pool_levels
from cellsight.metrics import image_auroc

BLOCKS = {
    "blocks.2 + blocks.4 (default)": (2, 4),
    "blocks.2 + blocks.3 (anomalib runner)": (2, 3),
    "blocks.1 + blocks.2 + blocks.3": (1, 2, 3),
}


class BlockFeatures:
    """Stands in for PatchCore's extractor: the outputs of chosen blocks of the full classifier, pooled."""

    def __init__(self, base: PatchFeatureExtractor, blocks: Sequence[int]) -> None:
        self.base, self.blocks = base, tuple(blocks)
        self.model: Any = create_classifier(base.config.backbone).eval()
        self.runtime, self.workers, self.config, self.spec = "torch", 1, base.config, base.spec

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        x = preprocess(torch.from_numpy(self.base.prepare(images)), self.spec)
        model, levels = self.model, []
        with torch.inference_mode():
            x = model.bn1(model.conv_stem(x))
            for i, block in enumerate(model.blocks[: max(self.blocks) + 1]):
                x = block(x)
                if i in self.blocks:
                    levels.append(x)
            return pool_levels(levels).permute(0, 2, 3, 1).contiguous()


def check_default(detector: PatchCore) -> float:
    """Largest difference between the real extractor's default features and these blocks' (float rounding)."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (300, 200), dtype=np.uint8) for _ in range(2)]
    return float((detector.extractor(images) - BlockFeatures(detector.extractor, (2, 4))(images)).abs().max())


def run(set_name: str, max_fit: int, max_eval: int) -> dict[str, float]:
    bench = load_set(set_name, "val", max_fit, max_eval)
    labels = np.asarray(bench.evaluate.labels)
    out = {}
    for name, blocks in BLOCKS.items():
        detector = PatchCore()
        detector._extractor = BlockFeatures(detector.extractor, blocks)  # type: ignore[assignment]
        detector.fit(TrainingSet.good(LazyImages(bench.fit.paths)))
        images = LazyImages(bench.evaluate.paths)
        scores = [
            detector.score([images[i] for i in range(s, min(s + 16, len(images)))], MapSize.NONE).scores
            for s in range(0, len(images), 16)
        ]
        out[name] = image_auroc(labels, np.concatenate(scores))
    print(set_name, ", ".join(f"{k} {v:.3f}" for k, v in out.items()), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="bsdata,weld,elpv,electrode,can")
    parser.add_argument("--max-fit", type=int, default=100)
    parser.add_argument("--max-eval", type=int, default=50)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    difference = check_default(PatchCore())
    if difference > 1e-3:
        raise SystemExit(f"the block reader does not reproduce the default features (max difference {difference})")
    results = {s: run(s, args.max_fit, args.max_eval) for s in args.sets.split(",")}
    save_json("layers_probe_val", results)
    sets = list(results)
    lines = ["| blocks (val image AUROC) | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{results[s][name]:.3f}" for s in sets) + " |" for name in BLOCKS]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(
            "layers-probe",
            header("PatchCore feature blocks on the val splits (issue 12; default kept)")
            + f"- val splits, {args.max_fit} fit images, {args.max_eval} good + {args.max_eval} defective "
            f"evaluated per set; the block reader matches the default features to {difference:.1e}\n\n" + table + "\n",
        )


if __name__ == "__main__":
    main()
