"""read_image / decode_image on real files of every format we claim, written here by Pillow, OpenCV
and tifffile, and on every kind of broken input a line produces."""

from __future__ import annotations

import io
import pickle
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cellsight.data.images import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    ImageReadError,
    LazyImages,
    decode_image,
    list_images,
    read_image,
    to_float01,
    to_gray,
    to_rgb,
)
from cellsight.errors import DataError

RNG = np.random.default_rng(7)
Encoder = Callable[[np.ndarray], bytes]


def random_image(shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    return RNG.integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=dtype)


def pillow_bytes(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def cv2_bytes(rgb_or_gray: np.ndarray, suffix: str) -> bytes:
    """OpenCV writes BGR; convert so the file holds the RGB image we mean."""
    array = rgb_or_gray
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(suffix, array)
    assert ok
    return encoded.tobytes()


def tiff_bytes(array: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def encode(array: np.ndarray, fmt: str) -> bytes:
    """The natural writer for each format: 16-bit colour PNG needs OpenCV, TIFF uses tifffile."""
    if fmt == "png":
        return cv2_bytes(array, ".png")
    if fmt == "tiff":
        return tiff_bytes(array, photometric="rgb" if array.ndim == 3 else "minisblack")
    if fmt == "jpeg":
        return pillow_bytes(Image.fromarray(array), "JPEG", quality=100, subsampling=0)
    return pillow_bytes(Image.fromarray(array), "BMP")


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- every format, depth and channel layout -------------------------------------------------------


@settings(max_examples=40, deadline=None, database=None)
@given(
    fmt=st.sampled_from(["png", "tiff", "jpeg", "bmp"]),
    wide=st.booleans(),
    colour=st.booleans(),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
)
def test_round_trip_random_arrays(fmt: str, wide: bool, colour: bool, height: int, width: int) -> None:
    dtype = np.uint16 if wide and fmt in ("png", "tiff") else np.uint8
    original = random_image((height, width, 3) if colour else (height, width), dtype)
    decoded = decode_image(encode(original, fmt), f"sample.{fmt}")
    assert decoded.shape == original.shape
    assert decoded.dtype == original.dtype
    if fmt == "jpeg":  # lossy, even at quality 100
        assert np.abs(decoded.astype(int) - original.astype(int)).max() <= 8
    else:
        np.testing.assert_array_equal(decoded, original)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("gray8.png", lambda a: pillow_bytes(Image.fromarray(a[..., 0]), "PNG")),
        ("rgb8.png", lambda a: pillow_bytes(Image.fromarray(a), "PNG")),
        ("rgb8.jpg", lambda a: pillow_bytes(Image.fromarray(a), "JPEG", quality=100, subsampling=0)),
        ("gray8.jpeg", lambda a: pillow_bytes(Image.fromarray(a[..., 0]), "JPEG", quality=100)),
        ("gray8.bmp", lambda a: pillow_bytes(Image.fromarray(a[..., 0]), "BMP")),
        ("rgb8.bmp", lambda a: pillow_bytes(Image.fromarray(a), "BMP")),
        ("rgb8.tif", lambda a: tiff_bytes(a, photometric="rgb")),
        ("rgb8_lzw.tiff", lambda a: cv2_bytes(a, ".tiff")),
        (
            "rgb8_deflate.tif",
            lambda a: pillow_bytes(Image.fromarray(a), "TIFF", compression="tiff_adobe_deflate"),
        ),
        (
            "rgb8_jpeg.tif",
            lambda a: pillow_bytes(Image.fromarray(a), "TIFF", compression="jpeg", quality=100),
        ),
    ],
)
def test_read_image_every_8bit_format_from_disk(tmp_path: Path, name: str, make: Encoder) -> None:
    rows, cols = np.mgrid[0:24, 0:32]  # smooth, so lossy JPEG stays close whatever its subsampling
    original = np.dstack([rows * 10, cols * 8, 255 - cols * 4]).astype(np.uint8)
    image = read_image(write(tmp_path, name, make(original)))
    expected = original[..., 0] if name.startswith("gray") else original
    assert image.shape == expected.shape
    assert image.dtype == np.uint8
    assert image.flags.writeable and image.flags.c_contiguous
    lossy = "jpeg" in name or name.endswith(".jpg")
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= (12 if lossy else 0)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("gray16.png", lambda a: pillow_bytes(Image.fromarray(a[..., 0]), "PNG")),
        ("rgb16.png", lambda a: cv2_bytes(a, ".png")),
        ("gray16.tif", lambda a: tiff_bytes(a[..., 0])),
        ("gray16_zlib.tif", lambda a: tiff_bytes(a[..., 0], compression="zlib")),
        ("rgb16.tif", lambda a: tiff_bytes(a, photometric="rgb")),
        ("rgb16_lzw.tif", lambda a: cv2_bytes(a, ".tif")),
        ("gray16_lzw.tif", lambda a: cv2_bytes(a[..., 0], ".tif")),
    ],
)
def test_read_image_keeps_16_bits(tmp_path: Path, name: str, make: Encoder) -> None:
    original = random_image((20, 30, 3), np.uint16)
    image = read_image(write(tmp_path, name, make(original)))
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, original[..., 0] if name.startswith("gray") else original)


