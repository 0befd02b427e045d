"""int8 dynamic quantization of the shipped ONNX model: accuracy change and speed.

Quantizes the shipped model's float32 graph with ``onnxruntime.quantization.
quantize_dynamic`` (int8 weights of the MatMul/Gemm layers, activations quantized
on the fly) and compares it with the float model that ships, in the same run:

* accuracy on FER2013 PublicTest (the ``test/<class>/PublicTest_*.jpg`` folders,
  3,589 pre-cropped 48x48 faces, no face detection), overall and per class;
* agreement of the two models' labels;
* classification throughput, batch 256, and single-face latency, N threads;
* file size.

Issue 18's rule: ship the int8 model only if accuracy drops by 0.3 points or less.

Usage::

    python benchmarks/bench_quantize.py [--data ../shared/datasets/fer2013] [--threads 2]

Needs the train extra (PyTorch and onnx, to rebuild the float32 graph and quantize).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def load_publictest(root: Path, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for k, name in enumerate(labels):
        for f in sorted((root / "test" / name).glob("PublicTest_*")):
            xs.append(np.asarray(Image.open(f).convert("L").resize((48, 48))))
            ys.append(k)
    return np.stack(xs), np.asarray(ys)


def faces_per_second(rec, crops: np.ndarray, seconds: float = 3.0) -> float:
    rec.classify_faces(crops)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        rec.classify_faces(crops)
        n += len(crops)
    return n / (time.perf_counter() - t0)


def latency_ms(rec, crop: np.ndarray, reps: int = 300) -> float:
    for _ in range(20):
        rec.classify_faces(crop)
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        rec.classify_faces(crop)
        t.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(t))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "fer2013")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="also keep the int8 model here")
    ap.add_argument(
        "--ops",
        default="MatMul,Gemm",
        help="op types to quantize (default MatMul,Gemm: the FC layers, 98%% of the weights; "
        "'all' also turns convolutions into ConvInteger, which onnxruntime runs slowly on CPU)",
    )
    args = ap.parse_args()
    if not (args.data / "test").is_dir():
        print(f"no FER2013 folders at {args.data}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as scratch:  # the fp32 and int8 graphs, ~30 MB
        return measure(args, Path(scratch))


def measure(args, tmp: Path) -> int:
    """Quantize the shipped default in ``tmp`` and compare it with the float model."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ferkit.inference.export import _fp16_storage, load_model, onnx_bytes
    from ferkit.inference.pretrained import shipped_path
    from ferkit.inference.recognizer import Recognizer

    model, spec, _ = load_model("default")
    fp32 = tmp / "fp32.onnx"
    # as `ferkit export --shipped` makes default-int8: BatchNorm unfolded, so the convolutions
    # keep the .pt's fp16 values and are stored in fp16 after quantization
    fp32.write_bytes(onnx_bytes(model, spec, fp16_storage=False, fold=False))
    int8 = args.out or tmp / "int8.onnx"
    ops = None if args.ops == "all" else args.ops.split(",")
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=ops)
    proto = onnx.load(str(int8))
    _fp16_storage(proto)
    Path(int8).write_bytes(proto.SerializeToString())

    shipped = Recognizer.from_pretrained(shipped_path("default", "onnx"), threads=args.threads)
    quant = Recognizer.from_pretrained(int8, backend="onnx", threads=args.threads)
    x, y = load_publictest(args.data, shipped.labels)
    print(f"FER2013 PublicTest: {len(y)} faces; {os.cpu_count()} CPUs visible, {args.threads} threads; "
          f"quantized ops: {args.ops}")
    preds = {}
    for name, rec in (("float (shipped)", shipped), ("int8 dynamic", quant)):
        p = rec.classify_faces(x)
        preds[name] = p.argmax(1)
    acc = {k: 100 * float((v == y).mean()) for k, v in preds.items()}
    for k, v in preds.items():
        per = " ".join(f"{lab} {100 * (v[y == i] == i).mean():.1f}" for i, lab in enumerate(shipped.labels))
        print(f"{k:16s} accuracy {acc[k]:.2f}%  ({per})")
    drop = acc["float (shipped)"] - acc["int8 dynamic"]
    agree = 100 * float((preds["float (shipped)"] == preds["int8 dynamic"]).mean())
    print(f"accuracy change: {-drop:+.2f} points; same label on {agree:.2f}% of faces")

    batch = x[:256]
    fs, fq = faces_per_second(shipped, batch), faces_per_second(quant, batch)
    ls, lq = latency_ms(shipped, x[:1]), latency_ms(quant, x[:1])
    print(f"batch 256: float {fs:,.0f} faces/s, int8 {fq:,.0f} faces/s ({fq / fs:.2f}x)")
    print(f"one face:  float {ls:.3f} ms, int8 {lq:.3f} ms ({ls / lq:.2f}x faster)")
    sf, sq = shipped_path("default", "onnx").stat().st_size, Path(int8).stat().st_size
    print(f"file: float (fp16-stored) {sf / 1e6:.2f} MB, int8 {sq / 1e6:.2f} MB")
    print(f"ship int8 (drop <= 0.3 points)? {'yes' if drop <= 0.3 else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
