"""Pilot of a recipe: a few hundred real training steps, the loss every K steps, images/s.

Trains the recipe's module (model, optimizer, schedule, augmentation, label smoothing:
everything ``ferkit train`` builds from it) on the training split for ``--steps`` steps
or ``--max-seconds``, whichever ends first, with no validation or checkpoints, and prints
the mean loss of every ``--every`` steps and the training throughput. Use it to check that
a new recipe learns before spending a long run (a GPU run) on it.

Usage:
    python benchmarks/pilot_recipe.py ferkit-vgg --data ../shared/datasets/fer2013 \
        --steps 300 --batch-size 32 --set model_kwargs.width=16
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from torch.utils.data import DataLoader

from ferkit.data.dataset import FerDataset, load_index
from ferkit.labels import FER7
from ferkit.models.registry import model_input_config
from ferkit.training.recipes import load_recipe, parse_set
from ferkit.training.train import _precision, build_module


class LossPrinter(L.Callback):
    def __init__(self, every: int, batch_size: int, max_seconds: float):
        self.every, self.batch_size, self.max_seconds = every, batch_size, max_seconds
        self.losses: list[float] = []
        self.t0 = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.t0 is None:  # the clock starts after the first step (warm-up excluded)
            self.t0 = time.perf_counter()
        self.losses.append(float(outputs["loss"]))  # a sync per step: fine on CPU, for a pilot
        n = len(self.losses)
        if n % self.every == 0:
            rate = (n - 1) * self.batch_size / max(time.perf_counter() - self.t0, 1e-9)
            mean = sum(self.losses[-self.every :]) / self.every
            print(f"steps {n - self.every + 1:>4}-{n:<4} mean loss {mean:.4f}   {rate:6.1f} images/s", flush=True)
        if time.perf_counter() - self.t0 > self.max_seconds:
            trainer.should_stop = True


def main(argv: list[str] | None = None) -> list[float]:
    """Run the pilot; returns the loss of every step."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--max-seconds", type=float, default=220.0)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--every", type=int, default=25, help="print the mean loss of every K steps")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field")
    # One thread by default: on a shared, oversubscribed CPU two OpenMP threads wait on each
    # other (measured here: 460 vs 81 ms per vgg-fer width-8 step at load ~13 on 2 cores).
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = parse_set(args.set)
    if args.batch_size is not None:  # None is a value to Recipe.override: pass only what was given
        overrides["batch_size"] = args.batch_size
    recipe = load_recipe(args.recipe).override(**overrides)
    L.seed_everything(recipe.seed, verbose=False)
    labels = list(recipe.labels or FER7)
    cfg = model_input_config(recipe.model, recipe.in_chans, recipe.input_size)
    idx = load_index(args.data, "train", recipe.dataset, val_fraction=recipe.val_fraction, seed=recipe.seed)
    ds = FerDataset(idx, cfg.frame, cfg.channels, labels, progress=False)
    module = build_module(recipe, labels, ds.targets)  # class weights as ferkit train computes them
    dl = DataLoader(ds, batch_size=recipe.batch_size, shuffle=True, drop_last=True)
    n_params = sum(p.numel() for p in module.model.parameters())
    print(f"{recipe.name}: {recipe.model} {recipe.model_kwargs} ({n_params:,} params), input "
          f"{cfg.size}x{cfg.size} from {cfg.frame}, batch {recipe.batch_size}, {recipe.optimizer} "
          f"lr {recipe.lr}, augment {recipe.augment}, label smoothing {recipe.label_smoothing}, "
          f"{len(ds):,} training faces, {torch.get_num_threads()} threads")
    printer = LossPrinter(args.every, recipe.batch_size, args.max_seconds)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision=_precision(recipe, "cpu"), max_steps=args.steps,
        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[printer],
    )
    trainer.fit(module, train_dataloaders=dl)
    k = min(args.every, len(printer.losses) // 2) or 1
    first, last = printer.losses[:k], printer.losses[-k:]
    print(f"{len(printer.losses)} steps: mean loss of the first {k} {sum(first) / k:.4f}, "
          f"of the last {k} {sum(last) / k:.4f}")
    return printer.losses


if __name__ == "__main__":
    main()
