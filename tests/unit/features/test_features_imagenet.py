"""The proof of every weight mapping and of each backbone's preprocessing: real ImageNet predictions.

A renamed-but-wrong mapping (swapped BNs, misplaced blocks) still loads strictly when shapes agree; only
classifying real photos shows the network computes what it was trained to. chelsea is a tabby cat
(ImageNet 281-285 are the domestic cats), coffee an espresso (967).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from cellsight.features import KNOWN_BACKBONES, BackboneSpec, create_classifier, preprocess

CATS = range(281, 286)
ESPRESSO = 967
_PIL = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def center_crop(image: np.ndarray, spec: BackboneSpec) -> np.ndarray:
    """Classic ImageNet eval: shorter side to input_size / crop_pct, then the central input_size square."""
    pil = Image.fromarray(image)
    scale = spec.input_size / spec.crop_pct / min(pil.size)
    w, h = round(pil.width * scale), round(pil.height * scale)
    pil = pil.resize((w, h), _PIL[spec.interpolation])
    left, top = (w - spec.input_size) // 2, (h - spec.input_size) // 2
    pil = pil.crop((left, top, left + spec.input_size, top + spec.input_size))
    return np.asarray(pil, dtype=np.float32) / 255.0


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {"chelsea": data.chelsea(), "coffee": data.coffee()}


@pytest.mark.parametrize("name", list(KNOWN_BACKBONES))
def test_offline_weights_classify_cat_and_espresso(name: str, photos: dict[str, np.ndarray]) -> None:
    spec = KNOWN_BACKBONES[name]
    model = create_classifier(name)
    batch = preprocess(np.stack([center_crop(photos[k], spec) for k in ("chelsea", "coffee")]), spec)
    with torch.inference_mode():
        probs = model(batch).softmax(dim=1)
    top_p, top_i = probs.max(dim=1)
    cat, espresso = int(top_i[0]), int(top_i[1])
    print(f"{name}: chelsea top-1 {cat} p={top_p[0]:.3f}; coffee top-1 {espresso} p={top_p[1]:.3f}")
    assert cat in CATS, f"{name}: chelsea top-1 is class {cat}"
    assert espresso == ESPRESSO, f"{name}: coffee top-1 is class {espresso}"
    # Confident, not a lucky argmax over a flat distribution.
    assert float(probs[0, CATS.start : CATS.stop].sum()) > 0.75
    assert float(top_p[1]) > 0.5


@pytest.mark.parametrize("name", list(KNOWN_BACKBONES))
def test_spec_normalisation_matches_the_stem_batchnorm(name: str, photos: dict[str, np.ndarray]) -> None:
    """The stem BN's running statistics were collected under the training normalisation.

    On natural photos, the stem conv output's statistics are closest to them under the right mean/std:
    this is what decided 0.5/0.5 for the TF Lite weights and ImageNet mean/std for torchvision's.
    """
    spec = KNOWN_BACKBONES[name]
    model: Any = create_classifier(name)  # timm EfficientNet: conv_stem, bn1
    images = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    rgb = np.stack([center_crop(image, spec) for image in images])
    running_var = model.bn1.running_var
    alive = running_var > 1e-3  # a few stem channels are dead (variance 0)

    def mismatch(mean: tuple[float, float, float], std: tuple[float, float, float]) -> float:
        candidate = BackboneSpec(name, mean, std, spec.input_size)
        with torch.inference_mode():
            out = model.conv_stem(preprocess(rgb, candidate))
        var = out.var(dim=(0, 2, 3))[alive]
        return float((var / running_var[alive]).log().abs().mean())

    imagenet_mean, imagenet_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    tf_inception = (0.5, 0.5, 0.5)
    right = mismatch(spec.mean, spec.std)
    wrong = mismatch(imagenet_mean, imagenet_std) if spec.mean == tf_inception else mismatch(tf_inception, tf_inception)
    print(f"{name}: stem BN variance mismatch {right:.2f} with the spec's mean/std, {wrong:.2f} with the other")
    assert right < 0.75 * wrong
