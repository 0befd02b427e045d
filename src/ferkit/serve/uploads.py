"""Reading uploads for the HTTP service: bodies, multipart parts, image headers, bounded decoding.

Every failure here is an :class:`ApiError` carrying its HTTP status and a
stable code; the routes in ``app.py`` only arrange these calls.

Memory: a well-compressed 49 MP PNG is under 100 KB on the wire and hundreds
of MB once decoded, so decoding is bounded twice. :class:`PixelBudget` lets
only so many pixels be decoded at once across all requests (later uploads wait
their turn), and :func:`decode_upload` decodes large images without full-size
RGB copies: JPEGs are decoded at a reduced scale (libjpeg's DCT scaling,
Pillow's ``draft``), other formats are converted to RGB and shrunk one band of
rows at a time. Afterwards :func:`release_memory` hands freed heap pages back
to the system (glibc keeps them otherwise, and the server's RSS would stay at
its peak).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import io
import logging
import math
from contextlib import asynccontextmanager

import cv2
import numpy as np
from PIL import Image, ImageOps
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from ferkit.data.images import ImageDecodeError, decode_image
from ferkit.inference.inputs import sniff_media

log = logging.getLogger("ferkit.serve")

#: Modes whose conversion to RGB works pixel by pixel, so a band of rows converts
#: exactly as the whole image would (16-bit gray is scaled by bit depth; 32-bit "I" and
#: float "F" are scaled by the image's own range, so they convert in one piece).
_BANDABLE = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB",
             "HSV", "I;16", "I;16B", "I;16L", "I;16N"}
#: Output rows made at once when shrinking a large image (k times as many input rows).
_BAND_ROWS = 64
#: Images with more pixels than this are followed by a heap trim.
_TRIM_ABOVE = 4_000_000


class ApiError(Exception):
    """An HTTP error answered as ``{"error": code, "detail": message}``."""

    def __init__(self, status: int, code: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def sniff_format(data: bytes) -> str | None:
    """Image format from the first bytes ("jpeg", "png", ...), or None when no image format matches."""
    found = sniff_media(data[:32])
    return found[1] if found and found[0] == "image" else None


async def read_body(request: Request, limit: int) -> bytes:
    """Read the request body into memory, refusing it (413) as soon as it exceeds ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise ApiError(400, "bad_request", "Content-Length is not a number") from None
        if n > limit:
            raise ApiError(413, "too_large", f"request body of {n} bytes exceeds the {limit}-byte limit")
    buf = bytearray()
    # Counted while streaming: Content-Length may be absent (chunked) or lie.
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise ApiError(413, "too_large", f"request body exceeds the {limit}-byte limit")
    return bytes(buf)


def parse_multipart(body: bytes, content_type: str, file_limit: int) -> list[tuple[str, str, bytes]]:
    """Split a multipart/form-data body into ``(field name, filename, bytes)`` in memory.

    Starlette's own form parser spools files over 1 MB to a temporary file;
    ``python-multipart``'s streaming parser keeps everything in memory.

    Raises:
        ApiError: 400 for a malformed body, 413 for a part over ``file_limit`` bytes.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_request", "multipart body without a boundary")
    parts: list[dict] = []
    field, value = [b""], [b""]

    def on_part_begin():
        parts.append({"headers": {}, "data": bytearray()})

    def on_header_field(data, start, end):
        field[0] += data[start:end]

    def on_header_value(data, start, end):
        value[0] += data[start:end]

    def on_header_end():
        parts[-1]["headers"][field[0].decode("latin-1").lower()] = value[0]
        field[0], value[0] = b"", b""

    def on_part_data(data, start, end):
        part = parts[-1]["data"]
        if len(part) + (end - start) > file_limit:
            raise ApiError(413, "too_large", f"an uploaded file exceeds the {file_limit}-byte limit")
        part += data[start:end]

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data,
    })
    try:
        parser.write(body)
        parser.finalize()
    except ApiError:
        raise
    except Exception as e:  # noqa: BLE001 - any parser failure is a malformed request
        raise ApiError(400, "bad_request", f"malformed multipart body ({type(e).__name__})") from None
    out = []
    for p in parts:
        _, disp = parse_options_header(p["headers"].get("content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename", b"").decode("utf-8", "replace")
        out.append((name, filename, bytes(p["data"])))
    return out


def inspect_upload(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) from the image header, before any pixel is decoded.

    Raises:
        ApiError: 422 empty upload, 415 no supported image format, 422 unreadable
            header or more than ``max_pixels`` pixels (a decompression bomb).
    """
    if not data:
        raise ApiError(422, "empty_image", "the uploaded file is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise ApiError(415, "unsupported_media_type",
                       "not an image of a supported type (JPEG, PNG, GIF, BMP, TIFF, WebP, PGM/PPM)")
    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: reads the header only
            w, h = im.size
    except Image.DecompressionBombError:
        raise ApiError(422, "decompression_bomb", "image dimensions too large, refused") from None
    except Exception as e:  # noqa: BLE001 - any header failure means a corrupt file
        raise ApiError(422, "corrupt_image", f"cannot read the {fmt} header ({type(e).__name__})") from None
    if w * h > max_pixels:
        raise ApiError(422, "decompression_bomb",
                       f"image of {w}x{h} = {w * h} pixels exceeds the {max_pixels}-pixel limit")
    if w < 1 or h < 1:
        raise ApiError(422, "corrupt_image", f"image of {w}x{h} pixels has no pixels")
    return fmt, w, h


