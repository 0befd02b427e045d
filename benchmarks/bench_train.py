"""Training throughput (images/s) per network and precision, measured as ``ferkit train`` steps.

Each (recipe, precision) pair is one short ``lightning.Trainer.fit`` of the module that
``ferkit train`` builds from the recipe (:func:`ferkit.training.train.build_module`): uint8
faces already on the device served by :class:`~ferkit.training.datamodule.DeviceBatches`,
the module's own ``on_after_batch_transfer`` (the recipe's augmentation and the model's
preprocessing on the whole batch), forward, loss, backward, the recipe's optimiser and
learning-rate step, the EMA update when the recipe has one, channels-last as the recipe
says, and autocast per precision (``fp32`` = ``32-true``, ``bf16`` = ``bf16-mixed``).
cuDNN benchmark mode and TF32 are on for CUDA, as in ``ferkit train``.

Why a real Trainer and no plain loop: the module's hooks read their trainer (augmentation
only while training, the cosine schedule's length), so a plain loop would have to
re-implement them and would drift from what a run does; and Lightning's own per-step work
(hooks, logging, the optimiser closure) is part of what a run pays, which matters on a GPU
where a step takes milliseconds.

The faces are random uint8 images at the model's frame size (the cost of a step does not
depend on pixel values). The clock starts after ``--warmup`` steps (cuDNN autotuning, lazy
initialisation) with a device synchronisation, and stops after ``--steps`` more, again
synchronised; nothing inside the timed steps reads back from the device. No validation,
checkpoints, logger or progress bar: in a run they act once per epoch or every 50 steps,
and the GPU job trains with ``--no-progress``.

Per row: images/s, ms/step (on CPU also the process's CPU time per step, which moves much
less than wall time on a shared machine), forward GFLOP per image (``ferkit.models.flops.forward_flops``,
a multiply-add = 2), achieved TFLOP/s = 3 x forward FLOPs x images/s (forward + backward),
the share of the device's bf16 peak (``--peak-tflops``, 790 for an H200; CUDA only unless
given), and the bf16 / fp32 throughput ratio measured in the same run.

``--concurrent N`` starts N copies of this benchmark as separate processes (as the GPU job
trains three members side by side); the copies wait for each other before each timed
window, and the table gives their summed images/s over the union of their windows.

Usage::

    python benchmarks/bench_train.py                                  # 3 GPU recipes, fp32 + bf16
    python benchmarks/bench_train.py --recipes ferkit-vgg --precisions bf16 --concurrent 3
    python benchmarks/bench_train.py --quick --recipes ferkit-default --json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

DEFAULT_RECIPES = ["ferkit-vgg", "ferkit-resnet18", "ferkit-default"]
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}
H200_BF16_TFLOPS = 790.0  # dense bf16 tensor-core peak (../shared/GPU.md)
# Steps (timed, warm-up) by device: the CPU defaults cost about 80 s of CPU time in all (4 minutes
# of wall time at load average 14 on the shared 2-core machine, docs/benchmarks.md); on a GPU
# enough steps that Lightning's start-up and cuDNN autotuning stay outside the window.
STEPS = {"cpu": (2, 1), "cuda": (50, 10)}
QUICK_STEPS = {"cpu": (1, 1), "cuda": (20, 5)}
QUICK_CPU_BATCH = 16
BARRIER_TIMEOUT_S = 300  # the parent stops all copies when one fails; this is the last resort


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Barrier:
    """Copies of a ``--concurrent`` run wait here until all have reached the same window."""

    def __init__(self, folder: str, copies: int, copy_id: int):
        self.folder, self.copies, self.copy_id = Path(folder), copies, copy_id

    def wait(self, key: str) -> None:
        (self.folder / f"{key}.{self.copy_id}").touch()
        t0 = time.monotonic()
        while len(list(self.folder.glob(f"{key}.*"))) < self.copies:
            if time.monotonic() - t0 > BARRIER_TIMEOUT_S:
                from ferkit.errors import FerkitError

                raise FerkitError(f"copy {self.copy_id}: the other copies never reached {key} (did one fail?)")
            time.sleep(0.005)


def _timer_callback(warmup: int, steps: int, device, barrier: _Barrier | None, key: str):
    import lightning as L

    class StepTimer(L.Callback):
        """Times the steps after ``warmup``: from the end of step warmup-1 to the end of the last.

        Starting at the end of a step (not the start of the next) keeps the next batch's
        augmentation, which Lightning runs before ``on_train_batch_start``, inside the window.
        """

        def __init__(self):
            self.t0 = self.t1 = self.wall0 = self.wall1 = self.cpu0 = self.cpu1 = None

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx == warmup - 1:
                _sync(device)
                if barrier is not None:
                    barrier.wait(key)
                self.t0, self.wall0, self.cpu0 = time.perf_counter(), time.time(), time.process_time()
            elif batch_idx == warmup + steps - 1:
                _sync(device)
                self.t1, self.wall1, self.cpu1 = time.perf_counter(), time.time(), time.process_time()

    return StepTimer()


def measure(recipe_name: str, precision: str, *, device: str, steps: int, warmup: int,
            batch_size: int | None = None, barrier: _Barrier | None = None, barrier_key: str = "0") -> dict:
    """One timed training run of ``recipe_name`` at ``precision`` ("fp32" | "bf16").

    Returns:
        dict with recipe, model, precision, batch_size, images_per_s, ms_per_step,
        forward_gflop (per image), achieved_tflops, window (wall-clock start, end in s).

    Raises:
        FerkitError: unknown recipe, a model that rejects the recipe's arguments, or
            ``device`` "cuda" without a CUDA device.
    """
    import lightning as L
    import numpy as np
    import torch

    from ferkit.labels import FER7
    from ferkit.models.flops import forward_flops
    from ferkit.training.datamodule import DeviceBatches
    from ferkit.training.recipes import load_recipe
    from ferkit.training.schedule import EMAWeights
    from ferkit.training.train import _accelerator, build_module

    accelerator = _accelerator(device)
    recipe = load_recipe(recipe_name).override(precision=PRECISIONS[precision])
    if batch_size:
        recipe = recipe.override(batch_size=batch_size)
    bs = recipe.batch_size
    L.seed_everything(recipe.seed, verbose=False)
    labels = list(recipe.labels or FER7)
    n = bs * (warmup + steps)
    targets = np.arange(n) % len(labels)  # every class present: class weights stay finite
    module = build_module(recipe, labels, targets)
    cfg = module.cfg
    dev = torch.device("cuda", torch.cuda.current_device()) if accelerator == "gpu" else torch.device("cpu")
    faces = torch.randint(0, 256, (n, cfg.channels, cfg.frame, cfg.frame), dtype=torch.uint8, device=dev)
    batches = DeviceBatches(faces, torch.as_tensor(targets, device=dev), bs, shuffle=True, drop_last=True)
    timer = _timer_callback(warmup, steps, dev, barrier, barrier_key)
    callbacks = [EMAWeights(recipe.ema_decay)] if recipe.ema_decay else []
    if accelerator == "gpu":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, precision=recipe.precision, max_epochs=1,
        limit_train_batches=warmup + steps, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[*callbacks, timer], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, benchmark=accelerator == "gpu",
        deterministic=False,
    )
    trainer.fit(module, train_dataloaders=batches)
    seconds = timer.t1 - timer.t0
    flops = forward_flops(recipe.model, num_classes=len(labels), in_chans=recipe.in_chans,
                          input_size=recipe.input_size, **(recipe.model_kwargs or {}))
    ips = steps * bs / seconds
    return {"recipe": recipe_name, "model": recipe.model, "precision": precision, "batch_size": bs,
            "images_per_s": ips, "ms_per_step": 1000 * seconds / steps, "forward_gflop": flops / 1e9,
            "achieved_tflops": 3 * flops * ips / 1e12, "window": [timer.wall0, timer.wall1],
            "cpu_ms_per_step": 1000 * (timer.cpu1 - timer.cpu0) / steps}


def _combine(copies: list[dict]) -> dict:
    """Rows of N concurrent copies of one configuration -> one row of their summed throughput."""
    first = copies[0]
    images = sum(c["batch_size"] * c["steps"] for c in copies)
    span = max(c["window"][1] for c in copies) - min(c["window"][0] for c in copies)
    ips = images / span  # over the union of the windows: no copy is counted at its best alone
    return {**{k: first[k] for k in ("recipe", "model", "precision", "batch_size", "forward_gflop", "steps")},
            "copies": len(copies), "images_per_s": ips,
            "ms_per_step": sum(c["ms_per_step"] for c in copies) / len(copies),
            "cpu_ms_per_step": sum(c["cpu_ms_per_step"] for c in copies) / len(copies),
            "achieved_tflops": 3 * first["forward_gflop"] * 1e9 * ips / 1e12,
            "per_copy_images_per_s": [c["images_per_s"] for c in copies]}


def _run_concurrent(args, argv: list[str]) -> list[dict]:
    """Start ``args.concurrent`` copies of this script, each a separate process, and combine.

    A copy that fails stops the others at once (they would otherwise wait at the barrier
    for it): on a GPU lent for minutes a hung benchmark costs the whole loan.
    """
    from ferkit.errors import FerkitError

    n = args.concurrent
    with tempfile.TemporaryDirectory(prefix="bench_train-") as folder:
        procs, logs = [], []
        for i in range(n):
            cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--concurrent", "1", "--json",
                   "--barrier", folder, "--copies", str(n), "--copy-id", str(i)]
            # Files, not pipes: a chatty copy cannot block on a full pipe while we wait.
            out, err = open(Path(folder) / f"out.{i}", "w+"), open(Path(folder) / f"err.{i}", "w+")  # noqa: SIM115
            logs.append((out, err))
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=err, text=True))
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                for p in procs:
                    p.wait()
                break
            time.sleep(0.05)
        texts = []
        for out, err in logs:
            out.seek(0), err.seek(0)
            texts.append((out.read(), err.read()))
            out.close(), err.close()
    failed = [(i, err) for i, (p, (_, err)) in enumerate(zip(procs, texts)) if p.returncode != 0]
    if failed:
        # the first copy that failed by itself (not one stopped by us with SIGTERM)
        i, err = next(((i, e) for i, e in failed if procs[i].returncode > 0), failed[0])
        last = (err.strip().splitlines() or ["no output"])[-1].removeprefix("error: ")
        raise FerkitError(f"{len(failed)} of {n} concurrent copies failed or were stopped; copy {i}: {last}")
    per_copy = [json.loads(out.strip().splitlines()[-1])["rows"] for out, _ in texts]
    return [_combine([rows[k] for rows in per_copy]) for k in range(len(per_copy[0]))]


def _add_ratios(rows: list[dict], peak: float | None) -> None:
    fp32 = {r["recipe"]: r["images_per_s"] for r in rows if r["precision"] == "fp32"}
    for r in rows:
        r["peak_fraction"] = r["achieved_tflops"] / peak if peak else None
        base = fp32.get(r["recipe"])
        r["vs_fp32"] = r["images_per_s"] / base if base and r["precision"] != "fp32" else None


def _table(rows: list[dict], peak: float | None, cpu_time: bool = False) -> str:
    """A markdown table of the rows; ``cpu_time`` adds the process CPU time per step (a shared
    CPU inflates wall time with load, CPU time much less)."""
    head = ["recipe", "model", "precision", "batch", "copies", "images/s", "ms/step", "fwd GFLOP/img",
            "TFLOP/s", f"% of {peak:g} TFLOP/s" if peak else "% of peak", "vs fp32"]
    head[7:7] = ["CPU ms/step"] if cpu_time else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["recipe"], r["model"], r["precision"], str(r["batch_size"]), str(r.get("copies", 1)),
                 f"{r['images_per_s']:,.1f}", f"{r['ms_per_step']:,.1f}",
                 *([f"{r['cpu_ms_per_step']:,.1f}"] if cpu_time else []), f"{r['forward_gflop']:.3f}",
                 f"{r['achieved_tflops']:.3f}",
                 f"{100 * r['peak_fraction']:.1f}%" if r["peak_fraction"] is not None else "-",
                 f"{r['vs_fp32']:.2f}x" if r["vs_fp32"] is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _load() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _machine(device: str, load_before: list[float] | None) -> dict:
    """CPU model and the flags that decide training speed (AVX2, AVX512-BF16, AMX), threads,
    versions, and the 1-minute load average before and after the run. ``noisy`` is true when
    either load exceeded the threads this benchmark used: something else ran beside it, and
    its timings are not this machine's."""
    import lightning
    import torch

    from ferkit.training.precision import cpu_flags, cpu_model

    cpu = cpu_model() if Path("/proc/cpuinfo").exists() else (platform.processor() or platform.machine())
    after = _load()
    threads = torch.get_num_threads()
    loads = [x[0] for x in (load_before, after) if x]
    info = {"device": device, "cpu": cpu, "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
            "threads": threads, "torch": torch.__version__, "lightning": lightning.__version__,
            "load_average_before": load_before, "load_average": after,
            "noisy": bool(loads) and max(loads) > threads}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Figures on a shared CPU are noisy; compare rows of the same run.")
    ap.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES, metavar="RECIPE",
                    help=f"shipped recipe names or YAML paths (default: {' '.join(DEFAULT_RECIPES)})")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(PRECISIONS))
    ap.add_argument("--batch-size", type=int, default=None, help="faces per step (default: each recipe's)")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed steps per row (default: 2 on CPU, 50 on CUDA; --quick: 1 / 20)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed steps first, at least 1 (default: 1 on CPU, 10 on CUDA; --quick: 1 / 5)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help=f"the device's bf16 peak for the %% column (default on CUDA: {H200_BF16_TFLOPS:g}, an "
                         "H200; on CPU no column unless given)")
    ap.add_argument("--concurrent", type=int, default=1, metavar="N",
                    help="run N copies as separate processes at once and sum their images/s")
    ap.add_argument("--quick", action="store_true",
                    help=f"fewer steps and, on CPU, batches of at most {QUICK_CPU_BATCH} (a smoke check)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    # Internal: how the copies of a --concurrent run find each other.
    ap.add_argument("--barrier", help=argparse.SUPPRESS)
    ap.add_argument("--copies", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--copy-id", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for name in ("batch_size", "steps", "warmup", "concurrent", "threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1 (got {v})")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        ap.error(f"--peak-tflops must be positive (got {args.peak_tflops})")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; prints the table (or ``--json``) and returns the same result as a dict.

    Exits with status 2 and a one-line message for a bad recipe name or an unavailable device.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    load_before = _load()
    import lightning  # noqa: F401  (sets its loggers to INFO on import: quieten them after)
    import torch

    from ferkit.errors import FerkitError

    for name in ("lightning.pytorch", "lightning.fabric"):  # "GPU available: ..." and similar chatter
        logging.getLogger(name).setLevel(logging.WARNING)
    # Expected here: no validation data, and a deprecation inside Lightning itself.
    warnings.filterwarnings("ignore", message=r".*validation_step.* no `val_dataloader`")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    default_steps, default_warmup = (QUICK_STEPS if args.quick else STEPS)["cuda" if device == "cuda" else "cpu"]
    steps, warmup = args.steps or default_steps, args.warmup or default_warmup
    batch = args.batch_size
    if args.quick and device == "cpu" and batch is None:
        batch = QUICK_CPU_BATCH
    peak = args.peak_tflops or (H200_BF16_TFLOPS if device == "cuda" else None)
    configs = [(r, p) for r in args.recipes for p in args.precisions]
    try:
        from ferkit.training.recipes import load_recipe

        for r in args.recipes:  # a wrong name fails here in a second, not in every copy later
            load_recipe(r)
        if args.concurrent > 1:
            print(f"{args.concurrent} concurrent copies, {len(configs)} configurations ...", file=sys.stderr)
            child = [a for a in argv if a != "--json"]
            if device == "cpu" and not args.threads:  # share the cores instead of oversubscribing them
                torch.set_num_threads(max(1, torch.get_num_threads() // args.concurrent))
                child += ["--threads", str(torch.get_num_threads())]  # reported as the threads per copy
            rows = _run_concurrent(args, child)
        else:
            barrier = _Barrier(args.barrier, args.copies, args.copy_id) if args.barrier else None
            rows = []
            for i, (r, p) in enumerate(configs):
                if barrier is None:
                    print(f"measuring {r} {p} ({warmup} + {steps} steps) ...", file=sys.stderr, flush=True)
                # the barrier's key is the configuration's place in the list: recipe paths hold "/"
                row = measure(r, p, device=device, steps=steps, warmup=warmup, batch_size=batch, barrier=barrier,
                              barrier_key=f"config{i}")
                rows.append({**row, "copies": 1, "steps": steps})
    except FerkitError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    _add_ratios(rows, peak)
    result = {**_machine(device, load_before), "steps": steps, "warmup": warmup, "concurrent": args.concurrent,
              "peak_tflops": peak, "rows": rows}
    if args.json:
        print(json.dumps(result))
    else:
        extra = f", {result['gpu']}" if "gpu" in result else ""
        load = ""
        if result["load_average"]:
            load = (f"; load average {result['load_average_before'][0]:.2f} before, "
                    f"{result['load_average'][0]:.2f} after")
        flags = f" [{' '.join(result['cpu_flags'])}]" if result["cpu_flags"] else ""
        print(f"{device}{extra}; {result['cpu']}{flags}, {result['cpu_count']} CPUs, {result['threads']} threads; "
              f"torch {result['torch']}, lightning {result['lightning']}{load}")
        if result["noisy"]:
            print(f"NOISY: the load average exceeded the {result['threads']} threads measured here: something "
                  "else was running; these timings understate this machine (rerun it alone)")
        print(f"{warmup} warm-up + {steps} timed steps per row, random uint8 faces resident on the device; "
              "TFLOP/s = 3 x forward FLOPs x images/s")
        print(_table(rows, peak, cpu_time=device == "cpu"))
    return result


if __name__ == "__main__":
    main()
