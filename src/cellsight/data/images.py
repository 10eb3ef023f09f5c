"""Reading line images robustly: every failure names the file and says what is wrong.

Images arrive from cameras, NAS shares and USB sticks; a truncated copy or a text file renamed to
.png must stop with a clear message, never decode silently into a half-grey image that a detector
then scores as a defect (or as good). Decoding uses Pillow, OpenCV and tifffile; this module only
picks the library, checks the header first and normalises the result to a few array shapes:

* HxW uint8 or uint16 for grey images (16-bit X-ray and 3D height maps keep their full range),
* HxWx3 uint8 or uint16 in RGB order (never BGR) for colour images.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

import cv2
import numpy as np
import tifffile
from PIL import BmpImagePlugin, Image, ImageFile, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

from cellsight.errors import DataError

# 16384 x 8192 = 134 M pixels: a full tile of a 16k line-scan camera (and an 8192 x 8192 tile twice
# over), the largest images battery and solar lines produce. Larger headers are refused before
# decoding, because a few-KB crafted file could otherwise claim gigabytes: at this limit one image is
# at most 0.8 GB as 16-bit RGB and 0.5 GB as float32 grey, which an inspection PC survives.
MAX_PIXELS = 16384 * 8192

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)
# Formats people plausibly drop into an image folder, named so the message says what the file is.
_OTHER_SIGNATURES = (
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
)
_ACCEPTED = "accepted: PNG, JPEG, BMP, TIFF"
_PILLOW_FORMATS: dict[str, type[ImageFile.ImageFile]] = {
    "PNG": PngImagePlugin.PngImageFile,
    "JPEG": JpegImagePlugin.JpegImageFile,
    "BMP": BmpImagePlugin.BmpImageFile,
}


class ImageReadError(DataError):
    """An image that cannot be used; `str()` is "<path>: <reason>" so operators see file and cause."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[ImageReadError], tuple[Path | str, str]]:
        # Data-loader worker processes pickle exceptions; keep both attributes across the boundary.
        return (type(self), (self.path, self.reason))


def read_image(path: Path | str, max_pixels: int = MAX_PIXELS, reduce_to: int | None = None) -> np.ndarray:
    """Read a PNG, JPEG, BMP or TIFF file as HxW grey or HxWx3 RGB, uint8 or uint16 as stored.

    The format is recognised from the file's first bytes, not its name. RGBA drops alpha, palette
    images become RGB, 1-bit images become uint8 0/255. A multi-page TIFF yields its first page.
    EXIF orientation is ignored: pixels come as the camera wrote them, aligned with their masks.
    Raises ImageReadError for anything unreadable, including headers over `max_pixels`.

    `reduce_to` (a model's working side, for a caller that only scores the image and will shrink it
    anyway): a JPEG at least twice that on both sides is decoded at 1/2, 1/4 or 1/8 scale by libjpeg's
    scaled inverse DCT (Pillow's `draft`), never below `reduce_to`; a fraction of the decoding work, and
    the DCT scaling is itself an average over the dropped pixels. Other formats decode in full. The
    image (and maps at its size) is then smaller than the file: not for pixel masks or code reading.
    """
    where = Path(path)
    try:
        if where.is_dir():
            raise ImageReadError(where, "is a folder, not an image file")
        data = where.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(where, "file not found") from None
    except PermissionError:
        raise ImageReadError(where, "permission denied") from None
    except OSError as exc:
        raise ImageReadError(where, f"cannot read file ({exc.strerror or exc})") from exc
    return _decode(data, where, max_pixels, reduce_to)


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS, reduce_to: int | None = None) -> np.ndarray:
    """Like read_image, for bytes already in memory (an upload); `name` appears in error messages."""
    return _decode(data, name, max_pixels, reduce_to)


def to_float01(image: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] scaled by the dtype's full range, so 8- and 16-bit images compare alike."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(65535.0)
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.floating):
        # Already normalised by an earlier step; only the dtype is made uniform.
        return image.astype(np.float32, copy=False)
    raise TypeError(f"to_float01 expects uint8, uint16, bool or float pixels, got {image.dtype}")


def to_gray(image: np.ndarray) -> np.ndarray:
    """HxW in the same dtype; RGB is weighted as ITU-R BT.601 luma (as OpenCV and Pillow do)."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    raise ValueError(f"to_gray expects HxW or HxWx3 images, got shape {image.shape}")


def to_rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 in the same dtype; grey is repeated into the three channels for RGB-only backbones."""
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.repeat(image[:, :, np.newaxis], 3, axis=2)
    raise ValueError(f"to_rgb expects HxW or HxWx3 images, got shape {image.shape}")


