"""Folder walks and globs of `ferkit predict`: links, loops, FIFOs, permissions, other files, case."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image
from test_recognizer import ASTRONAUT, stand_in_model

from ferkit.cli import main
from ferkit.inference import inputs
from ferkit.inference.inputs import case_insensitive_pattern, iter_inputs, sniff_media


@pytest.fixture(scope="module")
def slim(tmp_path_factory):
    return str(stand_in_model(tmp_path_factory.mktemp("inputs") / "tiny.pt"))


def _run(capsys, *argv):
    rc = main(["predict", *map(str, argv), "--no-progress"])
    out, err = capsys.readouterr()
    recs = [json.loads(line) for line in out.splitlines() if line.strip()]
    return rc, recs, err.strip().splitlines()[-1], err


def _walk(*items):
    return [(e.kind, Path(e.name).name, e.problem.reason if e.problem else None) for e in iter_inputs(items)]


def test_dangling_symlink_is_skipped_and_the_good_photo_processed(slim, tmp_path, capsys):
    # The case: exit 2 and nothing printed for the good photo.
    shutil.copy(ASTRONAUT, tmp_path / "good.png")
    (tmp_path / "x.jpg").symlink_to(tmp_path / "gone.jpg")
    rc, recs, summary, err = _run(capsys, tmp_path, "--model", slim)
    assert rc == 1
    assert [Path(r["source"]).name for r in recs] == ["good.png"]
    assert "1 input(s) skipped: 1x broken symbolic link" in summary
    assert f"skipped {tmp_path / 'x.jpg'}: broken symbolic link" in err


def test_other_files_in_a_folder_are_ignored_not_errors(slim, tmp_path, capsys):
    shutil.copy(ASTRONAUT, tmp_path / "a.png")
    (tmp_path / "README.txt").write_text("photos of the lab")
    (tmp_path / "a.json").write_text("{}")
    rc, recs, summary, _ = _run(capsys, tmp_path, "--model", slim)
    assert rc == 0 and len(recs) == 1
    assert "2 file(s) ignored: 2x not an image or video file (README.txt, a.json)" in summary
    # Named on the command line, the same text file is an error.
    rc, recs, summary, _ = _run(capsys, tmp_path / "README.txt", "--model", slim)
    assert rc == 1 and "1 input(s) skipped: 1x not an image or video file" in summary


def test_glob_matches_extensions_in_any_case_like_folder_scans(slim, tmp_path, capsys):
    for name in ("a.JPG", "b.jpg", "c.Jpeg", "d.png"):
        Image.open(ASTRONAUT).convert("RGB").save(tmp_path / name, "JPEG")
    rc, recs, _, _ = _run(capsys, tmp_path / "*.jpg", "--model", slim)
    assert rc == 0 and sorted(Path(r["source"]).name for r in recs) == ["a.JPG", "b.jpg"]
    # Overlapping patterns read each file once; the repeats are ignored, not errors.
    rc, recs, summary, _ = _run(capsys, tmp_path / "*.JPG", tmp_path / "*.jp*g", "--model", slim)
    assert rc == 0 and sorted(Path(r["source"]).name for r in recs) == ["a.JPG", "b.jpg", "c.Jpeg"]
    assert "2 file(s) ignored: 2x already read" in summary
    assert case_insensitive_pattern("Shots/*.jpg") == "Shots/*.[jJ][pP][gG]"  # folders keep their case
    assert case_insensitive_pattern("x[ab].png") == "[xX][abAB].[pP][nN][gG]"
    # Ranges get the other case as a range (not 'aA-zZ', which spans punctuation).
    assert case_insensitive_pattern("[!a-z]*.png") == "[!a-zA-Z]*.[pP][nN][gG]"
    assert case_insensitive_pattern("x[.png") == "[xX][[].[pP][nN][gG]"


def test_symlink_loops_terminate_and_each_file_is_read_once(slim, tmp_path, capsys):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    shutil.copy(ASTRONAUT, root / "a.png")
    shutil.copy(ASTRONAUT, root / "sub" / "b.png")
    (root / "sub" / "up").symlink_to(root)  # a loop back to the top
    (root / "again").symlink_to(root / "sub")  # the same folder a second way
    (root / "alias.png").symlink_to(root / "a.png")  # the same file a second way
    (root / "self.jpg").symlink_to(root / "self.jpg")  # a link to itself
    rc, recs, summary, _ = _run(capsys, root, "--model", slim)
    assert sorted(Path(r["source"]).name for r in recs) == ["a.png", "b.png"]
    assert rc == 1 and "1 input(s) skipped: 1x symbolic link loop" in summary
    assert "3 file(s) ignored: 3x already read" in summary


def test_fifo_and_folder_named_like_an_image(slim, tmp_path, capsys):
    shutil.copy(ASTRONAUT, tmp_path / "a.png")
    (tmp_path / "album.jpg").mkdir()  # a folder with an image's name is walked, not decoded
    shutil.copy(ASTRONAUT, tmp_path / "album.jpg" / "b.png")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    done = threading.Event()

    def unblock():  # before the fix, reading the FIFO blocked forever: end it with EOF
        while not done.wait(20):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass

    threading.Thread(target=unblock, daemon=True).start()
    try:
        rc, recs, summary, _ = _run(capsys, tmp_path, "--model", slim)
    finally:
        done.set()
    assert sorted(Path(r["source"]).name for r in recs) == ["a.png", "b.png"]
    assert rc == 1 and "1 input(s) skipped: 1x not a regular file (FIFO, socket or device)" in summary
    # A glob matching the folder reads what is inside it.
    assert [k for k, *_ in _walk(str(tmp_path / "*.jpg"))] == ["image", "skipped"]


def test_unreadable_file_and_folder(tmp_path, monkeypatch):
    shutil.copy(ASTRONAUT, tmp_path / "a.png")
    shutil.copy(ASTRONAUT, tmp_path / "secret.png")
    (tmp_path / "locked").mkdir()
    real_access, real_scandir = os.access, os.scandir
    # Tests run as root in CI, where chmod 000 does not stop reading: simulate the denial.
    monkeypatch.setattr(inputs.os, "access", lambda p, m: "secret" not in str(p) and real_access(p, m))

    def scandir(p):
        if str(p).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(p))
        return real_scandir(p)

    monkeypatch.setattr(inputs.os, "scandir", scandir)
    assert _walk(tmp_path) == [
        ("image", "a.png", None),
        ("skipped", "secret.png", "permission denied"),
        ("skipped", "locked", "permission denied"),
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_real_permissions(tmp_path):
    shutil.copy(ASTRONAUT, tmp_path / "secret.png")
    (tmp_path / "secret.png").chmod(0)
    assert _walk(tmp_path) == [("skipped", "secret.png", "permission denied")]


def test_files_without_a_known_extension_are_sniffed(tmp_path):
    shutil.copy(ASTRONAUT, tmp_path / "IMG_0001")  # exported without an extension
    (tmp_path / "clip.bin").write_bytes(b"\0\0\0\x18ftyp3gp4" + bytes(40))
    (tmp_path / "notes").write_text("hello")
    (tmp_path / "empty.dat").write_bytes(b"")
    assert _walk(tmp_path) == [
        ("image", "IMG_0001", None),
        ("video", "clip.bin", None),
        ("ignored", "empty.dat", "not an image or video file"),
        ("ignored", "notes", "not an image or video file"),
    ]
    assert sniff_media(b"\x1a\x45\xdf\xa3rest") == ("video", "mkv")
    assert sniff_media(b"RIFF\0\0\0\0WEBPVP8 ") == ("image", "webp")


def test_missing_inputs_and_empty_patterns(tmp_path):
    assert _walk(str(tmp_path / "nope.jpg"), str(tmp_path / "*.png")) == [
        ("skipped", "nope.jpg", "no such file or folder"),
        ("skipped", "*.png", "no file matches this pattern"),
    ]


def test_a_named_folder_with_nothing_to_read_is_skipped(tmp_path, slim, capsys):
    """An empty folder, or one of other files only, ended '0 image(s)' with exit status 0."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("hello")
    (tmp_path / "docs" / "sub").mkdir()
    empty, docs = tmp_path / "empty", tmp_path / "docs"
    assert _walk(str(empty)) == [("skipped", "empty", "no image or video files in this folder")]
    assert ("skipped", "docs", "no image or video files in this folder") in _walk(str(docs))
    rc, recs, last, _ = _run(capsys, empty, "--model", slim, "--json")
    assert rc == 1 and recs == [] and "1 input(s) skipped" in last, last
    # a folder with something to read is not flagged, nor is an empty sub-folder inside it
    shutil.copy(ASTRONAUT, docs / "a.png")
    assert [k for k, _, _ in _walk(str(docs))] == ["image", "ignored"]


