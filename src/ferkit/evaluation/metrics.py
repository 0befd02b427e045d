"""Predictions and classification metrics (torchmetrics)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)
from tqdm.auto import tqdm

from ferkit.data.transforms import prepare_batch


@torch.inference_mode()
def predict_log_probs(model, dataset, batch_size: int = 256, device="cpu", tta=None, progress=True,
                   input_transform=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` over ``dataset``; returns (log-probabilities (N, K), targets (N,)).

    ``tta`` (optional) is a callable ``(model, x_float01) -> probabilities`` used
    instead of a single forward pass (flip / augmented copies, see evaluation.ensemble).
    ``input_transform`` (optional) maps the [0,1] float batch before preprocessing
    (used for distorted-data evaluation).
    """
    model = model.to(device).eval()
    cfg = model.input_config
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    outs, targets = [], []
    for x, y in tqdm(loader, desc="predicting", disable=not progress, unit="batch", leave=False):
        x = x.to(device).float().div_(255.0)
        if input_transform is not None:
            x = input_transform(x)
        if tta is not None:
            p = tta(model, x)
            outs.append(torch.log(p.clamp_min(1e-12)).cpu())
        else:
            outs.append(F.log_softmax(model(prepare_batch(x, cfg)).float() / cfg.temperature, dim=1).cpu())
        targets.append(y)
    return torch.cat(outs), torch.cat(targets)


def predict_logits(*args, **kwargs):
    """Deprecated name of :func:`predict_log_probs` (it never returned raw logits)."""
    import warnings

    warnings.warn("predict_logits is renamed predict_log_probs", DeprecationWarning, stacklevel=2)
    return predict_log_probs(*args, **kwargs)


def classification_report(logp: torch.Tensor, targets: torch.Tensor, labels: list[str]) -> dict:
    """Accuracy, loss, macro-F1, expected calibration error (``ece``, 15 bins), per-class
    accuracy / misclassification, confusion matrix, from (N, K) log-probabilities."""
    k = len(labels)
    preds = logp.argmax(1)
    conf = multiclass_confusion_matrix(preds, targets, num_classes=k)
    support = conf.sum(1)
    correct = conf.diag()
    per_class = {}
    for i, name in enumerate(labels):
        n = int(support[i])
        acc = float(correct[i] / n) if n else None
        per_class[name] = {
            "n": n,
            "accuracy": acc,
            "misclassification": (1.0 - acc) if acc is not None else None,
            "precision": float(correct[i] / conf[:, i].sum()) if conf[:, i].sum() > 0 else None,
        }
    from ferkit.evaluation.calibration import reliability

    return {
        "n": len(targets),
        "accuracy": float(multiclass_accuracy(preds, targets, num_classes=k, average="micro")),
        # expected calibration error, 15 bins (ferkit.evaluation.calibration; `ferkit calibrate`)
        "ece": reliability(logp.exp(), targets)["ece"],
        "loss": float(F.nll_loss(logp, targets)),
        "macro_f1": float(multiclass_f1_score(preds, targets, num_classes=k, average="macro")),
        "balanced_accuracy": float(np.mean([v["accuracy"] for v in per_class.values() if v["accuracy"] is not None])),
        "labels": list(labels),
        "per_class": per_class,
        "confusion": conf.tolist(),
    }


def format_report(rep: dict, title: str = "") -> str:
    """A :func:`classification_report` as text: the headline figures, then per class
    accuracy and misclassification (proportions in [0, 1]) with counts.
    """
    lines = []
    if title:
        lines.append(title)
    lines.append(
        f"n={rep['n']}  accuracy={rep['accuracy']:.4f}  loss={rep['loss']:.4f}  "
        f"macro-F1={rep['macro_f1']:.4f}  balanced-acc={rep['balanced_accuracy']:.4f}"
        + (f"  ECE={rep['ece']:.4f}" if rep.get("ece") is not None else "")
    )
    lines.append(f"{'class':<10} {'n':>6} {'acc':>7} {'miscl.':>7} {'prec.':>7}")
    for name, v in rep["per_class"].items():
        f = lambda x: f"{x:7.3f}" if x is not None else "      -"
        lines.append(f"{name:<10} {v['n']:>6} {f(v['accuracy'])} {f(v['misclassification'])} {f(v['precision'])}")
    return "\n".join(lines)
