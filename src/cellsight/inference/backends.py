"""Choosing the backend: `local` unless the line's `inference:` block says `ray` (imported only then)."""

from __future__ import annotations

from cellsight.inference.seam import InferenceBackend, InferenceSettings, LocalBackend


def open_backend(settings: InferenceSettings | None, line: str = "cellsight") -> InferenceBackend:
    """The backend the settings name; `ray` connects to (or starts) the cluster now, failing clearly."""
    if settings is None or settings.backend == "local":
        return LocalBackend()
    from cellsight.inference.ray_serve import RayBackend

    return RayBackend(settings, line)
