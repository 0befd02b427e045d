"""KDEF: the Karolinska Directed Emotional Faces (4,900 photos, 70 actors).

File names encode everything: ``AF01ANS.JPG`` = session ``A`` (or ``B``), sex
``F``/``M``, actor ``01``..``35``, emotion, angle::

    emotion  AF afraid -> fear, AN angry, DI disgusted, HA happy, NE neutral,
             SA sad, SU surprised
    angle    FL full left, HL half left, S straight, HR half right, FR full right

Layouts accepted: the official ``KDEF/<AF01>/<files>`` (one folder per
session+actor), a root holding those folders directly, or a flat folder.
Names are matched case-insensitively (``.JPG``/``.jpg``/``.jpeg``); other image
files are skipped and counted.

Source options (recipe ``source_options`` or keyword arguments):

* ``angles``: list of angles to keep (default all five; ``["S"]`` = frontal).
* ``split_mode``: ``subject`` (default) -- subject-independent: a seeded,
  deterministic draw of ``test_fraction`` of the actors (sex + id, so both
  sessions of an actor land on the same side) forms ``test``; or ``random`` --
  the paper's per-photo 80/20 split, stratified by emotion.
* ``test_fraction`` (0.2) and ``split_seed`` (0).
* ``face_crop`` (False): crop the largest face found by
  :func:`ferkit.faces.detect_faces` (photos with no detected face are
  kept whole). Raises :class:`FerkitError` when face detection is unavailable.
* ``face_margin`` (:data:`ferkit.faces.PORTRAIT_MARGIN`, 0.1): the border kept around
  the detector box with ``face_crop``, per side as a fraction of the box side
  (:mod:`ferkit.faces.framing` says why portraits get one).

Splits: ``train``, ``test``, ``all``. ``val`` is carved from ``train`` by the
dataset layer (by actor with ``group_val: true``). ``groups`` = actor id.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from ferkit.data.images import decode_image, is_image_file
from ferkit.data.sources import Index, file_fingerprint, register_source
from ferkit.data.splits import stratified_split
from ferkit.errors import DataError, FerkitError

EMOTIONS = {"AF": "fear", "AN": "angry", "DI": "disgust", "HA": "happy", "NE": "neutral", "SA": "sad",
            "SU": "surprise"}
ANGLES = ("FL", "HL", "S", "HR", "FR")
# Two-letter angles first so 'S' never swallows the start of 'SU...'; the emotion
# is fixed at two letters, which is what makes the one-letter 'S' unambiguous.
_NAME = re.compile(r"^([AB])([FM])(\d{2})(AF|AN|DI|HA|NE|SA|SU)(FL|HL|HR|FR|S)\.(jpe?g)$", re.IGNORECASE)
_ACTOR_DIR = re.compile(r"^[AB][FM]\d{2}$", re.IGNORECASE)


def parse_kdef_name(name: str) -> dict | None:
    """Parse a KDEF file name; None when it is not one.

    >>> parse_kdef_name("AF01ANS.JPG")["label"]
    'angry'
    """
    m = _NAME.match(os.path.basename(name))
    if not m:
        return None
    session, sex, num, emo, angle, _ = (g.upper() for g in m.groups())
    return {"session": session, "sex": sex, "id": int(num), "subject": f"{sex}{num}",
            "emotion": emo, "label": EMOTIONS[emo], "angle": angle}


def _normalise_angles(angles) -> tuple[str, ...]:
    if angles is None or angles == "all":
        return ANGLES
    if isinstance(angles, str):
        angles = [a for a in re.split(r"[,\s]+", angles) if a]
    out = tuple(str(a).upper() for a in angles)
    bad = [a for a in out if a not in ANGLES]
    if bad or not out:
        raise DataError(f"KDEF angles {bad or list(out)} not understood; choose from {', '.join(ANGLES)}")
    return out


def subject_split(subjects: list[str], test_fraction: float, seed: int = 0) -> set[str]:
    """The actors that form ``test``: a seeded draw over the sorted ids (machine-independent)."""
    uniq = sorted(set(subjects))
    if len(uniq) < 2:
        return set()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    n = min(len(uniq) - 1, max(1, round(len(uniq) * test_fraction)))
    return {uniq[i] for i in order[:n]}


def face_detector():
    """``ferkit.faces.detect_faces`` or a FerkitError saying it is missing."""
    try:
        from ferkit.faces import detect_faces
    except ImportError as e:
        raise FerkitError(f"face_crop needs face detection (ferkit.faces), unavailable: {e}") from None
    return detect_faces


class FaceCropLoader:
    """Decode a photo and crop its largest detected face (kept whole when none is found).

    A class rather than a closure so the loader pickles into DataLoader workers. The
    crop is :func:`ferkit.faces.face_square` (the one cropper the Recognizer uses too)
    at the photo's own resolution; the decode cache resizes it to the model's frame.

    Args:
        margin: extra border around the detected box, as a fraction of its side
            (default :data:`ferkit.faces.PORTRAIT_MARGIN`: detectors cut tight; the
            brow and chin carry expression).

    Raises:
        FerkitError: face detection is unavailable. ValueError: a margin outside [0, 1].
    """

    def __init__(self, margin: float | None = None):
        face_detector()  # fail at indexing time, not mid-decode
        from ferkit.faces.framing import PORTRAIT_MARGIN, check_margin

        self.margin = check_margin(PORTRAIT_MARGIN if margin is None else margin, DataError)

    def __call__(self, path) -> np.ndarray:
        from ferkit.faces.framing import face_square, largest_box

        img = decode_image(path, 3)
        box = largest_box(face_detector()(img))
        return img if box is None else np.ascontiguousarray(face_square(img, box, self.margin))


def _crop_key(source: str, loader) -> str:
    """The cache-key part that says how faces were cut (the default margin keeps old keys)."""
    from ferkit.faces.framing import PORTRAIT_MARGIN

    if not isinstance(loader, FaceCropLoader):
        return f"{source}|crop=False"
    key = f"{source}|crop=True"
    return key if loader.margin == PORTRAIT_MARGIN else f"{key}|margin={loader.margin!r}"


def _path_loader(path) -> np.ndarray:
    return decode_image(path)


def scan_kdef(root) -> tuple[list[str], list[dict], Counter]:
    """Every KDEF-named photo under ``root`` (recursively), with parsed names and skip counts."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    paths, meta, skipped = [], [], Counter()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            if not is_image_file(f):
                continue  # readme files, Thumbs.db...
            info = parse_kdef_name(f)
            if info is None:
                skipped["file name not in KDEF format"] += 1
                continue
            paths.append(os.path.join(dirpath, f))
            meta.append(info)
    return paths, meta, skipped


