"""Evaluating one or several checkpoints on a dataset split."""

from __future__ import annotations

import sys
import warnings

import torch
import yaml

from ferkit.data.dataset import FerDataset, load_index
from ferkit.evaluation.metrics import classification_report, predict_logits
from ferkit.models.checkpoint import load_checkpoint


def resolve_device(device: str) -> str:
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
            from ferkit.errors import FerkitError

            raise FerkitError("ensemble members must share one label set")
    val_fraction = args.val_fraction if args.val_fraction is not None else 0.1
    seed = 0
    cfg_run = _run_config(args.checkpoint[0])
    if cfg_run and args.val_fraction is None:
        val_fraction = cfg_run["recipe"].get("val_fraction", 0.1)
        seed = cfg_run["recipe"].get("seed", 0)
    idx = load_index(args.data, args.split, args.dataset, val_fraction=val_fraction, seed=seed)
    for note in idx.notes:
        warnings.warn(note, stacklevel=2)
    # None: no TTA; 0: image + mirror; K: + K copies; "ten-crop": each model's ten crops
    tta_k = getattr(args, "tta", None)
    if len(loaded) == 1 and spec_kind(loaded[0][1]) != "ensemble":
        model, spec = loaded[0]
        cfg = spec["input_config"]
        ds = FerDataset(idx, cfg.frame, cfg.channels, labels, strict=args.strict, progress=not args.no_progress)
        tta = _tta(args)
        logp, y = predict_logits(model, ds, args.batch_size, device, tta=tta, progress=not args.no_progress,
                                 input_transform=_distortion(args))
    else:
        from ferkit.evaluation.ensemble import Ensemble

        ens = Ensemble.from_loaded(loaded) if len(loaded) > 1 else loaded[0][0]
        size = max(s["input_config"].frame for _, s in loaded)
        ch = max(s["input_config"].channels for _, s in loaded)
        ds = FerDataset(idx, size, ch, labels, strict=args.strict, progress=not args.no_progress)
        logp, y = ens.predict_logits(ds, args.batch_size, device, tta_copies=tta_k or 0,
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


def load_model_any(ref: str):
    """A checkpoint path, or a shipped/saved model name such as 'default'."""
    from pathlib import Path

    if not Path(ref).exists():
        try:
            from ferkit.inference.pretrained import resolve_pretrained

            ref = resolve_pretrained(ref)
        except ImportError:
            pass
    from ferkit.evaluation.ensemble import ensemble_spec, is_ensemble_file, load_ensemble

    if is_ensemble_file(ref):  # one file holding several members (ferkit ensemble)
        ens = load_ensemble(ref)
        return ens, ensemble_spec(ens, ref)
    return load_checkpoint(ref)


def spec_kind(spec: dict) -> str:
    return "ensemble" if spec.get("model") == "ensemble" else "model"


def _run_config(ckpt_path) -> dict | None:
    from pathlib import Path

    p = Path(ckpt_path).parent / "config.yaml"
    if p.is_file():
        try:
            return yaml.safe_load(p.read_text())
        except yaml.YAMLError:
            return None
    return None


def _tta(args):
    k = getattr(args, "tta", None)
    if k is None:  # --tta 0 is a real setting: the original and its mirror image only
        return None
    from ferkit.evaluation.ensemble import make_tta

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
