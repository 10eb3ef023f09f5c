"""Supervised detector: a pretrained timm backbone fine-tuned on labelled good and defective images.

Good-only detectors see what is unusual; this one learns what the station's defects look like, which is
what a line wants once it has labelled some. Training is a plain torch loop (`training.py`):
- `fine_tune="top"` (the CPU default): the stem and the first `frozen_blocks` (6) blocks keep their
  ImageNet weights; their output is cached per image and augmented view (see `finetune.py` for why), the
  deeper blocks and the heads are trained;
- `fine_tune="full"` (the GPU default): only the stem and the first block stay frozen; every step runs the
  whole net on freshly augmented images, in bfloat16 autocast on CUDA (see `end_to_end.py` for why);
- class-balanced loss (defect vs good, and the defect class where there are several), plus a light
  segmentation head trained on masks where the training set has them;
- linear warm-up then cosine learning rate, label smoothing, early stopping (patience) on the held-out
  validation split, restoring the best epoch's weights;
- test-time augmentation (`tta`): the defect logit is the mean over the cell and its three flips;
- defaults for "top" (256 px, blocks 0-5 frozen, 3 cached views, up to 30 epochs) were chosen on ELPV's
  validation split for a 2-core CPU: training takes minutes there; on ELPV blocks 0-4 frozen gave a
  higher validation AUROC (0.972 vs 0.948) but the same test accuracy, at 6x the CPU training loop;
- deterministic for a seed on the CPU (on a GPU up to cuDNN's kernel choice); on a GPU when there is one,
  and the model file is the same either way (tensors are stored on the CPU, inference runs on both).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Self

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import JsonValue

from cellsight.detectors.base import (
    Detector,
    JsonObject,
    LearnsFrom,
    MapSize,
    ProgressCallback,
    ProgressFactory,
    Scores,
    Tensors,
    TrainingSet,
    json_list,
)
from cellsight.detectors.supervised.end_to_end import (
    PreparedImages,
    area_downsample,
    autocast,
    batches,
    channels_first,
    prepare_images,
)
from cellsight.detectors.supervised.finetune import (
    FLIPS,
    Augmentation,
    Encoded,
    encode,
    flip_view,
    prepare_image,
)
from cellsight.detectors.supervised.net import NetOutput, SupervisedNet, build_backbone
from cellsight.detectors.supervised.settings import SupervisedSettings, choose_device
from cellsight.detectors.supervised.training import BatchLoss, LoopSettings, LossWeights, train_epochs
from cellsight.errors import DataError, ModelFileError
from cellsight.features.backbones import BackboneSpec, backbone_spec, preprocess
from cellsight.features.weights import pretrained_state_dict

_log = logging.getLogger(__name__)


class Supervised(Detector[SupervisedSettings]):
    """Fine-tuned classifier (+ segmentation head where masks exist); raw score = defect logit."""

    name = "supervised"
    Settings = SupervisedSettings
    learns_from = LearnsFrom.LABELLED

    def __init__(self, settings: SupervisedSettings | None = None, /, **options: object) -> None:
        super().__init__(settings, **options)
        self.augmentation = Augmentation()
        self.defect_classes: list[str] = []
        self.segmentation = False
        self.history: list[dict[str, float]] = []
        self.best_epoch = -1
        self.net: SupervisedNet | None = None
        self._device: torch.device | None = None

    @property
    def fitted(self) -> bool:
        return self.net is not None

    @property
    def device(self) -> torch.device:
        """Where the net trains and runs: `settings.device`, resolved on first use ("auto": CUDA if present)."""
        if self._device is None:
            self._device = choose_device(self.settings.device)
        return self._device

    @property
    def spec(self) -> BackboneSpec:
        return backbone_spec(self.settings.backbone)

    # -- fitting -----------------------------------------------------------------------------------
    def _frozen(self, batch: np.ndarray) -> torch.Tensor:
        assert self.net is not None
        x = preprocess(batch, self.spec).to(self.device)
        with torch.inference_mode():
            return self.net.trunk(x).contiguous().cpu()

    def build(self, defect_classes: Sequence[str], segmentation: bool) -> SupervisedNet:
        """A fresh network with the pretrained backbone and seeded new heads; decides the fine-tuning mode
        and the frozen blocks for the device (the first step of `fit`)."""
        self.settings = self.settings.resolved(self.device)
        s = self.settings
        assert s.frozen_blocks is not None
        torch.manual_seed(s.seed)
        self.defect_classes = sorted(set(defect_classes))
        self.segmentation = segmentation
        backbone = build_backbone(s.backbone, pretrained_state_dict(s.backbone, s.backbone_weights))
        net = SupervisedNet(backbone, s.frozen_blocks, len(self.defect_classes), segmentation)
        self.net = _placed(net, self.device)
        return self.net

    def encode(
        self, data: TrainingSet, views: int, progress: ProgressCallback | None = None, flips: bool = False
    ) -> Encoded:
        """Frozen-part features of `data` (view 0 as is, further views augmented, or with `flips` the image
        and its three flips); needs `build` first."""
        return encode(
            data.images, data.labels, self._class_index(data), data.masks, self._frozen, self.settings.image_size,
            self.settings.channels, views, self.augmentation, self.settings.seed, progress=progress, flips=flips,
        )

    def fit(self, train: TrainingSet, progress: ProgressFactory | None = None) -> Self:
        """Needs goods and defects, and `train.validation` (goods and defects) for early stopping."""
        val = train.validation
        defects = [c for c, y in zip(train.defect_classes, train.labels, strict=True) if y == 1]
        if not defects or len(defects) == len(train):
            raise DataError(f"{self.name} needs both good and defective images in the training set")
        if val is None or len(set(val.labels)) < 2:
            raise DataError(f"{self.name} needs a validation set with good and defective images (early stopping)")
        has_masks = any(m is not None for m, y in zip(train.masks, train.labels, strict=True) if y == 1)
        self.build(defects, has_masks)
        if self.settings.fine_tune == "full":
            if self.device.type == "cpu":
                _log.warning(
                    "supervised: end-to-end fine-tuning (fine_tune=full) on the CPU runs the whole network for every "
                    "image and epoch: on 2 cores about 6 min per epoch over ELPV at 300 px (BENCHMARKS.md); "
                    "fine_tune=top trains in minutes"
                )
            prep_train = self.prepare(train, progress("read train", len(train)) if progress else None)
            prep_val = self.prepare(val, progress("read validation", len(val)) if progress else None)
            return self.fit_prepared(prep_train, prep_val, progress)
        enc_train = self.encode(train, self.settings.views, progress("encode train", len(train)) if progress else None)
        enc_val = self.encode(val, 1, progress("encode validation", len(val)) if progress else None)
        return self.fit_encoded(enc_train, enc_val, progress)

    def prepare(self, data: TrainingSet, progress: ProgressCallback | None = None) -> PreparedImages:
        """`data` decoded at the working size for end-to-end training; needs `build` first."""
        return prepare_images(data, self._class_index(data), self.settings.image_size, self.settings.channels, progress)

    def _class_index(self, data: TrainingSet) -> list[int]:
        index = {name: i for i, name in enumerate(self.defect_classes)}
        pairs = zip(data.defect_classes, data.labels, strict=True)
        return [index.get(c, -1) if y == 1 else -1 for c, y in pairs]

    def fit_encoded(self, train: Encoded, val: Encoded, progress: ProgressFactory | None = None) -> Self:
        """The "top" training loop on cached features; `build` must have been called (fit does)."""
        net = self._built()

        def epoch(generator: torch.Generator) -> tuple[torch.Tensor, BatchLoss]:
            order = torch.randperm(len(train), generator=generator)
            view = torch.randint(train.features.shape[1], (len(train),), generator=generator)
            return order, lambda idx: self._loss(net, train, idx, view[idx], weights, self.settings.dropout)

        weights = LossWeights.of(train, len(self.defect_classes), self.device)
        return self._train(len(train), val.labels, epoch, lambda: self.score_encoded(val), progress)

    def fit_prepared(
        self, train: PreparedImages, val: PreparedImages, progress: ProgressFactory | None = None
    ) -> Self:
        """The "full" training loop: the whole net (stem and first block aside) on images augmented afresh
        each step; `build` must have been called (fit does)."""
        net = self._built()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed batch shapes: let cuDNN pick its fastest kernels
            net.to(memory_format=torch.channels_last)
        weights = LossWeights.of(train, len(self.defect_classes), self.device)

        def epoch(generator: torch.Generator) -> tuple[torch.Tensor, BatchLoss]:
            def batch_loss(idx: torch.Tensor) -> torch.Tensor:
                masks = train.masks[idx].to(self.device) if self.segmentation else None
                images, masks = self.augmentation.batch(train.images[idx].to(self.device), masks, generator)
                x = preprocess(images, self.spec, layout="NCHW", channels_last=self.device.type == "cuda")
                with autocast(self.device):
                    out = net.top(net.trunk(x), self.settings.dropout)
                known = train.mask_known[idx].to(self.device)
                target = None
                if masks is not None and out.seg_logits is not None:
                    target = area_downsample(masks, out.seg_logits.shape[-2:])
                return self._loss_of(out, train.labels[idx], train.classes[idx], target, known, weights)

            return torch.randperm(len(train), generator=generator), batch_loss

        return self._train(len(train), val.labels, epoch, lambda: self.score_prepared(val), progress)

    def _built(self) -> SupervisedNet:
        if self.net is None:
            raise RuntimeError("call build() before training")  # a programming error, not the user's
        return self.net

    def _train(
        self,
        n_train: int,
        val_labels: torch.Tensor,
        epoch: Callable[[torch.Generator], tuple[torch.Tensor, BatchLoss]],
        val_scores: Callable[[], np.ndarray],
        progress: ProgressFactory | None,
    ) -> Self:
        """The shared loop (`training.train_epochs`) with this detector's settings."""
        s = self.settings
        settings = LoopSettings(
            s.lr, s.backbone_lr_factor, s.weight_decay, s.batch_size, s.max_epochs, s.warmup_epochs, s.patience, s.seed
        )
        self.history, self.best_epoch = train_epochs(
            self._built(), n_train, val_labels, epoch, val_scores, settings, progress
        )
        return self

    def _loss(
        self, net: SupervisedNet, data: Encoded, idx: torch.Tensor, view: torch.Tensor, w: LossWeights,
        dropout: float,
    ) -> torch.Tensor:
        out = net.top(data.features[idx, view].to(self.device), dropout)
        masks = data.masks[idx, view].to(self.device) if out.seg_logits is not None else None
        return self._loss_of(out, data.labels[idx], data.classes[idx], masks, data.mask_known[idx].to(self.device), w)

    def _loss_of(
        self, out: NetOutput, labels: torch.Tensor, classes: torch.Tensor, masks: torch.Tensor | None,
        known: torch.Tensor, w: LossWeights,
    ) -> torch.Tensor:
        """Balanced, smoothed defect loss + defect-class loss + segmentation loss where masks are known;
        `masks` are the defect fractions at the segmentation logits' resolution. Float32 throughout."""
        labels, classes = labels.to(self.device), classes.to(self.device)
        sample_w = w.label[labels]
        smoothing = self.settings.label_smoothing
        target = labels.float() * (1.0 - smoothing) + 0.5 * smoothing
        logit = out.logit.float()
        loss = (F.binary_cross_entropy_with_logits(logit, target, reduction="none") * sample_w).sum()
        loss = loss / sample_w.sum()
        if out.class_logits is not None and bool((classes >= 0).any()):
            keep = classes >= 0
            loss = loss + F.cross_entropy(
                out.class_logits[keep].float(), classes[keep], weight=w.classes, label_smoothing=smoothing
            )
        if out.seg_logits is not None and masks is not None and bool(known.any()):
            loss = loss + self.settings.seg_weight * F.binary_cross_entropy_with_logits(
                out.seg_logits[known].float(), masks[known], pos_weight=w.seg_pos
            )
        return loss

    # -- scoring -----------------------------------------------------------------------------------
    def score_encoded(self, data: Encoded, all_views: bool = False) -> np.ndarray:
        """Defect logits from cached frozen features: what `score` computes, without rerunning the
        frozen part; lets a benchmark reuse one encoding pass. View 0 only, or (`all_views`, for features
        from `encode_tta`) the mean logit over every view."""
        self.check_fitted()
        net = self._built()
        net.eval()
        views = data.features.shape[1] if all_views else 1
        logits = []
        with torch.inference_mode():
            for start in range(0, len(data), 64):
                chunk = data.features[start : start + 64, :views]
                flat = chunk.reshape(-1, *chunk.shape[2:]).to(self.device)
                logits.append(net.top(flat).logit.cpu().reshape(len(chunk), views).mean(1))
        return torch.cat(logits).numpy().astype(np.float32)

    def score_prepared(self, data: PreparedImages, batch_size: int = 64) -> np.ndarray:
        """Defect logits of prepared images, averaged over the test-time flips when `tta` is on: what
        `score` gives for the same images, in bfloat16 on a GPU (the early-stopping score of
        end-to-end training)."""
        logits = []
        for idx in batches(len(data), batch_size):
            out, views = self._forward_views(data.images[idx].to(self.device), fast=True)
            logits.append(out.logit.float().cpu().reshape(len(idx), views).mean(1))
        return torch.cat(logits).numpy().astype(np.float32)

    def _forward_views(self, x: torch.Tensor, fast: bool = False) -> tuple[NetOutput, int]:
        """The net on a batch (N, C, S, S) in [0, 1] and, with `tta`, on its flips (N x views rows, each
        image's views together); `fast`: bfloat16 autocast on a GPU, else float32 as inspection runs."""
        net = self._built()
        net.eval()
        views = len(FLIPS) if self.settings.tta else 1
        flipped = torch.stack([_flip(x, v) for v in range(views)], 1).flatten(0, 1)
        batch = preprocess(flipped, self.spec, layout="NCHW")
        with torch.inference_mode(), autocast(self.device) if fast else nullcontext():
            return net.top(net.trunk(batch).contiguous()), views

    def encode_tta(self, data: TrainingSet, progress: ProgressCallback | None = None) -> Encoded:
        """Frozen-part features of `data` and of its flips (the test-time views scoring averages when `tta`)."""
        return self.encode(data, 1, progress, flips=self.settings.tta)

    def score(
        self, images: Sequence[np.ndarray], maps: MapSize = MapSize.INPUT, name_from: float | None = None
    ) -> Scores:
        """Raw scores (defect logits, averaged over the flips with `tta`), maps in logit units (working size:
        the net's own map resolution), and the most likely defect class of images at or above `name_from`."""
        self.check_fitted()
        size, channels = self.settings.image_size, self.settings.channels
        scores: list[np.ndarray] = []
        out_maps: list[np.ndarray] = []
        classes: list[str | None] = []
        for start in range(0, len(images), 16):
            chunk = [images[i] for i in range(start, min(start + 16, len(images)))]
            x = torch.stack([channels_first(prepare_image(image, size, channels)) for image in chunk])
            out, views = self._forward_views(x.to(self.device))
            logits = out.logit.float().cpu().reshape(len(chunk), views)
            scores.append(logits.mean(1).numpy())
            if maps is not MapSize.NONE:
                view_maps = out.map.float().cpu().numpy()
                view_maps = view_maps.reshape(len(chunk), views, *view_maps.shape[1:])
                small = np.stack([
                    np.mean([flip_view(view_maps[i, v], v) for v in range(views)], axis=0) for i in range(len(chunk))
                ])
                for i, image in enumerate(chunk):
                    height, width = image.shape[:2]
                    full = maps is MapSize.INPUT
                    out_maps.append(cv2.resize(small[i], (width, height), interpolation=cv2.INTER_LINEAR) if full
                                    else small[i])
            if out.class_logits is not None:
                class_logits = out.class_logits.float().cpu().reshape(len(chunk), views, -1).mean(1)
                classes += [self.defect_classes[int(k)] for k in class_logits.argmax(1)]
            else:
                classes += [self.defect_classes[0] if self.defect_classes else None] * len(chunk)
        raw = np.concatenate(scores).astype(np.float32) if scores else np.empty(0, dtype=np.float32)
        named = None
        if name_from is not None:
            named = [c if float(r) >= name_from else None for c, r in zip(classes, raw, strict=True)]
        return Scores(raw, None if maps is MapSize.NONE else out_maps, named)

    # -- model file ------------------------------------------------------------------------------------
    def fitted_config(self) -> JsonObject:
        history: list[JsonValue] = [dict(epoch) for epoch in self.history]
        return {
            "defect_classes": list(self.defect_classes),
            "segmentation": self.segmentation,
            "best_epoch": self.best_epoch,
            "history": history,
            "trained_on": self.device.type,
        }

    def tensors(self) -> Tensors:
        self.check_fitted()
        return {k: v.detach().cpu().contiguous() for k, v in self._built().state_dict().items()}

    def restore(self, fitted: Mapping[str, JsonValue], tensors: Mapping[str, torch.Tensor]) -> None:
        s = self.settings
        if s.frozen_blocks is None or s.fine_tune == "auto":
            raise ModelFileError("config", f"{self.name}: fine_tune and frozen_blocks must be resolved in a model file")
        self.defect_classes = [str(c) for c in json_list(fitted, "defect_classes")]
        self.segmentation = bool(fitted["segmentation"])
        best = fitted.get("best_epoch", -1)
        self.best_epoch = int(best) if isinstance(best, int) else -1
        history = fitted.get("history")
        epochs = history if isinstance(history, list) else []
        self.history = [
            {str(k): float(v) for k, v in epoch.items() if isinstance(v, int | float)}
            for epoch in epochs
            if isinstance(epoch, dict)
        ]
        backbone = build_backbone(s.backbone, None)
        net = SupervisedNet(backbone, s.frozen_blocks, len(self.defect_classes), self.segmentation)
        net.load_state_dict(dict(tensors), strict=True)
        self.net = _placed(net, self.device)


def _placed(net: SupervisedNet, device: torch.device) -> SupervisedNet:
    """On `device`, in eval mode; the high-resolution frozen part channels-last (2x faster on CPU), the
    small-map top contiguous (faster there)."""
    net = net.to(device).eval()
    for module in net.frozen_modules():
        module.to(memory_format=torch.channels_last)
    return net


def _flip(x: torch.Tensor, view: int) -> torch.Tensor:
    """Test-time view `view` of `FLIPS` for an (N, C, H, W) batch, as `flip_view` does for one image."""
    up_down, left_right = FLIPS[view]
    dims = [d for d, on in ((2, up_down), (3, left_right)) if on]
    return x.flip(dims) if dims else x
