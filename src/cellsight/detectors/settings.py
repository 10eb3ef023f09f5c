"""Typed detector settings: one pydantic model per detector, written once.

That one definition is the detector's constructor (`PatchCore(bank_size=8192)` validates through it), the
`settings` part of its model file, the check behind `cellsight train --option key=value` (an unknown key
or a wrong type is a `ConfigError` listing every valid key with its type), and the reading of model
files written before typed settings (`migrate`). Settings are frozen: a detector that resolves an
"auto" value while fitting stores the resolved copy, so its model file says what was actually used.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError
from pydantic_core import ErrorDetails

from cellsight.errors import ConfigError


class DetectorSettings(BaseModel):
    """Base of every detector's settings: unknown keys are refused, values are validated once.

    A setting added later gets a default; when that default would change what an older model file computes,
    `older_defaults` names the value that reproduces files written before the setting existed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    older_defaults: ClassVar[dict[str, JsonValue]] = {}

    @classmethod
    def from_options(cls, options: Mapping[str, object], owner: str = "detector") -> Self:
        """Validated settings from loose key=value options (CLI, JSON); a `ConfigError` names what is wrong."""
        try:
            return cls.model_validate(dict(options))
        except ValidationError as exc:
            problems = "; ".join(_problem(error) for error in exc.errors())
            raise ConfigError(f"{owner} settings: {problems}. Valid settings: {cls.describe()}") from None

    @classmethod
    def from_stored(cls, stored: Mapping[str, JsonValue]) -> Self:
        """Settings read from a model file; a key it lacks takes `older_defaults`' value, else the default."""
        return cls.from_options({**cls.older_defaults, **stored}, "model file")

    @classmethod
    def migrate(cls, config: Mapping[str, JsonValue]) -> Self:
        """The settings of a model file written before typed settings (a flat config of settings and
        learned values): the keys that are fields. Detectors whose old format differs override this."""
        return cls.from_stored({k: v for k, v in config.items() if k in cls.model_fields})

    def to_json(self) -> dict[str, JsonValue]:
        """The settings as stored in the model file (fields marked `exclude` are run-time choices, not stored)."""
        data: dict[str, JsonValue] = self.model_dump(mode="json")
        return data

    @classmethod
    def describe(cls) -> str:
        """Every setting as `name (type, default value)`, for error messages and `--help`."""
        parts = []
        for name, field in cls.model_fields.items():
            default = field.get_default(call_default_factory=True)
            shown = "{...}" if isinstance(default, DetectorSettings) else repr(default)
            parts.append(f"{name} ({type_name(field.annotation)}, default {shown})")
        return ", ".join(parts)


def type_name(annotation: object) -> str:
    """A readable type: `int`, `float | None`, `tuple[int, ...]`, `'hnsw' | 'exact'`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _problem(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown setting {where!r}"
    return f"{where}: {error['msg']} (got {error['input']!r})"
