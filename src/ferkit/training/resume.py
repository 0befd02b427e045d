"""``ferkit train --resume RUN``: the run's recipe and a checkpoint known to load.

Lightning reads ``last.ckpt`` deep inside ``Trainer.fit``; a truncated or empty
file (a full disk, a copy cut short) ended there in a 50-line traceback. The
file is read here first, so the user gets one line naming it and what to do.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import yaml

from ferkit.errors import FerkitError
from ferkit.training.recipes import Recipe

# Fields a resumed run cannot change. The network's shape: last.ckpt holds weights (and
# optimizer state) for the saved values. The validation split: best.ckpt is chosen by
# comparing val_loss across epochs, which means nothing if later epochs see other faces.
ARCHITECTURE_FIELDS = ("model", "model_kwargs", "in_chans", "input_size", "labels")
SPLIT_FIELDS = ("dataset", "source_options", "val_fraction", "group_val", "seed")
# What a checkpoint written by Trainer.fit holds and a resume needs.
_TRAINING_KEYS = ("state_dict", "optimizer_states", "epoch", "loops")


def check_training_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from (one phrase), or None when it can."""
    import torch

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
    recipe = Recipe.from_dict(saved_recipe)
    if overrides:
        new = recipe.override(**overrides)
        for fields, why in ((ARCHITECTURE_FIELDS, "last.ckpt holds weights for the saved value"),
                            (SPLIT_FIELDS, "the validation split would change under best.ckpt's selection")):
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
    return run_dir, recipe, data or saved_data, str(last)
