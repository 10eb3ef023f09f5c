"""Model files travel to Ray workers by content hash: the driver puts the file's bytes in a small named
actor once, and each worker keeps a verified copy in its node's cache folder under the hash.

A worker never trusts a name: the file it loads must carry the content hash it was asked for
(`modelfile.load_model` recomputes it), so a stale or altered cache entry is refused, not used.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from cellsight.errors import ModelFileError
from cellsight.inference.cluster import import_ray

STORE_NAME = "cellsight-model-store"
NAMESPACE = "cellsight"


def cache_dir() -> Path:
    """This node's model cache: `CELLSIGHT_MODEL_CACHE`, else a folder in the system temp directory."""
    return Path(os.environ.get("CELLSIGHT_MODEL_CACHE") or Path(tempfile.gettempdir()) / "cellsight-models")


class _ModelStore:
    """Bytes by content hash (a detached actor, so restarted replicas still find their model)."""

    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}

    def put(self, content_hash: str, data: bytes) -> None:
        self._files.setdefault(content_hash, data)

    def has(self, content_hash: str) -> bool:
        return content_hash in self._files

    def get(self, content_hash: str) -> bytes:
        return self._files[content_hash]


def store_actor() -> Any:
    ray = import_ray()
    actor = ray.remote(num_cpus=0)(_ModelStore)
    return actor.options(name=STORE_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote()


def publish(path: Path, content_hash: str) -> None:
    """Make `path` (already verified to hold `content_hash`) fetchable by every worker of the cluster."""
    ray = import_ray()
    store = store_actor()
    if not ray.get(store.has.remote(content_hash)):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelFileError(path, f"cannot read model file ({exc.strerror or exc})") from exc
        ray.get(store.put.remote(content_hash, data))


def fetch(content_hash: str) -> Path:
    """This node's copy of the model file with `content_hash`, fetched from the store when missing."""
    target = cache_dir() / f"{content_hash}.safetensors"
    if target.is_file():
        return target
    ray = import_ray()
    data = ray.get(store_actor().get.remote(content_hash))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{uuid.uuid4().hex}.partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target
