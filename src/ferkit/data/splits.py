"""Deterministic validation splits carved from a training index."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def stratified_split(labels, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Return (train_positions, val_positions): ``fraction`` of each class goes to val, seeded.

    Positions are ints into ``labels`` (what :meth:`ferkit.data.sources.Index.subset` takes).

    The same labels, fraction and seed always give the same split, independent
    of the machine, so runs and evaluations agree on what "val" means.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    by_class = defaultdict(list)
    for i, lab in enumerate(labels):
        by_class[lab].append(i)
    train, val = [], []
    for lab in sorted(by_class):
        pos = np.array(by_class[lab])
        rng.shuffle(pos)
        n_val = round(len(pos) * fraction)
        if len(pos) >= 2:
            n_val = min(max(n_val, 1), len(pos) - 1)  # every class on both sides when possible
        val.extend(pos[:n_val].tolist())
        train.extend(pos[n_val:].tolist())
    return sorted(train), sorted(val)


def group_split(groups, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split so that no group (subject, actor) appears on both sides."""
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    n_val = max(1, round(len(uniq) * fraction)) if len(uniq) > 1 else 0
    val_groups = set(uniq[:n_val])
    train = [i for i, g in enumerate(groups) if g not in val_groups]
    val = [i for i, g in enumerate(groups) if g in val_groups]
    return train, val
