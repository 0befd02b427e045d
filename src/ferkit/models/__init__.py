"""Model families and the registry (``create_model``, ``list_models``).

The names below are loaded on first use: importing ``ferkit.models`` (or the
torch-free ``ferkit.models.input_config``) does not import PyTorch, so the ONNX
inference path can read input configs in an install without torch.
"""

from __future__ import annotations

__all__ = ["IMAGENET", "InputConfig", "create_model", "get_entry", "list_models", "register_model"]


def __getattr__(name: str):
    if name in ("IMAGENET", "InputConfig"):
        from ferkit.models import input_config

        return getattr(input_config, name)
    if name in __all__:
        from ferkit.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'ferkit.models' has no attribute {name!r}")
