"""The deployable form of a model: the model file, its backbone as ONNX, and a manifest tying them together.

Any detector that declares how its backbone exports (`Detector.backbone_export`, today PatchCore) deploys;
the others are refused with a `DeploymentError` saying so.

`export_deployment` writes a folder:
- `model.safetensors`: the model file itself, byte for byte (memory bank, HNSW graph, calibration, the
  backbone weights the ONNX graph was exported from; its content hash is what identifies the model);
- `backbone.onnx`: the feature step exported from those weights (opset 17, static H x W, dynamic batch):
  since format 2 the whole `features.graph.FeatureGraph` (pixels in, patch features out); format 1 folders
  hold the backbone alone and still load (pooling then runs in torch);
- `deploy.json`: detector, model version and content hash, input size, preprocessing, layers,
  calibration, the sha256 of both files, the runtime and precision that were verified (`runtime`: ONNX
  Runtime, float32 or int8, with its version), and the measured Torch-vs-ONNX difference on the
  verification images.

`int8=True` (`cellsight export --int8`, opt-in): `backbone.onnx` is the feature graph quantised to int8
(`features/quantize.py`), calibrated on the given images, which should be the station's good images. Its
scores move by more than float rounding, so it is held to identical verdicts on those images (and the
difference is recorded) rather than to `TOLERANCE`; whether int8 keeps verdicts on a whole test set is
measured in `benchmarks/speed.py`'s exactness table, not here.

Why the ONNX graph is a file with its sha256 here and not a tensor inside the model file: the model
file stays the single hashed source of truth (its hash does not depend on the exporter's version), and
in-process inference derives the same graph from the hashed weights at load time (the export is
deterministic for a given torch). A deployment pins the exact bytes instead, so a line PC runs the graph
that was verified, and `load_deployment` refuses any file whose hash differs from the manifest.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellsight.detectors.base import AnyDetector, BackboneExport, MapSize
from cellsight.errors import DeploymentError
from cellsight.features.graph import FeatureGraph
from cellsight.features.onnx_backbone import OPSET, export_onnx, onnxruntime_version, sha256
from cellsight.modelfile import LoadedModel, load_model

FORMAT = "cellsight-deployment"
FORMAT_VERSION = 2
MODEL_FILE = "model.safetensors"
ONNX_FILE = "backbone.onnx"
MANIFEST_FILE = "deploy.json"
TOLERANCE = 1e-4
"""Largest accepted |raw score (torch) - raw score (ONNX)| / threshold; verdicts must be identical too."""


@dataclass(frozen=True)
class Agreement:
    """How closely the ONNX path reproduces the torch path on the same images."""

    n_images: int
    max_abs_raw_diff: float
    max_diff_over_threshold: float
    verdicts_identical: bool

    @property
    def within_tolerance(self) -> bool:
        return self.verdicts_identical and self.max_diff_over_threshold <= TOLERANCE


@dataclass(frozen=True)
class Deployment:
    model: LoadedModel  # its detector runs the verified backbone.onnx
    manifest: dict[str, Any]


def compare_runtimes(
    detector: AnyDetector, export: BackboneExport, onnx_bytes: bytes, images: Sequence[np.ndarray]
) -> Agreement:
    """Score `images` with the torch backbone and with `onnx_bytes`; leaves the detector on the ONNX graph."""
    assert detector.calibration is not None
    threshold = detector.calibration.threshold
    export.use_torch()
    reference = detector.score(images, MapSize.NONE).scores
    export.use_graph(onnx_bytes)
    candidate = detector.score(images, MapSize.NONE).scores
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    return Agreement(
        n_images=len(images),
        max_abs_raw_diff=float(diff.max()),
        max_diff_over_threshold=float(diff.max() / abs(threshold)),
        verdicts_identical=bool(np.array_equal(reference >= threshold, candidate >= threshold)),
    )


def probe_images(side: int, count: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Seeded textured gray images (blurred noise, a gradient, dark blobs) when no real images are given."""
    import cv2

    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, (side, side)).astype(np.float32), (0, 0), 1.0 + i % 3)
        ramp = np.linspace(0.0, 60.0, side, dtype=np.float32)[None, :]
        image = 120.0 + 25.0 * noise / (noise.std() + 1e-6) + ramp
        cx, cy = (int(v) for v in rng.integers(side // 8, 7 * side // 8, 2))
        cv2.circle(image, (cx, cy), max(2, side // (10 + i)), 30.0, -1)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return images


def backbone_export_of(detector: AnyDetector) -> BackboneExport:
    """The detector's export description, or a `DeploymentError` when it has nothing to export."""
    export = detector.backbone_export()
    if export is None:
        raise DeploymentError(f"{detector.name} has no backbone export; it cannot be deployed this way")
    return export


def export_deployment(
    model_path: Path | str, out_dir: Path | str, images: Sequence[np.ndarray] | None = None, int8: bool = False
) -> dict[str, Any]:
    """Write the deployment folder for `model_path`; refuses when ONNX does not match torch within TOLERANCE
    (int8: when any verdict differs).

    `images` (real ones from the station, ideally) are scored both ways; without them, `probe_images`.
    `int8` needs `images`: they calibrate the quantised graph. Returns the manifest written to deploy.json.
    """
    model_path, out_dir = Path(model_path), Path(out_dir)
    loaded = load_model(model_path)
    detector = loaded.detector
    export = backbone_export_of(detector)
    ort_version = onnxruntime_version()
    if ort_version is None:
        raise DeploymentError("exporting needs onnxruntime to verify the graph; install onnxruntime")
    onnx_bytes = export_onnx(export.module, export.image_size)
    source = "given images" if images is not None else "generated probe images"
    probes = images if images is not None else probe_images(export.probe_side)
    if int8:
        onnx_bytes = _quantized(export, onnx_bytes, images)
    agreement = compare_runtimes(detector, export, onnx_bytes, probes)
    if int8 and not agreement.verdicts_identical:
        raise DeploymentError(f"int8 backbone changes verdicts on the given images: {agreement}")
    if not int8 and not agreement.within_tolerance:
        raise DeploymentError(f"ONNX backbone does not reproduce torch scores: {agreement}")
    manifest = _manifest(loaded, export, onnx_bytes, ort_version, agreement, source, int8)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_path, out_dir / MODEL_FILE)
        (out_dir / ONNX_FILE).write_bytes(onnx_bytes)
        manifest["model_file_sha256"] = sha256((out_dir / MODEL_FILE).read_bytes())
        (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n")
    except OSError as exc:
        raise DeploymentError(f"{out_dir}: cannot write the deployment folder ({exc.strerror or exc})") from exc
    return manifest


def _quantized(export: BackboneExport, onnx_bytes: bytes, images: Sequence[np.ndarray] | None) -> bytes:
    """The feature graph in int8, calibrated on the given (station) images."""
    from cellsight.features.quantize import quantize_features

    if images is None:
        raise DeploymentError("an int8 export needs the station's good images (--images) to calibrate on")
    if export.pixels is None or not isinstance(export.module, FeatureGraph):
        raise DeploymentError("this detector's backbone has no int8 export")
    return quantize_features(onnx_bytes, export.pixels(images))


def load_deployment(folder: Path | str) -> Deployment:
    """Read a deployment folder, verify every hash, and return the model running the verified ONNX graph."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        model_bytes = (folder / MODEL_FILE).read_bytes()
        onnx_bytes = (folder / ONNX_FILE).read_bytes()
    except (OSError, json.JSONDecodeError) as exc:
        raise DeploymentError(f"{folder}: not a readable deployment folder: {exc}") from exc
    if not isinstance(manifest, dict):
        raise DeploymentError(f"{folder / MANIFEST_FILE}: not a deployment manifest (a JSON object)")
    if manifest.get("format") != FORMAT or int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise DeploymentError(f"{folder / MANIFEST_FILE}: unknown deployment format {manifest.get('format')!r}")
    if sha256(model_bytes) != manifest.get("model_file_sha256"):
        raise DeploymentError(f"{folder / MODEL_FILE}: sha256 differs from deploy.json: altered or replaced")
    if sha256(onnx_bytes) != manifest.get("onnx", {}).get("sha256"):
        raise DeploymentError(f"{folder / ONNX_FILE}: sha256 differs from deploy.json: altered or replaced")
    loaded = load_model(folder / MODEL_FILE)  # checks the content hash inside the file
    if loaded.content_hash != manifest.get("content_sha256"):
        raise DeploymentError(f"{folder}: model content hash differs from deploy.json")
    backbone_export_of(loaded.detector).use_graph(onnx_bytes)
    return Deployment(model=loaded, manifest=manifest)


def _manifest(
    loaded: LoadedModel,
    export: BackboneExport,
    onnx_bytes: bytes,
    ort_version: str,
    agreement: Agreement,
    source: str,
    int8: bool = False,
) -> dict[str, Any]:
    runtime: dict[str, Any] = {
        "name": "onnxruntime", "version": ort_version, "precision": "int8" if int8 else "float32", "graph": "features"
    }
    if int8:
        from cellsight.features.quantize import QUANTIZATION

        runtime["quantization"] = {**QUANTIZATION, "calibration_images": agreement.n_images}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "detector": loaded.detector.name,
        "model_version": loaded.version,
        "content_sha256": loaded.content_hash,
        "model_file": MODEL_FILE,
        **export.description,
        "calibration": loaded.metadata.get("calibration"),
        "runtime": runtime,
        "onnx": {
            "file": ONNX_FILE,
            "sha256": sha256(onnx_bytes),
            "opset": OPSET,
            "exported_with_torch": torch.__version__,
            "verified_with_onnxruntime": ort_version,
        },
        "verification": {
            "images": agreement.n_images,
            "source": source,
            "max_abs_raw_score_diff": agreement.max_abs_raw_diff,
            "max_diff_over_threshold": agreement.max_diff_over_threshold,
            "verdicts_identical": agreement.verdicts_identical,
            "tolerance_diff_over_threshold": None if int8 else TOLERANCE,
            "required": "identical verdicts" if int8 else "identical verdicts and diff within tolerance",
        },
    }
