"""anomalib's PaDiM and PatchCore on the benchmark's own images: the side-by-side reference.

Runs in the optional ``.venv-anomalib`` environment (``make anomalib-env``), never in cellsight's::

    .venv-anomalib/bin/python benchmarks/anomalib_runner.py --spec SPEC.json --out RESULT.json \
        [--model padim --model patchcore] [--patchcore-fit-subset N] [--coreset-sampling-ratio R] \
        [--max-fit-seconds S]

SPEC.json (written by ``benchmarks/elpv_goodonly.py``)::

    {"backbone": "tf_efficientnet_lite0", "layers": ["blocks.2", "blocks.3"], "image_size": 256,
     "mean": [...], "std": [...], "fit": [...], "calibrate": [...], "test": [...],
     "patchcore": {"coreset_sampling_ratio": 0.1, "num_neighbors": 9,
                   "fit_subset": null, "max_fit_seconds": null},
     "padim": {"n_features": null}, "threads": 2, "batch_size": 32, "seed": 0}

What is anomalib's and what is ours (see ``benchmarks/ANOMALIB.md``):

* anomalib's: the Lightning modules ``anomalib.models.Padim`` / ``Patchcore`` with their torch models,
  ``TimmFeatureExtractor`` (nn.Module-backbone path), feature pooling/embedding, ``training_step``,
  ``fit()`` (Gaussian fit / ``KCenterGreedy`` coreset with its sparse random projection), scoring
  (``model(images).pred_score``, raw: no anomalib post-processing or normalisation) and ``PreProcessor``.
* ours: the loop that feeds batches (instead of Lightning's ``Engine``), the backbone weights (cellsight's
  offline ImageNet weights, loaded strictly into ``timm.create_model(..., pretrained=False)``), and the
  transform (resize to image_size x image_size + the spec's mean/std, no centre crop).

Each model runs in its own child process so that ``peak_rss_mb`` is that model's alone.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# KCenterGreedy wraps its loop in tqdm: ~100k progress updates on the full data set.
os.environ.setdefault("TQDM_DISABLE", "1")
# Import-time deprecation notices from anomalib/timm, and Lightning's note that the backbone module is
# stored in hparams: harmless here (nothing is checkpointed).
warnings.filterwarnings("ignore", category=FutureWarning, module=r"(timm|anomalib)\.")
warnings.filterwarnings("ignore", message=r".*is an instance of `nn\.Module`.*")

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_MODULE_FILE = REPO_ROOT / "src" / "cellsight" / "features" / "weights.py"
ERRORS_MODULE_FILE = REPO_ROOT / "src" / "cellsight" / "errors.py"
MODELS = ("padim", "patchcore")
LATENCY_SAMPLE = 50
LATENCY_WARMUP = 3
PROBE_ITERATIONS = 24
PROBE_IMAGES = 128


# ------------------------------------------------------------------------------------------------------
# Spec
# ------------------------------------------------------------------------------------------------------


def load_spec(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(path.read_text())
    for key in ("backbone", "layers", "image_size", "mean", "std", "fit", "calibrate", "test"):
        if key not in spec:
            raise SystemExit(f"spec {path}: missing key {key!r}")
    spec.setdefault("threads", 2)
    spec.setdefault("batch_size", 32)
    spec.setdefault("seed", 0)
    pc = spec.setdefault("patchcore", {})
    pc.setdefault("coreset_sampling_ratio", 0.1)
    pc.setdefault("num_neighbors", 9)
    pc.setdefault("fit_subset", None)
    pc.setdefault("max_fit_seconds", None)
    spec.setdefault("padim", {}).setdefault("n_features", None)
    # command-line overrides win over the spec
    if args.coreset_sampling_ratio is not None:
        pc["coreset_sampling_ratio"] = args.coreset_sampling_ratio
    if args.patchcore_fit_subset is not None:
        pc["fit_subset"] = args.patchcore_fit_subset
    if args.max_fit_seconds is not None:
        pc["max_fit_seconds"] = args.max_fit_seconds
    if args.padim_n_features is not None:
        spec["padim"]["n_features"] = args.padim_n_features
    if args.threads is not None:
        spec["threads"] = args.threads
    return spec


def evenly_spaced(n_total: int, n_keep: int) -> list[int]:
    """Deterministic subset that spans the whole list (the fit list is in file order)."""
    if n_keep >= n_total:
        return list(range(n_total))
    if n_keep <= 1:
        return [0]
    return sorted({round(i * (n_total - 1) / (n_keep - 1)) for i in range(n_keep)})


# ------------------------------------------------------------------------------------------------------
# Backbone with cellsight's offline weights
# ------------------------------------------------------------------------------------------------------


def load_cellsight_weights_module() -> types.ModuleType:
    """``cellsight.features.weights`` loaded from its file: no other cellsight import in this venv."""
    name = "cellsight_features_weights"
    if name in sys.modules:
        return sys.modules[name]
    # weights.py imports `cellsight.errors` (no imports of its own): loaded from its file too, so that the
    # `cellsight` package (whose __init__ sets OpenMP's wait policy) stays out of anomalib's process.
    errors = importlib.util.spec_from_file_location("cellsight.errors", ERRORS_MODULE_FILE)
    if errors is None or errors.loader is None:
        raise SystemExit(f"cannot load {ERRORS_MODULE_FILE}")
    sys.modules["cellsight.errors"] = importlib.util.module_from_spec(errors)
    errors.loader.exec_module(sys.modules["cellsight.errors"])
    spec = importlib.util.spec_from_file_location(name, WEIGHTS_MODULE_FILE)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {WEIGHTS_MODULE_FILE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look the module up while the file executes
    spec.loader.exec_module(module)
    return module


def build_backbone(name: str) -> tuple[Any, dict[str, Any]]:
    import timm

    state_dict = load_cellsight_weights_module().pretrained_state_dict(name)
    net = timm.create_model(name, pretrained=False)  # never downloads
    net.load_state_dict(state_dict, strict=True)
    return net.eval(), state_dict


def check_weights(feature_extractor: Any, state_dict: dict[str, Any]) -> dict[str, Any]:
    """Every tensor of anomalib's feature extractor must equal cellsight's weights bit for bit."""
    own = feature_extractor.state_dict()
    missing = [k for k in own if k not in state_dict]
    diffs = {k: float((own[k].double() - state_dict[k].double()).abs().max()) for k in own if k in state_dict}
    max_diff = max(diffs.values()) if diffs else math.inf
    if missing or max_diff != 0.0 or "conv_stem.weight" not in diffs:
        raise SystemExit(f"feature extractor weights differ from cellsight's: missing={missing[:5]} {max_diff=}")
    stem = own["conv_stem.weight"]
    return {
        "source": "cellsight.features.weights.pretrained_state_dict (timm.create_model pretrained=False, strict load)",
        "tensors_compared": len(diffs),
        "max_abs_diff": max_diff,
        "conv_stem_weight_sum": float(stem.double().sum()),
        "conv_stem_weight_sum_cellsight": float(state_dict["conv_stem.weight"].double().sum()),
    }


# ------------------------------------------------------------------------------------------------------
# Images and pre-processing
# ------------------------------------------------------------------------------------------------------


def read_gray(paths: Sequence[str], color: bool = False) -> list[Any]:
    """(C, H, W) uint8 tensors: gray (C=1), or RGB (C=3) where the spec says `"color": true`."""
    import numpy as np
    import torch
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            if color:
                out.append(torch.from_numpy(np.array(im.convert("RGB"), dtype=np.uint8, copy=True)).permute(2, 0, 1))
            else:
                out.append(torch.from_numpy(np.array(im.convert("L"), dtype=np.uint8, copy=True))[None])
    return out


def make_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> Any:
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    # anomalib's default (Resize(256) + ImageNet Normalize) with the spec's size and statistics; no crop.
    return Compose([Resize((image_size, image_size), antialias=True), Normalize(mean=list(mean), std=list(std))])


def to_batch(images: Sequence[Any], transform: Any) -> Any:
    """uint8 (1, H, W) grays (or (3, H, W) RGB) -> float [0, 1], grays replicated to 3 channels, then the transform."""
    import torch

    def prep(x: Any) -> Any:
        return transform(x.float().div_(255.0).expand(-1, 3, -1, -1))

    if len({tuple(im.shape) for im in images}) == 1:
        return prep(torch.stack(list(images)))
    return torch.cat([prep(im[None]) for im in images])


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# ------------------------------------------------------------------------------------------------------
# anomalib models
# ------------------------------------------------------------------------------------------------------


def timm_fx_tracing() -> Any:
    """anomalib traces an nn.Module backbone with torchvision's FX, which cannot trace timm's TF-'same'
    padding (Conv2dSame); timm's wrapper of the same torchvision function keeps those modules as leaves."""
    from unittest import mock

    import timm.layers

    fe_module = importlib.import_module("anomalib.models.components.feature_extractors.timm")
    return mock.patch.object(fe_module, "create_feature_extractor", timm.layers.create_feature_extractor)


