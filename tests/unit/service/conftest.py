"""A running service (in-process TestClient) on each database, with a token per role and known images."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cellsight.data.images import read_image
from cellsight.line.config import load_line_config
from cellsight.modelfile import load_model
from cellsight.service.app import create_app
from cellsight.service.state import Service, Settings
from cellsight.service.testing import role_tokens, train_tiny_model, write_line_config


@dataclass(frozen=True)
class Models:
    v1: Path
    v2: Path
    strict: Path  # calls many goods NG: a shadow that disagrees
    good: bytes  # an image v1 passes
    defect: bytes  # an image v1 rejects
    goods: tuple[bytes, ...]  # every good test image


@pytest.fixture(scope="session")
def models(tiny_mvtec: Path, tmp_path_factory: pytest.TempPathFactory) -> Models:
    folder = tmp_path_factory.mktemp("service-models")
    v1 = train_tiny_model(tiny_mvtec, folder / "v1.safetensors", "v1")
    v2 = train_tiny_model(tiny_mvtec, folder / "v2.safetensors", "v2", seed=1)
    strict = train_tiny_model(tiny_mvtec, folder / "strict.safetensors", "strict", overkill=0.6)
    detector = load_model(v1).detector
    goods = sorted((tiny_mvtec / "test" / "good").glob("*.png"))
    defects = sorted((tiny_mvtec / "test" / "crack").glob("*.png"))
    good = min(goods, key=lambda p: detector.predict([read_image(p)])[0].score)
    defect = max(defects, key=lambda p: detector.predict([read_image(p)])[0].score)
    return Models(v1, v2, strict, good.read_bytes(), defect.read_bytes(), tuple(p.read_bytes() for p in goods))


@dataclass
class Running:
    client: TestClient
    service: Service
    tokens: dict[str, str]

    def auth(self, role: str = "operator") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def inspect(self, station: str, image: bytes, cell_id: str | None = None, role: str = "operator",
                name: str = "cell.png"):  # type: ignore[no-untyped-def]
        data = {"cell_id": cell_id} if cell_id is not None else {}
        return self.client.post(f"/v1/stations/{station}/inspect", files={"image": (name, image, "image/png")},
                                data=data, headers=self.auth(role))


def start(folder: Path, database_url: str, model: Path, settings: Settings | None = None) -> Running:
    config, sha = load_line_config(write_line_config(folder, database_url, model))
    service = Service.start(config, sha, settings)
    return Running(TestClient(create_app(service)), service, role_tokens(service.store))


@pytest.fixture
def running(database_url: str, models: Models, tmp_path: Path) -> Iterator[Running]:
    run = start(tmp_path / "line", database_url, models.v1, Settings(max_upload_bytes=2 * 1024 * 1024))
    with run.client:
        yield run


@pytest.fixture
def running_sqlite(models: Models, tmp_path: Path) -> Iterator[Running]:
    run = start(tmp_path / "line", f"sqlite:///{tmp_path / 'trace.db'}", models.v1,
                Settings(max_upload_bytes=2 * 1024 * 1024))
    with run.client:
        yield run


@pytest.fixture
def start_service() -> Callable[[Path, Path], Running]:
    """Start a service on SQLite in `folder` with `model` configured at both stations (again for a restart)."""
    def make(folder: Path, model: Path) -> Running:
        return start(folder / "line", f"sqlite:///{folder / 'trace.db'}", model)
    return make
