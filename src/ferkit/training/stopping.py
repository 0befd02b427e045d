"""Stopping a run for now and resuming it later with its schedule intact.

A strong network trains for hours on a CPU, longer than the machine it runs on may stay
up, so a run has to be stoppable at any batch without losing work:

* :class:`RunStop` -- a Lightning callback that, when asked to stop (SIGTERM, the first
  Ctrl-C, or ``ferkit train --stop-after MINUTES``), finishes the batch in progress, writes
  ``last.ckpt`` with the whole training state (weights, optimizer, learning-rate schedule,
  EMA, random generators, the position inside the epoch) and ends ``Trainer.fit`` with
  :class:`RunStopped`. ``ferkit train --resume RUN`` then continues from that very batch.
  A second Ctrl-C quits at once without saving.
* :class:`RunStopped` -- why and where a run stopped; ``train()`` turns it into a message
  and an exit code (0 for a planned stop, 130 for Ctrl-C, 143 for SIGTERM).

The position inside the epoch is resumable because the resident batches
(:class:`ferkit.training.datamodule.DeviceBatches`) save the epoch's shuffle and how many
batches training took from it (``consumed``, kept up to date here at every batch end);
Lightning's own loop counters say the rest.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

#: exit codes of a stopped ``ferkit train``: a stop asked for on the command line is a success
EXIT_CODES = {"stop-after": 0, "Ctrl-C": 130, "SIGTERM": 143}


class RunStopped(Exception):
    """Raised out of ``Trainer.fit`` once ``last.ckpt`` holds the state to resume from.

    Attributes:
        reason: ``"stop-after"``, ``"Ctrl-C"`` or ``"SIGTERM"``.
        epoch: the 0-based epoch the run stopped in. batch: batches of it done. batches: its length.
        checkpoint: the file written (``RUN/last.ckpt``).
    """

    def __init__(self, reason: str, epoch: int, batch: int, batches: int, checkpoint: Path,
                 message: str | None = None):
        self.reason, self.epoch, self.batch, self.batches, self.checkpoint = reason, epoch, batch, batches, checkpoint
        super().__init__(message or f"stopped by {reason} in epoch {epoch + 1} after batch {batch}/{batches}")

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.reason, 1)


def stateful_loaders(trainer) -> list:
    """The training loaders that save their position (``DeviceBatches``), or []."""
    loader = getattr(trainer.fit_loop, "_combined_loader", None)
    if loader is None:
        return []
    return [it for it in loader.flattened if hasattr(it, "consumed")]


def _load_loader_states(trainer) -> None:
    """Hand a resumed run's saved loader positions to the loaders.

    Lightning 2.6 loads them in ``FitLoop.setup_data``, but a module whose
    ``configure_optimizers`` reads ``trainer.estimated_stepping_batches`` (ours: the cosine's
    length) has set the loader up before the checkpoint was read, and the later call returns
    early: the states were never loaded and a resumed epoch started over on a new shuffle.
    Called from ``on_train_start``, after the restore and before the first batch is fetched
    (``DeviceBatches`` draws its order lazily, on the first batch).
    """
    loop = trainer.fit_loop
    if getattr(loop, "_combined_loader_states_to_load", None) and getattr(loop, "_combined_loader", None):
        loop._load_combined_loader_states()


class RunStop(Callback):
    """Stop at a batch boundary with a resumable ``last.ckpt`` (see the module docstring).

    Args:
        checkpoint: where the state goes (the run's ``last.ckpt``; written atomically by the
            trainer's checkpoint plugin).
        stop_after_s: stop once this process has trained this many seconds (None: no limit).
            The run's schedule is untouched: ``--resume`` carries on to the planned end.
        catch_signals: take over SIGINT and SIGTERM while training (main thread only).
    """

    def __init__(self, checkpoint: Path, last_ckpt=None, stop_after_s: float | None = None,
                 catch_signals: bool = True):
        self.checkpoint = Path(checkpoint)
        self.last_ckpt = last_ckpt
        self.stop_after_s = stop_after_s
        self.catch_signals = catch_signals
        self.reason: str | None = None
        self.stopped: RunStopped | None = None
        self._t0: float | None = None
        self._saved_handlers: dict = {}

    # --- signals -------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        if signum == signal.SIGINT and self.reason == "Ctrl-C":
            # The second Ctrl-C: the user does not want to wait for the batch to end.
            raise KeyboardInterrupt
        self.reason = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        extra = " (Ctrl-C again to quit without saving)" if signum == signal.SIGINT else ""
        print(f"\nferkit: {self.reason}: saving the run after this batch{extra}", file=sys.stderr, flush=True)

    def _install(self):
        if not self.catch_signals or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def _restore(self):
        for sig, handler in self._saved_handlers.items():
            signal.signal(sig, handler)
        self._saved_handlers = {}

    # --- hooks -----------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module):
        # Lightning installs its own SIGTERM handler when fit starts (it would stop the epoch
        # without saving); ours replaces it for the training loop and is undone at the end.
        self._t0 = time.monotonic()
        self._install()
        _load_loader_states(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for loader in stateful_loaders(trainer):
            loader.consumed = batch_idx + 1
        if self.reason is None and self.stop_after_s is not None and self._t0 is not None \
                and time.monotonic() - self._t0 >= self.stop_after_s:
            self.reason = "stop-after"
        if self.reason is None:
            return
        batches = trainer.num_training_batches
        if batch_idx + 1 >= batches:
            return  # the epoch's end: stop there, after its validation and checkpoint
        self._stop(trainer, batch_idx + 1, batches)

    def on_train_epoch_end(self, trainer, pl_module):
        # A stop asked for during the epoch's last batch or its validation: the epoch is
        # complete, so it ends the ordinary way (metrics logged, last.ckpt written by its
        # ModelCheckpoint, which Lightning runs after this callback) and fit returns.
        if self.reason is not None and trainer.current_epoch + 1 < trainer.max_epochs:
            n = trainer.num_training_batches
            if self.last_ckpt is not None:
                self.last_ckpt._every_n_epochs = 1
            trainer.should_stop = True
            self.stopped = RunStopped(self.reason, trainer.current_epoch, n, n, self.checkpoint)
            self._restore()

    def _stop(self, trainer, batch: int, batches: int):
        trainer.save_checkpoint(self.checkpoint)
        self._restore()
        self.stopped = RunStopped(self.reason, trainer.current_epoch, batch, batches, self.checkpoint)
        raise self.stopped

    def on_train_end(self, trainer, pl_module):
        self._restore()

    def on_exception(self, trainer, pl_module, exception):
        self._restore()