class LazyImages(Sequence[np.ndarray]):
    """Images read from disk only when indexed, so fitting on 10,000 images never holds them all."""

    def __init__(self, paths: Iterable[Path | str], max_pixels: int = MAX_PIXELS) -> None:
        self._paths = tuple(Path(p) for p in paths)
        self._max_pixels = max_pixels

    @property
    def paths(self) -> tuple[Path, ...]:
        return self._paths

    def __len__(self) -> int:
        return len(self._paths)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> LazyImages: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | LazyImages:
        if isinstance(index, slice):
            return LazyImages(self._paths[index], self._max_pixels)
        return read_image(self._paths[index], self._max_pixels)

    def __iter__(self) -> Iterator[np.ndarray]:
        for path in self._paths:
            yield read_image(path, self._max_pixels)

    def __repr__(self) -> str:
        return f"LazyImages({len(self._paths)} images)"


def list_images(folder: Path | str) -> list[Path]:
    """Image files under `folder` (recursive, sorted), matched by suffix in any letter case.

    Hidden files and folders are skipped: copies made on a Mac leave "._name.png" metadata files
    beside every image, which are not images.
    """
    root = Path(folder)
    if not root.exists():
        raise DataError(f"{root}: folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            Path(dirpath, name)
            for name in filenames
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES
        )
    return sorted(found)


# --- decoding ------------------------------------------------------------------------------------


def _decode(data: bytes, where: Path | str, max_pixels: int, reduce_to: int | None = None) -> np.ndarray:
    if not data:
        raise ImageReadError(where, "empty file (0 bytes)")
    fmt = _sniff(data)
    if fmt is None:
        raise ImageReadError(where, _describe_unknown(data))
    try:
        image = (
            _decode_tiff(data, where, max_pixels)
            if fmt == "TIFF"
            else _decode_pillow(data, fmt, where, max_pixels, reduce_to)
        )
    except (ImageReadError, MemoryError):
        raise
    except Exception as exc:  # decoders raise many types (OSError, SyntaxError, struct.error, ...)
        if _as_text(data) is not None:  # e.g. a text file that happens to start with "BM"
            raise ImageReadError(where, _describe_unknown(data)) from exc
        raise ImageReadError(where, f"corrupt or truncated {fmt} data ({exc})") from exc
    return _normalise(image, where)


def image_format(data: bytes) -> str | None:
    """PNG, JPEG, BMP or TIFF from the first bytes (what the decoder will be), None for anything else."""
    return _sniff(data)


def _sniff(data: bytes) -> str | None:
    for magic, fmt in _SIGNATURES:
        if data.startswith(magic):
            return fmt
    return None


def _describe_unknown(data: bytes) -> str:
    for magic, what in _OTHER_SIGNATURES:
        if data.startswith(magic):
            return f"{what}, not a supported image ({_ACCEPTED})"
    if data[8:12] == b"WEBP" or data[4:12] == b"ftypavif":
        return f"a WebP/AVIF image, not a supported image ({_ACCEPTED})"
    text = _as_text(data)
    if text is not None:
        return f"not an image: the file holds text ({text[:32].strip()!r}...) ({_ACCEPTED})"
    return f"not an image: unknown format (first bytes {data[:8].hex(' ')}) ({_ACCEPTED})"


def _as_text(data: bytes) -> str | None:
    """The start of `data` if it reads as text (a CSV, log or HTML error page saved as .png)."""
    text = data[:64].decode("utf-8", errors="replace").removeprefix("\ufeff")
    # One replacement character is allowed: the 64-byte cut may split a multi-byte character.
    if text.count("\ufffd") > 1 or not all(c.isprintable() or c in "\r\n\t\ufffd" for c in text):
        return None
    return text


