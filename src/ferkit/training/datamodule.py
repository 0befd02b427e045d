"""One way to build a run's data: :class:`FerDataModule`, made from the run's recipe.

``ferkit train``, ``ferkit evaluate`` of a run's checkpoint, ``robustness`` and the
end-of-run report all index and decode through :func:`run_split`, so a checkpoint's "val"
is exactly the faces its training validated on: the same dataset layout, source options
(face crops, angles...), validation fraction, grouping and seed.

Two ways to serve batches:

* :class:`DeviceBatches` (``data_on_device``: ``auto``/``true``): the decoded uint8 faces
  live on the training device (FER2013 train is 66 MB) and each batch is one gather; the
  LightningModule then augments and normalises the whole batch there. No per-sample
  DataLoader, no host-to-device copies during the epoch.
* a plain ``DataLoader`` over :class:`~ferkit.data.dataset.FerDataset` (``false``, and
  always with several processes, where Lightning adds a ``DistributedSampler``).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader

from ferkit.data.dataset import FerDataset, load_indices
from ferkit.errors import FerkitError
from ferkit.labels import FER7
from ferkit.models.checkpoint import ENSEMBLE_FORMAT, SLIM_FORMAT, SPLIT_KEYS
from ferkit.training.recipes import Recipe, saved_recipe

# Keep the resident copy well below the device's free memory: activations, optimiser state
# and other processes sharing the GPU need the rest.
_DEVICE_SHARE = 0.25


def run_split(recipe: Recipe, data, split: str, *, labels=None, size: int | None = None,
              channels: int | None = None, progress: bool = True, strict: bool = False) -> FerDataset:
    """Decode ``split`` of ``data`` exactly as a run of ``recipe`` sees it.

    Args:
        recipe: the run's recipe (dataset layout, source options, val fraction, seed, grouping).
        data: the dataset path.
        split: ``train``, ``val``, ``test``, ``publictest``...
        size, channels: decode size/channels (default: the recipe's model's input config).

    Raises:
        DataError: missing path, empty split, no readable images.
    """
    return run_splits(recipe, data, [split], labels=labels, size=size, channels=channels,
                      progress=progress, strict=strict)[0]


def run_splits(recipe: Recipe, data, splits, *, labels=None, size=None, channels=None, progress=True,
               strict: bool = False) -> list[FerDataset]:
    """Several splits of one run's data, indexing the source once (see :func:`run_split`)."""
    labels = list(labels or recipe.labels or FER7)
    if size is None or channels is None:
        from ferkit.models.registry import model_input_config

        cfg = model_input_config(recipe.model, in_chans=recipe.in_chans, input_size=recipe.input_size)
        size, channels = size or cfg.frame, channels or cfg.channels
    idx = load_indices(data, list(splits), recipe.dataset, val_fraction=recipe.val_fraction, seed=recipe.split_seed,
                       group_val=recipe.group_val, **recipe.source_options)
    for note in idx[0].notes:
        warnings.warn(note, stacklevel=2)
    return [FerDataset(i, size, channels, labels, strict=strict, progress=progress) for i in idx]


def run_recipe_of(checkpoint) -> tuple[Recipe, str] | None:
    """(recipe, data path) of the run a checkpoint belongs to, from its ``config.yaml``."""
    p = Path(checkpoint)
    cfg = (p if p.is_dir() else p.parent) / "config.yaml"
    if not cfg.is_file():
        return None
    try:
        saved = yaml.safe_load(cfg.read_text())
        return Recipe.from_dict(saved_recipe(saved["recipe"])), saved.get("data")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, FerkitError) as e:
        # Not silent: without it the checkpoint is evaluated on the auto-detected layout and
        # the default split, which need not be the faces its run validated on.
        why = str(e).splitlines()[0] if isinstance(e, FerkitError) else type(e).__name__
        warnings.warn(f"{cfg}: unreadable run config ({why}); using the auto-detected layout and default "
                      "split, not necessarily the run's", stacklevel=2)
        return None


_SPLIT_KEYS = SPLIT_KEYS


def _saved_split(path: Path) -> dict | None:
    """The data recipe (layout, validation fraction, split seed, grouping, source options) a
    Lightning checkpoint of ``ferkit train`` saved in its hyper-parameters, a slim file exported
    from one keeps in ``meta["split"]``, or an ensemble's members share; None for anything else
    (another program's checkpoint, an unreadable one, values of the wrong type)."""
    try:
        # our own file; mmap: only the small hyper-parameter dict is read, not the tensors
        ck = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        if isinstance(ck, dict) and ck.get("format") == ENSEMBLE_FORMAT:
            return _members_split(ck, path)
        if isinstance(ck, dict) and ck.get("format") == SLIM_FORMAT:  # exported from a run
            hp = (ck.get("meta") or {}).get("split")
        else:
            hp = saved_recipe(ck.get("hyper_parameters") if isinstance(ck, dict) else None)
        if not isinstance(hp, dict) or any(k not in hp for k in _SPLIT_KEYS):
            return None
        # checked as a recipe would check them (a damaged value is no split to trust)
        Recipe(name="saved", model=str(hp.get("model", "?")), **{k: hp[k] for k in _SPLIT_KEYS})
        return {k: hp[k] for k in _SPLIT_KEYS}
    except Exception:  # noqa: BLE001 - no recipe to read: the documented default split applies
        return None


