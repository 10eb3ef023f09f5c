"""The model file: one safetensors file holding the tensors and a JSON description, with a content hash.

Why this shape: safetensors cannot execute code on load (pickle can), it is readable from C++, Rust and
ONNX tooling, and its header has room for string metadata. The JSON holds everything needed to rebuild
and audit the detector (config, calibration, preprocessing, backbone, versions, training-set
fingerprint). The SHA-256 over the JSON and every tensor's name, dtype, shape and bytes is checked on
load, so an altered or truncated file is refused instead of silently scoring wrong.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from cellsight.calibration import Calibration
from cellsight.detectors.base import Detector, NotCalibratedError
from cellsight.detectors.registry import detector_class
from cellsight.errors import ModelFileError

FORMAT = "cellsight-model"
FORMAT_VERSION = 1
_META_KEY = "cellsight"
_HASH_KEY = "content_sha256"


@dataclass(frozen=True)
class LoadedModel:
    detector: Detector
    metadata: dict[str, Any]
    content_hash: str

    @property
    def version(self) -> str:
        return str(self.metadata.get("model_version", ""))


def save_model(
    path: Path | str,
    detector: Detector,
    *,
    training: dict[str, Any],
    model_version: str | None = None,
) -> str:
    """Write `detector` (fitted and calibrated) to `path`; returns the content hash."""
    if detector.calibration is None:
        raise NotCalibratedError(f"only a calibrated {detector.name} can be saved: it must know its threshold")
    created = datetime.now(UTC).isoformat(timespec="seconds")
    description = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "detector": detector.name,
        "model_version": model_version or created.replace(":", "").replace("-", ""),
        "created": created,
        "config": detector.config(),
        "calibration": detector.calibration.to_dict(),
        "training": training,
        "versions": _versions(),
    }
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in detector.tensors().items()}
    text = json.dumps(description, sort_keys=True, allow_nan=False)
    digest = content_hash(text, tensors)
    data = save_safetensors(tensors, metadata={_META_KEY: text, _HASH_KEY: digest})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)  # atomic: a crash never leaves a half-written model under the real name
    return digest


def load_model(path: Path | str) -> LoadedModel:
    """Read, verify and rebuild a model; any doubt about the file raises ModelFileError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(path, f"cannot read model file ({exc.strerror or exc})") from exc
    if not data:
        raise ModelFileError(path, "model file is empty")
    try:
        tensors = load_safetensors(data)
        header = _header_metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise ModelFileError(path, f"not a valid safetensors model file (truncated or corrupt?): {exc}") from exc
    text = header.get(_META_KEY)
    stored_hash = header.get(_HASH_KEY)
    if text is None or stored_hash is None:
        raise ModelFileError(path, "safetensors file has no cellsight metadata: not a cellsight model")
    actual = content_hash(text, tensors)
    if actual != stored_hash:
        raise ModelFileError(path, f"content hash mismatch (stored {stored_hash[:12]}, actual {actual[:12]}): altered")
    description = json.loads(text)
    if description.get("format") != FORMAT:
        raise ModelFileError(path, f"unknown format {description.get('format')!r}")
    if int(description.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(
            path, f"format version {description['format_version']} is newer than this cellsight understands"
        )
    try:
        cls = detector_class(description["detector"])
        detector = cls.from_state(description["config"], tensors)
        detector.calibration = Calibration.from_dict(description["calibration"])
    except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as exc:  # also a null calibration
        raise ModelFileError(path, f"cannot rebuild the detector: {exc}") from exc
    return LoadedModel(detector=detector, metadata=description, content_hash=actual)


def content_hash(description_json: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the JSON text and every tensor (sorted by name): what makes two models the same."""
    digest = hashlib.sha256(description_json.encode("utf-8"))
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _header_metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's __metadata__ (the format: 8-byte little-endian length, then JSON)."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in metadata.items()}


def _versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("cellsight", "torch", "timm", "numpy", "faiss-cpu", "opencv-python-headless"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
