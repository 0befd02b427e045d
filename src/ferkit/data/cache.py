"""The decode cache: every image is decoded once into one uint8 array.

Where: ``$FERKIT_CACHE`` if set, else ``~/.cache/ferkit``; one ``<key>.npy`` (the
images, (N, S, S, C) uint8) plus ``<key>.json`` (item count, skipped items) per
(dataset split, input size, channels).

Invalidation: the key hashes the index fingerprint -- every file's path, size
and modification time (the CSV's for FER2013-CSV) -- with the decode size,
channel count and cache format version. Editing, adding or removing a file
changes the key, so a stale cache is never read; old entries are simply left
behind (``ferkit cache --clear`` removes them).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ferkit.data.images import convert_channels, resize_square
from ferkit.data.sources import Index
from ferkit.errors import DataError

CACHE_VERSION = 1


def cache_dir() -> Path:
    return Path(os.environ.get("FERKIT_CACHE", Path.home() / ".cache" / "ferkit"))


def cache_key(index: Index, size: int, channels: int) -> str:
    h = hashlib.sha1(f"{CACHE_VERSION}|{index.fingerprint}|{size}|{channels}".encode())
    return h.hexdigest()[:24]


def decode_index(
    index: Index, size: int, channels: int, *, use_cache: bool = True, progress: bool = True
) -> tuple[np.ndarray, list[int], dict[str, int]]:
    """Decode every item of ``index`` to (size, size, channels) uint8.

    Returns (images, kept item positions, skipped-reason counts). Unreadable
    items are skipped and counted, never fatal.
    """
    key = cache_key(index, size, channels)
    d = cache_dir()
    npy, meta_path = d / f"{key}.npy", d / f"{key}.json"
    if use_cache and npy.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            images = np.load(npy)  # read fully into memory: epochs index it at random
            if images.shape[0] == len(meta["kept"]):
                return images, meta["kept"], meta["skipped"]
        except (OSError, ValueError, KeyError):
            pass  # damaged entry: rebuild below
    out = np.empty((len(index), size, size, channels), dtype=np.uint8)
    kept: list[int] = []
    skipped: Counter = Counter()
    examples: list[str] = []
    it = tqdm(
        enumerate(index.items),
        total=len(index),
        desc=f"decoding {index.source}/{index.split}",
        disable=not progress or len(index) < 500,
        unit="img",
    )
    for i, item in it:
        try:
            img = index.loader(item)
            img = resize_square(convert_channels(img, channels), size)
        except DataError as e:
            skipped["unreadable image"] += 1
            if len(examples) < 3:
                examples.append(str(e))
            continue
        out[len(kept)] = img.reshape(size, size, channels)
        kept.append(i)
    images = out[: len(kept)]
    if skipped:
        warnings.warn(
            f"{index.source}/{index.split}: skipped {sum(skipped.values())} unreadable image(s), "
            f"e.g. {'; '.join(examples)}",
            stacklevel=2,
        )
    if use_cache:
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = npy.with_name(npy.name + f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, images)
            os.replace(tmp, npy)  # atomic: readers never see a half-written cache
            meta_path.write_text(json.dumps({"kept": kept, "skipped": dict(skipped), "root": index.root}))
        except OSError as e:
            warnings.warn(f"decode cache not written ({d}: {e})", stacklevel=2)
    return images, kept, dict(skipped)
