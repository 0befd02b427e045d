"""int8 dynamic quantization of a ferkit ONNX graph (the shipped ``default-int8``)."""

from __future__ import annotations

import json
from pathlib import Path

from ferkit.inference.onnx_runtime import META_PREFIX, require


def quantize_int8(fp32_onnx: bytes, version_suffix: str = "-int8") -> bytes:
    """int8 dynamic quantization of a ferkit ONNX graph (float32 initializers).

    The weights of MatMul/Gemm (fully connected) layers become int8 and their
    activations are quantized on the fly (``onnxruntime.quantization.
    quantize_dynamic``). Convolutions stay float: as ``ConvInteger`` they ran about
    4x slower on onnxruntime's CPU kernels (benchmarks/bench_quantize.py --ops all).
    The ferkit metadata is kept; ``ferkit.version`` gets ``version_suffix`` and
    ``ferkit.quantization`` says what was done.
    """
    onnx = require("onnx", "pip install 'ferkit[train]'")
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32_onnx)
        meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
        quantize_dynamic(
            str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
        )
        proto = onnx.load(str(dst))
    meta[META_PREFIX + "version"] = meta.get(META_PREFIX + "version", "") + version_suffix
    meta[META_PREFIX + "quantization"] = "int8 dynamic, MatMul/Gemm weights (onnxruntime)"
    # The source's measured figures (accuracy, speed) are the fp32 model's, not this one's.
    own = json.loads(meta.get(META_PREFIX + "meta") or "{}")
    for key in ("publictest", "val", "speed"):
        own.pop(key, None)
    meta[META_PREFIX + "meta"] = json.dumps(own, sort_keys=True, default=str)
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "ferkit"
    return proto.SerializeToString()