def _is_kdef(p: Path) -> bool:
    if not p.is_dir():
        return False
    for base in (p, p / "KDEF"):
        if not base.is_dir():
            continue
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)[:50]
        except OSError:
            return False
        for e in entries:
            if e.is_dir() and _ACTOR_DIR.match(e.name):
                with os.scandir(e.path) as it:
                    if any(parse_kdef_name(f.name) for f in it):
                        return True
            elif e.is_file() and parse_kdef_name(e.name):
                return True
    return False


@register_source(
    "kdef",
    splits=("train", "test", "all"),
    detect=_is_kdef,
    description="KDEF photos (KDEF/<AF01>/AF01ANS.JPG...); options angles, split_mode subject|random, face_crop, "
                "face_margin",
    priority=20,
)
def index_kdef(root, split: str = "train", *, angles=None, split_mode: str = "subject",
               test_fraction: float = 0.2, split_seed: int = 0, face_crop: bool = False,
               face_margin: float | None = None, **_) -> Index:
    """Index a KDEF split (see the module docstring for the options)."""
    if split not in ("train", "test", "all"):
        raise DataError(f"KDEF has no split {split!r}; choose train, test, all (val is carved from train)")
    if split_mode not in ("subject", "random"):
        raise DataError(f"KDEF split_mode must be 'subject' or 'random', got {split_mode!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise DataError(f"KDEF test_fraction must be in (0, 1), got {test_fraction}")
    keep_angles = _normalise_angles(angles)
    paths, meta, skipped = scan_kdef(root)
    sel = [i for i, m in enumerate(meta) if m["angle"] in keep_angles]
    if len(sel) < len(meta):
        skipped["angle filtered out"] += len(meta) - len(sel)
    paths, meta = [paths[i] for i in sel], [meta[i] for i in sel]
    if not paths:
        raise DataError(f"{root}: no KDEF photos (names like AF01ANS.JPG) for angles {list(keep_angles)}")
    notes = []
    if split != "all":
        if split_mode == "subject":
            test_subj = subject_split([m["subject"] for m in meta], test_fraction, split_seed)
            if not test_subj:
                notes.append(f"{root}: only one KDEF actor, so every photo is in 'train' and 'test' is empty")
            is_test = [m["subject"] in test_subj for m in meta]
        else:
            _, te = stratified_split([m["label"] for m in meta], test_fraction, split_seed)
            te_set = set(te)
            is_test = [i in te_set for i in range(len(meta))]
        want = split == "test"
        sel = [i for i, t in enumerate(is_test) if t == want]
        paths, meta = [paths[i] for i in sel], [meta[i] for i in sel]
        if not paths:
            raise DataError(f"{root}: KDEF split {split!r} is empty ({split_mode} split of too few photos/actors)")
    loader = FaceCropLoader(face_margin) if face_crop else _path_loader
    return Index(
        source="kdef",
        root=str(root),
        split=split,
        items=paths,
        labels=[m["label"] for m in meta],
        loader=loader,
        # Cropping changes the pixels without touching the files: it must change the cache key.
        fingerprint=file_fingerprint(paths, extra=_crop_key("kdef", loader)),
        groups=[m["subject"] for m in meta],
        skipped=dict(skipped),
        notes=notes,
        face_margin=loader.margin if isinstance(loader, FaceCropLoader) else None,
    )
