"""Datasets: an index, decoded once through the cache, as uint8 tensors.

:func:`load_index` resolves ``(path, split, dataset)`` to an :class:`Index`
(auto-detecting the layout and carving ``val`` from ``train`` when the data has
no validation split of its own). :class:`FerDataset` decodes it and serves
``(uint8 tensor (C, H, W), target)`` pairs; float conversion, augmentation and
normalisation run later on whole batches (:mod:`ferkit.data.transforms`).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ferkit.data.cache import decode_index
from ferkit.data.folders import find_split_dir
from ferkit.data.sources import Index, detect_source, get_source
from ferkit.data.splits import group_split, stratified_split
from ferkit.errors import DataError, tally
from ferkit.labels import FER7, filter_to_labels


def load_index(
    root,
    split: str = "train",
    dataset: str | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    group_val: bool = False,
    **source_options,
) -> Index:
    """Index one split of a dataset.

    Args:
        root: dataset path (folder or file).
        split: ``train``, ``val``, ``test``, ``all`` or a source-specific split
            (``publictest``...). ``train``/``val`` are carved from the source's
            training data (stratified, seeded) unless it has its own ``val``.
        dataset: source name (``ferkit datasets``); auto-detected when None.
        val_fraction: share of train used for val when carving (0 = no carving).
        group_val: carve val by group (subject/actor) instead of stratified.

    Raises:
        DataError: the path does not exist, or ``val`` is asked of data without one.
    """
    return load_indices(root, [split], dataset, val_fraction=val_fraction, seed=seed,
                        group_val=group_val, **source_options)[0]


def load_indices(
    root,
    splits,
    dataset: str | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    group_val: bool = False,
    **source_options,
) -> list[Index]:
    """Index several splits at once (same arguments as :func:`load_index`).

    ``train`` and ``val`` carved from one training index read the source once, so a
    run's two splits come from the same listing of the files.
    """
    root = str(root)
    if not Path(root).exists():
        raise DataError(f"{root}: no such file or directory")
    spec = get_source(dataset) if dataset else detect_source(root)
    source_options = spec.check_options(source_options)
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1) (0 = no carved validation split), got {val_fraction}")
    native_val = "val" in spec.splits or (
        Path(root).is_dir() and find_split_dir(Path(root), "val") is not None
    )
    carved = None
    out = []
    for split in (s.lower() for s in splits):
        if split in ("train", "val") and not native_val and val_fraction > 0:
            if carved is None:
                carved = _carve(root, spec.index(root, "train", **source_options), val_fraction, seed, group_val)
            out.append(carved[split])
        elif split == "val" and not native_val:
            raise DataError(f"{root}: no validation split (and val_fraction is 0)")
        else:
            out.append(spec.index(root, split, **source_options))
    return out


def _carve(root, base: Index, val_fraction: float, seed: int, group_val: bool) -> dict[str, Index]:
    """Split a training index into ``train`` and ``val``; refuses a split that comes out empty."""
    if group_val and base.groups is not None:
        tr, va = group_split(base.groups, val_fraction, seed)
        unit, why = f"items of {len(set(base.groups))} subject(s)/group(s)", "the split is by subject/group"
    else:
        tr, va = stratified_split(base.labels, val_fraction, seed)
        unit, why = "faces", "a class gives validation faces only when it has 2 or more"
    if not tr or not va:
        side = "training" if not tr else "validation"
        raise DataError(
            f"{root}: carving validation (val_fraction {val_fraction}) from {len(base)} training "
            f"{unit} leaves the {side} split empty ({why}); add data or change val_fraction"
        )
    return {"train": base.subset(tr, split="train"), "val": base.subset(va, split="val")}


class FerDataset(Dataset):
    """A decoded split: ``images`` (N, H, W, C) uint8 and ``targets`` (N,) int64.

    Labels outside ``labels`` (e.g. contempt for a 7-class model) are skipped
    with one warning naming them, or raise with ``strict=True``.
    """

    def __init__(
        self,
        index: Index,
        size: int,
        channels: int,
        labels: Sequence[str] = FER7,
        transform=None,
        strict: bool = False,
        use_cache: bool = True,
        progress: bool = True,
    ):
        self.labels = list(labels)
        keep = filter_to_labels(index.labels, self.labels, strict=strict, what=f"{index.root} [{index.split}]")
        dropped = len(keep) - sum(keep)
        if dropped:
            index = index.subset([i for i, k in enumerate(keep) if k])
        if len(index) == 0:
            raise DataError(f"{index.root} [{index.split}]: no items with labels in {self.labels}")
        # Decode at the source's native size/colour when smaller: FER2013 stays 48x48 gray
        # in memory even for a 224x224 RGB model; batches are upscaled on the fly.
        dsize = min(size, index.native_size) if index.native_size else size
        dch = min(channels, index.native_channels) if index.native_channels else channels
        self.images, kept, skipped = decode_index(index, dsize, dch, use_cache=use_cache, progress=progress)
        lab2i = {n: i for i, n in enumerate(self.labels)}
        self.targets = np.array([lab2i[index.labels[i]] for i in kept], dtype=np.int64)
        self.groups = [index.groups[i] for i in kept] if index.groups is not None else None
        self.items = [index.items[i] for i in kept]
        self.index = index
        self.transform = transform
        self.skipped = Counter(index.skipped)
        self.skipped.update(skipped)
        if dropped:
            self.skipped["class outside the label set"] += dropped
        if len(self.targets) == 0:
            raise DataError(f"{index.root} [{index.split}]: no readable images")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[i])

    def class_counts(self) -> np.ndarray:
        """Faces per class, (K,) int64 in ``labels`` order (after skipped items are dropped)."""
        return np.bincount(self.targets, minlength=len(self.labels))

    def report_skipped(self) -> str | None:
        """One line counting the items skipped while indexing and decoding, or None if none were."""
        if not self.skipped:
            return None
        return (f"{self.index.root} [{self.index.split}]: skipped {sum(self.skipped.values())} item(s): "
                f"{tally(self.skipped)}")


def class_weights(targets, num_classes: int) -> torch.Tensor:
    """Inverse class frequency, scaled so the weights average 1 over samples (Boulis).

    w_c = N / (K * n_c) with K the number of classes present: a class with the average
    count gets 1; a class absent from the data gets 0.
    """
    counts = np.bincount(np.asarray(targets), minlength=num_classes).astype(np.float64)
    present = max(int((counts > 0).sum()), 1)
    w = np.where(counts > 0, counts.sum() / (present * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def build_dataset(root, split, input_config, labels=FER7, dataset=None, *, val_fraction=0.1, seed=0,
                  strict=False, use_cache=True, progress=True, **source_options) -> FerDataset:
    """Index + decode one split for a model's input config (convenience for CLI and tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        index = load_index(root, split, dataset, val_fraction=val_fraction, seed=seed, **source_options)
    for note in index.notes:
        warnings.warn(note, stacklevel=2)
    return FerDataset(index, input_config.frame, input_config.channels, labels, strict=strict,
                      use_cache=use_cache, progress=progress)
