"""Exporting trained models: ONNX (for onnxruntime) and the slim torch format.

The ONNX graph takes the *preprocessed* face batch ``input`` (B, C, S, S),
float32, already scaled and normalised as the model's ``input_config`` says,
and returns ``logits`` (B, num_classes). The batch axis is dynamic. Everything
a runtime needs to preprocess and name the outputs is stored in the file's
metadata (``ferkit.labels``, ``ferkit.input_config``, ``ferkit.model``,
``ferkit.version``), so an ``.onnx`` file is self-describing.

onnx/onnxruntime are optional (``pip install 'ferkit[onnx]'``) and imported
only here, when used.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from ferkit.errors import FerkitError

OPSET = 17
META_PREFIX = "ferkit."


def load_model(ref: str | os.PathLike = "default"):
    """Load ``"default"`` or a checkpoint path for inference. Returns (model, spec, path)."""
    from ferkit.inference.pretrained import model_version, resolve_pretrained
    from ferkit.models.checkpoint import load_checkpoint

    path = resolve_pretrained(ref)
    if path.suffix.lower() == ".onnx":
        raise FerkitError(f"{path}: already an ONNX file; export needs a torch checkpoint")
    model, spec = load_checkpoint(path)
    spec["version"] = model_version(spec, path)
    return model, spec, path


def onnx_bytes(model, spec: dict, opset: int = OPSET) -> bytes:
    """Serialise ``model`` to ONNX with a dynamic batch axis and ferkit metadata."""
    import torch

    onnx = _require("onnx")
    cfg = model.input_config
    dummy = torch.zeros(2, cfg.channels, cfg.size, cfg.size)
    buf = io.BytesIO()
    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter warns that it is legacy; it is chosen on purpose (see below).
        warnings.simplefilter("ignore", DeprecationWarning)
        # The TorchScript-based exporter: it handles these plain CNNs without the
        # extra onnxscript dependency that the dynamo exporter needs.
        torch.onnx.export(
            model,
            (dummy,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    meta = {
        "labels": json.dumps(list(spec["labels"])),
        "input_config": json.dumps(cfg.to_dict()),
        "model": str(spec.get("model", getattr(model, "model_name", "model"))),
        "version": str(spec.get("version", "")),
    }
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + k, v
    proto.producer_name = "ferkit"
    return proto.SerializeToString()


def onnx_session(src: bytes | str | os.PathLike, threads: int = 2):
    """An onnxruntime CPU session and the ferkit metadata of the graph.

    Args:
        src: serialised model bytes or an ``.onnx`` path.
        threads: intra-op threads (2 by default: the size of a small CPU box,
            and it keeps one process from taking every core of a server).

    Returns:
        (session, meta) where meta has ``labels``, ``input_config`` (dict), ``model``, ``version``.
    """
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    # No busy-waiting after a run: onnxruntime's workers otherwise spin on the cores for
    # a while, and the face detector (OpenCV) that runs next on the same cores slows
    # down (benchmarks/bench_inference.py, photo latency).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        sess = ort.InferenceSession(
            src if isinstance(src, bytes) else os.fspath(src),
            sess_options=opts,
            providers=["CPUExecutionProvider"],
        )
    except Exception as e:  # noqa: BLE001 - any load failure means a bad file
        raise FerkitError(
            f"{src if not isinstance(src, bytes) else 'ONNX bytes'}: not a loadable ONNX model "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    raw = sess.get_modelmeta().custom_metadata_map
    if META_PREFIX + "labels" not in raw:
        raise FerkitError(
            f"{src}: ONNX file without ferkit metadata (export it with 'ferkit export')"
        )
    meta = {
        "labels": json.loads(raw[META_PREFIX + "labels"]),
        "input_config": json.loads(raw[META_PREFIX + "input_config"]),
        "model": raw.get(META_PREFIX + "model", "model"),
        "version": raw.get(META_PREFIX + "version", ""),
    }
    return sess, meta


def export_model(
    ref: str | os.PathLike,
    fmt: str = "onnx",
    out: str | os.PathLike | None = None,
    *,
    half: bool = False,
    opset: int = OPSET,
    check: bool = True,
) -> dict:
    """Export ``"default"`` or a checkpoint to ONNX or the slim torch format.

    Args:
        ref: "default" or a checkpoint path.
        fmt: "onnx" or "torch".
        out: output file; default ``<checkpoint stem>.onnx``/``.pt`` next to a
            checkpoint, or ``ferkit-default.*`` in the current folder.
        half: torch format only: store fp16 weights (half the size).
        opset: ONNX opset.
        check: ONNX only: compare onnxruntime's probabilities with PyTorch's on a random batch.

    Returns:
        dict with ``path``, ``bytes`` and, for a checked ONNX export, ``max_abs_diff``.
    """
    fmt = fmt.lower()
    if fmt not in ("onnx", "torch"):
        raise FerkitError(f"unknown export format {fmt!r}; choose onnx or torch")
    model, spec, src = load_model(ref)
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    if out is None:
        out = (
            Path(f"ferkit-{ref}{suffix}")
            if os.fspath(ref) == "default"
            else src.with_suffix(suffix)
        )
    out = Path(out)
    if out.resolve() == src.resolve():
        raise FerkitError(f"{out}: refusing to overwrite the source checkpoint; pass --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "path": str(out),
        "format": fmt,
        "model": spec["model"],
        "version": spec["version"],
    }
    if fmt == "torch":
        from ferkit.models.checkpoint import save_slim

        meta = dict(spec.get("meta") or {})
        meta.setdefault("version", spec["version"])
        save_slim(model, spec, out, half=half, meta=meta)
    else:
        data = onnx_bytes(model, spec, opset)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, out)
        if check:
            result["max_abs_diff"] = parity(model, out)
    result["bytes"] = out.stat().st_size
    return result


def parity(model, onnx_src, n: int = 16, seed: int = 0) -> float:
    """Largest absolute difference between PyTorch and onnxruntime class probabilities."""
    import torch

    cfg = model.input_config
    x = (
        np.random.default_rng(seed)
        .standard_normal((n, cfg.channels, cfg.size, cfg.size))
        .astype(np.float32)
    )
    sess, _ = onnx_session(onnx_src, threads=1)
    with torch.no_grad():
        p_torch = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
    p_onnx = softmax(sess.run(None, {"input": x})[0])
    return float(np.abs(p_torch - p_onnx).max())


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise FerkitError(
            f"this needs the optional package {module}: pip install 'ferkit[onnx]'"
        ) from None
