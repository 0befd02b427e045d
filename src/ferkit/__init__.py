"""ferkit: facial expression recognition toolkit.

Importing ferkit is cheap: no weights are loaded and no heavy optional
dependency is imported until it is used.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Recognizer", "__version__", "create_model", "list_models"]


def __getattr__(name: str):
    # Lazy public API so `import ferkit` stays fast and side-effect free.
    if name in ("create_model", "list_models"):
        from ferkit import models

        try:
            return getattr(models, name)
        except ModuleNotFoundError as e:
            # The model registry is PyTorch code; the base install predicts without it.
            raise ModuleNotFoundError(
                f"ferkit.{name} needs {e.name}, which is not installed: pip install 'ferkit[train]'",
                name=e.name,
            ) from e
    if name == "Recognizer":
        from ferkit.inference.recognizer import Recognizer

        return Recognizer
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")
