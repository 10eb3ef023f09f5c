"""End-to-end fine-tuning: every block but the stem trains, on images augmented afresh at every step.

Why a second way to train: the frozen-prefix cache (`finetune.py`) keeps CPU training to minutes, but the
frozen early blocks see the station's images only through ImageNet's eyes, and a few cached views are
all the augmentation the net ever gets. On ELPV that stops at 87-88% accuracy. On a GPU a forward and
backward pass of EfficientNet-Lite0 at 300 px costs well under a millisecond per image, so the whole net
can adapt, with a new random view of every image in every epoch (`Augmentation.batch`, on the device).

The images are decoded and resized once (`prepare_images`) and kept as one float tensor; a batch is
moved to the device, augmented there, normalised and run in bfloat16 autocast on CUDA (float32 on the
CPU, where this also works, only slowly).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cellsight.detectors.base import ProgressCallback, TrainingSet
from cellsight.detectors.supervised.finetune import prepare_image, prepare_mask


@dataclass(frozen=True)
class PreparedImages:
    """Decoded images at the working size, ready to batch.

    images: (N, C, S, S) float32 in [0, 1] on the CPU; masks: (N, 1, S, S) float32 {0, 1} (zeros where
    unknown); mask_known: (N,) bool, False where a defective image has no mask; classes: index into the
    detector's defect classes, -1 for good images.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: torch.Tensor
    masks: torch.Tensor
    mask_known: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


def prepare_images(
    data: TrainingSet,
    class_index: Sequence[int],
    size: int,
    channels: int,
    progress: ProgressCallback | None = None,
) -> PreparedImages:
    """Read, convert and resize every image (and mask) once, as `Supervised.score` does before scoring."""
    n = len(data)
    images = torch.empty((n, channels, size, size), dtype=torch.float32)
    masks = torch.zeros((n, 1, size, size), dtype=torch.float32)
    any_mask = False
    for i in range(n):
        images[i] = channels_first(prepare_image(data.images[i], size, channels))
        mask = data.masks[i]
        if mask is not None:
            masks[i, 0] = torch.from_numpy(prepare_mask(mask, size))
            any_mask = True
        if progress is not None:
            progress(1)
    labels = torch.as_tensor(np.asarray(data.labels, dtype=np.int64))
    known = torch.tensor([m is not None or y == 0 for m, y in zip(data.masks, data.labels, strict=True)])
    return PreparedImages(
        images, labels, torch.as_tensor(np.asarray(class_index, dtype=np.int64)), masks, known & any_mask
    )


def channels_first(image: np.ndarray) -> torch.Tensor:
    """A prepared image, gray (S, S) or RGB (S, S, 3), as a (C, S, S) tensor."""
    return torch.from_numpy(image[None] if image.ndim == 2 else image.transpose(2, 0, 1).copy())


def batches(n: int, batch_size: int, order: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Index batches over n items, in `order` when given (the epoch's shuffle), else in sequence."""
    index = torch.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        yield index[start : start + batch_size]


def autocast(device: torch.device) -> AbstractContextManager[object]:
    """bfloat16 autocast on CUDA (tensor cores, no loss scaling needed); nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def area_downsample(masks: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """(N, 1, S, S) masks -> (N, h, w) defect fraction per feature cell, as the cache's masks are."""
    return F.adaptive_avg_pool2d(masks, (int(shape[0]), int(shape[1])))[:, 0]
