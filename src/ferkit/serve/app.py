"""The ``ferkit serve`` HTTP service: FastAPI app, upload limits, errors, the browser page.

Routes (all JSON except the page)::

    GET  /                   browser page (upload or webcam; no CDN assets)
    GET  /healthz            liveness + batching counters (never needs the API key)
    GET  /v1/models          the loaded model: name, version, labels, input
    POST /v1/predict         one image: multipart field ``file`` or the raw body
    POST /v1/predict/batch   several images: multipart field ``files`` (repeated)
    GET  /docs, /openapi.json  FastAPI's OpenAPI docs

Safety rules, in the order they are checked: API key (401), ``Content-Length``
over the limit (413, before a byte is read), the body counted while it streams
in (413), the body's content type (415), the image's magic bytes (415), the
pixel count in the header before decoding (422, decompression bomb), the decode
itself (422). Uploads are held in memory only, never spooled to disk (Starlette's
own form parser spools files above 1 MB to a temporary file, so multipart bodies
are parsed here with ``python-multipart``'s streaming parser instead).
"""

from __future__ import annotations

import hmac
import io
import os
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import cv2
import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from PIL import Image
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ferkit import __version__
from ferkit.data.images import ImageDecodeError, decode_image
from ferkit.serve.batcher import MicroBatcher, QueueFullError
from ferkit.serve.schemas import (
    ERROR_RESPONSES,
    BatchResponse,
    HealthResponse,
    ModelInfo,
    ModelsResponse,
    PredictResponse,
)

# Multipart framing (boundaries, part headers) on top of the image bytes.
_FRAMING_SLACK = 64 * 1024
# A batch request body may hold this many times the single-image limit.
BATCH_BODY_FACTOR = 4
# Pixels beyond which an image is refused before decoding (a 50 MP photo passes).
DEFAULT_MAX_PIXELS = 50_000_000
# Images are shrunk to this longest side before queueing: bounds the memory of
# queued images; face boxes are scaled back to the original pixels.
DEFAULT_MAX_SIDE = 2048

# Magic bytes of the formats Pillow decodes for us; anything else is 415.
_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"P5", "pgm"),
    (b"P6", "ppm"),
    (b"P2", "pgm"),
    (b"P3", "ppm"),
)
_RAW_TYPES = ("application/octet-stream",)

_PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
    "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


