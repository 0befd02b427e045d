"""KDEF source: name parsing, layouts, angle filter, subject-independent and random splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
from PIL import Image

from ferkit.data.dataset import FerDataset, load_index
from ferkit.data.kdef import ANGLES, EMOTIONS, index_kdef, parse_kdef_name, subject_split
from ferkit.data.sources import detect_source
from ferkit.errors import DataError, FerkitError
from ferkit.labels import FER7


def write_kdef(root: Path, subjects=("F01", "F02", "M01", "M02", "F03", "M03", "F04", "M04", "F05", "M05"),
               sessions=("A", "B"), angles=ANGLES, size=(40, 52), ext=".JPG", official=True) -> Path:
    """Generated photos in the official naming: root/KDEF/<AF01>/AF01ANS.JPG."""
    rng = np.random.default_rng(0)
    for subj in subjects:
        for ses in sessions:
            d = root / "KDEF" / f"{ses}{subj}" if official else root
            d.mkdir(parents=True, exist_ok=True)
            for k, emo in enumerate(EMOTIONS):
                for ang in angles:
                    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
                    arr[k * 6:(k + 1) * 6] = 255  # label-dependent stripe
                    Image.fromarray(arr).save(d / f"{ses}{subj}{emo}{ang}{ext}", quality=90)
    return root


@pytest.mark.parametrize("name,expect", [
    ("AF01ANS.JPG", ("A", "F", 1, "angry", "S")),
    ("BM35SUHR.jpg", ("B", "M", 35, "surprise", "HR")),
    ("af01affl.jpeg", ("A", "F", 1, "fear", "FL")),
    ("AM12SAS.JPG", ("A", "M", 12, "sad", "S")),  # SA + S: the one-letter angle after a two-letter emotion
    ("AF01NEFR.JPG", ("A", "F", 1, "neutral", "FR")),
    ("AF01DIHL.JPG", ("A", "F", 1, "disgust", "HL")),
    ("AF01HAS.JPG", ("A", "F", 1, "happy", "S")),
])
def test_parse_good_names(name, expect):
    info = parse_kdef_name(name)
    assert (info["session"], info["sex"], info["id"], info["label"], info["angle"]) == expect
    assert info["subject"] == f"{expect[1]}{expect[2]:02d}"
    assert info["label"] in FER7


@pytest.mark.parametrize("name", ["AF01ANX.JPG", "CF01ANS.JPG", "AX01ANS.JPG", "AF1ANS.JPG", "AF01XXS.JPG",
                                  "AF01ANS.png", "AF01ANSS.JPG", "readme.txt", "AF01ANS"])
def test_parse_bad_names(name):
    assert parse_kdef_name(name) is None


def test_real_photos(shared_fixtures):
    root = shared_fixtures / "kdef"
    assert detect_source(root).name == "kdef"
    idx = index_kdef(root, "all")
    assert len(idx) == 4
    assert Counter(idx.labels) == Counter({"fear": 2, "angry": 1, "sad": 1})
    assert set(idx.groups) == {"F01"}  # only one actor in the fixtures
    frontal = index_kdef(root, "all", angles=["S"])
    assert [Path(p).name for p in frontal.items] == ["AF01ANS.JPG"]
    assert frontal.skipped["angle filtered out"] == 3
    assert len(index_kdef(root, "all", angles="HL,FL")) == 2
    img = idx.loader(idx.items[0])
    assert img.shape == (762, 562, 3) and img.dtype == np.uint8
    # One actor: a subject-independent split puts everything in train and has no test.
    assert len(index_kdef(root, "train")) == 4
    with pytest.raises(DataError, match="empty"):
        index_kdef(root, "test")


def test_real_photos_face_crop(shared_fixtures):
    pytest.importorskip("ferkit.faces", reason="face detection module not available")
    idx = index_kdef(shared_fixtures / "kdef", "all", angles=["S"], face_crop=True)
    crop = idx.loader(idx.items[0])
    # The face of a 562x762 portrait is a fraction of the frame, cropped square.
    assert crop.shape[0] == crop.shape[1] and 80 < crop.shape[0] < 500
    assert idx.fingerprint != index_kdef(shared_fixtures / "kdef", "all", angles=["S"]).fingerprint


def test_subject_split_no_overlap(tmp_path):
    root = write_kdef(tmp_path / "k", angles=("S", "HL"))
    tr, te = index_kdef(root, "train"), index_kdef(root, "test")
    assert len(tr) + len(te) == 10 * 2 * 7 * 2
    assert set(tr.groups).isdisjoint(te.groups)
    assert len(set(te.groups)) == 2  # 20% of 10 actors
    # Both sessions of a test actor are on the test side.
    sessions = {(Path(p).name[0], g) for p, g in zip(te.items, te.groups)}
    assert {s for s, _ in sessions} == {"A", "B"}
    # Deterministic, and a different seed moves actors.
    assert index_kdef(root, "test").items == te.items
    draws = {frozenset(index_kdef(root, "test", split_seed=s).groups) for s in range(5)}
    assert len(draws) > 1


def test_random_split_80_20(tmp_path):
    root = write_kdef(tmp_path / "k", angles=("S",))
    tr = index_kdef(root, "train", split_mode="random")
    te = index_kdef(root, "test", split_mode="random")
    n = 10 * 2 * 7
    assert len(tr) + len(te) == n and set(tr.items).isdisjoint(te.items)
    assert len(te) == pytest.approx(0.2 * n, abs=7)  # stratified per emotion: 20% of each class
    assert set(Counter(te.labels).values()) == {4}
    assert set(tr.groups) & set(te.groups)  # the paper's split mixes actors


def test_flat_layout_lowercase_and_bad_names(tmp_path):
    root = write_kdef(tmp_path / "flat", subjects=("F01", "M02"), sessions=("A",), angles=("S",),
                      ext=".jpg", official=False)
    Image.new("RGB", (8, 8)).save(root / "portrait.jpg")
    Image.new("RGB", (8, 8)).save(root / "AF01XXS.JPG")
    (root / "README.txt").write_text("kdef")
    assert detect_source(root).name == "kdef"
    idx = index_kdef(root, "all")
    assert len(idx) == 14
    assert idx.skipped["file name not in KDEF format"] == 2


def test_dataset_layer_val_by_actor(tmp_path):
    root = write_kdef(tmp_path / "k", angles=("S",))
    tr = load_index(root, "train", "kdef", val_fraction=0.2, group_val=True)
    va = load_index(root, "val", "kdef", val_fraction=0.2, group_val=True)
    te = load_index(root, "test", "kdef")
    assert set(tr.groups).isdisjoint(va.groups) and set(va.groups).isdisjoint(te.groups)
    ds = FerDataset(va, 32, 1, progress=False)
    assert ds.images.shape[1:] == (32, 32, 1) and len(ds) == len(va)


def test_bad_options(tmp_path):
    root = write_kdef(tmp_path / "k", subjects=("F01", "M01"), sessions=("A",), angles=("S",))
    with pytest.raises(DataError, match="angles"):
        index_kdef(root, "all", angles=["XX"])
    with pytest.raises(DataError, match="split_mode"):
        index_kdef(root, "train", split_mode="actor")
    with pytest.raises(DataError, match="no split"):
        index_kdef(root, "publictest")
    with pytest.raises(DataError, match="no KDEF photos"):
        index_kdef(root, "all", angles=["FL"])


def test_face_crop_missing_module_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    root = write_kdef(tmp_path / "k", subjects=("F01", "M01"), sessions=("A",), angles=("S",))
    monkeypatch.setitem(sys.modules, "ferkit.faces", None)  # import now raises ImportError
    with pytest.raises(FerkitError, match="face detection"):
        index_kdef(root, "all", face_crop=True)


def test_subject_split_helper():
    assert subject_split(["F01"], 0.2) == set()
    picked = subject_split([f"F{i:02d}" for i in range(35)] + [f"M{i:02d}" for i in range(35)], 0.2)
    assert len(picked) == 14
