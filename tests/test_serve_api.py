"""The HTTP service through FastAPI's TestClient: routes, limits, every error code, batching."""

from __future__ import annotations

import asyncio
import io
import re
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from ferkit.inference.recognizer import onnx_available
from ferkit.serve.app import create_app, sniff_format
from ferkit.serve.batcher import MicroBatcher, QueueFullError

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
STATIC = Path(__file__).resolve().parents[1] / "src" / "ferkit" / "serve" / "static"


class FakeFace:
    def __init__(self, box):
        self.box = box

    def to_dict(self):
        scores = {k: 0.05 for k in LABELS}
        scores["happy"] = 0.7
        return {"box": list(self.box), "label": "happy", "confidence": 0.7, "scores": scores}


class FakeRecognizer:
    """Same interface as ferkit's Recognizer: one face covering the middle of every image."""

    labels = LABELS
    model_name = "fake-cnn"
    version = "9.9"

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls: list[int] = []
        self.shapes: list[tuple] = []
        self.lock = threading.Lock()

    def predict_batch(self, images):
        with self.lock:
            self.calls.append(len(images))
            self.shapes += [im.shape for im in images]
        time.sleep(self.delay)
        return [[FakeFace((im.shape[1] // 4, im.shape[0] // 4, im.shape[1] // 2, im.shape[0] // 2))]
                for im in images]


def encode(arr_or_size=(64, 48), fmt="PNG", mode="RGB") -> bytes:
    im = Image.new(mode, arr_or_size, 128) if isinstance(arr_or_size, tuple) else Image.fromarray(arr_or_size)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression-bomb shape)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def fake():
    return FakeRecognizer()


@pytest.fixture
def client(fake):
    with TestClient(create_app(fake, max_upload_mb=1)) as c:
        yield c


def assert_error(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == code and body["detail"]


# --- happy paths -------------------------------------------------------------------------------


def test_predict_multipart(client, fake):
    r = client.post("/v1/predict", files={"file": ("face.png", encode((64, 48)), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == {"width": 64, "height": 48}
    assert body["model"] == {"name": "fake-cnn", "version": "9.9"}
    (face,) = body["faces"]
    assert face["box"] == [16, 12, 32, 24] and face["label"] == "happy"
    assert abs(sum(face["scores"].values()) - 1.0) < 1e-6
    assert set(body["timing_ms"]) == {"decode", "queue", "inference", "total"}
    assert body["timing_ms"]["total"] >= body["timing_ms"]["inference"] >= 0
    assert fake.shapes == [(48, 64, 3)]  # the model always gets RGB uint8


@pytest.mark.parametrize("fmt,mode", [("JPEG", "RGB"), ("PNG", "L"), ("PNG", "RGBA"), ("BMP", "RGB"),
                                      ("GIF", "P"), ("WEBP", "RGB"), ("TIFF", "RGB"), ("PPM", "RGB")])
def test_predict_raw_body_formats(client, fake, fmt, mode):
    data = encode((40, 30), fmt, mode)
    assert sniff_format(data) is not None
    r = client.post("/v1/predict", content=data, headers={"Content-Type": f"image/{fmt.lower()}"})
    assert r.status_code == 200, r.text
    assert r.json()["image"] == {"width": 40, "height": 30}
    assert fake.shapes[-1] == (30, 40, 3)


def test_octet_stream_and_missing_content_type(client):
    data = encode()
    r = client.post("/v1/predict", content=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200
    r = client.post("/v1/predict", content=data)
    assert r.status_code == 200


def test_large_image_shrunk_boxes_in_original_pixels(fake):
    with TestClient(create_app(fake, max_side=100)) as c:
        r = c.post("/v1/predict", files={"file": ("big.png", encode((400, 200)), "image/png")})
    assert r.status_code == 200
    assert fake.shapes == [(50, 100, 3)]
    assert r.json()["image"] == {"width": 400, "height": 200}
    assert r.json()["faces"][0]["box"] == [100, 48, 200, 100]


def test_batch_reports_bad_items_and_carries_on(client, fake):
    files = [
        ("files", ("a.png", encode((64, 48)), "image/png")),
        ("files", ("notes.txt", b"just text", "text/plain")),
        ("files", ("broken.png", encode()[:60], "image/png")),
        ("files", ("b.jpg", encode((32, 32), "JPEG"), "image/jpeg")),
    ]
    r = client.post("/v1/predict/batch", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["errors"] == 2
    res = body["results"]
    assert [x["filename"] for x in res] == ["a.png", "notes.txt", "broken.png", "b.jpg"]
    assert res[0]["image"] == {"width": 64, "height": 48} and len(res[0]["faces"]) == 1
    assert res[1]["error"]["error"] == "unsupported_media_type" and res[1]["faces"] == []
    assert res[2]["error"]["error"] == "corrupt_image"
    assert res[3]["faces"][0]["box"] == [8, 8, 16, 16]
    # Both good images of one request share one model call.
    assert fake.calls == [2]


def test_models_and_healthz(client):
    m = client.get("/v1/models").json()
    assert m["default"] == "fake-cnn"
    assert m["models"][0]["labels"] == LABELS and m["models"][0]["version"] == "9.9"
    client.post("/v1/predict", content=encode(), headers={"Content-Type": "image/png"})
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["auth"] is False and h["images"] == 1 and h["batches"] == 1


def test_openapi_documents_routes(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/predict/batch", "/v1/models", "/healthz"} <= set(spec["paths"])
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "application/octet-stream" in body
    assert {"413", "415", "422"} <= set(spec["paths"]["/v1/predict"]["post"]["responses"])
    assert client.get("/docs").status_code == 200


# --- error codes -------------------------------------------------------------------------------


def test_413_content_length_over_limit(client):
    big = b"\xff\xd8\xff" + b"\0" * (1024 * 1024 + 10)
    assert_error(client.post("/v1/predict", content=big, headers={"Content-Type": "image/jpeg"}), 413, "too_large")


def test_413_counted_while_streaming_without_content_length(client):
    # A chunked body has no Content-Length: the limit must be enforced while reading.
    def chunks():
        yield b"\x89PNG\r\n\x1a\n"
        for _ in range(40):
            yield b"\0" * 65536

    r = client.post("/v1/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert_error(r, 413, "too_large")


def test_413_multipart_file_over_limit(client):
    r = client.post("/v1/predict", files={"file": ("x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (1024 * 1024 + 1))})
    assert_error(r, 413, "too_large")


def test_413_too_many_files(fake):
    with TestClient(create_app(fake, max_files=2)) as c:
        files = [("files", (f"{i}.png", encode(), "image/png")) for i in range(3)]
        assert_error(c.post("/v1/predict/batch", files=files), 413, "too_many_files")


@pytest.mark.parametrize("ctype,data", [("text/plain", b"hello"), ("application/json", b'{"a": 1}'),
                                        ("application/x-www-form-urlencoded", b"a=1")])
def test_415_unsupported_content_type(client, ctype, data):
    assert_error(client.post("/v1/predict", content=data, headers={"Content-Type": ctype}),
                 415, "unsupported_media_type")


def test_415_non_image_bytes(client):
    r = client.post("/v1/predict", files={"file": ("a.pdf", b"%PDF-1.4 not an image", "application/pdf")})
    assert_error(r, 415, "unsupported_media_type")
    r = client.post("/v1/predict", content=b"GIF-ish but no", headers={"Content-Type": "image/gif"})
    assert_error(r, 415, "unsupported_media_type")


def test_415_batch_must_be_multipart(client):
    assert_error(client.post("/v1/predict/batch", content=encode(), headers={"Content-Type": "image/png"}),
                 415, "unsupported_media_type")


@pytest.mark.parametrize("data", [encode()[:50], b"\xff\xd8\xff" + b"garbage" * 20,
                                  encode((64, 64), "JPEG")[:300]])
def test_422_corrupt_image(client, data):
    assert_error(client.post("/v1/predict", files={"file": ("x", data, "image/jpeg")}), 422, "corrupt_image")


def test_422_empty_and_missing(client):
    assert_error(client.post("/v1/predict", content=b"", headers={"Content-Type": "image/png"}), 422, "missing_file")
    assert_error(client.post("/v1/predict", files={"other": ("a.png", encode(), "image/png")}), 422, "missing_file")
    assert_error(client.post("/v1/predict", files={"file": ("a.png", b"", "image/png")}), 422, "empty_image")


def test_422_decompression_bomb_refused_before_decoding(client, fake):
    # 100k x 100k pixels declared in a ~100-byte file: refused from the header alone.
    bomb = png_header_only(100_000, 100_000)
    assert len(bomb) < 200
    assert_error(client.post("/v1/predict", content=bomb, headers={"Content-Type": "image/png"}),
                 422, "decompression_bomb")
    assert_error(client.post("/v1/predict", content=png_header_only(8000, 8000),
                             headers={"Content-Type": "image/png"}), 422, "decompression_bomb")
    assert fake.calls == []


def test_400_malformed_multipart(client):
    r = client.post("/v1/predict", content=b"--zzz\r\nnonsense",
                    headers={"Content-Type": "multipart/form-data; boundary=abc"})
    assert r.status_code in (400, 422) and "error" in r.json()
    r = client.post("/v1/predict", content=b"x", headers={"Content-Type": "multipart/form-data"})
    assert_error(r, 400, "bad_request")


def test_404_and_405_are_json(client):
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert_error(client.get("/v1/predict"), 405, "method_not_allowed")


def test_api_key(fake, monkeypatch):
    with TestClient(create_app(fake, api_key="s3cret")) as c:
        data = encode()
        assert_error(c.post("/v1/predict", content=data, headers={"Content-Type": "image/png"}), 401, "unauthorized")
        r = c.post("/v1/predict", content=data, headers={"Content-Type": "image/png", "X-API-Key": "s3cre"})
        assert_error(r, 401, "unauthorized")
        assert_error(c.get("/v1/models"), 401, "unauthorized")
        # The key is checked before the body is read: no model call happened.
        assert fake.calls == []
        r = c.post("/v1/predict", content=data, headers={"Content-Type": "image/png", "X-API-Key": "s3cret"})
        assert r.status_code == 200
        assert c.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        # Probes and the page stay open.
        assert c.get("/healthz").json()["auth"] is True
        assert c.get("/").status_code == 200
    # The comparison is constant-time.
    import ferkit.serve.app as app_mod

    seen = []
    monkeypatch.setattr(app_mod.hmac, "compare_digest", lambda a, b: seen.append((a, b)) or a == b)
    with TestClient(create_app(fake, api_key="k")) as c:
        c.get("/v1/models", headers={"X-API-Key": "nope"})
    assert seen == [(b"nope", b"k")]


def test_uploads_never_touch_disk(fake, monkeypatch):
    import tempfile

    import starlette.formparsers

    def forbidden(*a, **k):
        raise AssertionError("upload written to a temporary file")

    for mod in (tempfile, starlette.formparsers):
        for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, forbidden)
    noise = np.random.default_rng(0).integers(0, 255, (900, 900, 3), dtype=np.uint8)
    data = encode(noise)
    assert len(data) > 2 * 1024 * 1024  # well above Starlette's 1 MB spool threshold
    with TestClient(create_app(fake, max_upload_mb=5)) as c:
        r = c.post("/v1/predict", files={"file": ("noise.png", data, "image/png")})
    assert r.status_code == 200, r.text


# --- page --------------------------------------------------------------------------------------


def test_page_served_without_external_urls(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    assert 'id="canvas"' in html and 'id="faces"' in html and 'id="chart"' in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    for ref in assets:
        assert not re.match(r"^(https?:)?//", ref), ref
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", r.text), name
    js = client.get("/static/app.js").text
    assert "getUserMedia" in js and "v1/predict" in js
    assert {p.name for p in STATIC.iterdir()} >= {"index.html", "app.js", "style.css"}


# --- micro-batching ----------------------------------------------------------------------------


def test_concurrent_requests_share_model_calls():
    httpx = pytest.importorskip("httpx")
    fake = FakeRecognizer(delay=0.05)
    app = create_app(fake, batch_window_ms=20, max_batch=64)
    data = encode()

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = await asyncio.gather(*(c.post("/v1/predict", content=data,
                                               headers={"Content-Type": "image/png"}) for _ in range(16)))
        await app.state.batcher.close()
        return rs

    rs = asyncio.run(go())
    assert all(r.status_code == 200 for r in rs)
    assert sum(fake.calls) == 16
    assert len(fake.calls) < 8, fake.calls  # grouped, not one call per request
    assert max(r.json()["batch_size"] for r in rs) > 1


def test_batcher_respects_max_batch_and_propagates_errors():
    def predict(images):
        if any(im == "bad" for im in images):
            raise ValueError("boom")
        return [[im] for im in images]

    async def go():
        b = MicroBatcher(predict, max_batch=3, window_ms=10)
        ok = await b.submit_many(list(range(7)))
        assert [r.faces for r in ok] == [[i] for i in range(7)]
        assert b.stats.largest_batch == 3 and b.stats.images == 7
        with pytest.raises(ValueError, match="boom"):
            await b.submit("bad")
        assert (await b.submit(42)).faces == [42]  # the worker survived the failure
        await b.close()
        b.shutdown()

    asyncio.run(go())


def test_batcher_refuses_when_queue_full():
    gate = threading.Event()

    def slow(images):
        gate.wait(5)
        return [[] for _ in images]

    async def go():
        b = MicroBatcher(slow, max_batch=1, window_ms=0, max_queue=2)
        tasks = [asyncio.create_task(b.submit(0))]
        await asyncio.sleep(0.05)  # the worker took it and is blocked in the model
        tasks += [asyncio.create_task(b.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0.05)  # two queued: the queue is full
        with pytest.raises(QueueFullError):
            await b.submit(99)
        gate.set()
        await asyncio.gather(*tasks)
        await b.close()
        b.shutdown()

    asyncio.run(go())


# --- with the real Recognizer and a slim model (never the default weights) ----------------------


@pytest.fixture(scope="module")
def slim_model(tmp_path_factory):
    pytest.importorskip("torch", reason="writing a slim model needs the train extra (PyTorch)")
    from ferkit.labels import FER7
    from ferkit.models.checkpoint import save_slim
    from ferkit.models.registry import create_model

    path = tmp_path_factory.mktemp("serve-model") / "tiny.pt"
    save_slim(create_model("boulis-baseline"), {"model": "boulis-baseline", "labels": list(FER7)}, path)
    return path


def test_real_recognizer_end_to_end(slim_model):
    from ferkit.labels import FER7

    app = create_app(model=str(slim_model), detector="none")
    with TestClient(app) as c:
        models = c.get("/v1/models").json()["models"][0]
        assert models["name"] == str(slim_model) and models["architecture"] == "boulis-baseline"
        assert models["labels"] == list(FER7) and models["detector"] == "none"
        assert models["backend"] == ("onnx" if onnx_available() else "torch")  # backend "auto"
        face = np.random.default_rng(1).integers(0, 255, (96, 80), dtype=np.uint8)
        r = c.post("/v1/predict", files={"file": ("f.png", encode(face), "image/png")})
        assert r.status_code == 200, r.text
        (f,) = r.json()["faces"]  # detector 'none': the whole image is the face
        assert f["box"] == [0, 0, 80, 96] and f["label"] in FER7
        assert set(f["scores"]) == set(FER7) and abs(sum(f["scores"].values()) - 1) < 1e-3
        assert f["confidence"] == pytest.approx(max(f["scores"].values()), abs=1e-6)
        files = [("files", (f"{i}.png", encode(face), "image/png")) for i in range(3)]
        body = c.post("/v1/predict/batch", files=files).json()
        assert body["errors"] == 0 and all(len(x["faces"]) == 1 for x in body["results"])
        # Same image, same scores: batching does not change the answer.
        assert body["results"][0]["faces"][0]["scores"] == pytest.approx(f["scores"], abs=1e-4)


def test_cli_serve_help_and_bad_model(capsys, tmp_path):
    from ferkit.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--model", "--workers", "--max-upload-mb", "--api-key", "--backend"):
        assert flag in out
    assert main(["serve", "--model", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ferkit: error:")


def test_app_serves_again_after_lifespan_restart(fake):
    # Test clients and schemathesis run the lifespan once per client; the batcher's
    # model thread must come back after a shutdown.
    app = create_app(fake)
    for _ in range(2):
        with TestClient(app) as c:
            assert c.post("/v1/predict", content=encode(), headers={"Content-Type": "image/png"}).status_code == 200
    assert fake.calls == [1, 1]
