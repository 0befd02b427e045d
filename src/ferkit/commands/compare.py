"""ferkit compare CKPT CKPT... --data PATH [--split test] [--json]"""

from __future__ import annotations

import json
import sys

from ferkit.commands._args import json_option, run_options, split_options


def add_parser(sub):
    from ferkit.commands.evaluate import parse_tta

    p = sub.add_parser(
        "compare",
        parents=[split_options(), run_options(), json_option()],
        help="per-class misclassification of several models side by side (e.g. class weights on/off)",
        description="Evaluate every checkpoint on the same split and print, for each class, the share "
        "of its faces each model misclassifies, with differences to the first checkpoint, plus "
        "accuracy, balanced accuracy and macro-F1. Runs are tagged +cw/-cw from their config.yaml "
        "(class weights on/off), the ablation of Boulis et al.",
    )
    p.add_argument(
        "checkpoint",
        nargs="+",
        help="checkpoints (first = reference), exported .pt or ensemble files",
    )
    p.add_argument(
        "--tta",
        type=parse_tta,
        default=0,
        metavar="K|ten-crop",
        help="test-time augmentation copies, or 'ten-crop' (default: off)",
    )
    p.add_argument(
        "--video-level",
        action="store_true",
        help="also report video-level accuracy (mean frame probability; RAVDESS frames)",
    )
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ferkit.evaluation.compare import compare
    from ferkit.evaluation.evaluate import resolve_device

    res = compare(
        args.checkpoint,
        args.data,
        args.split,
        args.dataset,
        video_level=args.video_level,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
        tta=args.tta,
        progress=not args.no_progress,
    )
    for rep in res["reports"].values():
        rep.pop("logp", None)
        rep.pop("targets", None)
    if args.json:
        json.dump(res, sys.stdout)
        print()
        return 0
    print(f"{args.data} [{args.split}]")
    for i, name in enumerate(res["reports"], 1):
        print(f"  {i}: {name}  <- {args.checkpoint[i - 1]}")
    print(res["table"])
    if args.video_level:
        from ferkit.evaluation.video import format_video_report

        for name, vr in res["video"].items():
            print(f"{name}: {format_video_report(vr)}")
    return 0
