"""RAF-DB (Real-world Affective Faces, basic emotions subset): two layouts.

``rafdb`` -- the official release::

    <root>/EmoLabel/list_patition_label.txt   "train_00001.jpg 5" per line
    <root>/Image/aligned/train_00001_aligned.jpg   (100x100 aligned faces, default)
    <root>/Image/original/train_00001.jpg          (source option variant: original)

``rafdb-kaggle`` -- the common Kaggle re-packaging::

    <root>/[DATASET/]{train,test}/<1..7>/<images>

Labels 1..7 are RAF-DB's: surprise, fear, disgust, happiness, sadness, anger,
neutral; they are mapped to the canonical names. Splits come from the name
prefix (``train_``/``test_``) or the folder: ``train`` (12,271 in the official
file), ``test`` (3,068), ``all``. ``val`` is carved from train by the dataset
layer. Label-file rows whose image is missing are skipped and counted (fatal
only when none is present). RAF-DB has no subject ids, so ``groups`` is None.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path

from ferkit.data.images import decode_image, is_image_file
from ferkit.data.sources import Index, file_fingerprint, register_source, skips_with_lines
from ferkit.errors import DataError

#: RAF-DB label number -> canonical emotion name.
RAF_LABELS = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"  # sic: the dataset's own spelling
VARIANTS = ("aligned", "original")


def _loader(path):
    return decode_image(path)


def _split_of(name: str) -> str | None:
    low = name.lower()
    if low.startswith("train_"):
        return "train"
    if low.startswith("test_"):
        return "test"
    return None


def _check_split(split: str) -> None:
    if split not in ("train", "test", "all"):
        raise DataError(f"RAF-DB has no split {split!r}; choose train, test, all (val is carved from train)")


def read_label_file(path) -> tuple[list[tuple[str, str, str]], Counter]:
    """Parse ``list_patition_label.txt`` into (image name, split, canonical label) rows + skip counts."""
    rows: list[tuple[str, str, str]] = []
    bad: dict[str, list[int]] = defaultdict(list)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DataError(f"{path}: cannot read RAF-DB label file ({e.strerror})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in RAF_LABELS:
            bad["malformed label line"].append(lineno)
            continue
        split = _split_of(parts[0])
        if split is None:
            bad["image name without train_/test_ prefix"].append(lineno)
            continue
        rows.append((parts[0], split, RAF_LABELS[int(parts[1])]))
    skipped = skips_with_lines(bad)
    if not rows:
        raise DataError(f"{path}: no valid 'name label' lines (expected e.g. 'train_00001.jpg 5')")
    return rows, skipped


def image_path(root: Path, name: str, variant: str) -> Path:
    """Where the image of label-file row ``name`` lives for ``variant``."""
    if variant == "aligned":
        return root / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg"
    return root / "Image" / "original" / name


def _official_root(p: Path) -> Path | None:
    for base in (p, p / "basic"):
        if (base / LABEL_FILE).is_file():
            return base
    return None


@register_source(
    "rafdb",
    splits=("train", "test", "all"),
    detect=lambda p: p.is_dir() and _official_root(p) is not None,
    description="RAF-DB basic: EmoLabel/list_patition_label.txt + Image/aligned (option variant: original)",
    priority=20,
)
def index_rafdb(root, split: str = "train", *, variant: str = "aligned", **_) -> Index:
    """Index one split of the official RAF-DB layout."""
    _check_split(split)
    if variant not in VARIANTS:
        raise DataError(f"RAF-DB variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    base = _official_root(Path(root))
    if base is None:
        raise DataError(f"{root}: not a RAF-DB folder (no {LABEL_FILE})")
    rows, skipped = read_label_file(base / LABEL_FILE)
    rows = [r for r in rows if split == "all" or r[1] == split]
    paths, labels = [], []
    for name, _, label in rows:
        p = image_path(base, name, variant)
        if not p.is_file():
            skipped["image file missing"] += 1
            continue
        paths.append(str(p))
        labels.append(label)
    if not paths:
        raise DataError(
            f"{base}: none of the {len(rows)} '{split}' images listed in {LABEL_FILE} exists under "
            f"{image_path(base, 'x.jpg', variant).parent}"
        )
    notes = []
    if skipped.get("image file missing"):
        notes.append(f"{base}: {skipped['image file missing']} listed '{split}' image(s) missing, skipped")
    return Index(
        source="rafdb",
        root=str(root),
        split=split,
        items=paths,
        labels=labels,
        loader=_loader,
        fingerprint=file_fingerprint(paths, extra=f"rafdb|{variant}"),
        skipped=dict(skipped),
        notes=notes,
        native_channels=3,
    )


# --- the Kaggle layout --------------------------------------------------------------------


def _kaggle_root(p: Path) -> Path | None:
    for base in (p, p / "DATASET"):
        tr = base / "train"
        if (base / "test").is_dir() and tr.is_dir() and any((tr / str(k)).is_dir() for k in RAF_LABELS):
            return base
    return None


@register_source(
    "rafdb-kaggle",
    splits=("train", "test", "all"),
    detect=lambda p: p.is_dir() and _kaggle_root(p) is not None,
    description="RAF-DB Kaggle layout: [DATASET/]{train,test}/<1..7>/<images>",
    priority=20,
)
def index_rafdb_kaggle(root, split: str = "train", **_) -> Index:
    """Index one split of ``DATASET/{train,test}/<1..7>/``; folders other than 1..7 are skipped."""
    _check_split(split)
    base = _kaggle_root(Path(root))
    if base is None:
        raise DataError(f"{root}: not a RAF-DB Kaggle folder (expected [DATASET/]train/1..7 and test/)")
    paths, labels, skipped = [], [], Counter()
    for sp in (("train", "test") if split == "all" else (split,)):
        for entry in sorted(os.scandir(base / sp), key=lambda e: e.name):
            if not entry.is_dir():
                continue
            if not (entry.name.isdigit() and int(entry.name) in RAF_LABELS):
                skipped[f"folder {entry.name!r} is not a RAF-DB label 1..7"] += 1
                continue
            label = RAF_LABELS[int(entry.name)]
            for dirpath, dirnames, files in os.walk(entry.path):
                dirnames.sort()
                for f in sorted(files):
                    if f.startswith("."):
                        continue
                    if not is_image_file(f):
                        skipped["not an image file"] += 1
                        continue
                    paths.append(os.path.join(dirpath, f))
                    labels.append(label)
    if not paths:
        raise DataError(f"{base}: no images in {split}/<1..7>/")
    return Index(
        source="rafdb-kaggle",
        root=str(root),
        split=split,
        items=paths,
        labels=labels,
        loader=_loader,
        fingerprint=file_fingerprint(paths, extra="rafdb-kaggle"),
        skipped=dict(skipped),
        native_channels=3,
    )
