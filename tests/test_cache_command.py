"""ferkit cache: list the decode cache's entries and clear them, never touching other files.

No PyTorch needed: these run in the light install too.
"""

from __future__ import annotations

import json

import numpy as np
from conftest import write_class_tree

from ferkit.cli import main
from ferkit.data.cache import cache_entries, clear_cache, decode_index
from ferkit.data.folders import index_folder_tree


def _fill(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FERKIT_CACHE", str(cache))
    data = write_class_tree(tmp_path / "data", n=2, splits=("train",))
    index = index_folder_tree(data, "train")
    decode_index(index, 32, 1, progress=False)
    decode_index(index, 24, 3, progress=False)
    (cache / "notes.txt").write_text("the user's own file")
    (cache / ("a" * 24 + ".npy")).write_bytes(b"orphan")  # an array whose index never got written
    (cache / ("b" * 24 + ".npy.4242.tmp")).write_bytes(b"half-written")
    return cache, data, len(index)


def test_info_lists_each_entry_with_its_dataset(tmp_path, monkeypatch, capsys):
    cache, data, n = _fill(tmp_path, monkeypatch)
    entries = cache_entries()
    good = [e for e in entries if e["problem"] is None]
    assert sorted(tuple(e["shape"]) for e in good) == [(n, 24, 24, 3), (n, 32, 32, 1)]
    assert all(e["items"] == n and e["root"] == str(data) for e in good)
    assert [e["problem"] for e in entries if e["key"] == "a" * 24] == ["no .json index"]
    assert sum(e["bytes"] for e in entries) == sum(
        f.stat().st_size for f in cache.iterdir() if f.suffix in (".npy", ".json"))
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{cache}: 3 entries") and f"{n} x 32x32x1" in out and str(data) in out
    assert main(["cache", "--info", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["entries"]) == 3


def test_clear_deletes_entries_and_temporaries_only(tmp_path, monkeypatch, capsys):
    cache, _, _ = _fill(tmp_path, monkeypatch)
    before = sum(f.stat().st_size for f in cache.iterdir() if f.name != "notes.txt")
    assert main(["cache", "--clear"]) == 0
    assert "deleted 6 file(s)" in capsys.readouterr().out  # 2 x (npy + json), orphan, tmp
    assert [f.name for f in cache.iterdir()] == ["notes.txt"]
    assert cache_entries() == [] and clear_cache() == (0, 0)
    assert before > 0


def test_a_missing_cache_folder_is_empty(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "never"))
    assert cache_entries() == [] and clear_cache() == (0, 0)
    assert main(["cache"]) == 0 and "0 entries" in capsys.readouterr().out
    assert not (tmp_path / "never").exists()


def test_cleared_entries_are_decoded_again(tmp_path, monkeypatch):
    _, data, _ = _fill(tmp_path, monkeypatch)
    index = index_folder_tree(data, "train")
    first, kept, _ = decode_index(index, 32, 1, progress=False)
    clear_cache()
    again, kept2, _ = decode_index(index, 32, 1, progress=False)
    assert np.array_equal(first, again) and kept == kept2
    assert len(cache_entries()) == 1
