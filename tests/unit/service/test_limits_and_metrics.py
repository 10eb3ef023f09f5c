"""Issue 13 #4, #8, #10: per-station image bounds, /metrics behind a token with bounded labels, small 500s."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import cv2
import numpy as np


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` (8-bit gray) with one tiny IDAT: a few hundred bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_an_image_far_over_the_models_working_size_is_refused_before_decoding(running_sqlite: Any,
                                                                                models: Any) -> None:
    run = running_sqlite
    inspector = run.service.registry.slot("electrode").live
    assert inspector.working_size == 96 and inspector.max_pixels == 2048 * 2048  # (16 x 96)^2 is below 2048^2
    bomb = run.inspect("electrode", _png_header(16384, 8192), "B1", name="zeros.png")
    assert bomb.status_code == 422
    detail = bomb.json()["detail"]
    assert "zeros.png" in detail and "16384x8192" in detail and "images.max_pixels" in detail
    assert run.inspect("electrode", models.good, "B2").json()["verdict"] == "OK"  # the station goes on at once


def test_a_tiny_image_is_a_bad_image_not_a_verdict(running_sqlite: Any) -> None:
    _ok, one = cv2.imencode(".png", np.zeros((1, 1), np.uint8))
    response = running_sqlite.inspect("electrode", one.tobytes(), "T1", name="dot.png")
    assert response.status_code == 422 and "dot.png" in response.json()["detail"]
    assert "images.min_side" in response.json()["detail"]


def test_metrics_need_a_token_and_keep_a_bounded_label_set(running_sqlite: Any) -> None:
    run = running_sqlite
    assert run.client.get("/metrics").status_code == 401
    for method in ("FOO", "BAR", "X" * 40):
        run.client.request(method, "/v1/models", headers=run.auth("viewer"))
    text = run.client.get("/metrics", headers=run.auth("viewer")).text
    methods = {line.split('method="')[1].split('"')[0] for line in text.splitlines()
               if line.startswith("cellsight_http_requests_total{")}
    assert "FOO" not in methods and "OTHER" in methods


def test_hostile_numbers_and_paths_are_4xx_not_500(running_sqlite: Any) -> None:
    run = running_sqlite
    huge = "9" * 40
    assert run.client.get(f"/v1/inspections/{huge}", headers=run.auth("viewer")).status_code in (404, 422)
    assert run.client.get(f"/v1/stations/electrode/stats?run_id={huge}",
                          headers=run.auth("viewer")).status_code in (404, 422)
    long_path = run.client.post("/v1/stations/electrode/models", data={"path": "/x" * 2500},
                                headers=run.auth("admin"))
    assert long_path.status_code == 422
    assert run.inspect("electrode", b"x", "A/B").status_code == 422  # an ID GET /v1/cells could not reach


def test_an_over_limit_chunked_body_is_413_and_two_image_parts_are_refused(running_sqlite: Any, models: Any) -> None:
    run = running_sqlite
    limit = run.service.settings.max_upload_bytes

    def chunks():  # type: ignore[no-untyped-def]  (no Content-Length: the limit must count as it streams)
        boundary = b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n\r\n"
        yield boundary
        for _ in range(limit // 65536 + 2):
            yield b"\0" * 65536

    big = run.client.post("/v1/stations/electrode/inspect", content=chunks(),
                          headers={**run.auth(), "content-type": "multipart/form-data; boundary=xyz"})
    assert big.status_code == 413, big.text
    two = run.client.post("/v1/stations/electrode/inspect", data={"cell_id": "TWO"},
                          files=[("image", ("a.png", models.good)), ("image", ("b.png", models.defect))],
                          headers=run.auth())
    assert two.status_code == 422 and "2 `image` parts" in two.json()["detail"]


def test_revoked_tokens_stop_working(running_sqlite: Any) -> None:
    run = running_sqlite
    assert run.client.delete("/v1/tokens/test-viewer", headers=run.auth("admin")).json() == {"revoked": 1}
    assert run.client.get("/v1/models", headers=run.auth("viewer")).status_code == 401
    assert run.client.delete("/v1/tokens/test-viewer", headers=run.auth("admin")).status_code == 404
