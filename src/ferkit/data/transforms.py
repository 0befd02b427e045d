"""Batch transforms: model preprocessing and the papers' augmentation presets.

Datasets hand out uint8 (C, H, W) tensors; everything below runs on whole
batches, on whatever device the batch is on (so on the GPU when training
there). Two steps:

* :func:`prepare_batch` -- the model's declared preprocessing: scale to [0, 1],
  gray<->RGB, resize to the declared size, normalise with its mean/std.
* :class:`BatchAugment` -- random flips and affine warps (rotation, zoom,
  shift) in one ``grid_sample``; the presets are named after their papers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.data.presets import PRESETS
from ferkit.models.registry import InputConfig

_LUMA = (0.299, 0.587, 0.114)


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def prepare_batch(x: torch.Tensor, cfg: InputConfig, *, normalize: bool = True) -> torch.Tensor:
    """uint8 or [0,1] float (B, C, H, W) -> the model's input (B, cfg.channels, size, size)."""
    x = to_float(x)
    c = x.shape[1]
    if cfg.channels == 3 and c == 1:
        x = x.expand(-1, 3, -1, -1)
    elif cfg.channels == 1 and c == 3:
        w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x * w).sum(1, keepdim=True)
    if x.shape[-1] != cfg.size or x.shape[-2] != cfg.size:
        x = F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > cfg.size)
    if normalize:
        mean = torch.tensor(cfg.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(cfg.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x.contiguous()


class BatchAugment(nn.Module):
    """Per-sample random horizontal flip + rotation/zoom/shift as one affine warp.

    Args:
        rotation: max degrees; angles are uniform in [-rotation, rotation].
        zoom: max relative zoom; scale uniform in [1 - zoom, 1 + zoom].
        shift: max shift as a fraction of the side, per axis.
        hflip: flip half of the samples left-right.
    Empty areas are filled with the nearest edge pixel (Keras' default fill_mode).
    """

    def __init__(self, rotation: float = 0.0, zoom: float = 0.0, shift: float = 0.0, hflip: bool = True):
        super().__init__()
        self.rotation, self.zoom, self.shift, self.hflip = rotation, zoom, shift, hflip

    def extra_repr(self) -> str:
        return f"rotation={self.rotation}, zoom={self.zoom}, shift={self.shift}, hflip={self.hflip}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        dev = x.device
        flip = (torch.rand(b, device=dev) < 0.5) if self.hflip else torch.zeros(b, dtype=torch.bool, device=dev)
        if not (self.rotation or self.zoom or self.shift):
            return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        ang = (torch.rand(b, device=dev) * 2 - 1) * math.radians(self.rotation)
        scale = 1 + (torch.rand(b, device=dev) * 2 - 1) * self.zoom
        tx = (torch.rand(b, device=dev) * 2 - 1) * self.shift * 2  # grid units span 2 per side
        ty = (torch.rand(b, device=dev) * 2 - 1) * self.shift * 2
        sx = torch.where(flip, -1.0, 1.0) / scale
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.stack(
            [torch.stack([cos * sx, -sin / scale, tx], 1), torch.stack([sin * sx, cos / scale, ty], 1)], 1
        )
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def make_augment(preset: str | None) -> BatchAugment | None:
    if preset in (None, "", "none"):
        return None
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose from {', '.join(PRESETS)}")
    return BatchAugment(**PRESETS[preset])