def decode_upload(data: bytes, max_pixels: int, max_side: int) -> tuple[np.ndarray, int, int, float]:
    """Bytes -> (RGB uint8 array of at most ``max_side`` per side, width, height, scale).

    Width and height are the image's own (after EXIF rotation); ``scale`` maps
    them to the array (boxes found in the array divide by it). Any image shape
    decodes, a 1x5000 strip included (its long side shrinks, its short side
    stays at least 1 pixel).

    Raises:
        ApiError: see :func:`inspect_upload`; 422 ``corrupt_image`` when the pixels do not decode.
    """
    fmt, _, _ = inspect_upload(data, max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as im:
            arr, w, h, scale = _decode_small(im, fmt, max_side)
    except ImageDecodeError as e:
        raise ApiError(422, "corrupt_image", str(e).replace("image bytes: ", "")) from None
    except (OSError, SyntaxError, ValueError, cv2.error) as e:
        log.info("undecodable %s upload: %s: %s", fmt, type(e).__name__, e)
        raise ApiError(422, "corrupt_image", f"cannot decode the {fmt} image ({type(e).__name__})") from None
    return np.ascontiguousarray(arr), w, h, scale


def _decode_small(im: Image.Image, fmt: str, max_side: int) -> tuple[np.ndarray, int, int, float]:
    sw, sh = im.size
    turned = im.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientations that swap the sides
    w, h = (sh, sw) if turned else (sw, sh)  # the image's own size, as the user sees it
    if fmt == "jpeg" and max(sw, sh) > max_side:
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly, never below the requested size.
        s = max_side / max(sw, sh)
        im.draft("RGB" if im.mode not in ("L", "RGB") else im.mode,
                 (math.ceil(sw * s), math.ceil(sh * s)))
    reduced = max(1, round(max(sw, sh) / max(im.size)))  # the JPEG draft's factor, else 1
    im.load()
    ImageOps.exif_transpose(im, in_place=True)  # in place: no full-size copy
    W, H = im.size
    k = max(1, math.ceil(max(W, H) / max_side))  # whole shrink factor still needed
    if (k == 1 and W * H <= _TRIM_ABOVE) or im.mode not in _BANDABLE:
        # Small images, and modes converted image-wide (16-bit, float): in one piece.
        arr = decode_image(im, channels=3)
        if k == 1:
            return arr, w, h, 1.0 / reduced
        s = max_side / max(W, H)
        arr = cv2.resize(arr, (max(1, round(W * s)), max(1, round(H * s))), interpolation=cv2.INTER_AREA)
        return arr, w, h, s / reduced
    # Convert one band of rows at a time, shrinking by the whole factor k (1 when the full
    # size is wanted, e.g. for small faces): every output pixel averages a k x k block, as
    # one resize of the whole image would, but no full-size RGBA/RGB temporaries are ever
    # made (a palette PNG's transparency composite made four). A side shorter than k (a
    # 5000x1 strip) stays whole.
    ow, oh = max(1, W // k), max(1, H // k)
    cw, ch = min(W, ow * k), min(H, oh * k)  # the input region the output covers
    out = np.empty((oh, ow, 3), np.uint8)
    for r0 in range(0, oh, _BAND_ROWS):
        r1 = min(oh, r0 + _BAND_ROWS)
        y0, y1 = r0 * ch // oh, r1 * ch // oh
        rgb = decode_image(im.crop((0, y0, cw, y1)), channels=3)
        out[r0:r1] = rgb if k == 1 else cv2.resize(rgb, (ow, r1 - r0), interpolation=cv2.INTER_AREA)
    return out, w, h, 1.0 / (k * reduced)


class PixelBudget:
    """Bounds the pixels being decoded at once across concurrent requests.

    ``hold(n)`` waits until ``n`` more pixels fit under ``capacity`` (an image
    larger than the whole budget waits until it can run alone). Waiters are
    served in arrival order, so a large image is not starved by small ones.
    """

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.in_use = 0
        self._cond: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[object] = []

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (test clients): start afresh
            self._loop, self._cond, self.in_use, self._queue = loop, asyncio.Condition(), 0, []
        return self._cond

    @asynccontextmanager
    async def hold(self, pixels: int):
        n = min(int(pixels), self.capacity)
        cond, ticket = self._condition(), object()
        async with cond:
            self._queue.append(ticket)
            try:
                await cond.wait_for(lambda: self._queue[0] is ticket and self.in_use + n <= self.capacity)
            finally:
                self._queue.remove(ticket)
                cond.notify_all()
            self.in_use += n
        try:
            yield
        finally:
            async with cond:
                self.in_use -= n
                cond.notify_all()


def _load_trim():
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_malloc_trim = _load_trim()


def release_memory(pixels: int) -> None:
    """After decoding a large image, give the freed heap pages back to the system (glibc only).

    Pillow allocates decoded images in blocks small enough to come from malloc's
    arenas, which glibc keeps after they are freed; without a trim the server's
    RSS stays near its peak after a burst of large uploads.
    """
    if _malloc_trim is not None and pixels > _TRIM_ABOVE:
        _malloc_trim(0)


# Multipart framing (boundaries, part headers) on top of the image bytes.
_FRAMING_SLACK = 64 * 1024
# A batch request body may hold this many times the single-image limit.
BATCH_BODY_FACTOR = 4
_RAW_TYPES = ("application/octet-stream",)


async def images_from_request(request: Request, batch: bool, file_limit: int) -> list[tuple[str, bytes]]:
    """The (filename, bytes) images of a ``/v1/predict`` (``batch`` False) or
    ``/v1/predict/batch`` request: multipart field ``file`` / ``files``, or for one image a
    raw ``image/*`` or ``application/octet-stream`` body. ``file_limit``: bytes per image.

    Raises:
        ApiError: 413 body over the limit, 415 unsupported content type, 422 no file, an
            empty body, or several files sent to the single-image route.
    """
    ctype = request.headers.get("content-type", "application/octet-stream")
    mime = ctype.split(";")[0].strip().lower()
    limit = file_limit * (BATCH_BODY_FACTOR if batch else 1) + _FRAMING_SLACK
    if mime == "multipart/form-data":
        body = await read_body(request, limit)
        parts = parse_multipart(body, ctype, file_limit)
        want = "files" if batch else "file"
        files = [(fn or name, data) for name, fn, data in parts if name in (want, "file", "files")]
        if not files:
            raise ApiError(422, "missing_file", f"multipart body has no '{want}' field")
        if not batch and len(files) > 1:
            raise ApiError(422, "too_many_files", f"{len(files)} files in one /v1/predict request; "
                           "send one, or several to /v1/predict/batch")
        return files
    if batch:
        raise ApiError(415, "unsupported_media_type", "batch requests must be multipart/form-data")
    if mime.startswith("image/") or mime in _RAW_TYPES:
        body = await read_body(request, file_limit)
        if not body:
            raise ApiError(422, "missing_file", "empty request body; send an image")
        return [("body", body)]
    raise ApiError(415, "unsupported_media_type",
                   f"content type {mime!r}: send multipart/form-data, image/* or application/octet-stream")
