"""Class-folder layouts: ``<root>/[<split>/]<class>/**/<image>``.

Class folder names go through the synonym map (``anger`` -> ``angry``,
``happiness`` -> ``happy``...). The split level is optional: a root with
``train/`` and ``test/`` (or ``training``, ``val``, ``validation``...) gives those
splits; a root of bare class folders gives one split, ``all``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from ferkit.data.images import decode_image, is_image_file
from ferkit.data.sources import Index, file_fingerprint, register_source
from ferkit.errors import DataError, tally
from ferkit.labels import normalize_label

SPLIT_DIRS = {
    "train": ("train", "training", "Train", "Training"),
    "val": ("val", "valid", "validation", "Val", "Validation"),
    "test": ("test", "testing", "Test", "Testing"),
}


def find_split_dir(root: Path, split: str) -> Path | None:
    """The sub-folder holding ``split`` (``train``/``Training``..., see SPLIT_DIRS), or None."""
    for name in SPLIT_DIRS.get(split, (split,)):
        if (root / name).is_dir():
            return root / name
    return None


def has_split_dirs(root: Path) -> bool:
    """True when ``root`` has at least one train/val/test sub-folder."""
    return any(find_split_dir(root, s) is not None for s in SPLIT_DIRS)


def scan_class_tree(base: Path) -> tuple[list[str], list[str], Counter]:
    """All images under ``base`` with the emotion of their nearest emotion-named ancestor."""
    paths, labels, skipped = [], [], Counter()
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames.sort()
        rel = Path(dirpath).relative_to(base).parts
        label = None
        for part in reversed(rel):
            label = normalize_label(part)
            if label:
                break
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            if not is_image_file(f):
                skipped["not an image file"] += 1
                continue
            if label is None:
                skipped["image outside any emotion folder"] += 1
                continue
            paths.append(os.path.join(dirpath, f))
            labels.append(label)
    return paths, labels, skipped


def path_loader(path) -> object:
    """Decode the image at ``path`` to uint8 (H, W, C) (:func:`ferkit.data.images.decode_image`)."""
    return decode_image(path)


def index_folder_tree(root, split: str, source: str = "folders", name_filter=None) -> Index:
    """Index ``root/[<split>/]<emotion>/<images>``: labels from the nearest emotion-named folder.

    Args:
        root: the tree's top folder.
        split: ``train``, ``val``, ``test`` or ``all``; a tree without split folders serves every
            split with all its images (with a note).
        source: the source name recorded in the Index.
        name_filter: keep only files whose base name passes (FER2013's Training_/PublicTest_ prefixes).

    Raises:
        DataError: not a folder, no such split folder, or no image in an emotion-named folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    notes = []
    if has_split_dirs(root):
        base = find_split_dir(root, split) if split != "all" else root
        if base is None:
            raise DataError(
                f"{root}: no '{split}' split folder (found: "
                f"{', '.join(sorted(d.name for d in root.iterdir() if d.is_dir()))})"
            )
    else:
        base = root
        if split not in ("all", "train"):
            notes.append(f"{root} has no split folders: using all images as '{split}'")
    paths, labels, skipped = scan_class_tree(base)
    if name_filter is not None:
        keep = [i for i, p in enumerate(paths) if name_filter(os.path.basename(p))]
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    if not paths:
        raise DataError(
            f"{base}: no images found in emotion-named folders"
            + (f" ({tally(skipped)})" if skipped else "")
        )
    return Index(
        source=source,
        root=str(root),
        split=split,
        items=paths,
        labels=labels,
        loader=path_loader,
        fingerprint=file_fingerprint(paths, extra=source),
        skipped=dict(skipped),
        notes=notes,
    )


def _looks_like_class_tree(p: Path) -> bool:
    return p.is_dir()


@register_source(
    "folders",
    splits=("train", "test", "all"),
    description="any <root>/[<split>/]<class>/<images> tree (val/ used when present); synonyms map class names",
)
def index_folders(root, split: str = "train", **_) -> Index:
    """The ``folders`` source: any class tree (see :func:`index_folder_tree`)."""
    return index_folder_tree(root, split)
