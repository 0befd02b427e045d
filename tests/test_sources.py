"""Every registered dataset layout: a tiny fake in its official layout -> detection -> index.

Parametrized over :func:`ferkit.data.sources.list_sources`, so a newly registered source
fails here until it has a tiny generator in ``test_every_recipe.DATASETS`` (shared with the
recipe runs).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch): the recipe tests' generators")
from test_every_recipe import DATASETS

from ferkit.data.dataset import load_index
from ferkit.data.sources import detect_source, get_source, list_sources
from ferkit.errors import DataError
from ferkit.labels import EXTRA, FER7

SOURCES = [s.name for s in list_sources()]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    made: dict[str, object] = {}

    def make(name):
        if name not in DATASETS:
            pytest.fail(f"no tiny generator for source {name!r}: add one to DATASETS in test_every_recipe.py")
        if name not in made:
            made[name] = DATASETS[name](tmp_path_factory.mktemp(name) / "data")
        return made[name]

    return make


@pytest.mark.filterwarnings("ignore::UserWarning")  # notes such as "no face found, whole image used"
@pytest.mark.parametrize("name", SOURCES)
def test_fake_layout_is_detected_and_indexed(name, layouts, monkeypatch, tmp_path):
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    root = layouts(name)
    assert detect_source(root).name == name, f"{root} detected as {detect_source(root).name}"
    spec = get_source(name)
    indexed = {}
    for split in spec.splits:
        try:
            index = load_index(root, split)
        except DataError as e:  # a split the tiny fake lacks: refused in one line, never a traceback
            assert "\n" not in str(e)
            continue
        indexed[split] = index
        assert index.source == name and len(index) > 0
        assert len(index.labels) == len(index.items) and set(index.labels) <= {*FER7, *EXTRA}, set(index.labels)
        if index.groups is not None:
            assert len(index.groups) == len(index)
        img = index.loader(index.items[0])
        assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] in (1, 3)
    assert {"train", "all"} & set(indexed), f"{name}: neither train nor all indexed ({sorted(indexed)})"
    # A held-out split never shares an item with train, unless the source says so in a note
    # (JAFFE has no official split: train, test and all each hold every photo).
    if "train" in indexed and "test" in indexed and not indexed["train"].notes:
        assert not set(map(str, indexed["train"].items)) & set(map(str, indexed["test"].items))
    # Asking for the source by name gives the same index as detection.
    first = next(iter(indexed))
    assert load_index(root, first, name).items == indexed[first].items
