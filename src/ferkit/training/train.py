"""``ferkit train``: recipe + data -> a run directory.

A run directory holds everything needed to inspect, resume or use the run::

    config.yaml      the fully resolved recipe (+ data path, devices)
    metrics.csv      per-epoch train/val loss and accuracy, learning rate
    best.ckpt        best validation-loss checkpoint (atomic writes)
    last.ckpt        latest epoch, for --resume
    curves.png       loss and accuracy curves
    confusion_val.png, summary.json   validation report of best.ckpt
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ferkit.data.checks import check_classes
from ferkit.data.dataset import FerDataset, class_weights
from ferkit.errors import FerkitError
from ferkit.labels import FER7
from ferkit.models.registry import model_input_config, model_task
from ferkit.training.datamodule import FerDataModule
from ferkit.training.metrics_log import park_metrics, unpark_metrics
from ferkit.training.module import FerLitModule
from ferkit.training.recipes import Recipe, load_recipe
from ferkit.training.resume import RandomState, check_batch_limit, prepare_resume
from ferkit.training.schedule import EMAWeights, RunSchedule
from ferkit.training.stopping import RunStop, RunStopped

_RUN_DIR_ENV = "FERKIT_RUN_DIR"  # lets DDP worker processes find the run rank 0 created


def _not_an_advert(record: logging.LogRecord) -> bool:
    """Lightning logs a "💡 Tip: ... try installing litlogger" line at every Trainer start: an
    advert for a cloud service in a training log. Its other lines (precision, devices) stay."""
    return not record.getMessage().lstrip().startswith("💡 Tip")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_an_advert)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temp file then rename: a kill mid-write never leaves a corrupt checkpoint."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


def checkpoint_callbacks(run_dir: Path, monitor: str = "val_loss") -> list[ModelCheckpoint]:
    """``best.ckpt`` (lowest ``monitor``, checked when validation runs) and ``last.ckpt``
    (the latest epoch, for --resume; :class:`~ferkit.training.schedule.RunSchedule` sets
    how often).

    Two callbacks, not ``save_last=True``: in Lightning 2.6 (2.6.6 here) that option rewrites
    last.ckpt only in epochs where best.ckpt was rewritten too, so after the best
    epoch a killed run would resume from the best epoch, not the latest.
    """
    return [
        ModelCheckpoint(dirpath=run_dir, filename="best", monitor=monitor, mode="min",
                        enable_version_counter=False, save_on_train_epoch_end=False),
        # monitor=None with save_top_k=1: the latest epoch, overwritten each time.
        ModelCheckpoint(dirpath=run_dir, filename="last", monitor=None, save_top_k=1,
                        enable_version_counter=False, save_on_train_epoch_end=True),
    ]


def _is_ddp_child() -> bool:
    return os.environ.get("LOCAL_RANK", "0") != "0"


def _accelerator(device: str) -> str:
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if device in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise FerkitError("--device cuda: no CUDA device is available on this machine")
        return "gpu"
    if device == "cpu":
        return "cpu"
    raise FerkitError(f"--device must be auto, cpu or cuda (got {device!r})")


def _precision(recipe: Recipe, accelerator: str, cfg=None) -> str:
    """The Lightning precision of a run: the recipe's, or for ``auto`` bf16 on a CUDA device
    that supports it and, on a CPU, the faster of bf16 and fp32 as measured for this network
    on this CPU (:mod:`ferkit.training.precision`; cached per CPU model and network)."""
    if recipe.precision != "auto":
        return recipe.precision
    if accelerator == "gpu":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    from ferkit.training.precision import auto_cpu_precision

    if cfg is None:
        cfg = model_input_config(recipe.model, recipe.in_chans, recipe.input_size)
    return auto_cpu_precision(recipe, cfg.size, cfg.channels, verbose=not _is_ddp_child())


def build_module(recipe: Recipe, labels: list[str], train_targets=None) -> FerLitModule:
    """The LightningModule for ``recipe``; class weights from ``train_targets`` when the recipe asks."""
    cw = None
    if recipe.class_weights and train_targets is not None:
        cw = class_weights(train_targets, len(labels)).tolist()
    return FerLitModule(recipe, labels, cw)


def _new_run_dir(out: Path, name: str) -> Path:
    """Create and return a fresh ``out/NAME-STAMP[-i]`` folder.

    The folder is claimed with an exclusive ``mkdir``, so two runs started in the same
    second (side by side on one machine) never share a directory.
    """
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run, i = out / f"{name}-{stamp}", 1
    while True:
        try:
            run.mkdir()
            return run
        except FileExistsError:
            run = out / f"{name}-{stamp}-{i}"
            i += 1


def train(
    recipe: str | Recipe,
    data: str | None = None,
    out: str = "runs",
    *,
    overrides: dict | None = None,
    device: str = "auto",
    devices: int = 1,
    resume: str | None = None,
    limit_train_batches: float | None = None,
    limit_val_batches: float | None = None,
    progress: bool = True,
    stop_after: float | None = None,
    run_name: str | None = None,
) -> Path:
    """Train a recipe on a dataset; returns the run directory.

    Args:
        recipe: recipe name, YAML path or :class:`Recipe`.
        data: dataset path (auto-detected layout; ``recipe.dataset`` overrides).
        out: parent folder for the run directory.
        overrides: recipe fields to replace (``epochs``, ``lr``...).
        device: auto | cpu | cuda. devices: processes/GPUs (DDP when > 1).
        resume: a run directory to continue from its ``last.ckpt`` (the same batch, learning
            rate, EMA, random state and time budget as when it stopped).
        stop_after: minutes: stop for now after this much training in this call, with a
            resumable ``last.ckpt``; the run's schedule is untouched (unlike ``max_time``).
        run_name: the run folder's name under ``out`` (default ``<recipe>-<date>-<time>``);
            it must not exist yet.

    Raises:
        RunStopped: the run was stopped before its planned end (``stop_after``, SIGTERM, the
            first Ctrl-C); ``last.ckpt`` holds the state and ``resume=run_dir`` continues it.
        FerkitError: bad recipe values, data or run folder (one line).
    """
    ckpt_path = None
    previous_precision = None
    if resume:
        run_dir, recipe, data, ckpt_path = prepare_resume(resume, data, overrides)
        # A resumed run keeps its batch limits (smoke runs) unless new ones are given.
        saved = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        cfg = run_dir / "config.yaml"
        if limit_train_batches is None:
            limit_train_batches = check_batch_limit(saved.get("limit_train_batches"), f"{cfg}: limit_train_batches")
        if limit_val_batches is None:
            limit_val_batches = check_batch_limit(saved.get("limit_val_batches"), f"{cfg}: limit_val_batches")
        previous_precision = saved.get("precision")
    else:
        recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
        recipe = recipe.override(**(overrides or {}))
        # DDP children (LOCAL_RANK > 0) re-run this command and must join the run rank 0
        # created; everyone else gets a fresh directory, even if a variable is left over.
        inherited = os.environ.get(_RUN_DIR_ENV) if _is_ddp_child() else None
        run_dir = Path(inherited) if inherited else None  # fresh runs claim a folder below
    if data is None:
        raise FerkitError("--data PATH is required")
    accelerator = _accelerator(device)

    L.seed_everything(recipe.seed, workers=True, verbose=False)
    labels = list(recipe.labels or FER7)
    cfg = model_input_config(recipe.model, recipe.in_chans, recipe.input_size)
    dm = FerDataModule(recipe, data, labels=labels, size=cfg.frame, channels=cfg.channels, devices=devices,
                       progress=progress)
    for msg in dm.report_skipped():
        print(msg)
    if model_task(recipe.model) == "classify":  # refuses single-class data, warns on unvalidated classes
        for msg in check_classes(dm.train.targets, dm.val.targets, labels, where=str(data)):
            warnings.warn(msg, stacklevel=2)
    module = build_module(recipe, labels, dm.train.targets)
    module.record_framing(dm.train.index.face_margin)  # faces cut by a loader: the model keeps the margin
    if recipe.init_checkpoint:
        _init_from(module, recipe.init_checkpoint)
    freeze_cb = None
    if recipe.freeze:
        from ferkit.training.freezing import apply_freeze

        freeze_cb = apply_freeze(module.model, recipe.freeze)  # a callback for progressive unfreezing
    # The run directory is made only once the data and the model are built: a wrong path,
    # an empty folder, bad model_kwargs, an unreadable init_checkpoint or a freeze policy
    # naming no module leave nothing behind.
    if run_dir is None and run_name:
        run_dir = Path(out) / run_name
        try:
            run_dir.mkdir(parents=True)
        except FileExistsError:
            raise FerkitError(f"{run_dir} exists already; resume it or pick another name") from None
    if run_dir is None:
        run_dir = _new_run_dir(Path(out), recipe.name)
    precision = _precision(recipe, accelerator, cfg)
    if previous_precision and previous_precision != precision and not _is_ddp_child():
        print(f"ferkit: note: {run_dir} trained in {previous_precision} so far; this machine runs it in "
              f"{precision} (precision: {recipe.precision}); the schedule carries on unchanged", flush=True)
    if not _is_ddp_child():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(
            yaml.safe_dump({"recipe": recipe.to_dict(), "data": str(data), "device": device,
                            "devices": devices, "limit_train_batches": limit_train_batches,
                            "limit_val_batches": limit_val_batches, "precision": precision}, sort_keys=False)
        )
    if devices > 1 and not _is_ddp_child():
        os.environ[_RUN_DIR_ENV] = str(run_dir)  # read by the DDP processes Lightning launches


    monitor = "val_loss"
    best_cb, last_cb = checkpoint_callbacks(run_dir, monitor)
    budget_s = recipe.max_time * 60 if recipe.max_time else None
    schedule = RunSchedule(recipe.val_every, recipe.ckpt_every, last_cb, budget_s, log=not _is_ddp_child())
    stopper = RunStop(run_dir / "last.ckpt", last_cb, stop_after * 60 if stop_after else None,
                      catch_signals=devices == 1)
    callbacks = [best_cb, last_cb, schedule, LearningRateMonitor(logging_interval="epoch"), RandomState()]
    if progress:
        # TQDM explicitly: Lightning would switch to Rich when it is installed, and Rich
        # draws nothing when output goes to a log file (nohup runs).
        callbacks.append(TQDMProgressBar(refresh_rate=20))
    if freeze_cb is not None:
        callbacks.append(freeze_cb)
    if recipe.ema_decay:
        # Validation, best.ckpt and the final weights use the exponential moving average.
        callbacks.append(EMAWeights(recipe.ema_decay))
    if recipe.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=recipe.early_stopping_patience,
                                       check_on_train_epoch_end=False))
    # Last: a stop saves the state after every other callback has seen the batch (the EMA's
    # update of it included).
    callbacks.append(stopper)
    if accelerator == "gpu":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=recipe.epochs,
        # No max_time: the hard stop past the budget is RunSchedule's, which validates and
        # checkpoints the epoch it ends (Lightning's Timer did neither) and counts the
        # training time of earlier attempts of a resumed run.
        accelerator=accelerator,
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        precision=precision,
        callbacks=callbacks,
        logger=CSVLogger(save_dir=run_dir, name="", version=""),
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress,
        enable_model_summary=progress,
        log_every_n_steps=50,
        limit_train_batches=limit_train_batches,
        limit_val_batches=limit_val_batches,
        benchmark=accelerator == "gpu",  # cuDNN picks the fastest kernels for the fixed batch shape
        deterministic=False,
    )
    if resume and not _is_ddp_child():
        park_metrics(run_dir)
    load_start = _load()
    t0 = time.time()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    except RunStopped:
        pass  # stopper.stopped says where; reported below
    except SystemExit:
        # Lightning answers a KeyboardInterrupt with sys.exit(1): the second Ctrl-C.
        raise KeyboardInterrupt from None
    finally:
        if not _is_ddp_child():
            os.environ.pop(_RUN_DIR_ENV, None)  # a later train() in this process starts afresh
            unpark_metrics(run_dir)  # also when fit failed: no metrics.resume.csv is left behind
    wall = time.time() - t0
    if stopper.stopped is not None:
        if trainer.is_global_zero and (run_dir / "metrics.csv").exists():
            from ferkit.evaluation.plots import plot_curves

            plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
        raise stopper.stopped
    if trainer.is_global_zero:
        images = trainer.global_step * recipe.batch_size * devices
        extra = {"planned_epochs": schedule.planned_epochs, "epoch_seconds": schedule.epoch_seconds,
                 "train_images_per_s": round(images / wall, 1) if wall > 0 else None,
                 "optimizer_steps": trainer.global_step, "data_on_device": dm.resident_device,
                 "precision": str(trainer.precision), "max_time_min": recipe.max_time,
                 "training_time_s": round(schedule.elapsed(), 1), "budget_hard_stop": schedule.hard_stopped,
                 **_hardware(), "load_average_start": load_start, "load_average_end": _load()}
        finish_run(run_dir, dm.val, labels, wall, trainer.current_epoch, accelerator, progress,
                   device=trainer.strategy.root_device, extra=extra)
    return run_dir


def _load() -> float | None:
    """The 1-minute load average (None where the OS has none): a run's figures taken while
    other jobs shared the CPU are not this machine's, and summary.json says so."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _hardware() -> dict:
    from ferkit.training.precision import cpu_flags, cpu_model

    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads()}


