"""The decode cache never serves damaged bytes: changed in place, wrong shape, broken index."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import write_class_tree

from ferkit.data.cache import cache_dir, decode_index
from ferkit.data.dataset import load_index


@pytest.fixture
def index(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    root = write_class_tree(tmp_path / "data", n=3, splits=())
    return load_index(root, "all")


def _decode(index):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, kept, _ = decode_index(index, 48, 1, progress=False)
    return images, kept, [str(w.message) for w in caught]


def _entry(index):
    (npy,) = cache_dir().glob("*.npy")
    return npy, npy.with_suffix(".json")


def _damage_in_place(npy, how):
    raw = bytearray(npy.read_bytes())
    header = len(raw) - 21 * 48 * 48  # np.save's header precedes the pixels
    if how == "changed":
        for i in range(header, len(raw), 97):
            raw[i] ^= 0x5A
    else:  # zeroed pixels
        raw[header:] = bytes(len(raw) - header)
    npy.write_bytes(bytes(raw))  # same size: the fingerprint (paths, sizes, mtimes) cannot notice


@pytest.mark.parametrize("how", ["changed", "zeroed"])
def test_bytes_changed_in_place_are_detected_and_redecoded(index, how):
    good, kept, msgs = _decode(index)
    assert not msgs and good.shape == (21, 48, 48, 1)
    npy, _ = _entry(index)
    size = npy.stat().st_size
    _damage_in_place(npy, how)
    assert npy.stat().st_size == size
    images, kept2, msgs = _decode(index)
    assert len(msgs) == 1 and "is damaged (checksum mismatch" in msgs[0] and str(npy) in msgs[0]
    assert np.array_equal(images, good) and kept2 == kept
    _, _, msgs = _decode(index)  # the entry was rewritten: sound again, no warning
    assert not msgs


def test_array_of_the_wrong_shape_is_refused(index):
    good, _, _ = _decode(index)
    npy, _ = _entry(index)
    np.save(npy, np.zeros((21, 8, 8, 1), np.uint8))  # 8x8 faces in a 48x48 entry
    images, _, msgs = _decode(index)
    assert len(msgs) == 1 and "array of shape (21, 8, 8, 1) uint8, expected (21, 48, 48, 1)" in msgs[0]
    assert np.array_equal(images, good)


def test_consistent_but_wrong_index_is_refused(index):
    good, _, _ = _decode(index)
    npy, meta = _entry(index)
    np.save(npy, np.zeros((21, 8, 8, 1), np.uint8))
    m = json.loads(meta.read_text())
    meta.write_text(json.dumps({**m, "shape": [21, 8, 8, 1]}))
    images, _, msgs = _decode(index)
    assert len(msgs) == 1 and "expected (21, 48, 48, 1) uint8" in msgs[0]
    assert np.array_equal(images, good)


@pytest.mark.parametrize("damage", ["garbage json", "no json", "bad kept", "float array", "truncated npy"])
def test_other_damage_is_redecoded(index, damage):
    good, _, _ = _decode(index)
    npy, meta = _entry(index)
    if damage == "garbage json":
        meta.write_text("{not json")
    elif damage == "no json":
        meta.unlink()
    elif damage == "bad kept":
        m = json.loads(meta.read_text())
        meta.write_text(json.dumps({**m, "kept": [5] * 21}))
    elif damage == "float array":
        np.save(npy, good.astype(np.float32))
    else:
        npy.write_bytes(npy.read_bytes()[:500])
    images, _, msgs = _decode(index)
    assert len(msgs) == 1 and "is damaged" in msgs[0] and "\n" not in msgs[0]
    assert np.array_equal(images, good)


def test_evaluate_after_cache_damage_gives_the_same_report(tmp_path, monkeypatch, capsys):
    """The named case: zeroed cache pixels took 'ferkit evaluate' from 0.598 to 0.130, exit 0."""
    import json

    from ferkit.cli import main

    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    data = write_class_tree(tmp_path / "data", n=2, splits=("test",))
    argv = ["evaluate", "default", "--data", str(data), "--split", "test", "--json", "--no-progress"]
    assert main(argv) == 0
    before = json.loads(capsys.readouterr().out)
    (npy,) = (tmp_path / "cache").glob("*.npy")
    raw = npy.read_bytes()
    npy.write_bytes(raw[:128] + bytes(len(raw) - 128))  # every pixel zeroed, same size
    assert main(argv) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["confusion"] == before["confusion"]
    assert "is damaged (checksum mismatch" in out.err


def test_same_data_named_two_ways_shares_one_entry(index, tmp_path, monkeypatch):
    # '../shared/datasets/fer2013' (README) and '/work/shared/datasets/fer2013' were two keys:
    # FER2013 was decoded, and stored (57 MB), once per spelling of its path.
    (tmp_path / "link").symlink_to(tmp_path / "data")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    names = [tmp_path / "data", "../data", tmp_path / "link", "../sub/../link"]
    assert {load_index(n, "all").fingerprint for n in names} == {index.fingerprint}
    _decode(load_index("../data", "all"))
    _decode(load_index(tmp_path / "link", "all"))
    assert len(list(cache_dir().glob("*.npy"))) == 1
    first = next((tmp_path / "data" / "happy").glob("*.png"))
    (first.parent / "extra.png").write_bytes(first.read_bytes())
    assert load_index("../link", "all").fingerprint != index.fingerprint  # an added file still counts


@pytest.fixture(scope="module")
def _cache_seen_by_a_module_fixture():
    from ferkit.data.cache import cache_dir as _dir

    return _dir()


def test_module_fixtures_use_the_session_cache_too(_cache_seen_by_a_module_fixture, tmp_path_factory):
    # module-scoped fixtures (trained runs shared by a file's tests) ran before the function-scoped
    # isolation and decoded into the user's ~/.cache/ferkit
    assert _cache_seen_by_a_module_fixture == tmp_path_factory.getbasetemp() / "ferkit-cache"
