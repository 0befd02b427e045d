"""Response bodies of the HTTP service, as Pydantic models (they make the OpenAPI schema).

Kept apart from ``app.py`` so a client author can read the whole wire format on
one screen.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error response: a stable machine code and a human sentence."""

    error: str = Field(description="machine-readable code, e.g. too_large, corrupt_image")
    detail: str = Field(description="one-line explanation")


class FaceOut(BaseModel):
    box: list[int] = Field(description="[x, y, width, height] in pixels of the uploaded image")
    label: str = Field(description="most likely emotion")
    confidence: float = Field(description="probability of that emotion")
    scores: dict[str, float] = Field(description="probability of every emotion the model knows")


class ImageSize(BaseModel):
    width: int
    height: int


class ModelRef(BaseModel):
    name: str = Field(description="what the server loaded: 'default' for the shipped model, else the file")
    version: str = Field(description="identity of the weights (architecture + 8 hex digits of the file's SHA-256)")


class Timing(BaseModel):
    decode: float = Field(description="reading and decoding the upload (ms)")
    queue: float = Field(description="waiting for the micro-batch to start (ms)")
    inference: float = Field(description="the batch's detection + model call (ms)")
    total: float = Field(description="whole request inside the server (ms)")


class PredictResponse(BaseModel):
    faces: list[FaceOut]
    image: ImageSize
    model: ModelRef
    timing_ms: Timing
    batch_size: int = Field(description="images in the model call this one shared")


class BatchItem(BaseModel):
    index: int
    filename: str
    faces: list[FaceOut]
    image: ImageSize | None = Field(description="null when the image could not be decoded")
    error: ErrorBody | None = Field(description="why this image was skipped, else null")


class BatchResponse(BaseModel):
    results: list[BatchItem]
    errors: int = Field(description="number of images skipped")
    model: ModelRef
    timing_ms: Timing


class ModelInfo(BaseModel):
    name: str = Field(description="what the server loaded: 'default' for the shipped model, else the file")
    version: str = Field(description="identity of the weights (architecture + 8 hex digits of the file's SHA-256)")
    architecture: str = Field(description="the network, as named in ferkit's model registry")
    labels: list[str]
    backend: str | None = None
    detector: str | None = Field(None, description="face detector, as named in ferkit predict --detector")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    default: str


class HealthResponse(BaseModel):
    status: str
    model: str
    version: str
    auth: bool = Field(description="whether /v1/* needs X-API-Key")
    uptime_s: float
    pending: int = Field(description="images waiting for the model")
    images: int = Field(description="images run through the model so far")
    batches: int
    mean_batch: float
    largest_batch: int
    max_upload_mb: float


def _err(desc: str) -> dict:
    return {"model": ErrorBody, "description": desc}


ERROR_RESPONSES: dict[int | str, dict] = {
    400: _err("malformed request (bad multipart body, bad Content-Length)"),
    401: _err("missing or wrong X-API-Key (only when the server has a key)"),
    413: _err("upload over the size limit, or too many files"),
    415: _err("not an image, or an unsupported content type"),
    422: _err("corrupt image, empty upload, or decompression bomb"),
    503: _err("too many images waiting; retry after a second"),
    500: _err("a fault of the server: a generic message with a reference; the detail is in "
              "the server log"),
}


def upload_request_body() -> dict:
    """OpenAPI ``requestBody`` of ``/v1/predict``: multipart ``file`` or a raw image body."""
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}}}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }}}


def batch_request_body(max_files: int) -> dict:
    """OpenAPI ``requestBody`` of ``/v1/predict/batch``: 1 to ``max_files`` multipart ``files``."""
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["files"],
            "properties": {"files": {"type": "array", "minItems": 1, "maxItems": max_files,
                                     "items": {"type": "string", "format": "binary"}}}}},
    }}}


def face_record(face: Any, scale: float) -> dict:
    """A face as the API answers it: plain JSON types, its box divided by ``scale`` (the
    shrink applied before the model), so boxes are in the uploaded image's pixels."""
    d = face.to_dict() if hasattr(face, "to_dict") else dict(face)
    d = dict(d)
    if scale != 1.0:
        d["box"] = [round(v / scale) for v in d["box"]]
    d["box"] = [int(v) for v in d["box"]]
    d["confidence"] = float(d["confidence"])
    d["scores"] = {str(k): float(v) for k, v in d["scores"].items()}
    return d
