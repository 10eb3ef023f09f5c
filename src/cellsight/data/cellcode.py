"""The cell ID as a DataMatrix code: written and read with zxing-cpp, never by hand.

Every cell on a lithium-ion line carries its ID as a laser-marked or printed DataMatrix; the line
reads it at each station to attach images and verdicts to the right cell. An unreadable code is a
normal line event (dirty label, glare), so reading returns None instead of raising: the caller
decides what an unread cell means (storage records it as "UNREAD-...").
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache

import cv2
import numpy as np
import zxingcpp

QUIET_MODULES = 2  # light border around the symbol; ISO 16022 asks for 1, readers like 2
_FORMAT = zxingcpp.BarcodeFormat.DataMatrix
_SEARCH = zxingcpp.BarcodeFormats(_FORMAT)  # searching one format only is several times faster
_LINE_CODE = re.compile(r"[A-Z0-9]{1,4}")
MAX_SERIAL = 9_999_999


def make_cell_id(serial: int, line_code: str = "LC", day: date | None = None) -> str:
    """A plant-style cell ID: line code, production day YYMMDD, 7-digit serial: LC2611270001234.

    Fixed width after the line code so IDs sort by day then serial, as traceability queries expect.
    `day` defaults to today; pass it for reproducible data sets.
    """
    if not _LINE_CODE.fullmatch(line_code):
        raise ValueError(f"line_code must be 1-4 upper-case letters or digits, got {line_code!r}")
    if not 0 <= serial <= MAX_SERIAL:
        raise ValueError(f"serial must be between 0 and {MAX_SERIAL}, got {serial}")
    return f"{line_code}{(day or date.today()):%y%m%d}{serial:07d}"


def render_code(cell_id: str, module_px: int) -> np.ndarray:
    """The square DataMatrix of `cell_id`, uint8, dark (0) modules on light (255), with quiet zone.

    Square symbols (not the rectangular ones zxing picks for short IDs) so every station can
    reserve the same square label corner whatever the ID.
    """
    if not cell_id:
        raise ValueError("cell_id must not be empty")
    if module_px < 1:
        raise ValueError(f"module_px must be >= 1, got {module_px}")
    return _render_cached(cell_id, module_px).copy()


@lru_cache(maxsize=4096)
def _render_cached(cell_id: str, module_px: int) -> np.ndarray:
    # A writer's cache: the same cell passes several stations and often re-renders its code.
    barcode = zxingcpp.create_barcode(cell_id, _FORMAT, force_square=True)
    symbol = np.asarray(barcode.to_image(scale=1, add_quiet_zones=False), dtype=np.uint8)
    border = QUIET_MODULES
    padded = cv2.copyMakeBorder(symbol, border, border, border, border, cv2.BORDER_CONSTANT, value=255)
    code = cv2.resize(padded, None, fx=module_px, fy=module_px, interpolation=cv2.INTER_NEAREST)
    code.setflags(write=False)
    return code


def read_cell_id(image: np.ndarray) -> str | None:
    """The text of the one DataMatrix in `image`, or None when there is none, it is unreadable, or
    there are several (two IDs in one frame cannot say which cell this is).

    Accepts HxW grey or HxWx3 RGB, uint8 or uint16. Only DataMatrix is searched, upright or rotated,
    dark on light or inverted (laser marks on bright metal read inverted).
    """
    gray = _to_gray8(image)
    found = zxingcpp.read_barcodes(gray, formats=_SEARCH, try_downscale=False)
    texts = {barcode.text for barcode in found if barcode.valid}
    return texts.pop() if len(texts) == 1 and len(found) == 1 else None


def _to_gray8(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image must be uint8 or uint16, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2GRAY)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    elif array.ndim != 2:
        raise ValueError(f"image must be HxW grey or HxWx3 RGB, got shape {array.shape}")
    if array.dtype == np.uint16:
        # 10/12-bit cameras store in uint16 without filling the range: stretch what is there.
        low, high = int(array.min()), int(array.max())
        array = ((array.astype(np.float32) - low) * (255.0 / max(high - low, 1))).astype(np.uint8)
    return np.ascontiguousarray(array)
