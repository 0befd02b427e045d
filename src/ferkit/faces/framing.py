"""Face framing: how a face is cut out of an image around a detector box.

One cropper for every layer: :func:`face_square` cuts the square around a box, with a
margin, at the image's own resolution (what dataset loaders cache); :func:`crop_face`
brings that square to a model's frame and channels (what the Recognizer classifies).
The margin a model was trained with is part of its input config
(``InputConfig.face_margin``, like timm's ``crop_pct``), saved in checkpoints and in
exported ONNX metadata, so the Recognizer cuts faces the way the model saw them.

Margins in use (extra border per side, as a fraction of the box's longer side):

* :data:`FER_MARGIN` (0.0): FER2013-trained models, hence ``InputConfig``'s default and
  the shipped model. FER2013 faces *are* detector boxes (measured below).
* :data:`PORTRAIT_MARGIN` (0.1): the KDEF and JAFFE loaders' ``face_crop`` default.
  Their photos show hair, neck and shoulders; a tight Haar box tends to cut the brow
  and chin, which carry expression. The value was the loaders' choice, not a
  measurement; it stays so that existing decode caches and results hold.
* :data:`VIDEO_MARGIN` (0.05): the RAVDESS loader's default (its box side x 1.1: "a
  little context" around the talking face), kept for the same reason.

Each loader takes ``face_margin`` as a source option to override its default; a model
trained on such crops records the margin in its input config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ferkit.faces.boxes import Box, _as_hwc

if TYPE_CHECKING:
    import numpy as np

#: Extra border around a detector box, as a fraction of the box side per side.
#: Running the Haar frontal cascade on upscaled FER2013 training faces finds a
#: box spanning 0.98 of the 48x48 frame (median of 244 faces), MTCNN a box whose
#: longer side spans 1.05 of it: FER2013 faces *are* detector boxes, so the crop
#: that looks like the training data is the square box itself, without margin.
FER_MARGIN = 0.0

#: The KDEF / JAFFE loaders' default margin (portraits with hair and shoulders).
PORTRAIT_MARGIN = 0.1

#: The RAVDESS loader's default margin (video frames of a talking face).
VIDEO_MARGIN = 0.05


def check_margin(margin, error: type[Exception] = ValueError) -> float:
    """``margin`` as a float in [0, 1] (a border of a whole box side per side at most).

    Raises:
        ``error`` (ValueError unless told): not a number, negative, above 1 or NaN.
    """
    try:
        m = float(margin)
    except (TypeError, ValueError):
        m = float("nan")
    if not 0.0 <= m <= 1.0:  # also refuses NaN
        raise error(f"face margin must be a number from 0 to 1 (a fraction of the box side), got {margin!r}")
    return m


def square_around(box: Sequence[float], margin: float = FER_MARGIN) -> tuple[int, int, int]:
    """(x0, y0, side) of the square a crop with ``margin`` takes around box (x, y, w, h).

    The square is centred on the box, with side ``max(w, h) * (1 + 2 * margin)``
    rounded to whole pixels (at least 1); it may reach outside the image.
    """
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    return round(cx - side / 2.0), round(cy - side / 2.0), max(1, round(side))


def face_square(
    image: np.ndarray,
    box: Sequence[float],
    margin: float = FER_MARGIN,
    eyes: Sequence[Sequence[float]] | None = None,
) -> np.ndarray:
    """The square around ``box`` (:func:`square_around`), at the image's own resolution.

    Parts outside the image are filled by replicating the edge (a black border would be
    a feature the model never saw in training).

    Args:
        image: uint8 (H, W[, C]) RGB or gray.
        box: (x, y, w, h) in pixels of ``image``.
        margin: extra border per side as a fraction of the box side.
        eyes: ((x, y) image-left eye, (x, y) image-right eye), e.g. from MTCNN's
            landmarks: the face is first rotated about the box centre so the eye line
            is level (on FER2013 faces tilted 30 degrees this took the shipped model
            from 44% to 57-59%, its upright figure; benchmarks/bench_alignment.py).

    Returns:
        uint8 array (side, side, C).
    """
    import math

    import cv2

    image = _as_hwc(image)
    angle = 0.0
    if eyes is not None:
        (lx, ly), (rx, ry) = eyes
        angle = math.degrees(math.atan2(ry - ly, rx - lx))
    if abs(angle) >= 1.0:  # under a degree a rotation would only blur
        # Rotate a region 1.5x the square (enough for its corners at any angle) about
        # the box centre, then cut the square from its middle.
        x, y, w, h = (float(v) for v in box)
        s = square_around(box, margin)[2]
        r = math.ceil(s * 1.5)
        region = face_square(image, (x + w / 2 - r / 2, y + h / 2 - r / 2, r, r), 0.0)
        m = cv2.getRotationMatrix2D((r / 2.0, r / 2.0), angle, 1.0)
        region = cv2.warpAffine(region, m, (r, r), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        region = region[:, :, None] if region.ndim == 2 else region
        return face_square(region, (r / 2 - s / 2, r / 2 - s / 2, s, s), 0.0)
    x0, y0, s = square_around(box, margin)
    H, W = image.shape[:2]
    pad = (max(0, -y0), max(0, y0 + s - H), max(0, -x0), max(0, x0 + s - W))
    crop = image[max(0, y0) : y0 + s, max(0, x0) : x0 + s]
    if any(pad):
        crop = cv2.copyMakeBorder(crop, *pad, cv2.BORDER_REPLICATE)
        if crop.ndim == 2:
            crop = crop[:, :, None]
    return crop


def crop_face(
    image: np.ndarray,
    box: Sequence[float],
    input_config,
    margin: float | None = None,
    eyes: Sequence[Sequence[float]] | None = None,
) -> np.ndarray:
    """Cut a face the way the model's training faces look, at the model's input size.

    :func:`face_square` with the model's framing, converted to
    ``input_config.channels`` and resized to ``input_config.frame`` (the whole-face
    side: ``input_config.size``, or the side a crop-trained model's crops are cut from).

    Args:
        image: uint8 (H, W, C) RGB or gray.
        box: (x, y, w, h).
        input_config: the model's :class:`~ferkit.models.input_config.InputConfig`.
        margin: extra border per side as a fraction of the box side; None: the
            model's ``input_config.face_margin`` (:data:`FER_MARGIN` when it has none).
        eyes: level the eye line first (see :func:`face_square`).

    Returns:
        uint8 array (frame, frame, channels).
    """
    if margin is None:
        margin = getattr(input_config, "face_margin", FER_MARGIN)
    image, box, eyes = _shrink_for_square(_as_hwc(image), box, margin, eyes, input_config.frame)
    crop = convert_channels(face_square(image, box, margin, eyes), input_config.channels)
    return resize_square(crop, input_config.frame)


def _shrink_for_square(image: np.ndarray, box, margin: float, eyes, frame: int):
    """A thin image's square is mostly padding, made at full resolution before the resize: a
    1 x 1,000,000 array (detector "none": the box is the whole image) asked OpenCV for a
    10^12-byte square (an 'Insufficient memory' cv2.error). When the square is over four times
    the image's area (and well over the model's frame), the part of the image inside it is
    shrunk first to twice the frame, with the box and eyes scaled to match; ordinary photos
    (a square within about twice the image) are cut at full resolution as before.
    """
    import cv2

    x0, y0, side = square_around(box, margin)
    H, W = image.shape[:2]
    target = 2 * frame
    if side * side <= max(4 * H * W, (8 * frame) ** 2):
        return image, box, eyes
    f = target / side
    cx, cy = max(0, x0), max(0, y0)
    region = image[cy : min(H, y0 + side), cx : min(W, x0 + side)]
    h, w = region.shape[:2]
    small = cv2.resize(region, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    small = small[:, :, None] if small.ndim == 2 else small
    x, y, bw, bh = (float(v) for v in box)
    box = ((x - cx) * f, (y - cy) * f, bw * f, bh * f)
    if eyes is not None:
        eyes = [((ex - cx) * f, (ey - cy) * f) for ex, ey in eyes]
    return small, box, eyes


def largest_box(boxes: Sequence[Box]) -> Box | None:
    """The box of largest area (the main face of a portrait); None for no boxes."""
    return max(boxes, key=lambda b: b[2] * b[3]) if boxes else None


def convert_channels(arr: np.ndarray, channels: int | None) -> np.ndarray:
    """Gray <-> RGB on a uint8 (H, W, C) array; ``channels`` None keeps it.

    Raises:
        ValueError: a conversion other than 1 <-> 3 channels.
    """
    import cv2
    import numpy as np

    c = arr.shape[2]
    if channels is None or channels == c:
        return np.ascontiguousarray(arr)
    if channels == 1 and c == 3:
        return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)[:, :, None]
    if channels == 3 and c == 1:
        return np.repeat(arr, 3, axis=2)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def resize_square(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize (H, W, C) uint8 to (size, size, C); area interpolation when shrinking."""
    import cv2

    h, w = arr.shape[:2]
    if (h, w) == (size, size):
        return arr
    interp = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_LINEAR
    out = cv2.resize(arr, (size, size), interpolation=interp)
    return out[:, :, None] if out.ndim == 2 else out


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
