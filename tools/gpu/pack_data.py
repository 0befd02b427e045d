"""Pack a FER2013 Kaggle folder (train/<class>/*.jpg, test/<class>/*.jpg) for the GPU job.

    python tools/gpu/pack_data.py ../shared/datasets/fer2013 .gpu/fer2013.tar.gz
    python tools/gpu/pack_data.py ../shared/datasets/fer2013 small.tar.gz --per-class 40

The full archive is about 50 MB (the JPEGs are stored as they are, gzip finds little to
squeeze), which leaves room for the checkout under the 64 MiB the device machine takes.
``--per-class N`` keeps the first N files (sorted by name) of every class in every split,
for the CPU smoke run. ``.gpu/`` is git-ignored: the archive travels as a carried path.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path

SPLITS = ("train", "test")


def pack(src: Path, dest: Path, per_class: int | None = None) -> int:
    """Write ``dest`` (tar.gz) with ``src``'s train/ and test/ trees; returns the image count.

    Raises:
        ValueError: ``src`` is not a Kaggle-layout FER2013 folder or holds no image in a
            split, ``dest`` is a folder or cannot be made, ``per_class`` is below 1. Nothing
            is left at ``dest`` (or beside it) then.
    """
    if per_class is not None and per_class < 1:
        # files[:0] kept every file and files[:-1] dropped one per class, both silently
        raise ValueError(f"--per-class must be a whole number >= 1, got {per_class}")
    if not all((src / s).is_dir() for s in SPLITS):
        raise ValueError(f"{src} is not a FER2013 Kaggle folder (needs train/ and test/ folders)")
    if dest.is_dir():
        raise ValueError(f"{dest} is a folder; give the archive's file name (e.g. {dest / 'fer2013.tar.gz'})")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot make the folder for {dest} ({e.strerror}: {e.filename})") from None
    n, counts = 0, dict.fromkeys(SPLITS, 0)
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            for split in SPLITS:
                for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
                    files = sorted(f for f in cls.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
                    for f in files[:per_class] if per_class else files:
                        tar.add(f, arcname=f"{split}/{cls.name}/{f.name}")
                        n += 1
                        counts[split] += 1
        if empty := [s for s, c in counts.items() if c == 0]:
            raise ValueError(f"{src}: no images in {' and '.join(e + '/<class>/' for e in empty)} "
                             "(.jpg, .jpeg or .png)")
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="FER2013 folder with train/ and test/")
    p.add_argument("dest", type=Path, help="archive to write (.tar.gz)")
    p.add_argument("--per-class", type=int, default=None, metavar="N", help="keep N images per class and split")
    a = p.parse_args(argv)
    try:
        n = pack(a.src, a.dest, a.per_class)
    except ValueError as e:
        p.error(str(e))  # one line, exit 2
    print(f"{a.dest}: {n} images, {a.dest.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
