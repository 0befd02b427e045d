"""Plots written next to runs and reports (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_curves(metrics_csv, out_png) -> bool:
    """Loss and accuracy per epoch (train vs val) from Lightning's metrics.csv; False if it has no epochs.

    Args:
        metrics_csv: Lightning CSVLogger file (columns ``epoch``, ``train_loss``, ``val_acc``...).
        out_png: the figure to write (one panel per logged metric: loss, and accuracy if any).
    """
    with open(metrics_csv, newline="") as f:  # closed at once: a leaked handle warns (ResourceWarning)
        rows = list(csv.DictReader(f))
    by_epoch: dict[int, dict] = {}
    for r in rows:
        if r.get("epoch", "") == "":
            continue
        e = int(float(r["epoch"]))
        for k, v in r.items():
            if v not in ("", None) and k not in ("epoch", "step"):
                by_epoch.setdefault(e, {})[k] = float(v)
    if not by_epoch:
        return False
    epochs = sorted(by_epoch)
    # Autoencoder runs log no accuracy: draw the loss panel alone for them.
    logged = {k for e in epochs for k in by_epoch[e]}
    panels = [w for w in ("loss", "acc") if {f"train_{w}", f"val_{w}"} & logged] or ["loss"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, what in zip(axes[0], panels):
        for stage in ("train", "val"):
            key = f"{stage}_{what}"
            pts = [(e + 1, by_epoch[e][key]) for e in epochs if key in by_epoch[e]]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=stage)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if what == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return True


def plot_confusion(confusion, labels, out_png, title: str = "") -> None:
    """Row-normalised confusion matrix with counts.

    Args:
        confusion: (K, K) counts, rows = true class, columns = predicted.
        labels: the K class names. out_png: destination. title: figure title.
    """
    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def plot_per_class(per_class: dict, out_png, title: str = "") -> None:
    """Per-emotion accuracy bar chart (``per_class[name]["accuracy"]`` in [0, 1]; None drawn as 0)."""
    names = list(per_class)
    accs = [per_class[n]["accuracy"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bars = ax.bar(names, accs, color="#4C72B0")
    for b, a in zip(bars, accs):
        ax.text(b.get_x() + b.get_width() / 2, a + 0.01, f"{a:.2f}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(Path(out_png), dpi=100)
    plt.close(fig)


def plot_reliability(curves: dict, out_png, title: str = "") -> None:
    """Reliability diagram: accuracy against confidence per bin, one line per curve.

    Args:
        curves: label -> a :func:`ferkit.evaluation.calibration.reliability`-style dict
            (``ece`` and ``bins`` with ``lo``, ``hi``, ``n``, ``confidence``, ``accuracy``),
            e.g. ``{"before (T=1)": ..., "after (T=1.42)": ...}``. Empty bins are skipped.
        out_png: destination. title: figure title.
    """
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
    width = None
    for i, (name, rel) in enumerate(curves.items()):
        pts = [(b["confidence"], b["accuracy"]) for b in rel["bins"] if b["n"]]
        if pts:
            ax.plot(*zip(*pts), marker="o", markersize=4, label=f"{name}: ECE {rel['ece'] * 100:.1f}%")
        width = (rel["bins"][0]["hi"] - rel["bins"][0]["lo"]) if rel["bins"] else 0.05
        mids = [(b["lo"] + b["hi"]) / 2 for b in rel["bins"]]
        share = len(curves)
        hist.bar([m - width / 2 + (i + 0.5) * width / share for m in mids], [b["n"] for b in rel["bins"]],
                 width=width / share, alpha=0.8, label=name)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    hist.set_xlabel("confidence (top class probability)")
    hist.set_ylabel("faces")
    hist.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(Path(out_png), dpi=100)
    plt.close(fig)


def plot_paper_vs_ours(bars: list[tuple[str, float | None, float | None]], out_png, title: str = "") -> bool:
    """Horizontal bars of accuracy in percent, the paper's beside ours, one pair per measure.

    Args:
        bars: ``(label, paper %, ours %)``; a None side is left out (a row the paper did not
            report, or one not measured yet).
        out_png: the figure to write. title: its title.

    Returns:
        False (nothing written) when no bar has a value.
    """
    bars = [b for b in bars if b[1] is not None or b[2] is not None]
    if not bars:
        return False
    y = np.arange(len(bars))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(bars) + 1.2))
    for dy, idx, name, color in ((-0.2, 1, "paper", "#9aa5b1"), (0.2, 2, "ours", "#2b6cb0")):
        vals = [b[idx] for b in bars]
        if all(v is None for v in vals):
            continue  # no legend entry for a side with no bar
        ax.barh([v + dy for v, x in zip(y, vals) if x is not None], [x for x in vals if x is not None],
                height=0.38, color=color, label=name)
        for yy, x in zip(y, vals):
            if x is not None:
                ax.text(x + 0.5, yy + dy, f"{x:.1f}", va="center", fontsize=7)
    ax.set_yticks(y, [b[0] for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy (%)")
    ax.set_xlim(0, 105)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return True
