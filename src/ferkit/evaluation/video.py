"""Video-level prediction by averaging frame probabilities (RAVDESS).

A frame classifier scores every extracted frame; a video's prediction is the
argmax of the mean of its frames' class probabilities (soft voting over time).
:func:`video_level_report` gives both figures, because frame accuracy on
random frame splits (Ayadi & Lachiri) is not comparable with per-video
accuracy on held-out actors.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import torch

from ferkit.errors import FerkitError
from ferkit.evaluation.metrics import classification_report


def aggregate_videos(logp: torch.Tensor, targets: torch.Tensor, video_ids: Sequence[str]):
    """Mean frame probability per video.

    Returns:
        (video log-probabilities (V, K), video targets (V,), video ids in first-seen order).
        A video's target is its frames' (single) label; mixed labels raise.
    """
    if len(video_ids) != len(targets) or len(logp) != len(targets):
        raise FerkitError(
            f"video_ids ({len(video_ids)}), logp ({len(logp)}) and targets ({len(targets)}) "
            "must have one entry per frame"
        )
    rows = defaultdict(list)
    for i, v in enumerate(video_ids):
        rows[v].append(i)
    probs = logp.float().exp()
    out_p, out_t, names = [], [], []
    for v, idx in rows.items():
        labels = Counter(int(targets[i]) for i in idx)
        if len(labels) > 1:
            raise FerkitError(f"video {v}: frames carry different labels {dict(labels)}")
        out_p.append(probs[idx].mean(0))
        out_t.append(next(iter(labels)))
        names.append(v)
    p = torch.stack(out_p)
    return torch.log(p.clamp_min(1e-12)), torch.tensor(out_t, dtype=torch.long), names


def video_level_report(
    logp: torch.Tensor, targets: torch.Tensor, video_ids: Sequence[str], labels: Sequence[str]
) -> dict:
    """Frame- and video-level classification reports.

    Args:
        logp: frame log-probabilities (N, K), e.g. from ``predict_log_probs``.
        targets: frame targets (N,).
        video_ids: the video of each frame (``ferkit.data.ravdess.video_ids(dataset.items)``).
        labels: class names.

    Returns:
        ``{"frame": report, "video": report, "frame_accuracy", "video_accuracy",
        "n_frames", "n_videos", "videos": {id: predicted label}}`` where each report is
        :func:`ferkit.evaluation.metrics.classification_report`.
    """
    vlogp, vt, names = aggregate_videos(logp, targets, video_ids)
    frame = classification_report(logp, targets, list(labels))
    video = classification_report(vlogp, vt, list(labels))
    pred = vlogp.argmax(1).tolist()
    return {
        "frame": frame,
        "video": video,
        "frame_accuracy": frame["accuracy"],
        "video_accuracy": video["accuracy"],
        "n_frames": len(targets),
        "n_videos": len(names),
        "videos": {v: labels[p] for v, p in zip(names, pred)},
    }


def format_video_report(rep: dict) -> str:
    """One line: frame accuracy and video accuracy (mean frame probability), as proportions."""
    return (
        f"frames: n={rep['n_frames']} accuracy={rep['frame_accuracy']:.4f}   "
        f"videos (mean frame probability): n={rep['n_videos']} accuracy={rep['video_accuracy']:.4f}"
    )
