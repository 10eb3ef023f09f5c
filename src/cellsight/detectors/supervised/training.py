"""The supervised training loop, shared by both ways of training (cached features, end to end).

A plain torch loop, on purpose (no framework that hides it): AdamW with a lower learning rate for the
pretrained body than for the new heads, linear warm-up then cosine decay per step, early stopping on the
class-balanced validation loss of the defect logit, the best epoch's weights restored.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cellsight.detectors.base import ProgressFactory
from cellsight.detectors.supervised.end_to_end import batches
from cellsight.detectors.supervised.finetune import balanced_class_weights
from cellsight.errors import DataError

BatchLoss = Callable[[torch.Tensor], torch.Tensor]


class TrainingTensors(Protocol):
    """What the loss weights need of a training set: cached features (`Encoded`) or images (`PreparedImages`)."""

    @property
    def labels(self) -> torch.Tensor: ...
    @property
    def classes(self) -> torch.Tensor: ...  # defect-class index, -1 for good images
    @property
    def masks(self) -> torch.Tensor: ...
    @property
    def mask_known(self) -> torch.Tensor: ...


@dataclass(frozen=True)
class LoopSettings:
    lr: float
    backbone_lr_factor: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    warmup_epochs: float
    patience: int
    seed: int


def train_epochs(
    net: nn.Module,
    n_train: int,
    val_labels: torch.Tensor,
    epoch: Callable[[torch.Generator], tuple[torch.Tensor, BatchLoss]],
    val_scores: Callable[[], np.ndarray],
    settings: LoopSettings,
    progress: ProgressFactory | None = None,
) -> tuple[list[dict[str, float]], int]:
    """Train `net` in place; returns the per-epoch history and the best epoch (whose weights it ends with).

    `epoch(generator)` gives the epoch's order of the training items and the loss of a batch of indices;
    `val_scores()` the validation logits. Parameters whose names start with "backbone." train at
    `lr * backbone_lr_factor`, the others (the heads) at `lr`; frozen parameters are left out.
    """
    if len(val_labels) == 0 or len(set(val_labels.tolist())) < 2:
        raise DataError("early stopping needs good and defective images in the validation split")
    s = settings
    torch.manual_seed(s.seed)
    generator = torch.Generator().manual_seed(s.seed)
    head_params = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
    body_params = [p for n, p in net.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    optimiser = torch.optim.AdamW(
        [{"params": head_params, "lr": s.lr}, {"params": body_params, "lr": s.lr * s.backbone_lr_factor}],
        weight_decay=s.weight_decay,
    )
    per_epoch = math.ceil(n_train / s.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, warmup_cosine(s.max_epochs * per_epoch, round(s.warmup_epochs * per_epoch))
    )
    advance = progress("train epochs", s.max_epochs) if progress else None
    best_loss, best_state, best_epoch, bad = float("inf"), copy.deepcopy(net.state_dict()), -1, 0
    history: list[dict[str, float]] = []
    for index in range(s.max_epochs):
        started = time.perf_counter()
        net.train()
        order, batch_loss = epoch(generator)
        total = 0.0
        for idx in batches(n_train, s.batch_size, order):
            loss = batch_loss(idx)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
        val_loss = balanced_loss(val_scores(), val_labels)
        history.append({"epoch": index, "train_loss": total / n_train, "val_loss": val_loss,
                        "seconds": time.perf_counter() - started})
        if advance:
            advance(1)
        if val_loss < best_loss - 1e-4:
            best_loss, best_state, bad, best_epoch = val_loss, copy.deepcopy(net.state_dict()), 0, index
        else:
            bad += 1
            if bad >= s.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    return history, best_epoch


def balanced_loss(logits: np.ndarray, labels: torch.Tensor) -> float:
    """Class-balanced BCE of the defect logit: the early-stopping criterion."""
    y = labels.float()
    losses = F.binary_cross_entropy_with_logits(torch.from_numpy(logits).float(), y, reduction="none")
    return float(0.5 * (losses[y == 0].mean() + losses[y == 1].mean()))


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor per step: linear warm-up from ~0 to 1 over `warmup_steps`, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class LossWeights:
    """Class-balanced weights for the defect logit, the class head and the segmentation pixels."""

    def __init__(self, label: torch.Tensor, classes: torch.Tensor | None, seg_pos: torch.Tensor) -> None:
        self.label, self.classes, self.seg_pos = label, classes, seg_pos

    @classmethod
    def of(cls, data: TrainingTensors, n_classes: int, device: torch.device) -> LossWeights:
        """From the training labels, defect-class indices and the known masks' pixels."""
        label = torch.from_numpy(balanced_class_weights(data.labels.numpy(), 2))
        defect = data.classes[data.classes >= 0].numpy()
        known = data.masks[data.mask_known]
        classes = torch.from_numpy(balanced_class_weights(defect, n_classes)) if n_classes >= 2 else None
        positive = float(known.mean()) if known.numel() else 0.0
        seg_pos = torch.tensor(min((1 - positive) / positive, 50.0) if positive > 0 else 1.0)
        return cls(label.to(device), None if classes is None else classes.to(device), seg_pos.to(device))
