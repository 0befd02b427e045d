"""ferkit ensemble CKPT CKPT... --out ens.pt [--weights w1,w2,...]"""

from __future__ import annotations

import sys

from ferkit.commands._args import out_file
from ferkit.errors import FerkitError


def add_parser(sub):
    p = sub.add_parser(
        "ensemble",
        help="combine trained checkpoints into one soft-voting ensemble file",
        description="Write one loadable file holding several trained models (any architectures and "
        "input sizes, one shared label set) that predicts the weighted mean of their class "
        "probabilities. Use it like a checkpoint: 'ferkit evaluate ens.pt --data ... --tta 4'.",
    )
    p.add_argument(
        "checkpoint", nargs="+", help="members: best.ckpt files, exported .pt, or ensemble files"
    )
    p.add_argument("--out", type=out_file, required=True, help="output file, e.g. ensemble.pt")
    p.add_argument(
        "--weights", help="comma-separated voting weights, one per checkpoint (default: equal)"
    )
    p.set_defaults(func=run)
    return p


def parse_weights(text: str | None, n: int) -> list[float] | None:
    if not text:
        return None
    try:
        w = [float(v) for v in text.split(",")]
    except ValueError:
        raise FerkitError(f"--weights: expected numbers like 1,2,1 (got {text!r})") from None
    if len(w) != n:
        raise FerkitError(f"--weights: {len(w)} value(s) for {n} checkpoint(s)")
    return w


def run(args) -> int:
    from tqdm.auto import tqdm

    from ferkit.models.checkpoint import load_model_any
    from ferkit.models.ensemble import Ensemble

    weights = parse_weights(args.weights, len(args.checkpoint))
    loaded = [
        load_model_any(c) for c in tqdm(args.checkpoint, desc="loading", unit="model", leave=False)
    ]
    ens = Ensemble.from_loaded(loaded, weights)
    ens.save(args.out)
    desc = ", ".join(
        f"{getattr(m, 'model_name', '?')}@{m.input_config.size} (w={w:.3f})"
        for m, w in zip(ens.members, ens.weights.tolist())
    )
    print(
        f"wrote {args.out}: {len(ens)} member(s): {desc}; labels {', '.join(ens.labels)}",
        file=sys.stderr,
    )
    return 0
