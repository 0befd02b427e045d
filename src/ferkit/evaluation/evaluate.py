"""Evaluating one or several checkpoints on a dataset split."""

from __future__ import annotations

import sys
import warnings

import torch

from ferkit.errors import FerkitError
from ferkit.evaluation.ensemble import Ensemble, make_tta
from ferkit.evaluation.metrics import classification_report, predict_log_probs
from ferkit.models.checkpoint import load_model_any, require_classifier


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is available, else ``cpu``; other names pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def evaluate_checkpoints(args) -> dict:
    """Evaluate ``args.checkpoint`` (one, or several = soft-voting ensemble) on ``args.split``."""
    device = resolve_device(args.device)
    loaded = [load_model_any(c) for c in args.checkpoint]
    for model, spec in loaded:
        require_classifier(spec, model)
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
    if single and (msg := framing_mismatch(ds.index, loaded[0][1]["input_config"])):
        warnings.warn(msg, stacklevel=2)
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


def framing_mismatch(index, input_config) -> str | None:
    """One line when a loader cut the split's faces with another margin than the model's
    framing (``InputConfig.face_margin``), else None. A run's checkpoint is evaluated with
    its run's source options, so its faces match; another model on cropped faces may not.
    """
    cut, want = index.face_margin, getattr(input_config, "face_margin", None)
    if cut is None or want is None or abs(cut - want) < 1e-9:
        return None
    return (f"{index.root} [{index.split}]: faces were cut with margin {cut:g} (source option face_margin) "
            f"but the model's framing is {want:g}: accuracy may be lower than on faces framed as in training")


def spec_kind(spec: dict) -> str:
    """``ensemble`` for an ensemble's spec, else ``model``."""
    return "ensemble" if spec.get("model") == "ensemble" else "model"


def _split_dataset(args, labels, size: int, channels: int):
    """The faces to evaluate on (see :func:`ferkit.training.datamodule.checkpoint_split`)."""
    from ferkit.models.input_config import InputConfig
    from ferkit.training.datamodule import checkpoint_split

    return checkpoint_split(args.checkpoint[0], args.data, args.split, labels=labels,
                            input_config=InputConfig(size=size, channels=channels), dataset=args.dataset,
                            val_fraction=args.val_fraction, strict=args.strict, progress=not args.no_progress)


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