class ApiError(Exception):
    """An HTTP error answered as ``{"error": code, "detail": message}``."""

    def __init__(self, status: int, code: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def sniff_format(data: bytes) -> str | None:
    """Image format from the first bytes, or None when they match no supported format."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    return None


def _error(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


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

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )
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


def decode_upload(data: bytes, max_pixels: int, max_side: int) -> tuple[np.ndarray, int, int, float]:
    """Bytes -> (RGB array, original width, original height, scale applied).

    Raises:
        ApiError: 415 for bytes of no supported image format, 422 for corrupt images
            and decompression bombs.
    """
    if not data:
        raise ApiError(422, "empty_image", "the uploaded file is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise ApiError(
            415, "unsupported_media_type",
            "not an image of a supported type (JPEG, PNG, GIF, BMP, TIFF, WebP, PGM/PPM)",
        )
    try:
        # Header only: Pillow reads the size without decoding the pixels.
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        raise ApiError(422, "decompression_bomb", "image dimensions too large, refused") from None
    except Exception as e:  # noqa: BLE001 - any header failure means a corrupt file
        raise ApiError(422, "corrupt_image", f"cannot read the {fmt} header ({type(e).__name__})") from None
    if w * h > max_pixels:
        raise ApiError(
            422, "decompression_bomb",
            f"image of {w}x{h} = {w * h} pixels exceeds the {max_pixels}-pixel limit",
        )
    try:
        arr = decode_image(data, channels=3)
    except ImageDecodeError as e:
        raise ApiError(422, "corrupt_image", str(e).replace("image bytes: ", "")) from None
    h, w = arr.shape[:2]
    scale = 1.0
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        arr = cv2.resize(arr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr), w, h, scale


def _face_dict(face: Any, scale: float) -> dict:
    d = face.to_dict() if hasattr(face, "to_dict") else dict(face)
    d = dict(d)
    if scale != 1.0:
        d["box"] = [round(v / scale) for v in d["box"]]
    d["box"] = [int(v) for v in d["box"]]
    d["confidence"] = float(d["confidence"])
    d["scores"] = {str(k): float(v) for k, v in d["scores"].items()}
    return d


def _backend_name(recognizer) -> str | None:
    b = getattr(recognizer, "backend", None)
    return b if isinstance(b, str) else getattr(b, "name", None)


def _load_recognizer(model: str, backend: str, detector: str):
    from ferkit.inference.recognizer import Recognizer

    return Recognizer.from_pretrained(model, backend=backend, detector=detector)


def create_app(
    recognizer=None,
    model: str = "default",
    max_upload_mb: float = 10,
    api_key: str | None = None,
    batch_window_ms: float = 5,
    max_batch: int = 64,
    *,
    backend: str = "auto",
    detector: str = "default",
    max_files: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
) -> FastAPI:
    """Build the service around a Recognizer.

    Args:
        recognizer: anything with ``predict_batch(images) -> list[list[Face]]``,
            ``labels``, ``model_name`` and ``version``; loaded from ``model`` when None.
        model: ``"default"`` (the shipped model) or a checkpoint path.
        max_upload_mb: largest image accepted (413 above); a batch body may hold
            ``BATCH_BODY_FACTOR`` times this.
        api_key: when set, ``/v1/*`` needs a matching ``X-API-Key`` header (401 otherwise).
        batch_window_ms: how long the micro-batcher waits for more images.
        max_batch: most images per model call.
        backend, detector: passed to ``Recognizer.from_pretrained`` when loading.
        max_files: most images in one batch request (413 above).
        max_pixels: images with more pixels are refused before decoding (422).
        max_side: longer images are shrunk to this side before the model (boxes are
            reported in original pixels).
    """
    if recognizer is None:
        recognizer = _load_recognizer(model, backend, detector)
    file_limit = int(max_upload_mb * 1024 * 1024)
    batcher = MicroBatcher(recognizer.predict_batch, max_batch=max_batch, window_ms=batch_window_ms)
    started = time.time()
    info = ModelInfo(
        name=str(getattr(recognizer, "model_name", "unknown")),
        version=str(getattr(recognizer, "version", "unknown")),
        labels=[str(x) for x in getattr(recognizer, "labels", [])],
        backend=_backend_name(recognizer),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.close()
        batcher.shutdown()

    app = FastAPI(
        title="ferkit",
        version=__version__,
        description="Facial expression recognition over HTTP. Errors are JSON "
        "`{\"error\": code, \"detail\": message}`.",
        lifespan=lifespan,
    )
    app.state.recognizer = recognizer
    app.state.batcher = batcher

    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="needed when the server has an API key")
    expected = api_key.encode() if api_key else None

    async def check_key(key: str | None = Depends(key_header)) -> None:
        if expected is None:
            return
        # Constant-time comparison: response timing must not reveal a key prefix.
        if key is None or not hmac.compare_digest(key.encode(), expected):
            raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header",
                           headers={"WWW-Authenticate": "ApiKey"})

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        msg = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in errs[:3])
        return _error(422, "invalid_request", msg or "invalid request")

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        return _error(500, "internal_error", f"{type(exc).__name__}: {exc}")

    async def _images_from_request(request: Request, batch: bool) -> list[tuple[str, bytes]]:
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

    async def _run(images: list[np.ndarray]):
        try:
            return await batcher.submit_many(images)
        except QueueFullError as e:
            raise ApiError(503, "busy", str(e), headers={"Retry-After": "1"}) from None

    upload_body = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["file"],
                               "properties": {"file": {"type": "string", "format": "binary"}}}
                },
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }
    batch_body = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["files"],
                               "properties": {"files": {"type": "array",
                                                        "items": {"type": "string", "format": "binary"}}}}
                }
            },
        }
    }

    @app.post("/v1/predict", response_model=PredictResponse, responses=ERROR_RESPONSES,
              dependencies=[Depends(check_key)], openapi_extra=upload_body, tags=["predict"],
              summary="Emotions of the faces in one image")
    async def predict(request: Request):
        t0 = time.perf_counter()
        (_, data), = await _images_from_request(request, batch=False)
        arr, w, h, scale = await run_in_threadpool(decode_upload, data, max_pixels, max_side)
        t1 = time.perf_counter()
        (res,) = await _run([arr])
        return {
            "faces": [_face_dict(f, scale) for f in res.faces],
            "image": {"width": w, "height": h},
            "model": {"name": info.name, "version": info.version},
            "timing_ms": {
                "decode": (t1 - t0) * 1000.0, "queue": res.queue_ms, "inference": res.inference_ms,
                "total": (time.perf_counter() - t0) * 1000.0,
            },
            "batch_size": res.batch_size,
        }

    @app.post("/v1/predict/batch", response_model=BatchResponse, responses=ERROR_RESPONSES,
              dependencies=[Depends(check_key)], openapi_extra=batch_body, tags=["predict"],
              summary="Emotions of the faces in several images (multipart field 'files')")
    async def predict_batch(request: Request):
        t0 = time.perf_counter()
        files = await _images_from_request(request, batch=True)
        if len(files) > max_files:
            raise ApiError(413, "too_many_files", f"{len(files)} files; at most {max_files} per request")
        items: list[dict] = []
        good: list[tuple[int, np.ndarray, float]] = []
        # A bad image is reported in its own slot; the others still get answers.
        for i, (name, data) in enumerate(files):
            item = {"index": i, "filename": name, "faces": [], "image": None, "error": None}
            try:
                arr, w, h, scale = await run_in_threadpool(decode_upload, data, max_pixels, max_side)
                item["image"] = {"width": w, "height": h}
                good.append((i, arr, scale))
            except ApiError as e:
                item["error"] = {"error": e.code, "detail": e.detail}
            items.append(item)
        t1 = time.perf_counter()
        results = await _run([arr for _, arr, _ in good]) if good else []
        for (i, _, scale), res in zip(good, results):
            items[i]["faces"] = [_face_dict(f, scale) for f in res.faces]
        return {
            "results": items,
            "errors": sum(1 for it in items if it["error"]),
            "model": {"name": info.name, "version": info.version},
            "timing_ms": {
                "decode": (t1 - t0) * 1000.0,
                "queue": max((r.queue_ms for r in results), default=0.0),
                "inference": max((r.inference_ms for r in results), default=0.0),
                "total": (time.perf_counter() - t0) * 1000.0,
            },
        }

    @app.get("/v1/models", response_model=ModelsResponse, dependencies=[Depends(check_key)], tags=["info"],
             responses={401: ERROR_RESPONSES[401]})
    async def models():
        return {"models": [info.model_dump()], "default": info.name}

    @app.get("/healthz", response_model=HealthResponse, tags=["info"])
    async def healthz():
        s = batcher.stats
        return {
            "status": "ok", "model": info.name, "version": info.version, "auth": expected is not None,
            "uptime_s": time.time() - started, "pending": batcher.pending,
            "images": s.images, "batches": s.batches, "mean_batch": s.mean_batch,
            "largest_batch": s.largest_batch, "max_upload_mb": max_upload_mb,
        }

    static_dir = resources.files("ferkit.serve") / "static"

    @app.get("/", include_in_schema=False)
    async def page():
        # The page loads only same-origin files; the CSP makes a stray CDN link fail loudly.
        return FileResponse(os.fspath(static_dir / "index.html"), media_type="text/html",
                            headers={"Content-Security-Policy": _PAGE_CSP, "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=os.fspath(static_dir)), name="static")
    return app


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` (used by ``ferkit serve --workers N``).

    Reads ``FERKIT_SERVE_MODEL``, ``FERKIT_SERVE_BACKEND``, ``FERKIT_SERVE_DETECTOR``,
    ``FERKIT_SERVE_MAX_UPLOAD_MB``, ``FERKIT_SERVE_BATCH_WINDOW_MS``,
    ``FERKIT_SERVE_MAX_BATCH`` and ``FERKIT_API_KEY``.
    """
    env = os.environ
    return create_app(
        model=env.get("FERKIT_SERVE_MODEL", "default"),
        max_upload_mb=float(env.get("FERKIT_SERVE_MAX_UPLOAD_MB", 10)),
        api_key=env.get("FERKIT_API_KEY") or None,
        batch_window_ms=float(env.get("FERKIT_SERVE_BATCH_WINDOW_MS", 5)),
        max_batch=int(env.get("FERKIT_SERVE_MAX_BATCH", 64)),
        backend=env.get("FERKIT_SERVE_BACKEND", "auto"),
        detector=env.get("FERKIT_SERVE_DETECTOR", "default"),
    )
