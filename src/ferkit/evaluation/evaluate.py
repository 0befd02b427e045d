"""Evaluating one or several checkpoints on a dataset split."""

from __future__ import annotations

import sys
import warnings

import torch

from ferkit.errors import FerkitError
from ferkit.evaluation.ensemble import Ensemble, ensemble_log_probs, make_tta
from ferkit.evaluation.metrics import classification_report, predict_log_probs
from ferkit.models.checkpoint import load_model_any, require_classifier


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is available, else ``cpu``; other names pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def evaluate_checkpoints(
    checkpoints,
    data,
    split: str = "test",
    *,
    dataset: str | None = None,
    val_fraction: float | None = None,
    tta: int | str | None = None,
    tta_preset: str = "boulis",
    distortion: str | None = None,
    distortion_seed: int = 0,
    strict: bool = False,
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Evaluate one checkpoint, or several as a soft-voting ensemble, on a dataset split.

    Args:
        checkpoints: paths (``best.ckpt``, an exported ``.pt``, an ensemble file) or
            ``"default"``; a single path may be given as a string.
        data: the dataset path. split: ``train``, ``val``, ``test``, ``publictest``...
        dataset, val_fraction: override the layout / validation share (default: the
            checkpoint's run, else auto-detected and 0.1; see ``checkpoint_split``).
        tta: None (off), K (the face, its mirror and K augmented copies; 0 = the
            mirror only) or ``"ten-crop"``. tta_preset: augmentation of the TTA copies.
        distortion, distortion_seed: evaluate on distorted faces (``"random-gray:3"``).
        strict: refuse classes outside the model's labels (else skipped with a warning).
        batch_size: faces per forward pass. device: ``auto``, ``cpu`` or ``cuda``.
        progress: show progress bars.

    Returns:
        The :func:`~ferkit.evaluation.metrics.classification_report` dict plus ``split``,
        ``data``, ``checkpoints``, ``skipped`` (reason -> count) and ``tta``.

    Raises:
        FerkitError: unreadable checkpoint, members with different label sets, bad data.
    """
    from ferkit.models.input_config import InputConfig
    from ferkit.training.datamodule import checkpoint_split

    checkpoints = [checkpoints] if isinstance(checkpoints, (str, bytes)) or hasattr(checkpoints, "__fspath__") \
        else list(checkpoints)
    device = resolve_device(device)
    loaded = [load_model_any(c) for c in checkpoints]
    for model, spec in loaded:
        require_classifier(spec, model)
    labels = loaded[0][1]["labels"]
    for _, spec in loaded[1:]:
        if spec["labels"] != labels:
            raise FerkitError("ensemble members must share one label set")
    single = len(loaded) == 1 and spec_kind(loaded[0][1]) != "ensemble"
    cfg = InputConfig(size=max(s["input_config"].frame for _, s in loaded),
                      channels=max(s["input_config"].channels for _, s in loaded))
    ds = checkpoint_split(checkpoints[0], data, split, labels=labels, input_config=cfg, dataset=dataset,
                          val_fraction=val_fraction, strict=strict, progress=progress)
    if single and (msg := framing_mismatch(ds.index, loaded[0][1]["input_config"])):
        warnings.warn(msg, stacklevel=2)
    transform = None
    if distortion:
        from ferkit.data.distortions import parse_distortion

        transform = parse_distortion(distortion, seed=distortion_seed)
    # tta None: off; 0: the face and its mirror; K: + K copies; "ten-crop": each model's ten crops
    if single:
        model = loaded[0][0]
        logp, y = predict_log_probs(model, ds, batch_size, device, progress=progress, input_transform=transform,
                                    tta=None if tta is None else make_tta(tta, tta_preset))
    else:
        ens = Ensemble.from_loaded(loaded) if len(loaded) > 1 else loaded[0][0]
        logp, y = ensemble_log_probs(ens, ds, batch_size, device, tta_copies=tta or 0, progress=progress,
                                     input_transform=transform, tta_preset=tta_preset, tta_flip_only=tta == 0)
    if msg := ds.report_skipped():
        print(msg, file=sys.stderr)
    rep = classification_report(logp, y, labels)
    rep.update(split=split, data=str(data), checkpoints=[str(c) for c in checkpoints], skipped=dict(ds.skipped),
               tta=_tta_report(tta, tta_preset))
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


def _tta_report(k, preset: str) -> dict | None:
    if k is None:
        return None
    if isinstance(k, str):
        return {"mode": k}
    return {"copies": k, "preset": preset}
