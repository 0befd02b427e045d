"""Loading a Recognizer: which file a model name means, which backend runs it, on which
device. :meth:`ferkit.inference.recognizer.Recognizer.from_pretrained` calls
:func:`load_recognizer`; its docstring documents the arguments.

PyTorch is imported only when the file or the device needs it (a ``.pt``/``.ckpt``
file, ``backend="torch"``, a GPU): on the CPU with the shipped model or an ``.onnx``
file, loading stays torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path

from ferkit.errors import FerkitError


def load_recognizer(
    cls,
    name_or_path: str | os.PathLike = "default",
    *,
    backend: str = "auto",
    detector="default",
    device: str = "cpu",
    threads: int | None = None,
    mirror: bool = False,
    min_face: int | None = None,
    tta: str | None = None,
    align: bool = True,
):
    """An instance of ``cls`` (a Recognizer class) for a model name or file; see
    :meth:`~ferkit.inference.recognizer.Recognizer.from_pretrained` for the arguments.

    Raises:
        FerkitError: missing or unreadable model, unknown backend, or a PyTorch
            checkpoint / backend / GPU without PyTorch installed.
    """
    from ferkit.inference.pretrained import PRETRAINED, model_version, resolve_pretrained
    from ferkit.models.input_config import InputConfig

    backend = backend.lower()
    if backend not in ("auto", "torch", "onnx"):
        raise FerkitError(f"unknown backend {backend!r}; choose auto, torch or onnx")
    # A shipped model has an .onnx (base install) and a .pt file: PyTorch gets the
    # .pt, everything on the CPU the .onnx, so "auto" on a CPU never imports torch.
    wants_torch = backend == "torch" or (backend == "auto" and _pick_device(device) != "cpu")
    path = resolve_pretrained(name_or_path, prefer="torch" if wants_torch else "onnx")
    if backend == "auto":
        backend = resolve_backend(path, device)
    if path.suffix.lower() == ".onnx":
        if backend != "onnx":
            raise FerkitError(f"{path}: an ONNX file needs backend='onnx' (--backend onnx)")
        from ferkit.inference.onnx_runtime import onnx_session

        sess, meta = onnx_session(path, threads=threads or 2)
        return cls(
            labels=meta["labels"],
            input_config=InputConfig.from_dict(meta["input_config"]),
            model_name=meta["model"],
            version=meta["version"] or meta["model"],
            name=os.fspath(name_or_path),
            session=sess,
            detector=detector,
            mirror=mirror,
            min_face=min_face,
            tta=tta,
            align=align,
        )
    # Only PyTorch reads a .pt/.ckpt. For a shipped model the user asked for torch
    # (backend or GPU device), for a file the file needs it: say which, in one line.
    if os.fspath(name_or_path) in PRETRAINED:
        _require_torch("the torch backend" if _pick_device(device) == "cpu" else f"device {device!r}")
    _require_torch(f"{path}: loading a PyTorch checkpoint")
    from ferkit.models.checkpoint import load_model_any, require_classifier

    model, spec = load_model_any(path)  # a checkpoint, slim file or soft-voting ensemble
    require_classifier(spec, model)
    version = model_version(spec, path)
    common = {
        "labels": spec["labels"],
        "input_config": model.input_config,
        "model_name": spec["model"],
        "version": version,
        "name": os.fspath(name_or_path),
        "detector": detector,
        "mirror": mirror,
        "min_face": min_face,
        "tta": tta,
        "align": align,
    }
    if backend == "onnx":
        from ferkit.inference.export import onnx_bytes, onnx_session

        sess, _ = onnx_session(
            onnx_bytes(model, {**spec, "version": version}), threads=threads or 2
        )
        return cls(session=sess, **common)
    device = _pick_device(device)
    import torch

    # Channels-last weights and inputs keep every convolution on oneDNN's fast path
    # on the CPU (benchmarks/bench_inference.py, batch 256: 571 -> 994 faces/s).
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    return cls(model=model, device=device, **common)


def onnx_available() -> bool:
    """Whether a PyTorch checkpoint can be converted to run on onnxruntime here.

    That needs PyTorch, the ``onnx`` package (both in the ``train`` extra) and
    onnxruntime (a base dependency). ONNX files themselves only need onnxruntime.
    """
    return all(_importable(m) for m in ("torch", "onnx", "onnxruntime"))


def resolve_backend(path: str | os.PathLike, device: str = "cpu") -> str:
    """What ``backend="auto"`` means for a model file on a device: "onnx" or "torch".

    ONNX files (the shipped models' default form) always run on onnxruntime. A
    torch checkpoint runs on onnxruntime when it would run on the CPU and it can be
    converted here (:func:`onnx_available`; about 4x PyTorch's CPU throughput for
    the shipped model, benchmarks/bench_inference.py); on a GPU, or without the
    converter, it stays on PyTorch.
    """
    if Path(path).suffix.lower() == ".onnx":
        return "onnx"
    return "onnx" if _pick_device(device) == "cpu" and onnx_available() else "torch"


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a None entry in sys.modules (blocked)
        return False


def _require_torch(what: str) -> None:
    """Raise a one-line FerkitError naming the extra when PyTorch is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise FerkitError(
            f"{what} needs PyTorch, which is not installed: pip install 'ferkit[train]' "
            "(or run an exported .onnx model: 'ferkit export MODEL' where torch is installed)"
        ) from None


def _pick_device(device: str) -> str:
    if device == "auto":
        # Without PyTorch there is no GPU backend: "auto" is the CPU (onnxruntime).
        if not _importable("torch"):
            return "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
