"""Batch transforms: model preprocessing and the papers' augmentation presets.

Datasets hand out uint8 (C, H, W) tensors; everything below runs on whole
batches, on whatever device the batch is on (so on the GPU when training
there). Two steps:

* :func:`prepare_batch` -- the model's declared preprocessing: scale to [0, 1],
  gray<->RGB, resize to the declared frame, centre crop when the model takes
  crops (``InputConfig.crop_from``), normalise with its mean/std.
* :class:`BatchAugment` -- random flips and affine warps (rotation, zoom,
  aspect, shift, random crop) in one ``grid_sample``, then random erasing; the
  presets are named after their papers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.data.presets import PRESETS
from ferkit.models.preprocess import prepare_batch, prepare_frame, to_float  # noqa: F401 - re-exported
from ferkit.models.registry import InputConfig


class BatchAugment(nn.Module):
    """Per-sample random flip + rotation/zoom/aspect/shift/crop as one affine warp, then erasing.

    Args:
        rotation: max degrees; angles are uniform in [-rotation, rotation].
        zoom: max relative zoom; scale uniform in [1 - zoom, 1 + zoom].
        shift: max shift as a fraction of the side, per axis.
        hflip: flip half of the samples left-right.
        aspect: max aspect-ratio change; width/height ratio log-uniform in
            [1 / (1 + aspect), 1 + aspect] (torchvision's RandomResizedCrop draws 3/4-4/3).
        rotation_p, shift_p: probability that a sample is rotated / shifted at all
            (torchvision's ``RandomApply``; 1 = always).
        crop: fraction of the side the model sees (``size / frame``, e.g. 40/48); below 1
            each sample is also moved by up to the crop margin, so the centre crop that
            :func:`prepare_batch` takes afterwards is a uniformly random crop.
        erase: probability of random erasing (Zhong et al. 2020): one rectangle of
            ``erase_scale`` of the crop's area and width/height ratio log-uniform in
            ``erase_ratio``, inside the part the model sees, set to 0 (black).
    The batch keeps its size. Empty areas are filled with the nearest edge pixel (Keras'
    default fill_mode). All randomness comes from torch's generator on the batch's
    device, drawn per sample in one go (no host synchronisation).
    """

    def __init__(
        self,
        rotation: float = 0.0,
        zoom: float = 0.0,
        shift: float = 0.0,
        hflip: bool = True,
        aspect: float = 0.0,
        rotation_p: float = 1.0,
        shift_p: float = 1.0,
        crop: float = 1.0,
        erase: float = 0.0,
        erase_scale: tuple[float, float] = (0.02, 0.33),
        erase_ratio: tuple[float, float] = (0.3, 3.3),
    ):
        super().__init__()
        if not 0.0 < crop <= 1.0:
            raise ValueError(f"crop must be in (0, 1], got {crop}")
        self.rotation, self.zoom, self.shift, self.hflip = rotation, zoom, shift, hflip
        self.aspect, self.rotation_p, self.shift_p, self.crop = aspect, rotation_p, shift_p, crop
        self.erase, self.erase_scale, self.erase_ratio = erase, tuple(erase_scale), tuple(erase_ratio)

    def extra_repr(self) -> str:
        return (
            f"rotation={self.rotation}, zoom={self.zoom}, shift={self.shift}, hflip={self.hflip}, "
            f"aspect={self.aspect}, rotation_p={self.rotation_p}, shift_p={self.shift_p}, "
            f"crop={self.crop:.4g}, erase={self.erase}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._warp(x)
        return self._erase(x) if self.erase > 0 else x

    def _warp(self, x: torch.Tensor) -> torch.Tensor:
        # Extra random draws happen only for the options in use, so the older presets
        # draw exactly what they drew before (seeded runs stay reproducible).
        b = x.shape[0]
        dev = x.device
        flip = (torch.rand(b, device=dev) < 0.5) if self.hflip else torch.zeros(b, dtype=torch.bool, device=dev)
        if not (self.rotation or self.zoom or self.shift or self.aspect or self.crop < 1):
            return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        ang = (torch.rand(b, device=dev) * 2 - 1) * math.radians(self.rotation)
        if self.rotation_p < 1:
            ang = ang * (torch.rand(b, device=dev) < self.rotation_p)
        scale = 1 + (torch.rand(b, device=dev) * 2 - 1) * self.zoom
        tx = (torch.rand(b, device=dev) * 2 - 1) * self.shift * 2  # grid units span 2 per side
        ty = (torch.rand(b, device=dev) * 2 - 1) * self.shift * 2
        if self.shift_p < 1:
            on = torch.rand(b, device=dev) < self.shift_p
            tx, ty = tx * on, ty * on
        if self.crop < 1:  # a margin of (1 - crop) / 2 of the side = (1 - crop) grid units
            tx = tx + (torch.rand(b, device=dev) * 2 - 1) * (1 - self.crop)
            ty = ty + (torch.rand(b, device=dev) * 2 - 1) * (1 - self.crop)
        sx = torch.where(flip, -1.0, 1.0) / scale
        ydiv = scale
        if self.aspect:
            # input span per output pixel: sqrt(r) across, 1/sqrt(r) down (r = width/height)
            root_r = ((torch.rand(b, device=dev) * 2 - 1) * math.log1p(self.aspect) / 2).exp()
            sx, ydiv = sx * root_r, scale * root_r
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.stack(
            [torch.stack([cos * sx, -sin / ydiv, tx], 1), torch.stack([sin * sx, cos / ydiv, ty], 1)], 1
        )
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        dev = x.device
        # the window the model sees: the centre crop (the whole image when crop == 1)
        win = max(1, round(self.crop * min(h, w)))
        top0, left0 = round((h - win) / 2.0), round((w - win) / 2.0)
        lo, hi = self.erase_scale
        area = (lo + torch.rand(b, device=dev) * (hi - lo)) * win * win
        log_r = math.log(self.erase_ratio[0]) + torch.rand(b, device=dev) * math.log(
            self.erase_ratio[1] / self.erase_ratio[0]
        )
        eh = (area * log_r.exp()).sqrt().round().clamp(1, win)
        ew = (area / log_r.exp()).sqrt().round().clamp(1, win)
        top = top0 + (torch.rand(b, device=dev) * (win - eh + 1)).floor()
        left = left0 + (torch.rand(b, device=dev) * (win - ew + 1)).floor()
        on = torch.rand(b, device=dev) < self.erase
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        box = (
            (rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
            & (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1))
            & on.view(-1, 1, 1)
        )  # fmt: skip
        return x.masked_fill(box.unsqueeze(1), 0.0)


def make_augment(preset: str | None, input_config: InputConfig | None = None) -> BatchAugment | None:
    """The named augmentation preset as a :class:`BatchAugment` (None for "none").

    With the model's ``input_config``, a model that takes crops (``crop_from``) also
    gets random crops of its input size from every preset: the crop is how the model
    is declared to be trained, not a preset option.

    Raises:
        ValueError: unknown preset name.
    """
    if preset in (None, "", "none"):
        return None
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose from {', '.join(PRESETS)}")
    crop = input_config.size / input_config.frame if input_config is not None else 1.0
    return BatchAugment(**PRESETS[preset], crop=crop)
