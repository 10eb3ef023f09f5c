"""Cell IDs as DataMatrix codes: plant-style IDs, round trips, and None for anything unreadable."""

from __future__ import annotations

from datetime import date

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellsight.data.cellcode import make_cell_id, read_cell_id, render_code

ID = "LC2611270001234"


def _on_canvas(code: np.ndarray, size: int = 256, at: int = 20) -> np.ndarray:
    canvas = np.full((size, size), 200, np.uint8)
    canvas[at : at + code.shape[0], at : at + code.shape[1]] = code
    return canvas


def test_make_cell_id_is_line_day_serial() -> None:
    assert make_cell_id(1234, day=date(2026, 11, 27)) == ID
    assert make_cell_id(7, "L3", date(2025, 1, 2)) == "L32501020000007"
    assert len(make_cell_id(1)) == 15


@pytest.mark.parametrize(("serial", "line"), [(-1, "LC"), (10_000_000, "LC"), (1, ""), (1, "lc"), (1, "LINE5")])
def test_make_cell_id_refuses_bad_parts(serial: int, line: str) -> None:
    with pytest.raises(ValueError):
        make_cell_id(serial, line)


def test_render_code_is_dark_on_light_with_quiet_zone() -> None:
    code = render_code(ID, 3)
    assert code.dtype == np.uint8 and code.shape[0] == code.shape[1]
    assert set(np.unique(code)) == {0, 255}
    assert (code[:6] == 255).all() and (code[:, -6:] == 255).all()  # 2 modules of quiet zone
    assert not code.flags.writeable or code.base is None  # the cached symbol is never handed out


def test_render_code_refuses_empty_and_bad_module() -> None:
    with pytest.raises(ValueError):
        render_code("", 3)
    with pytest.raises(ValueError):
        render_code(ID, 0)


def test_reads_grey_rgb_uint16_and_rotated() -> None:
    gray = _on_canvas(render_code(ID, 3))
    assert read_cell_id(gray) == ID
    assert read_cell_id(cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)) == ID
    assert read_cell_id(gray.astype(np.uint16) * 16) == ID  # 12-bit camera
    assert read_cell_id(np.rot90(gray).copy()) == ID
    assert read_cell_id(255 - gray) == ID  # laser mark on bright metal reads inverted


def test_unreadable_or_ambiguous_is_none() -> None:
    assert read_cell_id(np.full((256, 256), 128, np.uint8)) is None
    noise = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)
    assert read_cell_id(noise) is None
    two = _on_canvas(render_code(ID, 3))
    other = render_code("LC2611270009999", 3)
    two[150 : 150 + other.shape[0], 150 : 150 + other.shape[1]] = other
    assert read_cell_id(two) is None


def test_bad_arrays_are_errors_not_none() -> None:
    with pytest.raises(ValueError):
        read_cell_id(np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError):
        read_cell_id(np.zeros((2, 32, 32, 3), np.uint8))


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=24))
def test_any_id_round_trips(cell_id: str) -> None:
    assert read_cell_id(_on_canvas(render_code(cell_id, 2), size=160, at=8)) == cell_id
