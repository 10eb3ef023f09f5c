"""One inspection station: decode the image, read the cell's code, score it, apply the station's policy.

The same code serves the line runtime (images from a source) and the service (uploaded bytes), so a
verdict means the same thing wherever it was made. It writes nothing: the caller commits the outcome to
the store before telling anyone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellsight.data.images import ImageReadError, decode_image, image_format
from cellsight.detectors.base import AnyDetector
from cellsight.errors import ModelFileError
from cellsight.line.config import ImageLimits, ThresholdPolicy
from cellsight.modelfile import load_model
from cellsight.storage.records import Reason
from cellsight.types import Prediction, Verdict


@dataclass
class StageTimes:
    """Milliseconds spent per stage, summed over a run: where the line's time goes."""

    decode_ms: float = 0.0
    code_ms: float = 0.0
    inference_ms: float = 0.0
    storage_ms: float = 0.0
    images_ms: float = 0.0
    source_ms: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class StationOutcome:
    """What a station decided about one image, before the line adds cell-level checks (duplicates)."""

    verdict: Verdict
    score: float
    defect_class: str | None
    reason: Reason | None
    error: str | None
    decoded_id: str | None
    latency_ms: float
    image: np.ndarray | None = field(default=None, repr=False)
    anomaly_map: np.ndarray | None = field(default=None, repr=False)


class StationInspector:
    """A station's loaded model and policy; `inspect` never raises for a bad image, it returns ERROR."""

    def __init__(
        self, name: str, model_path: Path, threshold: ThresholdPolicy | None = None, read_code: bool = True,
        limits: ImageLimits | None = None,
    ) -> None:
        loaded = load_model(model_path)
        self.name = name
        self.model_path = model_path
        self.detector: AnyDetector = loaded.detector
        self.model_version = loaded.version or model_path.stem
        self.model_hash = loaded.content_hash
        self.threshold = threshold or ThresholdPolicy()
        self.read_code = read_code
        self.limits = limits or ImageLimits()
        self.max_pixels = self.limits.pixels_for(self.working_size)
        if self.detector.calibration is None:
            raise ModelFileError(model_path, "the model has no calibration, so it cannot decide OK/NG")

    @property
    def working_size(self) -> int:
        """The side the model scores at (images are resized to it); 256 when the detector does not say."""
        return int(getattr(self.detector.settings, "image_size", 256) or 256)

    def warm_up(self) -> None:
        """Score one blank image, so that everything built lazily on first use (the backbone's ONNX export,
        a traced graph, thread pools) exists before the first real cell: no slow or failing first request."""
        size = self.working_size
        self.detector.predict([np.zeros((size, size, 3), np.uint8)])

    def check_upload(self, data: bytes, name: str) -> str | None:
        """Why this station refuses `data` before decoding (size, format), naming the file and the setting."""
        limits = self.limits
        if len(data) > limits.max_bytes:
            return (f"{name}: {len(data):,} bytes, over station {self.name}'s limit of {limits.max_bytes:,} "
                    "(stations[].images.max_bytes)")
        fmt = image_format(data)
        if fmt is not None and fmt not in limits.formats:
            return f"{name}: a {fmt} image; station {self.name} accepts {', '.join(limits.formats)} (images.formats)"
        return None

    def inspect_bytes(self, data: bytes, name: str, times: StageTimes | None = None) -> StationOutcome:
        start = time.perf_counter()
        refused = self.check_upload(data, name)
        if refused is not None:
            return _unreadable(refused, start)
        try:
            image = decode_image(data, name, self.max_pixels)
        except ImageReadError as exc:
            return _unreadable(f"{exc} (station {self.name}: images.max_pixels)"
                               if "over the limit" in str(exc) else str(exc), start)
        finally:
            if times is not None:
                times.decode_ms += (time.perf_counter() - start) * 1000.0
        if min(image.shape[:2]) < self.limits.min_side:
            return _unreadable(f"{name}: image is {image.shape[1]}x{image.shape[0]}, smaller than station "
                               f"{self.name}'s minimum side of {self.limits.min_side} (images.min_side)", start)
        return self.inspect_image(image, times)

    def inspect_image(self, image: np.ndarray, times: StageTimes | None = None) -> StationOutcome:
        times = times if times is not None else StageTimes()
        start = time.perf_counter()
        decoded_id = _read_code(image) if self.read_code else None
        times.code_ms += (time.perf_counter() - start) * 1000.0
        inference_start = time.perf_counter()
        try:
            (prediction,) = self.detector.predict([image])
        except Exception as exc:  # a detector failure is this image's ERROR, never the line's crash
            times.inference_ms += (time.perf_counter() - inference_start) * 1000.0
            return StationOutcome(
                Verdict.ERROR, float("nan"), None, Reason.INSPECTION_FAILED,
                f"{self.name}: inspection failed: {type(exc).__name__}: {exc}", decoded_id,
                (time.perf_counter() - start) * 1000.0, image,
            )
        times.inference_ms += (time.perf_counter() - inference_start) * 1000.0
        verdict, reason = self._decide(prediction)
        if self.read_code and decoded_id is None:  # no traceability: never OK, whatever the model says
            reason = reason or Reason.UNREADABLE_CODE
            verdict = Verdict.ERROR if verdict is Verdict.OK else verdict
        return StationOutcome(
            verdict, prediction.score, prediction.defect_class if verdict is Verdict.NG else None, reason,
            None if reason is None else _explain(reason, self.name), decoded_id,
            (time.perf_counter() - start) * 1000.0, image, prediction.anomaly_map,
        )

    def _decide(self, prediction: Prediction) -> tuple[Verdict, Reason | None]:
        score = prediction.score
        if not np.isfinite(score):
            return Verdict.ERROR, Reason.INSPECTION_FAILED
        if score >= self.threshold.ng_at:
            return Verdict.NG, None
        if score >= self.threshold.ng_at - self.threshold.review_band:
            return Verdict.ERROR, Reason.UNCERTAIN
        return Verdict.OK, None


def _read_code(image: np.ndarray) -> str | None:
    from cellsight.data.cellcode import read_cell_id

    return read_cell_id(image)


def _unreadable(error: str, start: float) -> StationOutcome:
    return StationOutcome(
        Verdict.ERROR, float("nan"), None, Reason.BAD_IMAGE, error, None, (time.perf_counter() - start) * 1000.0
    )


def _explain(reason: Reason, station: str) -> str:
    return {
        Reason.UNREADABLE_CODE: f"{station}: no DataMatrix cell code could be read",
        Reason.UNCERTAIN: f"{station}: score inside the review band below the NG threshold",
        Reason.INSPECTION_FAILED: f"{station}: the model gave no finite score",
    }.get(reason, f"{station}: {reason.value}")
