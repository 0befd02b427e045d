"""JAFFE source: name parsing, generated TIFFs, groups, face-crop option."""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
from PIL import Image

from ferkit.data.dataset import FerDataset, load_index
from ferkit.data.jaffe import EMOTIONS, index_jaffe, parse_jaffe_name
from ferkit.data.sources import detect_source
from ferkit.errors import DataError, FerkitError

SUBJECTS = ("KA", "KL", "KM")


def write_jaffe(root, subjects=SUBJECTS, reps=2, size=64):
    """Generated 8-bit gray TIFFs in the JAFFE naming: KA.AN1.39.tiff."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    num = 1
    for s in subjects:
        for emo in EMOTIONS:
            for r in range(1, reps + 1):
                arr = rng.integers(0, 255, (size, size), dtype=np.uint8)
                Image.fromarray(arr, "L").save(root / f"{s}.{emo}{r}.{num}.tiff")
                num += 1
    return root


@pytest.mark.parametrize("name,expect", [
    ("KA.AN1.39.tiff", ("KA", "angry", 1, 39)),
    ("NA.FE3.216.TIFF", ("NA", "fear", 3, 216)),
    ("ym.su2.58.tif", ("YM", "surprise", 2, 58)),
    ("TM.NE1.177.tiff", ("TM", "neutral", 1, 177)),
])
def test_parse_good(name, expect):
    info = parse_jaffe_name(name)
    assert (info["subject"], info["label"], info["repetition"], info["number"]) == expect


@pytest.mark.parametrize("name", ["KA.XX1.39.tiff", "KA.AN.39.tiff", "KAA.AN1.39.tiff", "KA.AN1.tiff",
                                  "KA_AN1_39.tiff", "README", "KA.AN1.39.txt"])
def test_parse_bad(name):
    assert parse_jaffe_name(name) is None


def test_index_generated_tiffs(tmp_path):
    root = write_jaffe(tmp_path / "jaffe")
    (root / "README").write_text("jaffe")
    Image.new("L", (8, 8)).save(root / "KA.XX1.1.tiff")
    assert detect_source(tmp_path).name == "jaffe"  # parent of jaffe/ works too
    idx = index_jaffe(root, "test", face_crop=False)
    assert len(idx) == 3 * 7 * 2
    assert Counter(idx.labels) == {v: 6 for v in EMOTIONS.values()}
    assert Counter(idx.groups) == {s: 14 for s in SUBJECTS}
    assert idx.skipped == {"file name not in JAFFE format": 1}
    assert index_jaffe(root, "all", face_crop=False).items == idx.items
    ds = FerDataset(idx, 48, 1, progress=False)
    assert ds.images.shape == (42, 48, 48, 1)


def test_train_split_note_and_val_by_poser(tmp_path):
    root = write_jaffe(tmp_path / "j")
    tr = load_index(root, "train", "jaffe", val_fraction=0.34, group_val=True, face_crop=False)
    va = load_index(root, "val", "jaffe", val_fraction=0.34, group_val=True, face_crop=False)
    assert set(tr.groups).isdisjoint(va.groups) and len(tr) + len(va) == 42
    assert any("no official split" in n for n in index_jaffe(root, "train", face_crop=False).notes)
    with pytest.raises(DataError, match="no split"):
        index_jaffe(root, "publictest")


def test_face_crop_auto_and_required(tmp_path, monkeypatch):
    root = write_jaffe(tmp_path / "j", subjects=("KA",), reps=1)
    monkeypatch.setitem(sys.modules, "ferkit.faces", None)  # detection unavailable
    idx = index_jaffe(root, "test")  # auto: whole images, with a note
    assert len(idx) == 7 and any("whole images" in n for n in idx.notes)
    with pytest.raises(FerkitError, match="face_crop"):
        index_jaffe(root, "test", face_crop=True)


def test_face_crop_with_detector_keeps_faceless_images(tmp_path):
    pytest.importorskip("ferkit.faces", reason="face detection module not available")
    root = write_jaffe(tmp_path / "j", subjects=("KA",), reps=1)
    idx = index_jaffe(root, "test", face_crop=True)
    img = idx.loader(idx.items[0])  # noise has no face: the whole image is kept
    assert img.shape[:2] == (64, 64)
    assert idx.fingerprint != index_jaffe(root, "test", face_crop=False).fingerprint


def test_empty_folder(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match="no JAFFE photos"):
        index_jaffe(tmp_path / "e")
