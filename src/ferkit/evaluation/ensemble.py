"""Test-time augmentation (Boulis et al.) for single models and ensembles.

* :func:`make_tta` -- average a model's class probabilities over the original
  batch, its horizontal flip and ``k`` augmented copies (the ``boulis`` preset:
  +-10 deg, +-10% zoom and shifts, seeded so results are repeatable), or over
  ten crops (four corners + centre and their mirrors, :mod:`ferkit.data.crops`;
  the Recognizer uses the same views).
* :func:`ensemble_log_probs` -- an ensemble's log-probabilities over a dataset with
  every member seeing its own test-time views.

The soft-voting :class:`~ferkit.models.ensemble.Ensemble` itself is a model and lives in
:mod:`ferkit.models.ensemble`; its names are re-exported here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.data.crops import check_mode, crop_views, mean_over_views
from ferkit.data.transforms import PRESETS, BatchAugment, prepare_frame
from ferkit.errors import FerkitError
from ferkit.models.ensemble import (  # noqa: F401 - re-exported: callers import them from here
    ENSEMBLE_FORMAT,
    Ensemble,
    ensemble_spec,
    is_ensemble_file,
    load_ensemble,
    member_probs,
)


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
        probs = [member_probs(model, v) for v in self.views(x01)]
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




def ensemble_log_probs(ens: Ensemble, dataset, batch_size: int = 256, device="cpu", tta_copies: int | str | None = 0,
                       progress: bool = True, input_transform=None, tta_preset: str = "boulis",
                       tta_flip_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs (N, K), targets (N,)) of ``ens`` over ``dataset``, each member with its own views.

    ``tta_copies`` > 0 applies flip + that many ``tta_preset`` copies to every member,
    "ten-crop"/"mirror" each member's crops (:class:`CropTTA`); 0 or None means no TTA,
    unless ``tta_flip_only`` (original + mirror only).
    """
    tta = make_tta(tta_copies or 0, tta_preset) if (tta_copies or tta_flip_only) else None
    return ens.predict_log_probs(dataset, batch_size, device, tta=tta, progress=progress,
                                 input_transform=input_transform)
