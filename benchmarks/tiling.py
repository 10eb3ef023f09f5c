"""Line speed: the backbone on TorchScript vs ONNX Runtime, and tiled PatchCore on a 8192x2048 web.

Everything runs in one process, alternating the two runtimes, so a shared machine's noise hits both
alike; the ratios are the numbers to trust, the absolute times depend on the load.

    PYTHONPATH=src .venv/bin/python benchmarks/tiling.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import header, save_json, write_section
from cellsight.detectors.base import TrainingSet
from cellsight.detectors.patchcore import PatchCore
from cellsight.features.backbones import DEFAULT_BACKBONE, create_feature_extractor
from cellsight.features.onnx_backbone import OnnxBackbone, export_onnx


def web(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A synthetic coating web: fine grain, machine-direction stripes, a slow gain drift."""
    grain = cv2.GaussianBlur(rng.normal(0.0, 1.0, (height, width)).astype(np.float32), (0, 0), 1.5)
    x = np.arange(width, dtype=np.float32)
    image = 128.0 + 14.0 * grain / grain.std() + 8.0 * np.sin(2 * np.pi * x / 24)[None, :] + 20.0 * x[None, :] / width
    return np.clip(image, 0, 255).astype(np.uint8)


def backbone_ms(repeats: int, batch: int = 16, size: int = 256) -> dict[str, float]:
    """ms per image of the backbone alone (median of `repeats`), frozen TorchScript vs ONNX Runtime."""
    model = create_feature_extractor(DEFAULT_BACKBONE, (2, 3))
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(model, x[:1], check_trace=False).eval())
        onnx = OnnxBackbone(export_onnx(model, size))
        times: dict[str, list[float]] = {"torch": [], "onnx": []}
        for warm_up in (frozen, onnx):
            warm_up(x)
        for _ in range(repeats):
            for name, run in (("torch", frozen), ("onnx", onnx)):
                started = time.perf_counter()
                run(x)
                times[name].append((time.perf_counter() - started) * 1000.0 / batch)
    return {name: statistics.median(values) for name, values in times.items()}


def tiled_throughput(repeats: int, fit_webs: int) -> dict[str, object]:
    """Fit on 2048x512 webs, then score an 8192x2048 web (with two defects) on each runtime: MP/s."""
    rng = np.random.default_rng(0)
    detector = PatchCore(tile_size=256, tile_overlap=32, bank_size=4096, per_image_fraction=0.05)
    started = time.perf_counter()
    detector.fit(TrainingSet.good([web(rng, 512, 2048) for _ in range(fit_webs)]))
    fit_seconds = time.perf_counter() - started
    big = web(rng, 2048, 8192)
    cv2.circle(big, (3000, 1000), 6, 30, -1)
    cv2.circle(big, (6496, 224), 6, 30, -1)  # on a tile corner
    megapixels = big.size / 1e6
    result: dict[str, object] = {"fit_seconds": fit_seconds, "fit_webs": fit_webs, "tiles": 0}
    scores: dict[str, float] = {}
    rates: dict[str, list[float]] = {"torch": [], "onnx": []}
    settings, tensors = detector.settings, detector.tensors()
    runners = {name: PatchCore(settings.model_copy(update={"runtime": name})) for name in rates}
    for runner in runners.values():
        runner.restore(detector.fitted_config(), tensors)
    for runner in runners.values():
        runner.score([big[:256, :256]])  # warm-up: trace / export and session
    for _ in range(repeats):
        for runtime, runner in runners.items():
            started = time.perf_counter()
            out = runner.score([big])
            raw, maps = out.scores, out.maps or []
            rates[runtime].append(megapixels / (time.perf_counter() - started))
            scores[runtime] = float(raw[0])
            peak = np.unravel_index(int(maps[0].argmax()), maps[0].shape)
            result[f"peak_{runtime}"] = [int(peak[1]), int(peak[0])]
    result["tiles"] = len(detector._grid(big).origins)
    result["megapixels"] = megapixels
    result["mp_per_s"] = {name: statistics.median(values) for name, values in rates.items()}
    result["score"] = scores
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fit-webs", type=int, default=4)
    args = parser.parse_args()
    backbone = backbone_ms(repeats=5 * args.repeats)
    tiled = tiled_throughput(args.repeats, args.fit_webs)
    save_json("tiling", {"backbone_ms_per_image": backbone, "tiled": tiled})
    rate = tiled["mp_per_s"]
    score = tiled["score"]
    assert isinstance(rate, dict) and isinstance(score, dict)
    body = header("Line speed: ONNX Runtime vs TorchScript, tiled 8192x2048 web") + (
        "\nBackbone alone (tf_efficientnet_lite0 levels 2+3, batch 16, 256x256, median ms/image, same process,"
        " runs alternated):\n\n"
        "| runtime | ms / image | relative |\n|---|---:|---:|\n"
        f"| TorchScript (traced, frozen) | {backbone['torch']:.1f} | 1.00 |\n"
        f"| ONNX Runtime (CPU EP, graph opt. ALL) | {backbone['onnx']:.1f} | "
        f"{backbone['onnx'] / backbone['torch']:.2f} |\n\n"
        f"Tiled PatchCore (tile 256, overlap 32, feathered blend) on one synthetic {tiled['megapixels']:.1f} MP "
        f"8192x2048 web ({tiled['tiles']} tiles; decode excluded; fitted in {tiled['fit_seconds']:.0f} s on "
        f"{tiled['fit_webs']} good 2048x512 webs, bank 4096):\n\n"
        "| runtime | megapixels / s | raw score |\n|---|---:|---:|\n"
        f"| TorchScript | {rate['torch']:.2f} | {score['torch']:.4f} |\n"
        f"| ONNX Runtime | {rate['onnx']:.2f} | {score['onnx']:.4f} |\n\n"
        f"Map peak (x, y): torch {tiled['peak_torch']}, ONNX {tiled['peak_onnx']} (defects at (3000, 1000) and "
        "(6496, 224), a tile corner). The machine is shared: compare the rows, not the absolute times.\n"
    )
    write_section("tiling", body)
    print(body)


if __name__ == "__main__":
    main()
