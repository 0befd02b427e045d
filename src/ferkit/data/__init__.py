"""Data: sources (which files), the decode cache, datasets, splits, transforms.

The names below load on first use (PEP 562), so torch-free modules of this
package (``ferkit.data.presets``, ``ferkit.data.sources``) import without PyTorch.
"""

import importlib

_LAZY = {
    "FerDataset": "dataset", "build_dataset": "dataset", "class_weights": "dataset", "load_index": "dataset",
    "Index": "sources", "detect_source": "sources", "get_source": "sources", "list_sources": "sources",
    "register_source": "sources",
}

__all__ = ["FerDataset", "Index", "build_dataset", "class_weights", "detect_source", "get_source",
           "list_sources", "load_index", "register_source"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"ferkit.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ferkit.data' has no attribute {name!r}")