def test_rgb_order_not_bgr(tmp_path: Path) -> None:
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 200
    for name, data in [
        ("pillow.png", pillow_bytes(Image.fromarray(red), "PNG")),
        ("opencv16.png", cv2_bytes(red.astype(np.uint16) * 257, ".png")),
        ("opencv.tif", cv2_bytes(red, ".tif")),
        ("pillow.bmp", pillow_bytes(Image.fromarray(red), "BMP")),
    ]:
        image = read_image(write(tmp_path, name, data))
        assert image[0, 0, 0] > 0 and image[0, 0, 2] == 0, name


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_alpha_is_dropped(tmp_path: Path, fmt: str) -> None:
    rgba = random_image((10, 12, 4))
    image = read_image(write(tmp_path, f"rgba.{fmt.lower()}", pillow_bytes(Image.fromarray(rgba), fmt)))
    np.testing.assert_array_equal(image, rgba[..., :3])


def test_16bit_rgba_png_keeps_depth_and_drops_alpha() -> None:
    rgba = random_image((6, 5, 4), np.uint16)
    image = decode_image(cv2_bytes(rgba, ".png"), "rgba16.png")
    np.testing.assert_array_equal(image, rgba[..., :3])


def test_16bit_grey_alpha_png_stays_grey() -> None:
    """No common writer makes 16-bit grey+alpha PNGs, so build one from the PNG spec's chunks."""
    grey_alpha = random_image((4, 5, 2), np.uint16)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in grey_alpha)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 5, 4, 16, 4, 0, 0, 0)  # 5x4, 16-bit, colour type 4 (grey+alpha)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    np.testing.assert_array_equal(decode_image(png, "la16.png"), grey_alpha[..., 0])


def test_grey_alpha_png_becomes_grey() -> None:
    grey = random_image((6, 5))
    image = decode_image(pillow_bytes(Image.fromarray(grey).convert("LA"), "PNG"), "la.png")
    np.testing.assert_array_equal(image, grey)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_palette_becomes_rgb(fmt: str) -> None:
    palette_image = Image.fromarray(random_image((16, 16, 3))).convert("P")
    image = decode_image(pillow_bytes(palette_image, fmt), f"palette.{fmt}")
    assert image.shape == (16, 16, 3)
    np.testing.assert_array_equal(image, np.asarray(palette_image.convert("RGB")))


@pytest.mark.parametrize(("fmt", "options"), [("PNG", {}), ("TIFF", {}), ("TIFF", {"compression": "group4"})])
def test_one_bit_becomes_0_and_255(fmt: str, options: dict[str, str]) -> None:
    bits = random_image((9, 16)) > 127
    image = decode_image(pillow_bytes(Image.fromarray(bits), fmt, **options), "mask")
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, bits.astype(np.uint8) * 255)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(fmt: str) -> None:
    rgb = Image.fromarray(np.full((8, 8, 3), (200, 30, 30), np.uint8))
    image = decode_image(pillow_bytes(rgb.convert("CMYK"), fmt, quality=100), f"cmyk.{fmt}")
    assert image.shape == (8, 8, 3)
    assert abs(int(image[0, 0, 0]) - 200) < 12 and image[0, 0, 2] < 50


def test_planar_tiff_becomes_interleaved() -> None:
    rgb = random_image((7, 9, 3), np.uint16)
    data = tiff_bytes(np.moveaxis(rgb, -1, 0), planarconfig="separate", photometric="rgb")
    np.testing.assert_array_equal(decode_image(data, "planar.tif"), rgb)


def test_multipage_tiff_reads_first_page() -> None:
    pages = random_image((3, 6, 8), np.uint16)
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as writer:
        for page in pages:
            writer.write(page, photometric="minisblack")
    data = buffer.getvalue()
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        assert len(tif.pages) == 3
    np.testing.assert_array_equal(decode_image(data, "stack.tif"), pages[0])


def test_format_is_sniffed_not_taken_from_the_name(tmp_path: Path) -> None:
    original = random_image((5, 6))
    image = read_image(write(tmp_path, "really_a_png.JPG", pillow_bytes(Image.fromarray(original), "PNG")))
    np.testing.assert_array_equal(image, original)


