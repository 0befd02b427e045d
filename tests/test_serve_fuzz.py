"""Schemathesis against the service's own OpenAPI schema: no input may cause a 500.

Generated requests (random multipart bodies, raw bodies of every documented
content type, odd headers) go straight into the ASGI app, with and without an
API key. Besides "no server error", every answer must use a documented status
code and match its documented body schema. Bounded: a few examples per route.
"""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis not installed (pip install schemathesis)")
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from ferkit.serve.app import create_app

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Few examples per route keeps the whole file well under a minute on a busy 2-core machine;
# the explicit examples and random generation still reach every error branch.
FUZZ = settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


class FakeFace:
    def __init__(self, box):
        self.box = box

    def to_dict(self):
        return {"box": list(self.box), "label": "neutral", "confidence": 0.5,
                "scores": {k: (0.5 if k == "neutral" else 0.5 / 6) for k in LABELS}}


class CountingRecognizer:
    labels = LABELS
    model_name = "fake-cnn"
    version = "0.1"

    def __init__(self):
        self.images = 0
        self.lock = threading.Lock()

    def predict_batch(self, images):
        with self.lock:
            self.images += len(images)
        return [[FakeFace((0, 0, im.shape[1], im.shape[0]))] for im in images]


open_app = create_app(CountingRecognizer(), max_upload_mb=0.5, batch_window_ms=1)
keyed_app = create_app(CountingRecognizer(), max_upload_mb=0.5, api_key="fuzz-key", batch_window_ms=1)
open_schema = schemathesis.openapi.from_asgi("/openapi.json", open_app)
keyed_schema = schemathesis.openapi.from_asgi("/openapi.json", keyed_app)


@open_schema.parametrize()
@FUZZ
def test_no_server_errors(case):
    case.call_and_validate(checks=CHECKS)


@keyed_schema.parametrize()
@FUZZ
def test_no_server_errors_with_api_key(case):
    response = case.call_and_validate(checks=CHECKS)
    # Without the right key nothing under /v1 gets past the key check (405: a method the
    # route does not have, refused by routing before any dependency runs).
    if case.path.startswith("/v1/") and (case.headers or {}).get("X-API-Key") != "fuzz-key":
        assert response.status_code in (401, 405), response.status_code


def test_schema_covers_every_route():
    ops = {(op.ok().method.upper(), op.ok().path) for op in open_schema.get_all_operations()}
    assert ops >= {("POST", "/v1/predict"), ("POST", "/v1/predict/batch"), ("GET", "/v1/models"),
                   ("GET", "/healthz")}
