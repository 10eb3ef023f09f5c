"""The pieces of supervised fine-tuning: augmentation, class-balanced weights, the frozen-feature cache.

Why a cache: on a 2-core CPU a full forward and backward pass of EfficientNet-Lite0 costs 150-300 ms
per 224 px image, so ten epochs over ELPV's 1,970 cells would take an hour. The stem and the first
blocks (most of the compute, at high resolution) are frozen; their output is computed once per image
and per augmented view, and only the deep blocks and the heads are trained on it. Augmentation is
applied to the image before the frozen part, so each cached view is a real augmented image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from cellsight.data.images import to_float01, to_gray, to_rgb
from cellsight.detectors.base import ProgressCallback


@dataclass(frozen=True)
class Augmentation:
    """Augmentation suited to inspection images: geometry and exposure only, never colour."""

    flip: bool = True
    max_shift: float = 0.06  # fraction of the side
    brightness: float = 0.08  # additive, in [0, 1] intensity units
    contrast: float = 0.2  # multiplicative around the image mean: 1 +- contrast

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One random view of a float [0, 1] image (H, W) or (H, W, 3) and of its mask alike."""
        if self.flip and rng.random() < 0.5:
            image, mask = image[:, ::-1], None if mask is None else mask[:, ::-1]
        if self.flip and rng.random() < 0.5:
            image, mask = image[::-1], None if mask is None else mask[::-1]
        height, width = image.shape[:2]
        dx, dy = (rng.uniform(-self.max_shift, self.max_shift, 2) * (width, height)).tolist()
        shift = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
        image = cv2.warpAffine(np.ascontiguousarray(image), shift, (width, height), borderMode=cv2.BORDER_REFLECT)
        if mask is not None:
            mask = cv2.warpAffine(np.ascontiguousarray(mask), shift, (width, height), flags=cv2.INTER_NEAREST)
        factor = 1.0 + rng.uniform(-self.contrast, self.contrast)
        offset = rng.uniform(-self.brightness, self.brightness)
        mean = float(image.mean())
        image = np.clip((image - mean) * factor + mean + offset, 0.0, 1.0).astype(np.float32)
        return image, mask

    def batch(
        self, images: torch.Tensor, masks: torch.Tensor | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The same random views for a torch batch (N, C, H, W) in [0, 1] on any device, each image its own
        draw; masks (N, 1, H, W) move with their images. End-to-end fine-tuning augments every step this
        way on the GPU. The random numbers come from `generator` on the CPU, so a seed gives the same
        views on either device."""
        n, _, height, width = images.shape
        draws = torch.rand(n, 6, generator=generator)
        if self.flip:
            flip_x = draws[:, 0] < 0.5
            flip_y = draws[:, 1] < 0.5
        else:
            flip_x = flip_y = torch.zeros(n, dtype=torch.bool)
        shift = (draws[:, 2:4] * 2.0 - 1.0) * self.max_shift * 2.0  # fraction of the side -> [-1, 1] units
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = torch.where(flip_x, -1.0, 1.0)
        theta[:, 1, 1] = torch.where(flip_y, -1.0, 1.0)
        theta[:, :, 2] = -shift  # sample from x - dx: the content moves by +dx, as in cv2.warpAffine
        theta = theta.to(images.device, images.dtype)
        grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        factor = (1.0 + (draws[:, 4] * 2.0 - 1.0) * self.contrast).to(images.device, images.dtype)
        offset = ((draws[:, 5] * 2.0 - 1.0) * self.brightness).to(images.device, images.dtype)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * factor.view(n, 1, 1, 1) + mean + offset.view(n, 1, 1, 1)).clamp(0.0, 1.0)
        if masks is not None:
            masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        return out, masks


# Test-time views: as is, left-right, up-down, both (solar cells look the same either way round).
FLIPS: tuple[tuple[bool, bool], ...] = ((False, False), (False, True), (True, False), (True, True))


def flip_view(image: np.ndarray, view: int) -> np.ndarray:
    """`image` (H, W[, C]) flipped as test-time view `view` of `FLIPS`; each flip is its own inverse."""
    up_down, left_right = FLIPS[view]
    if up_down:
        image = image[::-1]
    if left_right:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def balanced_class_weights(labels: Sequence[int] | np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class loss weights n / (k * n_c): every present class contributes equally to the loss.

    Absent classes get weight 0. With 1,300 good and 30 defective cells an unweighted loss is won by
    calling everything good; weighted, the 30 defects weigh as much as the 1,300 goods.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes, dtype=np.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def prepare_image(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Any decoded image -> float32 [0, 1] at the working size, gray (S, S) or RGB (S, S, 3)."""
    convert = to_gray if channels == 1 else to_rgb
    return cv2.resize(to_float01(convert(image)), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def prepare_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A mask (non-zero = defect) -> float32 {0, 1} at the working size."""
    binary = (to_gray(mask) > 0).astype(np.float32) if mask.ndim == 3 else (mask > 0).astype(np.float32)
    return cv2.resize(binary, (size, size), interpolation=cv2.INTER_NEAREST)


@dataclass(frozen=True)
class Encoded:
    """Frozen-part features of every image and view, with labels and downsampled masks.

    features: (N, V, C, h, w) float32 (the exact input of the trained part);
    masks: (N, V, h, w) float32 defect fraction per cell;
    mask_known: (N,) bool, False where a defective image has no mask (no segmentation loss then).
    """

    features: torch.Tensor
    labels: torch.Tensor
    classes: torch.Tensor  # index into the detector's defect classes, -1 for good images
    masks: torch.Tensor
    mask_known: torch.Tensor

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def subset(self, index: Sequence[int] | np.ndarray) -> Encoded:
        """The encoded items at `index`: lets several trainings share one costly encoding pass."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return Encoded(self.features[idx], self.labels[idx], self.classes[idx], self.masks[idx], self.mask_known[idx])


def encode(
    images: Sequence[np.ndarray],
    labels: Sequence[int],
    class_index: Sequence[int],
    masks: Sequence[np.ndarray | None],
    frozen: Callable[[np.ndarray], torch.Tensor],
    size: int,
    channels: int,
    views: int,
    augmentation: Augmentation,
    seed: int,
    batch_size: int = 16,
    progress: ProgressCallback | None = None,
    flips: bool = False,
) -> Encoded:
    """Run `frozen` (a batch of prepared images -> (B, C, h, w) features) over every image and view.

    View 0 is the image as inspected; views 1.. are seeded random augmentations of it, or with `flips`
    its flips (`FLIPS`, the test-time views; `views` is then ignored).
    """
    views = len(FLIPS) if flips else views
    rng = np.random.default_rng(seed)
    any_mask = any(m is not None for m in masks)
    feats: list[torch.Tensor] = []
    cells: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        batch, batch_masks = [], []
        for i in range(start, stop):
            image = prepare_image(images[i], size, channels)
            raw_mask = masks[i]
            mask = prepare_mask(raw_mask, size) if raw_mask is not None else np.zeros((size, size), np.float32)
            for view in range(views):
                if flips:
                    batch.append(flip_view(image, view))
                    batch_masks.append(flip_view(mask, view))
                    continue
                img, msk = (image, mask) if view == 0 else augmentation(image, mask, rng)
                assert msk is not None
                batch.append(img)
                batch_masks.append(msk)
        out = frozen(np.stack(batch)).float()
        h, w = out.shape[-2:]
        feats.append(out.reshape(stop - start, views, *out.shape[1:]))
        if any_mask:
            small = [cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA) for m in batch_masks]
            cells.append(np.stack(small).reshape(stop - start, views, h, w))
        if progress is not None:
            progress(stop - start)
    features = torch.cat(feats)
    n, _, _, h, w = features.shape
    mask_tensor = torch.from_numpy(np.concatenate(cells)) if any_mask else torch.zeros((n, views, h, w))
    label_tensor = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    known = torch.tensor([m is not None or lab == 0 for m, lab in zip(masks, labels, strict=True)]) & any_mask
    return Encoded(
        features, label_tensor, torch.as_tensor(np.asarray(class_index, dtype=np.int64)), mask_tensor, known
    )
