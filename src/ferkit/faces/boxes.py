"""Box geometry and the image check every face function shares (no OpenCV, no numpy
at import time).

A box is ``(x, y, w, h)`` in integer pixels of the image it was found in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ferkit.errors import FerkitError

if TYPE_CHECKING:
    import numpy as np

Box = tuple[int, int, int, int]


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
