"""Where the shipped models live, and turning a model reference into a file path.

Each shipped model is two files inside the package, ``ferkit/weights/``:

* ``<name>.onnx``: what inference runs (onnxruntime, no PyTorch needed: the base
  install). Labels, input config, version and the checkpoint's meta travel in its
  metadata (:mod:`ferkit.inference.onnx_runtime`).
* ``<name>.pt``: the slim torch file (``ferkit.models.checkpoint.save_slim``), the
  source of truth the ONNX file is exported from (``ferkit export --shipped``). It
  stays for fine-tuning, distillation teachers, evaluation and the GPU backend.

Installing ferkit installs them and loading needs no network. Nothing here reads
them; callers load the path they get back, when they need the model.
"""

from __future__ import annotations

import os
from pathlib import Path

from ferkit.errors import FerkitError

#: Folder of the shipped weight files (package data ``ferkit/weights/*``).
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"

#: Names of shipped models -> file stem inside :data:`WEIGHTS_DIR` (``<stem>.onnx``
#: and ``<stem>.pt``). ``default``: the most accurate single network (vgg-fer);
#: ``fast``: mini-xception distilled from it (recipe ``ferkit-fast``), one view, for
#: batches of faces and video where crops/s matter more than the last points.
PRETRAINED = {"default": "default", "default-int8": "default-int8", "fast": "fast"}

#: Shipped models that are an int8 quantization of another one: ONNX only, made
#: from that model's ``.pt`` by ``ferkit export --shipped``. ``default-int8``: the
#: FC layers' weights in int8 (onnxruntime dynamic quantization), the convolutions in
#: fp16 storage: 12.6 MB against 15.7 for the full-width default (benchmarks/bench_quantize.py
#: measures its accuracy and speed against the float model).
QUANTIZED = {"default-int8": "default"}

_SUFFIX = {"onnx": ".onnx", "torch": ".pt"}


def shipped_path(name: str, fmt: str = "onnx") -> Path:
    """Where shipped model ``name`` lives in format ``fmt`` ("onnx" or "torch"); may not exist."""
    return WEIGHTS_DIR / (PRETRAINED[name] + _SUFFIX[fmt])


def list_pretrained() -> list[str]:
    """Names of the shipped models with at least one of their files installed."""
    return [n for n in PRETRAINED if any(shipped_path(n, f).is_file() for f in _SUFFIX)]


def resolve_pretrained(name: str | os.PathLike = "default", *, prefer: str = "torch") -> Path:
    """Path of a shipped model ("default") or of a user's checkpoint / exported file.

    Args:
        name: a shipped model name, or a path to ``best.ckpt``, a slim ``.pt``
            or an exported ``.onnx`` file.
        prefer: for a shipped model, which of its files: "torch" (the ``.pt``, for
            training, evaluation and the torch backend) or "onnx" (for onnxruntime).
            The other file is returned when the preferred one is not installed.

    Raises:
        FerkitError: unknown name, missing file, or the shipped weights are not
            installed (e.g. a source checkout made before the model was trained).
    """
    key = os.fspath(name)
    if key in PRETRAINED:
        order = ("torch", "onnx") if prefer == "torch" else ("onnx", "torch")
        for fmt in order:
            if shipped_path(key, fmt).is_file():
                return shipped_path(key, fmt)
        raise FerkitError(
            f"the shipped {key!r} model is not installed ({shipped_path(key, order[0])} is "
            "missing); pass a checkpoint with --model PATH, or reinstall ferkit"
        )
    path = Path(key).expanduser()
    if path.is_file():
        return path
    if path.is_dir() and (path / "best.ckpt").is_file():
        return path / "best.ckpt"  # a `ferkit train` run folder
    shipped = ", ".join(list_pretrained()) or "none installed"
    raise FerkitError(
        f"{key}: no such model file or shipped model (shipped: {shipped}; or a .ckpt/.pt "
        "checkpoint, an .onnx file or a run folder)"
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
