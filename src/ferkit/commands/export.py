"""ferkit export MODEL --format onnx|torch [--out PATH]; ferkit export --shipped"""

from __future__ import annotations

import json
import sys

from ferkit.commands._args import mebibytes, out_file


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
        "'ferkit predict --model FILE.pt' loads. --shipped regenerates the package's "
        "ferkit/weights/<name>.onnx from <name>.pt (maintainers, after replacing a shipped "
        "model). Needs PyTorch and onnx: pip install 'ferkit[train]'.",
    )
    p.add_argument(
        "model", nargs="?", help="a shipped model name ('default', 'fast'), a best.ckpt, a slim .pt file, or a run folder"
    )
    p.add_argument(
        "--shipped",
        action="store_true",
        help="regenerate the .onnx of every shipped model (or of MODEL) from its .pt inside "
        "the package, checking parity within 1e-4",
    )
    p.add_argument(
        "--format", default="onnx", choices=["onnx", "torch"], help="output format (default: onnx)"
    )
    p.add_argument(
        "--out", type=out_file, help="output file (default: next to the checkpoint, or ./default.onnx / ./default.pt for the shipped model)"
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument(
        "--half", action="store_true", help="torch format: store fp16 weights (half the size)"
    )
    p.add_argument(
        "--no-check", action="store_true", help="ONNX: skip the onnxruntime parity check"
    )
    p.add_argument(
        "--tta",
        choices=["none", "mirror", "ten-crop"],
        default=None,
        help="record the test-time views the Recognizer (and 'ferkit predict') use by default "
        "with the exported file: mirror, ten-crop (models trained on crops), or none "
        "(default: keep the source's setting)",
    )
    p.add_argument(
        "--max-file-mb", type=mebibytes, metavar="MIB",
        help="no file over this size: ONNX weights go to OUT.data0, OUT.data1... beside the graph "
        "(keep them together); an ensemble's torch form gets one file per member (STEM.m0.pt...)",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ferkit.errors import FerkitError
    from ferkit.inference.export import export_model

    if args.shipped:
        return _run_shipped(args)
    if not args.model:
        raise FerkitError("give a MODEL to export ('default' or a checkpoint), or --shipped")
    if args.half and args.format != "torch":
        raise FerkitError("--half applies to --format torch only")
    res = export_model(
        args.model, args.format, args.out, half=args.half, opset=args.opset,
        check=not args.no_check, tta=args.tta, max_file_mb=args.max_file_mb,
    )
    if args.json:
        print(json.dumps(res))
        return 0
    extra = f" in {len(res['files'])} files" if len(res["files"]) > 1 else ""
    print(
        f"wrote {res['path']} ({res['bytes'] / 1e6:.2f} MB{extra}, {res['format']}, model {res['version']})"
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


def _run_shipped(args) -> int:
    from ferkit.errors import FerkitError
    from ferkit.inference.export import export_shipped

    if args.out or args.half or args.format != "onnx":
        raise FerkitError("--shipped writes the package's .onnx files: no --out/--half/--format")
    results = export_shipped([args.model] if args.model else None, opset=args.opset)
    for res in results:
        if args.json:
            print(json.dumps(res))
        else:
            print(
                f"wrote {res['path']} ({res['bytes'] / 1e6:.2f} MB), onnxruntime vs PyTorch: "
                f"max |probability difference| = {res['max_abs_diff']:.2e}"
            )
    return 0
