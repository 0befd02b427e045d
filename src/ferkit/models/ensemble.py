"""Soft-voting ensembles: one model made of several trained ones (Boulis et al.).

:class:`Ensemble` is the weighted mean of its members' class probabilities. Members may
differ in architecture, input size and channels: each turns the shared [0, 1] batch into
its own input with ``prepare_batch`` and its own ``input_config`` (and its own calibration
temperature). An ``Ensemble`` is itself a model: ``forward`` takes a [0, 1] batch and
returns log-probabilities, so evaluation, calibration, ONNX export and the Recognizer use
it like any other network.

:meth:`Ensemble.save` / :func:`load_ensemble` -- one file holding every member's spec and
weights, the voting weights, and the ensemble's own test-time views and temperature
(``ferkit ensemble`` writes it; every command that takes a MODEL reads it).
Test-time augmentation over members lives in :mod:`ferkit.evaluation.ensemble`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.errors import FerkitError
from ferkit.models.checkpoint import (
    ENSEMBLE_FORMAT,
    _init_only,
    build_model,
    load_model_any,
    read_checkpoint,
    register_format_reader,
    require_classifier,
)
from ferkit.models.input_config import InputConfig
from ferkit.models.preprocess import prepare_batch


def member_probs(model: nn.Module, x01: torch.Tensor) -> torch.Tensor:
    """One member's class probabilities (B, K) of a [0, 1] batch, at its own temperature."""
    cfg = model.input_config
    return F.softmax(model(prepare_batch(x01, cfg)).float() / cfg.temperature, dim=1)


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
        self.meta: dict = {}  # provenance saved with the file (version, accuracy, ...)

    def __len__(self) -> int:
        return len(self.members)

    def predict_proba(self, x01: torch.Tensor, tta: Callable | None = None) -> torch.Tensor:
        """Class probabilities (B, K) of a [0, 1] float batch (any size/channels); ``tta``, a
        callable ``(member, x01) -> probabilities``, replaces each member's single forward pass."""
        total = None
        for w, m in zip(self.weights.tolist(), self.members):
            p = tta(m, x01) if tta is not None else member_probs(m, x01)
            total = p * w if total is None else total + p * w
        return total

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """Log-probabilities; ``x01`` is a [0, 1] batch (this model's identity preprocessing)."""
        return torch.log(self.predict_proba(x01).clamp_min(1e-12))

    @torch.inference_mode()
    def predict_log_probs(self, dataset, batch_size: int = 256, device="cpu", tta=None, progress: bool = True,
                          input_transform=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :func:`ferkit.evaluation.metrics.predict_log_probs`: (log-probs (N, K), targets (N,)).

        ``tta``: a callable ``(member, x01) -> probabilities`` applied to every member on its
        own input (:func:`ferkit.evaluation.ensemble.make_tta` builds them), or None. The
        ensemble's own temperature (``input_config.temperature``, fitted by ``ferkit
        calibrate``) is applied to the averaged probabilities.
        """
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        self.to(device).eval()
        t = self.input_config.temperature
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        outs, targets = [], []
        for x, y in tqdm(loader, desc=f"ensemble of {len(self)}", disable=not progress, unit="batch",
                         leave=False):
            x = x.to(device).float().div_(255.0)
            if input_transform is not None:
                x = input_transform(x)
            logp = torch.log(self.predict_proba(x, tta).clamp_min(1e-12))
            outs.append((F.log_softmax(logp / t, dim=1) if t != 1.0 else logp).cpu())
            targets.append(y)
        return torch.cat(outs), torch.cat(targets)

    def save(self, path, *, half: bool = False, meta: dict | None = None, member_files: bool = False) -> list[Path]:
        """Write every member (spec + weights), the voting weights and the ensemble's own
        test-time views and temperature (``input_config.tta``/``temperature``), atomically.

        Args:
            path: the ensemble file.
            half: fp16 member weights (half the size; loading casts them back).
            meta: provenance saved beside them (default: the ensemble's own ``meta``).
            member_files: each member in its own slim file beside ``path``
                (``STEM.m0.pt``, ``STEM.m1.pt``...), which the ensemble file names: a large
                ensemble as files of one member each (a shipped model's file stays under 16 MiB).

        Returns:
            The files written, the ensemble file first.
        """
        from ferkit.models.checkpoint import save_slim

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        members, written = [], [path]
        for i, (m, spec) in enumerate(zip(self.members, self.specs)):
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
                }
            )
            if member_files:
                name = f"{path.stem}.m{i}.pt"
                save_slim(m, {**members[-1], "labels": self.labels}, path.with_name(name), half=half,
                          meta={"ensemble_member": i})
                members[-1]["file"] = name  # beside the ensemble file
                written.append(path.with_name(name))
            else:
                members[-1]["state_dict"] = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
                                             for k, v in m.state_dict().items()}
        out = {
            "format": ENSEMBLE_FORMAT,
            "labels": self.labels,
            "weights": self.weights.tolist(),
            "members": members,
            "views": self.input_config.tta,
            "temperature": self.input_config.temperature,
            "meta": dict(meta if meta is not None else self.meta),
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(out, tmp)
        os.replace(tmp, path)  # atomic: never a half-written artefact
        return written

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
    return ensemble_from_checkpoint(read_checkpoint(path), path, map_location)[0]


def ensemble_from_checkpoint(ck, path, map_location="cpu") -> tuple[Ensemble, dict]:
    """``(ensemble in eval mode, spec)`` from an ensemble file's loaded dict (what
    :func:`ferkit.models.checkpoint.load_model_any` returns for one)."""
    if not (isinstance(ck, dict) and ck.get("format") == ENSEMBLE_FORMAT):
        raise FerkitError(f"{path}: not a ferkit ensemble file (write one with 'ferkit ensemble')")
    models, specs = [], []
    for i, mem in enumerate(ck["members"]):
        where = f"{path}: member {i} ({mem['model']})"
        if "file" in mem:  # written with member_files=True: the member's own slim file beside us
            member_path = Path(path).parent / mem["file"]
            if not member_path.is_file():
                raise FerkitError(f"{where}: its file {member_path} is missing (copy it beside {Path(path).name})")
            state = read_checkpoint(member_path)["state_dict"]
        else:
            state = mem["state_dict"]
        models.append(build_model(mem, state, where))
        specs.append(
            {
                "model": mem["model"],
                "model_kwargs": mem.get("model_kwargs", {}),
                "path": mem.get("source"),
            }
        )
    ens = Ensemble(models, ck["labels"], ck["weights"], specs).to(map_location).eval()
    try:  # files written before these were saved have neither: no views, temperature 1
        ens.input_config = replace(ens.input_config, tta=ck.get("views"),
                                   temperature=ck.get("temperature", 1.0))
    except ValueError as e:
        raise FerkitError(f"{path}: damaged ensemble file ({e})") from None
    ens.meta = dict(ck.get("meta") or {})
    return ens, ensemble_spec(ens, path)


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
        "meta": dict(ens.meta),
    }


register_format_reader(ENSEMBLE_FORMAT, ensemble_from_checkpoint)