def test_a_skipped_entry_reached_twice_is_counted_once(tmp_path):
    """A pattern and a folder link back up (sub.jpg/loop -> ..) reached the same FIFO and broken
    link twice: '6 input(s) skipped' for 3 bad entries. Skips are counted once, like files."""
    root = tmp_path / "p"
    (root / "sub.jpg").mkdir(parents=True)
    shutil.copy(ASTRONAUT, root / "good.png")
    (root / "dangle.jpg").symlink_to(tmp_path / "nonexistent")
    os.mkfifo(root / "fifo.jpg")
    (root / "sub.jpg" / "loop").symlink_to(root)
    kinds = [(k, n) for k, n, _ in _walk(str(root / "*.JPG"))]
    skipped = sorted(n for k, n in kinds if k == "skipped")
    assert skipped == ["dangle.jpg", "fifo.jpg"], kinds
    assert sorted(n for k, n in kinds if k == "image") == ["good.png"]
    # the second sight of each is 'already read', as for files
    assert sum(1 for k, n in kinds if k == "ignored" and n in ("dangle.jpg", "fifo.jpg")) == 2


def test_an_empty_input_name_is_skipped_not_the_working_folder(tmp_path, monkeypatch):
    # Path("") is ".": `ferkit predict "$DIR"` with DIR unset walked every image below the cwd
    shutil.copy(ASTRONAUT, tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)
    assert _walk("", " ") == [("skipped", "''", "no such file or folder"),
                              ("skipped", "' '", "no such file or folder")]
