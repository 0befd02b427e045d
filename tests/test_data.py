"""FER2013 CSV/folders, generic class folders, decode cache, splits, bad input."""

import os
import time

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import torch
from conftest import write_class_tree, write_fer_csv
from PIL import Image

from ferkit.data import FerDataset, build_dataset, class_weights, detect_source, load_index
from ferkit.data.images import ImageDecodeError, decode_image
from ferkit.data.splits import group_split, stratified_split
from ferkit.data.transforms import PRESETS, BatchAugment, make_augment, prepare_batch
from ferkit.errors import DataError, tally
from ferkit.labels import FER7
from ferkit.models import InputConfig

GRAY48 = InputConfig(48, 1, (0.5,), (0.5,))


@pytest.mark.parametrize("header", ["emotion,pixels,Usage", "emotion, Usage, pixels"])
def test_fer_csv_both_headers(tmp_path, header):
    p = write_fer_csv(tmp_path / "f.csv", n_per_split=10, header=header)
    assert detect_source(p).name == "fer2013-csv"
    assert len(load_index(p, "train", val_fraction=0)) == 10
    assert len(load_index(p, "publictest")) == 10
    assert len(load_index(p, "privatetest")) == 10
    assert len(load_index(p, "test")) == 20  # PublicTest + PrivateTest
    ds = build_dataset(p, "publictest", GRAY48)
    x, y = ds[3]
    assert x.shape == (1, 48, 48) and x.dtype == torch.uint8 and y == 3


def test_fer_csv_val_is_carved_from_train_disjoint(tiny_fer_csv):
    tr = load_index(tiny_fer_csv, "train", val_fraction=0.3, seed=1)
    va = load_index(tiny_fer_csv, "val", val_fraction=0.3, seed=1)
    assert set(tr.items).isdisjoint(va.items) and len(tr) + len(va) == 10


def test_fer_csv_bad_rows_skipped_and_counted(tmp_path):
    p = write_fer_csv(tmp_path / "f.csv", n_per_split=3)
    with open(p, "a") as f:
        f.write("3,1 2 3,Training\n")  # short pixel string
        f.write("x," + " ".join(["1"] * 2304) + ",Training\n")  # non-numeric label
        f.write("2," + " ".join(["1"] * 2304) + ",Validation\n")  # unknown Usage
        f.write("9," + " ".join(["1"] * 2304) + ",Training\n")  # label out of range
    idx = load_index(p, "train", val_fraction=0)
    assert len(idx) == 3
    assert sum(idx.skipped.values()) == 4
    assert any("Usage" in k for k in idx.skipped)


def test_fer_csv_without_a_valid_row_names_the_reasons(tmp_path):
    # was "no valid rows ({'pixel string ... (lines 2, 3)': 2})": a Python dict in a user's error
    p = tmp_path / "f.csv"
    p.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n4,1 2,Training\n")
    with pytest.raises(DataError) as e:
        load_index(p, "train", val_fraction=0)
    assert str(e.value).endswith("no valid rows (1x pixel string of length 2, not 2304 (line 3), "
                                 "1x pixel string of length 3, not 2304 (line 2))")


def test_fer_csv_wrong_header(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("label,image\n1,2\n")
    with pytest.raises(DataError, match="not a"):
        load_index(p, "train", dataset="fer2013-csv")


def test_nonexistent_path():
    with pytest.raises(DataError, match="no such file"):
        load_index("/nonexistent/dir", "train")


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no images"):
        load_index(tmp_path, "train", val_fraction=0)


def test_folder_without_emotion_folders_counts_each_reason(tmp_path):
    # was "(3 image outside any emotion folder, 1 not an image file)": a count before a singular noun
    for i in range(3):
        Image.new("L", (48, 48)).save(tmp_path / f"face{i}.png")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError) as e:
        load_index(tmp_path, "train", val_fraction=0)
    assert "(3x image outside any emotion folder, 1x not an image file)" in str(e.value)


def test_tally_counts_reasons_most_frequent_first():
    assert tally({"not an image file": 1, "corrupt or unreadable image": 2}) == (
        "2x corrupt or unreadable image, 1x not an image file")
    assert tally({}) == ""


def test_class_tree_with_synonyms_and_unknown_class(tmp_path):
    root = write_class_tree(tmp_path / "ck", classes=("anger", "contempt", "happiness", "sadness"), n=3,
                            splits=())
    idx = load_index(root, "all")
    assert set(idx.labels) == {"angry", "contempt", "happy", "sad"}
    with pytest.warns(UserWarning, match=r"contempt \(3\)"):
        ds = FerDataset(idx, 48, 1, FER7)
    assert len(ds) == 9 and ds.skipped["class outside the label set"] == 3
    with pytest.raises(DataError):
        FerDataset(idx, 48, 1, FER7, strict=True)


def test_nested_split_folders(tmp_path):
    root = write_class_tree(tmp_path / "d", splits=("train", "val", "test"), n=2)
    assert len(load_index(root / "", "val")) == 14  # native val folder used, not carved
    with pytest.raises(DataError, match="no 'publictest'"):
        load_index(root, "publictest")


