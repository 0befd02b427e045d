"""The ``ferkit serve`` HTTP service: FastAPI app, upload limits, errors, the browser page.

Routes (all JSON except the pages)::

    GET  /                   browser page (upload or webcam; no CDN assets)
    GET  /healthz            liveness + batching counters (never needs the API key)
    GET  /v1/models          the loaded model: name, version, labels, input
    POST /v1/predict         one image: multipart field ``file`` or the raw body
    POST /v1/predict/batch   several images: multipart field ``files`` (repeated)
    GET  /openapi.json       the OpenAPI schema
    GET  /docs               Swagger UI, served from the ``fastapi-offline`` package
                             (no CDN); absent when that package is not installed

Safety rules, in the order they are checked: API key (401), ``Content-Length``
over the limit (413, before a byte is read), the body counted while it streams
in (413), the body's content type (415), the image's magic bytes (415), the
pixel count in the header before decoding (422, decompression bomb), the decode
itself (422). Uploads are held in memory only, never spooled to disk. Decoding
waits for room in a pixel budget shared by all requests (``serve/uploads.py``).
Any other failure answers 500 with a generic body and a reference; the detail
goes to the ``ferkit.serve`` log, never to the client.
"""

from __future__ import annotations

import hmac
import math
import os
import time
from contextlib import asynccontextmanager
from importlib import resources

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ferkit import __version__
from ferkit.errors import FerkitError
from ferkit.serve.batcher import MicroBatcher, QueueFullError
from ferkit.serve.errors import Guard, error_response, internal_error
from ferkit.serve.schemas import (
    ERROR_RESPONSES,
    BatchResponse,
    HealthResponse,
    ModelInfo,
    ModelsResponse,
    PredictResponse,
    batch_request_body,
    face_record,
    upload_request_body,
)
from ferkit.serve.uploads import (
    ApiError,
    PixelBudget,
    decode_upload,
    images_from_request,
    inspect_upload,
    release_memory,
    sniff_format,
)
from ferkit.values import env_number

__all__ = ["ApiError", "app_from_env", "create_app", "sniff_format"]


# Pixels beyond which an image is refused before decoding (a 50 MP photo passes).
DEFAULT_MAX_PIXELS = 50_000_000
# Images are shrunk to this longest side before queueing: bounds the memory of
# queued images; face boxes are scaled back to the original pixels.
DEFAULT_MAX_SIDE = 2048

_PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
    "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
