"""Decoding images of any mode and size into uint8 arrays.

Everything downstream sees ``uint8`` arrays shaped (H, W, C) with C = 1 (gray)
or 3 (RGB). 16-bit, palette, RGBA, CMYK, LA and float images are converted
here, once.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ferkit.errors import DataError

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


def _to_uint8_mode(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 'L' or 'RGB'."""
    if im.mode in ("L", "RGB"):
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit-depth: stretch the actual range to 0..255 rather than clipping.
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.round().astype(np.uint8), "L")
    if im.mode in ("1", "LA", "La"):
        return im.convert("L")
    if im.mode in ("RGBA", "P", "PA", "RGBa"):
        # Transparency composited onto white so the face stays visible.
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


def decode_image(src, channels: int | None = None) -> np.ndarray:
    """Decode a path, bytes, PIL image or array into a uint8 (H, W, C) array.

    Args:
        src: file path, raw bytes, ``PIL.Image`` or numpy array (H, W[, C]); a
            3-channel array is taken as RGB.
        channels: 1 (gray), 3 (RGB) or None (keep gray as gray, colour as RGB).

    Raises:
        ImageDecodeError: unreadable, corrupt or truncated file, or a decompression bomb.
    """
    if isinstance(src, np.ndarray):
        arr = src
        if arr.dtype != np.uint8:
            a = arr.astype(np.float64)
            if a.max() <= 1.0:
                a = a * 255.0
            arr = np.clip(a, 0, 255).round().astype(np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.shape[2] == 4:
            arr = arr[:, :, :3]
    else:
        name = str(src)[:200] if isinstance(src, (str, os.PathLike)) else "image bytes"
        try:
            if isinstance(src, Image.Image):
                im = src
            elif isinstance(src, (bytes, bytearray, memoryview)):
                im = Image.open(io.BytesIO(bytes(src)))
            else:
                im = Image.open(src)
            im = ImageOps.exif_transpose(im) if hasattr(im, "getexif") else im
            im.load()  # forces a full decode so truncation is caught here
            im = _to_uint8_mode(im)
        except Image.DecompressionBombError as e:
            raise ImageTooLargeError(f"{name}: image too large (decompression bomb refused): {e}") from None
        except FileNotFoundError:
            raise ImageDecodeError(f"{name}: no such file") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ImageDecodeError(f"{name}: cannot decode image ({type(e).__name__}: {e})") from None
        if im.width * im.height > MAX_PIXELS:
            raise ImageTooLargeError(f"{name}: image too large ({im.width}x{im.height}), refused")
        arr = np.asarray(im)
        if arr.ndim == 2:
            arr = arr[:, :, None]
    return convert_channels(arr, channels)


def convert_channels(arr: np.ndarray, channels: int | None) -> np.ndarray:
    """Gray <-> RGB on a uint8 (H, W, C) array."""
    c = arr.shape[2]
    if channels is None or channels == c:
        return np.ascontiguousarray(arr)
    if channels == 1 and c == 3:
        return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)[:, :, None]
    if channels == 3 and c == 1:
        return np.repeat(arr, 3, axis=2)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def resize_square(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize (H, W, C) uint8 to (size, size, C); area interpolation when shrinking."""
    h, w = arr.shape[:2]
    if (h, w) == (size, size):
        return arr
    interp = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_LINEAR
    out = cv2.resize(arr, (size, size), interpolation=interp)
    return out[:, :, None] if out.ndim == 2 else out