def test_fer2013_folder_prefix_splits(tmp_path):
    root = tmp_path / "fer"
    write_class_tree(root, splits=("train",), n=2, prefix={"train": "Training"})
    write_class_tree(root, splits=("test",), n=2, prefix={"test": "PublicTest"})
    write_class_tree(root, splits=("test",), n=1, prefix={"test": "PrivateTest"})
    assert detect_source(root).name == "fer2013"
    assert len(load_index(root, "publictest")) == 14
    assert len(load_index(root, "privatetest")) == 7
    assert len(load_index(root, "test")) == 21


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "CMYK", "1", "LA"])
def test_any_image_mode_decodes(tmp_path, mode):
    arr = (np.arange(64 * 80) % 251).reshape(64, 80).astype(np.uint8)
    im = Image.fromarray(arr, "L")
    if mode == "I;16":
        im = Image.fromarray(arr.astype(np.uint16) * 200)  # 16-bit gray
        assert im.mode.startswith("I;16")
    else:
        im = im.convert(mode)
    ext = "tif" if mode in ("I;16", "CMYK") else "png"
    path = tmp_path / f"x.{ext}"
    im.save(path)
    for ch in (1, 3):
        out = decode_image(path, ch)
        assert out.dtype == np.uint8 and out.shape == (64, 80, ch)


def test_corrupt_and_truncated_images_are_skipped(tmp_path):
    root = write_class_tree(tmp_path / "t", splits=(), n=3)
    (root / "happy" / "corrupt.jpg").write_bytes(b"not an image at all")
    good = (root / "sad").glob("*.png").__next__().read_bytes()
    (root / "sad" / "trunc.png").write_bytes(good[: len(good) // 2])
    (root / "sad" / "notes.txt").write_text("hello")
    idx = load_index(root, "all")
    with pytest.warns(UserWarning, match="unreadable"):
        ds = FerDataset(idx, 48, 1)
    assert len(ds) == 21
    assert ds.skipped["unreadable image"] == 2 and ds.skipped["not an image file"] == 1
    assert "skipped 3" in ds.report_skipped()
    with pytest.raises(ImageDecodeError):
        decode_image(root / "happy" / "corrupt.jpg")


def test_cache_reused_and_invalidated_on_change(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    root = write_class_tree(tmp_path / "t", splits=(), n=2)
    ds1 = FerDataset(load_index(root, "all"), 32, 1)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    ds2 = FerDataset(load_index(root, "all"), 32, 1)
    np.testing.assert_array_equal(ds1.images, ds2.images)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1  # hit, no new entry
    # Rewrite one file with different content: a new key, new pixels.
    f = min((root / "angry").glob("*.png"))
    Image.fromarray(np.full((48, 48), 255, np.uint8)).save(f)
    os.utime(f, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    ds3 = FerDataset(load_index(root, "all"), 32, 1)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    assert ds3.images[0].min() == 255


def test_stratified_split_deterministic_and_stratified():
    labels = ["a"] * 50 + ["b"] * 10
    tr1, va1 = stratified_split(labels, 0.2, seed=3)
    _tr2, va2 = stratified_split(labels, 0.2, seed=3)
    assert va1 == va2 and set(tr1).isdisjoint(va1)
    assert sum(labels[i] == "a" for i in va1) == 10 and sum(labels[i] == "b" for i in va1) == 2
    assert stratified_split(labels, 0.2, seed=4)[1] != va1


def test_group_split_no_overlap():
    groups = [f"s{i % 6}" for i in range(60)]
    tr, va = group_split(groups, 0.34, seed=0)
    assert {groups[i] for i in tr}.isdisjoint({groups[i] for i in va})


def test_class_weights_inverse_frequency():
    w = class_weights([0, 0, 0, 1], 3)
    assert w[1] > w[0] and w[2] == 0
    assert float((w[[0, 0, 0, 1]]).mean()) == pytest.approx(1.0)


def test_prepare_batch_gray_to_rgb_resize_normalise():
    from ferkit.models import IMAGENET

    cfg = InputConfig(64, 3, **IMAGENET)
    x = torch.full((2, 1, 48, 48), 255, dtype=torch.uint8)
    y = prepare_batch(x, cfg)
    assert y.shape == (2, 3, 64, 64)
    assert torch.allclose(y[0, :, 10, 10], (1 - torch.tensor(IMAGENET["mean"])) / torch.tensor(IMAGENET["std"]))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_augment_presets_keep_shape_and_range(preset):
    torch.manual_seed(0)
    aug = make_augment(preset)
    x = torch.rand(8, 1, 48, 48)
    y = aug(x) if aug is not None else x
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


def test_flip_only_is_exact_mirror():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 8, 8)
    y = BatchAugment(hflip=True)(x)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    same = (y == x).flatten(1).all(1)
    assert (flipped | same).all() and 10 < int(flipped.sum()) < 54


def test_rotation_changes_pixels_but_keeps_mean_roughly():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 48, 48)
    y = BatchAugment(rotation=20, hflip=False)(x)
    assert not torch.equal(x, y)
    assert abs(float(x.mean() - y.mean())) < 0.05
