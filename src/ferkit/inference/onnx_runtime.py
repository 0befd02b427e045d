"""Running ferkit ONNX models with onnxruntime, without PyTorch.

This is the inference path of the base install (``pip install ferkit``): it needs
numpy and onnxruntime only. Exporting a model *to* ONNX (``ferkit.inference.export``)
needs PyTorch and the ``onnx`` package (the ``train`` extra).

A ferkit ``.onnx`` file is self-describing. The graph takes the preprocessed face
batch ``input`` (B, C, S, S), float32, and returns ``logits`` (B, num_classes);
the batch axis is dynamic. Its metadata (``ferkit.*`` keys, JSON values where
structured) says how to feed it and name its outputs:

* ``ferkit.labels``: class names in output order (JSON list);
* ``ferkit.input_config``: ``size``, ``channels``, ``mean``, ``std``
  (:class:`ferkit.models.input_config.InputConfig`): a face crop is resized to
  S x S, converted to C channels, scaled to [0, 1], then ``(x - mean) / std``;
* ``ferkit.model``, ``ferkit.version``: architecture name and model identity;
* ``ferkit.meta`` (optional): the source checkpoint's ``meta`` dict as JSON, which
  carries any recommended test-time settings (e.g. ``{"tta": {"mirror": true}}``).
"""

from __future__ import annotations

import importlib
import json
import os

import numpy as np

from ferkit.errors import FerkitError

#: Prefix of ferkit's keys in an ONNX file's ``metadata_props``.
META_PREFIX = "ferkit."


def onnxruntime_available() -> bool:
    """Whether onnxruntime can be imported here (a base-install dependency)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def onnx_session(src: bytes | str | os.PathLike, threads: int = 2):
    """An onnxruntime CPU session and the ferkit metadata of the graph.

    Args:
        src: serialised model bytes or an ``.onnx`` path.
        threads: intra-op threads (2 by default: the size of a small CPU box,
            and it keeps one process from taking every core of a server).

    Returns:
        (session, meta) where meta has ``labels`` (list), ``input_config`` (dict),
        ``model``, ``version`` (str) and ``meta`` (dict, empty when absent).

    Raises:
        FerkitError: onnxruntime missing, the file does not load, or it has no
            ferkit metadata.
    """
    ort = require("onnxruntime", "pip install onnxruntime (a dependency of ferkit)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    # No busy-waiting after a run: onnxruntime's workers otherwise spin on the cores for
    # a while, and the face detector (OpenCV) that runs next on the same cores slows
    # down (benchmarks/bench_inference.py, photo latency).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    name = "ONNX bytes" if isinstance(src, bytes) else os.fspath(src)
    try:
        sess = ort.InferenceSession(
            src if isinstance(src, bytes) else os.fspath(src),
            sess_options=opts,
            providers=["CPUExecutionProvider"],
        )
    except Exception as e:  # noqa: BLE001 - any load failure means a bad file
        raise FerkitError(
            f"{name}: not a loadable ONNX model "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    meta = read_metadata(sess.get_modelmeta().custom_metadata_map, name)
    check_shapes(sess, meta, name)
    return sess, meta


def read_metadata(raw: dict[str, str], name: str = "ONNX model") -> dict:
    """ferkit's metadata from an ONNX ``custom_metadata_map`` (see the module doc).

    Raises:
        FerkitError: the ``ferkit.labels`` / ``ferkit.input_config`` keys are
            missing or not valid JSON.
    """
    from ferkit.models.input_config import InputConfig

    if META_PREFIX + "labels" not in raw or META_PREFIX + "input_config" not in raw:
        raise FerkitError(f"{name}: ONNX file without ferkit metadata (export it with 'ferkit export')")
    try:
        meta = {
            "labels": list(json.loads(raw[META_PREFIX + "labels"])),
            "input_config": dict(json.loads(raw[META_PREFIX + "input_config"])),
            "model": raw.get(META_PREFIX + "model", "model"),
            "version": raw.get(META_PREFIX + "version", ""),
            "meta": dict(json.loads(raw.get(META_PREFIX + "meta") or "{}")),
        }
        # Parse once here so a bad value is this one-line error, not a crash later.
        InputConfig.from_dict(meta["input_config"])
    except (ValueError, TypeError, KeyError) as e:
        raise FerkitError(f"{name}: unreadable ferkit metadata ({type(e).__name__}: {e})") from None
    if not meta["labels"] or not all(isinstance(x, str) and x for x in meta["labels"]):
        raise FerkitError(f"{name}: ferkit.labels must be a non-empty list of names")
    return meta


def check_shapes(sess, meta: dict, name: str = "ONNX model") -> None:
    """The graph's input (B, C, S, S) and output (B, K) must match the metadata.

    Raises:
        FerkitError: another input layout, or K != number of labels (a file whose
            metadata was edited or copied from another model).
    """
    from ferkit.models.input_config import InputConfig

    cfg = InputConfig.from_dict(meta["input_config"])
    inp, out = sess.get_inputs()[0].shape, sess.get_outputs()[0].shape
    want = [cfg.channels, cfg.size, cfg.size]
    if len(inp) != 4 or any(isinstance(d, int) and d != w for d, w in zip(inp[1:], want)):
        raise FerkitError(f"{name}: graph input {inp} does not match its input config (B, {', '.join(map(str, want))})")
    k = out[-1] if out else None
    if len(out) != 2 or (isinstance(k, int) and k != len(meta["labels"])):
        raise FerkitError(f"{name}: graph output {out} does not match its {len(meta['labels'])} labels")


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (N, K), numerically stable; float32 in, float32 out."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def require(module: str, hint: str):
    """Import an optional module, or raise a one-line FerkitError with ``hint``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FerkitError(f"this needs the package {module}: {hint}") from None
