"""Robustness sweeps (accuracy under every distortion x severity) and DAE previews.

:func:`robustness_sweep` decodes a split once and evaluates one model on the
clean images and on each seeded distorted copy (:mod:`ferkit.data.distortions`),
so every model sees the identical distorted test set. Reported figures:

* ``clean``: accuracy on the undistorted split;
* ``results[name][severity]``: accuracy on each distorted copy;
* ``mean_corruption_accuracy``: the mean over all distortions and severities
  (the analogue of ImageNet-C's mCE, as an accuracy);
* ``drop``: clean minus mean corruption accuracy (points of accuracy lost).

:func:`denoise_preview` shows what a trained ``li-dae`` does: a grid of
distorted / denoised / clean faces and PSNR/SSIM (torchmetrics) on the split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset
from tqdm.auto import tqdm

from ferkit.data.distortions import DISTORTIONS, SEVERITIES, parse_distortion
from ferkit.errors import FerkitError
from ferkit.evaluation.metrics import predict_log_probs
from ferkit.models.checkpoint import load_model_any, require_classifier
from ferkit.models.registry import model_task


def _limit(ds, limit: int | None):
    """Evenly spaced items (class folders are indexed in order, so classes stay mixed)."""
    if not limit or limit >= len(ds):
        return ds
    positions = np.linspace(0, len(ds) - 1, int(limit)).round().astype(int)
    return Subset(ds, sorted(set(positions.tolist())))


def load_split(checkpoint, data, split: str, input_config, labels, dataset=None, limit=None, progress=True):
    """Index + decode one split once, as the checkpoint's run saw its data (its val fraction,
    seed, layout and source options: :func:`ferkit.training.datamodule.checkpoint_split`);
    returns (dataset, skipped-items message or None)."""
    from ferkit.training.datamodule import checkpoint_split

    ds = checkpoint_split(checkpoint, data, split, labels=labels, input_config=input_config, dataset=dataset,
                          progress=progress)
    return _limit(ds, limit), ds.report_skipped()


def _accuracy(model, ds, batch_size, device, transform=None) -> float:
    logp, y = predict_log_probs(model, ds, batch_size, device, progress=False, input_transform=transform)
    return float((logp.argmax(1) == y).float().mean())


def robustness_sweep(checkpoint, data, *, split="test", distortions=None, severities=SEVERITIES, limit=None,
                     dataset=None, seed=0, batch_size=256, device="cpu", progress=True) -> dict:
    """Accuracy of one checkpoint on clean data and on every distortion x severity.

    Args:
        checkpoint: a ``best.ckpt`` or slim model file.
        data: dataset path; ``split`` is one of its splits (``test`` = PublicTest for FER2013).
        distortions: names from :data:`DISTORTIONS` (default: all).
        severities: severities to run (default 1..5).
        limit: evaluate only this many evenly spaced items (quick CPU runs).
        seed: the distorted copies' seed; keep it fixed to compare models.

    Returns:
        A JSON-ready dict: clean, results {name: {severity: acc}}, per_distortion means,
        mean_corruption_accuracy, drop, n, and the settings used.
    """
    names = list(distortions or DISTORTIONS)
    for n in names:
        if n not in DISTORTIONS:
            raise FerkitError(f"unknown distortion {n!r}; choose from {', '.join(DISTORTIONS)}")
    sevs = [int(s) for s in severities]
    if not sevs or any(s not in SEVERITIES for s in sevs):
        raise FerkitError(f"severities must be among 1..5, got {severities}")
    model, spec = load_model_any(checkpoint)  # a checkpoint, slim file or soft-voting ensemble
    require_classifier(spec, model)
    ds, skipped = load_split(checkpoint, data, split, spec["input_config"], spec["labels"], dataset, limit=limit,
                             progress=progress)
    pairs = [(n, s) for n in names for s in sevs]
    bar = tqdm(total=1 + len(pairs), desc="robustness", unit="run", disable=not progress)
    clean = _accuracy(model, ds, batch_size, device)
    bar.update()
    results: dict[str, dict[int, float]] = {n: {} for n in names}
    for n, s in pairs:
        bar.set_postfix_str(f"{n}:{s}")
        results[n][s] = _accuracy(model, ds, batch_size, device, parse_distortion(f"{n}:{s}", seed=seed))
        bar.update()
    bar.close()
    per = {n: float(np.mean(list(v.values()))) for n, v in results.items()}
    mca = float(np.mean([a for v in results.values() for a in v.values()]))
    return {
        "checkpoint": str(checkpoint), "model": spec["model"], "data": str(data), "split": split,
        "n": len(ds), "limit": limit, "seed": seed, "severities": sevs, "skipped": skipped,
        "clean": clean, "results": results, "per_distortion": per,
        "mean_corruption_accuracy": mca, "drop": clean - mca,
    }


def markdown_table(rep: dict) -> str:
    """Rows = distortions, columns = severities, accuracies in %, plus mean and drop."""
    sevs = rep["severities"]
    head = "| distortion | " + " | ".join(f"sev {s}" for s in sevs) + " | mean | drop |"
    lines = [
        f"Robustness of `{rep['model']}` on {rep['data']} [{rep['split']}], n={rep['n']}, seed {rep['seed']}",
        "",
        head,
        "|" + "---|" * (len(sevs) + 3),
        "| clean | " + " | ".join(f"{100 * rep['clean']:.2f}" for _ in sevs) + f" | {100 * rep['clean']:.2f} | - |",
    ]
    for n, v in rep["results"].items():
        m = rep["per_distortion"][n]
        row = " | ".join(f"{100 * v[s]:.2f}" for s in sevs)
        lines.append(f"| {n} | {row} | {100 * m:.2f} | {100 * (rep['clean'] - m):.2f} |")
    lines.append("| **mean corruption** | " + " | ".join(
        f"{100 * np.mean([v[s] for v in rep['results'].values()]):.2f}" for s in sevs
    ) + f" | **{100 * rep['mean_corruption_accuracy']:.2f}** | **{100 * rep['drop']:.2f}** |")
    return "\n".join(lines) + "\n"


def plot_robustness(rep: dict, path) -> None:
    """Accuracy vs severity, one line per distortion, clean accuracy dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sevs = rep["severities"]
    for n, v in rep["results"].items():
        ax.plot(sevs, [100 * v[s] for s in sevs], marker="o", label=n)
    ax.axhline(100 * rep["clean"], color="k", linestyle="--", label=f"clean ({100 * rep['clean']:.1f}%)")
    ax.set_xticks(sevs)
    ax.set_xlabel("severity")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{rep['model']} [{rep['split']}], n={rep['n']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_robustness(rep: dict, out) -> dict[str, Path]:
    """robustness.json, robustness.md and robustness.png under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "robustness.json", "markdown": out / "robustness.md", "plot": out / "robustness.png"}
    files["json"].write_text(json.dumps(rep, indent=2))
    files["markdown"].write_text(markdown_table(rep))
    plot_robustness(rep, files["plot"])
    return files


@torch.inference_mode()
def denoise_preview(checkpoint, data, *, split="test", distortion="random-gray:3", n=8, out="denoise.png",
                    limit=None, dataset=None, seed=0, batch_size=256, device="cpu", progress=True) -> dict:
    """Grid of distorted / denoised / clean faces and PSNR/SSIM before and after the DAE.

    Args:
        checkpoint: a trained ``li-dae`` (or any autoencoder: a model tagged ``autoencoder``).
        distortion: ``NAME:SEVERITY`` applied to the clean split (seeded by ``seed``).
        n: faces in the grid (columns). limit: evaluate only this many items.

    Returns:
        {"psnr": {"distorted", "denoised"}, "ssim": {...}, "n", "grid"} (PSNR in dB, data range 1).
    """
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    model, spec = load_model_any(checkpoint)
    model = model.to(device)
    if spec["model"] == "ensemble" or model_task(spec["model"]) != "reconstruct":
        raise FerkitError(f"{checkpoint}: {spec['model']} is a classifier, not a denoising autoencoder")
    distort = parse_distortion(distortion, seed=seed)
    ds, _ = load_split(checkpoint, data, split, spec["input_config"], spec["labels"], dataset, limit=limit,
                       progress=progress)
    metrics = {k: (PeakSignalNoiseRatio(data_range=1.0), StructuralSimilarityIndexMeasure(data_range=1.0))
               for k in ("distorted", "denoised")}
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    shown = None
    for x, _ in tqdm(loader, desc="denoising", unit="batch", disable=not progress):
        clean = x.to(device).float() / 255.0
        noisy = distort(clean)
        den = model(noisy).float().clamp(0, 1)
        for k, img in (("distorted", noisy), ("denoised", den)):
            for m in metrics[k]:
                m.update(img.cpu(), clean.cpu())
        if shown is None:
            shown = (noisy[:n].cpu(), den[:n].cpu(), clean[:n].cpu())
    rep = {
        "checkpoint": str(checkpoint), "split": split, "distortion": distortion, "seed": seed, "n": len(ds),
        "psnr": {k: float(v[0].compute()) for k, v in metrics.items()},
        "ssim": {k: float(v[1].compute()) for k, v in metrics.items()},
        "grid": str(out),
    }
    _save_grid(shown, out, rep)
    return rep


def _save_grid(rows, path, rep) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = (f"distorted ({rep['psnr']['distorted']:.1f} dB)", f"denoised ({rep['psnr']['denoised']:.1f} dB)",
             "clean")
    k = rows[0].shape[0]
    fig, axes = plt.subplots(3, k, figsize=(1.3 * k, 4.3), squeeze=False)
    for r, (batch, name) in enumerate(zip(rows, names)):
        for c in range(k):
            ax = axes[r][c]
            img = batch[c].permute(1, 2, 0).numpy()
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(name, fontsize=8)
    fig.suptitle(f"{rep['distortion']} [{rep['split']}]", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
