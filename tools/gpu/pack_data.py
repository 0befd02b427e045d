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
        SystemExit: ``src`` is not a Kaggle-layout FER2013 folder.
    """
    if not all((src / s).is_dir() for s in SPLITS):
        raise SystemExit(f"pack_data: {src} is not a FER2013 Kaggle folder (needs train/ and test/)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for split in SPLITS:
            for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
                files = sorted(f for f in cls.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
                for f in files[:per_class] if per_class else files:
                    tar.add(f, arcname=f"{split}/{cls.name}/{f.name}")
                    n += 1
    tmp.replace(dest)
    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="FER2013 folder with train/ and test/")
    p.add_argument("dest", type=Path, help="archive to write (.tar.gz)")
    p.add_argument("--per-class", type=int, default=None, metavar="N", help="keep N images per class and split")
    a = p.parse_args(argv)
    n = pack(a.src, a.dest, a.per_class)
    print(f"{a.dest}: {n} images, {a.dest.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
