"""Fuzzing the upload endpoint: random bytes or broken PNGs are never a 5xx and never a verdict."""

from __future__ import annotations

import struct
import zlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@st.composite
def png_like(draw: st.DrawFn) -> bytes:
    """A valid signature and IHDR (any size, depth, colour type) followed by garbage or a broken IDAT."""
    width, height = draw(st.integers(0, 70000)), draw(st.integers(0, 70000))
    depth, colour = draw(st.sampled_from([1, 2, 4, 8, 16, 3])), draw(st.sampled_from([0, 2, 3, 4, 6, 7]))
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    tail = draw(st.one_of(st.binary(max_size=300),
                          st.binary(max_size=200).map(lambda b: _chunk(b"IDAT", b) + _chunk(b"IEND", b""))))
    return PNG_SIGNATURE + header + tail


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=2000), png_like()))
def test_random_uploads_are_refused_cleanly(running_sqlite: Any, data: bytes) -> None:
    response = running_sqlite.inspect("electrode", data, "FUZZ", name="fuzz.png")
    assert response.status_code == 422, (response.status_code, response.text[:200])
    assert "fuzz.png" in response.json()["detail"]


def test_the_service_still_inspects_after_the_fuzzing(running_sqlite: Any, models: Any) -> None:
    assert running_sqlite.inspect("electrode", b"\x89PNG\r\n\x1a\nxx", "F1").status_code == 422
    assert running_sqlite.inspect("electrode", models.good, "F2").json()["verdict"] == "OK"
