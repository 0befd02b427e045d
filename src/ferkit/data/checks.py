"""Degenerate training data: refuse what cannot be learned, warn about what cannot be measured.

A folder with a single class trains to "val accuracy 1.0000" (every face is that class)
and a class with one face never reaches the validation split; both used to pass in
silence. :func:`check_classes` looks at the decoded train/val targets before training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ferkit.errors import DataError


def _names(labels: Sequence[str], ids) -> str:
    return ", ".join(labels[i] for i in ids)


def check_classes(train_targets, val_targets, labels: Sequence[str], *, where: str = "the data") -> list[str]:
    """Check a classifier's train/val split; returns warning lines (empty when all is well).

    Args:
        train_targets, val_targets: class ids (N,) of the decoded splits.
        labels: the model's class names (index = class id).
        where: the dataset path, for the messages.

    Raises:
        DataError: fewer than 2 classes among the training faces (nothing to learn:
            every prediction of the one class is "right"), or an empty split.
    """
    k = len(labels)
    tr = np.bincount(np.asarray(train_targets, dtype=np.int64), minlength=k)
    va = np.bincount(np.asarray(val_targets, dtype=np.int64), minlength=k)
    if tr.sum() == 0 or va.sum() == 0:
        raise DataError(f"{where}: the {'training' if tr.sum() == 0 else 'validation'} split is empty")
    present = np.flatnonzero(tr)
    if len(present) < 2:
        raise DataError(
            f"{where}: all {int(tr.sum())} training faces are of one class ({labels[present[0]]}); a classifier "
            "needs at least 2 (one sub-folder per expression, e.g. happy/ sad/ neutral/)"
        )
    out = []
    missing = np.flatnonzero(tr == 0)
    if len(missing):
        out.append(f"{where}: no training faces of {_names(labels, missing)}: the model will never predict them")
    unvalidated = np.flatnonzero((tr > 0) & (va == 0))
    if len(unvalidated):
        counts = ", ".join(f"{labels[i]} {int(tr[i])}" for i in unvalidated)
        out.append(f"{where}: too few faces to validate {_names(labels, unvalidated)} (training faces: "
                   f"{counts}); validation accuracy leaves them out")
    val_present = np.flatnonzero(va)
    if len(val_present) == 1:
        out.append(f"{where}: the validation split holds one class only ({labels[val_present[0]]}); "
                   "its accuracy says nothing about the others")
    return out