def _members_split(ck: dict, path: Path) -> dict | None:
    """The validation carve an ensemble file's members share, read from the runs they came
    from (each member records its source checkpoint); None, with a warning when the runs
    carved differently (then ``val`` holds faces some members trained on)."""
    found = []
    for mem in ck.get("members") or []:
        src = mem.get("source")
        if not src or not Path(src).is_file():
            return None  # a member of unknown origin: nothing to check against
        run = run_recipe_of(src)
        opts = {k: getattr(run[0], k) for k in _SPLIT_KEYS} if run else _saved_split(Path(src))
        if opts is None:
            return None
        found.append(opts)
    if not found:
        return None
    if any(o != found[0] for o in found[1:]):
        warnings.warn(f"{path}: its members' runs carved validation differently (dataset, val_fraction, "
                      "split_seed...), so every member trained on some of the faces of any 'val'; fit "
                      "weights and temperature on another split", stacklevel=3)
        return None
    return found[0]


def checkpoint_split(checkpoint, data, split: str, *, labels, input_config, dataset: str | None = None,
                     val_fraction: float | None = None, source_options: dict | None = None,
                     strict: bool = False, progress: bool = True) -> FerDataset:
    """The faces to evaluate ``checkpoint`` on: ``split`` of ``data``, decoded at the model's frame.

    A checkpoint inside a run directory (``config.yaml`` beside it) sees its run's data as
    training saw it: dataset layout, source options (face crops, angles...), validation
    fraction, grouping and seed, so its ``val`` is exactly the faces training validated on.
    A ``ferkit train`` checkpoint moved out of its run folder uses the recipe saved inside
    it the same way, and so does an ensemble file whose members' runs share one carve
    (``split_seed``: runs that differ only in ``seed`` do), so an ensemble is calibrated on
    faces none of its members trained on. ``dataset``, ``val_fraction`` and
    ``source_options`` override when given.
    A slim file exported from a run (``ferkit export --format torch``) keeps its run's carve
    too. Any other file (an ONNX export, ``default``) uses the auto-detected layout, 10%
    validation, split seed 0.
    Used by ``ferkit evaluate``, ``compare``, ``robustness`` and ensembles alike.

    Raises:
        DataError: missing path, empty split, no readable images.
    """
    run = run_recipe_of(checkpoint) if checkpoint is not None and Path(str(checkpoint)).exists() else None
    recipe = run[0] if run is not None else None
    if recipe is not None:
        opts = {k: getattr(recipe, k) for k in _SPLIT_KEYS}
    elif (checkpoint is not None and Path(str(checkpoint)).is_file()
          and (saved := _saved_split(Path(str(checkpoint))))):
        # A best.ckpt copied out of its run folder still holds its run's data recipe: without
        # it, --split val carved another 10% (seed 0), partly faces the model trained on.
        opts = saved
    else:
        opts = {"dataset": None, "val_fraction": 0.1, "split_seed": 0, "group_val": False, "source_options": {}}
    opts["source_options"] = dict(opts["source_options"] or {})
    given = {"dataset": dataset, "val_fraction": val_fraction, "source_options": source_options}
    opts.update({k: v for k, v in given.items() if v is not None})
    (idx,) = load_indices(data, [split], opts["dataset"], val_fraction=opts["val_fraction"], seed=opts["split_seed"],
                          group_val=opts["group_val"], **opts["source_options"])
    for note in idx.notes:
        warnings.warn(note, stacklevel=2)
    return FerDataset(idx, input_config.frame, input_config.channels, list(labels), strict=strict,
                      progress=progress)


