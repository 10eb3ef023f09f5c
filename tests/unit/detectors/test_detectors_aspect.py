"""PatchCore's `aspect="keep"`: the shorter side to `image_size`, square tiles along the longer one, maps back
at the input's size; a square image is one tile and scores as "squash" does."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cellsight.calibration import calibrate_for_overkill
from cellsight.detectors.base import MapSize, TrainingSet, refit_fold_scores
from cellsight.detectors.patchcore import PatchCore, PatchCoreSettings, kept_shape
from cellsight.modelfile import load_model, save_model

LEGACY = Path(__file__).resolve().parents[2] / "fixtures" / "legacy_models"
TINY = {"image_size": 32, "layers": (1, 2), "bank_size": 256, "batch_size": 4, "projection_dim": 16}


def texture(rng: np.random.Generator, height: int, width: int, color: bool = False) -> np.ndarray:
    """Stripes across the long side, a gentle ramp and noise: the same surface at any size."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = 120.0 + 25.0 * np.sin(x / 5.0) + 0.1 * y + rng.normal(0.0, 5.0, (height, width))
    gray = np.clip(image, 0, 255).astype(np.uint8)
    return np.dstack([gray, gray // 2 + 60, 255 - gray]) if color else gray


def test_the_shorter_side_becomes_the_working_size() -> None:
    assert kept_shape(460, 1130, 256) == (256, 629)  # BSData: three 256-pixel tiles at overlap 32
    assert kept_shape(1130, 460, 256) == (629, 256)
    assert kept_shape(50, 50, 32) == (32, 32)
    assert kept_shape(10, 400, 32) == (32, 1280)


@pytest.mark.parametrize("color", [False, True])
def test_a_square_image_is_one_tile_and_scores_as_squash(color: bool) -> None:
    rng = np.random.default_rng(0)
    goods = [texture(rng, 40, 40, color) for _ in range(6)]
    probes = [texture(rng, 40, 40, color) for _ in range(3)]
    probes[1][10:16, 20:26] = 0
    squash = PatchCore(**TINY).fit(TrainingSet.good(goods))
    keep = PatchCore(**TINY, aspect="keep").fit(TrainingSet.good(goods))
    np.testing.assert_array_equal(squash.memory_bank, keep.memory_bank)  # the same pixels reach the backbone
    np.testing.assert_array_equal(squash.graph_pixels(probes), keep.graph_pixels(probes))
    for size in (MapSize.INPUT, MapSize.WORKING):
        a, b = squash.score(probes, size), keep.score(probes, size)
        np.testing.assert_allclose(b.scores, a.scores, rtol=1e-5)
        assert a.maps is not None and b.maps is not None
        for map_a, map_b in zip(a.maps, b.maps, strict=True):
            assert map_a.shape == map_b.shape
            np.testing.assert_allclose(map_b, map_a, rtol=1e-5, atol=1e-5)
    folds = [0, 0, 0, 1, 1, 1]
    crossed_squash = PatchCore(**TINY).cross_fit(TrainingSet.good(goods), folds)
    crossed_keep = PatchCore(**TINY, aspect="keep").cross_fit(TrainingSet.good(goods), folds)
    np.testing.assert_allclose(crossed_keep, crossed_squash, rtol=1e-5)


@pytest.fixture(scope="module")
def wide() -> tuple[PatchCore, list[np.ndarray]]:
    """Fitted on 40x100 goods (working 32x80: three 32-pixel tiles overlapping by 8)."""
    rng = np.random.default_rng(1)
    goods = [texture(rng, 40, 100) for _ in range(6)]
    return PatchCore(**TINY, aspect="keep").fit(TrainingSet.good(goods)), goods


def test_maps_are_at_each_inputs_size_and_mixed_sizes_score_as_alone(wide: tuple[PatchCore, list]) -> None:
    detector, _ = wide
    rng = np.random.default_rng(2)
    images = [texture(rng, 40, 100), texture(rng, 40, 40), texture(rng, 90, 35)]
    together = detector.score(images)
    assert together.maps is not None and [m.shape for m in together.maps] == [(40, 100), (40, 40), (90, 35)]
    working = detector.score(images, MapSize.WORKING).maps
    assert working is not None and [m.shape for m in working] == [(32, 80), (32, 32), (82, 32)]
    alone = np.concatenate([detector.score([image]).scores for image in images])
    np.testing.assert_allclose(together.scores, alone, rtol=1e-5)
    np.testing.assert_array_equal(together.scores, [m.max() for m in working])
    assert detector.graph_pixels(images).shape == (3 + 1 + 4, 32, 32, 3)  # tiles: 0/24/48; one; 0/24/48/50


def test_a_defect_is_found_where_it_is_on_the_input(wide: tuple[PatchCore, list]) -> None:
    detector, _ = wide
    rng = np.random.default_rng(3)
    good, defective = texture(rng, 40, 100), texture(rng, 40, 100)
    cv2.circle(defective, (78, 22), 4, 0, -1)  # near the far end: only the last tiles see it
    out = detector.score([good, defective])
    assert out.maps is not None
    assert out.scores[1] > 1.3 * out.scores[0]
    y, x = np.unravel_index(int(out.maps[1].argmax()), out.maps[1].shape)
    assert abs(int(x) - 78) <= 6 and abs(int(y) - 22) <= 6


def test_cross_fit_leaves_all_of_an_images_tiles_out() -> None:
    """With every patch in the bank, leaving an image's tiles out is a refit without that image."""
    rng = np.random.default_rng(4)
    goods = [texture(rng, 40, 100) for _ in range(5)]
    settings = {**TINY, "aspect": "keep", "bank_size": 4096}  # 5 images x 3 tiles x 64 patches fit whole
    detector = PatchCore(**settings)
    assert detector.cross_fit_method([0, 1, 2, 3, 4]) == "leave-one-image-out"
    crossed = detector.cross_fit(TrainingSet.good(goods), [0, 1, 2, 3, 4])
    refit = refit_fold_scores(PatchCore(**settings), goods, list(range(len(goods))))
    np.testing.assert_allclose(crossed, refit, rtol=1e-4, atol=1e-5)


def test_ignore_boxes_hold_at_the_inputs_proportions(wide: tuple[PatchCore, list]) -> None:
    _, goods = wide
    box = {"ignore_boxes": [[0.0, 0.0, 0.3, 0.5]]}
    masked = PatchCore(**TINY, aspect="keep", **box).fit(TrainingSet.good(goods))
    rng = np.random.default_rng(5)
    clean, marked = texture(rng, 40, 100), texture(rng, 40, 100)
    marked[4:14, 6:22] = 255  # a label inside the box (x < 30, y < 20)
    out = masked.score([clean, marked])
    assert out.maps is not None
    assert out.scores[1] < 1.2 * out.scores[0]
    assert out.maps[1][:18, :28].max() == out.maps[1].min()  # blanked (its edge is interpolated back to the input)


def test_defects_are_named_on_non_square_images() -> None:
    rng = np.random.default_rng(6)
    goods = [texture(rng, 40, 100) for _ in range(8)]

    def defect(kind: str) -> tuple[np.ndarray, np.ndarray]:
        image, mask = texture(rng, 40, 100), np.zeros((40, 100), np.uint8)
        x = int(rng.integers(15, 85))
        if kind == "dark":
            cv2.circle(mask, (x, 20), 5, 255, -1)
            image[mask > 0] = 0
        else:
            mask[14:26, x - 6 : x + 6] = 255
            image[mask > 0] = 255
        return image, mask

    taught = [defect(kind) for kind in ("dark", "bright") for _ in range(6)]
    train = TrainingSet(goods + [image for image, _ in taught], [0] * 8 + [1] * 12,
                        ["good"] * 8 + ["dark"] * 6 + ["bright"] * 6, [None] * 8 + [mask for _, mask in taught])
    detector = PatchCore(**TINY, aspect="keep").fit(train)
    held = [defect("dark")[0] for _ in range(4)] + [defect("bright")[0] for _ in range(4)]
    names = detector.score(held, MapSize.NONE, name_from=-np.inf).classes
    assert names is not None
    expected = ["dark"] * 4 + ["bright"] * 4
    assert sum(n == e for n, e in zip(names, expected, strict=True)) >= 7, names
    assert not any(n in ("dark", "bright") and n != e for n, e in zip(names, expected, strict=True)), names


def test_the_model_file_keeps_the_setting_and_older_files_read_as_squash(wide: tuple[PatchCore, list],
                                                                         tmp_path: Path) -> None:
    detector, goods = wide
    detector.calibration = calibrate_for_overkill(detector.score(goods).scores, 0.1)
    save_model(tmp_path / "m.safetensors", detector, training={})
    loaded = load_model(tmp_path / "m.safetensors").detector
    assert isinstance(loaded, PatchCore) and loaded.settings.aspect == "keep"
    probe = [texture(np.random.default_rng(7), 40, 100)]
    np.testing.assert_array_equal(loaded.score(probe).scores, detector.score(probe).scores)
    stored = PatchCoreSettings(aspect="keep").to_json()
    del stored["aspect"]  # a file from before the setting
    assert PatchCoreSettings.from_stored(stored).aspect == "squash"
    legacy = load_model(LEGACY / "patchcore.safetensors").detector  # a file from before typed settings
    assert isinstance(legacy, PatchCore) and legacy.settings.aspect == "squash"


def test_native_tiles_resize_nothing_and_a_small_working_size_caps_the_overlap() -> None:
    assert PatchCoreSettings(image_size=32, aspect="keep").overlap == 8  # 32 is sized for 256-pixel tiles
    assert PatchCoreSettings(aspect="keep").overlap == 32
    rng = np.random.default_rng(8)
    goods = [texture(rng, 48, 80) for _ in range(2)]
    native = {**TINY, "tile_size": 32, "tile_overlap": 8}
    plain = PatchCore(**native).fit(TrainingSet.good(goods))
    keep = PatchCore(**native, aspect="keep").fit(TrainingSet.good(goods))
    probe = [texture(rng, 48, 80)]
    out = keep.score(probe)
    np.testing.assert_array_equal(out.scores, plain.score(probe).scores)
    assert out.maps is not None and out.maps[0].shape == (48, 80)  # native tiles: nothing was resized


def test_the_gpu_path_run_on_the_cpu_scores_the_tiles_alike(wide: tuple[PatchCore, list]) -> None:
    """The "cuda" runtime (here on device=cpu, float32 backbone) gets float tiles already at the working size."""
    fitted, goods = wide
    detector = PatchCore(fitted.settings).fit(TrainingSet.good(goods))
    rng = np.random.default_rng(9)
    images = [texture(rng, 40, 100), texture(rng, 90, 35, color=True)]
    cpu = detector.score(images)
    detector.use_device("cpu")
    device = detector.score(images)
    np.testing.assert_allclose(device.scores, cpu.scores, rtol=1e-5)
    assert device.maps is not None and [m.shape for m in device.maps] == [(40, 100), (90, 35)]
