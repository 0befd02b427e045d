"""ferkit train RECIPE --data PATH"""

from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser(
        "train",
        help="train a recipe on a dataset",
        description="Train a named recipe (see 'ferkit recipes') on a dataset folder or CSV. "
        "Writes a run directory with config.yaml, metrics.csv, best.ckpt, last.ckpt, "
        "curves.png and a validation confusion matrix.",
    )
    p.add_argument("recipe", nargs="?", help="recipe name or YAML file (omit with --resume)")
    p.add_argument("--data", help="dataset path: FER2013 CSV/folders, class folders, KDEF, RAF-DB...")
    p.add_argument("--dataset", help="force the dataset layout (see 'ferkit datasets'); default: auto-detect")
    p.add_argument("--out", default="runs", help="parent folder of the run directory (default: runs)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--lr", type=float, help="override the recipe's learning rate")
    p.add_argument("--seed", type=int, help="override the recipe's seed")
    p.add_argument("--class-weights", action=argparse_bool(), default=None,
                   help="inverse class-frequency loss weights on/off (default: the recipe's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any recipe field (YAML value), e.g. --set augment=li; repeatable")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: auto")
    p.add_argument("--devices", type=int, default=1, help="processes/GPUs; >1 uses DDP (default: 1)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last.ckpt")
    p.add_argument("--limit-batches", type=float,
                   help="use only this many (or this fraction of) batches per epoch (smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def argparse_bool():
    import argparse

    return argparse.BooleanOptionalAction


def run(args) -> int:
    from ferkit.errors import FerkitError
    from ferkit.training.recipes import parse_set
    from ferkit.training.train import train

    if not args.recipe and not args.resume:
        raise FerkitError("give a RECIPE (see 'ferkit recipes') or --resume RUN_DIR")
    overrides = parse_set(args.set)
    overrides.update(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     class_weights=args.class_weights, dataset=args.dataset)
    lim = args.limit_batches
    if lim is not None and lim >= 1:
        lim = int(lim)
    run_dir = train(
        args.recipe, args.data, args.out, overrides=overrides, device=args.device, devices=args.devices,
        resume=args.resume, limit_train_batches=lim, limit_val_batches=lim, progress=not args.no_progress,
    )
    summary = run_dir / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        val = s.get("val", {})
        acc = f", val accuracy {val['accuracy']:.4f}" if "accuracy" in val else ""
        print(f"run: {run_dir} ({s['epochs_trained']} epochs, {s['wall_time_s']} s{acc})")
        print(f"best checkpoint: {run_dir / 'best.ckpt'}")
    return 0
