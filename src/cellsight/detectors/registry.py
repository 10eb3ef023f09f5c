"""Maps detector names to classes. A leaf: it imports no detector.

Built-in detectors are registered by name and import path in `cellsight.detectors` (the package's
`__init__`) and imported on first use, so asking for `supervised` never imports faiss (PatchCore's
search), and a machine without it can still train and run supervised models. Other code registers a
class directly with `@register`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from cellsight.errors import ConfigError

if TYPE_CHECKING:
    from cellsight.detectors.base import Detector

    DetectorClass = type[Detector[Any]]

_CLASSES: dict[str, DetectorClass] = {}
_PATHS: dict[str, str] = {}  # name -> "package.module:Class", imported on first use


def register(cls: DetectorClass) -> DetectorClass:
    """Class decorator: make a detector available by its `name`."""
    known = _CLASSES.get(cls.name)
    path = _PATHS.get(cls.name)
    if (known is not None and known is not cls) or (path is not None and path != _path_of(cls)):
        raise ValueError(f"detector name {cls.name!r} is registered twice")
    _CLASSES[cls.name] = cls
    return cls


def register_path(name: str, path: str) -> None:
    """Register a detector by import path ("package.module:Class"), imported when first asked for."""
    if _PATHS.get(name, path) != path or (name in _CLASSES and _path_of(_CLASSES[name]) != path):
        raise ValueError(f"detector name {name!r} is registered twice")
    _PATHS[name] = path


def detector_class(name: str) -> DetectorClass:
    """The detector class registered as `name`; a `ConfigError` listing the known names otherwise."""
    if name not in _CLASSES and name in _PATHS:
        module, _, attribute = _PATHS[name].partition(":")
        cls = getattr(import_module(module), attribute)
        if cls.name != name:
            raise ValueError(f"{_PATHS[name]} is registered as {name!r} but is named {cls.name!r}")
        _CLASSES[name] = cls
    try:
        return _CLASSES[name]
    except KeyError:
        raise ConfigError(f"unknown detector {name!r}; known detectors: {', '.join(detector_names())}") from None


def detector_names() -> list[str]:
    """Every registered name, sorted (built-ins are listed without being imported)."""
    return sorted(set(_CLASSES) | set(_PATHS))


def _path_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"