def test_big_endian_16bit_is_native() -> None:
    original = random_image((4, 5), np.uint16)
    image = decode_image(tiff_bytes(original.astype(">u2"), byteorder=">"), "motorola.tif")
    assert image.dtype.byteorder in ("=", "<", "|") and image.dtype == np.uint16
    np.testing.assert_array_equal(image, original)


# --- broken inputs: each names the file and the cause ---------------------------------------------


def assert_refused(path_or_data: Path | bytes, fragment: str, name: str = "upload.png") -> ImageReadError:
    with pytest.raises(ImageReadError) as caught:
        if isinstance(path_or_data, Path):
            read_image(path_or_data)
        else:
            decode_image(path_or_data, name)
    error = caught.value
    expected_name = path_or_data.name if isinstance(path_or_data, Path) else name
    assert expected_name in str(error)
    assert fragment.lower() in error.reason.lower(), error.reason
    assert str(error) == f"{error.path}: {error.reason}"
    return error


def test_missing_file(tmp_path: Path) -> None:
    error = assert_refused(tmp_path / "cell_0042.png", "not found")
    assert error.path == tmp_path / "cell_0042.png"


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "folder.png").mkdir()
    assert_refused(tmp_path / "folder.png", "folder")


def test_empty_file(tmp_path: Path) -> None:
    assert_refused(write(tmp_path, "empty.png", b""), "empty")


def test_text_named_png(tmp_path: Path) -> None:
    assert_refused(write(tmp_path, "x.png", b"path,label\ncell.png,ok\n"), "text")


def test_text_starting_like_a_bmp(tmp_path: Path) -> None:
    assert_refused(write(tmp_path, "notes.bmp", b"BMW line 3 notes: recalibrate camera\n"), "text")


def test_unknown_binary(tmp_path: Path) -> None:
    assert_refused(write(tmp_path, "blob.tif", bytes(range(256)) * 4), "unknown format")


