"""Data pipeline throughput vs baseline training throughput (core issue).

Prints, for FER2013 train (or a synthetic stand-in when ../shared is absent):

* pipeline images/s: DataLoader with 2 worker processes over the decoded cache, the Li
  augmentation (rotation 0-20 deg + horizontal flip, in the workers via the collate
  function) and the model's preprocessing;
* the same with augmentation on the consuming process (how training runs it);
* baseline training images/s (boulis-baseline forward + backward + Adam, batch 64), in fp32
  and as ``ferkit train`` runs it on CPUs with AVX512-BF16/AMX (bf16 autocast, channels-last);
* the ratio pipeline / training (target: >= 3x, so data never starves the model);
* one full training epoch's projected time on this machine.

Usage: python benchmarks/bench_pipeline.py [--data PATH] [--batches 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ferkit.data.transforms import make_augment, prepare_batch
from ferkit.models import create_model


class AugmentCollate:
    """Stack a batch, scale to [0,1], augment and preprocess inside the worker process."""

    def __init__(self, preset, cfg):
        self.aug, self.cfg = make_augment(preset), cfg

    def __call__(self, items):
        x = torch.stack([i[0] for i in items]).float().div_(255)
        y = torch.tensor([int(i[1]) for i in items])
        torch.set_num_threads(1)
        return prepare_batch(self.aug(x), self.cfg), y


def load_data(path: str | None, cfg):
    if path and Path(path).exists():
        from ferkit.data import build_dataset

        ds = build_dataset(path, "train", cfg, progress=False)
        return ds, f"{path} [train], {len(ds)} images"
    n = 8192
    x = torch.randint(0, 256, (n, 1, 48, 48), dtype=torch.uint8)
    return TensorDataset(x, torch.randint(0, 7, (n,))), f"synthetic 48x48 gray, {n} images"


def time_loader(loader, batches, consume=None) -> float:
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        x, y = next(it)
        if consume is not None:
            x = consume(x)
        n += len(y)
    return n / (time.perf_counter() - t0)


def time_training(model, steps: int, bf16: bool, channels_last: bool | None = None) -> float:
    """images/s of fwd + bwd + Adam at batch 64 (after 3 warm-up steps); channels-last follows bf16 unless given."""
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(64, 1, 48, 48)
    y = torch.randint(0, 7, (64,))
    if bf16 if channels_last is None else channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()

    def step():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * 64 / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[1].parent / "shared/datasets/fer2013"
    ap.add_argument("--data", default=str(default))
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = create_model("boulis-baseline")
    cfg = model.input_config
    ds, desc = load_data(args.data, cfg)
    print(f"hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__}, {args.threads} threads")
    print(f"data: {desc}")

    dl = DataLoader(ds, batch_size=64, shuffle=True, num_workers=args.workers, drop_last=True,
                    collate_fn=AugmentCollate("li", cfg), persistent_workers=True)
    pipe_workers = time_loader(dl, args.batches)
    print(f"pipeline, Li augmentation in {args.workers} workers:      {pipe_workers:9.0f} images/s")

    aug = make_augment("li")
    dl2 = DataLoader(ds, batch_size=64, shuffle=True, num_workers=args.workers, drop_last=True,
                     persistent_workers=True)
    pipe_main = time_loader(dl2, args.batches, consume=lambda x: prepare_batch(aug(x.float() / 255), cfg))
    print(f"pipeline, Li augmentation on the batch (main process): {pipe_main:9.0f} images/s")

    steps = max(10, args.batches // 3)
    train_fp32 = time_training(create_model("boulis-baseline"), steps, bf16=False)
    print(f"boulis-baseline training fp32 (fwd+bwd+Adam, batch 64): {train_fp32:9.0f} images/s")
    train_fp32_cl = time_training(create_model("boulis-baseline"), steps, bf16=False, channels_last=True)
    print(f"boulis-baseline training fp32 + channels-last:          {train_fp32_cl:9.0f} images/s "
          "(--set precision=32-true)")
    # What `ferkit train` actually runs on this machine (precision: auto, a measured probe).
    from ferkit.training.precision import auto_cpu_precision
    from ferkit.training.recipes import load_recipe

    if auto_cpu_precision(load_recipe("ferkit-default"), 48, 1) == "bf16-mixed":
        train_ips = time_training(create_model("boulis-baseline"), steps, bf16=True)
        print(f"boulis-baseline training bf16 autocast + channels-last:  {train_ips:9.0f} images/s "
              f"({train_ips / train_fp32:.2f}x fp32, {train_ips / train_fp32_cl:.2f}x fp32 channels-last; "
              "what ferkit train uses on this CPU)")
    else:
        train_ips = train_fp32
        print("bf16 is not faster on this CPU (precision auto's probe): ferkit train runs fp32 here")
    print(f"ratio pipeline(workers) / training: {pipe_workers / train_ips:.1f}x   "
          f"pipeline(main) / training: {pipe_main / train_ips:.1f}x   (target >= 3x)")
    n_train = len(ds) if len(ds) > 10000 else 25837
    print(f"projected epoch time on FER2013 train ({n_train} images): {n_train / train_ips:.0f} s")
    return np.float64(pipe_workers / train_ips)


if __name__ == "__main__":
    main()
