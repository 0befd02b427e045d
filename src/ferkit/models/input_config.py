"""What a model expects as input: square side, channels, normalisation and face framing.

Kept free of PyTorch (the standard library and :mod:`ferkit.faces.framing`) so that the ONNX inference path,
which reads the input config from a model file's metadata, never imports torch.
``ferkit.models.registry`` re-exports both names.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# ferkit.faces sits below every layer and imports neither torch nor numpy at import time.
from ferkit.faces.framing import FER_MARGIN, check_margin

#: Test-time view sets by name (:func:`ferkit.data.crops.crop_views` makes them).
TTA_MODES = ("none", "mirror", "ten-crop")


def check_tta_mode(mode: str | None) -> str:
    """Normalise a test-time mode name; ``None``, "" and "off" mean "none" (one view).

    Raises:
        ValueError: an unknown name.
    """
    mode = "none" if mode in (None, "", "off") else str(mode).lower().replace("_", "-")
    if mode in ("tencrop", "10-crop"):
        mode = "ten-crop"
    if mode not in TTA_MODES:
        raise ValueError(f"unknown test-time mode {mode!r}; choose from {', '.join(TTA_MODES)}")
    return mode


@dataclass(frozen=True)
class InputConfig:
    """What a model expects: square side in pixels, channels, normalisation, framing.

    Pixels are scaled to [0, 1] and then normalised with ``(x - mean) / std``.

    ``crop_from`` (optional) is for models trained on crops of a larger face: the
    face is brought to ``crop_from`` x ``crop_from`` pixels (FER2013's 48) and the
    model sees a ``size`` x ``size`` part of it -- random crops in training, the
    centre crop (or ten crops, :mod:`ferkit.data.crops`) at evaluation and
    inference. Datasets decode at :attr:`frame` = ``crop_from or size``.
    Khaireddin & Chen (2021) train their FER2013 VGG on 40x40 crops of the 48x48 faces.

    ``face_margin`` is the model's framing (like timm's ``crop_pct``): the border kept
    around a face detector's box, per side as a fraction of the box side, when faces
    are cut for it (:func:`ferkit.faces.crop_face`). Default :data:`ferkit.faces.FER_MARGIN`
    (0.0: FER2013 faces are detector boxes). Training on faces a loader cut with another
    margin records that margin here, so the Recognizer cuts faces the same way; it is
    saved in checkpoints and exported ONNX metadata like the other fields.

    ``tta`` (optional) is the test-time view set a model file asks for by default:
    ``"mirror"`` or ``"ten-crop"`` (:data:`TTA_MODES`); the
    Recognizer uses it unless told otherwise. ``ferkit export --tta`` records it.

    ``temperature`` (default 1) divides the model's logits before every softmax at
    evaluation and inference (temperature scaling, Guo et al. 2017, "On Calibration of
    Modern Neural Networks"): fitted on a validation carve by ``ferkit calibrate`` so that
    a 70% confidence is right about 70% of the time. Argmax predictions do not change.

    Raises:
        ValueError: ``crop_from`` smaller than ``size``; an unknown ``tta``; a
            ``face_margin`` outside [0, 1]; a ``temperature`` that is not a positive finite number.
    """

    size: int = 48
    channels: int = 1
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    crop_from: int | None = None
    tta: str | None = None
    face_margin: float = FER_MARGIN
    temperature: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "face_margin", check_margin(self.face_margin))
        try:
            t = float(self.temperature)
        except (TypeError, ValueError):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}") from None
        if not (t > 0 and math.isfinite(t)):
            raise ValueError(f"temperature must be a positive finite number, got {self.temperature!r}")
        object.__setattr__(self, "temperature", t)
        if self.tta is not None:
            mode = check_tta_mode(self.tta)
            object.__setattr__(self, "tta", None if mode == "none" else mode)
        if self.crop_from is not None and int(self.crop_from) < self.size:
            raise ValueError(f"crop_from={self.crop_from} is smaller than the input size {self.size}")
        if self.crop_from is not None:
            # one spelling per framing: a "crop" of the whole face is no crop
            object.__setattr__(self, "crop_from", None if self.crop_from == self.size else int(self.crop_from))
        # Broadcast a one-value mean/std to every channel.
        if len(self.mean) == 1 and self.channels > 1:
            object.__setattr__(self, "mean", self.mean * self.channels)
        if len(self.std) == 1 and self.channels > 1:
            object.__setattr__(self, "std", self.std * self.channels)

    @property
    def frame(self) -> int:
        """Side of the whole face before any crop: what datasets decode and detectors cut."""
        return int(self.crop_from or self.size)

    def to_dict(self) -> dict:
        """Plain JSON/YAML-ready dict (tuples as lists); :meth:`from_dict` reads it back."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> InputConfig:
        """Rebuild from :meth:`to_dict` output; keys missing in older files take their defaults.

        Raises:
            KeyError: no ``size`` or ``channels``. ValueError: an invalid ``crop_from``,
            ``tta`` or ``face_margin``.
        """
        return cls(
            size=int(d["size"]),
            channels=int(d["channels"]),
            mean=tuple(d.get("mean", (0.0,))),
            std=tuple(d.get("std", (1.0,))),
            # absent in files written before crops existed: the model sees the whole face
            crop_from=int(d["crop_from"]) if d.get("crop_from") else None,
            tta=d.get("tta"),
            # absent in files written before framing was recorded: the FER2013 framing
            face_margin=FER_MARGIN if d.get("face_margin") is None else d["face_margin"],
            # absent in files written before calibration: plain softmax
            temperature=1.0 if d.get("temperature") is None else d["temperature"],
        )


IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def crop_offsets(side: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of the five crops (top-left, top-right, bottom-left, bottom-right, centre).

    Raises:
        ValueError: ``size`` larger than ``side``.
    """
    if size > side:
        raise ValueError(f"crop size {size} is larger than the image side {side}")
    c = round((side - size) / 2.0)
    far = side - size
    return [(0, 0), (0, far), (far, 0), (far, far), (c, c)]


def center_crop(x, size: int):
    """The centre ``size`` x ``size`` of a square (..., S, S) array or tensor (a view)."""
    side = int(x.shape[-1])  # a constant when traced for ONNX: the graph's side is fixed
    if side == size:
        return x
    t, left = crop_offsets(side, size)[4]
    return x[..., t : t + size, left : left + size]
