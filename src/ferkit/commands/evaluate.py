"""ferkit evaluate CHECKPOINT --data PATH [--split NAME] [--json]"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ferkit.commands._args import json_option, out_folder, run_options, split_options


def parse_tta(value: str) -> int | str:
    """The ``--tta`` option: a number K of augmented copies (0 = mirror only) or "ten-crop".

    Raises:
        argparse.ArgumentTypeError: anything else (argparse turns it into exit 2).
    """
    v = str(value).strip().lower()
    if v.isdigit():
        return int(v)
    if v in ("ten-crop", "tencrop", "10-crop"):
        return "ten-crop"
    raise argparse.ArgumentTypeError(
        f"{value!r}: give a number K of augmented copies (0 = the mirror only) or 'ten-crop'"
    )


def _tta_preset(name: str) -> str:
    """An augmentation preset name for --tta-preset (a misspelt one was silently ignored)."""
    import argparse

    from ferkit.data.presets import PRESETS

    if name not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return name


def add_parser(sub):
    p = sub.add_parser(
        "evaluate",
        parents=[split_options(), run_options(), json_option()],
        help="evaluate checkpoint(s) on a dataset split",
        description="Accuracy, loss, macro-F1, per-class accuracy and misclassification rate, and the "
        "confusion matrix of a trained model on a dataset split. Classes the model does not know "
        "(e.g. contempt) are skipped with a warning, or rejected with --strict.",
    )
    p.add_argument("checkpoint", nargs="+", help="checkpoint(s): best.ckpt, an exported .pt, or a shipped model name ('default', 'fast': see 'ferkit models')")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="val share carved from train (default: the checkpoint's recipe, else 0.1)")
    p.add_argument("--out", type=out_folder, help="folder for the report: report.json, confusion.png, per_class.png")
    p.add_argument("--tta", type=parse_tta, default=None, metavar="K|ten-crop",
                   help="test-time augmentation: average the image, its mirror and K augmented copies "
                   "(0 = mirror only), or 'ten-crop': four corner crops, the centre crop and their "
                   "mirrors, for models trained on crops (vgg-fer) (default: off)")
    p.add_argument("--tta-preset", default="boulis", metavar="NAME", type=_tta_preset,
                   help="augmentation of the TTA copies: boulis, light, li, flip (default: boulis); "
                   "match the model's training augmentation")
    p.add_argument("--distortion", metavar="NAME:SEVERITY",
                   help="evaluate on distorted faces, e.g. random-gray:3 (see 'ferkit robustness')")
    p.add_argument("--distortion-seed", type=int, default=0, help="seed of the distorted copy (default: 0)")
    p.add_argument("--strict", action="store_true", help="error on classes outside the model's labels")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ferkit.evaluation.evaluate import evaluate_checkpoints
    from ferkit.evaluation.metrics import format_report

    rep = evaluate_checkpoints(
        args.checkpoint, args.data, args.split, dataset=args.dataset, val_fraction=args.val_fraction,
        tta=args.tta, tta_preset=args.tta_preset, distortion=args.distortion,
        distortion_seed=args.distortion_seed, strict=args.strict, batch_size=args.batch_size,
        device=args.device, progress=not args.no_progress,
    )
    if args.json:
        json.dump(rep, sys.stdout)
        print()
    else:
        print(format_report(rep, title=f"{', '.join(args.checkpoint)} on {args.data} [{args.split}]"))
    if args.out:
        from ferkit.evaluation.plots import plot_confusion, plot_per_class

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(rep, indent=2))
        plot_confusion(rep["confusion"], rep["labels"], out / "confusion.png", f"{args.split}")
        plot_per_class(rep["per_class"], out / "per_class.png", f"per-class accuracy [{args.split}]")
        print(f"report written to {out}/", file=sys.stderr)
    return 0
