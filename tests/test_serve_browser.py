"""End-to-end: the browser page in a real headless Chromium (Playwright driving Debian's chromium).

Needs ``pip install playwright`` and a Chromium binary (``apt-get install chromium``);
``playwright install`` (which downloads browsers) is never needed: the system
binary is passed as ``executable_path``. Skips with the reason when either is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")

from ferkit.serve.app import create_app

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
ASSET = Path(__file__).resolve().parents[1] / "src" / "ferkit" / "assets" / "astronaut.png"
HAPPY_RGB = (0xF5, 0x9E, 0x0B)  # COLORS.happy in static/app.js


@pytest.fixture
def shot_dir(tmp_path) -> Path:
    """Where screenshots go: $FERKIT_SCREENSHOTS to keep them for a look, else the test's
    temporary folder (deleted when the test passes: a test run leaves no files behind)."""
    return Path(os.environ["FERKIT_SCREENSHOTS"]) if os.environ.get("FERKIT_SCREENSHOTS") else tmp_path


def chromium_path() -> str | None:
    env = os.environ.get("FERKIT_CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class FakeFace:
    def __init__(self, box):
        self.box = box

    def to_dict(self):
        scores = {k: 0.02 for k in LABELS}
        scores["happy"] = 0.88
        return {"box": list(self.box), "label": "happy", "confidence": 0.88, "scores": scores}


class OneFaceRecognizer:
    """Always one 'happy' face over the central half: makes the drawn box deterministic."""

    labels = LABELS
    model_name = "fake-cnn"
    version = "1.0"

    def predict_batch(self, images):
        return [[FakeFace((im.shape[1] // 4, im.shape[0] // 4, im.shape[1] // 2, im.shape[0] // 2))]
                for im in images]


def photo(tmp_path: Path) -> Path:
    """A photo to upload: the shipped astronaut, scikit-image's bundled copy, or a drawn face."""
    if ASSET.is_file():
        return ASSET
    out = tmp_path / "photo.png"
    try:
        from skimage import data

        Image.fromarray(data.astronaut()).save(out)
    except Exception:  # noqa: BLE001 - scikit-image absent or without its bundled images
        yy, xx = np.mgrid[:400, :400]
        img = np.full((400, 400, 3), 230, np.uint8)
        img[(yy - 200) ** 2 / 150**2 + (xx - 200) ** 2 / 110**2 < 1] = (224, 172, 140)
        Image.fromarray(img).save(out)
    return out


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium binary found (apt-get install chromium, or set FERKIT_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(
                executable_path=exe, headless=True,
                # A fake camera lets the webcam path run in CI; --no-sandbox because CI runs as root.
                args=["--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
            )
        except Exception as e:  # noqa: BLE001 - a broken browser install is an environment problem
            pytest.skip(f"Chromium at {exe} does not start under Playwright: {str(e).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def server():
    """The real app under uvicorn on a free loopback port, in a background thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(OneFaceRecognizer())
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    t = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not srv.started:
        if time.time() > deadline or not t.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)
    sock.close()


def open_page(browser, server):
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    ctx.grant_permissions(["camera"], origin=server)
    page = ctx.new_page()
    requests, problems = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(server + "/")
    page.wait_for_selector("#chart .bar-row")  # model info loaded, chart rows built
    return ctx, page, requests, problems


def canvas_pixel(page, x: int, y: int) -> tuple[int, int, int]:
    return tuple(page.evaluate(
        "([x, y]) => Array.from(document.getElementById('canvas').getContext('2d')"
        ".getImageData(x, y, 1, 1).data.slice(0, 3))", [x, y]))


def near(rgb, ref, tol=30):
    return all(abs(a - b) <= tol for a, b in zip(rgb, ref))


def test_upload_draws_box_label_and_chart(browser, server, tmp_path, shot_dir):
    img_path = photo(tmp_path)
    w, h = Image.open(img_path).size
    ctx, page, requests, problems = open_page(browser, server)
    try:
        assert "fake-cnn" in page.inner_text("#model")
        page.set_input_files("#file", str(img_path))
        item = page.wait_for_selector("#faces li[data-label]", timeout=20_000)
        assert item.get_attribute("data-label") == "happy"
        assert item.get_attribute("data-box") == f"{w // 4},{h // 4},{w // 2},{h // 2}"
        assert "1 face(s)" in page.inner_text("#status")

        # The canvas shows the photo with the box drawn in the label's colour.
        cw, ch = page.evaluate("() => [canvas.width, canvas.height]")
        scale = min(1, 960 / w)
        assert (cw, ch) == (round(w * scale), round(h * scale))
        x0, y0 = round(w // 4 * scale), round(h // 4 * scale)
        bw, bh = round(w // 2 * scale), round(h // 2 * scale)
        assert near(canvas_pixel(page, x0, y0 + bh // 2), HAPPY_RGB)  # left edge
        assert near(canvas_pixel(page, x0 + bw, y0 + bh // 2), HAPPY_RGB)  # right edge
        assert not near(canvas_pixel(page, x0 + bw // 2, y0 + bh // 2), HAPPY_RGB, tol=5)  # photo inside
        # The label tag sits above the box, filled with the same colour.
        assert near(canvas_pixel(page, x0 + 2, y0 - 3), HAPPY_RGB)

        # Bar chart: the happy bar is the longest and reads 88%.
        widths = page.eval_on_selector_all(
            "#chart .bar-row", "rows => rows.map(r => [r.dataset.label, parseFloat(r.querySelector('.bar').style.width)])")
        widths = dict(widths)
        assert widths["happy"] == pytest.approx(88.0) and max(widths, key=widths.get) == "happy"
        assert page.inner_text("#chart [data-label=happy] .bar-value") == "88%"
        assert page.inner_text("#chart [data-label=sad] .bar-value") == "2%"

        shot = shot_dir / "ferkit-serve-upload.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        # Offline: every request went to this server, and no CSP or script errors.
        assert requests and all(u.startswith((server, "blob:", "data:")) for u in requests), requests
        assert problems == []
    finally:
        ctx.close()


def test_webcam_streams_frames(browser, server, shot_dir):
    ctx, page, requests, problems = open_page(browser, server)
    try:
        page.click("#webcam")
        page.wait_for_selector("#faces li[data-label=happy]", timeout=20_000)
        assert page.inner_text("#webcam") == "Stop webcam"
        # Several frames went to the API: the loop keeps running.
        deadline = time.time() + 15
        while sum("/v1/predict" in u for u in requests) < 3 and time.time() < deadline:
            page.wait_for_timeout(200)
        assert sum("/v1/predict" in u for u in requests) >= 3
        page.screenshot(path=str(shot_dir / "ferkit-serve-webcam.png"))
        page.click("#webcam")
        assert page.inner_text("#webcam") == "Start webcam"
        assert problems == []
    finally:
        ctx.close()


def test_api_key_field_appears_when_needed(browser):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(OneFaceRecognizer(), api_key="k3y"), log_level="warning"))
    t = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    while not srv.started:
        time.sleep(0.05)
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#keybox:not(.hidden)")
        assert "API key needed" in page.inner_text("#model")
        page.fill("#apikey", "k3y")
        page.dispatch_event("#apikey", "change")
        page.wait_for_function("() => document.getElementById('model').textContent.includes('fake-cnn 1.0 ·')")
        page.close()
    finally:
        srv.should_exit = True
        t.join(10)
        sock.close()
