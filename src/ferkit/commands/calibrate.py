"""ferkit calibrate MODEL --data PATH [--out FILE] [--report-split test] [--plot DIR]"""

from __future__ import annotations

import json

from ferkit.commands._args import json_option, out_file, run_options


def add_parser(sub):
    p = sub.add_parser(
        "calibrate",
        help="fit a temperature so a model's probabilities mean what they say",
        parents=[run_options(), json_option("print the result as one JSON object")],
        description="Temperature scaling (Guo et al. 2017): find the T that makes "
        "softmax(logits / T), averaged over the model's test-time views, fit a validation split "
        "best (lowest negative log-likelihood), report the expected calibration error (ECE, 15 "
        "bins) before and after, and write a copy of the model that carries T (a slim .pt, or "
        ".onnx). Predictions (the top class) never change; confidences do. A run's checkpoint "
        "is fitted on its own validation carve; PublicTest is for reporting only "
        "(--report-split test).",
    )
    p.add_argument("model", help="a shipped model name ('default', 'fast'), a best.ckpt, a slim .pt file, or a run folder")
    p.add_argument("--data", required=True, help="dataset path (the one the model trained on)")
    p.add_argument("--split", default="val",
                   help="split to fit T on (default: val, the run's validation carve)")
    p.add_argument("--report-split", metavar="SPLIT",
                   help="also report ECE before and after on this split (e.g. test); never fitted on")
    p.add_argument("--tta", choices=["none", "mirror", "ten-crop"], default=None,
                   help="test-time views to fit under (default: what the model file records)")
    p.add_argument("--out", type=out_file,
                   help="write the calibrated model here (.pt: slim torch file; .onnx); default: "
                   "report only")
    p.add_argument("--half", action="store_true", help="--out .pt: store fp16 weights")
    p.add_argument("--plot", metavar="DIR", help="write reliability diagrams (before/after) into DIR")
    p.set_defaults(func=run)
    return p


def _line(name: str, r: dict) -> str:
    return (f"  {name:<22} T={r['temperature']:<7g} accuracy {r['accuracy']:.4f}  NLL {r['nll']:.4f}  "
            f"ECE {r['ece'] * 100:.2f}%")


def run(args) -> int:
    from pathlib import Path

    from ferkit.errors import FerkitError
    from ferkit.evaluation.calibration import calibrate
    from ferkit.evaluation.evaluate import resolve_device

    if args.half and not (args.out and args.out.endswith(".pt")):
        raise FerkitError("--half applies to --out FILE.pt only")
    if args.out and Path(args.out).suffix not in (".pt", ".onnx"):
        raise FerkitError(f"--out {args.out}: give a .pt or .onnx file name")
    res = calibrate(args.model, args.data, split=args.split, report_split=args.report_split, tta=args.tta,
                    batch_size=args.batch_size, device=resolve_device(args.device),
                    progress=not args.no_progress)
    res.pop("model"), res.pop("spec")
    if args.out:
        from ferkit.inference.export import export_model

        fmt = "onnx" if args.out.endswith(".onnx") else "torch"
        exp = export_model(args.model, fmt, args.out, half=args.half, tta=args.tta,
                           temperature=res["temperature"])
        res["out"] = exp["path"]
    if args.plot:
        from ferkit.evaluation.plots import plot_reliability

        folder = Path(args.plot)
        folder.mkdir(parents=True, exist_ok=True)
        res["plots"] = []
        for part in (res["fit"], res["report"]):
            if part is None:
                continue
            png = folder / f"reliability_{part['split']}.png"
            b, a = part["before"], part["after"]
            plot_reliability({f"before (T={b['temperature']:g})": b, f"after (T={a['temperature']:g})": a}, png,
                             f"{Path(str(args.model)).name}, {part['split']} ({part['n']} faces), tta {res['tta']}")
            res["plots"].append(str(png))
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"temperature {res['temperature']:g} (fitted on {res['fit']['split']}, {res['fit']['n']} faces, "
          f"tta {res['tta']})")
    for part in (res["fit"], res["report"]):
        if part is not None:
            print(f"{part['split']} ({part['n']} faces):")
            print(_line("before", part["before"]))
            print(_line("after", part["after"]))
    if "out" in res:
        print(f"wrote {res['out']}")
    for png in res.get("plots", []):
        print(f"wrote {png}")
    return 0
