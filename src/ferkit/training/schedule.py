"""When things happen in a run: learning-rate shape, time budget, validation and checkpoints.

* :func:`warmup_cosine` -- linear warm-up then cosine decay, per optimiser step, towards a
  total that may shrink while the run goes on (a time budget).
* :class:`RunSchedule` -- a Lightning callback that validates every ``val_every`` epochs and
  writes ``last.ckpt`` every ``ckpt_every`` epochs, always including the final epoch, and,
  given a time budget, measures the run's own epoch time and shortens the run (and the
  cosine schedule with it) so that it ends inside the budget.
* :class:`EMAWeights` -- an exponential moving average of the weights, updated without
  reading anything back from the device.

Nothing here calls ``.item()``/``float()`` on a device tensor inside the training step: on a
GPU every such call stalls the device until the host catches up (``../shared/GPU.md``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, WeightAveraging

#: seconds past ``budget * HARD_FACTOR`` after which a budget run stops whatever its plan said
HARD_FACTOR, HARD_EXTRA_S = 1.15, 30.0


def warmup_cosine(total_steps: Callable[[], int | None], warmup_steps: int, floor: float = 0.0):
    """``LambdaLR`` factor: ``(s + 1) / warmup`` for the first ``warmup_steps`` steps, then a
    cosine from 1 down to ``floor`` at step ``total_steps()``, and ``floor`` after that.

    ``total_steps`` is read at every step, so a run can shorten its schedule mid-way
    (the factor then continues from the new position on the shorter curve).
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        total = total_steps() or 1
        span = max(1, total - warmup_steps)
        p = min(1.0, (step - warmup_steps) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))

    return factor


