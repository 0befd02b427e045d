"""Data: sources (which files), the decode cache, datasets, splits, transforms."""

from ferkit.data.dataset import FerDataset, build_dataset, class_weights, load_index
from ferkit.data.sources import Index, detect_source, get_source, list_sources, register_source

__all__ = ["FerDataset", "Index", "build_dataset", "class_weights", "detect_source", "get_source",
           "list_sources", "load_index", "register_source"]
