"""Calibrated probabilities: expected calibration error, reliability bins, temperature scaling.

* :func:`reliability` -- the 15-bin reliability table and the expected calibration error
  (ECE; Naeini et al. 2015, as used by Guo et al. 2017): faces are binned by their top
  probability; ECE is the face-weighted mean gap between each bin's accuracy and its mean
  confidence.
* :func:`fit_temperature` -- the temperature T > 0 that minimises the negative
  log-likelihood of ``softmax(logits / T)`` averaged over a model's test-time views, found
  by golden-section search on log T (the NLL of one scalar is unimodal in practice; no
  gradient, no learning rate to tune).
* :func:`calibrate` -- fit T for a model on its validation carve and report ECE before and
  after, on that split and optionally on a reporting split (PublicTest); ``ferkit calibrate``.

Temperature scaling never changes which class wins, only how sure the model says it is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BINS = 15


def reliability(probs: torch.Tensor, targets: torch.Tensor, bins: int = BINS) -> dict:
    """``{"ece": float, "bins": [{"lo", "hi", "n", "confidence", "accuracy"}, ...]}``.

    Args:
        probs: (N, K) class probabilities (rows sum to 1). targets: (N,) class indices.
        bins: equal-width confidence bins over (0, 1].
    """
    probs, targets = probs.float().cpu(), targets.long().cpu()
    conf, pred = probs.max(1)
    right = (pred == targets).float()
    edges = torch.linspace(0, 1, bins + 1)
    out, ece, n = [], 0.0, max(1, len(targets))
    for i in range(bins):
        lo, hi = float(edges[i]), float(edges[i + 1])
        inside = (conf > lo) & (conf <= hi) if i else (conf >= lo) & (conf <= hi)
        k = int(inside.sum())
        c = float(conf[inside].mean()) if k else None
        a = float(right[inside].mean()) if k else None
        if k:
            ece += k / n * abs(a - c)
        out.append({"lo": round(lo, 4), "hi": round(hi, 4), "n": k, "confidence": c, "accuracy": a})
    return {"ece": ece, "bins": out}


def _nll(view_logits: torch.Tensor, targets: torch.Tensor, t: float) -> float:
    """NLL of the mean over views of softmax(logits / t); ``view_logits`` is (V, N, K)."""
    p = F.softmax(view_logits / t, dim=-1).mean(0)
    return float(F.nll_loss(torch.log(p.clamp_min(1e-12)), targets))


def fit_temperature(view_logits: torch.Tensor, targets: torch.Tensor, lo: float = 0.05, hi: float = 20.0,
                    iters: int = 60) -> float:
    """The temperature minimising the NLL of ``mean_v softmax(logits_v / T)``.

    Args:
        view_logits: (V, N, K) logits of V test-time views of N faces (V = 1 without TTA).
        targets: (N,) class indices.
        lo, hi: the search interval for T.

    Raises:
        ValueError: no faces, or logits and targets of different lengths.
    """
    if view_logits.dim() == 2:
        view_logits = view_logits.unsqueeze(0)
    view_logits, targets = view_logits.float().cpu(), targets.long().cpu()
    if view_logits.shape[1] == 0 or view_logits.shape[1] != len(targets):
        raise ValueError(f"need logits for every face: {tuple(view_logits.shape)} vs {len(targets)} targets")
    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = _nll(view_logits, targets, math.exp(c)), _nll(view_logits, targets, math.exp(d))
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = _nll(view_logits, targets, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = _nll(view_logits, targets, math.exp(d))
    return round(math.exp((a + b) / 2), 4)


@torch.inference_mode()
def view_logits(model, dataset, tta: str | None, batch_size: int = 256, device: str = "cpu",
                progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, N, K) raw logits of the model's test-time views (``tta``: none, mirror, ten-crop)
    over a dataset, and its (N,) targets. No temperature is applied."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from ferkit.data.crops import crop_views
    from ferkit.data.transforms import prepare_frame

    model = model.to(device).eval()
    cfg = model.input_config
    outs, ys = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    for x, y in tqdm(loader, desc="logits", disable=not progress, unit="batch", leave=False):
        x = prepare_frame(x.to(device).float().div_(255.0), cfg)
        views = crop_views(x, cfg.size, tta or "none").contiguous()
        logits = model(views).float().cpu()
        outs.append(logits.reshape(-1, len(y), logits.shape[-1]))
        ys.append(y)
    return torch.cat(outs, dim=1), torch.cat(ys)


def summarize(view_logits_: torch.Tensor, targets: torch.Tensor, t: float) -> dict:
    """Accuracy, NLL and reliability of the TTA-averaged probabilities at temperature ``t``."""
    p = F.softmax(view_logits_ / t, dim=-1).mean(0)
    rel = reliability(p, targets)
    return {"temperature": t, "accuracy": float((p.argmax(1) == targets).float().mean()),
            "nll": float(F.nll_loss(torch.log(p.clamp_min(1e-12)), targets)), "ece": rel["ece"],
            "bins": rel["bins"]}


def calibrate(model_ref, data, *, split: str = "val", report_split: str | None = None, tta: str | None = None,
              batch_size: int = 256, device: str = "cpu", progress: bool = True) -> dict:
    """Fit a temperature for a model on ``split`` of ``data`` and measure calibration.

    Args:
        model_ref: a run's ``best.ckpt``, a slim ``.pt``, a run folder or ``"default"``.
        data: the dataset path; ``split`` is read as :func:`~ferkit.training.datamodule.checkpoint_split`
            reads it (a run's checkpoint sees its own validation carve).
        report_split: also report ECE before and after on this split (e.g. ``test``); the
            temperature is never fitted on it.
        tta: the test-time views to fit under (default: what the model file records).

    Returns:
        ``{"temperature", "tta", "fit": {"split", "before", "after"}, "report": {...} | None,
        "model", "spec"}`` where before/after hold accuracy, NLL, ECE and the 15 bins; the
        loaded ``model`` and its ``spec`` come back for saving.

    Raises:
        FerkitError: an unreadable model, an autoencoder, bad data.
    """
    from ferkit.data.crops import check_mode
    from ferkit.models.checkpoint import load_model_any, require_classifier
    from ferkit.models.pretrained import resolve_pretrained
    from ferkit.training.datamodule import checkpoint_split

    path = resolve_pretrained(model_ref)
    model, spec = load_model_any(path)
    require_classifier(spec, model)
    cfg = model.input_config
    mode = check_mode(tta if tta is not None else (cfg.tta or "none"))
    out = {"model_path": str(path), "tta": mode}
    logits = {}
    for name in [split] + ([report_split] if report_split else []):
        ds = checkpoint_split(path, data, name, labels=spec["labels"], input_config=cfg, progress=progress)
        logits[name] = view_logits(model, ds, mode, batch_size, device, progress)
    t = fit_temperature(*logits[split])
    out["temperature"] = t
    before = cfg.temperature  # the file's own (1 unless calibrated before)
    out["fit"] = {"split": split, "n": len(logits[split][1]), "before": summarize(*logits[split], before),
                  "after": summarize(*logits[split], t)}
    out["report"] = None
    if report_split:
        vl, y = logits[report_split]
        out["report"] = {"split": report_split, "n": len(y), "before": summarize(vl, y, before),
                         "after": summarize(vl, y, t)}
    out["model"], out["spec"] = model, spec
    return out
