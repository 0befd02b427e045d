"""The service under hostile or odd input: degenerate images, extra parts, failing models,
decode memory, headers, an offline /docs page and a schema that matches behaviour."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient
from test_serve_api import FakeRecognizer, assert_error, encode

from ferkit.serve import app as app_module
from ferkit.serve.app import create_app
from ferkit.serve.uploads import PixelBudget, decode_upload


class PickyRecognizer(FakeRecognizer):
    """Fails on any image 13 pixels wide, alone or in a batch, with a revealing message."""

    def predict_batch(self, images):
        if any(im.shape[1] == 13 for im in images):
            raise RuntimeError("boom in /usr/lib/python3/site-packages/secret_module.py")
        return super().predict_batch(images)


def _post_png(c, data, **kw):
    return c.post("/v1/predict", content=data, headers={"Content-Type": "image/png"}, **kw)


@pytest.mark.parametrize("size", [(1, 5000), (5000, 1), (3, 4097)])
def test_thin_strips_are_answered_not_500(size):
    fake = FakeRecognizer()
    with TestClient(create_app(fake)) as c:
        r = _post_png(c, encode(size))
        assert r.status_code == 200, r.text  # was 500: a resize to width 0
        assert r.json()["image"] == {"width": size[0], "height": size[1]}
        h, w, _ = fake.shapes[-1]
        assert max(h, w) <= 2048 and min(h, w) >= 1
        files = [("files", ("strip.png", encode(size), "image/png")),
                 ("files", ("ok.png", encode((64, 48)), "image/png"))]
        body = c.post("/v1/predict/batch", files=files).json()
        assert body["errors"] == 0 and len(body["results"][1]["faces"]) == 1


def test_two_file_parts_in_single_predict_is_422():
    with TestClient(create_app(FakeRecognizer())) as c:
        files = [("file", ("a.png", encode(), "image/png")), ("file", ("b.png", encode(), "image/png"))]
        r = c.post("/v1/predict", files=files)
    assert_error(r, 422, "too_many_files")  # was 500 (an unpacking error)
    assert "/v1/predict/batch" in r.json()["detail"]


def test_500_bodies_are_generic_and_the_detail_is_logged(caplog):
    with TestClient(create_app(PickyRecognizer()), raise_server_exceptions=False) as c, \
            caplog.at_level(logging.ERROR, logger="ferkit.serve"):
        r = _post_png(c, encode((13, 20)))
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "internal_error" and set(body) == {"error", "detail"}
    assert "secret" not in r.text and "/usr/" not in r.text and "RuntimeError" not in r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    ref = body["detail"].split("reference ")[1]
    logged = "\n".join(rec.getMessage() + str(rec.exc_info) for rec in caplog.records)
    assert ref in logged and "secret_module" in logged  # the operator gets the detail


def test_one_failing_image_never_fails_the_batch():
    fake = PickyRecognizer()
    with TestClient(create_app(fake)) as c:
        files = [("files", (f"{i}.png", encode(size), "image/png"))
                 for i, size in enumerate([(40, 30), (13, 20), (50, 20)])]
        r = c.post("/v1/predict/batch", files=files)
    assert r.status_code == 200, r.text  # was 500 for the whole batch
    body = r.json()
    assert body["errors"] == 1
    bad = body["results"][1]
    assert bad["error"]["error"] == "internal_error" and "secret" not in r.text
    assert [len(x["faces"]) for x in body["results"]] == [1, 0, 1]


def test_concurrent_requests_do_not_fail_each_other():
    # Images of different requests share model calls: a bad one must not sink the others.
    fake = PickyRecognizer(delay=0.02)
    app = create_app(fake, batch_window_ms=50)

    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            sizes = [(40, 30), (13, 20), (64, 48), (50, 20)]
            rs = await asyncio.gather(*(c.post("/v1/predict", content=encode(s),
                                               headers={"Content-Type": "image/png"}) for s in sizes))
        await app.state.batcher.close()
        return [r.status_code for r in rs]

    assert asyncio.run(go()) == [200, 500, 200, 200]


def test_every_response_says_nosniff():
    with TestClient(create_app(FakeRecognizer(), max_upload_mb=0.001)) as c:
        for r in (_post_png(c, encode()), c.get("/healthz"), c.get("/nope"), c.get("/openapi.json"),
                  c.get("/"), c.get("/static/app.js"), _post_png(c, b"x" * 5000)):
            assert r.headers.get("x-content-type-options") == "nosniff", (r.url, r.status_code)


def test_schema_declares_the_key_only_when_there_is_one_and_the_file_limit():
    for key in (None, "k"):
        with TestClient(create_app(FakeRecognizer(), api_key=key, max_files=7)) as c:
            spec = c.get("/openapi.json").json()
        has_scheme = "APIKeyHeader" in spec.get("components", {}).get("securitySchemes", {})
        post = spec["paths"]["/v1/predict"]["post"]
        assert has_scheme == (key is not None) and ("security" in post) == (key is not None)
        assert ("401" in post["responses"]) == (key is not None)
        body = spec["paths"]["/v1/predict/batch"]["post"]["requestBody"]["content"]
        files = body["multipart/form-data"]["schema"]["properties"]["files"]
        assert files["maxItems"] == 7 and files["minItems"] == 1


def test_docs_page_works_offline(monkeypatch):
    pytest.importorskip("fastapi_offline", reason="the serve extra's fastapi-offline is not installed")
    with TestClient(create_app(FakeRecognizer())) as c:
        page = c.get("/docs")
        assert page.status_code == 200
        assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
        js = c.get("/docs-assets/swagger-ui-bundle.js")
        assert js.status_code == 200 and len(js.content) > 500_000
        # Swagger UI 5 renders OpenAPI 3.1, the version FastAPI writes.
        assert c.get("/openapi.json").json()["openapi"].startswith("3.1")
        assert b'"5.' in js.content
        assert c.get("/redoc").status_code == 404  # FastAPI's CDN-backed ReDoc page is gone
    monkeypatch.setattr(app_module, "_swagger_assets", lambda: None)
    with TestClient(create_app(FakeRecognizer())) as c:
        assert c.get("/docs").status_code == 404 and c.get("/openapi.json").status_code == 200


def test_decoding_waits_for_the_pixel_budget(monkeypatch):
    active, peak, lock = [0], [0], threading.Lock()
    real = app_module.decode_upload

    def counting(*a, **kw):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.1)
        try:
            return real(*a, **kw)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(app_module, "decode_upload", counting)
    app = create_app(FakeRecognizer(), decode_pixels=2 * 100 * 100)

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = await asyncio.gather(*(c.post("/v1/predict", content=encode((100, 100)),
                                               headers={"Content-Type": "image/png"}) for _ in range(6)))
        await app.state.batcher.close()
        return [r.status_code for r in rs]

    assert asyncio.run(go()) == [200] * 6
    assert peak[0] == 2  # was 6: every upload decoded at once


def test_pixel_budget_is_fair_and_lets_a_huge_image_run_alone():
    async def go():
        budget, order, running = PixelBudget(100), [], []

        async def job(name, n):
            async with budget.hold(n):
                running.append(name)
                order.append((name, list(running)))
                await asyncio.sleep(0.01)
                running.remove(name)

        await asyncio.gather(job("a", 60), job("huge", 500), job("b", 30), job("c", 30))
        return order

    order = asyncio.run(go())
    assert [n for n, _ in order] == ["a", "huge", "b", "c"]  # arrival order
    assert dict(order)["huge"] == ["huge"]  # bigger than the budget: alone
    assert dict(order)["c"] == ["b", "c"]  # small ones share it


@pytest.mark.parametrize("mode", ["RGB", "P", "RGBA", "L"])
def test_banded_shrink_equals_a_whole_image_resize(mode):
    import cv2

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (330, 470, 3), dtype=np.uint8)
    im = Image.fromarray(rgb).convert(mode)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    arr, w, h, scale = decode_upload(buf.getvalue(), 10**9, 64)
    assert (w, h) == (470, 330) and scale == pytest.approx(1 / 8)
    full = np.asarray(im.convert("RGB")) if mode != "L" else np.repeat(np.asarray(im)[:, :, None], 3, 2)
    expect = cv2.resize(full[: 41 * 8, : 58 * 8], (58, 41), interpolation=cv2.INTER_AREA)
    assert arr.shape == (41, 58, 3)
    assert np.abs(arr.astype(int) - expect).max() <= 1


def test_large_jpeg_is_decoded_reduced_with_boxes_in_original_pixels():
    im = Image.new("RGB", (4000, 3000), (200, 120, 90))
    exif = im.getexif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    fake = FakeRecognizer()
    with TestClient(create_app(fake)) as c:
        r = c.post("/v1/predict", content=buf.getvalue(), headers={"Content-Type": "image/jpeg"})
    assert r.json()["image"] == {"width": 3000, "height": 4000}
    h, w, _ = fake.shapes[-1]
    assert h > w and max(h, w) <= 2048  # decoded at 1/2 scale by libjpeg, turned upright
    x, y, bw, bh = r.json()["faces"][0]["box"]  # the fake's box: the middle quarter
    assert abs(x - 750) <= 4 and abs(y - 1000) <= 4 and abs(bw - 1500) <= 4 and abs(bh - 2000) <= 4


@pytest.mark.parametrize("max_side,limit_mb", [(2048, 120), (5000, 200)])
def test_decode_memory_of_a_large_palette_png(tmp_path, max_side, limit_mb):
    # A 25 MP palette PNG is 30 KB; converting it to RGB as a whole took over 400 MB of
    # temporaries (RGBA copies for the transparency composite), shrunk afterwards or not
    # (the service keeps full size when min_face needs it). Measured in a fresh process.
    png = tmp_path / "big.png"
    Image.new("L", (5000, 5000), 128).convert("P").save(png, optimize=True)
    code = (
        "import resource, sys\n"
        "from ferkit.serve.uploads import decode_upload\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"arr, w, h, s = decode_upload(data, 10**8, {max_side})\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, *arr.shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(png)], capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    assert int(out[0]) < limit_mb, f"decode peak grew by {out[0]} MB"
    assert int(out[1]) == (5000 if max_side >= 5000 else 5000 // 3)


def test_full_size_banded_decode_equals_the_whole_image_decode(monkeypatch):
    from ferkit.data.images import decode_image
    from ferkit.serve import uploads

    monkeypatch.setattr(uploads, "_TRIM_ABOVE", 1000)  # take the banded path on a small image
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 255, (300, 170, 3), dtype=np.uint8)).convert("P")
    im.info["transparency"] = 7  # one palette entry transparent: composited on white
    buf = io.BytesIO()
    im.save(buf, "PNG")
    arr, w, h, scale = decode_upload(buf.getvalue(), 10**9, 4096)
    assert (w, h, scale) == (170, 300, 1.0)
    assert np.array_equal(arr, decode_image(buf.getvalue(), channels=3))



def test_decoded_images_wait_for_room_before_queueing():
    # The model is slower than decoding: without a bound every upload's decoded image
    # piles up in the queue (12 MB each at 2048 px).
    inside, peak, lock = [0], [0], threading.Lock()

    class Slow(FakeRecognizer):
        def predict_batch(self, images):
            with lock:
                inside[0] += len(images)
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.05)
            try:
                return super().predict_batch(images)
            finally:
                with lock:
                    inside[0] -= len(images)

    fake = Slow()
    app = create_app(fake, queue_pixels=2 * 100 * 100, batch_window_ms=30)
    real_submit = app.state.batcher.submit_many
    waiting, most = [0], [0]

    async def counting(images, **kw):
        waiting[0] += len(images)
        most[0] = max(most[0], waiting[0])
        try:
            return await real_submit(images, **kw)
        finally:
            waiting[0] -= len(images)

    app.state.batcher.submit_many = counting

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = await asyncio.gather(*(c.post("/v1/predict", content=encode((100, 100)),
                                               headers={"Content-Type": "image/png"}) for _ in range(6)))
        await app.state.batcher.close()
        return [r.status_code for r in rs]

    assert asyncio.run(go()) == [200] * 6
    assert most[0] == 2 and peak[0] <= 2  # was 6 images queued at once
    assert sum(fake.calls) == 6


def test_detectors_give_back_buffers_after_a_large_image(tmp_path):
    # OpenCV cascades keep scratch buffers sized to the largest image they saw: after one
    # 49 MP upload (detected at 4200x4200 for 40 px faces) each detection thread kept
    # 1.3 GB until the server stopped. Measured in a fresh process.
    if not Path("/proc/self/statm").is_file():
        pytest.skip("needs Linux's /proc to read the resident memory")
    code = (
        "import ctypes, os, numpy as np\n"
        "from ferkit.inference.faces import get_detector\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
        "det = get_detector('haar-frontal')\n"
        "det.detect(np.full((64, 64, 3), 128, np.uint8), 40)\n"
        "before = rss()\n"
        "det.detect(np.full((5000, 5000), 128, np.uint8), 40)\n"
        "ctypes.CDLL('libc.so.6').malloc_trim(0)\n"
        "print((rss() - before) // 2**20)\n"
    )
    grew = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300, check=True).stdout.split()[-1])
    assert grew < 100, f"RSS stayed {grew} MB up after the detection"


@pytest.mark.parametrize(("argv", "msg"), [
    (["--max-upload-mb", "nan"], "expected a finite number, got nan"),  # was a ValueError traceback
    (["--queue-mpix", "nan"], "expected a finite number, got nan"),  # likewise
    (["--decode-mpix", "inf"], "expected a finite number, got inf"),
    (["--batch-window-ms", "nan"], "expected a finite number, got nan"),  # served, with a NaN window
    (["--batch-window-ms", "abc"], "expected a number, got 'abc'"),
])
def test_serve_numbers_are_checked_at_parse_time(argv, msg, capsys):
    from ferkit.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "--port", "18765", *argv])
    assert e.value.code == 2 and msg in capsys.readouterr().err


@pytest.mark.parametrize(("var", "value", "msg"), [
    ("FERKIT_SERVE_MAX_UPLOAD_MB", "abc", "must be a finite number > 0"),
    ("FERKIT_SERVE_BATCH_WINDOW_MS", "nan", "must be a finite number >= 0"),
    ("FERKIT_SERVE_MAX_BATCH", "1.5", "must be a whole number >= 1"),
    ("FERKIT_SERVE_QUEUE_MPIX", "inf", "must be a finite number > 0"),
    ("FERKIT_SERVE_DECODE_MPIX", "nan", "must be a finite number > 0"),
    ("FERKIT_SERVE_MIN_FACE", "-1", "must be a whole number >= 0"),
])
def test_serve_worker_settings_from_the_environment_are_one_line_errors(var, value, msg, monkeypatch):
    # ferkit serve --workers N passes its settings to each worker through these variables;
    # float("abc") / int(nan * 1e6) were tracebacks in every worker
    from ferkit.errors import FerkitError
    from ferkit.serve.app import app_from_env

    monkeypatch.setenv(var, value)
    with pytest.raises(FerkitError, match=re.escape(f"{var}={value!r}: {msg}")):
        app_from_env()
