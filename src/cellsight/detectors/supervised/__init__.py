"""The supervised family: a fine-tuned timm classifier (`detector.py`), its settings, network, the two
ways of training it (`finetune.py` frozen-prefix cache, `end_to_end.py`), the shared loop
(`training.py`) and an ensemble of such models (`ensemble.py`)."""

from cellsight.detectors.supervised.detector import Supervised
from cellsight.detectors.supervised.settings import (
    FROZEN_BLOCKS,
    SupervisedSettings,
    choose_device,
    fine_tune_mode,
)

__all__ = ["FROZEN_BLOCKS", "Supervised", "SupervisedSettings", "choose_device", "fine_tune_mode"]