def build_module(kind: str, spec: dict[str, Any], net: Any, transform: Any) -> tuple[Any, dict[str, Any]]:
    from anomalib.models import Padim, Patchcore
    from anomalib.models.components import TimmFeatureExtractor
    from anomalib.pre_processing import PreProcessor

    layers = list(spec["layers"])
    common = {
        "backbone": net,  # anomalib's nn.Module path: FX feature extractor returning exactly `layers`
        "layers": layers,
        "pre_trained": False,
        "pre_processor": PreProcessor(transform=transform),
        "post_processor": False,  # raw pred_score, no anomalib normalisation
        "evaluator": False,
        "visualizer": False,
    }
    config: dict[str, Any] = {}
    with timm_fx_tracing():
        if kind == "padim":
            n_original = sum(TimmFeatureExtractor(backbone=net, layers=layers, pre_trained=False).out_dims)
            n_features = spec["padim"]["n_features"] or n_original
            module = Padim(n_features=n_features, **common)
            config.update(n_features=n_features, n_features_original=n_original)
        else:
            module = Patchcore(num_neighbors=int(spec["patchcore"]["num_neighbors"]), **common)
            config.update(num_neighbors=int(spec["patchcore"]["num_neighbors"]))
    return module, config


def extract(module: Any, images: Sequence[Any], transform: Any, batch_size: int) -> None:
    """anomalib's training_step on each batch, after the PreProcessor's transform (as its callback does)."""
    module.train()
    for batch in chunks(images, batch_size):
        module.training_step(types.SimpleNamespace(image=to_batch(batch, transform)))


