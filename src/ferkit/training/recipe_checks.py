"""Type and range checks for every recipe field.

A recipe's values arrive from YAML files, ``--set KEY=VALUE`` (parsed as YAML),
dedicated CLI flags, a run's ``config.yaml`` on ``--resume``, or Python. All of
them end in :class:`ferkit.training.recipes.Recipe`, whose ``__post_init__``
calls :func:`validate`, so a bad value is refused the same way wherever it came
from: one :class:`FerkitError` line naming the recipe, the field, what it must
be and what it got (``recipe boulis-baseline: epochs must be an integer >= 1,
got 'abc'``).

Types come from the dataclass annotations, so a new field is type-checked
without touching this file; :data:`RULES` adds ranges and choices on top. The
``distortion_augment`` spec is parsed (and refused with one line) when the
training module is built, before any data is read: parsing it here would load
PyTorch for every ``ferkit recipes`` listing.
"""

from __future__ import annotations

import dataclasses
import typing

from ferkit.errors import FerkitError
from ferkit.values import ValueMismatch, coerce_value, describe_type

MAX_TIME_MIN = 525_600  # one year, in minutes

# Lightning's accepted ``precision`` strings plus ours ("auto").
PRECISIONS = ("auto", "32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "bf16-true", "16-true",
              "64-true", "64", "transformer-engine", "transformer-engine-float16")


def _augment_presets() -> tuple[str, ...]:
    from ferkit.data.presets import PRESETS

    return tuple(PRESETS)


def _choice(*options):
    return lambda v: v in options, "one of " + ", ".join(options)


def _between(lo=None, hi=None, *, lo_open=False, hi_open=False):
    def ok(v):
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return hi is None or (v < hi if hi_open else v <= hi)

    if lo is not None and hi is not None:
        text = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    elif lo is not None:
        text = f"{'>' if lo_open else '>='} {lo}"
    else:
        text = f"{'<' if hi_open else '<='} {hi}"
    return ok, text


# field -> (predicate on a value of the right type (None already allowed by the type), text).
# Callables returning the rule are resolved lazily (they import torch-side modules).
RULES: dict[str, tuple] = {
    "name": (lambda v: bool(v.strip()), "a non-empty name"),
    "model": (lambda v: bool(v.strip()), "a model name (see 'ferkit models')"),
    "epochs": _between(1),
    "batch_size": _between(1),
    "optimizer": _choice("adam", "adamw", "sgd"),
    "lr": _between(0, lo_open=True),
    "betas": (lambda v: all(0 <= b < 1 for b in v), "two numbers in [0, 1), e.g. [0.9, 0.999]"),
    "momentum": _between(0, 1, hi_open=True),
    "weight_decay": _between(0),
    "scheduler": _choice("plateau", "cosine", "none"),
    "plateau_factor": _between(0, 1, lo_open=True, hi_open=True),
    "plateau_patience": _between(0),
    "early_stopping_patience": (lambda v: v >= 0, ">= 0 (0 or null: no early stopping)"),
    "label_smoothing": _between(0, 1, hi_open=True),
    "mixup": (lambda v: v >= 0, ">= 0 (the MixUp alpha; 0 turns it off)"),
    "ema_decay": (lambda v: 0 < v < 1, "in (0, 1), e.g. 0.999 (null: no EMA)"),
    "distill_alpha": _between(0, 1),
    "distill_temperature": _between(0, lo_open=True),
    "val_fraction": _between(0, 1, hi_open=True),
    "seed": _between(0, 2**32 - 1),
    "split_seed": _between(0, 2**32 - 1),
    "num_workers": _between(0),
    "in_chans": (lambda v: v in (1, 3), "1 (gray) or 3 (RGB)"),
    "input_size": _between(8),
    "labels": (lambda v: len(v) >= 2 and len(set(v)) == len(v), "a list of at least 2 distinct class names"),
    "precision": _choice(*PRECISIONS),
    "augment": lambda: _choice(*_augment_presets()),
    # No code reads ``extra``: a value there would change nothing, in silence.
    "extra": (lambda v: not v, ("empty (no code reads it: model settings go in model_kwargs, "
                                "dataset settings in source_options)")),
    "warmup_epochs": _between(0),
    "min_lr": _between(0),
    "val_every": _between(1),
    "ckpt_every": _between(1),
    # At most a year of minutes: the budget becomes a datetime.timedelta hard stop, which
    # overflows past ~1.4e12 minutes (--max-time 1e13 was an OverflowError traceback).
    "max_time": _between(0, MAX_TIME_MIN, lo_open=True),
    "data_on_device": (lambda v: v in (True, False, "auto"), "true, false or auto"),
}


def _what(tp, rule) -> str:
    """``an integer >= 1``, ``one of adam, adamw, sgd``, ``a number or null``..."""
    if rule is None:
        return describe_type(tp)
    text = rule[1]
    if text[0] in "<>" or text.startswith("in "):  # a range: say of what
        return f"{describe_type(tp).split(' or ')[0]} {text}"
    return text


def validate(recipe) -> None:
    """Coerce every field of ``recipe`` in place to its declared type and check its range.

    Raises:
        FerkitError: one line, ``recipe NAME: FIELD must be WHAT, got VALUE``.
    """
    hints = typing.get_type_hints(type(recipe))
    rname = recipe.name if isinstance(recipe.name, str) else "?"
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        tp = hints[f.name]
        rule = RULES.get(f.name)
        if callable(rule):
            rule = rule()
        if f.name == "precision" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # YAML reads "precision: 32" as a number
        try:
            value = coerce_value(value, tp)
            ok = rule is None or value is None or rule[0](value)
        except ValueMismatch:
            ok = False
        if not ok:
            raise FerkitError(f"recipe {rname}: {f.name} must be {_what(tp, rule)}, got {value!r}")
        object.__setattr__(recipe, f.name, value)
    _check_cosine(recipe, rname)
    teacher = recipe.teacher
    if isinstance(teacher, list) and not teacher:
        raise FerkitError(f"recipe {rname}: teacher must be a model path, a list of paths or null, got []")


def _check_cosine(recipe, rname: str) -> None:
    """Fields that only make sense together: a cosine that ends above its start climbs the
    learning rate (min_lr 1 with lr 1e-3 rose to 0.75 without a word), and a warm-up as long
    as the run never reaches the peak nor decays."""
    if recipe.scheduler != "cosine":
        return
    if recipe.min_lr > recipe.lr:
        raise FerkitError(f"recipe {rname}: min_lr must be <= lr with scheduler cosine (the decay's floor), "
                          f"got min_lr {recipe.min_lr:g} > lr {recipe.lr:g}")
    if recipe.warmup_epochs >= recipe.epochs:
        raise FerkitError(f"recipe {rname}: warmup_epochs must be less than epochs with scheduler cosine "
                          f"(the warm-up would take the whole run), got {recipe.warmup_epochs:g} >= "
                          f"{recipe.epochs}")
