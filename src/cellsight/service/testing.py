"""Helpers shared by the service tests and the load benchmark: a tiny trained model, a line file, tokens.

Not used by the service itself; kept in the package so tests and benchmarks import one copy.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cellsight.service.auth import Role, create_token
from cellsight.storage.service_store import ServiceStore


def cell_image(rng: np.random.Generator, size: int = 96, defect: bool = False) -> np.ndarray:
    """A gridded gray cell with two busbars and noise; `defect` adds a dark crack."""
    x = np.mgrid[0:size, 0:size][1].astype(np.float32)
    image = 150.0 + 20.0 * np.sin(x / size * np.pi) + rng.normal(0.0, 4.0, (size, size))
    for column in (size // 3, 2 * size // 3):
        image[:, column - 1 : column + 1] = 60.0
    image[:: size // 8, :] -= 25.0
    image = np.clip(image, 0, 255).astype(np.uint8)
    if defect:
        a, b = (int(v) for v in rng.integers(size // 5, 4 * size // 5, 2))
        cv2.line(image, (a, size // 5), (b, 4 * size // 5), 20, 2)
    return image


def png_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def make_good_set(root: Path, n: int = 30, size: int = 96, seed: int = 0) -> Path:
    """An MVTec-layout folder with `n` good training images (enough for the classical detector)."""
    rng = np.random.default_rng(seed)
    (root / "train" / "good").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(root / "train" / "good" / f"{i:03d}.png"), cell_image(rng, size))
    return root


def train_tiny_model(data: Path, out: Path, version: str, image_size: int = 96, seed: int = 0,
                     overkill: float = 0.05, station: str | None = None) -> Path:
    """A classical-detector model (about a second to train) with a fixed version label.

    A large `overkill` target sets a low threshold: a strict model that calls many goods NG (a shadow
    that disagrees with the live one, for tests).
    """
    from cellsight.data.sources import load_dataset
    from cellsight.detectors.classical import ClassicalSettings
    from cellsight.workflows.train import TrainRequest, train

    request = TrainRequest("classical", ClassicalSettings(image_size=image_size), target=overkill, val_fraction=0.25,
                           seed=seed, model_version=version, station=station)
    train(load_dataset(data), out, request)
    return out


def write_line_config(folder: Path, database_url: str, model: Path, stations: tuple[str, ...] = ("electrode", "can"),
                      on_ng: str = "reject", save_images: str = "all") -> Path:
    """A line file whose stations take images over HTTP (the folder source is a formality) and read no codes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "unused").mkdir(exist_ok=True)
    lines = ["line: service-test", f"database: {database_url}", f"output_dir: {folder / 'out'}", f"on_ng: {on_ng}",
             f"save_images: {save_images}", "stations:"]
    for name in stations:
        lines += [f"  - name: {name}", f"    model: {model}", "    read_code: false",
                  f"    source: {{kind: folder, path: {folder / 'unused'}}}"]
    path = folder / "line.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def role_tokens(store: ServiceStore) -> dict[str, str]:
    """One fresh token per role, keyed by role name."""
    return {role.label: create_token(store, f"test-{role.label}", role) for role in Role}
