"""Make a shipped model file from a trained run: calibrate, measure, record, write.

    python tools/ship/ship_model.py RUN/last.ckpt --data ../shared/datasets/fer2013 \
        --tta mirror --trained "ferkit train ferkit-vgg-cpu --max-time 122 (37 epochs, ...)" \
        --out src/ferkit/weights/default.pt --report docs/model-card/run
    ferkit export --shipped          # default.onnx and default-int8.onnx from the new .pt

Steps, all on the run's own data split (``checkpoint_split``: a run's checkpoint sees its
validation carve exactly as training did):

1. fit a temperature on the validation carve under the chosen test-time views
   (``ferkit calibrate``; PublicTest only reported), reliability diagrams into --report;
2. write the slim fp16 file carrying the views and the temperature;
3. evaluate that file on the carve and on PublicTest, plain and with its views;
4. record in its ``meta`` what ``ferkit models``, the model card and the service show:
   ``version`` (architecture + first 8 hex digits of the source checkpoint's SHA-256),
   ``publictest`` / ``val`` accuracy plain and with views, ``gflop`` (one view),
   ``trained`` (the command and hardware, as given), ``temperature``, ``data``, the run's
   ``split``, and ``speed`` when --crops-per-s is given (measured by
   benchmarks/bench_vs_fer.py; a figure without its CPU and threads is refused).

The views and checkpoint are chosen by the caller on the carve, never on PublicTest.
Prints one JSON object with every figure; --report also gets it as ``ship.json`` with the
evaluation reports (per class, confusion) and the calibration.

Exit status: 0 written, 2 a usage or data error (one line on stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def sha8(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:8]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="ship_model.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:3]))
    p.add_argument("checkpoint", help="the run's chosen checkpoint (RUN/last.ckpt or best.ckpt)")
    p.add_argument("--data", required=True, help="the dataset the run trained on (FER2013 folders or CSV)")
    p.add_argument("--out", required=True, help="the shipped file to write, e.g. src/ferkit/weights/default.pt")
    p.add_argument("--tta", choices=["none", "mirror", "ten-crop"], default="mirror",
                   help="test-time views the file records (chosen on the carve; default: mirror)")
    p.add_argument("--trained", required=True,
                   help="how it was trained: command, epochs, wall time, CPU (free text, shown on the card)")
    p.add_argument("--data-note", default="FER2013 train (Kaggle folders), research use",
                   help="what the weights were trained on and its licence")
    p.add_argument("--crops-per-s", type=float, help="measured batched 48x48 crops/s (with its views)")
    p.add_argument("--speed-cpu", help="the CPU that measured --crops-per-s, e.g. 'AMD EPYC avx512_bf16'")
    p.add_argument("--speed-threads", type=int, default=2, help="threads of that measurement (default: 2)")
    p.add_argument("--report", metavar="DIR", help="write ship.json, evaluations and reliability diagrams here")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.crops_per_s is not None and not args.speed_cpu:
        p.error("--crops-per-s needs --speed-cpu (a speed means nothing without its CPU)")
    if not Path(args.checkpoint).is_file():
        p.error(f"{args.checkpoint}: no such checkpoint file")
    if not args.out.endswith(".pt"):
        p.error(f"--out {args.out}: the shipped source of truth is a slim .pt file")
    return args


def _acc(rep: dict) -> float:
    return round(float(rep["accuracy"]), 4)


def ship(args) -> dict:
    import torch

    from ferkit.errors import FerkitError
    from ferkit.evaluation.calibration import calibrate
    from ferkit.evaluation.evaluate import evaluate_checkpoints
    from ferkit.evaluation.plots import plot_reliability
    from ferkit.inference.export import export_model
    from ferkit.models.flops import forward_flops

    src = Path(args.checkpoint)
    out = Path(args.out)
    report = Path(args.report) if args.report else None
    progress = not args.no_progress
    tta_views = {"none": None, "mirror": 0, "ten-crop": "ten-crop"}[args.tta]

    cal = calibrate(str(src), args.data, split="val", report_split="test", tta=args.tta,
                    batch_size=args.batch_size, device="cpu", progress=progress)
    cal.pop("model"), cal.pop("spec")
    t = float(cal["temperature"])
    tmp = out.with_name(out.name + ".new")
    out.parent.mkdir(parents=True, exist_ok=True)  # only once the model and data have been read
    export_model(str(src), "torch", tmp, half=True, tta=args.tta, temperature=t)

    evals = {}
    for split in ("val", "test"):
        for name, views in (("plain", None), ("tta", tta_views)):
            if name == "tta" and views is None:
                evals[(split, name)] = evals[(split, "plain")]
                continue
            evals[(split, name)] = evaluate_checkpoints(
                str(tmp), args.data, split, tta=views, batch_size=args.batch_size, device="cpu", progress=progress)

    file = torch.load(tmp, map_location="cpu", weights_only=False)
    if file.get("format") != "ferkit-model":
        raise FerkitError(f"{src}: a single network is shipped by this tool (got {file.get('format')!r})")
    cfg = file["input_config"]
    gflop = forward_flops(file["model"], num_classes=file["num_classes"], in_chans=cfg["channels"],
                          input_size=cfg["size"], **file.get("model_kwargs", {})) / 1e9
    meta = dict(file.get("meta") or {})
    meta.update({
        "version": f"{file['model']}-{sha8(src)}",
        "publictest": {"plain": _acc(evals[("test", "plain")]), "tta": _acc(evals[("test", "tta")]),
                       "tta_mode": args.tta, "n": int(evals[("test", "plain")]["n"])},
        "val": {"plain": _acc(evals[("val", "plain")]), "tta": _acc(evals[("val", "tta")]),
                "n": int(evals[("val", "plain")]["n"])},
        "gflop": round(gflop, 4),
        "trained": args.trained,
        "temperature": {"value": round(t, 4),
                        "fitted_on": f"val ({cal['fit']['n']} faces), {args.tta} views"},
        "data": args.data_note,
    })
    if args.crops_per_s is not None:
        meta["speed"] = {"crops_per_s": round(args.crops_per_s), "cpu": args.speed_cpu,
                         "threads": args.speed_threads, "views": args.tta}
    file["meta"] = meta
    torch.save(file, tmp)
    tmp.replace(out)

    result = {"out": str(out), "bytes": out.stat().st_size, "source": str(src), "meta": meta,
              "calibration": cal}
    if report:
        report.mkdir(parents=True, exist_ok=True)
        for (split, name), rep in evals.items():
            (report / f"eval_{split}_{name}.json").write_text(json.dumps(rep, default=float))
        for part in (cal["fit"], cal["report"]):
            b, a = part["before"], part["after"]
            plot_reliability({f"before (T={b['temperature']:g})": b, f"after (T={a['temperature']:g})": a},
                             report / f"reliability_{part['split']}.png",
                             f"{out.name}, {part['split']} ({part['n']} faces), tta {args.tta}")
        (report / "ship.json").write_text(json.dumps(result, indent=2, default=float))
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    from ferkit.errors import FerkitError

    try:
        res = ship(args)
    except FerkitError as e:
        print(f"ship_model: error: {e}", file=sys.stderr)
        return 2
    m = res["meta"]
    print(json.dumps({"out": res["out"], "bytes": res["bytes"], "version": m["version"],
                      "publictest": m["publictest"], "val": m["val"], "temperature": m["temperature"],
                      "gflop": m["gflop"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
