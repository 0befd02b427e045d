"""The decode cache: every image is decoded once into one uint8 array.

Where: ``$FERKIT_CACHE`` if set, else ``~/.cache/ferkit``; one ``<key>.npy`` (the
images, (N, S, S, C) uint8) plus ``<key>.json`` (item count, skipped items) per
(dataset split, input size, channels).

Invalidation: the key hashes the index fingerprint -- every file's resolved path, size
and modification time (the CSV's for FER2013-CSV) -- with the decode size,
channel count and cache format version. Editing, adding or removing a file
changes the key, so a stale cache is never read; old entries are simply left
behind: ``ferkit cache`` lists them, ``ferkit cache --clear`` deletes them.

Damage: the ``.json`` also records the array's shape, dtype and CRC-32. An
entry whose bytes changed in place (same size, so no fingerprint notices), whose
array has another shape (8x8 faces in a 48x48 entry) or whose files do not
parse is reported in one warning line and decoded again from the images, never
used: a silently damaged cache once took ``ferkit evaluate`` from 0.598 to 0.355.
CRC-32 costs ~0.06 s for FER2013's 66 MB training array, a tenth of reading it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ferkit.data.images import convert_channels, resize_square
from ferkit.data.sources import Index
from ferkit.errors import DataError

CACHE_VERSION = 2  # 2: shape, dtype and CRC-32 in the .json


def cache_dir() -> Path:
    """The decode cache folder: ``$FERKIT_CACHE``, else ``~/.cache/ferkit`` (may not exist yet)."""
    return Path(os.environ.get("FERKIT_CACHE", Path.home() / ".cache" / "ferkit"))


def cache_key(index: Index, size: int, channels: int) -> str:
    """24 hex digits naming the entry of ``index`` decoded at ``size`` px and ``channels``."""
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
    if use_cache and npy.exists():
        cached, problem = _read_entry(npy, meta_path, len(index), (size, size, channels))
        if cached is not None:
            return cached
        warnings.warn(f"decode cache {npy} is damaged ({problem}); decoding the images again", stacklevel=2)
    out = np.empty((len(index), size, size, channels), dtype=np.uint8)
    kept: list[int] = []
    skipped: Counter = Counter()
    examples: list[str] = []
    def decode(item):
        try:
            img = index.loader(item)
            return resize_square(convert_channels(img, channels), size), None
        except DataError as e:
            return None, str(e)

    # Decoders (Pillow, OpenCV) release the GIL: threads decode large sets several times faster
    # (the GPU job's 32k FER2013 faces); small sets stay on one thread.
    workers = min(8, os.cpu_count() or 1) if len(index) >= 2000 else 1
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(decode, index.items) if workers > 1 else map(decode, index.items)
        it = tqdm(
            enumerate(results),
            total=len(index),
            desc=f"decoding {index.source}/{index.split}",
            disable=not progress or len(index) < 500,
            unit="img",
        )
        for i, (img, err) in it:
            if img is None:
                skipped["unreadable image"] += 1
                if len(examples) < 3:
                    examples.append(err)
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
        _write_entry(npy, meta_path, images, {"kept": kept, "skipped": dict(skipped), "root": index.root})
    return images, kept, dict(skipped)


def _crc(images: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(images).data)


def _read_entry(npy: Path, meta_path: Path, n_items: int, face_shape: tuple[int, int, int]):
    """((images, kept, skipped), None) for a sound entry, else (None, what is wrong)."""
    try:
        meta = json.loads(meta_path.read_text())
        kept, skipped = meta["kept"], meta["skipped"]
        want_shape = (len(kept), *face_shape)
        if tuple(meta["shape"]) != want_shape or meta["dtype"] != "uint8":
            return None, f"index says shape {tuple(meta['shape'])} {meta['dtype']}, expected {want_shape} uint8"
        images = np.load(npy, allow_pickle=False)  # read fully into memory: epochs index it at random
    except FileNotFoundError:
        return None, f"{meta_path.name} is missing"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"unreadable: {type(e).__name__}"
    if images.shape != want_shape or images.dtype != np.uint8:
        return None, f"array of shape {images.shape} {images.dtype}, expected {want_shape} uint8"
    if not all(isinstance(i, int) and 0 <= i < n_items for i in kept) or kept != sorted(set(kept)):
        return None, "item positions out of range"
    if _crc(images) != meta.get("crc32"):
        return None, "checksum mismatch: its bytes changed after it was written"
    return (images, kept, skipped), None


def _write_entry(npy: Path, meta_path: Path, images: np.ndarray, meta: dict) -> None:
    """Array then index, each written to a temporary name and renamed (readers never see half)."""
    meta = {**meta, "shape": list(images.shape), "dtype": str(images.dtype), "crc32": _crc(images)}
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
        tmp = npy.with_name(npy.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, images)
        os.replace(tmp, npy)
        tmp = meta_path.with_name(meta_path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, meta_path)
    except OSError as e:
        warnings.warn(f"decode cache not written ({npy.parent}: {e})", stacklevel=3)


# Entry files are <24 hex>.npy / .json, plus <name>.<pid>.tmp left by a killed write. Only
# these are ever listed or deleted: $FERKIT_CACHE may point at a folder holding other files.
_ENTRY = re.compile(r"^[0-9a-f]{24}\.(npy|json)$")
_TMP = re.compile(r"^[0-9a-f]{24}\.(npy|json)\.\d+\.tmp$")


def cache_entries() -> list[dict]:
    """What the decode cache holds, one dict per entry, largest first.

    Each dict has ``key``, ``bytes`` (both files), ``items`` (decoded faces),
    ``shape`` ((N, S, S, C) or None), ``root`` (the dataset folder it came from, or
    None) and ``modified`` (POSIX seconds); ``problem`` says why an entry is unusable
    (its ``.json`` is missing or unreadable), else None. A missing folder is an empty cache.
    """
    d = cache_dir()
    if not d.is_dir():
        return []
    by_key: dict[str, list[Path]] = {}
    for f in d.iterdir():
        if _ENTRY.match(f.name) and f.is_file():
            by_key.setdefault(f.name[:24], []).append(f)
    out = []
    for key, files in by_key.items():
        meta_path = d / f"{key}.json"
        entry = {"key": key, "bytes": sum(f.stat().st_size for f in files), "items": None, "shape": None,
                 "root": None, "modified": max(f.stat().st_mtime for f in files), "problem": None}
        try:
            meta = json.loads(meta_path.read_text())
            entry.update(items=len(meta["kept"]), shape=meta.get("shape"), root=meta.get("root"))
        except FileNotFoundError:
            entry["problem"] = "no .json index"
        except (OSError, ValueError, KeyError, TypeError) as e:
            entry["problem"] = f"unreadable .json ({type(e).__name__})"
        if not (d / f"{key}.npy").is_file():
            entry["problem"] = "no .npy array"
        out.append(entry)
    return sorted(out, key=lambda e: -e["bytes"])


def clear_cache() -> tuple[int, int]:
    """Delete every decode-cache entry (and half-written temporaries); returns (files, bytes) freed.

    Only ferkit's own entry files are removed; other files in the folder are left alone.
    The next training or evaluation decodes its images again.

    Raises:
        DataError: a file could not be deleted (permissions); those deleted before stay deleted.
    """
    d = cache_dir()
    if not d.is_dir():
        return 0, 0
    n = freed = 0
    for f in sorted(d.iterdir()):
        if (_ENTRY.match(f.name) or _TMP.match(f.name)) and f.is_file():
            size = f.stat().st_size
            try:
                f.unlink()
            except FileNotFoundError:  # another process removed it first
                continue
            except OSError as e:
                raise DataError(f"decode cache: cannot delete {f} ({e.strerror}); {n} file(s) deleted") from None
            n, freed = n + 1, freed + size
    return n, freed