def score(module: Any, images: Sequence[Any], transform: Any, batch_size: int) -> list[float]:
    """``model(images).pred_score`` as in anomalib's validation/test step: raw, before post-processing."""
    import torch

    module.eval()
    scores: list[float] = []
    with torch.inference_mode():
        for batch in chunks(images, batch_size):
            scores.extend(module.model(to_batch(batch, transform)).pred_score.flatten().double().tolist())
    if not all(math.isfinite(s) for s in scores):
        raise SystemExit("anomalib returned non-finite scores")
    return scores


def save_maps(module: Any, images: Sequence[Any], transform: Any, batch_size: int, out: Path) -> None:
    """The test images' raw ``anomaly_map`` (image_size square, float16) to an .npy file, for pixel metrics."""
    import numpy as np
    import torch

    module.eval()
    maps = []
    with torch.inference_mode():
        for batch in chunks(images, batch_size):
            maps.append(module.model(to_batch(batch, transform)).anomaly_map.squeeze(1).half().numpy())
    np.save(out, np.concatenate(maps) if maps else np.zeros((0, 1, 1), np.float16))


def latency_ms(module: Any, images: Sequence[Any], transform: Any) -> dict[str, float]:
    import torch

    module.eval()
    sample = [images[i] for i in evenly_spaced(len(images), LATENCY_SAMPLE)]
    times = []
    with torch.inference_mode():
        for i, im in enumerate([*sample[:LATENCY_WARMUP], *sample]):
            t0 = time.perf_counter()
            module.model(to_batch([im], transform))
            if i >= LATENCY_WARMUP:
                times.append((time.perf_counter() - t0) * 1000.0)
    q = statistics.quantiles(times, n=20) if len(times) >= 2 else times * 19
    return {"p50": statistics.median(times), "p95": q[18], "n": len(times)}