class RunSchedule(Callback):
    """Validation / checkpoint cadence, an optional time budget, and a line per epoch.

    Args:
        val_every: validate every N epochs (and on the final epoch).
        ckpt_every: write ``last.ckpt`` every N epochs (and on the final epoch).
        last_ckpt: the ModelCheckpoint that writes ``last.ckpt``.
        budget_s: training time budget in seconds for the whole run (None: the recipe's epochs).
        margin: share of the budget kept free for the final validation and report.
        hard_factor, hard_extra_s: past ``budget_s * hard_factor + hard_extra_s`` seconds the
            run stops after the current batch, validated and checkpointed, whatever the plan
            said (a plan that proved wrong: the machine slowed down).
        log: print one line per epoch (losses, accuracy, learning rate, epoch time, ETA).

    With a budget, the first epoch (cuDNN autotuning, lazy initialisation) is not timed; at
    the start of every later epoch the mean time of the last ``pace_window`` epochs
    (validation included) decides how many
    epochs still fit, and ``max_epochs`` and the module's ``schedule_steps`` follow: a run
    that slows down (another process starts on the same machine) still ends in time, and the
    cosine still reaches its floor. A run that got faster again (its slow epochs were a
    passing job beside it) grows back towards the recipe's epochs, but only in the first
    ``grow_before`` of its plan, where the cosine's small step back up does no harm.

    The budget is the whole run's: the training time already spent (``elapsed_s``), the plan
    and the measured epoch time are saved in every checkpoint and restored by ``--resume``,
    so a run stopped and resumed any number of times ends on the budget it started with.
    """

    #: epochs whose mean time paces the plan
    pace_window = 3
    #: a plan may grow back only before this share of its epochs
    grow_before = 0.5

    def __init__(self, val_every: int = 1, ckpt_every: int = 1, last_ckpt: ModelCheckpoint | None = None,
                 budget_s: float | None = None, margin: float = 0.04, hard_factor: float | None = None,
                 hard_extra_s: float | None = None, log: bool = False):
        self.val_every, self.ckpt_every = max(1, val_every), max(1, ckpt_every)
        self.last_ckpt = last_ckpt
        self.budget_s, self.margin = budget_s, margin
        hard_factor = HARD_FACTOR if hard_factor is None else hard_factor
        hard_extra_s = HARD_EXTRA_S if hard_extra_s is None else hard_extra_s
        self.hard_s = budget_s * hard_factor + hard_extra_s if budget_s is not None else None
        self.log = log
        self._t0: float | None = None
        self._t_epoch1: float | None = None
        self._epoch1: int | None = None
        self._epoch_start: float | None = None
        self._elapsed_restored = 0.0
        self.planned_epochs: int | None = None
        self.epoch_seconds: float | None = None
        self.hard_stopped = False
        self._full: tuple[int | None, int] | None = None
        self._durations: list[float] = []  # seconds of each timed epoch of this process

    def elapsed(self) -> float:
        """Training seconds of the whole run so far (earlier attempts included)."""
        if self._t0 is None:
            return self._elapsed_restored
        return time.monotonic() - self._t0

    def _is_final(self, trainer: L.Trainer, epoch: int) -> bool:
        return epoch + 1 >= trainer.max_epochs

    def on_train_epoch_start(self, trainer, pl_module):
        e = trainer.current_epoch
        now = time.monotonic()
        previous_start = self._epoch_start
        if self._t0 is None:  # the first epoch of this process (a fresh run or a resume)
            self._t0, self._epoch1 = now - self._elapsed_restored, e + 1
        elif self.log and self._epoch_start is not None:
            self._print_epoch(trainer, e - 1, now - self._epoch_start)
        self._epoch_start = now
        if e == self._epoch1:  # the first epoch (autotuning, warm-up) is over: start timing
            self._t_epoch1 = now
            # A fresh run's budget already spent by its first epoch alone: this one is the last.
            spent = now - self._t0
            if self.budget_s is not None and not self._elapsed_restored \
                    and self.budget_s * (1 - self.margin) - spent < spent and e + 1 < trainer.max_epochs:
                self.epoch_seconds = spent
                self.shorten(trainer, pl_module, e + 1)
        if self._t_epoch1 is not None and e > self._epoch1:
            self._durations.append(now - previous_start)
            # The recent pace, not the mean since the start: epochs slowed by a passing job
            # beside the run (a test file) would otherwise keep the plan short for good.
            recent = self._durations[-self.pace_window:]
            self.epoch_seconds = sum(recent) / len(recent)
        if self.budget_s is not None and self.epoch_seconds and (e > self._epoch1 or self._elapsed_restored):
            # Decided at the start of an epoch, so that the final epoch knows it is final
            # and validates (validation runs inside the epoch, before its end hooks). A
            # resumed run plans with the epoch time its checkpoint measured until it has its own.
            left = self.budget_s * (1 - self.margin) - (now - self._t0)
            fit = e + max(1, int(left // self.epoch_seconds))
            if fit < trainer.max_epochs:
                self.shorten(trainer, pl_module, fit)
            elif (self._full is not None and trainer.max_epochs < self._full[1]
                  and e < self.grow_before * trainer.max_epochs and fit > trainer.max_epochs):
                # Faster than planned (the slow epochs are past): take back epochs, up to the
                # recipe's, while the cosine is young enough that its step back up is small.
                self.shorten(trainer, pl_module, min(fit, self._full[1]))
        final = self._is_final(trainer, e)
        # Lightning validates when (epoch + 1) % check_val_every_n_epoch == 0: 1 = now,
        # epoch + 2 = not now.
        trainer.check_val_every_n_epoch = 1 if final or (e + 1) % self.val_every == 0 else e + 2
        if self.last_ckpt is not None:
            self.last_ckpt._every_n_epochs = 1 if final or (e + 1) % self.ckpt_every == 0 else e + 2

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.hard_s is None or self.hard_stopped or self._t0 is None:
            return
        if time.monotonic() - self._t0 > self.hard_s:
            # The budget is spent and the plan was wrong: end this epoch here, validated and
            # checkpointed (Lightning validates an epoch ended by should_stop when the epoch
            # is due for validation).
            self.hard_stopped = True
            e = trainer.current_epoch
            trainer.check_val_every_n_epoch = 1
            if self.last_ckpt is not None:
                self.last_ckpt._every_n_epochs = 1
            self.planned_epochs = e + 1
            trainer.should_stop = True
            print(f"ferkit: the time budget ({self.budget_s / 60:g} min) is spent: ending the run in epoch "
                  f"{e + 1} after batch {batch_idx + 1}/{trainer.num_training_batches}", flush=True)

    def on_train_end(self, trainer, pl_module):
        if self.log and self._epoch_start is not None:
            self._print_epoch(trainer, trainer.current_epoch - 1, time.monotonic() - self._epoch_start,
                              final=True)

    def _print_epoch(self, trainer, epoch: int, seconds: float, final: bool = False) -> None:
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        parts = [f"epoch {epoch + 1}/{trainer.max_epochs}", f"{seconds / 60:.1f} min"]
        for key, name in (("train_loss", "train loss"), ("train_acc", "acc"), ("val_loss", "val loss"),
                          ("val_acc", "acc")):
            if key in m:
                parts.append(f"{name} {m[key]:.4f}")
        opt = trainer.optimizers[0] if trainer.optimizers else None
        if opt is not None:
            parts.append(f"lr {opt.param_groups[0]['lr']:.3g}")
        left = trainer.max_epochs - epoch - 1
        per = self.epoch_seconds or seconds
        if not final and left > 0 and per:
            eta = left * per
            end = time.strftime("%H:%M", time.localtime(time.time() + eta))
            parts.append(f"ETA {_duration(eta)} ({end})")
        from tqdm import tqdm

        tqdm.write("; ".join(parts))  # on a line of its own, above a progress bar if one is drawn

    def shorten(self, trainer, pl_module, epochs: int) -> None:
        """End the run after ``epochs`` epochs (fewer or, back up to the recipe's, more than
        planned); the cosine schedule ends there too."""
        if self._full is None:  # scaled from the full plan each time: a resumed run that
            # shortens once to the saved plan gets the very step count of one shortened thrice
            self._full = (getattr(pl_module, "schedule_steps", None), trainer.max_epochs)
        full_steps, full_epochs = self._full
        trainer.fit_loop.max_epochs = epochs
        self.planned_epochs = epochs
        if full_steps:
            pl_module.schedule_steps = max(1, full_steps * epochs // max(1, full_epochs))

    def on_train_start(self, trainer, pl_module):
        # A resumed run: its checkpoint's plan (restored by load_state_dict) is applied again.
        # Without it, the new process sized the cosine to the recipe's full epochs, and a
        # budget run killed at epoch 4 of 9 went back from lr 0.0059 to 0.00999 (near its peak).
        if self.planned_epochs is not None and self.planned_epochs < trainer.max_epochs:
            self.shorten(trainer, pl_module, self.planned_epochs)

    def state_dict(self):
        return {"planned_epochs": self.planned_epochs, "elapsed_s": self.elapsed(),
                "epoch_seconds": self.epoch_seconds}

    def load_state_dict(self, state):
        self.planned_epochs = state.get("planned_epochs")
        self._elapsed_restored = float(state.get("elapsed_s") or 0.0)
        self.epoch_seconds = state.get("epoch_seconds")


def _duration(seconds: float) -> str:
    """``3 h 05 min`` / ``12 min`` / ``40 s``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds)} s"


class EMAWeights(WeightAveraging):
    """EMA of the weights: ``avg <- d * avg + (1 - d) * w`` with ``d = min(decay, (1 + n) / (10 + n))``.

    ``n`` counts the updates so far. Without the warm-up a plain 0.999 average keeps
    ~20% of the *initial* weights (and BatchNorm statistics) after 1,600 steps,
    which made the averaged model 18 points worse than the live one after 4
    FER2013 epochs; with it the average follows closely early and smooths later.

    Lightning's ``WeightAveraging`` (validation, checkpoints and the final weights use the
    average) with the update done here: the count lives on the host and all floating-point
    tensors are updated by one ``torch._foreach_lerp_``. The stock ``AveragedModel`` update
    tests its device-side counter with ``bool()`` twice per step (a device sync each).
    """

    def __init__(self, decay: float):
        super().__init__(use_buffers=True)
        self.decay = decay
        self.updates = 0
        self._pairs = None

    def _tensor_pairs(self, pl_module):
        if self._pairs is None:
            avg = list(self._average_model.module.parameters()) + list(self._average_model.module.buffers())
            cur = list(pl_module.parameters()) + list(pl_module.buffers())
            fl = [(a, c) for a, c in zip(avg, cur) if a.is_floating_point()]
            other = [(a, c) for a, c in zip(avg, cur) if not a.is_floating_point()]
            self._pairs = ([a for a, _ in fl], [c for _, c in fl], other)
        return self._pairs

    @torch.no_grad()
    def update(self, pl_module) -> None:
        avg_f, cur_f, other = self._tensor_pairs(pl_module)
        cur_f = [c.detach() for c in cur_f]
        if self.updates == 0:
            torch._foreach_copy_(avg_f, cur_f)
        else:
            n = self.updates
            d = min(self.decay, (1.0 + n) / (10.0 + n))
            torch._foreach_lerp_(avg_f, cur_f, 1.0 - d)
        for a, c in other:  # integer buffers (BatchNorm's num_batches_tracked): the latest
            a.copy_(c)
        self.updates += 1
        self._average_model.n_averaged.add_(1)  # kept for Lightning's checkpoint format

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step > self._latest_update_step:
            self.update(pl_module)
            self._latest_update_step = trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module):
        pass  # per-step updates only

    def state_dict(self):
        return {**super().state_dict(), "ema_updates": self.updates}

    def load_state_dict(self, state):
        state = dict(state)
        self.updates = int(state.pop("ema_updates", 0))
        super().load_state_dict(state)