def _swagger_assets():
    """The folder of Swagger UI files shipped by ``fastapi-offline``, or None."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = resources.files(fastapi_offline) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _backend_name(recognizer) -> str | None:
    b = getattr(recognizer, "backend", None)
    return b if isinstance(b, str) else getattr(b, "name", None)


def _load_recognizer(model: str, backend: str, detector: str, min_face: int | None = None):
    from ferkit.inference.recognizer import Recognizer

    return Recognizer.from_pretrained(model, backend=backend, detector=detector, min_face=min_face)


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
    decode_pixels: int | None = None,
    queue_pixels: int | None = None,
    min_face: int | None = None,
) -> FastAPI:
    """Build the service around a Recognizer.

    Args:
        recognizer: anything with ``predict_batch(images) -> list[list[Face]]``,
            ``labels``, ``model_name`` (architecture) and ``version``, optionally ``name``
            and ``detector``; loaded from ``model`` when None.
        model: ``"default"`` (the shipped model) or a checkpoint path.
        max_upload_mb: largest image accepted (413 above); a batch body may hold
            ``BATCH_BODY_FACTOR`` times this.
        api_key: when set, ``/v1/*`` needs a matching ``X-API-Key`` header (401 otherwise);
            the OpenAPI schema declares the header only then.
        batch_window_ms: how long the micro-batcher waits for more images.
        max_batch: most images per model call.
        backend, detector: passed to ``Recognizer.from_pretrained`` when loading.
        max_files: most images in one batch request (413 above; the schema's ``maxItems``).
        max_pixels: images with more pixels are refused before decoding (422).
        max_side: longer images are shrunk to this side before the model (boxes are
            reported in original pixels).
        decode_pixels: most pixels being decoded at once across all requests (default
            ``max_pixels``: one image of the largest allowed size, or several smaller
            ones); later uploads wait for room. This bounds decode memory.
        queue_pixels: most pixels of decoded images waiting for or in the model, across
            requests (default ``max_pixels``); later requests wait, holding only their
            compressed upload, and a request needing more runs alone. Detection needs
            far more memory per pixel than the image itself (OpenCV's cascades: about
            1.3 GB for one 49 MP upload searched for 40 px faces), so this bounds it too.
        min_face: smallest face side to find, in pixels of the *uploaded* image (default:
            the recognizer's, 40). An upload whose min_face faces the ``max_side`` shrink
            would make too small for the detector is decoded at full size instead (its
            pixels still count against ``max_pixels`` and ``decode_pixels``).
    """
    if min_face is not None and min_face < 0:
        raise FerkitError(f"min_face must be 0 or more pixels, got {min_face}")
    if recognizer is None:
        recognizer = _load_recognizer(model, backend, detector, min_face)
    file_limit = int(max_upload_mb * 1024 * 1024)
    face_px = min_face if min_face is not None else getattr(recognizer, "min_face", None)
    window = getattr(getattr(recognizer, "detector", None), "min_window", 24)

    def predict_items(items):
        # Items are (array, scale of the max_side shrink): min_face is asked for in the
        # upload's pixels, so each array gets it in its own (shrunk) pixels.
        arrays = [a for a, _ in items]
        if face_px is None or not hasattr(recognizer, "predict_arrays"):
            return recognizer.predict_batch(arrays)
        return recognizer.predict_arrays(arrays, min_face=[round(face_px * s) for _, s in items])

    batcher = MicroBatcher(predict_items, max_batch=max_batch, window_ms=batch_window_ms)
    budget = PixelBudget(decode_pixels or max_pixels)
    queued = PixelBudget(queue_pixels or max_pixels)
    started = time.time()
    arch = str(getattr(recognizer, "model_name", "unknown"))
    det = getattr(getattr(recognizer, "detector", None), "name", None)
    info = ModelInfo(
        name=str(getattr(recognizer, "name", None) or arch),
        version=str(getattr(recognizer, "version", "unknown")),
        architecture=arch,
        labels=[str(x) for x in getattr(recognizer, "labels", [])],
        backend=_backend_name(recognizer),
        detector=det if isinstance(det, str) else None,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.close()
        batcher.shutdown()

    swagger = _swagger_assets()
    app = FastAPI(
        title="ferkit",
        version=__version__,
        description="Facial expression recognition over HTTP. Errors are JSON "
        "`{\"error\": code, \"detail\": message}`.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's own pages load Swagger UI / ReDoc from a CDN
        redoc_url=None,
    )
    app.add_middleware(Guard)
    app.state.recognizer = recognizer
    app.state.batcher = batcher
    app.state.decode_budget = budget
    app.state.queue_budget = queued

    expected = api_key.encode() if api_key else None
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")

    async def check_key(key: str | None = Depends(key_header)) -> None:
        # Constant-time comparison: response timing must not reveal a key prefix.
        if key is None or not hmac.compare_digest(key.encode(), expected):
            raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header",
                           headers={"WWW-Authenticate": "ApiKey"})

    # Without a key there is no key check, and the schema shows no key header or 401.
    guard = [Depends(check_key)] if expected is not None else []
    responses = {k: v for k, v in ERROR_RESPONSES.items() if expected is not None or k != 401}

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        msg = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in errs[:3])
        return error_response(422, "invalid_request", msg or "invalid request")

    async def _decode(data: bytes):
        """Header check, then the decode once the pixel budget has room for this image."""
        _, w, h = inspect_upload(data, max_pixels)
        side = max_side
        if face_px and face_px / math.ceil(max(w, h, 1) / max_side) < window:
            # Shrunk to max_side (by a whole factor, see uploads._decode_small), a min_face
            # face would fall under the detector's window: decode at full size instead (the
            # detector then shrinks it only as far as min_face allows).
            side = max(w, h)
        async with budget.hold(w * h):
            try:
                return await run_in_threadpool(decode_upload, data, max_pixels, side)
            finally:
                await run_in_threadpool(release_memory, w * h)

    async def _run(images: list[tuple[np.ndarray, float]], return_exceptions: bool = False):
        """Faces of (array, shrink scale) items, through the micro-batcher."""
        # Decoded images wait for room before they queue: the model may be slower than
        # decoding, and a queue of 2048 px images grows by 12 MB per upload.
        pixels = sum(int(a.shape[0]) * int(a.shape[1]) for a, _ in images)
        try:
            async with queued.hold(pixels):
                try:
                    results = await batcher.submit_many(images, return_exceptions=return_exceptions)
                finally:
                    # Detection on a large image allocates in the model threads' arenas too.
                    await run_in_threadpool(release_memory, pixels)
        except QueueFullError as e:
            raise ApiError(503, "busy", str(e), headers={"Retry-After": "1"}) from None
        busy = next((r for r in results if isinstance(r, QueueFullError)), None)
        if busy is not None:
            raise ApiError(503, "busy", str(busy), headers={"Retry-After": "1"})
        return results

    @app.post("/v1/predict", response_model=PredictResponse, responses=responses,
              dependencies=guard, openapi_extra=upload_request_body(), tags=["predict"],
              summary="Emotions of the faces in one image")
    async def predict(request: Request):
        t0 = time.perf_counter()
        ((_, data),) = await images_from_request(request, False, file_limit)
        arr, w, h, scale = await _decode(data)
        t1 = time.perf_counter()
        (res,) = await _run([(arr, scale)])
        return {
            "faces": [face_record(f, scale) for f in res.faces],
            "image": {"width": w, "height": h},
            "model": {"name": info.name, "version": info.version},
            "timing_ms": {
                "decode": (t1 - t0) * 1000.0, "queue": res.queue_ms, "inference": res.inference_ms,
                "total": (time.perf_counter() - t0) * 1000.0,
            },
            "batch_size": res.batch_size,
        }

    @app.post("/v1/predict/batch", response_model=BatchResponse, responses=responses,
              dependencies=guard, openapi_extra=batch_request_body(max_files), tags=["predict"],
              summary=f"Emotions of the faces in up to {max_files} images (multipart field 'files')")
    async def predict_batch(request: Request):
        t0 = time.perf_counter()
        files = await images_from_request(request, True, file_limit)
        if len(files) > max_files:
            raise ApiError(413, "too_many_files", f"{len(files)} files; at most {max_files} per request")
        items: list[dict] = []
        good: list[tuple[int, np.ndarray, float]] = []
        # A bad image is reported in its own slot; the others still get answers.
        for i, (name, data) in enumerate(files):
            item = {"index": i, "filename": name, "faces": [], "image": None, "error": None}
            try:
                arr, w, h, scale = await _decode(data)
                item["image"] = {"width": w, "height": h}
                good.append((i, arr, scale))
            except ApiError as e:
                item["error"] = {"error": e.code, "detail": e.detail}
            except Exception as e:  # noqa: BLE001 - one slot's failure is that slot's answer
                code, detail = internal_error(f"batch slot {i} decode", e)
                item["error"] = {"error": code, "detail": detail}
            items.append(item)
        t1 = time.perf_counter()
        results = await _run([(arr, s) for _, arr, s in good], return_exceptions=True) if good else []
        for (i, _, scale), res in zip(good, results):
            if isinstance(res, BaseException):  # the model failed on this image (alone)
                code, detail = internal_error(f"batch slot {i} model", res)
                items[i]["error"] = {"error": code, "detail": detail}
            else:
                items[i]["faces"] = [face_record(f, scale) for f in res.faces]
        results = [r for r in results if not isinstance(r, BaseException)]
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

    @app.get("/v1/models", response_model=ModelsResponse, dependencies=guard, tags=["info"],
             responses={k: v for k, v in responses.items() if k == 401})
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
    if swagger is not None:
        from fastapi.openapi.docs import get_swagger_ui_html

        @app.get("/docs", include_in_schema=False)
        async def docs(request: Request):
            root = request.scope.get("root_path", "")
            return get_swagger_ui_html(
                openapi_url=f"{root}{app.openapi_url}", title="ferkit API",
                swagger_js_url=f"{root}/docs-assets/swagger-ui-bundle.js",
                swagger_css_url=f"{root}/docs-assets/swagger-ui.css",
                swagger_favicon_url=f"{root}/docs-assets/favicon.png",
            )

        app.mount("/docs-assets", StaticFiles(directory=os.fspath(swagger)), name="docs-assets")
    return app


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` (used by ``ferkit serve --workers N``).

    Reads ``FERKIT_SERVE_MODEL``, ``FERKIT_SERVE_BACKEND``, ``FERKIT_SERVE_DETECTOR``,
    ``FERKIT_SERVE_MAX_UPLOAD_MB``, ``FERKIT_SERVE_BATCH_WINDOW_MS``,
    ``FERKIT_SERVE_MAX_BATCH``, ``FERKIT_SERVE_DECODE_MPIX``, ``FERKIT_SERVE_QUEUE_MPIX``,
    ``FERKIT_SERVE_MIN_FACE`` and ``FERKIT_API_KEY``.
    """
    env = os.environ

    def number(name: str, default, kind=float, low: float = 0.0, low_open: bool = True):
        return env_number(env, name, default, kind, low, low_open)

    mpix = number("FERKIT_SERVE_DECODE_MPIX", DEFAULT_MAX_PIXELS / 1e6)
    queue = number("FERKIT_SERVE_QUEUE_MPIX", None)
    return create_app(
        model=env.get("FERKIT_SERVE_MODEL", "default"),
        max_upload_mb=number("FERKIT_SERVE_MAX_UPLOAD_MB", 10.0),
        api_key=env.get("FERKIT_API_KEY") or None,
        batch_window_ms=number("FERKIT_SERVE_BATCH_WINDOW_MS", 5.0, low_open=False),
        max_batch=number("FERKIT_SERVE_MAX_BATCH", 64, int, low=1, low_open=False),
        backend=env.get("FERKIT_SERVE_BACKEND", "auto"),
        detector=env.get("FERKIT_SERVE_DETECTOR", "default"),
        decode_pixels=int(mpix * 1e6),
        queue_pixels=int(queue * 1e6) if queue is not None else None,
        min_face=number("FERKIT_SERVE_MIN_FACE", None, int, low_open=False),
    )
