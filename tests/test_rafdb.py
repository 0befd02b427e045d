"""RAF-DB sources: the real label file + generated stand-in images, and the Kaggle layout."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
from PIL import Image

from ferkit.data.dataset import FerDataset, load_index
from ferkit.data.rafdb import RAF_LABELS, index_rafdb, index_rafdb_kaggle, read_label_file
from ferkit.data.sources import detect_source
from ferkit.errors import DataError
from ferkit.labels import FER7


def _img(path: Path, label: str, size=24):
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    arr = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
    k = FER7.index(label)
    arr[k * 3:(k + 1) * 3] = 250
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture
def rafdb_root(shared_fixtures, tmp_path):
    """The real label file + stand-ins for the first 200 train and 60 test images (aligned)."""
    label_file = shared_fixtures / "rafdb" / "EmoLabel" / "list_patition_label.txt"
    if not label_file.is_file():
        pytest.skip(f"{label_file} not available")
    root = tmp_path / "RAF-DB" / "basic"
    (root / "EmoLabel").mkdir(parents=True)
    shutil.copy(label_file, root / "EmoLabel")
    rows, _ = read_label_file(label_file)
    for split, n in (("train", 200), ("test", 60)):
        for name, _, label in [r for r in rows if r[1] == split][:n]:
            _img(root / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg", label)
    return root


def test_label_file_counts(shared_fixtures):
    label_file = shared_fixtures / "rafdb" / "EmoLabel" / "list_patition_label.txt"
    rows, skipped = read_label_file(label_file)
    splits = Counter(r[1] for r in rows)
    assert splits == {"train": 12271, "test": 3068}
    assert not skipped
    assert {r[2] for r in rows} == set(FER7)
    # Label 4 (happiness) is RAF-DB's biggest class.
    assert Counter(r[2] for r in rows).most_common(1)[0][0] == "happy"


def test_official_layout_with_missing_images(rafdb_root):
    assert detect_source(rafdb_root).name == "rafdb"
    assert detect_source(rafdb_root.parent).name == "rafdb"  # the folder above basic/ works too
    tr = index_rafdb(rafdb_root, "train")
    te = index_rafdb(rafdb_root, "test")
    assert (len(tr), len(te)) == (200, 60)
    assert tr.skipped["image file missing"] == 12271 - 200
    assert te.skipped["image file missing"] == 3068 - 60
    assert any("missing" in n for n in tr.notes)
    assert all(Path(p).name.startswith("train_") and p.endswith("_aligned.jpg") for p in tr.items)
    assert len(index_rafdb(rafdb_root, "all")) == 260
    # The label mapping: train_00001.jpg is labelled 5 = sadness in the real file.
    assert tr.labels[0] == RAF_LABELS[5] == "sad"
    ds = FerDataset(te, 24, 3, progress=False)
    assert ds.images.shape == (60, 24, 24, 3)
    assert ds.report_skipped() and "image file missing" in ds.report_skipped()


def test_val_carved_from_train(rafdb_root):
    tr = load_index(rafdb_root, "train", val_fraction=0.1)
    va = load_index(rafdb_root, "val", val_fraction=0.1)
    assert len(tr) + len(va) == 200 and set(tr.items).isdisjoint(va.items)


def test_original_variant(rafdb_root):
    with pytest.raises(DataError, match="none of the"):
        index_rafdb(rafdb_root, "train", variant="original")
    _img(rafdb_root / "Image" / "original" / "train_00001.jpg", "sad")
    idx = index_rafdb(rafdb_root, "train", variant="original")
    assert len(idx) == 1 and idx.items[0].endswith("original/train_00001.jpg")
    with pytest.raises(DataError, match="variant"):
        index_rafdb(rafdb_root, "train", variant="cropped")


def test_malformed_label_lines(tmp_path):
    root = tmp_path / "raf"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text(
        "train_00001.jpg 1\ntrain_00002.jpg 9\nbogus line here\nval_00001.jpg 3\n\ntest_0001.jpg 7\n"
    )
    rows, skipped = read_label_file(root / "EmoLabel" / "list_patition_label.txt")
    assert [(r[0], r[2]) for r in rows] == [("train_00001.jpg", "surprise"), ("test_0001.jpg", "neutral")]
    # each reason names its lines, so the user can open the file there
    assert skipped == {"malformed label line (lines 2, 3)": 2, "image name without train_/test_ prefix (line 4)": 1}
    with pytest.raises(DataError, match="no split"):
        index_rafdb(root, "publictest")


def test_kaggle_layout(tmp_path):
    root = tmp_path / "rafkaggle"
    for split, n in (("train", 3), ("test", 2)):
        for k, label in RAF_LABELS.items():
            for i in range(n):
                _img(root / "DATASET" / split / str(k) / f"{split}_{k}_{i}.jpg", label)
    (root / "DATASET" / "train" / "extra").mkdir()
    (root / "DATASET" / "train_labels.csv").write_text("image,label\n")
    assert detect_source(root).name == "rafdb-kaggle"
    assert detect_source(root / "DATASET").name == "rafdb-kaggle"
    tr = index_rafdb_kaggle(root, "train")
    te = index_rafdb_kaggle(root, "test")
    assert (len(tr), len(te), len(index_rafdb_kaggle(root, "all"))) == (21, 14, 35)
    assert Counter(te.labels) == {lab: 2 for lab in FER7}
    assert all(f"/{k}/" in p for p, lab in zip(tr.items, tr.labels) for k, v in RAF_LABELS.items() if v == lab)
    assert tr.skipped == {"folder 'extra' is not a RAF-DB label 1..7": 1}
