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
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ferkit.data.folders import find_split_dir, index_folder_tree
from ferkit.data.sources import Index, file_fingerprint, register_source, skips_with_lines
from ferkit.errors import DataError, tally
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
    """Parse the CSV into images (N, 48, 48) uint8, labels (N,), usage per row, skip counts.

    Every physical line is one row, parsed on its own: FER2013 rows never span lines,
    and a stray or unterminated quote in one row must not swallow the rows after it
    (the csv module would read on to the next quote, or fail with "field larger than
    field limit"). Bad rows are skipped and counted by reason; each reason names its
    first line numbers (1 = the header), e.g. ``{"unterminated or stray quote (line 4)": 1}``.

    Raises:
        DataError: unreadable file, not a FER2013 header, or no valid row.
    """
    path = Path(path)
    images, labels, usages = [], [], []
    bad: dict[str, list[int]] = defaultdict(list)
    try:
        f = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed by the with below
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    with f:
        try:
            first = f.readline()
        except UnicodeDecodeError:
            raise DataError(f"{path}: not a text CSV file (not UTF-8)") from None
        if not first.strip():
            raise DataError(f"{path}: empty CSV file")
        header = [h.strip().lower() for h in _parse_line(first) or first.split(",")]
        need = {"emotion", "pixels", "usage"}
        if not need <= set(header):
            raise DataError(
                f"{path}: not a FER2013 CSV: header {header} lacks {sorted(need - set(header))} "
                "(expected emotion,pixels,Usage)"
            )
        ie, ip, iu = header.index("emotion"), header.index("pixels"), header.index("usage")
        lineno = 1
        while True:
            lineno += 1
            try:
                line = f.readline()
            except UnicodeDecodeError:
                raise DataError(f"{path}: line {lineno}: not UTF-8 text") from None
            if not line:
                break
            if not line.strip():
                continue
            row = _parse_line(line)
            if row is None:
                bad["unterminated or stray quote"].append(lineno)
                continue
            if len(row) != len(header):
                bad[f"{len(row)} fields instead of {len(header)}"].append(lineno)
                continue
            try:
                emo = int(row[ie])
                px = np.array(row[ip].split(), dtype=np.int64)
            except ValueError:
                bad["non-numeric emotion or pixels"].append(lineno)
                continue
            usage = row[iu].strip().lower()
            if px.size != 48 * 48:
                bad[f"pixel string of length {px.size}, not 2304"].append(lineno)
                continue
            if px.min() < 0 or px.max() > 255:
                bad["pixel value outside 0..255"].append(lineno)
                continue
            if not 0 <= emo < len(FER7):
                bad[f"emotion label {emo} outside 0..6"].append(lineno)
                continue
            if usage not in USAGE_TO_SPLIT:
                bad[f"unknown Usage value {row[iu].strip()!r}"].append(lineno)
                continue
            images.append(px.astype(np.uint8).reshape(48, 48))
            labels.append(emo)
            usages.append(USAGE_TO_SPLIT[usage])
    skipped = skips_with_lines(bad)
    if not images:
        raise DataError(f"{path}: no valid rows" + (f" ({tally(skipped)})" if skipped else ""))
    return np.stack(images), np.array(labels, dtype=np.int64), usages, skipped


def _parse_line(line: str) -> list[str] | None:
    """One CSV line as fields, or None when its quotes do not pair up (or it is huge)."""
    try:
        return next(csv.reader([line], strict=True))
    except (csv.Error, StopIteration):
        return None


def _is_fer_csv(p: Path) -> bool:
    if not (p.is_file() and p.suffix.lower() == ".csv"):
        return False
    try:
        with open(p, encoding="utf-8-sig") as f:
            first = f.readline()
        # parsed as CSV: a header written with quotes ("emotion","pixels","Usage") is FER2013 too
        header = {h.strip().lower() for h in _parse_line(first) or first.split(",")}
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
