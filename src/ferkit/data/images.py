"""Decoding images of any mode and size into uint8 arrays.

Everything downstream sees ``uint8`` arrays shaped (H, W, C) with C = 1 (gray)
or 3 (RGB). 16-bit, palette, RGBA, CMYK, LA and float images are converted
here, once.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ferkit.errors import DataError

# The two pixel helpers live with the one face cropper (below data/); re-exported here.
from ferkit.faces.framing import convert_channels, resize_square  # noqa: F401

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}

# Pillow's own guard: images above this many pixels raise DecompressionBombError
# instead of silently allocating gigabytes. 2x this is refused outright by Pillow;
# we refuse everything above it.
MAX_PIXELS = 89_478_485
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageDecodeError(DataError):
    """The bytes are not a decodable image (corrupt, truncated, not an image, too large)."""

    reason = "corrupt or unreadable image"


class ImageTooLargeError(ImageDecodeError):
    """The image has more pixels than ferkit decodes (a decompression bomb guard)."""

    reason = "image too large (refused)"


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _name(src) -> str:
    """A short name for messages: a path cut to 120 characters, never the data itself."""
    if isinstance(src, (str, os.PathLike)):
        text = os.fspath(src).replace("\n", "\\n").replace("\r", "\\r")
        return text if len(text) <= 120 else text[:60] + f"... ({len(text)} characters)"
    return "image bytes"


def to_uint8(arr: np.ndarray, name: str = "image array") -> np.ndarray:
    """Pixel values of any numeric dtype -> uint8, scaled by bit depth (never by content).

    * uint8: unchanged; bool: False/True -> 0/255.
    * uint16, uint32, uint64: scaled by the type's range (uint16 65535 -> 255), so a
      16-bit image keeps its contrast instead of clipping to white.
    * signed integers (an ``int64`` array of 8-bit values, Pillow's 32-bit mode "I"):
      values must be >= 0; 0-255 are taken as 8-bit, up to 65535 as 16-bit, else 32-bit.
    * floats: 0-1 (the convention of scikit-image and torchvision) scaled by 255; 0-255
      taken as they are.

    Raises:
        ImageDecodeError: NaN/inf, negative values, floats above 255, or a non-numeric
            dtype (object, string, complex), naming the problem.
    """
    dt = arr.dtype
    if dt == np.uint8:
        return arr
    if dt == np.bool_:
        return arr.astype(np.uint8) * 255
    if not (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating)):
        raise ImageDecodeError(f"{name}: pixel dtype {dt} is not supported (use uint8, uint16 or float)")
    if arr.size == 0:
        raise ImageDecodeError(f"{name}: empty image (shape {tuple(arr.shape)})")
    if np.issubdtype(dt, np.unsignedinteger):
        top = float(np.iinfo(dt).max)
    else:
        lo, hi = float(arr.min()), float(arr.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ImageDecodeError(f"{name}: pixel values contain NaN or infinity")
        if lo < 0:
            raise ImageDecodeError(
                f"{name}: negative pixel values (min {lo:g}); give 0-255, 0-1 (float) or "
                "unsigned 16-bit values"
            )
        if np.issubdtype(dt, np.floating):
            if hi > 255:
                raise ImageDecodeError(
                    f"{name}: float pixel values up to {hi:g}; floats must be 0-1 or 0-255"
                )
            top = 1.0 if hi <= 1.0 else 255.0
        else:
            top = 255.0 if hi <= 255 else 65535.0 if hi <= 65535 else float(2**32 - 1)
    if top == 255.0:
        return np.clip(arr, 0, 255).round().astype(np.uint8) if arr.dtype.kind == "f" else arr.astype(np.uint8)
    return np.clip(arr.astype(np.float64) * (255.0 / top), 0, 255).round().astype(np.uint8)


def _to_uint8_mode(im: Image.Image, name: str) -> Image.Image:
    """Convert any Pillow mode to 'L' or 'RGB'."""
    if im.mode in ("L", "RGB"):
        return im
    if im.mode.startswith("I;16"):
        # 16-bit gray: scale by bit depth, as the 8-bit version of the same picture reads.
        return Image.fromarray(to_uint8(np.asarray(im).astype(np.uint16), name), "L")
    if im.mode in ("I", "F"):
        return Image.fromarray(to_uint8(np.asarray(im), name), "L")
    if im.mode in ("1", "LA", "La"):
        return _on_white(im.convert("LA")) if im.mode != "1" else im.convert("L")
    if im.mode in ("RGBA", "P", "PA", "RGBa"):
        return _on_white(im.convert("RGBA"))
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


def _on_white(im: Image.Image) -> Image.Image:
    """Transparency composited onto white so the face stays visible (LA -> L, RGBA -> RGB)."""
    gray = im.mode == "LA"
    rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    out = Image.alpha_composite(bg, rgba).convert("RGB")
    return out.convert("L") if gray else out


def image_from_array(arr: np.ndarray) -> np.ndarray:
    """Check a numpy image and bring it to uint8 (H, W, 1|3); see :func:`decode_image`.

    Raises:
        ImageDecodeError: empty, wrong number of dimensions or channels (with a hint for
            channels-first and batched arrays), or values :func:`to_uint8` refuses.
    """
    name = f"image array of shape {tuple(arr.shape)} and dtype {arr.dtype}"
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim != 3:
        hint = (
            ": a batch of images? pass them one by one, e.g. list(array)"
            if arr.ndim == 4
            else ""
        )
        raise ImageDecodeError(f"{name}: expected (H, W) or (H, W, C){hint}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageDecodeError(f"{name}: the image is empty")
    c = arr.shape[2]
    if c not in (1, 2, 3, 4):
        hint = (
            "; it looks channels-first (C, H, W): pass array.transpose(1, 2, 0)"
            if arr.shape[0] in (1, 3, 4)
            else ""
        )
        raise ImageDecodeError(f"{name}: expected 1, 3 or 4 channels (gray, RGB, RGBA){hint}")
    arr = to_uint8(arr, name)
    if c in (2, 4):  # gray+alpha, RGBA: onto white, as files with transparency are
        mode = "LA" if c == 2 else "RGBA"
        arr = np.asarray(_on_white(Image.fromarray(np.ascontiguousarray(arr), mode)))
        arr = arr[:, :, None] if arr.ndim == 2 else arr
    return arr


def _base64_bytes(src) -> bytes | None:
    """The decoded bytes when ``src`` is base64 text (or a ``data:`` URI), else None."""
    if isinstance(src, str):
        text = src.strip()
    elif isinstance(src, (bytes, bytearray, memoryview)):
        try:
            text = bytes(src[:100_000_000]).strip().decode("ascii")
        except UnicodeDecodeError:
            return None
    else:
        return None
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            return None
    elif len(text) < 64 or not _BASE64.fullmatch(text[:4096]):
        return None  # short strings are file names
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


def _open(src) -> Image.Image:
    """Pillow's lazy open (header only) of a path, bytes or PIL image."""
    if isinstance(src, Image.Image):
        return src
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise ImageDecodeError("image bytes: empty (0 bytes)")
        try:
            return Image.open(io.BytesIO(bytes(src)))
        except UnidentifiedImageError:
            data = _base64_bytes(src)  # base64 text that was read as bytes
            if data is None:
                raise
            return Image.open(io.BytesIO(data))
    return Image.open(src)


def decode_image(src, channels: int | None = None) -> np.ndarray:
    """Decode a path, bytes, base64 text, PIL image or array into a uint8 (H, W, C) array.

    Args:
        src: file path; encoded bytes (JPEG, PNG, ...); base64 text of such bytes (or a
            ``data:image/...;base64,`` URI); ``PIL.Image``; or numpy array (H, W[, C]),
            C = 1, 2 (gray + alpha), 3 (taken as RGB) or 4 (RGBA). Arrays of other dtypes
            are scaled by bit depth (:func:`to_uint8`); transparency is put on white.
        channels: 1 (gray), 3 (RGB) or None (keep gray as gray, colour as RGB).

    Raises:
        ImageDecodeError: unreadable, corrupt or truncated file; more than
            :data:`MAX_PIXELS` pixels (refused from the header, before decoding); an
            empty array, or one of unsupported shape, dtype or values.
    """
    if isinstance(src, np.ndarray):
        return convert_channels(image_from_array(src), channels)
    name = _name(src)
    if isinstance(src, str) and not os.path.exists(src):  # False for over-long names too
        data = _base64_bytes(src)
        if data is not None:
            src, name = data, "base64 image"
        elif len(src) > 255:  # longer than any file name: text passed by mistake
            raise ImageDecodeError(f"{name}: no such file, and not base64 image data")
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x MAX_PIXELS; such images are refused below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = _open(src)
        # The header gives the size: refuse a huge image before its pixels are decoded
        # (a 108-MP JPEG decoded in full peaks at 1.5 GB before a later check could refuse it).
        if im.width * im.height > MAX_PIXELS:
            raise ImageTooLargeError(
                f"{name}: image too large ({im.width}x{im.height} = {im.width * im.height} "
                f"pixels, limit {MAX_PIXELS}), refused before decoding"
            )
        if im.width == 0 or im.height == 0:
            raise ImageDecodeError(f"{name}: empty image ({im.width}x{im.height})")
        im = ImageOps.exif_transpose(im) if hasattr(im, "getexif") else im
        im.load()  # forces a full decode so truncation is caught here
        im = _to_uint8_mode(im, name)
    except Image.DecompressionBombError:
        raise ImageTooLargeError(f"{name}: image too large (decompression bomb refused)") from None
    except FileNotFoundError:
        raise ImageDecodeError(f"{name}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        detail = str(e).replace(os.fspath(src) if isinstance(src, (str, os.PathLike)) else "\0", name)
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        raise ImageDecodeError(f"{name}: cannot decode image ({type(e).__name__}: {detail})") from None
    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return convert_channels(arr, channels)


def load_any_image(image, *, color: str = "rgb") -> np.ndarray:
    """Any supported input -> uint8 (H, W, C) RGB or gray array (``Recognizer.load_image``).

    Inputs: a file path; encoded bytes; base64 text of them (or a ``data:`` URI); a
    ``PIL.Image``; a numpy array (H, W[, C]), RGB unless ``color="bgr"``.

    Raises:
        ImageDecodeError: missing, unreadable or too large file; a bad array.
        FerkitError: an input of another type, or a bad ``color``.
    """
    from ferkit.errors import FerkitError

    if isinstance(image, np.ndarray):
        if color.lower() not in ("rgb", "bgr"):
            raise FerkitError(f"color must be 'rgb' or 'bgr', not {color!r}")
        if image.ndim == 3 and image.shape[2] in (3, 4) and color.lower() == "bgr":
            order = [2, 1, 0] if image.shape[2] == 3 else [2, 1, 0, 3]
            image = image[:, :, order]  # BGR(A) -> RGB(A)
    elif not isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)):
        raise FerkitError(
            f"unsupported image input {type(image).__name__}: use a path, bytes, "
            "base64 text, a PIL image or a numpy array (H, W[, C])"
        )
    return decode_image(image)
