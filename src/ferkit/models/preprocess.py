"""A model's declared preprocessing applied to a batch of faces (torch).

:func:`prepare_batch` turns uint8 or [0, 1] faces into what a network takes, as its
:class:`~ferkit.models.input_config.InputConfig` declares: gray<->RGB, resize to the declared
frame, normalise with its mean/std, centre crop for models that take crops. It lives with the
models, not in ``ferkit.data``, because a model made of models (an ensemble) prepares each
member's input itself; ``ferkit.data.transforms`` re-exports it for the data pipeline.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ferkit.models.input_config import InputConfig, center_crop

_LUMA = (0.299, 0.587, 0.114)


@functools.lru_cache(maxsize=64)
def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, C, 1, 1) tensor of ``values``, made once per device/dtype: building it per batch
    would copy from the host (and wait for the device) on every training step."""
    return torch.tensor(values, device=device, dtype=dtype).view(1, -1, 1, 1)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (0-255) -> float32 in [0, 1]; a float tensor is taken as [0, 1] already."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def prepare_batch(x: torch.Tensor, cfg: InputConfig, *, normalize: bool = True) -> torch.Tensor:
    """uint8 or [0,1] float (B, C, H, W) faces -> the model's input (B, cfg.channels, size, size).

    Faces of any size are whole faces: they are resized to ``cfg.frame`` and, for a
    model that takes crops, cut to the centre ``cfg.size`` x ``cfg.size``
    (:func:`ferkit.data.crops.center_crop`; training gets random crops from
    :class:`BatchAugment` first, which keeps the frame size).
    """
    return center_crop(prepare_frame(x, cfg, normalize=normalize), cfg.size).contiguous()


def prepare_frame(x: torch.Tensor, cfg: InputConfig, *, normalize: bool = True) -> torch.Tensor:
    """Like :func:`prepare_batch` without the crop: (B, cfg.channels, frame, frame).

    Normalisation is per pixel, so cropping afterwards (centre or ten crops) gives
    the same values as normalising the crops.
    """
    x = to_float(x)
    # ints, not traced sizes: inside an exported ensemble the graph's input side is fixed
    c, h, w = (int(v) for v in x.shape[1:])
    if cfg.channels == 3 and c == 1:
        x = x.expand(-1, 3, -1, -1)
    elif cfg.channels == 1 and c == 3:
        x = (x * _constant(_LUMA, x.device, x.dtype)).sum(1, keepdim=True)
    side = cfg.frame
    if w != side or h != side:
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=w > side)
    if normalize:
        x = (x - _constant(tuple(cfg.mean), x.device, x.dtype)) / _constant(tuple(cfg.std), x.device, x.dtype)
    return x