def _init_from(module: FerLitModule, path: str) -> None:
    """Copy every weight whose name and shape match from a checkpoint (e.g. CAE pre-training)."""
    from ferkit.models.checkpoint import load_weights

    rep = load_weights(module.model, path, what=f"init_checkpoint {path}")
    print(f"initialised {rep} of {module.hparams.model_name} from {path}")


def finish_run(run_dir: Path, val_ds: FerDataset, labels, wall: float, epochs: int, accelerator: str,
               progress: bool = True, device="cpu", extra: dict | None = None) -> dict:
    """Curves, validation report of best.ckpt (computed on ``device``, the training device), summary.json."""
    from ferkit.evaluation.metrics import classification_report, predict_log_probs
    from ferkit.evaluation.plots import plot_confusion, plot_curves
    from ferkit.models.checkpoint import load_checkpoint
    from ferkit.models.registry import model_task

    summary = {"run_dir": str(run_dir), "epochs_trained": epochs, "wall_time_s": round(wall, 1),
               "accelerator": accelerator, **(extra or {})}
    if (run_dir / "metrics.csv").exists():
        plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    best = run_dir / "best.ckpt"
    if best.exists():
        model, spec = load_checkpoint(best)
        if model_task(spec["model"]) == "classify":
            logp, y = predict_log_probs(model, val_ds, device=device, progress=progress)
            rep = classification_report(logp, y, labels)
            plot_confusion(rep["confusion"], labels, run_dir / "confusion_val.png", "validation (best.ckpt)")
            summary["val"] = {k: rep[k] for k in ("n", "accuracy", "loss", "macro_f1", "per_class")}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
