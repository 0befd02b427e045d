"""ferkit robustness CHECKPOINT --data PATH: accuracy under every distortion x severity."""

from __future__ import annotations

import sys

from ferkit.commands._args import out_folder, positive_int, run_options, split_options


def add_parser(sub):
    p = sub.add_parser(
        "robustness",
        parents=[split_options(), run_options()],
        help="accuracy on clean and distorted copies of a split (noise robustness)",
        description="Evaluate a classifier on the clean split and on seeded distorted copies of it "
        "(every distortion x severity; the same seed gives the same copy for every model). Prints "
        "and writes a markdown table, robustness.json and robustness.png (accuracy vs severity). "
        "Reports the mean corruption accuracy and the drop from clean.",
        epilog="distortions: random-gray, gaussian-noise, salt-pepper, gaussian-blur, "
        "brightness-contrast, occlusion, jpeg. Example: ferkit robustness runs/li-vgg/best.ckpt "
        "--data fer2013/ --split test --distortions random-gray,gaussian-noise --limit 1000",
    )
    p.add_argument("checkpoint", help="classifier checkpoint (best.ckpt or exported .pt)")
    p.add_argument("--out", type=out_folder, default="robustness", help="output folder (default: ./robustness)")
    p.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities 1..5 (default: all)")
    p.add_argument("--distortions", help="comma-separated distortion names (default: all)")
    p.add_argument("--limit", type=positive_int, help="evaluate only N evenly spaced images (quick runs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the distorted copies (default: 0)")
    p.set_defaults(func=run)
    return p


def _ints(text: str) -> list[int]:
    from ferkit.errors import FerkitError

    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise FerkitError(f"--severities expects comma-separated integers 1..5, got {text!r}") from None


def run(args) -> int:
    from ferkit.evaluation.evaluate import resolve_device
    from ferkit.evaluation.robustness import markdown_table, robustness_sweep, write_robustness

    names = [n.strip() for n in args.distortions.split(",") if n.strip()] if args.distortions else None
    rep = robustness_sweep(
        args.checkpoint, args.data, split=args.split, distortions=names, severities=_ints(args.severities),
        limit=args.limit, dataset=args.dataset, seed=args.seed, batch_size=args.batch_size,
        device=resolve_device(args.device), progress=not args.no_progress,
    )
    if rep.get("skipped"):
        print(rep["skipped"], file=sys.stderr)
    files = write_robustness(rep, args.out)
    print(markdown_table(rep))
    print("written: " + ", ".join(str(f) for f in files.values()), file=sys.stderr)
    return 0
