"""Reduced-size JPEG decoding (`read_image(..., reduce_to=)`): real JPEG files written here, decoded at a
DCT scale, give the model the same working-size pixels and scores as a full decode, within the JPEG
round trip's own error."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cellsight.data.images import decode_image, read_image
from cellsight.detectors.base import MapSize, TrainingSet
from cellsight.detectors.patchcore import PatchCore


def _cell(rng: np.random.Generator, height: int, width: int, defect: bool = False) -> np.ndarray:
    """A smooth textured cell (what a camera sees after its optics), optionally with a dark crack."""
    noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, (height, width)).astype(np.float32), (0, 0), 6.0)
    image = 128.0 + 40.0 * noise / (noise.std() + 1e-6) + np.linspace(0, 40, width, dtype=np.float32)[None]
    if defect:
        cv2.line(image, (width // 4, height // 3), (3 * width // 4, height // 2), 20.0, max(3, width // 60))
    return np.clip(image, 0, 255).astype(np.uint8)


def _jpeg(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(path, quality=95)
    return path


def test_a_large_jpeg_decodes_at_the_largest_dct_scale_that_keeps_the_working_side(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gray = _jpeg(tmp_path / "gray.jpg", _cell(rng, 600, 700))
    rgb = _jpeg(tmp_path / "rgb.jpg", np.stack([_cell(rng, 600, 700)] * 3, axis=2))
    assert read_image(gray).shape == (600, 700)
    assert read_image(gray, reduce_to=256).shape == (300, 350)  # 1/2: 1/4 would be 150 < 256
    assert read_image(gray, reduce_to=64).shape == (75, 88)  # 1/8, sides rounded up
    assert read_image(rgb, reduce_to=256).shape == (300, 350, 3)
    assert read_image(gray, reduce_to=301).shape == (600, 700)  # under 2x the working side: in full
    assert decode_image(gray.read_bytes(), "gray.jpg", reduce_to=256).shape == (300, 350)
    png = tmp_path / "cell.png"
    cv2.imwrite(str(png), _cell(rng, 600, 700))
    assert read_image(png, reduce_to=64).shape == (600, 700)  # PNG has no scaled decode: in full


def test_reduced_decode_scores_like_a_full_decode(tmp_path: Path) -> None:
    """Working-size pixels within one grey level on average, scores within 1% (measured: 0.4% at 1/8 scale,
    where the JPEG round trip itself moved them by 0.04%), and the cracked cells still above every good one."""
    rng = np.random.default_rng(1)
    side, working = 512, 64
    train = [_cell(rng, side, side) for _ in range(6)]
    originals = [_cell(rng, side, side, defect=i % 2 == 1) for i in range(6)]
    paths = [_jpeg(tmp_path / f"{i}.jpg", image) for i, image in enumerate(originals)]
    full = [read_image(p) for p in paths]
    reduced = [read_image(p, reduce_to=working) for p in paths]
    assert all(image.shape == (working, working) for image in reduced)  # 512 / 8
    detector = PatchCore(image_size=working, bank_size=400).fit(TrainingSet.good(train))
    pixels_full, pixels_reduced = detector.extractor.prepare(full), detector.extractor.prepare(reduced)
    assert np.abs(pixels_full - pixels_reduced).mean() < 1.0 / 255
    scores_full = detector.score(full, MapSize.NONE).scores
    scores_reduced = detector.score(reduced, MapSize.NONE).scores
    assert np.all(scores_reduced[1::2] > scores_reduced[0::2].max())  # the cracked cells still stand out
    np.testing.assert_allclose(scores_reduced, scores_full, rtol=0.01)
