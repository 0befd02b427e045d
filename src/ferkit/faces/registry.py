"""The face detectors users choose by name: ``register_detector``, ``get_detector``.

Adding a detector is one file: its ``FaceDetector`` subclass and one decorated factory,
both in :mod:`ferkit.faces.detectors` (where the shipped ones are registered) or in your
own code::

    @register_detector("my-detector", "one line for --help")
    def _make():
        return MyDetector()   # a FaceDetector subclass

``ferkit predict --detector``, ``ferkit serve --detector``, their help texts and the tests
parametrized over :func:`list_detectors` read the registry, so nothing else changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ferkit.errors import FerkitError
from ferkit.faces.boxes import Box

if TYPE_CHECKING:
    import numpy as np

    from ferkit.faces.detectors import FaceDetector

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




def _import_detectors():
    # Importing the module runs the shipped detectors' registrations (the registration
    # pattern: detectors.py imports this module for the decorator).
    import ferkit.faces.detectors as module

    return module


def list_detectors() -> list[str]:
    """Names of the registered detectors, sorted (``"default"`` is an alias, not listed)."""
    _import_detectors()
    return sorted(_DETECTORS)


def detector_help() -> str:
    """One line per detector, generated from the registry (for ``--help`` texts)."""
    _import_detectors()
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
    if isinstance(name, _import_detectors().FaceDetector):
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

