"""Exporting trained models: ONNX (for onnxruntime) and the slim torch format.

The ONNX graph and its metadata are described in
:mod:`ferkit.inference.onnx_runtime`, which runs them without PyTorch. Exporting
needs PyTorch and the ``onnx`` package (``pip install 'ferkit[train]'``).

The shipped models are exported by :func:`export_shipped` (``ferkit export
--shipped``): ``ferkit/weights/<name>.pt`` (the torch source of truth, kept for
fine-tuning, distillation and the GPU backend) -> ``ferkit/weights/<name>.onnx``
(what the base install runs).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ferkit.errors import FerkitError

# Re-exported: callers used to import the runtime half from here.
from ferkit.inference.onnx_runtime import META_PREFIX, onnx_session, require, softmax
from ferkit.inference.quantize import quantize_int8

OPSET = 17
#: No shipped file over this size (MiB): a bigger graph's weights go to files beside it.
SHIPPED_MAX_MB = 15


def load_model(ref: str | os.PathLike = "default"):
    """Load ``"default"``, a checkpoint or an ensemble file for inference. Returns (model, spec, path)."""
    from ferkit.inference.pretrained import model_version, resolve_pretrained
    from ferkit.models.checkpoint import load_model_any

    path = resolve_pretrained(ref)
    if path.suffix.lower() == ".onnx":
        raise FerkitError(f"{path}: already an ONNX file; export needs a torch checkpoint")
    model, spec = load_model_any(path)  # a checkpoint, slim file or soft-voting ensemble
    spec["version"] = model_version(spec, path)
    return model, spec, path


def onnx_bytes(model, spec: dict, opset: int = OPSET, *, fp16_storage: bool = True, fold: bool | None = None) -> bytes:
    """Serialise ``model`` to ONNX with a dynamic batch axis and ferkit metadata.

    ``fp16_storage``: store weights that are exactly fp16 values as fp16 (see
    :func:`_fp16_storage`); turn it off for tools that expect plain float32
    initializers (e.g. ``onnxruntime.quantization``).
    ``fold``: fold BatchNorm into the convolutions (default: only without
    ``fp16_storage``, where it would turn fp16 weights into fp32 values).
    """
    import torch

    onnx = require("onnx", "pip install 'ferkit[train]'")
    cfg = model.input_config
    dummy = torch.zeros(2, cfg.channels, cfg.size, cfg.size)
    buf = io.BytesIO()
    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter warns that it is legacy; it is chosen on purpose (see below).
        warnings.simplefilter("ignore", DeprecationWarning)
        # An ensemble resizes its [0, 1] input for each member inside the graph; the sizes
        # it reads become constants, which is right: only the batch axis is dynamic.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
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
            # Folding BatchNorm into the convolutions makes their fp16 weights fp32 values:
            # unfolded, a --half model's file is half the size (vgg-fer 25 -> 15.7 MB), and
            # onnxruntime fuses Conv+BN when the session is created (same speed).
            do_constant_folding=not fp16_storage if fold is None else fold,
        )
    proto = onnx.load_from_string(buf.getvalue())
    meta = {
        "labels": json.dumps(list(spec["labels"])),
        "input_config": json.dumps(cfg.to_dict()),
        "model": str(spec.get("model", getattr(model, "model_name", "model"))),
        "version": str(spec.get("version", "")),
        # The checkpoint's own meta (training provenance, recommended test-time
        # settings) travels too, so nothing a runtime may need stays in the .pt.
        "meta": json.dumps(spec.get("meta") or {}, sort_keys=True, default=str),
    }
    if spec.get("source_sha256"):
        meta["source_sha256"] = spec["source_sha256"]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + k, v
    proto.producer_name = "ferkit"
    if fp16_storage:
        _fp16_storage(proto)
    return proto.SerializeToString()


def _fp16_storage(proto) -> None:
    """Store float32 weights that are exactly fp16 values (e.g. from a ``--half`` file) as fp16.

    Each such initializer becomes an fp16 tensor plus a ``Cast`` to float32, which
    onnxruntime folds into a constant when the session is created: the graph
    computes with the very same float32 weights, at no run-time cost, from a file
    half the size (the shipped model: 19.0 -> 9.5 MB). Tensors that fp16 cannot hold
    exactly (anything trained and saved in fp32) stay float32.
    """
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for init in proto.graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < 256:
            continue  # tiny tensors gain nothing
        half = arr.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), arr):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, name + "__fp16"))
        casts.append(helper.make_node("Cast", [name + "__fp16"], [name], to=TensorProto.FLOAT))
    if casts:
        nodes = casts + list(proto.graph.node)
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)


def export_model(
    ref: str | os.PathLike,
    fmt: str = "onnx",
    out: str | os.PathLike | None = None,
    *,
    half: bool = False,
    opset: int = OPSET,
    check: bool = True,
    tta: str | None = None,
    temperature: float | None = None,
    max_file_mb: float | None = None,
) -> dict:
    """Export ``"default"`` or a checkpoint to ONNX or the slim torch format.

    Args:
        ref: "default" or a checkpoint path.
        fmt: "onnx" or "torch".
        out: output file; default ``<checkpoint stem>.onnx``/``.pt`` next to a
            checkpoint, or ``<name>.*`` (``default.onnx``) in the current folder for a
            shipped model.
        half: torch format only: store fp16 weights (half the size).
        opset: ONNX opset.
        check: ONNX only: compare onnxruntime's probabilities with PyTorch's on a random batch.
        tta: record the test-time views the Recognizer uses by default with this file
            ("none", "mirror" or "ten-crop"; ``InputConfig.tta``); None keeps the source's.
        temperature: record a calibration temperature (``InputConfig.temperature``, fitted
            by ``ferkit calibrate``); None keeps the source's.
        max_file_mb: no written file over this many MiB: ONNX weights go to files of at
            most this size beside the graph (``OUT.data0``, ``OUT.data1``..., ONNX external
            data, which onnxruntime reads from the graph's folder); an ensemble's torch form
            puts each member in its own file (``STEM.m0.pt``...). A file that would still be
            larger is an error.

    Raises:
        FerkitError: unreadable source, bad values, a file over ``max_file_mb``.

    Returns:
        dict with ``path``, ``bytes`` and, for a checked ONNX export, ``max_abs_diff``.
    """
    fmt = fmt.lower()
    if fmt not in ("onnx", "torch"):
        raise FerkitError(f"unknown export format {fmt!r}; choose onnx or torch")
    model, spec, src = load_model(ref)
    if tta is not None:
        from dataclasses import replace

        from ferkit.data.crops import check_mode

        try:
            mode = check_mode(tta)
        except ValueError as e:
            raise FerkitError(str(e)) from None
        model.input_config = replace(model.input_config, tta=None if mode == "none" else mode)
    if temperature is not None:
        from dataclasses import replace

        try:
            model.input_config = replace(model.input_config, temperature=temperature)
        except ValueError as e:
            raise FerkitError(str(e)) from None
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    if out is None:
        from ferkit.inference.pretrained import PRETRAINED

        # A shipped model is written under its own name: `ferkit export default` -> default.onnx.
        out = Path(f"{ref}{suffix}") if os.fspath(ref) in PRETRAINED else src.with_suffix(suffix)
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
    limit = None if max_file_mb is None else int(max_file_mb * 2**20)
    if spec.get("hyper_parameters"):  # from a run: its validation carve goes with the file
        from ferkit.models.checkpoint import run_split

        spec["meta"] = {**(spec.get("meta") or {}), "split": run_split(spec["hyper_parameters"])}
    if fmt == "torch":
        from ferkit.models.checkpoint import save_slim
        from ferkit.models.ensemble import Ensemble

        meta = dict(spec.get("meta") or {})
        meta.setdefault("version", spec["version"])
        if isinstance(model, Ensemble):  # members, voting weights, views, temperature
            files = model.save(out, half=half, meta=meta, member_files=limit is not None)
        else:
            save_slim(model, spec, out, half=half, meta=meta)
            files = [out]
    else:
        data = onnx_bytes(model, spec, opset)
        files = _write_onnx(data, out, limit)
        if check:
            result["max_abs_diff"] = parity(model, out)
    result["files"] = [str(f) for f in files]
    result["bytes"] = sum(f.stat().st_size for f in files)
    if limit is not None and (big := [f for f in files if f.stat().st_size > limit]):
        raise FerkitError(f"{big[0]} is {big[0].stat().st_size / 2**20:.1f} MiB, over --max-file-mb "
                          f"{max_file_mb:g}" + ("" if half or fmt == "onnx" else "; try --half"))
    return result


def _write_onnx(data: bytes, out: Path, limit: int | None) -> list[Path]:
    """Write a serialised graph to ``out``, atomically; with ``limit`` (bytes), its weights go
    to files of at most that size beside it (ONNX external data). Returns the files written."""
    if limit is None or len(data) <= limit:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, out)
        return [out]
    onnx = require("onnx", "pip install 'ferkit[train]'")
    from onnx.external_data_helper import set_external_data

    proto = onnx.load_from_string(data)
    files: list[Path] = []
    handle, used = None, 0
    try:
        for init in proto.graph.initializer:
            raw = init.raw_data
            if len(raw) < 4096:
                continue  # small tensors stay inside the graph
            if handle is None or used + len(raw) > limit:
                if handle is not None:
                    handle.close()
                files.append(out.with_name(f"{out.name}.data{len(files)}"))
                handle, used = open(files[-1], "wb"), 0  # noqa: SIM115 - closed above or below
            handle.write(raw)
            set_external_data(init, location=files[-1].name, offset=used, length=len(raw))
            init.ClearField("raw_data")
            used += len(raw)
    finally:
        if handle is not None:
            handle.close()
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(proto.SerializeToString())
    os.replace(tmp, out)
    return [out, *files]


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


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (ties a shipped ``.onnx`` to the ``.pt`` it came from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_shipped(names=None, *, opset: int = OPSET, tol: float = 1e-4) -> list[dict]:
    """Regenerate ``ferkit/weights/<name>.onnx`` from ``<name>.pt`` for shipped models.

    Every shipped model goes through this one function, so a new shipped network
    gets the same graph settings and metadata as the default one. The ONNX file
    records the SHA-256 of its ``.pt`` (``ferkit.source_sha256``): the test suite
    checks it, so a replaced ``.pt`` without a re-export is caught even without torch.
    Models listed in ``pretrained.QUANTIZED`` are made from their source's ``.pt`` by
    :func:`quantize_int8` (checked looser: int8 is not exact).

    Args:
        names: shipped model names (default: every one whose ``.pt`` is installed).
        opset: ONNX opset.
        tol: largest allowed |probability difference| between onnxruntime and PyTorch.

    Returns:
        one dict per model: ``name``, ``path``, ``bytes``, ``max_abs_diff``.

    Raises:
        FerkitError: unknown name, missing ``.pt``, or parity worse than ``tol``
            (the previous ``.onnx`` is then left in place).
    """
    from ferkit.inference.pretrained import PRETRAINED, QUANTIZED, shipped_path

    def source(name: str) -> Path:
        return shipped_path(QUANTIZED.get(name, name), "torch")

    names = list(names) if names else [n for n in PRETRAINED if source(n).is_file()]
    results = []
    for name in names:
        if name not in PRETRAINED:
            raise FerkitError(f"{name!r} is not a shipped model; shipped: {', '.join(PRETRAINED)}")
        src = source(name)
        if not src.is_file():
            raise FerkitError(f"{src}: the torch file of the shipped {name!r} model is missing")
        model, spec, _ = load_model(src)
        spec["source_sha256"] = file_sha256(src)
        out = shipped_path(name, "onnx")
        if name in QUANTIZED:
            # from the unfolded graph: the convolutions keep the .pt's fp16 values, stored as fp16
            onnx = require("onnx", "pip install 'ferkit[train]'")
            proto = onnx.load_from_string(quantize_int8(onnx_bytes(model, spec, opset, fp16_storage=False,
                                                                   fold=False)))
            _fp16_storage(proto)
            data = proto.SerializeToString()
        else:
            data = onnx_bytes(model, spec, opset)
        # Written and checked in a scratch folder beside the package's files, then moved in:
        # a graph too big for one file (an ensemble) comes with its weight files.
        with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
            files = _write_onnx(data, Path(scratch) / out.name, int(SHIPPED_MAX_MB * 2**20))
            if big := [f for f in files if f.stat().st_size > SHIPPED_MAX_MB * 2**20]:
                raise FerkitError(f"{name}: {big[0].name} would be {big[0].stat().st_size / 2**20:.1f} MiB, over "
                                  f"the {SHIPPED_MAX_MB} MiB a shipped file may have (one tensor that large)")
            diff = parity(model, files[0], n=64)
            # int8 moves probabilities a little (99.6% of PublicTest labels unchanged).
            if diff > (max(tol, 0.1) if name in QUANTIZED else tol):
                raise FerkitError(f"{name}: onnxruntime differs from PyTorch by {diff:.2e} > {tol:g}")
            for stale in out.parent.glob(f"{out.name}.data*"):
                stale.unlink()
            for f in files:
                os.replace(f, out.parent / f.name)
        results.append({"name": name, "path": str(out), "bytes": sum((out.parent / f.name).stat().st_size
                                                                     for f in files), "max_abs_diff": diff})
    return results
