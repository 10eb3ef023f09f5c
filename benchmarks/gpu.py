"""GPU throughput of the default detector (PatchCore, lite0, 256x256) and its CPU-vs-GPU agreement:
one prepared script for a lent GPU.

Fits on ELPV good cells with the CPU path's settings (`--n-fit 300` fills the default 8,192-row bank), then:
1. agreement: the ELPV test split scored by the GPU path (runtime "cuda": uint8 pixels shrunk on the
   device, half-precision backbone, half-precision search shortlist rescored in float32, maps by matrix
   products) and by the CPU path (ONNX Runtime with the model's HNSW search, and an exact flat search),
   threshold for 5% overkill on held-out good cells scored on the CPU: verdicts agreeing, score diffs;
2. throughput at several batch sizes, verdicts only (maps stay on the device) and with maps at the
   input size. Pre-decoded images.
`--data-dir` reads an ELPV data folder (labels.csv + images/) holding the train cells and, for step 1,
the test cells (see `elpv_pack.py`); `--images` any folder of images (throughput only). Writes its
BENCHMARKS.md section.

    .venv/bin/python benchmarks/gpu.py --n-fit 300
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import header, save_json, write_section
from cellsight.calibration import calibrate_for_overkill
from cellsight.data import LazyImages, load_dataset
from cellsight.data.elpv import load_elpv
from cellsight.data.errors import DatasetError
from cellsight.detectors.base import MapSize, TrainingSet
from cellsight.detectors.patchcore import PatchCore


def agreement(detector: PatchCore, held_out: list[np.ndarray], test: list[np.ndarray]) -> dict[str, Any]:
    """GPU path vs CPU path (ONNX Runtime; HNSW as fitted, and an exact flat search) on `test`."""
    import faiss

    gpu = detector.score(test, MapSize.NONE).scores
    settings, extractor = detector.settings, detector.extractor
    detector.use_runtime("onnx")
    threshold = calibrate_for_overkill(detector.score(held_out, MapSize.NONE).scores, 0.05).threshold
    cpu_hnsw = detector.score(test, MapSize.NONE).scores
    fitted_index = detector._index
    assert detector.memory_bank is not None
    flat = faiss.IndexFlatL2(detector.memory_bank.shape[1])
    flat.add(detector.memory_bank)
    detector._index = flat
    cpu_exact = detector.score(test, MapSize.NONE).scores
    detector._index = fitted_index
    detector.settings, detector._extractor = settings, extractor  # back on the GPU path
    out: dict[str, Any] = {"images": len(test), "threshold": threshold}
    for name, cpu in (("cpu_hnsw", cpu_hnsw), ("cpu_exact", cpu_exact)):
        out[name] = {
            "verdicts_agree": float(np.mean((gpu >= threshold) == (cpu >= threshold))),
            "verdicts_differ": int(np.sum((gpu >= threshold) != (cpu >= threshold))),
            "max_diff_over_threshold": float(np.max(np.abs(gpu.astype(np.float64) - cpu)) / threshold),
        }
    return out


def throughput(detector: PatchCore, test: list[np.ndarray], batch: int, maps: MapSize) -> float:
    images = [test[i % len(test)] for i in range(batch)]
    detector.score(images, maps)  # warm-up: cuDNN autotuning, bank upload
    torch.cuda.synchronize()
    repeats = max(3, 2048 // batch)
    started = time.perf_counter()
    for _ in range(repeats):
        detector.score(images, maps)
    torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-fit", type=int, default=300)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--data-dir", type=Path, help="ELPV data folder (labels.csv + images/): train [+ test] cells")
    parser.add_argument("--images", type=Path, help="a folder of images instead of ELPV (throughput only)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no GPU visible to torch: this benchmark needs one")
    tests: list[Path] = []
    if args.images:
        files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".bmp", ".tif"))
        goods, held, scored = files[: args.n_fit], [], files[args.n_fit :]
    else:
        if args.data_dir:
            has_test = _has_test(args.data_dir)
            dataset = load_elpv(args.data_dir, splits=("train", "test") if has_test else ("train",))
        else:
            dataset = load_dataset("elpv")
        train_goods = dataset.select(split="train", defect_class="good").paths
        goods, held = train_goods[: args.n_fit], train_goods[args.n_fit : args.n_fit + 200]
        tests = dataset.select(split="test").paths
        scored = tests or dataset.select(split="train").paths[args.n_fit :]
    started = time.perf_counter()
    detector = PatchCore(runtime="cuda").fit(TrainingSet.good(LazyImages(goods)))
    fit_s = time.perf_counter() - started
    assert detector.memory_bank is not None
    bank_rows = int(detector.memory_bank.shape[0])
    test = list(LazyImages(scored))
    agree = agreement(detector, list(LazyImages(held)), list(LazyImages(tests))) if tests and held else None
    print("agreement", agree, flush=True)
    rows = []
    for batch in args.batches:
        row = {"batch": batch, "verdicts_only": throughput(detector, test, batch, MapSize.NONE),
               "with_maps": throughput(detector, test, batch, MapSize.INPUT)}
        rows.append(row)
        print(row, flush=True)
    card = torch.cuda.get_device_name(0)
    save_json("gpu", {"card": card, "fit_seconds": fit_s, "bank_rows": bank_rows, "agreement": agree, "rows": rows})
    lines = [header("GPU throughput (PatchCore, tf_efficientnet_lite0, 256x256)"),
             f"Card: {card}; fitted on {len(goods)} ELPV good cells in {fit_s:.1f} s, memory bank {bank_rows} rows.",
             ""]
    if agree is not None:
        lines += [f"CPU-vs-GPU agreement on the {agree['images']} ELPV test cells (threshold for 5% overkill on "
                  f"{len(held)} held-out good cells, CPU scores):", "",
                  "| CPU reference | verdicts agreeing | verdicts differing | max score diff / threshold |",
                  "|---|---|---|---|"]
        for name in ("cpu_hnsw", "cpu_exact"):
            a = agree[name]
            lines.append(f"| ONNX Runtime, {name[4:]} search | {100 * a['verdicts_agree']:.2f}% | "
                         f"{a['verdicts_differ']} | {a['max_diff_over_threshold']:.2e} |")
        lines.append("")
    lines += ["Throughput (pre-decoded images; resize, normalisation, search, maps on the GPU):", "",
              "| batch | images/s, verdicts only | images/s, with maps at the input size |", "|---|---|---|"]
    lines += [f"| {r['batch']} | {r['verdicts_only']:.0f} | {r['with_maps']:.0f} |" for r in rows]
    write_section("gpu", "\n".join(lines))
    print("\n".join(lines))


def _has_test(data_dir: Path) -> bool:
    """Whether the folder holds the ELPV test cells too (a GPU machine may be given the train cells alone)."""
    try:
        load_elpv(data_dir, splits=("test",))
    except DatasetError:  # missing images: train cells only
        return False
    return True


if __name__ == "__main__":
    main()