def _check_size(where: Path | str, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageReadError(where, f"invalid image size {width}x{height} in the header")
    if width * height > max_pixels:
        raise ImageReadError(
            where,
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(refused before decoding: possible decompression bomb; raise max_pixels if genuine)",
        )


def _decode_pillow(
    data: bytes, fmt: str, where: Path | str, max_pixels: int, reduce_to: int | None = None
) -> np.ndarray:
    # The plugin class parses only the header; Pillow's own bomb check (a process-wide setting that
    # other code may change) is not involved, ours runs before any pixel is decoded.
    with _PILLOW_FORMATS[fmt](io.BytesIO(data)) as header:
        _check_size(where, header.width, header.height, max_pixels)
    if fmt == "PNG":
        with PngImagePlugin.PngImageFile(io.BytesIO(data)) as checked:
            checked.verify()  # chunk CRCs: catches bytes flipped in transit that zlib may not
        bit_depth, colour_type = data[24], data[25]  # IHDR, the chunk Pillow just validated
        if bit_depth == 16 and colour_type in (2, 4, 6):
            # Pillow reduces 16-bit colour PNGs to 8 bits; libpng via OpenCV keeps all 16.
            decoded = _decode_cv2(data, fmt, where)
            # OpenCV expands grey + alpha to four channels; the image is grey.
            return decoded[:, :, 0] if colour_type == 4 and decoded.ndim == 3 else decoded
    with _PILLOW_FORMATS[fmt](io.BytesIO(data)) as image:
        if fmt == "JPEG" and reduce_to is not None and min(image.size) >= 2 * reduce_to:
            image.draft(image.mode, (reduce_to, reduce_to))  # the largest DCT scale keeping both sides >= it
        image.load()  # raises on truncated data (Pillow's LOAD_TRUNCATED_IMAGES is False by default)
        return _pillow_to_array(image, where)


def _pillow_to_array(image: Image.Image, where: Path | str) -> np.ndarray:
    mode = image.mode
    if mode in ("L", "RGB"):
        return np.asarray(image)
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)  # native byte order whatever the file's
    if mode in ("1", "LA", "La"):
        return np.asarray(image.convert("L"))
    if mode in ("P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(image.convert("RGB"))
    described = {"I": "32-bit integer", "F": "32-bit float"}.get(mode, f"Pillow mode {mode!r}")
    raise ImageReadError(where, f"unsupported pixel type: {described} (only 8/16-bit grey or RGB)")


def _decode_cv2(data: bytes, fmt: str, where: Path | str) -> np.ndarray:
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageReadError(where, f"corrupt or truncated {fmt} data (OpenCV could not decode it)")
    image = np.asarray(decoded)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if image.ndim == 3 and image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2RGB))
    return image


def _decode_tiff(data: bytes, where: Path | str, max_pixels: int) -> np.ndarray:
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        if not tif.pages:
            raise ImageReadError(where, "corrupt or truncated TIFF data (no readable image page)")
        page = tif.pages[0]
        if not isinstance(page, tifffile.TiffPage):
            raise ImageReadError(where, "TIFF first page cannot be read")
        _check_size(where, int(page.imagewidth), int(page.imagelength), max_pixels)
        dtype = np.dtype(page.dtype) if page.dtype is not None else None
        if dtype is None or dtype not in (np.uint8, np.uint16, np.bool_):
            raise ImageReadError(
                where,
                f"unsupported pixel type: {_describe_dtype(dtype, page)} "
                "(only unsigned 8/16-bit grey or RGB)",
            )
        if page.imagedepth > 1:
            raise ImageReadError(where, "volumetric TIFF (image depth > 1) is not supported")
        plain = page.photometric in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB)
        if not plain or dtype == np.bool_:
            # Palette, bilevel, CMYK, YCbCr, min-is-white: Pillow (libtiff) converts these correctly.
            return _decode_pillow_tiff(data, where)
        try:
            image = page.asarray()
        except ValueError as exc:
            if "imagecodecs" not in str(exc):
                raise
            # LZW, JPEG and other codecs need the optional imagecodecs package; libtiff inside
            # OpenCV decodes them at full bit depth instead.
            return _decode_cv2(data, "TIFF", where)
        if page.axes.startswith("S"):  # planar configuration: samples first
            image = np.moveaxis(image, 0, -1)
        return np.asarray(image)


def _decode_pillow_tiff(data: bytes, where: Path | str) -> np.ndarray:
    with TiffImagePlugin.TiffImageFile(io.BytesIO(data)) as image:
        image.load()
        return _pillow_to_array(image, where)


def _describe_dtype(dtype: np.dtype | None, page: tifffile.TiffPage) -> str:
    if dtype is None:
        return f"{page.bitspersample}-bit samples"
    kind = {"f": "float", "i": "signed integer", "u": "unsigned integer", "c": "complex"}.get(dtype.kind, "")
    return f"{dtype.itemsize * 8}-bit {kind} ({dtype.name})".replace("  ", " ")


def _normalise(image: np.ndarray, where: Path | str) -> np.ndarray:
    """Drop alpha / keep grey, and make the result writable and contiguous in native byte order."""
    if image.ndim == 3 and image.shape[2] in (1, 2):  # grey, or grey + alpha
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 4:  # RGB + alpha
        image = image[:, :, :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ImageReadError(where, f"unsupported image layout: array shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(where, f"unsupported pixel type: {image.dtype.name} (only 8/16-bit)")
    # Callers may edit pixels in place; arrays over Pillow's buffers can be read-only.
    return np.require(image, dtype=image.dtype.newbyteorder("="), requirements=["C", "W"])