def test_unsupported_format_is_named(tmp_path: Path) -> None:
    gif = pillow_bytes(Image.fromarray(random_image((4, 4))), "GIF")
    assert_refused(write(tmp_path, "anim.png", gif), "GIF")


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("half.png", pillow_bytes(Image.fromarray(random_image((64, 64, 3))), "PNG")),
        ("half16.png", cv2_bytes(random_image((64, 64, 3), np.uint16), ".png")),
        ("half.jpg", pillow_bytes(Image.fromarray(random_image((64, 64, 3))), "JPEG")),
        ("half.bmp", pillow_bytes(Image.fromarray(random_image((64, 64, 3))), "BMP")),
        ("half.tif", tiff_bytes(random_image((64, 64), np.uint16))),
        ("half_lzw.tif", cv2_bytes(random_image((64, 64, 3)), ".tif")),
    ],
)
def test_truncated_file_never_decodes_silently(tmp_path: Path, name: str, data: bytes) -> None:
    assert_refused(write(tmp_path, name, data[: len(data) // 2]), "")


def test_truncated_png_message_says_so(tmp_path: Path) -> None:
    data = pillow_bytes(Image.fromarray(random_image((64, 64))), "PNG")
    assert_refused(write(tmp_path, "cut.png", data[: len(data) // 2]), "truncated")


def test_flipped_byte_in_png_is_caught(tmp_path: Path) -> None:
    data = bytearray(pillow_bytes(Image.fromarray(random_image((64, 64, 3))), "PNG"))
    data[len(data) // 2] ^= 0xFF
    assert_refused(write(tmp_path, "bitrot.png", bytes(data)), "corrupt")


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        (np.zeros((4, 4), np.float32), "float"),
        (np.zeros((4, 4), np.int32), "32-bit"),
        (np.zeros((4, 4), np.int16), "signed"),
        (np.zeros((4, 4), np.float64), "float64"),
    ],
)
def test_unsupported_pixel_type_is_named(tmp_path: Path, array: np.ndarray, fragment: str) -> None:
    assert_refused(write(tmp_path, "height.tif", tiff_bytes(array)), fragment)


def test_32bit_integer_tiff_from_pillow_is_refused() -> None:
    data = pillow_bytes(Image.fromarray(np.zeros((4, 4), np.int32)), "TIFF")
    assert_refused(data, "32-bit", name="int.tif")


# --- decompression bombs: refused from the header, before any pixel is decoded ---------------------


def png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR is rewritten (with a valid CRC) to claim width x height."""
    data = bytearray(pillow_bytes(Image.fromarray(np.zeros((1, 1), np.uint8)), "PNG"))
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:33] = ihdr + struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def tiff_claiming(width: int, height: int) -> bytes:
    data = bytearray(tiff_bytes(np.zeros((1, 1), np.uint8)))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tags = tif.pages[0].tags
        offsets = {tag: tags[tag].valueoffset for tag in ("ImageWidth", "ImageLength")}
        kinds = {tag: tags[tag].dtype for tag in ("ImageWidth", "ImageLength")}
    for tag, value in (("ImageWidth", width), ("ImageLength", height)):
        fmt = "<I" if kinds[tag] == tifffile.DATATYPE.LONG else "<H"
        struct.pack_into(fmt, data, offsets[tag], value)
    return bytes(data)


def bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(pillow_bytes(Image.fromarray(np.zeros((1, 1, 3), np.uint8)), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(pillow_bytes(Image.fromarray(np.zeros((8, 8), np.uint8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


@pytest.mark.parametrize("craft", [png_claiming, tiff_claiming, bmp_claiming, jpeg_claiming])
def test_decompression_bomb_refused_quickly_without_allocating(craft: Callable[[int, int], bytes]) -> None:
    data = craft(60_000, 60_000)  # 3.6 G pixels claimed by a file of a few hundred bytes
    assert len(data) < 2_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        error = assert_refused(data, "over the limit", name="bomb.img")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 5_000_000
    assert "60000x60000" in error.reason


def test_max_pixels_is_inclusive_and_adjustable() -> None:
    data = pillow_bytes(Image.fromarray(random_image((10, 10))), "PNG")
    assert decode_image(data, "ok.png", max_pixels=100).shape == (10, 10)
    with pytest.raises(ImageReadError, match="over the limit"):
        decode_image(data, "tight.png", max_pixels=99)


def test_default_limit_admits_8k_line_scan_tiles() -> None:
    assert MAX_PIXELS >= 8192 * 8192
    assert MAX_PIXELS >= 16384 * 8192
    assert MAX_PIXELS < 60_000 * 60_000


def test_error_survives_pickling_for_worker_processes() -> None:
    error = ImageReadError(Path("/line3/cell.png"), "file not found")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (
        error.path,
        error.reason,
        "/line3/cell.png: file not found",
    )


# --- conversions ----------------------------------------------------------------------------------


def test_to_float01_scales_by_dtype_range() -> None:
    np.testing.assert_allclose(to_float01(np.array([0, 51, 255], np.uint8)), [0.0, 0.2, 1.0])
    np.testing.assert_allclose(to_float01(np.array([0, 13107, 65535], np.uint16)), [0.0, 0.2, 1.0])
    assert to_float01(np.zeros((2, 2), np.uint16)).dtype == np.float32
    assert to_float01(np.array([0.5], np.float64)).dtype == np.float32
    with pytest.raises(TypeError, match="int32"):
        to_float01(np.zeros(3, np.int32))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_to_gray_and_to_rgb_keep_dtype(dtype: type) -> None:
    rgb = random_image((5, 6, 3), dtype)
    gray = to_gray(rgb)
    assert gray.shape == (5, 6) and gray.dtype == dtype
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert np.abs(gray - expected).max() <= 2.0  # OpenCV's fixed-point weights, within 1/32768 of range
    assert to_gray(gray) is gray
    back = to_rgb(gray)
    assert back.shape == (5, 6, 3) and back.dtype == dtype
    np.testing.assert_array_equal(back[..., 2], gray)
    assert to_rgb(rgb) is rgb
    with pytest.raises(ValueError, match="shape"):
        to_gray(np.zeros((2, 2, 4), dtype))


# --- lazy sequences and folder listing ------------------------------------------------------------


def test_lazy_images_read_on_access_only(tmp_path: Path) -> None:
    arrays = [random_image((4, 4)) for _ in range(5)]
    paths = [
        write(tmp_path, f"{i}.png", pillow_bytes(Image.fromarray(a), "PNG")) for i, a in enumerate(arrays)
    ]
    images = LazyImages([*paths, tmp_path / "missing.png"])  # building it reads nothing
    assert len(images) == 6
    np.testing.assert_array_equal(images[1], arrays[1])
    np.testing.assert_array_equal(images[-2], arrays[4])
    part = images[1:3]
    assert isinstance(part, LazyImages) and part.paths == tuple(paths[1:3])
    assert [a.tolist() for a in part] == [arrays[1].tolist(), arrays[2].tolist()]
    with pytest.raises(ImageReadError, match=r"missing\.png"):
        images[5]
    with pytest.raises(IndexError):
        images[6]


def test_list_images_recursive_sorted_case_insensitive(tmp_path: Path) -> None:
    for relative in [
        "b.png",
        "a/c.TIF",
        "a/b.jpeg",
        "z.BMP",
        "notes.txt",
        ".hidden/x.png",
        "._b.png",
        "d.tiff",
    ]:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a/b.jpeg", "a/c.TIF", "b.png", "d.tiff", "z.BMP"]
    assert set(IMAGE_SUFFIXES) == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    with pytest.raises(DataError, match="nowhere"):
        list_images(tmp_path / "nowhere")
