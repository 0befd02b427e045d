"""Class-weighted loss of trained runs on their validation carve: did a class-weighted run
optimise its own objective?

A run trained with ``class_weights: true`` minimises the inverse-frequency-weighted cross
entropy. If an unweighted run of the same network scores a *lower* weighted loss on the
same carve than the weighted run itself, the weighted run failed to optimise (a training
problem), rather than trading accuracy for balance (the objective's price). Used for the
``baseline-weighted`` row of docs/reproductions/boulis.md.

Usage::

    python tools/diagnostics/class_weighted_nll.py --data ../shared/datasets/fer2013 \\
        --weights-from RUNS/boulis/baseline-weighted RUNS/boulis/baseline RUNS/boulis/baseline-weighted

Prints, per run (its ``best.ckpt``, eval mode, no TTA): weighted NLL, plain NLL, accuracy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from ferkit.errors import FerkitError
from ferkit.evaluation.metrics import predict_log_probs
from ferkit.models.checkpoint import load_model_any
from ferkit.training.datamodule import checkpoint_split


def weighted_nll(run: Path, data: str, weights: torch.Tensor, split: str = "val") -> dict:
    """Weighted and plain NLL and accuracy of ``run/best.ckpt`` on ``split`` of its own carve."""
    ckpt = run / "best.ckpt"
    model, spec = load_model_any(ckpt)
    ds = checkpoint_split(ckpt, data, split, labels=spec["labels"], input_config=spec["input_config"],
                          progress=False)
    logp, y = predict_log_probs(model, ds, 256, "cpu", progress=False)
    logp, y = torch.as_tensor(logp).float(), torch.as_tensor(y)
    return {"run": str(run), "weighted_nll": F.nll_loss(logp, y, weight=weights).item(),
            "nll": F.nll_loss(logp, y).item(), "accuracy": (logp.argmax(1) == y).float().mean().item(),
            "n": len(y)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (each with best.ckpt)")
    ap.add_argument("--data", required=True, help="the dataset the runs trained on")
    ap.add_argument("--weights-from", type=Path, required=True,
                    help="a class-weighted run folder: its hparams.yaml holds the weights")
    ap.add_argument("--split", default="val", help="default: val (the runs' validation carve)")
    args = ap.parse_args(argv)
    try:
        hp = yaml.safe_load((args.weights_from / "hparams.yaml").read_text()) or {}
        if not hp.get("class_weights"):
            raise FerkitError(f"{args.weights_from}/hparams.yaml has no class_weights (not a weighted run)")
        w = torch.tensor(hp["class_weights"], dtype=torch.float32)
    except (FerkitError, OSError) as e:
        print(f"class_weighted_nll: error: {e}", file=sys.stderr)
        return 2
    print(f"class weights: {', '.join(f'{v:.2f}' for v in w.tolist())}")
    failed = 0
    for run in args.runs:  # a bad run is reported and skipped; the others are still measured
        try:
            r = weighted_nll(run, args.data, w, args.split)
        except (FerkitError, OSError) as e:
            print(f"class_weighted_nll: error: {run}: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"{run}: weighted NLL {r['weighted_nll']:.4f}, NLL {r['nll']:.4f}, "
              f"accuracy {100 * r['accuracy']:.2f}% ({r['n']} faces, {args.split})")
    if failed:
        print(f"class_weighted_nll: {failed} of {len(args.runs)} runs skipped", file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
