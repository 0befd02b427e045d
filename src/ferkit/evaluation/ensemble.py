"""Soft-voting ensembles and test-time augmentation (Boulis et al.).

* :func:`make_tta` -- average a model's class probabilities over the original
  batch, its horizontal flip and ``k`` augmented copies (the ``boulis`` preset:
  +-10 deg, +-10% zoom and shifts, seeded so results are repeatable), or over
  ten crops (four corners + centre and their mirrors, :mod:`ferkit.data.crops`;
  the Recognizer uses the same views).
* :class:`Ensemble` -- weighted mean of the members' probabilities. Members may
  differ in architecture, input size and channels: each turns the shared [0, 1]
  batch into its own input with ``prepare_batch`` and its own ``input_config``.
  An ``Ensemble`` is itself a model: ``forward`` takes a [0, 1] batch and
  returns log-probabilities, so ``predict_log_probs``, TTA and the CLI use it as is.
* :meth:`Ensemble.save` / :func:`load_ensemble` -- one file holding every
  member's spec and weights (``ferkit ensemble`` writes it, ``ferkit evaluate
  ENSEMBLE.pt`` reads it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.data.crops import check_mode, crop_views, mean_over_views
from ferkit.data.transforms import PRESETS, BatchAugment, prepare_batch, prepare_frame
from ferkit.errors import FerkitError
from ferkit.models.checkpoint import (
    _init_only,
    build_model,
    load_model_any,
    read_checkpoint,
    register_format,
    require_classifier,
)
from ferkit.models.registry import InputConfig

ENSEMBLE_FORMAT = "ferkit-ensemble"


def _member_probs(model: nn.Module, x01: torch.Tensor) -> torch.Tensor:
    cfg = model.input_config
    return F.softmax(model(prepare_batch(x01, cfg)).float() / cfg.temperature, dim=1)


class TTA:
    """Callable ``(model, x01) -> probabilities``: mean over original, flip and ``k`` copies.

    Args:
        k: augmented copies on top of the original and its mirror image.
        preset: augmentation preset (:data:`ferkit.data.transforms.PRESETS`).
        seed: the copies' random warps are drawn from this seed on every call, so a
            batch always gets the same copies (repeatable scores, identical reloads).
    """

    def __init__(self, k: int = 0, preset: str = "boulis", seed: int = 0):
        if k < 0:
            raise FerkitError(f"--tta must be >= 0 (got {k})")
        if preset not in PRESETS:
            raise FerkitError(
                f"unknown augmentation preset {preset!r}; choose from {', '.join(PRESETS)}"
            )
        self.k, self.seed = int(k), int(seed)
        self.augment = BatchAugment(**PRESETS[preset])

    def views(self, x01: torch.Tensor) -> list[torch.Tensor]:
        """The 2 + k versions of a batch that get averaged."""
        out = [x01, x01.flip(-1)]
        if self.k:
            devices = [x01.device] if x01.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                out += [self.augment(x01) for _ in range(self.k)]
        return out

    @torch.inference_mode()
    def __call__(self, model: nn.Module, x01: torch.Tensor) -> torch.Tensor:
        probs = [_member_probs(model, v) for v in self.views(x01)]
        return torch.stack(probs).mean(0)


class CropTTA:
    """Callable ``(model, x01) -> probabilities``: mean over a model's test-time crops.

    Each model gets its own views from the shared [0, 1] batch: the batch is brought
    to the model's frame (``prepare_frame``), then cut into ``mode``'s views
    (:func:`ferkit.data.crops.crop_views`: "ten-crop" = four corners + centre and
    their mirrors; "mirror" = centre crop + mirror), all in one forward pass.

    Raises:
        FerkitError: unknown mode.
    """

    def __init__(self, mode: str = "ten-crop"):
        try:
            self.mode = check_mode(mode)
        except ValueError as e:
            raise FerkitError(str(e)) from None

    @torch.inference_mode()
    def __call__(self, model: nn.Module, x01: torch.Tensor) -> torch.Tensor:
        cfg = model.input_config
        views = crop_views(prepare_frame(x01, cfg), cfg.size, self.mode).contiguous()
        return mean_over_views(F.softmax(model(views).float() / cfg.temperature, dim=1), len(x01))


def make_tta(k: int | str, preset: str = "boulis", seed: int = 0) -> TTA | CropTTA:
    """TTA callable for ``predict_log_probs(tta=...)``.

    ``k``: a number of augmented copies on top of the original and its flip
    (:class:`TTA`), or a crop mode name, "ten-crop" or "mirror" (:class:`CropTTA`).
    """
    if isinstance(k, str) and not k.lstrip("-").isdigit():
        return CropTTA(k)
    return TTA(int(k), preset, seed)


class Ensemble(nn.Module):
    """Soft voting: the weighted mean of the members' class probabilities.

    Args:
        models: trained models carrying ``input_config`` (and ``model_name`` to be saved).
        labels: the shared label list (every member must predict these, in this order).
        weights: one non-negative weight per member (normalised to sum 1); default equal.
        specs: optional per-member dicts with ``model_kwargs`` (needed to rebuild members
            whose constructor took non-default arguments), as ``load_checkpoint`` returns.
    """

    def __init__(
        self, models: Sequence[nn.Module], labels: Sequence[str], weights=None, specs=None
    ):
        super().__init__()
        if not models:
            raise FerkitError("an ensemble needs at least one model")
        self.members = nn.ModuleList(models)
        self.labels = list(labels)
        w = (
            torch.ones(len(models))
            if weights is None
            else torch.tensor([float(v) for v in weights])
        )
        # nan passed every comparison here and inf made the normalised weights nan: an
        # ensemble whose every prediction was NaN, written without a word
        if len(w) != len(models) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise FerkitError(
                f"ensemble weights: need {len(models)} finite non-negative values, not all 0, "
                f"got {list(weights)}"
            )
        self.register_buffer("weights", w / w.sum())
        self.specs = [dict(s) for s in specs] if specs else [{} for _ in models]
        for m in models:
            if not hasattr(m, "input_config"):
                raise FerkitError(
                    "ensemble members must come from create_model/load_checkpoint (no input_config)"
                )
        # The ensemble's own "input": [0, 1] pixels (identity normalisation) at the largest
        # member size and channel count; each member then prepares its own input from it.
        self.input_config = InputConfig(
            size=max(m.input_config.frame for m in models),
            channels=max(m.input_config.channels for m in models),
            mean=(0.0,),
            std=(1.0,),
        )
        self.model_name = "ensemble"

    def __len__(self) -> int:
        return len(self.members)

    def predict_proba(self, x01: torch.Tensor, tta: TTA | None = None) -> torch.Tensor:
        """Class probabilities (B, K) of a [0, 1] float batch (any size/channels)."""
        total = None
        for w, m in zip(self.weights, self.members):
            p = tta(m, x01) if tta is not None else _member_probs(m, x01)
            total = p * w if total is None else total + p * w
        return total

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """Log-probabilities; ``x01`` is a [0, 1] batch (this model's identity preprocessing)."""
        return torch.log(self.predict_proba(x01).clamp_min(1e-12))

    @torch.inference_mode()
    def predict_log_probs(
        self,
        dataset,
        batch_size: int = 256,
        device="cpu",
        tta_copies: int | None = 0,
        progress: bool = True,
        input_transform=None,
        tta_preset: str = "boulis",
        tta_flip_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :func:`ferkit.evaluation.metrics.predict_log_probs`: (log-probs (N, K), targets (N,)).

        ``tta_copies`` > 0 applies flip + that many ``tta_preset`` copies to every member,
        "ten-crop" each member's ten crops (:class:`CropTTA`); 0 or ``None`` means no TTA,
        unless ``tta_flip_only`` (original + mirror only).
        """
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        self.to(device).eval()
        tta = make_tta(tta_copies or 0, tta_preset) if (tta_copies or tta_flip_only) else None
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        outs, targets = [], []
        for x, y in tqdm(
            loader, desc=f"ensemble of {len(self)}", disable=not progress, unit="batch", leave=False
        ):
            x = x.to(device).float().div_(255.0)
            if input_transform is not None:
                x = input_transform(x)
            outs.append(torch.log(self.predict_proba(x, tta).clamp_min(1e-12)).cpu())
            targets.append(y)
        return torch.cat(outs), torch.cat(targets)

    def save(self, path) -> None:
        """Write every member (spec + float32 weights) and the voting weights to one file."""
        members = []
        for m, spec in zip(self.members, self.specs):
            if not hasattr(m, "model_name"):
                raise FerkitError(
                    "ensemble members need .model_name (build them with create_model)"
                )
            members.append(
                {
                    "model": m.model_name,
                    "num_classes": len(self.labels),
                    "model_kwargs": {
                        k: v
                        for k, v in (spec.get("model_kwargs") or {}).items()
                        if not _init_only(k)
                    },
                    "input_config": m.input_config.to_dict(),
                    "source": spec.get("path"),
                    "state_dict": {k: v.detach().cpu() for k, v in m.state_dict().items()},
                }
            )
        out = {
            "format": ENSEMBLE_FORMAT,
            "labels": self.labels,
            "weights": self.weights.tolist(),
            "members": members,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(out, tmp)
        os.replace(tmp, path)  # atomic: never a half-written artefact

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str], weights=None) -> Ensemble:
        """Load trained checkpoints (or other ensemble files, flattened) into one ensemble."""
        return cls.from_loaded([load_model_any(p) for p in paths], weights)

    @classmethod
    def from_loaded(cls, loaded: Sequence[tuple[nn.Module, dict]], weights=None) -> Ensemble:
        """Combine ``(model, spec)`` pairs from ``load_checkpoint``; nested ensembles are flattened
        (their internal voting weights scaled by the weight given to them)."""
        models, specs, ws, labels = [], [], [], None
        given = list(weights) if weights is not None else [1.0] * len(loaded)
        if len(given) != len(loaded):
            raise FerkitError(f"--weights: {len(given)} value(s) for {len(loaded)} checkpoint(s)")
        for (m, spec), w in zip(loaded, given):
            if isinstance(m, Ensemble):
                parts = list(zip(m.members, m.specs, (m.weights * float(w)).tolist()))
            else:
                require_classifier(spec, m)
                parts = [(m, spec, float(w))]
            if labels is None:
                labels = list(spec["labels"])
            elif list(spec["labels"]) != labels:
                raise FerkitError(
                    f"{spec.get('path', '?')}: labels {list(spec['labels'])} differ from {labels}; "
                    "ensemble members must share one label set"
                )
            for mm, sp, ww in parts:
                models.append(mm)
                specs.append(sp)
                ws.append(ww)
        return cls(models, labels, ws, specs)


def is_ensemble_file(path) -> bool:
    """True when ``path`` is an ensemble artefact (cheap check on the file name first)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        ck = torch.load(p, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - not ours to judge here; load_checkpoint reports it
        return False
    return isinstance(ck, dict) and ck.get("format") == ENSEMBLE_FORMAT


def load_ensemble(path, map_location="cpu") -> Ensemble:
    """Rebuild a saved :class:`Ensemble` (members in eval mode).

    Raises:
        FerkitError: unreadable file, not an ensemble file, or a member whose weights do not fit.
    """
    return _ensemble_from_checkpoint(read_checkpoint(path), path, map_location)[0]


def _ensemble_from_checkpoint(ck, path, map_location="cpu") -> tuple[Ensemble, dict]:
    if not (isinstance(ck, dict) and ck.get("format") == ENSEMBLE_FORMAT):
        raise FerkitError(f"{path}: not a ferkit ensemble file (write one with 'ferkit ensemble')")
    models, specs = [], []
    for i, mem in enumerate(ck["members"]):
        models.append(build_model(mem, mem["state_dict"], f"{path}: member {i} ({mem['model']})"))
        specs.append(
            {
                "model": mem["model"],
                "model_kwargs": mem.get("model_kwargs", {}),
                "path": mem.get("source"),
            }
        )
    ens = Ensemble(models, ck["labels"], ck["weights"], specs).to(map_location).eval()
    return ens, ensemble_spec(ens, path)


# load_model_any (models/) reads ensemble files through this reader, without importing us.
register_format(ENSEMBLE_FORMAT, _ensemble_from_checkpoint)


def ensemble_spec(ens: Ensemble, path) -> dict:
    """A ``load_checkpoint``-style spec for an ensemble (what ``ferkit evaluate`` needs)."""
    return {
        "model": "ensemble",
        "labels": list(ens.labels),
        "input_config": ens.input_config,
        "model_kwargs": {},
        "num_classes": len(ens.labels),
        "path": os.fspath(path),
        "members": [s.get("model") or m.model_name for s, m in zip(ens.specs, ens.members)],
    }
