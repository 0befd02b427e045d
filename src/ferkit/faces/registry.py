"""The face detectors users choose by name: ``register_detector``, ``get_detector``.

Adding a detector is one decorated factory (here or in your own code)::

    @register_detector("my-detector", "one line for --help")
    def _make():
        return MyDetector()   # a FaceDetector subclass

``ferkit predict --detector``, ``ferkit serve --detector`` and their help texts read the
registry, so nothing else needs to change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ferkit.errors import FerkitError
from ferkit.faces.detectors import Box, FaceDetector, HaarDetector, MtcnnDetector, NoDetector

if TYPE_CHECKING:
    import numpy as np

#: The detector used when a caller asks for "default" (chosen by measurement,
#: see docs/face-detection.md).
DEFAULT_DETECTOR = "haar"
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


def detect_faces(
    image_rgb_uint8: np.ndarray, detector: str | FaceDetector = "default"
) -> list[Box]:
    """Boxes (x, y, w, h) of the faces in an RGB (or gray) uint8 image, largest first."""
    return get_detector(detector).detect(image_rgb_uint8)

