"""ferkit export MODEL --format onnx|torch [--out PATH]"""

from __future__ import annotations

import json
import sys


def add_parser(sub):
    p = sub.add_parser(
        "export",
        help="export a model to ONNX or the slim torch format",
        description="Export 'default' (the shipped model) or a checkpoint. ONNX: a graph with a "
        "dynamic batch axis that takes the preprocessed face batch 'input' (B, C, S, S) and returns "
        "'logits'; labels and the input config are stored in the file's metadata, so "
        "'ferkit predict --model FILE.onnx --backend onnx' and Recognizer(..., backend='onnx') can "
        "use it directly. After an ONNX export, onnxruntime's probabilities are compared with "
        "PyTorch's on a random batch. torch: the slim weights file (optionally fp16) that "
        "'ferkit predict --model FILE.pt' loads.",
    )
    p.add_argument("model", help="'default', a best.ckpt, a slim .pt file, or a run folder")
    p.add_argument(
        "--format", default="onnx", choices=["onnx", "torch"], help="output format (default: onnx)"
    )
    p.add_argument(
        "--out", help="output file (default: next to the checkpoint, or ./ferkit-default.*)"
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument(
        "--half", action="store_true", help="torch format: store fp16 weights (half the size)"
    )
    p.add_argument(
        "--no-check", action="store_true", help="ONNX: skip the onnxruntime parity check"
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ferkit.errors import FerkitError
    from ferkit.inference.export import export_model

    if args.half and args.format != "torch":
        raise FerkitError("--half applies to --format torch only")
    res = export_model(
        args.model, args.format, args.out, half=args.half, opset=args.opset, check=not args.no_check
    )
    if args.json:
        print(json.dumps(res))
        return 0
    print(
        f"wrote {res['path']} ({res['bytes'] / 1e6:.2f} MB, {res['format']}, model {res['version']})"
    )
    if "max_abs_diff" in res:
        ok = res["max_abs_diff"] <= 1e-4
        print(
            f"onnxruntime vs PyTorch: max |probability difference| = {res['max_abs_diff']:.2e} "
            f"({'ok' if ok else 'ABOVE 1e-4'})",
            file=sys.stderr,
        )
        if not ok:
            return 1
    return 0