class DeviceBatches:
    """Shuffled ``(uint8 images (B, C, H, W), int64 targets (B,))`` batches from tensors that
    already sit on the training device. A sized iterable Lightning accepts as a dataloader.

    Args:
        images: uint8 (N, C, H, W) on the device. targets: int64 (N,) on the same device.
        batch_size: faces per batch. shuffle: a new permutation (drawn on the device) per epoch.
        drop_last: drop the final partial batch (BatchNorm fails on a batch of one).

    Resumable inside an epoch (Lightning's ``state_dict``/``load_state_dict`` protocol for
    loaders): the state is the epoch's permutation and ``consumed``, the batches training
    has taken from it, which :class:`ferkit.training.stopping.RunStop` sets at every batch
    end (Lightning fetches a batch ahead, so the iterator's own count would be one too
    many). A loader given a mid-epoch state serves the rest of that epoch, in the same order.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int, shuffle: bool,
                 drop_last: bool = False):
        self.images, self.targets = images, targets
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.consumed = 0
        self._order: torch.Tensor | None = None
        self._resume: tuple[torch.Tensor | None, int] | None = None

    def __len__(self) -> int:
        n = len(self.targets)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def state_dict(self) -> dict:
        mid = 0 < self.consumed < len(self)
        order = self._order.cpu() if mid and self._order is not None else None
        return {"consumed": self.consumed if mid else 0, "order": order, "n": len(self.targets)}

    def load_state_dict(self, state: dict) -> None:
        consumed = int(state.get("consumed") or 0)
        if 0 < consumed < len(self) and state.get("n") == len(self.targets):
            order = state.get("order")
            self._resume = (order.to(self.images.device) if order is not None else None, consumed)

    def __iter__(self):
        n = len(self.targets)
        if self._resume is not None:
            order, start = self._resume
            self._resume = None
        else:
            order = torch.randperm(n, device=self.images.device) if self.shuffle else None
            start = 0
        self._order, self.consumed = order, start
        for b in range(start, len(self)):
            sl = slice(b * self.batch_size, min(n, (b + 1) * self.batch_size))
            if order is None:
                yield self.images[sl], self.targets[sl]
            else:
                idx = order[sl]
                yield self.images.index_select(0, idx), self.targets.index_select(0, idx)


class FerDataModule(L.LightningDataModule):
    """Train/val data of a run, built from its recipe (see the module docstring).

    Args:
        recipe: the run's recipe.
        data: dataset path.
        labels: class names (default: the recipe's, else FER7).
        devices: training processes; > 1 always uses DataLoaders (DDP sampler).
        progress: show decoding progress bars.

    The splits are decoded on construction (not in ``setup``): a wrong path or an empty
    folder fails before a run directory is made, and the model's class weights can be
    computed from :attr:`train` before the trainer starts.
    """

    def __init__(self, recipe: Recipe, data, *, labels=None, size: int, channels: int, devices: int = 1,
                 progress: bool = True):
        super().__init__()
        self.recipe, self.data, self.devices = recipe, data, devices
        self.labels = list(labels or recipe.labels or FER7)
        self.train, self.val = run_splits(recipe, data, ["train", "val"], labels=self.labels, size=size,
                                          channels=channels, progress=progress)
        self._resident: dict[str, DeviceBatches] = {}
        self.resident_device: str | None = None

    def report_skipped(self) -> list[str]:
        return [m for ds in (self.train, self.val) if (m := ds.report_skipped())]

    def _drop_last(self) -> bool:
        # Only when every process still gets several full batches: tiny sets would train on nothing.
        return len(self.train) >= 4 * self.recipe.batch_size * self.devices

    def _want_resident(self, device: torch.device) -> bool:
        mode = self.recipe.data_on_device
        if self.devices > 1 or mode is False:
            return False
        nbytes = self.train.images.nbytes + self.val.images.nbytes
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            fits = nbytes <= _DEVICE_SHARE * free
            if mode is True and not fits:
                warnings.warn(f"data_on_device: {nbytes / 1e6:.0f} MB of faces would not fit beside training "
                              f"({free / 1e6:.0f} MB free); using a DataLoader", stacklevel=2)
            return fits
        return True  # CPU: the decoded arrays are in memory already; batches are gathers

    def setup(self, stage: str | None = None) -> None:
        if self._resident or self.trainer is None:
            return
        device = self.trainer.strategy.root_device
        if not self._want_resident(device):
            return
        for name, ds, bs, shuffle, drop in (
            ("train", self.train, self.recipe.batch_size, True, self._drop_last()),
            ("val", self.val, max(256, self.recipe.batch_size), False, False),
        ):
            x = torch.from_numpy(ds.images).permute(0, 3, 1, 2).contiguous().to(device)
            y = torch.from_numpy(ds.targets).to(device)
            self._resident[name] = DeviceBatches(x, y, bs, shuffle, drop)
        self.resident_device = str(device)

    def _loader(self, name: str, ds: FerDataset, bs: int, shuffle: bool, drop: bool):
        if name in self._resident:
            return self._resident[name]
        nw = self.recipe.num_workers
        pin = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return DataLoader(ds, batch_size=bs, shuffle=shuffle, drop_last=drop, num_workers=nw,
                          persistent_workers=nw > 0, pin_memory=pin)

    def train_dataloader(self):
        return self._loader("train", self.train, self.recipe.batch_size, True, self._drop_last())

    def val_dataloader(self):
        return self._loader("val", self.val, max(256, self.recipe.batch_size), False, False)
