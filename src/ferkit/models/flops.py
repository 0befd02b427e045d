"""Forward-pass cost of registered models, counted by PyTorch's ``FlopCounterMode``."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ferkit.models.registry import create_model


@torch.no_grad()
def forward_flops(name: str, num_classes: int = 7, in_chans: int | None = None, input_size: int | None = None,
                  **model_kwargs) -> int:
    """Floating-point operations of one forward pass of one face (a multiply-add counts 2).

    The model is built as ``create_model`` would (random weights, eval mode) and run on one
    input of its declared size; training costs about three times this (forward + backward).

    Raises:
        FerkitError: unknown model name. TypeError/ValueError: bad ``model_kwargs``.
    """
    model = create_model(name, num_classes=num_classes, in_chans=in_chans, input_size=input_size,
                         **model_kwargs).eval()
    cfg = model.input_config
    x = torch.zeros(1, cfg.channels, cfg.size, cfg.size)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    return int(counter.get_total_flops())


def parameter_count(model: torch.nn.Module) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
