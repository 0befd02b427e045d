"""ferkit denoise-preview DAE_CHECKPOINT --data PATH: what the denoising autoencoder does."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ferkit.commands._args import out_file, positive_int, run_options, split_options


def add_parser(sub):
    p = sub.add_parser(
        "denoise-preview",
        parents=[split_options(), run_options()],
        help="grid of distorted / denoised / clean faces and PSNR/SSIM of a denoising autoencoder",
        description="Distort a split with a seeded distortion, run a trained denoising autoencoder "
        "(li-dae) on it, save a PNG grid (rows: distorted, denoised, clean) and print PSNR and SSIM "
        "against the clean faces before and after denoising.",
    )
    p.add_argument("checkpoint", help="trained li-dae checkpoint (best.ckpt)")
    p.add_argument("--out", type=out_file, default="denoise_preview.png", help="PNG grid path (a .json is written beside it)")
    p.add_argument("--n", type=positive_int, default=8, help="faces in the grid (default: 8)")
    p.add_argument("--distortion", default="random-gray:3", metavar="NAME:SEVERITY",
                   help="distortion to remove (default: random-gray:3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the distorted copy (default: 0)")
    p.add_argument("--limit", type=positive_int, help="measure PSNR/SSIM on only N evenly spaced images")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ferkit.errors import FerkitError
    from ferkit.evaluation.evaluate import resolve_device
    from ferkit.evaluation.robustness import denoise_preview

    if args.n < 1:
        raise FerkitError("--n must be at least 1")
    rep = denoise_preview(
        args.checkpoint, args.data, split=args.split, distortion=args.distortion, n=args.n, out=args.out,
        limit=args.limit, dataset=args.dataset, seed=args.seed, batch_size=args.batch_size,
        device=resolve_device(args.device), progress=not args.no_progress,
    )
    Path(args.out).with_suffix(".json").write_text(json.dumps(rep, indent=2))
    print(f"{args.distortion} on {args.data} [{args.split}], n={rep['n']}")
    print(f"{'':10} {'PSNR (dB)':>10} {'SSIM':>8}")
    for k in ("distorted", "denoised"):
        print(f"{k:10} {rep['psnr'][k]:10.2f} {rep['ssim'][k]:8.4f}")
    print(f"grid written to {args.out}", file=sys.stderr)
    return 0
