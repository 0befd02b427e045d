"""Canonical emotion labels, dataset label maps and folder-name synonyms.

Every dataset maps its own labels onto one canonical vocabulary of lower-case
names. The canonical 7-class set is FER2013's, in FER2013's index order, so a
FER2013 label index is also a canonical index.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence

from ferkit.errors import DataError

FER7: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The 7 FER2013 classes in their standard order (index = FER2013 label)."""

#: Emotions some datasets have beyond FER7 (CK+ contempt, RAVDESS calm).
EXTRA = ("contempt", "calm")

# Folder names / tags seen in the wild, mapped to canonical names.
SYNONYMS: dict[str, str] = {
    "angry": "angry", "anger": "angry", "ang": "angry", "an": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust", "disgusting": "disgust", "dis": "disgust",
    "di": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear", "fea": "fear",
    "af": "fear", "fe": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy", "hap": "happy", "ha": "happy",
    "smile": "happy",
    "sad": "sad", "sadness": "sad", "sa": "sad",
    "surprise": "surprise", "surprised": "surprise", "sur": "surprise", "su": "surprise",
    "neutral": "neutral", "neu": "neutral", "ne": "neutral", "none": "neutral",
    "contempt": "contempt", "co": "contempt",
    "calm": "calm",
}


def normalize_label(name: str) -> str | None:
    """Map a folder name or tag to a canonical emotion name.

    Accepts case and separator variants ("Happiness", "02_happy", "sad-faces" is
    not accepted). Returns None if the name is not a known emotion.
    """
    key = name.strip().lower()
    if key in SYNONYMS:
        return SYNONYMS[key]
    # "0_angry", "angry_faces" style: try each alphabetic token.
    for tok in re.split(r"[^a-z]+", key):
        if len(tok) >= 3 and tok in SYNONYMS:
            return SYNONYMS[tok]
    return None


def label_index(names: Sequence[str]) -> dict[str, int]:
    return {n: i for i, n in enumerate(names)}


def filter_to_labels(
    labels: Iterable[str], allowed: Sequence[str], *, strict: bool = False, what: str = "data"
) -> list[bool]:
    """Return a keep-mask for items whose label is in ``allowed``.

    Items with other labels are counted and reported in one warning naming them,
    or raise DataError when ``strict``.
    """
    labels = list(labels)
    allowed_set = set(allowed)
    keep = [lab in allowed_set for lab in labels]
    dropped = Counter(lab for lab, k in zip(labels, keep) if not k)
    if dropped:
        desc = ", ".join(f"{k} ({v})" for k, v in sorted(dropped.items()))
        msg = f"{what}: skipping {sum(dropped.values())} item(s) with classes outside the model's label set: {desc}"
        if strict:
            raise DataError(msg.replace("skipping", "found") + " (--strict)")
        warnings.warn(msg, stacklevel=2)
    return keep
