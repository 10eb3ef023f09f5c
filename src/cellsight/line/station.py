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
from cellsight.inference.seam import InferenceBackend, LocalBackend, StationModel
from cellsight.line.config import ImageLimits, ThresholdPolicy
from cellsight.line.sources import SourceImage
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


@dataclass(frozen=True)
class Prepared:
    """An image decoded and its code read, waiting for the model (so several can be scored as one batch)."""

    start: float
    image: np.ndarray | None
    decoded_id: str | None
    failed: StationOutcome | None = None


class StationInspector:
    """A station's model (behind the inference seam) and policy; never raises for a bad image: ERROR.

    `model` is a `StationModel` from the line's backend (`local` in-process or `ray`); the inspector
    never calls a detector itself, so every caller (line runtime, recorder, service, PLC link) goes
    through the seam.
    """

    def __init__(
        self,
        name: str,
        model_path: Path,
        threshold: ThresholdPolicy | None = None,
        read_code: bool = True,
        limits: ImageLimits | None = None,
        backend: InferenceBackend | None = None,
    ) -> None:
        self.name = name
        self.model_path = model_path
        self.model: StationModel = (backend or LocalBackend()).load(name, model_path)
        self.model_version = self.model.model_version
        self.model_hash = self.model.model_hash
        self.threshold = threshold or ThresholdPolicy()
        self.read_code = read_code
        self.limits = limits or ImageLimits()
        self.max_pixels = self.limits.pixels_for(self.working_size)

    @property
    def working_size(self) -> int:
        """The side the model scores at (images are resized to it); 256 when the detector does not say."""
        return self.model.working_size

    def warm_up(self) -> None:
        """Score one blank image, so that everything built lazily on first use (the backbone's ONNX export,
        a traced graph, thread pools, a Ray replica) exists before the first real cell."""
        size = self.working_size
        self.model.predict([np.zeros((size, size, 3), np.uint8)])

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
        return self.inspect_many([(data, name)], times)[0]

    def inspect_image(self, image: np.ndarray, times: StageTimes | None = None) -> StationOutcome:
        times = times if times is not None else StageTimes()
        return self.finish([self.prepare_image(image, time.perf_counter(), times)], times)[0]

    def inspect_many(self, files: list[tuple[bytes, str]], times: StageTimes | None = None) -> list[StationOutcome]:
        """Several images as one model batch (the pipelined line); each outcome as `inspect_bytes` gives."""
        times = times if times is not None else StageTimes()
        return self.finish([self.prepare(data, name, times) for data, name in files], times)

    def prepare(self, data: bytes, name: str, times: StageTimes) -> Prepared:
        """Check, decode and read the code of one image; a refusal is its ERROR outcome, already made."""
        start = time.perf_counter()
        refused = self.check_upload(data, name)
        if refused is not None:
            return Prepared(start, None, None, _unreadable(refused, start))
        try:
            image = decode_image(data, name, self.max_pixels)
        except ImageReadError as exc:
            error = f"{exc} (station {self.name}: images.max_pixels)" if "over the limit" in str(exc) else str(exc)
            return Prepared(start, None, None, _unreadable(error, start))
        finally:
            times.decode_ms += (time.perf_counter() - start) * 1000.0
        if min(image.shape[:2]) < self.limits.min_side:
            return Prepared(start, None, None, _unreadable(
                f"{name}: image is {image.shape[1]}x{image.shape[0]}, smaller than station "
                f"{self.name}'s minimum side of {self.limits.min_side} (images.min_side)", start))
        return self.prepare_image(image, start, times)

    def prepare_image(self, image: np.ndarray, start: float, times: StageTimes) -> Prepared:
        code_start = time.perf_counter()
        decoded_id = _read_code(image) if self.read_code else None
        times.code_ms += (time.perf_counter() - code_start) * 1000.0
        return Prepared(start, image, decoded_id)

    def finish(self, prepared: list[Prepared], times: StageTimes) -> list[StationOutcome]:
        """Score the prepared images in one call through the seam and apply the station's policy."""
        ready = [p for p in prepared if p.failed is None]
        inference_start = time.perf_counter()
        try:
            predictions = self.model.predict([p.image for p in ready if p.image is not None])
            failure = None
        except Exception as exc:  # a model failure is these images' ERROR, never the line's crash
            predictions, failure = [], f"{self.name}: inspection failed: {type(exc).__name__}: {exc}"
        times.inference_ms += (time.perf_counter() - inference_start) * 1000.0
        by_id = {id(p): pred for p, pred in zip(ready, predictions, strict=False)}
        out = []
        for p in prepared:
            if p.failed is not None:
                out.append(p.failed)
            elif id(p) not in by_id:
                out.append(StationOutcome(
                    Verdict.ERROR, float("nan"), None, Reason.INSPECTION_FAILED, failure, p.decoded_id,
                    (time.perf_counter() - p.start) * 1000.0, p.image,
                ))
            else:
                out.append(self._outcome(p, by_id[id(p)]))
        return out

    def _outcome(self, p: Prepared, prediction: Prediction) -> StationOutcome:
        verdict, reason = self._decide(prediction)
        if self.read_code and p.decoded_id is None:  # no traceability: never OK, whatever the model says
            reason = reason or Reason.UNREADABLE_CODE
            verdict = Verdict.ERROR if verdict is Verdict.OK else verdict
        error = None if reason is None else _explain(reason, self.name)
        if prediction.error and reason is Reason.INSPECTION_FAILED:
            error = prediction.error
        return StationOutcome(
            verdict, prediction.score, prediction.defect_class if verdict is Verdict.NG else None, reason,
            error, p.decoded_id, (time.perf_counter() - p.start) * 1000.0, p.image, prediction.anomaly_map,
        )

    def _decide(self, prediction: Prediction) -> tuple[Verdict, Reason | None]:
        score = prediction.score
        if not np.isfinite(score) or prediction.verdict is Verdict.ERROR:
            return Verdict.ERROR, Reason.INSPECTION_FAILED
        if score >= self.threshold.ng_at:
            return Verdict.NG, None
        if score >= self.threshold.ng_at - self.threshold.review_band:
            return Verdict.ERROR, Reason.UNCERTAIN
        return Verdict.OK, None


def _read_code(image: np.ndarray) -> str | None:
    from cellsight.data.cellcode import read_cell_id

    return read_cell_id(image)


def no_image(image: SourceImage) -> StationOutcome:
    """The outcome when the camera delivered nothing: ERROR with its reason."""
    return StationOutcome(Verdict.ERROR, float("nan"), None, Reason.NO_IMAGE, image.error, None, 0.0)


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
