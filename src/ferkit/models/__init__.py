"""Model families and the registry (``create_model``, ``list_models``)."""

from ferkit.models.registry import (
    IMAGENET,
    InputConfig,
    create_model,
    get_entry,
    list_models,
    register_model,
)

__all__ = ["IMAGENET", "InputConfig", "create_model", "get_entry", "list_models", "register_model"]
