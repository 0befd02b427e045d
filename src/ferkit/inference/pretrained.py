"""Where the shipped model lives, and turning a model reference into a file path.

The default model is a slim weight file (``ferkit.models.checkpoint.save_slim``)
inside the package, ``ferkit/weights/default.pt``: installing ferkit installs
it, and loading it needs no network. Nothing here reads it; callers load the
path they get back, when they need the model.
"""

from __future__ import annotations

import os
from pathlib import Path

from ferkit.errors import FerkitError

#: Folder of the shipped weight files (package data ``ferkit/weights/*``).
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"

#: Names of shipped models -> file name inside :data:`WEIGHTS_DIR`.
PRETRAINED = {"default": "default.pt"}


def list_pretrained() -> list[str]:
    """Names of the shipped models whose weight file is actually installed."""
    return [n for n, f in PRETRAINED.items() if (WEIGHTS_DIR / f).is_file()]


def resolve_pretrained(name: str | os.PathLike = "default") -> Path:
    """Path of a shipped model ("default") or of a user's checkpoint / exported file.

    Args:
        name: a shipped model name, or a path to ``best.ckpt``, a slim ``.pt``
            or an exported ``.onnx`` file.

    Raises:
        FerkitError: unknown name, missing file, or the shipped weights are not
            installed (e.g. a source checkout made before the model was trained).
    """
    key = os.fspath(name)
    if key in PRETRAINED:
        path = WEIGHTS_DIR / PRETRAINED[key]
        if not path.is_file():
            raise FerkitError(
                f"the shipped {key!r} model is not installed ({path} is missing); "
                "pass a checkpoint with --model PATH, or reinstall ferkit"
            )
        return path
    path = Path(key).expanduser()
    if path.is_file():
        return path
    if path.is_dir() and (path / "best.ckpt").is_file():
        return path / "best.ckpt"  # a `ferkit train` run folder
    raise FerkitError(
        f"{key}: no such model file (expected 'default', a .ckpt/.pt checkpoint, an .onnx file or a run folder)"
    )


def model_version(spec: dict, path: str | os.PathLike | None = None) -> str:
    """A short identity for a loaded model: its saved version, else model name + file hash.

    The hash makes two differently trained files of the same architecture
    distinguishable in prediction logs.
    """
    meta = spec.get("meta") or {}
    if meta.get("version"):
        return str(meta["version"])
    if path is not None and Path(path).is_file():
        import hashlib

        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return f"{spec.get('model', 'model')}-{h.hexdigest()[:8]}"
    return str(spec.get("model", "model"))
