"""``ferkit train --resume RUN``: the run's recipe and a checkpoint known to load.

Lightning reads ``last.ckpt`` deep inside ``Trainer.fit``; a truncated or empty
file (a full disk, a copy cut short) ended there in a 50-line traceback. The
file is read here first, so the user gets one line naming it and what to do.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from ferkit.errors import FerkitError
from ferkit.training.recipes import Recipe
from ferkit.training.recipes import saved_recipe as saved_recipe_dict

# Fields a resumed run cannot change. The network's shape: last.ckpt holds weights (and
# optimizer state) for the saved values. The validation split: best.ckpt is chosen by
# comparing val_loss across epochs, which means nothing if later epochs see other faces.
ARCHITECTURE_FIELDS = ("model", "model_kwargs", "in_chans", "input_size", "labels")
SPLIT_FIELDS = ("dataset", "source_options", "val_fraction", "group_val", "split_seed")
# What a checkpoint written by Trainer.fit holds and a resume needs.
_TRAINING_KEYS = ("state_dict", "optimizer_states", "epoch", "loops")


def check_training_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from (one phrase), or None when it can."""
    from ferkit.models.checkpoint import load_failure

    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        # our own run's file; mmap: the tensors are not read, the structure is (a VGG16 run's
        # last.ckpt with Adam state is ~1.5 GB, read again by Lightning right after)
        ck = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means a damaged file
        return f"truncated or damaged ({load_failure(e)})"
    if not isinstance(ck, dict) or any(k not in ck for k in _TRAINING_KEYS):
        return "not a checkpoint written by 'ferkit train' (no optimizer or loop state)"
    return None


def prepare_resume(resume, data, overrides: dict | None) -> tuple[Path, Recipe, str, str | None]:
    """(run directory, recipe with ``overrides`` applied, data path, checkpoint or None).

    Raises:
        FerkitError: not a run directory; an override that changes the network; a
            ``last.ckpt`` that cannot be read (naming the file and what to do).
    """
    run_dir = Path(resume)
    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        raise FerkitError(f"--resume {resume}: not a run directory (no config.yaml)")
    try:
        saved = yaml.safe_load(cfg_file.read_text())
        saved_recipe, saved_data = saved["recipe"], saved["data"]
    except (yaml.YAMLError, TypeError, KeyError) as e:
        raise FerkitError(f"{cfg_file}: not a run's config.yaml ({type(e).__name__})") from None
    recipe = Recipe.from_dict(saved_recipe_dict(saved_recipe))
    if overrides:
        new = recipe.override(**overrides)
        for fields, why in ((ARCHITECTURE_FIELDS, "last.ckpt holds weights for the saved value"),
                            (SPLIT_FIELDS, "the validation split would change under best.ckpt's selection"),
                            (("seed",), "the run's random streams continue from its checkpoint")):
            changed = [f for f in fields if getattr(new, f) != getattr(recipe, f)]
            if changed:
                raise FerkitError(f"--resume {resume}: {', '.join(changed)} cannot change in a resumed run "
                                  f"({why}); start a new run instead")
        recipe = new
    last, best = run_dir / "last.ckpt", run_dir / "best.ckpt"
    if not last.is_file():
        warnings.warn(f"{run_dir}: no last.ckpt yet, starting the run from scratch", stacklevel=3)
        return run_dir, recipe, data or saved_data, None
    if why := check_training_checkpoint(last):
        if best.is_file() and check_training_checkpoint(best) is None:
            todo = (f"resume from the best epoch instead with 'cp {best} {last}' and --resume again, "
                    f"or delete {last} to start the run over")
        else:
            todo = f"delete {last} to start the run over"
        raise FerkitError(f"{last}: {why}; {todo}")
    _check_against_checkpoint(recipe, last, cfg_file)
    return run_dir, recipe, data or saved_data, str(last)


def _check_against_checkpoint(recipe: Recipe, last: Path, cfg_file: Path) -> None:
    """Refuse a config.yaml edited by hand away from the run's checkpoint: another network was a
    'size mismatch' RuntimeError traceback deep in Lightning, another validation split changed
    best.ckpt's selection in silence."""
    from ferkit.labels import FER7

    ck = torch.load(last, map_location="cpu", weights_only=False, mmap=True)
    saved = ck.get("hyper_parameters") or {}
    ours = {f: getattr(recipe, f) for f in (*ARCHITECTURE_FIELDS, *SPLIT_FIELDS)}
    ours["labels"] = list(recipe.labels or FER7)  # the checkpoint holds the labels the run used
    changed = [f"{f} {ours[f]!r} (checkpoint: {saved[f]!r})" for f in ours if f in saved and saved[f] != ours[f]]
    if changed:
        raise FerkitError(f"{cfg_file}: {'; '.join(changed)} differ from {last.name}; put config.yaml back "
                          "or start a new run")


def check_batch_limit(value, where: str):
    """A saved ``limit_*_batches`` value as ``--limit-batches`` takes it: None, a fraction in
    (0, 1) or a whole count >= 1 (a hand-edited 'abc' was a TypeError traceback)."""
    ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                           and value > 0 and (value < 1 or float(value).is_integer()))
    if not ok:
        raise FerkitError(f"{where} must be a fraction in (0, 1), a whole batch count or null, got {value!r}")
    return int(value) if value is not None and value >= 1 else value


class RandomState(Callback):
    """Save the random generators' states in every checkpoint and restore them on --resume.

    Lightning restores weights, optimizer, scheduler and loop counters but not the random
    generators, and ``seed_everything`` at start-up puts them back at epoch 0's state: a
    resumed run shuffled, augmented and dropped out differently from the run it continues.
    With the states restored, a run killed after epoch k and resumed repeats the uninterrupted
    run's numbers (on the CPU, where kernels are deterministic). Single-process runs only:
    under DDP every rank has its own generators and rank 0 alone writes the checkpoint.
    """

    def state_dict(self) -> dict:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        # plain lists and numbers: Lightning reads checkpoints with weights_only=True (no arrays)
        state = {"python": random.getstate(), "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
                 "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return
        random.setstate(state["python"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
