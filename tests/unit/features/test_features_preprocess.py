"""preprocess: layouts, gray replication, normalisation and the mistakes it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellsight.features import KNOWN_BACKBONES, preprocess

SPEC = KNOWN_BACKBONES["mobilenetv2_100"]  # distinct per-channel mean/std make mix-ups visible


def _expected(rgb_nhwc: np.ndarray) -> torch.Tensor:
    mean = np.array(SPEC.mean, dtype=np.float32)
    std = np.array(SPEC.std, dtype=np.float32)
    return torch.from_numpy(((rgb_nhwc - mean) / std).transpose(0, 3, 1, 2).copy())


def test_nhwc_and_nchw_give_the_same_normalised_batch() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.random((2, 5, 7, 3), dtype=np.float32)
    expected = _expected(rgb)
    from_nhwc = preprocess(rgb, SPEC)
    from_nchw = preprocess(torch.from_numpy(rgb).permute(0, 3, 1, 2), SPEC, layout="NCHW")
    plain = preprocess(rgb, SPEC, channels_last=False)
    assert from_nhwc.shape == (2, 3, 5, 7) and from_nhwc.dtype == torch.float32
    assert from_nhwc.is_contiguous(memory_format=torch.channels_last)
    assert plain.is_contiguous()
    for out in (from_nhwc, from_nchw, plain):
        torch.testing.assert_close(out, expected)


def test_gray_is_replicated_to_three_channels() -> None:
    gray = np.random.default_rng(1).random((3, 4, 6), dtype=np.float32)
    expected = _expected(np.repeat(gray[..., None], 3, axis=-1))
    torch.testing.assert_close(preprocess(gray, SPEC), expected)  # (N, H, W)
    torch.testing.assert_close(preprocess(gray[..., None], SPEC), expected)  # (N, H, W, 1)
    torch.testing.assert_close(preprocess(torch.from_numpy(gray)[:, None], SPEC, layout="NCHW"), expected)
    torch.testing.assert_close(preprocess(gray[0], SPEC), expected[:1])  # one (H, W) image


def test_input_is_not_modified_and_other_float_types_are_accepted() -> None:
    rgb = np.full((1, 2, 2, 3), 0.5)
    out = preprocess(rgb, SPEC)  # float64
    assert np.all(rgb == 0.5)
    torch.testing.assert_close(out, _expected(rgb.astype(np.float32)))


@pytest.mark.parametrize(
    ("images", "error"),
    [
        (np.zeros((1, 4, 4, 3), dtype=np.uint8), TypeError),
        (torch.zeros((1, 3, 4, 4), dtype=torch.uint8), TypeError),
        (np.zeros((8, 8, 3), dtype=np.float32), ValueError),  # one RGB image without a batch axis
        (np.zeros((1, 4, 4, 4), dtype=np.float32), ValueError),  # RGBA
        (np.zeros((1, 1, 4, 4, 3), dtype=np.float32), ValueError),
    ],
)
def test_refuses_inputs_it_would_misread(images: np.ndarray | torch.Tensor, error: type[Exception]) -> None:
    with pytest.raises(error):
        preprocess(images, SPEC)
