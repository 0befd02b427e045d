"""The public prediction API: find faces in images and recognise their expressions.

::

    from ferkit import Recognizer

    rec = Recognizer.from_pretrained("default")          # or a checkpoint / .onnx path
    for face in rec.predict("photo.jpg"):
        print(face.box, face.label, face.confidence)

Image inputs: a file path, a ``PIL.Image``, encoded bytes (JPEG/PNG/...), base64
text of them (or a ``data:image/...;base64,`` URI), or a numpy array (H, W[, C]).
**Numpy arrays are taken as RGB** (the convention of PIL, matplotlib, scikit-image
and torchvision); pass ``color="bgr"`` for frames read by OpenCV (``cv2.imread``,
``VideoCapture``). Arrays of other dtypes are scaled by bit depth (uint16 65535 ->
255, float 0-1 -> 0-255), never clipped; empty arrays and odd shapes or values raise
one :class:`~ferkit.data.images.ImageDecodeError` naming the problem. Files larger
than :data:`ferkit.data.images.MAX_PIXELS` are refused from their header, before
their pixels are decoded.

Thread safety: one Recognizer (and any detector from
:mod:`ferkit.faces`) may be shared by many threads; results equal serial
ones. Video helpers that follow one stream (``IouTracker``) hold per-stream state:
use one per stream.

Nothing is loaded when this module is imported; weights are read by
:meth:`Recognizer.from_pretrained`.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ferkit.errors import FerkitError
from ferkit.faces import (
    CROP_HINT,
    FER_MARGIN,
    Box,
    CropHintWarning,
    check_margin,
    crop_face,
    get_detector,
    looks_like_crop,
)

# Loading (files, backends, devices) lives in ferkit.inference.loading and Face in
# ferkit.inference.outputs; these names stay importable from here.
from ferkit.inference.loading import _pick_device, onnx_available, resolve_backend  # noqa: F401
from ferkit.inference.outputs import Face

#: Faces per forward pass; bigger batches gain little on CPU and cost memory.
MAX_BATCH = 1024


class Recognizer:
    """Face detector + expression classifier, with a torch or onnxruntime backend.

    Build it with :meth:`from_pretrained`. Attributes: ``labels``, ``name``,
    ``model_name``, ``version``, ``input_config``, ``backend``, ``detector``.

    Names (the same in the CLI, the service and the docs): ``name`` is what the
    model was loaded by (``"default"`` for the shipped model, else the path given);
    ``model_name`` is its architecture in the model registry (``"boulis-baseline"``);
    ``version`` identifies the weights (architecture + first 8 hex digits of the
    source file's SHA-256, unless the file stores its own); ``detector.name`` is the
    registered detector name (``"haar-full"``).

    Faces are cut around the detector's boxes with the model's framing
    (``input_config.face_margin``, saved with the model); ``margin=`` overrides it.
    """

    def __init__(
        self,
        *,
        labels: Sequence[str],
        input_config,
        model_name: str,
        version: str,
        name: str | None = None,
        model=None,
        session=None,
        detector="default",
        device: str = "cpu",
        margin: float | None = None,
        detect_threads: int | None = None,
        mirror: bool = False,
        min_face: int | None = None,
        tta: str | None = None,
        align: bool = True,
    ):
        if (model is None) == (session is None):
            raise ValueError("give exactly one of model (torch) or session (onnxruntime)")
        self.labels = list(labels)
        self.input_config = input_config
        self.model_name = model_name
        self.name = name or model_name
        self.version = version
        self.backend = "torch" if model is not None else "onnx"
        self.device = device
        # The framing the model was trained with travels in its input config.
        self.margin = check_margin(getattr(input_config, "face_margin", FER_MARGIN) if margin is None else margin)
        # Test-time views: the caller's choice, else the one the model file records
        # (InputConfig.tta), else one view. mirror=True is the older spelling of "mirror".
        self.tta = _tta_mode(tta if tta is not None else "mirror" if mirror else getattr(input_config, "tta", None))
        self.mirror = self.tta != "none"
        self.detector = get_detector(detector)
        self.min_face = self.detector.min_face if min_face is None else int(min_face)
        self.align = bool(align)
        if self.min_face < 0:
            raise FerkitError(f"min_face must be 0 or more pixels, got {min_face}")
        # Every FaceDetector is safe to share between threads (faces.FaceDetector), so
        # predict_batch detects several images in parallel with the same instance.
        self.detect_threads = max(1, int(detect_threads or min(4, os.cpu_count() or 1)))
        self._detect_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._model, self._session = model, session
        cfg = input_config
        self._mean = np.asarray(cfg.mean, np.float32).reshape(1, -1, 1, 1)
        self._std = np.asarray(cfg.std, np.float32).reshape(1, -1, 1, 1)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = "default",
        *,
        backend: str = "auto",
        detector="default",
        device: str = "cpu",
        threads: int | None = None,
        mirror: bool = False,
        min_face: int | None = None,
        tta: str | None = None,
        align: bool = True,
    ) -> Recognizer:
        """Load the shipped model ("default") or a checkpoint / ``.onnx`` file.

        Args:
            name_or_path: "default", a ``best.ckpt``, a slim ``.pt``, an exported
                ``.onnx`` file, or a ``ferkit train`` run folder.
            backend: "auto" (default: "onnx" on the CPU: the shipped model's ``.onnx``
                file, or a checkpoint converted in memory when PyTorch and onnx are
                installed; "torch" on a GPU or when a checkpoint cannot be converted),
                "torch" (needs ``ferkit[train]``), or "onnx" (onnxruntime). Both give the
                same probabilities to 1e-4; on a 2-core CPU onnxruntime classifies about
                4x more faces per second. On the CPU with the shipped model or an
                ``.onnx`` file, PyTorch is never imported.
            detector: face detector name ("default", "haar", "mtcnn", "none", ...).
            device: torch device ("cpu", "cuda", "auto"); the onnx backend runs on CPU.
            threads: onnxruntime intra-op threads (default 2).
            mirror: also classify every face's mirror image and average the two
                probability vectors (test-time augmentation; the shipped model gains
                about 0.9 points on FER2013 PublicTest, the classifier does twice the work).
            min_face: smallest face side in pixels of the input image that detection
                must find, at any image size (default 40,
                :data:`ferkit.faces.DEFAULT_MIN_FACE`). Smaller values cost
                detection time on large photos (docs/face-detection.md has figures);
                0 detects on a copy shrunk to 320 px only (fastest, big faces only).
            align: with a detector that finds eyes (``mtcnn``), rotate each face so its
                eye line is level before classifying (FER2013 faces tilted 30 degrees:
                44% -> 57-59%, the upright figure; level faces: 56.5% -> 58.4%;
                benchmarks/bench_alignment.py). No effect with other detectors.
            tta: test-time views, overriding what the model file records: "none",
                "mirror" (as ``mirror=True``) or "ten-crop" (four corner crops, the
                centre crop and their mirrors, for models trained on crops; ten times
                the work; :mod:`ferkit.data.crops`).

        Raises:
            FerkitError: missing or unreadable model, unknown backend/detector/tta, or a
                PyTorch checkpoint / backend / GPU without PyTorch installed.
        """
        from ferkit.inference.loading import load_recognizer

        return load_recognizer(
            cls, name_or_path, backend=backend, detector=detector, device=device, threads=threads,
            mirror=mirror, min_face=min_face, tta=tta, align=align,
        )

    # --------------------------------------------------------------- inference
    def predict(self, image, *, color: str = "rgb", min_face: int | None = None) -> list[Face]:
        """Faces in one image, largest first; ``[]`` when there is none.

        Args:
            image: path, PIL image, encoded bytes, base64 text, or numpy array (RGB
                unless ``color="bgr"``); see :meth:`load_image`.
            color: "rgb" or "bgr"; only used for 3-channel numpy arrays.
            min_face: smallest face side in pixels to find (None: ``self.min_face``).

        Raises:
            ferkit.data.images.ImageDecodeError: unreadable, corrupt or too large image.
            FerkitError: an input of an unsupported type, shape or dtype.
        """
        return self.predict_batch([image], color=color, min_face=min_face)[0]

    def predict_batch(
        self, images: Iterable, *, color: str = "rgb", min_face: int | None = None
    ) -> list[list[Face]]:
        """Faces of several images; all faces of all images go through the model together.

        Faces are classified in forward passes of up to :data:`MAX_BATCH` faces
        (one pass for any ordinary batch). A bad image raises; decode images
        yourself with :meth:`load_image` to skip bad ones.
        """
        arrays = [self.load_image(im, color=color) for im in images]
        return self.predict_arrays(arrays, min_face=min_face)

    def predict_arrays(
        self,
        arrays: Sequence[np.ndarray],
        boxes: Sequence[Sequence[Box]] | None = None,
        min_face: int | Sequence[int] | None = None,
    ) -> list[list[Face]]:
        """Detect (unless ``boxes`` are given) and classify decoded uint8 RGB/gray arrays.

        ``min_face`` is one value for all arrays or one per array (pixels of that array).
        """
        eyes = None
        if boxes is None:
            boxes, eyes = zip(*self._locate_all(arrays, min_face)) if len(arrays) else ((), ())
            if self.detector.name != "none" and any(
                not b and looks_like_crop(a.shape) for a, b in zip(arrays, boxes)
            ):
                warnings.warn(CROP_HINT, CropHintWarning, stacklevel=3)
        crops, owner = [], []
        for i, (arr, bxs) in enumerate(zip(arrays, boxes)):
            face_eyes = eyes[i] if eyes is not None and eyes[i] is not None and self.align else None
            for k, b in enumerate(bxs):
                e = face_eyes[k] if face_eyes is not None else None
                crops.append(crop_face(arr, b, self.input_config, margin=self.margin, eyes=e))
                owner.append((i, tuple(int(v) for v in b)))
        out: list[list[Face]] = [[] for _ in arrays]
        if not crops:
            return out
        probs = self.classify_faces(crops)
        for (i, box), p in zip(owner, probs):
            out[i].append(self._face(box, p))
        return out

    def detect_all(
        self, arrays: Sequence[np.ndarray], min_face: int | Sequence[int] | None = None
    ) -> list[list[Box]]:
        """Face boxes of each decoded image; several images are detected in parallel threads.

        OpenCV releases the GIL while a cascade or network runs, so with
        ``detect_threads`` > 1 the images of a batch (for example the requests the
        HTTP service groups together) keep every core busy instead of one. The
        detector is shared by those threads (every FaceDetector is thread-safe).
        """
        return [b for b, _ in self._locate_all(arrays, min_face)]

    def _locate_all(self, arrays, min_face=None) -> list[tuple[list[Box], list | None]]:
        """(boxes, eye centres or None) per array: :meth:`FaceDetector.locate`, in parallel."""
        if min_face is None or isinstance(min_face, (int, np.integer, float)):
            sides = [self.min_face if min_face is None else int(min_face)] * len(arrays)
        else:
            sides = [self.min_face if m is None else int(m) for m in min_face]
            if len(sides) != len(arrays):
                raise FerkitError(f"{len(sides)} min_face values for {len(arrays)} images")
        if len(arrays) < 2 or self.detect_threads < 2:
            return [self._locate(a, m) for a, m in zip(arrays, sides)]
        with self._pool_lock:  # two threads calling at once must not build two pools
            if self._detect_pool is None:
                self._detect_pool = ThreadPoolExecutor(
                    self.detect_threads, thread_name_prefix="ferkit-detect"
                )
        return list(self._detect_pool.map(self._locate, arrays, sides))

    def _locate(self, image, min_face):
        if not self.align:
            return self.detector.detect(image, min_face), None
        locate = getattr(self.detector, "locate", None)  # detectors written before locate()
        return locate(image, min_face) if locate else (self.detector.detect(image, min_face), None)

    def classify_faces(self, crops) -> np.ndarray:
        """Class probabilities (N, num_classes) for pre-cropped faces.

        Args:
            crops: uint8 arrays (H, W[, C]) or one (N, H, W[, C]) array of whole
                faces; they are converted to the model's channels and whole-face side
                (``input_config.frame``) if needed, then cut into the test-time views
                (``self.tta``; the centre crop for a model trained on crops).
        """
        batch = self._to_batch(crops)
        probs = [self._forward(batch[i : i + MAX_BATCH]) for i in range(0, len(batch), MAX_BATCH)]
        return np.concatenate(probs) if probs else np.zeros((0, len(self.labels)), np.float32)

    def scores_to_face(self, box: Box, probs: np.ndarray, track_id: int | None = None) -> Face:
        """A :class:`Face` from a probability vector (used by video smoothing)."""
        return self._face(box, probs, track_id)

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def load_image(image, *, color: str = "rgb") -> np.ndarray:
        """Any supported input -> uint8 (H, W, C) RGB or gray array.

        Inputs: a file path; encoded bytes; base64 text of them (or a ``data:`` URI);
        a ``PIL.Image``; a numpy array (H, W[, C]) with C = 1, 2, 3 or 4 of any
        numeric dtype (16-bit and float images are scaled by bit depth,
        :func:`ferkit.data.images.to_uint8`; transparency is put on white).

        Raises:
            ferkit.data.images.ImageDecodeError: missing, unreadable or too large
                file; empty array, or one of unsupported shape, dtype or values.
            FerkitError: an input of another type, or a bad ``color``.
        """
        from ferkit.data.images import load_any_image

        return load_any_image(image, color=color)

    def _to_batch(self, crops) -> np.ndarray:
        from ferkit.data.images import convert_channels, image_from_array, resize_square

        cfg = self.input_config
        side = cfg.frame  # whole faces; _forward cuts the model's crops from them
        if (
            isinstance(crops, np.ndarray)
            and crops.ndim in (3, 4)
            and crops.dtype == np.uint8
            and (crops.shape[1:3] == (side, side))
        ):
            arr = crops if crops.ndim == 4 else crops[..., None]
        else:
            fixed = []
            for c in crops:
                # Same checks and bit-depth scaling as whole images (a float 0-1 crop
                # cast to uint8 was all zeros, a uint16 one wrapped around).
                c = image_from_array(np.asarray(c))
                fixed.append(resize_square(convert_channels(c, cfg.channels), side))
            if not fixed:
                return np.zeros((0, cfg.channels, side, side), np.float32)
            arr = np.stack(fixed)
        if arr.shape[3] != cfg.channels:
            arr = np.stack([convert_channels(a, cfg.channels) for a in arr])
        # Same arithmetic as ferkit.data.transforms.prepare_batch: /255, then (x - mean) / std.
        x = arr.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        return np.ascontiguousarray((x - self._mean) / self._std)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        # Every view (centre crop; + mirror; or ten crops) in one pass, then the mean of
        # their probabilities: the same code and arithmetic as ``ferkit evaluate --tta``.
        from ferkit.data.crops import crop_views, mean_over_views

        views = crop_views(x, self.input_config.size, self.tta)
        p = self._forward_once(np.ascontiguousarray(views))
        return mean_over_views(p, len(x))

    def _forward_once(self, x: np.ndarray) -> np.ndarray:
        if self._session is not None:
            from ferkit.inference.onnx_runtime import softmax

            return softmax(self._session.run(None, {"input": x})[0] / self.input_config.temperature)
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(x).to(self.device).contiguous(memory_format=torch.channels_last)
            logits = self._model(t)
            return torch.softmax(logits.float() / self.input_config.temperature, 1).cpu().numpy()

    def _face(self, box, probs: np.ndarray, track_id: int | None = None) -> Face:
        k = int(np.argmax(probs))
        return Face(
            box=tuple(int(v) for v in box),
            label=self.labels[k],
            confidence=float(probs[k]),
            scores={lab: float(p) for lab, p in zip(self.labels, probs)},
            track_id=track_id,
        )

    def __repr__(self) -> str:
        return (
            f"Recognizer(name={self.name!r}, model={self.model_name!r}, version={self.version!r}, "
            f"backend={self.backend!r}, "
            f"detector={self.detector.name!r}, mirror={self.mirror}, tta={self.tta!r}, labels={self.labels})"
        )


def _tta_mode(mode) -> str:
    from ferkit.data.crops import check_mode

    try:
        return check_mode(mode)
    except ValueError as e:
        raise FerkitError(str(e)) from None