# ------------------------------------------------------------------------------------------------------
# PatchCore fit-time planning (--max-fit-seconds)
# ------------------------------------------------------------------------------------------------------


def jl_dim(n_rows: int) -> int:
    """Columns of the sparse random projection anomalib's KCenterGreedy uses (eps=0.9)."""
    from anomalib.models.components.dimensionality_reduction import SparseRandomProjection

    return int(SparseRandomProjection._johnson_lindenstrauss_min_dim(n_samples=n_rows, eps=0.9))


def plan_patchcore(
    module: Any, images: Sequence[Any], transform: Any, batch_size: int, ratio: float, budget_s: float
) -> dict[str, Any]:
    """Largest evenly-spaced fit subset whose predicted PatchCore fit time stays within `budget_s`.

    Measured, not assumed: the features of up to PROBE_IMAGES evenly spaced fit images are extracted
    (seconds per image), then anomalib's own KCenterGreedy runs PROBE_ITERATIONS greedy steps on them (its
    projection fit + transform timed apart). A greedy step scans every projected patch row once, so for n
    images (P = n x rows per image, D(P) = the projection's Johnson-Lindenstrauss width, k = ratio x P):
        fit(n) = extract x n + (projection(P_probe) + k x step(P_probe)) x P D(P) / (P_probe D(P_probe)).
    Smaller scans are cheaper per row, so below the probe size this over-predicts (a 20 s budget: 20 s
    predicted, 17 s measured); above it (more than PROBE_IMAGES fit images chosen) it extrapolates.
    The planning work is reported apart and not counted in fit_seconds.
    """
    import torch
    from anomalib.models.components import KCenterGreedy

    t0 = time.perf_counter()
    probe_images = [images[i] for i in evenly_spaced(len(images), PROBE_IMAGES)]
    extract(module, probe_images, transform, batch_size)
    embedding = torch.vstack(module.model.embedding_store)
    module.model.embedding_store.clear()
    per_image = (time.perf_counter() - t0) / len(probe_images)
    rows_probe = int(embedding.shape[0])
    rows_per_image = rows_probe // len(probe_images)

    t1 = time.perf_counter()
    sampler = KCenterGreedy(embedding=embedding, sampling_ratio=PROBE_ITERATIONS / rows_probe)
    sampler.select_coreset_idxs()  # projection fit + transform + (coreset_size - 1) greedy steps
    t_probe = time.perf_counter() - t1
    probe_steps = max(sampler.coreset_size - 1, 1)
    t2 = time.perf_counter()
    sampler.model.fit(embedding)
    sampler.model.transform(embedding)
    t_projection = time.perf_counter() - t2
    step = max(t_probe - t_projection, 1e-9) / probe_steps
    del sampler, embedding
    work_probe = rows_probe * jl_dim(rows_probe)

    def predict(n: int) -> float:
        rows = n * rows_per_image
        scale = rows * jl_dim(rows) / work_probe
        return per_image * n + (t_projection + int(rows * ratio) * step) * scale

    lo, hi = 1, len(images)  # largest n with predict(n) <= budget (predict grows with n)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if predict(mid) <= budget_s else (lo, mid - 1)
    return {
        "budget_seconds": budget_s,
        "chosen_fit_images": lo,
        "predicted_fit_seconds": predict(lo),
        "predicted_fit_seconds_all_images": predict(len(images)),
        "probe_images": len(probe_images),
        "measured_extract_seconds_per_image": per_image,
        "measured_projection_seconds_probe": t_projection,
        "measured_greedy_step_seconds_probe": step,
        "rows_per_image": rows_per_image,
        "planning_seconds": time.perf_counter() - t0,
    }


