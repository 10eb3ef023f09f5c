"""Shared steps of the data-preparation scripts: read a fetched repository, write an MVTec-layout folder.

The public sets come as git repositories (a clone, or a bare git directory such as a mirror without a work
tree); `export_tree` copies the needed paths out with `git archive`, so both forms work. Images are never
committed: everything lands under the git-ignored `benchmarks/data/`.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).resolve().parent / "data"


def export_tree(repo: Path, paths: Iterable[str], into: Path) -> str:
    """Extract `paths` of the repository's HEAD into `into`; returns the commit id (for the data's README)."""
    git = ["git", "--git-dir", str(_git_dir(repo))]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    archive = subprocess.run([*git, "archive", "--format=tar", "HEAD", *paths], capture_output=True, check=True)
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return commit


def _git_dir(repo: Path) -> Path:
    if (repo / ".git").exists():
        return repo / ".git"
    if (repo / "HEAD").is_file() and (repo / "objects").is_dir():
        return repo
    raise SystemExit(f"{repo}: not a git repository (a clone or a bare git directory)")


def write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise SystemExit(f"{path}: could not write")


def split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """A seeded permutation of range(n) cut into consecutive parts of the given fractions (the last takes the rest)."""
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.round(np.cumsum(fractions[:-1]) * n).astype(int)
    return [np.sort(part) for part in np.split(order, cuts)]
