"""JAFFE: the Japanese Female Facial Expression database (213 photos, 10 posers).

A flat folder of 256x256 gray TIFFs named ``KA.AN1.39.tiff``: poser initials
(``KA``), emotion code with a repetition digit (``AN1``), image number (``39``).
Emotion codes: AN angry, DI disgust, FE fear, HA happy, NE neutral, SA sad,
SU surprise. Names are matched case-insensitively; ``.tif``/``.tiff`` both work
(some copies also ship ``.jpg``/``.png`` conversions, which are accepted too).

JAFFE is a classic *cross-dataset* test set: it has no official split, so
``all``, ``test`` and ``train`` all hold every photo (``train`` with a note;
``val`` is carved from it by the dataset layer, by poser with ``group_val``).
``groups`` = poser.

Faces fill most of the frame but sit on a background with hair and shoulders, so
the loader crops the face (option ``face_crop``):

* ``"auto"`` (default): crop with :func:`ferkit.faces.detect_faces`
  when that module is available; otherwise use whole images and say so in a
  note (whole JAFFE images still classify, a little worse).
* ``True``: crop, and raise :class:`FerkitError` if detection is unavailable.
* ``False``: whole images.

``face_margin`` (default :data:`ferkit.faces.PORTRAIT_MARGIN`, 0.1, as KDEF): the
border kept around the detector box, per side as a fraction of the box side.

A photo in which no face is detected is kept whole rather than dropped, so the
test set keeps its 213 items.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from ferkit.data.images import decode_image, is_image_file
from ferkit.data.kdef import FaceCropLoader, _crop_key
from ferkit.data.sources import Index, file_fingerprint, register_source
from ferkit.errors import DataError, FerkitError

EMOTIONS = {"AN": "angry", "DI": "disgust", "FE": "fear", "HA": "happy", "NE": "neutral", "SA": "sad",
            "SU": "surprise"}
_NAME = re.compile(r"^([A-Z]{2})\.(AN|DI|FE|HA|NE|SA|SU)(\d+)\.(\d+)\.(tiff?|jpe?g|png)$", re.IGNORECASE)


def parse_jaffe_name(name: str) -> dict | None:
    """Parse a JAFFE file name; None when it is not one.

    >>> parse_jaffe_name("KA.AN1.39.tiff")["subject"]
    'KA'
    """
    m = _NAME.match(os.path.basename(name))
    if not m:
        return None
    subject, emo, rep, num, _ = m.groups()
    return {"subject": subject.upper(), "emotion": emo.upper(), "label": EMOTIONS[emo.upper()],
            "repetition": int(rep), "number": int(num)}


def _whole(path):
    return decode_image(path)


def _candidates(p: Path) -> list[Path]:
    # The download unpacks to jaffe/ (or jaffedbase/); accept the parent too.
    return [p] + [p / n for n in ("jaffe", "jaffedbase", "JAFFE")]


def _is_jaffe(p: Path) -> bool:
    if not p.is_dir():
        return False
    for base in _candidates(p):
        if not base.is_dir():
            continue
        try:
            with os.scandir(base) as it:
                names = [e.name for e, _ in zip(it, range(200)) if e.is_file()]
        except OSError:
            continue
        if sum(parse_jaffe_name(n) is not None for n in names) >= 1:
            return True
    return False


def _resolve_crop(face_crop) -> tuple[bool, str | None]:
    """(crop?, note) for the face_crop option."""
    if face_crop in (False, "false", "no", 0):
        return False, None
    try:
        from ferkit.faces import detect_faces  # noqa: F401
    except ImportError:
        if face_crop in ("auto", None):
            return False, "JAFFE: face detection (ferkit.faces) unavailable, using whole images"
        raise FerkitError("JAFFE face_crop=True needs ferkit.faces, which is unavailable") from None
    return True, None


@register_source(
    "jaffe",
    splits=("all", "test", "train"),
    detect=_is_jaffe,
    description="JAFFE flat folder of KA.AN1.39.tiff photos (cross-dataset test set; options face_crop, face_margin)",
    priority=20,
)
def index_jaffe(root, split: str = "test", *, face_crop="auto", face_margin: float | None = None, **_) -> Index:
    """Index JAFFE; every split holds all photos (see the module docstring)."""
    if split not in ("all", "test", "train"):
        raise DataError(f"JAFFE has no split {split!r}; it is one set: use all or test")
    root_p = Path(root)
    if not root_p.is_dir():
        raise DataError(f"{root}: not a directory")
    base = next((b for b in _candidates(root_p) if b.is_dir() and _is_jaffe_dir(b)), root_p)
    paths, meta, skipped = [], [], Counter()
    for dirpath, dirnames, files in os.walk(base):
        dirnames.sort()
        for f in sorted(files):
            if f.startswith(".") or not is_image_file(f):
                continue
            info = parse_jaffe_name(f)
            if info is None:
                skipped["file name not in JAFFE format"] += 1
                continue
            paths.append(os.path.join(dirpath, f))
            meta.append(info)
    if not paths:
        raise DataError(f"{root}: no JAFFE photos (names like KA.AN1.39.tiff)")
    crop, note = _resolve_crop(face_crop)
    loader = FaceCropLoader(face_margin) if crop else _whole
    notes = [note] if note else []
    if split == "train":
        notes.append("JAFFE has no official split: 'train' holds every photo")
    return Index(
        source="jaffe",
        root=str(root),
        split=split,
        items=paths,
        labels=[m["label"] for m in meta],
        loader=loader,
        fingerprint=file_fingerprint(paths, extra=_crop_key("jaffe", loader)),
        groups=[m["subject"] for m in meta],
        skipped=dict(skipped),
        notes=notes,
        native_channels=1,
        face_margin=loader.margin if crop else None,
    )


def _is_jaffe_dir(p: Path) -> bool:
    with os.scandir(p) as it:
        return any(e.is_file() and parse_jaffe_name(e.name) for e in it)
