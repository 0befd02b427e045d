"""ferkit train RECIPE --data PATH"""

from __future__ import annotations

import argparse
import json
import sys

from ferkit.commands._args import minutes, out_folder, positive_int

OVERRIDE_RULE = """\
how recipe values resolve (later rows win):
  1. the recipe file (or the run's config.yaml with --resume)
  2. --set KEY=VALUE, left to right; a repeated key keeps its last value.
     --set model_kwargs={a: 1} replaces the whole mapping;
     --set model_kwargs.a=1 changes one entry and keeps the others
  3. dedicated flags (--epochs, --lr, --batch-size, --seed, --class-weights,
     --dataset): the more specific option wins over --set (a note says so when
     both give the field different values); a flag not given changes nothing
Every value is type- and range-checked, however it was set (--set epochs=abc is
refused with one line naming the field)."""

# dedicated flag -> recipe field
FLAG_FIELDS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "seed": "seed",
               "class_weights": "class_weights", "dataset": "dataset", "max_time": "max_time"}


def add_parser(sub):
    p = sub.add_parser(
        "train",
        help="train a recipe on a dataset",
        # Wrapped by hand: the raw formatter (kept for the epilog's list) does not wrap.
        description="Train a named recipe (see 'ferkit recipes') on a dataset folder or CSV.\n"
        "Writes a run directory with config.yaml, metrics.csv, best.ckpt, last.ckpt,\n"
        "curves.png and a validation confusion matrix.",
        epilog=OVERRIDE_RULE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", nargs="?", help="recipe name or YAML file (omit with --resume)")
    p.add_argument("--data", help="dataset path: FER2013 CSV/folders, class folders, KDEF, RAF-DB...")
    p.add_argument("--dataset", help="force the dataset layout (see 'ferkit datasets'); default: auto-detect")
    p.add_argument("--out", type=out_folder, default="runs", help="parent folder of the run directory (default: runs)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--lr", type=float, help="override the recipe's learning rate")
    p.add_argument("--seed", type=int, help="override the recipe's seed: initialisation, shuffling and "
                   "augmentation (the validation carve follows split_seed, so runs of other seeds share it)")
    p.add_argument("--class-weights", action=argparse_bool(), default=None,
                   help="inverse class-frequency loss weights on/off (default: the recipe's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any recipe field (YAML value), e.g. --set augment=li or "
                   "--set model_kwargs.width=64; repeatable (see the rule below)")
    p.add_argument("--max-time", type=float, metavar="MINUTES",
                   help="training time budget: the run times its own epochs and shortens itself (and "
                   "its cosine schedule) to end within it; sets the recipe field max_time")
    p.add_argument("--stop-after", type=minutes, metavar="MINUTES",
                   help="stop for now after this many minutes of training: write a resumable "
                   "last.ckpt and exit 0; the schedule is untouched, and --resume (which takes a "
                   "new --stop-after) carries on from the same batch. SIGTERM and Ctrl-C stop the "
                   "same way (exit 143 / 130); a second Ctrl-C quits without saving")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: auto")
    p.add_argument("--devices", type=positive_int, default=1,
                   help="processes/GPUs; >1 uses DDP (default: 1)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a stopped or killed run from its last.ckpt, to its planned end")
    p.add_argument("--limit-batches", type=_batch_limit,
                   help="use only N batches (a whole number) or this fraction (0 < x < 1) of them per "
                   "epoch, for training and validation (smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def argparse_bool():
    return argparse.BooleanOptionalAction


def _batch_limit(text: str) -> float | int:
    """A fraction of the batches (0 < x < 1) or a count (a whole number >= 1; 1 = one batch)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1) or a batch count, got {text!r}") from None
    if not v > 0 or (v >= 1 and not v.is_integer()):
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1) or a whole batch count, got {text}")
    return int(v) if v >= 1 else v


def resolve_overrides(args) -> dict:
    """``--set`` pairs then the dedicated flags that were given (see OVERRIDE_RULE)."""
    from ferkit.training.recipes import parse_set

    overrides = parse_set(args.set)
    for flag, field in FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is None:
            continue  # not given: the recipe's (or --set's) value stands
        if field in overrides and overrides[field] != value:
            print(f"ferkit: note: --{flag.replace('_', '-')} {value} wins over --set {field}="
                  f"{overrides[field]}", file=sys.stderr)
        overrides.pop(field, None)
        overrides[field] = value
    return overrides


def run(args) -> int:
    from ferkit.errors import FerkitError

    if not args.recipe and not args.resume:
        raise FerkitError("give a RECIPE (see 'ferkit recipes') or --resume RUN_DIR")
    if args.recipe and args.resume:
        # the recipe would be ignored: a resumed run keeps the one in its config.yaml
        raise FerkitError(f"give a RECIPE or --resume {args.resume}, not both (a resumed run keeps its own "
                          "recipe; change fields with --set or the flags)")
    what = f"resuming {args.resume}" if args.resume else f"training {args.recipe}"
    # PyTorch and Lightning take 5-60 s to import on a busy CPU: say something first.
    print(f"ferkit train: {what}; loading PyTorch and Lightning...", flush=True)
    from ferkit.training.stopping import RunStopped
    from ferkit.training.train import train

    overrides = resolve_overrides(args)
    lim = args.limit_batches
    try:
        run_dir = train(
            args.recipe, args.data, args.out, overrides=overrides, device=args.device, devices=args.devices,
            resume=args.resume, limit_train_batches=lim, limit_val_batches=lim, progress=not args.no_progress,
            stop_after=args.stop_after,
        )
    except RunStopped as stop:
        run_dir = stop.checkpoint.parent
        print(f"ferkit train: {stop}; the state is in {stop.checkpoint}\n"
              f"continue with: ferkit train --resume {run_dir}", file=sys.stderr, flush=True)
        return stop.exit_code
    summary = run_dir / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        val = s.get("val", {})
        acc = f", val accuracy {val['accuracy']:.4f}" if "accuracy" in val else ""
        print(f"run: {run_dir} ({s['epochs_trained']} epochs, {s['wall_time_s']} s{acc})")
        print(f"best checkpoint: {run_dir / 'best.ckpt'}")
    return 0