# ------------------------------------------------------------------------------------------------------
# One model
# ------------------------------------------------------------------------------------------------------


def run_model(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    import anomalib
    import timm
    import torch

    torch.set_num_threads(int(spec["threads"]))
    seed = int(spec["seed"])
    batch_size = int(spec["batch_size"])

    t0 = time.perf_counter()
    color = bool(spec.get("color", False))
    fit_all = read_gray(spec["fit"], color)
    calibrate = read_gray(spec["calibrate"], color)
    test = read_gray(spec["test"], color)
    decode_s = time.perf_counter() - t0

    transform = make_transform(int(spec["image_size"]), spec["mean"], spec["std"])
    net, state_dict = build_backbone(spec["backbone"])
    torch.manual_seed(seed)  # PaDiM's channel permutation, KCenterGreedy's start point and projection
    module, config = build_module(kind, spec, net, transform)
    weights = check_weights(module.model.feature_extractor.feature_extractor, state_dict)

    fit_idx = list(range(len(fit_all)))
    plan: dict[str, Any] | None = None
    if kind == "patchcore":
        pc = spec["patchcore"]
        ratio = float(pc["coreset_sampling_ratio"])
        if pc["fit_subset"]:
            fit_idx = evenly_spaced(len(fit_all), int(pc["fit_subset"]))
        if pc["max_fit_seconds"]:
            candidates = [fit_all[i] for i in fit_idx]
            plan = plan_patchcore(module, candidates, transform, batch_size, ratio, float(pc["max_fit_seconds"]))
            keep = evenly_spaced(len(candidates), plan["chosen_fit_images"])
            fit_idx = [fit_idx[i] for i in keep]
            torch.manual_seed(seed)
        config.update(coreset_sampling_ratio=ratio)
    fit_images = [fit_all[i] for i in fit_idx]

    t1 = time.perf_counter()
    extract(module, fit_images, transform, batch_size)
    t2 = time.perf_counter()
    if kind == "patchcore":
        rows = int(sum(e.shape[0] for e in module.model.embedding_store))
        config.update(
            patch_rows=rows, projection_dim=jl_dim(rows), embedding_dim=int(module.model.embedding_store[0].shape[1])
        )
    module.fit()  # PaDiM: Gaussian per patch position; PatchCore: KCenterGreedy coreset
    t3 = time.perf_counter()
    if kind == "patchcore":
        config.update(memory_bank_size=int(module.model.memory_bank.shape[0]))

    t4 = time.perf_counter()
    calibrate_scores = score(module, calibrate, transform, batch_size)
    test_scores = score(module, test, transform, batch_size)
    predict_s = time.perf_counter() - t4
    if spec.get("maps_out"):
        save_maps(module, test, transform, batch_size, Path(spec["maps_out"]))
    latency = latency_ms(module, test or calibrate, transform)
    n_scored = len(calibrate) + len(test)

    config.update(
        backbone=spec["backbone"],
        layers=list(spec["layers"]),
        image_size=int(spec["image_size"]),
        mean=list(spec["mean"]),
        std=list(spec["std"]),
        preprocessing="gray -> float/255 -> 3 channels -> torchvision.v2 Resize((s, s), antialias=True) -> "
        "Normalize(mean, std) (anomalib PreProcessor transform; no centre crop)",
        fit_images_available=len(fit_all),
        fit_images_used=len(fit_images),
        fit_subset_rule="all" if len(fit_images) == len(fit_all) else "evenly spaced over the spec's fit list",
        fit_subset_indices=None if len(fit_images) == len(fit_all) else fit_idx,
        calibrate_images=len(calibrate),
        test_images=len(test),
        threads=int(spec["threads"]),
        batch_size=batch_size,
        seed=seed,
        weights=weights,
        api="anomalib.models.%s (Lightning module: training_step, fit, model(x).pred_score), driven by a plain "
        "loop instead of anomalib.engine.Engine" % ("Padim" if kind == "padim" else "Patchcore"),
        score="raw pred_score (no anomalib post-processing / normalisation)",
        malloc_mmap_threshold=os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        timing_scope="fit_seconds and predict cover pre-processing transform + model on decoded images; "
        "PNG decode is decode_seconds",
        planning=plan,
    )
    return {
        "fit_seconds": t3 - t1,
        "fit_extract_seconds": t2 - t1,
        ("coreset_seconds" if kind == "patchcore" else "gaussian_fit_seconds"): t3 - t2,
        "predict_images_per_s": n_scored / predict_s if predict_s > 0 else None,
        "predict_seconds": predict_s,
        "latency_ms_p50": latency["p50"],
        "latency_ms_p95": latency["p95"],
        "latency_images": latency["n"],
        "decode_seconds": decode_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "calibrate_scores": calibrate_scores,
        "test_scores": test_scores,
        "config": config,
        "versions": {
            "anomalib": anomalib.__version__,
            "torch": torch.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
        },
    }


# ------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", action="append", choices=MODELS, help="repeatable; default: both")
    p.add_argument("--coreset-sampling-ratio", type=float, help="PatchCore; overrides the spec (default 0.1)")
    p.add_argument("--patchcore-fit-subset", type=int, help="PatchCore: fit on N evenly spaced fit images")
    p.add_argument(
        "--max-fit-seconds",
        type=float,
        help="PatchCore: measure, then fit on the largest evenly spaced subset predicted to fit in S seconds",
    )
    p.add_argument("--padim-n-features", type=int, help="PaDiM channels kept (default: all)")
    p.add_argument("--threads", type=int, help="overrides the spec's threads")
    p.add_argument("--in-process", action="store_true", help="run the models in this process (no child)")
    return p.parse_args(argv)


def passthrough(args: argparse.Namespace) -> list[str]:
    out = []
    for flag, value in (
        ("--coreset-sampling-ratio", args.coreset_sampling_ratio),
        ("--patchcore-fit-subset", args.patchcore_fit_subset),
        ("--max-fit-seconds", args.max_fit_seconds),
        ("--padim-n-features", args.padim_n_features),
        ("--threads", args.threads),
    ):
        if value is not None:
            out += [flag, str(value)]
    return out


def child_env() -> dict[str, str]:
    """A fixed glibc mmap threshold for the model processes.

    KCenterGreedy allocates a (patch rows x projection dim) temporary at every greedy step and keeps a small
    tensor per step. Below glibc's dynamic mmap threshold (up to 32 MB: fewer than ~30 fit images here) those
    temporaries come from the heap, and the kept small tensors fragment it: RSS then grows by one temporary
    per step (24 GB and an OOM kill for 25 images on this machine). A fixed threshold keeps every large
    temporary in its own mapping, as it already is for larger fits; it changes allocation only, not results.
    """
    return {"MALLOC_MMAP_THRESHOLD_": "4194304", **os.environ}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    models = list(dict.fromkeys(args.model or MODELS))
    results: dict[str, Any] = {}
    if args.in_process:
        spec = load_spec(args.spec, args)
        for kind in models:
            print(f"anomalib_runner: {kind} ...", file=sys.stderr, flush=True)
            results[kind] = run_model(kind, spec)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for kind in models:
                part = Path(tmp) / f"{kind}.json"
                cmd = [sys.executable, __file__, "--spec", str(args.spec), "--out", str(part), "--model", kind]
                subprocess.run([*cmd, "--in-process", *passthrough(args)], check=True, env=child_env())
                results.update(json.loads(part.read_text())["models"])
    versions = next(iter(results.values()))["versions"] if results else {}
    payload = {"anomalib_version": versions.get("anomalib"), "versions": versions, "models": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1))
    if not args.in_process:
        return 0  # each child printed its own summary line
    for kind, r in results.items():
        print(
            f"anomalib {kind}: fit {r['fit_seconds']:.1f}s on {r['config']['fit_images_used']} images, "
            f"predict {r['predict_images_per_s']:.1f} img/s, p50 {r['latency_ms_p50']:.1f} ms, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
