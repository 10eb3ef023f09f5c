"""Maps detector names to classes: a new detector is one module plus one `register` call."""

from __future__ import annotations

from cellsight.detectors.base import Detector

_REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector available by its `name`."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"detector name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def detector_class(name: str) -> type[Detector]:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ValueError(f"unknown detector {name!r}; known detectors: {known}") from None


def detector_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    # Importing the modules runs their @register decorators.
    from cellsight.detectors import classical, ensemble, hybrid, patchcore, supervised  # noqa: F401
