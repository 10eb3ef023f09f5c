"""Regions a station's model must not judge: the cell's code label, a fixture, a known reflection.

Every machine-vision tool has an inspection ROI; here it is the inverse, boxes to leave out, in fractions
of the image ([x0, y0, x1, y1], 0..1) so they hold at any resolution. They belong to the model (stored in
its file), so fitting, calibration and inspection all see the same thing. Without them a DataMatrix label
whose content changes on every cell is the most "novel" patch of every good image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[float, float, float, float]


def check_boxes(boxes: Sequence[Sequence[float]]) -> tuple[Box, ...]:
    """Validated boxes; ValueError naming the bad one."""
    checked = []
    for box in boxes:
        values = tuple(float(v) for v in box)
        if len(values) != 4:
            raise ValueError(f"ignore box {list(box)}: expected [x0, y0, x1, y1] in fractions of the image")
        x0, y0, x1, y1 = values
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ValueError(f"ignore box {list(box)}: need 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        checked.append((x0, y0, x1, y1))
    return tuple(checked)


def blank_boxes(anomaly_map: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """The map with the boxes set to its minimum: nothing there can raise the image's score."""
    if not boxes:
        return anomaly_map
    out = anomaly_map.copy()
    height, width = out.shape[:2]
    floor = float(out.min())
    for x0, y0, x1, y1 in boxes:
        out[_span(y0, y1, height), _span(x0, x1, width)] = floor
    return out


def paint_boxes(image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """The image with the boxes filled by its median: what is inside never reaches the features.

    Blanking the map alone is not enough: a backbone's receptive field carries a bright label some way
    past the box's edge. Filled boxes look alike in every image, so the model learns them as normal.
    """
    if not boxes:
        return image
    out = np.array(image, copy=True)
    fill = np.median(out.reshape(-1, out.shape[2]) if out.ndim == 3 else out.reshape(-1), axis=0)
    height, width = out.shape[:2]
    for x0, y0, x1, y1 in boxes:
        out[_span(y0, y1, height), _span(x0, x1, width)] = fill.astype(out.dtype)
    return out


def _span(start: float, stop: float, length: int) -> slice:
    return slice(int(np.floor(start * length)), int(np.ceil(stop * length)))
