"""Name the defects a good-only detector flags, from a few labelled examples per class.

Why so simple: a station rarely has more than a handful of labelled defects per class, too few to train
a classifier, but the detector's own patch features already describe what looks wrong. Each example
becomes one descriptor: the mean feature of its most anomalous patches (inside its mask when one is
known), minus the mean good patch (so what the defect shares with good surface cancels), L2-normalised.
An NG image is named after its nearest class (mean cosine distance to the class's k nearest examples, or
to the class mean), or "unknown" when it is farther from every class than the training examples were
from their own class when each was left out in turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from pydantic import BaseModel, JsonValue

UNKNOWN = "unknown"
"""The name of a flagged defect that resembles none of the classes learned."""
METHODS = ("knn", "mean")


def pool_descriptor(features: np.ndarray, scores: np.ndarray, region: np.ndarray | None, top: int) -> np.ndarray:
    """Mean of the `top` highest-scoring patches' features; only patches in `region` when it holds any.

    `features` (P, D), `scores` (P,), `region` (P,) bool or None.
    """
    candidates = np.flatnonzero(region) if region is not None and region.any() else np.arange(scores.size)
    order = candidates[np.argsort(-scores[candidates], kind="stable")][: max(1, top)]
    return np.asarray(features[order].mean(axis=0), dtype=np.float32)


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return np.asarray(rows / np.maximum(norms, 1e-12), dtype=np.float32)


class DefectNamer:
    """Class descriptors and the distance beyond which a defect is `UNKNOWN`; stored in the model file."""

    def __init__(
        self,
        classes: Sequence[str],
        embedded: np.ndarray,
        labels: np.ndarray,
        center: np.ndarray,
        method: str = "knn",
        k: int = 3,
        top_patches: int = 4,
        unknown_distances: Sequence[float] | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if k < 1 or top_patches < 1:
            raise ValueError(f"k and top_patches must be >= 1, got {k} and {top_patches}")
        self.classes = [str(c) for c in classes]
        self.embedded = np.asarray(embedded, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.center = np.asarray(center, dtype=np.float32)
        self.method = method
        self.k = k
        self.top_patches = top_patches
        self.unknown_distances = np.full(len(self.classes), np.inf) if unknown_distances is None else np.asarray(
            unknown_distances, dtype=np.float64
        )

    @classmethod
    def fit(
        cls,
        descriptors: np.ndarray,
        classes: Sequence[str],
        center: np.ndarray,
        method: str = "knn",
        k: int = 3,
        top_patches: int = 4,
        quantile: float = 1.0,
    ) -> DefectNamer:
        """Learn from pooled descriptors (N, D) and their class names; `center` is the mean good patch feature.

        A class's unknown distance is the `quantile` of its examples' leave-one-out distances to it (the
        largest, by default: with a dozen examples, any lower quantile calls a fair share of a known class
        unknown); a class with one example borrows the quantile over all classes.
        """
        if len(descriptors) == 0 or len(descriptors) != len(classes):
            raise ValueError(f"need one class name per descriptor and at least one, got {len(descriptors)} "
                             f"descriptors and {len(classes)} names")
        names = sorted({str(c) for c in classes})
        labels = np.array([names.index(str(c)) for c in classes], dtype=np.int64)
        embedded = _unit(np.asarray(descriptors, dtype=np.float32) - center)
        namer = cls(names, embedded, labels, center, method, k, top_patches)
        own, _ = namer.leave_one_out()
        finite = np.isfinite(own)
        overall = float(np.quantile(own[finite], quantile)) if finite.any() else float("inf")
        namer.unknown_distances = np.array([
            float(np.quantile(own[finite & (labels == c)], quantile)) if (finite & (labels == c)).any() else overall
            for c in range(len(names))
        ])
        return namer

    def class_distances(self, embedded: np.ndarray, exclude: int | None = None) -> np.ndarray:
        """(N, classes) cosine distances of embedded descriptors to each class; inf for a class with no example."""
        keep = np.ones(len(self.labels), bool)
        if exclude is not None:
            keep[exclude] = False
        out = np.full((len(embedded), len(self.classes)), np.inf, dtype=np.float64)
        for c in range(len(self.classes)):
            members = self.embedded[keep & (self.labels == c)]
            if len(members) == 0:
                continue
            if self.method == "mean":
                out[:, c] = 1.0 - embedded @ _unit(members.mean(axis=0))
            else:
                distances = 1.0 - embedded @ members.T
                nearest = np.sort(distances, axis=1)[:, : min(self.k, len(members))]
                out[:, c] = nearest.mean(axis=1)
        return out

    def _decide(self, distances: np.ndarray) -> list[str]:
        best = distances.argmin(axis=1)
        return [
            self.classes[b] if d[b] <= self.unknown_distances[b] else UNKNOWN
            for b, d in zip(best.tolist(), distances, strict=True)
        ]

    def name(self, descriptors: np.ndarray) -> list[str]:
        """Class name (or `UNKNOWN`) for each pooled descriptor (N, D)."""
        if len(descriptors) == 0:
            return []
        embedded = _unit(np.asarray(descriptors, dtype=np.float32) - self.center)
        return self._decide(self.class_distances(embedded))

    def leave_one_out(self) -> tuple[np.ndarray, list[str]]:
        """Per example, with it left out: its distance to its own class, and the name it would get."""
        own = np.empty(len(self.labels), dtype=np.float64)  # inf for an example alone in its class
        names: list[str] = []
        for i in range(len(self.labels)):
            distances = self.class_distances(self.embedded[i : i + 1], exclude=i)
            own[i] = distances[0, self.labels[i]]
            names.extend(self._decide(distances))
        return own, names

    # -- model file ------------------------------------------------------------------------------------
    def config(self) -> dict[str, JsonValue]:
        return {
            "classes": list(self.classes),
            "method": self.method,
            "k": self.k,
            "top_patches": self.top_patches,
            "unknown_distances": [float(d) if np.isfinite(d) else None for d in self.unknown_distances],
            "examples_per_class": {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)},  # for people
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "embedded": torch.from_numpy(self.embedded.copy()),
            "labels": torch.from_numpy(self.labels.copy()),
            "center": torch.from_numpy(self.center.copy()),
        }

    @classmethod
    def from_state(cls, config: Mapping[str, JsonValue], tensors: Mapping[str, torch.Tensor]) -> DefectNamer:
        stored = _NamerConfig.model_validate(config)
        return cls(
            classes=stored.classes,
            embedded=tensors["embedded"].numpy(),
            labels=tensors["labels"].numpy(),
            center=tensors["center"].numpy(),
            method=stored.method,
            k=stored.k,
            top_patches=stored.top_patches,
            unknown_distances=[float("inf") if d is None else d for d in stored.unknown_distances],
        )


class _NamerConfig(BaseModel):
    """The namer's part of a model file, checked on load (`examples_per_class` is for people to read)."""

    classes: list[str]
    method: str
    k: int
    top_patches: int
    unknown_distances: list[float | None]
    examples_per_class: dict[str, int] = {}
