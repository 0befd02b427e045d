"""Evaluating one or several checkpoints on a dataset split."""

from __future__ import annotations

import sys
import warnings

import torch

from ferkit.data.dataset import FerDataset, load_index
from ferkit.errors import FerkitError
from ferkit.evaluation.ensemble import Ensemble, make_tta
from ferkit.evaluation.metrics import classification_report, predict_log_probs
from ferkit.models.checkpoint import load_model_any


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is available, else ``cpu``; other names pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def evaluate_checkpoints(args) -> dict:
    """Evaluate ``args.checkpoint`` (one, or several = soft-voting ensemble) on ``args.split``."""
    device = resolve_device(args.device)
    loaded = [load_model_any(c) for c in args.checkpoint]
    labels = loaded[0][1]["labels"]
    for _, spec in loaded[1:]:
        if spec["labels"] != labels:
            raise FerkitError("ensemble members must share one label set")
    # None: no TTA; 0: image + mirror; K: + K copies; "ten-crop": each model's ten crops
    tta_k = getattr(args, "tta", None)
    single = len(loaded) == 1 and spec_kind(loaded[0][1]) != "ensemble"
    size = max(s["input_config"].frame for _, s in loaded)
    ch = max(s["input_config"].channels for _, s in loaded)
    ds = _split_dataset(args, labels, size, ch)
    if single:
        model, spec = loaded[0]
        tta = _tta(args)
        logp, y = predict_log_probs(model, ds, args.batch_size, device, tta=tta, progress=not args.no_progress,
                                 input_transform=_distortion(args))
    else:
        ens = Ensemble.from_loaded(loaded) if len(loaded) > 1 else loaded[0][0]
        logp, y = ens.predict_log_probs(ds, args.batch_size, device, tta_copies=tta_k or 0,
                                     progress=not args.no_progress, input_transform=_distortion(args),
                                     tta_preset=getattr(args, "tta_preset", "boulis"),
                                     tta_flip_only=tta_k == 0)
    if msg := ds.report_skipped():
        print(msg, file=sys.stderr)
    rep = classification_report(logp, y, labels)
    rep.update(split=args.split, data=str(args.data), checkpoints=list(args.checkpoint),
               skipped=dict(ds.skipped),
               tta=_tta_report(tta_k, getattr(args, "tta_preset", "boulis")))
    return rep


def spec_kind(spec: dict) -> str:
    """``ensemble`` for an ensemble's spec, else ``model``."""
    return "ensemble" if spec.get("model") == "ensemble" else "model"


def _split_dataset(args, labels, size: int, channels: int):
    """The faces to evaluate on.

    A checkpoint inside a run directory is evaluated on its run's data as training saw it
    (dataset layout, source options such as face crops, val fraction, grouping, seed), so
    its ``val`` is exactly the faces training validated on; ``--dataset`` and
    ``--val-fraction`` still override. Other files use the auto-detected layout.
    """
    from ferkit.training.datamodule import run_recipe_of, run_split

    run = run_recipe_of(args.checkpoint[0])
    if run is not None:
        given = {"dataset": args.dataset, "val_fraction": args.val_fraction}
        given = {k: v for k, v in given.items() if v is not None}
        if given.get("dataset", run[0].dataset) != run[0].dataset:
            given["source_options"] = {}  # the run's options belong to its own layout (refused by others)
        recipe = run[0].override(**given)
        return run_split(recipe, args.data, args.split, labels=labels, size=size, channels=channels,
                         progress=not args.no_progress, strict=args.strict)
    val_fraction = args.val_fraction if args.val_fraction is not None else 0.1
    index = load_index(args.data, args.split, args.dataset, val_fraction=val_fraction, seed=0)
    for note in index.notes:
        warnings.warn(note, stacklevel=2)
    return FerDataset(index, size, channels, labels, strict=args.strict, progress=not args.no_progress)


def _tta(args):
    k = getattr(args, "tta", None)
    if k is None:  # --tta 0 is a real setting: the original and its mirror image only
        return None
    return make_tta(k, getattr(args, "tta_preset", "boulis"))


def _tta_report(k, preset: str) -> dict | None:
    if k is None:
        return None
    if isinstance(k, str):
        return {"mode": k}
    return {"copies": k, "preset": preset}


def _distortion(args):
    spec = getattr(args, "distortion", None)
    if not spec:
        return None
    from ferkit.data.distortions import parse_distortion

    return parse_distortion(spec, seed=getattr(args, "distortion_seed", 0))
