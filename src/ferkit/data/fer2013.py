"""FER2013 in its two common forms.

* The challenge CSV: ``emotion,pixels,Usage`` (``fer2013.csv``), or the
  ``icml_face_data.csv`` variant whose header is ``emotion, Usage, pixels``.
  Usage values Training / PublicTest / PrivateTest.
* The Kaggle folder layout: ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``,
  file names prefixed with the original Usage (``Training_``, ``PublicTest_``,
  ``PrivateTest_``).

Splits: ``train``, ``test`` (PublicTest + PrivateTest, i.e. everything in the
test half), ``publictest``, ``privatetest``. ``val`` is carved from train by the
dataset layer.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np

from ferkit.data.folders import find_split_dir, index_folder_tree
from ferkit.data.sources import Index, file_fingerprint, register_source
from ferkit.errors import DataError
from ferkit.labels import FER7

USAGE_TO_SPLIT = {"training": "train", "publictest": "publictest", "privatetest": "privatetest"}
SPLITS = ("train", "test", "publictest", "privatetest")


def _split_filter(split: str):
    if split in ("train", "test", "all"):
        return lambda usage: True if split == "all" else (usage == "train") == (split == "train")
    if split in ("publictest", "privatetest"):
        return lambda usage: usage == split
    raise DataError(f"FER2013 has no split {split!r}; choose from {', '.join(SPLITS)}, val")


def read_fer2013_csv(path) -> tuple[np.ndarray, np.ndarray, list[str], Counter]:
    """Parse the CSV into images (N, 48, 48) uint8, labels (N,), usage per row, skip counts."""
    path = Path(path)
    skipped: Counter = Counter()
    images, labels, usages = [], [], []
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    with f:
        reader = csv.reader(f)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: empty CSV file") from None
        need = {"emotion", "pixels", "usage"}
        if not need <= set(header):
            raise DataError(
                f"{path}: not a FER2013 CSV: header {header} lacks {sorted(need - set(header))} "
                "(expected emotion,pixels,Usage)"
            )
        ie, ip, iu = header.index("emotion"), header.index("pixels"), header.index("usage")
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            try:
                emo = int(row[ie])
                px = np.array(row[ip].split(), dtype=np.int64)
                usage = row[iu].strip().lower()
            except (ValueError, IndexError):
                skipped["malformed row (non-numeric emotion or pixels)"] += 1
                continue
            if px.size != 48 * 48:
                skipped[f"pixel string of length {px.size}, not 2304"] += 1
                continue
            if px.min() < 0 or px.max() > 255:
                skipped["pixel value outside 0..255"] += 1
                continue
            if not 0 <= emo < len(FER7):
                skipped[f"emotion label {emo} outside 0..6"] += 1
                continue
            if usage not in USAGE_TO_SPLIT:
                skipped[f"unknown Usage value {row[iu].strip()!r}"] += 1
                continue
            images.append(px.astype(np.uint8).reshape(48, 48))
            labels.append(emo)
            usages.append(USAGE_TO_SPLIT[usage])
    if not images:
        raise DataError(f"{path}: no valid rows" + (f" ({dict(skipped)})" if skipped else ""))
    return np.stack(images), np.array(labels, dtype=np.int64), usages, skipped


def _is_fer_csv(p: Path) -> bool:
    if not (p.is_file() and p.suffix.lower() == ".csv"):
        return False
    try:
        with open(p, encoding="utf-8-sig") as f:
            header = {h.strip().lower() for h in f.readline().split(",")}
    except (OSError, UnicodeDecodeError):
        return False
    return {"emotion", "pixels"} <= header


class _CsvRows:
    """Loader for CSV rows; picklable so DataLoader workers can use it."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __call__(self, i):
        return self.images[i][:, :, None]


@register_source(
    "fer2013-csv",
    splits=SPLITS,
    detect=_is_fer_csv,
    description="FER2013 challenge CSV (emotion,pixels,Usage or icml_face_data.csv)",
    priority=10,
)
def index_fer2013_csv(root, split: str = "train", **_) -> Index:
    keep = _split_filter(split)
    images, labels, usages, skipped = read_fer2013_csv(root)
    rows = [i for i, u in enumerate(usages) if keep(u)]
    if not rows:
        raise DataError(f"{root}: no rows for split {split!r}")
    return Index(
        source="fer2013-csv",
        root=str(root),
        split=split,
        items=rows,
        labels=[FER7[labels[i]] for i in rows],
        loader=_CsvRows(images),
        fingerprint=file_fingerprint([root], extra="fer2013-csv"),
        skipped=dict(skipped),
        native_size=48,
        native_channels=1,
    )


def _is_fer_folders(p: Path) -> bool:
    if not p.is_dir():
        return False
    tr = find_split_dir(p, "train")
    if tr is None or find_split_dir(p, "test") is None:
        return False
    for cls in sorted(tr.iterdir())[:3]:
        if cls.is_dir():
            with os.scandir(cls) as it:
                for f in it:
                    return f.name.startswith("Training_")
    return False


@register_source(
    "fer2013",
    splits=SPLITS,
    detect=_is_fer_folders,
    description="FER2013 Kaggle folders: train/<class>/Training_*.jpg, test/<class>/PublicTest_*.jpg",
    priority=10,
)
def index_fer2013_folders(root, split: str = "train", **_) -> Index:
    if split in ("publictest", "privatetest"):
        prefix = "PublicTest_" if split == "publictest" else "PrivateTest_"
        idx = index_folder_tree(root, "test", source="fer2013", name_filter=lambda n: n.startswith(prefix))
        idx.split = split
    else:
        _split_filter(split)  # validates the name
        idx = index_folder_tree(root, split, source="fer2013")
    idx.native_size, idx.native_channels = 48, 1
    return idx
