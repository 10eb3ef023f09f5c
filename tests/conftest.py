"""Shared fixtures: a tiny generated inspection data set in the MVTec layout."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest


def _good_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A gridded cell with busbars, mild lighting drift and noise: like a small EL image."""
    x = np.mgrid[0:size, 0:size][1].astype(np.float32)
    base = 150.0 + 20.0 * np.sin(x / size * np.pi) + rng.normal(0.0, 1.0)
    image = base + rng.normal(0.0, 4.0, (size, size))
    for column in (size // 3, 2 * size // 3):
        image[:, column - 1 : column + 1] = 60.0
    image[:: size // 8, :] -= 25.0
    return np.clip(image, 0, 255).astype(np.uint8)


def _add_defect(image: np.ndarray, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    size = image.shape[0]
    mask = np.zeros_like(image)
    cx, cy = (int(v) for v in rng.integers(size // 5, 4 * size // 5, 2))
    if kind == "crack":
        angle = rng.uniform(0, np.pi)
        dx, dy = int(np.cos(angle) * size / 4), int(np.sin(angle) * size / 4)
        cv2.line(mask, (cx - dx, cy - dy), (cx + dx, cy + dy), 255, 2)
        image = np.where(mask > 0, 20, image).astype(np.uint8)
    else:  # dark spot
        cv2.circle(mask, (cx, cy), max(3, size // 10), 255, -1)
        image = np.where(mask > 0, image // 4, image).astype(np.uint8)
    return image, mask


def make_mvtec(root: Path, n_train: int = 40, n_test_good: int = 10, n_test_defect: int = 5, size: int = 96) -> Path:
    rng = np.random.default_rng(7)
    for folder in ("train/good", "test/good", "test/crack", "test/spot", "ground_truth/crack", "ground_truth/spot"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        cv2.imwrite(str(root / "train/good" / f"{i:03d}.png"), _good_image(rng, size))
    for i in range(n_test_good):
        cv2.imwrite(str(root / "test/good" / f"{i:03d}.png"), _good_image(rng, size))
    for kind in ("crack", "spot"):
        for i in range(n_test_defect):
            image, mask = _add_defect(_good_image(rng, size), rng, kind)
            cv2.imwrite(str(root / "test" / kind / f"{i:03d}.png"), image)
            cv2.imwrite(str(root / "ground_truth" / kind / f"{i:03d}_mask.png"), mask)
    return root


def make_labelled(root: Path, n_good: int = 30, n_defect: int = 10, n_test: int = 8, size: int = 64) -> Path:
    """MVTec layout with labelled defects in train/<class>/, plus `manifest.csv` naming train masks too."""
    rng = np.random.default_rng(11)
    rows = ["path,label,mask,split,defect_class"]
    for split, n_g, n_d in (("train", n_good, n_defect), ("test", n_test, n_test // 2)):
        for kind, count in (("good", n_g), ("crack", n_d), ("spot", n_d)):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
            (root / "masks" / split / kind).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = _good_image(rng, size)
                path = root / split / kind / f"{i:03d}.png"
                mask_field = ""
                if kind != "good":
                    image, mask = _add_defect(image, rng, kind)
                    mask_path = root / "masks" / split / kind / f"{i:03d}.png"
                    cv2.imwrite(str(mask_path), mask)
                    mask_field = str(mask_path)
                cv2.imwrite(str(path), image)
                rows.append(f"{path},{0 if kind == 'good' else 1},{mask_field},{split},{kind}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_labelled(tmp_path_factory.mktemp("tiny_labelled"))


@pytest.fixture(scope="session")
def tiny_contract_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest labelled set every detector can learn from (48 px; the contract suite's data)."""
    return make_labelled(tmp_path_factory.mktemp("tiny_contract"), n_good=16, n_defect=4, n_test=4, size=48)


@pytest.fixture(scope="session")
def tiny_mvtec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mvtec(tmp_path_factory.mktemp("tiny_mvtec"))


# --- databases: every storage test runs against SQLite and a real PostgreSQL server -----------------

POSTGRES_ADMIN_URL = os.environ.get("CELLSIGHT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_database(name: str) -> Iterator[str]:
    """A fresh database on the PostgreSQL server, dropped afterwards. CI must have a server (.ci/run)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from cellsight.storage.engine import normalise_url

    admin_url = normalise_url(POSTGRES_ADMIN_URL)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI"):
            raise RuntimeError(f"no PostgreSQL server at {POSTGRES_ADMIN_URL}: .ci/run should start one") from exc
        pytest.skip(f"no PostgreSQL server at {POSTGRES_ADMIN_URL}")
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each supported kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'trace.db'}"
        return
    yield from _postgres_database(f"cellsight_test_{os.getpid()}_{uuid.uuid4().hex[:8]}")


# --- a real browser: headless Chromium (playwright drives it). CI must have it, as it must have PostgreSQL ----


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium executable; skipped locally when missing, a failure under CI (browser tests never vanish)."""
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            raise RuntimeError("no chromium on PATH: CI must run the browser tests (.ci/run installs it)")
        pytest.skip("no chromium on PATH")
    return found
